"""Generated gRPC stubs of proto/plateau/agents; regenerate, do not edit."""
