"""Plateau's shared runtime: event store, outbox relay, bus and gRPC wiring, settings,
logging and tracing. One implementation of each, used by every service."""
