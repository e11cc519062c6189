"""plateau_stats_projector service."""
