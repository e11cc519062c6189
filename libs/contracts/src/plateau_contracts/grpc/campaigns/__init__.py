"""Generated gRPC stubs of proto/plateau/campaigns; regenerate, do not edit."""
