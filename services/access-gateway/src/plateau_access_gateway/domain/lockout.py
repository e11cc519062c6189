"""Login lockout: a growing delay after repeated failures, per account and per source."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["FailureRecord", "LockoutPolicy"]


@dataclass(frozen=True)
class FailureRecord:
    """Consecutive failed logins of an account or a source address."""

    failed: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


@dataclass(frozen=True)
class LockoutPolicy:
    """Lock after ``threshold`` failures for ``base``; each further failure doubles the lock,
    up to ``ceiling``. Failures older than ``forget_after`` (counted from the last one, and
    from the end of a lock) no longer count."""

    threshold: int = 5
    base: timedelta = timedelta(minutes=1)
    ceiling: timedelta = timedelta(hours=24)
    forget_after: timedelta = timedelta(hours=1)

    def current(self, record: FailureRecord, now: datetime) -> FailureRecord:
        """The record as it stands at ``now``: forgotten when quiet for long enough."""
        if record.last_failure_at is None or record.is_locked(now):
            return record
        quiet_since = max(record.last_failure_at, record.locked_until or record.last_failure_at)
        if now - quiet_since >= self.forget_after:
            return FailureRecord()
        return record

    def lock_for(self, failed: int) -> timedelta | None:
        """How long ``failed`` consecutive failures lock for (None: not locked)."""
        if failed < self.threshold:
            return None
        doublings = min(failed - self.threshold, 30)
        lock: timedelta = self.base * (1 << doublings)
        return min(lock, self.ceiling)

    def after_failure(self, record: FailureRecord, now: datetime) -> FailureRecord:
        """The record after one more failure at ``now``."""
        failed = self.current(record, now).failed + 1
        duration = self.lock_for(failed)
        return FailureRecord(failed, now, now + duration if duration is not None else None)
