"""The event catalogue, one module per resource; importing this registers them all."""

from plateau_contracts.events import calls

__all__ = ["calls"]
