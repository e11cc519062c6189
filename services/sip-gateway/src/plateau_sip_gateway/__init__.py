"""plateau_sip_gateway service."""
