"""Stops password guessing (svcrack and the like) per source address and per user.

Failures are counted in a sliding window, separately for the source host and for the
digest user name (known or not: unknown names are tracked exactly like real ones, so the
guard's behaviour reveals nothing). ``threshold`` failures within ``window_s`` lock the
key for ``base_lockout_s``; while its strikes are not forgiven, every further failure
locks it again for twice as long, up to ``max_lockout_s``. Strikes are forgiven after
``forgive_after_s`` without a failure once the last lockout ended. With the defaults a
guesser gets 5 tries, then one try per 30 s, 60 s, ... 1 h: a 1,000-word list takes weeks.

How a refusal looks (decided by the registrar service, recorded here for the reader):
a refused attempt is answered exactly like a wrong password (403 Forbidden, after the
same hashing work), even when the password is right. svcrack only reports a password
when it receives a 200 (and gives up on a 404 or an unknown status); 403 is what it
counts as "wrong password", so it keeps going, never sees a 200 and reports nothing.
Attempts made while locked are neither counted nor used to extend the lock: otherwise
whether a guess extended the lock would tell the guesser whether it was right.

Per-user lockout and denial of service: anyone can make an extension fail from anywhere,
so a per-user lock must not shut a real agent out. Per-source throttling therefore takes
precedence: a source that authenticated as a user recently (``trust_ttl_s``) is
*trusted* for that user and is not subject to that user's lock, only to its own per-source
lock. The agent's softphone keeps registering while an attacker elsewhere is locked out.
The trade-off: an agent who moves to a new address while their extension is under attack
waits until the lock lapses (at most ``max_lockout_s``, or an operator calls
``release``), and an attacker sharing the agent's public address (same NAT) is limited
by the per-source lock alone. Over UDP a source address can be spoofed, so an attacker
can get a victim's address locked (not the password guessed: the answers go to the
victim); TCP/TLS for softphones removes that.

Pure and bounded: time is passed in, each table keeps at most ``max_entries`` keys
(least recently touched first out) and each key at most ``threshold`` timestamps.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

MAX_USER_KEY = 128
"""User names are cut to this length before use as keys (they come from the attacker)."""


@dataclass(frozen=True)
class GuardPolicy:
    """Thresholds and durations of the guard (see the module docstring)."""

    source_threshold: int = 5
    user_threshold: int = 5
    window_s: float = 300.0
    base_lockout_s: float = 30.0
    max_lockout_s: float = 3600.0
    forgive_after_s: float = 3600.0
    trust_ttl_s: float = 86400.0
    max_trusted_per_user: int = 4
    max_entries: int = 65536

    def __post_init__(self) -> None:
        if min(self.source_threshold, self.user_threshold, self.max_entries) < 1:
            raise ValueError("guard thresholds and max_entries must be at least 1")
        if not 0 < self.base_lockout_s <= self.max_lockout_s:
            raise ValueError("need 0 < base_lockout_s <= max_lockout_s")


class Refusal(Enum):
    """Why the guard refuses an attempt (for logs and metrics, never for the peer)."""

    SOURCE_LOCKED = "source_locked"
    USER_LOCKED = "user_locked"


@dataclass(frozen=True)
class Decision:
    """Whether an authentication attempt may be honoured, and if not why and until when."""

    refusal: Refusal | None = None
    until: float | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


ALLOWED = Decision()


class _Tally:
    """Failures of one key: recent timestamps, strikes and the current lock."""

    __slots__ = ("failures", "locked_until", "strikes")

    def __init__(self, threshold: int) -> None:
        self.failures: deque[float] = deque(maxlen=threshold)
        self.strikes = 0
        self.locked_until = float("-inf")

    def locked(self, now: float) -> bool:
        return now < self.locked_until

    def forgive_if_due(self, now: float, policy: GuardPolicy) -> None:
        if self.strikes and now >= self.locked_until + policy.forgive_after_s:
            self.strikes = 0
            self.failures.clear()

    def fail(self, now: float, threshold: int, policy: GuardPolicy) -> None:
        if self.locked(now):
            return
        self.forgive_if_due(now, policy)
        while self.failures and self.failures[0] <= now - policy.window_s:
            self.failures.popleft()
        self.failures.append(now)
        if self.strikes or len(self.failures) >= threshold:
            self.strikes += 1
            duration = min(
                policy.base_lockout_s * 2 ** min(self.strikes - 1, 62), policy.max_lockout_s
            )
            self.locked_until = now + duration
            self.failures.clear()

    def idle(self, now: float, policy: GuardPolicy) -> bool:
        """Whether forgetting this key changes nothing."""
        self.forgive_if_due(now, policy)
        recent = self.failures and self.failures[-1] > now - policy.window_s
        return not (self.locked(now) or self.strikes or recent)


class _Table:
    """Tallies by key, least recently touched first, at most ``limit`` of them."""

    def __init__(self, threshold: int, policy: GuardPolicy) -> None:
        self._threshold = threshold
        self._policy = policy
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tallies)

    def get(self, key: str, now: float) -> _Tally | None:
        tally = self._tallies.get(key)
        if tally is not None and tally.idle(now, self._policy):
            del self._tallies[key]
            return None
        return tally

    def fail(self, key: str, now: float) -> None:
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(self._threshold)
        self._tallies.move_to_end(key)
        tally.fail(now, self._threshold, self._policy)
        while len(self._tallies) > self._policy.max_entries:
            self._tallies.popitem(last=False)

    def forget(self, key: str) -> None:
        self._tallies.pop(key, None)


class Guard:
    """Per-source and per-user failure counting with growing lockouts.

    Use: ``decision = guard.check(user, source, now)`` before verifying (verify anyway, so
    refusals take the same time); then, only when the attempt was allowed,
    ``record_failure`` or ``record_success``.
    """

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._sources = _Table(self.policy.source_threshold, self.policy)
        self._users = _Table(self.policy.user_threshold, self.policy)
        self._trusted: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    def check(self, user: str, source: str, now: float) -> Decision:
        """Whether an attempt by ``user`` from ``source`` (a host) may be honoured."""
        tally = self._sources.get(source, now)
        if tally is not None and tally.locked(now):
            return Decision(Refusal.SOURCE_LOCKED, tally.locked_until)
        key = _user_key(user)
        tally = self._users.get(key, now)
        if tally is not None and tally.locked(now) and not self._is_trusted(key, source, now):
            return Decision(Refusal.USER_LOCKED, tally.locked_until)
        return ALLOWED

    def record_failure(self, user: str, source: str, now: float) -> None:
        """A wrong password (or unknown user) from ``source``."""
        self._sources.fail(source, now)
        self._users.fail(_user_key(user), now)

    def record_success(self, user: str, source: str, now: float) -> None:
        """``user`` authenticated from ``source``: the source is cleared and trusted for
        the user. The user's own tally is left alone: a success from the agent's phone
        must not give a guesser elsewhere a fresh set of tries."""
        self._sources.forget(source)
        key = _user_key(user)
        sources = self._trusted.pop(key, None) or OrderedDict()
        sources.pop(source, None)
        sources[source] = now + self.policy.trust_ttl_s
        while len(sources) > self.policy.max_trusted_per_user:
            sources.popitem(last=False)
        self._trusted[key] = sources
        while len(self._trusted) > self.policy.max_entries:
            self._trusted.popitem(last=False)

    def release(self, *, user: str | None = None, source: str | None = None) -> None:
        """Lift the lock and forget the failures of a user and/or a source (operators)."""
        if user is not None:
            self._users.forget(_user_key(user))
        if source is not None:
            self._sources.forget(source)

    def tracked(self) -> tuple[int, int, int]:
        """How many sources, users and trusted-user entries are held (memory checks)."""
        return len(self._sources), len(self._users), len(self._trusted)

    def _is_trusted(self, key: str, source: str, now: float) -> bool:
        sources = self._trusted.get(key)
        if not sources:
            return False
        expires_at = sources.get(source)
        if expires_at is None:
            return False
        if expires_at <= now:
            del sources[source]
            return False
        return True


def _user_key(user: str) -> str:
    return user[:MAX_USER_KEY]


__all__ = ["ALLOWED", "Decision", "Guard", "GuardPolicy", "Refusal"]
