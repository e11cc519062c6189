"""Helpers that drive a running gateway from outside: benchmarks and end-to-end tests."""
