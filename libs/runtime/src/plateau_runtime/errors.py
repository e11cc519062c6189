"""Errors that reach an operator: each says what is wrong and what to do about it."""

from __future__ import annotations


class PlateauError(Exception):
    """Base of errors meant for a person: ``str(error)`` is the problem, ``hint`` the fix."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.problem} — {self.hint}" if self.hint else self.problem


class ConfigurationError(PlateauError):
    """A setting is missing or invalid."""


class DependencyUnavailableError(PlateauError):
    """PostgreSQL, the broker or another component cannot be reached."""


class ConcurrencyError(PlateauError):
    """A stream moved on since the caller read it; reload the stream and retry the command."""

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, not the expected {expected}",
            "reload the stream and retry the command",
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual
