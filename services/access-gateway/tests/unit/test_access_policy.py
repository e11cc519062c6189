"""The password policy, the lockout arithmetic, session timing and the rate limiter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plateau_access_gateway.adapters.credentials import default_policy
from plateau_access_gateway.domain.lockout import FailureRecord, LockoutPolicy
from plateau_access_gateway.domain.passwords import PasswordRule, WeakPasswordError
from plateau_access_gateway.domain.sessions import SessionPolicy, SessionState
from plateau_access_gateway.domain.tokens import TokenLifetimeError, token_expiry
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.handlers import generate_password

pytestmark = pytest.mark.unit
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def refused_rules(password: str, username: str = "m.nkounkou") -> set[PasswordRule]:
    with pytest.raises(WeakPasswordError) as refused:
        default_policy().check(password, username)
    assert str(refused.value)  # every refusal says what to do
    return set(refused.value.rules)


@pytest.mark.parametrize(
    ("password", "rules"),
    [
        ("Sh0rt-pass", {PasswordRule.MIN_LENGTH}),
        ("alllowercaseletters", {PasswordRule.CHARACTER_CLASSES}),
        ("Password123456", {PasswordRule.NOT_COMMON}),
        ("Xm.nkounkou-2026!", {PasswordRule.NOT_USERNAME}),
        ("Kinshasa12345678", {PasswordRule.STRENGTH}),
        (
            "qwerty",
            {PasswordRule.MIN_LENGTH, PasswordRule.CHARACTER_CLASSES, PasswordRule.NOT_COMMON},
        ),
    ],
)
def test_each_refusal_names_the_rules_broken(password: str, rules: set[PasswordRule]) -> None:
    assert refused_rules(password) == rules


def test_a_long_mixed_unpredictable_password_is_accepted() -> None:
    default_policy().check("Lagune-Brazza-Mpila-42", "m.nkounkou")
    default_policy().check(generate_password(), "m.nkounkou")


def test_lock_starts_at_the_threshold_and_doubles_up_to_the_ceiling() -> None:
    policy = LockoutPolicy(threshold=5, base=timedelta(minutes=1), ceiling=timedelta(hours=1))
    assert [policy.lock_for(n) for n in (1, 4)] == [None, None]
    assert [policy.lock_for(n) for n in (5, 6, 7, 8)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 8)
    ]
    assert policy.lock_for(60) == timedelta(hours=1)


def test_failures_are_forgotten_after_a_quiet_hour() -> None:
    policy = LockoutPolicy()
    record = FailureRecord()
    for _ in range(3):
        record = policy.after_failure(record, T0)
    assert policy.current(record, T0 + timedelta(minutes=59)).failed == 3
    assert policy.current(record, T0 + timedelta(hours=1)).failed == 0
    assert policy.after_failure(record, T0 + timedelta(hours=2)).failed == 1


def test_session_locks_when_idle_and_expires_at_its_lifetime() -> None:
    policy = SessionPolicy(idle=timedelta(minutes=15), lifetime=timedelta(hours=12))

    def state(seen: timedelta, now: timedelta) -> SessionState:
        return policy.state(
            last_seen_at=T0 + seen, expires_at=T0 + timedelta(hours=12), locked=False, now=T0 + now
        )

    assert state(timedelta(0), timedelta(minutes=14)) is SessionState.USABLE
    assert state(timedelta(0), timedelta(minutes=15)) is SessionState.IDLE_LOCKED
    assert state(timedelta(hours=11, minutes=59), timedelta(hours=12)) is SessionState.EXPIRED


def test_tokens_live_at_most_ninety_days() -> None:
    assert token_expiry(T0, None) == T0 + timedelta(days=30)
    assert token_expiry(T0, 90) == T0 + timedelta(days=90)
    # Beyond what a timedelta holds too (a 500 found by schemathesis).
    for days in (0, 91, -1979118546933408768, 10**18):
        with pytest.raises(TokenLifetimeError):
            token_expiry(T0, days)


def test_rate_limiter_refuses_past_the_burst_and_says_when_to_retry() -> None:
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert [limiter.hit("a"), limiter.hit("a")] == [None, None]
    assert limiter.hit("a") == 1
    assert limiter.hit("b") is None  # keys are independent
    now[0] += 1.0
    assert limiter.hit("a") is None
