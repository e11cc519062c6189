"""The event catalogue, one module per resource; importing this registers them all."""

from plateau_contracts.events import access, agents, calls, dialer, routing

__all__ = ["access", "agents", "calls", "dialer", "routing"]
