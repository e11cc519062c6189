"""Who is asking: the authenticated principal every read of the access gateway is scoped to.

Authentication (sessions, API tokens) produces a :class:`Principal`; the read endpoints only
ever see this value, never a user record, so scoping and authorization rest on one small type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The roles of the access gateway (least privilege: client roles only read)."""

    CLIENT_ANALYST = "client_analyst"
    CLIENT_SUPERVISOR = "client_supervisor"
    OPERATOR_ADMIN = "operator_admin"


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

    @property
    def is_client(self) -> bool:
        return self.role in (Role.CLIENT_ANALYST, Role.CLIENT_SUPERVISOR)
