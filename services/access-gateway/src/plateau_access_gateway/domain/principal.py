"""Who is asking: the authenticated principal every read of the access gateway is scoped to.

Authentication (sessions, API tokens) produces a :class:`Principal`; the read endpoints only
ever see this value, never a user record, so scoping and authorization rest on one small type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from plateau_contracts.events.access import Role

__all__ = ["Principal", "Role", "Via"]


class Via(StrEnum):
    """How the principal proved who it is."""

    SESSION = "session"
    API_TOKEN = "api_token"  # noqa: S105 - a credential kind, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user (or a user's API token) acting for exactly one tenant."""

    tenant: str
    user_id: str
    username: str
    role: Role
    via: Via
    # The session or token id, so an audit record names the credential that was used.
    credential_id: str
    # Queues and campaigns of the tenant the user may see; None: every one of the tenant.
    queue_scope: frozenset[str] | None = None
    campaign_scope: frozenset[str] | None = None

    def may_see_queue(self, queue_id: str) -> bool:
        return self.queue_scope is None or queue_id in self.queue_scope

    def may_see_campaign(self, campaign_id: str) -> bool:
        return self.campaign_scope is None or campaign_id in self.campaign_scope

    @property
    def is_client(self) -> bool:
        return self.role in (Role.CLIENT_ANALYST, Role.CLIENT_SUPERVISOR)
