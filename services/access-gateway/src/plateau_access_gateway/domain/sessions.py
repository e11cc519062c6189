"""Session timing: the idle lock and the absolute lifetime of a login session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = ["SessionPolicy", "SessionStage", "SessionState"]


class SessionStage(StrEnum):
    """How far a login got; only an ``active`` session reads anything."""

    ENROL_TOTP = "enrol_totp"  # password right, second factor still to enrol
    TOTP = "totp"  # password right, second-factor code still to give
    CHANGE_PASSWORD = "change_password"  # noqa: S105 - a stage: the password expired
    ACTIVE = "active"


class SessionState(StrEnum):
    """What a session is at a given instant."""

    USABLE = "usable"
    IDLE_LOCKED = "idle_locked"  # re-authenticate (password and second factor) to go on
    EXPIRED = "expired"  # past its absolute lifetime: log in again


@dataclass(frozen=True)
class SessionPolicy:
    """Idle lock after ``idle`` without a request; end after ``lifetime`` whatever happens.

    A session still logging in (second factor, password change) gets ``pending`` to finish.
    """

    idle: timedelta = timedelta(minutes=15)
    lifetime: timedelta = timedelta(hours=12)
    pending: timedelta = timedelta(minutes=10)

    def expires_at(self, created_at: datetime, stage: SessionStage) -> datetime:
        return created_at + (self.lifetime if stage is SessionStage.ACTIVE else self.pending)

    def state(
        self, *, last_seen_at: datetime, expires_at: datetime, locked: bool, now: datetime
    ) -> SessionState:
        if now >= expires_at:
            return SessionState.EXPIRED
        if locked or now - last_seen_at >= self.idle:
            return SessionState.IDLE_LOCKED
        return SessionState.USABLE


@dataclass(frozen=True)
class Session:
    """A login session as stored (its token only as a digest)."""

    session_id: str
    user_id: str
    tenant: str
    stage: SessionStage
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    locked: bool
    ended_at: datetime | None = None
