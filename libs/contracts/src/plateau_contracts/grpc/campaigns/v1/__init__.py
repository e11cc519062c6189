"""Generated gRPC stubs of proto/plateau/campaigns/v1; regenerate, do not edit."""
