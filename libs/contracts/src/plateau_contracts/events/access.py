"""Audit facts of the client-facing access, recorded by the access-gateway (``plateau.access``).

A user's stream is ``user-<user_id>``: the account, its logins, sessions and everything it
viewed, exported or was refused, in order. A failed login for a username that names no
account is recorded in ``login-<username>``, so guessing leaves a trail too. No secret
(password, second-factor code or seed, session token) is ever part of an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from plateau_contracts.catalogue import event
from plateau_contracts.events.common import Ident, Sha256Hex, StreamedEvent, UtcDatetime
from plateau_contracts.topics import Topic


class Role(StrEnum):
    """What a user may do; least privilege: a user has only the roles it needs."""

    CLIENT_ANALYST = "client_analyst"  # the client's reports and exports, read-only
    CLIENT_SUPERVISOR = "client_supervisor"  # the client's live supervision and reports, read-only
    OPERATOR_ADMIN = "operator_admin"  # the contact centre: users, tokens and the audit trail


class LoginFailure(StrEnum):
    """Why a login was refused (recorded for audit; the user is told only that it failed)."""

    BAD_CREDENTIALS = "bad_credentials"
    UNKNOWN_USER = "unknown_user"
    BAD_SECOND_FACTOR = "bad_second_factor"
    ACCOUNT_LOCKED = "account_locked"
    ACCOUNT_DISABLED = "account_disabled"


class DeniedReason(StrEnum):
    """Why an authenticated request was refused."""

    OUT_OF_SCOPE = "out_of_scope"  # a queue or campaign outside the user's scope (IDOR)
    OTHER_TENANT = "other_tenant"  # an object of another tenant (IDOR)
    MISSING_ROLE = "missing_role"
    SESSION_LOCKED = "session_locked"  # idle lock: re-authenticate first


class UserEvent(StreamedEvent):
    """Common shape of access events: they name the user."""

    topic: ClassVar[str] = Topic.ACCESS
    stream_prefix: ClassVar[str] = "user"
    stream_key: ClassVar[str] = "user_id"
    user_id: Ident = Field(description="User (the stream is `user-<user_id>`).", examples=["u-17"])


class SessionEvent(UserEvent):
    """Common shape of events in one login session."""

    session_id: Ident = Field(
        description="Session (or API token) the request was made with.",
    )


@event
class UserCreated(UserEvent):
    """A user account was created with its roles and scope."""

    event_type: ClassVar[str] = "user.created"
    username: str = Field(min_length=1, description="Login name.", examples=["m.nkounkou"])
    roles: tuple[Role, ...] = Field(description="Roles granted.")
    queue_ids: tuple[Ident, ...] = Field(
        default=(), description="Queues the user may see; empty: every queue of the tenant."
    )
    campaign_ids: tuple[Ident, ...] = Field(
        default=(), description="Campaigns the user may see; empty: every campaign of the tenant."
    )
    created_by: str = Field(description="User id of the administrator, or `cli`.")


@event
class UserLoggedIn(SessionEvent):
    """A user logged in and a session started."""

    event_type: ClassVar[str] = "user.logged_in"
    source_ip: str = Field(description="Client address.", examples=["198.51.100.7"])
    user_agent: str | None = Field(default=None, description="Browser's User-Agent.")
    second_factor: Literal["totp"] | None = Field(
        description="Second factor used; null when the account has none enrolled yet."
    )


@event
class LoginFailed(StreamedEvent):
    """A login attempt was refused."""

    event_type: ClassVar[str] = "user.login_failed"
    topic: ClassVar[str] = Topic.ACCESS
    stream_prefix: ClassVar[str] = "user"
    stream_key: ClassVar[str] = "user_id"

    username: str = Field(description="Login name as typed.")
    user_id: Ident | None = Field(
        default=None, description="Account it names; null when no account has that name."
    )
    reason: LoginFailure = Field(description="Why it was refused.")
    source_ip: str = Field(description="Client address.")
    consecutive_failures: int = Field(
        ge=1, description="Failures in a row for this account or username, this one included."
    )

    def stream_id(self, tenant: str | None = None) -> str:
        """The account's stream, or the username's when no account has that name (user
        ids are unique across tenants: ``tenant`` is not part of it)."""
        if self.user_id is not None:
            return f"user-{self.user_id}"
        return f"login-{self.username}"

    @classmethod
    def stream_pattern(cls) -> str:
        """Stream naming rule of failed logins."""
        return "user-<user_id> or login-<username>"


@event
class AccountLocked(UserEvent):
    """A user account was locked and refuses every login until it is unlocked or expires."""

    event_type: ClassVar[str] = "user.account_locked"
    reason: Literal["too_many_failures", "administrator"] = Field(description="Why it was locked.")
    failed_attempts: int = Field(ge=0, description="Consecutive failures that led to the lock.")
    locked_until: UtcDatetime | None = Field(
        default=None, description="When the lock lifts by itself; null: an administrator must."
    )


@event
class SecondFactorEnrolled(UserEvent):
    """A user enrolled a second factor; logins now require it."""

    event_type: ClassVar[str] = "user.second_factor_enrolled"
    method: Literal["totp"] = Field(description="Kind of second factor.")


@event
class SessionLocked(SessionEvent):
    """A session was locked after being idle; the user must re-authenticate to go on."""

    event_type: ClassVar[str] = "session.locked"
    idle_s: int = Field(ge=0, description="Idle time that triggered the lock.", examples=[900])


@event
class SessionEnded(SessionEvent):
    """A session ended; its token is no longer accepted."""

    event_type: ClassVar[str] = "session.ended"
    reason: Literal["logged_out", "expired", "revoked", "password_changed"] = Field(
        description="Why it ended."
    )


@event
class ReportViewed(SessionEvent):
    """A user viewed a report or supervision view."""

    event_type: ClassVar[str] = "report.viewed"
    report: str = Field(description="Report name.", examples=["queue_intervals"])
    filters: Mapping[str, str] = Field(
        default_factory=dict,
        description="Filters applied (queue, campaign, period...).",
        examples=[{"queue_id": "q-support", "from": "2026-05-01", "to": "2026-05-31"}],
    )


@event
class ExportDownloaded(SessionEvent):
    """A user downloaded an export file."""

    event_type: ClassVar[str] = "export.downloaded"
    export: str = Field(
        description="Kind of export.", examples=["call_detail_records", "compliance_ledger"]
    )
    format: Literal["csv", "xlsx", "json"] = Field(description="File format.")
    filters: Mapping[str, str] = Field(
        default_factory=dict, description="Filters applied (queue, campaign, period...)."
    )
    rows: int = Field(ge=0, description="Rows in the file.")
    sha256: Sha256Hex = Field(description="Digest of the bytes served.")


@event
class AccessDenied(SessionEvent):
    """An authenticated request was refused (e.g. an attempt to read another scope's data)."""

    event_type: ClassVar[str] = "access.denied"
    method: str = Field(description="HTTP method.", examples=["GET"])
    path: str = Field(description="Request path.", examples=["/api/queues/q-other/intervals"])
    resource_kind: str | None = Field(
        default=None, description="Kind of object asked for.", examples=["queue"]
    )
    resource_id: str | None = Field(default=None, description="Id of the object asked for.")
    reason: DeniedReason = Field(description="Why it was refused.")
