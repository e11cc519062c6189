"""Generated gRPC stubs of proto/plateau/calls; regenerate, do not edit."""
