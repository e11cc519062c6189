"""Generated gRPC stubs of proto/plateau/agents/v1; regenerate, do not edit."""
