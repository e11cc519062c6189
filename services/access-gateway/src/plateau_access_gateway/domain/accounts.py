"""Accounts of the access gateway: users of one tenant, their roles and scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from plateau_access_gateway.domain.principal import Role

__all__ = ["Account", "requires_second_factor"]

CLIENT_ROLES = frozenset({Role.CLIENT_ANALYST, Role.CLIENT_SUPERVISOR})


def requires_second_factor(role: Role) -> bool:
    """Client users must use TOTP (the operator's admins may, once they enrolled)."""
    return role in CLIENT_ROLES


@dataclass(frozen=True)
class Account:
    """A user account as stored (the password hash and TOTP seed stay in the adapter)."""

    user_id: str
    tenant: str
    username: str
    role: Role
    queue_ids: tuple[str, ...]
    campaign_ids: tuple[str, ...]
    password_changed_at: datetime
    totp_confirmed: bool
    created_at: datetime
    failed_logins: int = 0
    locked_until: datetime | None = None

    def needs_second_factor(self) -> bool:
        return self.totp_confirmed or requires_second_factor(self.role)

    def password_expired(self, now: datetime, max_age: timedelta | None) -> bool:
        return max_age is not None and now - self.password_changed_at >= max_age
