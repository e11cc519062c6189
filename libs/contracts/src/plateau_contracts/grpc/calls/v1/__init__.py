"""Generated gRPC stubs of proto/plateau/calls/v1; regenerate, do not edit."""
