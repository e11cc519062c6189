"""plateau_dialer service."""
