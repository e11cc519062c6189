"""plateau_access_gateway service."""
