"""API tokens: read-only, expiring, revocable credentials a user gives its BI tools."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["ApiToken", "TokenLifetimeError", "token_expiry"]

MAX_LIFETIME = timedelta(days=90)
DEFAULT_LIFETIME = timedelta(days=30)


class TokenLifetimeError(ValueError):
    """An API token was asked for with a lifetime it may not have."""


def token_expiry(
    now: datetime, days: int | None, max_lifetime: timedelta = MAX_LIFETIME
) -> datetime:
    """When a token created at ``now`` for ``days`` (default 30) expires."""
    # The number is checked before it becomes a timedelta, which overflows beyond ~10^9 days.
    if days is not None and not 1 <= days <= max_lifetime.days:
        raise TokenLifetimeError(
            f"a token lives between 1 and {max_lifetime.days} days (asked: {days})"
        )
    lifetime = DEFAULT_LIFETIME if days is None else timedelta(days=days)
    if lifetime > max_lifetime:
        raise TokenLifetimeError(
            f"a token lives between 1 and {max_lifetime.days} days (asked: {days})"
        )
    return now + lifetime


@dataclass(frozen=True)
class ApiToken:
    """An API token as stored (the secret only as a digest)."""

    token_id: str
    user_id: str
    tenant: str
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at
