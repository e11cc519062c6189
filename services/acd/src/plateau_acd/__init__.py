"""plateau_acd service."""
