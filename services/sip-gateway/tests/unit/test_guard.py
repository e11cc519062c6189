"""The password-guessing guard: per-source and per-user lockouts that grow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_sip_gateway.domain.guard import Guard, GuardPolicy, Refusal

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
ATTACKER = "203.0.113.66"
AGENT_PHONE = "192.0.2.10"


def fail(guard: Guard, times: int, *, user: str = "1001", source: str = ATTACKER, at: float = T0):
    for _ in range(times):
        guard.record_failure(user, source, at)


def test_five_failures_lock_the_source_for_30_seconds() -> None:
    guard = Guard()
    fail(guard, 4)
    assert guard.check("1001", ATTACKER, T0).allowed
    fail(guard, 1)
    decision = guard.check("1001", ATTACKER, T0 + 1)
    assert decision.refusal is Refusal.SOURCE_LOCKED
    assert decision.until == T0 + 30
    assert not guard.check("other-user", ATTACKER, T0 + 29).allowed  # the whole source
    assert guard.check("1001", ATTACKER, T0 + 30).allowed


def test_failures_outside_the_window_do_not_add_up() -> None:
    guard = Guard(GuardPolicy(window_s=60))
    for i in range(10):
        guard.record_failure("1001", ATTACKER, T0 + i * 61)
    assert guard.check("1001", ATTACKER, T0 + 10 * 61).allowed


def test_each_failure_after_a_lockout_locks_again_for_twice_as_long_up_to_the_cap() -> None:
    guard = Guard(GuardPolicy(max_lockout_s=100))
    fail(guard, 5)
    now = T0
    durations = []
    for _ in range(4):
        until = guard.check("1001", ATTACKER, now).until
        assert until is not None
        durations.append(until - now)
        now = until
        guard.record_failure("1001", ATTACKER, now)
    assert durations == [30, 60, 100, 100]


def test_strikes_are_forgiven_after_a_quiet_period() -> None:
    guard = Guard(GuardPolicy(forgive_after_s=600))
    fail(guard, 5)
    later = T0 + 30 + 600
    guard.record_failure("1001", ATTACKER, later)
    assert guard.check("1001", ATTACKER, later).allowed  # one failure, fresh count


def test_attempts_while_locked_neither_count_nor_extend_the_lock() -> None:
    guard = Guard()
    fail(guard, 5)
    fail(guard, 50, at=T0 + 10)  # a caller ignoring check() must not change anything
    assert guard.check("1001", ATTACKER, T0 + 30).allowed


def test_per_user_lock_applies_to_every_untrusted_source() -> None:
    guard = Guard(GuardPolicy(source_threshold=100))
    for i in range(5):  # a botnet: one failure per address
        guard.record_failure("1001", f"198.51.100.{i}", T0)
    decision = guard.check("1001", "198.51.100.200", T0 + 1)
    assert decision.refusal is Refusal.USER_LOCKED
    assert guard.check("1002", "198.51.100.200", T0 + 1).allowed


def test_a_source_that_authenticated_recently_is_not_locked_out_by_the_user_lock() -> None:
    guard = Guard()
    guard.record_success("1001", AGENT_PHONE, T0)
    fail(guard, 5, at=T0 + 100)  # attacker locks 1001 (and itself)
    assert guard.check("1001", AGENT_PHONE, T0 + 101).allowed
    assert guard.check("1001", "198.51.100.9", T0 + 101).refusal is Refusal.USER_LOCKED
    assert guard.check("1001", ATTACKER, T0 + 101).refusal is Refusal.SOURCE_LOCKED


def test_trust_expires() -> None:
    guard = Guard(GuardPolicy(trust_ttl_s=60, base_lockout_s=600, max_lockout_s=600))
    guard.record_success("1001", AGENT_PHONE, T0)
    fail(guard, 5, at=T0 + 100)
    assert guard.check("1001", AGENT_PHONE, T0 + 101).refusal is Refusal.USER_LOCKED


def test_success_clears_the_source_but_not_the_user_tally() -> None:
    guard = Guard(GuardPolicy(source_threshold=3, user_threshold=3))
    fail(guard, 2, source=AGENT_PHONE)
    guard.record_success("1001", AGENT_PHONE, T0 + 1)
    fail(guard, 2, source=AGENT_PHONE, at=T0 + 2)
    assert guard.check("1001", AGENT_PHONE, T0 + 2).allowed  # source count restarted
    guard.record_failure("1001", ATTACKER, T0 + 3)  # user's 5th failure overall: locked
    assert guard.check("1001", "198.51.100.1", T0 + 4).refusal is Refusal.USER_LOCKED


def test_release_lifts_locks() -> None:
    guard = Guard()
    fail(guard, 5)
    guard.release(user="1001", source=ATTACKER)
    assert guard.check("1001", ATTACKER, T0 + 1).allowed


def test_unknown_and_known_user_names_are_tracked_alike() -> None:
    guard = Guard(GuardPolicy(source_threshold=100))
    fail(guard, 5, user="no-such-extension")
    assert guard.check("no-such-extension", "198.51.100.1", T0).refusal is Refusal.USER_LOCKED


def test_memory_is_bounded_and_idle_entries_go() -> None:
    guard = Guard(GuardPolicy(max_entries=50))
    for i in range(1000):
        guard.record_failure(f"user{i}" * 100, f"10.0.{i // 256}.{i % 256}", T0)
        guard.record_success(f"user{i}", f"10.1.{i // 256}.{i % 256}", T0)
    sources, users, trusted = guard.tracked()
    assert sources <= 50 and users <= 50 and trusted <= 50
    guard.check("user999", "10.0.3.231", T0 + 10_000)  # long idle: forgotten on sight
    assert guard.tracked()[0] < sources


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=200))
def test_no_more_than_threshold_guesses_per_window_without_a_lock(gaps: list[float]) -> None:
    """However guesses are spaced: a 5th failure within the window always locks, and
    while strikes stand every failure locks."""
    guard = Guard()
    now, since_lock, struck, lock_end = T0, list[float](), False, T0
    for gap in gaps:
        now += gap
        if not guard.check("1001", ATTACKER, now).allowed:
            continue
        struck = struck and now < lock_end + 3600  # forgiven after an hour of quiet
        guard.record_failure("1001", ATTACKER, now)
        since_lock = [t for t in since_lock if t > now - 300] + [now]
        after = guard.check("1001", ATTACKER, now)
        assert (not after.allowed) == (len(since_lock) >= 5 or struck)
        if not after.allowed:
            since_lock, struck, lock_end = [], True, after.until or now
