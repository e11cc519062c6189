"""Plateau's shared contracts: event envelope and catalogue, topic names, gRPC stubs.

This package is the only code services share about *what* they say to each other.
It holds no I/O.
"""
