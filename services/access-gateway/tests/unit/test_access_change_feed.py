"""The change feed's fan-out without a database: each notification reaches the streams of
its tenant only, coalesced per stream, and a malformed one is dropped."""

from __future__ import annotations

import json

import pytest

from plateau_access_gateway.entrypoints.http_stream import ChangeFeed

pytestmark = pytest.mark.unit


def notify(feed: ChangeFeed, payload: object) -> None:
    feed._notified(None, 1, "plateau_read_models", json.dumps(payload))


def test_a_change_wakes_the_streams_of_its_tenant_only_and_coalesces() -> None:
    feed = ChangeFeed("postgresql://unused")
    with feed.subscribe("acme") as mine, feed.subscribe("acme") as also_mine:
        with feed.subscribe("other") as theirs:
            notify(feed, {"tenant": "acme", "queues": ["q1"], "agents": ["a1"]})
            notify(feed, {"tenant": "acme", "queues": ["q2"], "agents": [], "campaign": "c1"})
            assert feed.generation == 2
            assert not theirs.wake.is_set()
            for subscription in (mine, also_mine):
                assert subscription.wake.is_set()
                assert subscription.take() == ({"q1", "q2"}, {"a1"}, {"c1"}, False)
                assert not subscription.wake.is_set()
        assert feed.subscribers == 2
    assert feed.subscribers == 0


def test_a_malformed_notification_is_dropped() -> None:
    feed = ChangeFeed("postgresql://unused")
    with feed.subscribe("acme") as subscription:
        feed._notified(None, 1, "plateau_read_models", "not json")
        notify(feed, {"queues": ["q1"]})
        assert not subscription.wake.is_set() and feed.generation == 0


def test_a_resuming_stream_gets_its_tenants_changes_since_its_last_event() -> None:
    feed = ChangeFeed("postgresql://unused", history=3)
    notify(feed, {"tenant": "acme", "queues": ["q1"], "agents": []})
    last_seen = feed.next_id(feed.generation)
    notify(feed, {"tenant": "acme", "queues": ["q2"], "agents": ["a1"]})
    notify(feed, {"tenant": "other", "queues": ["q9"], "agents": ["a9"]})
    notify(feed, {"tenant": "acme", "queues": [], "agents": [], "campaign": "c1"})
    since = feed.changes_since("acme", last_seen)
    assert since is not None
    assert (since.queues, since.agents, since.campaigns) == ({"q2"}, {"a1"}, {"c1"})
    assert since.generation == 1  # where the stream resumes from
    up_to_date = feed.changes_since("acme", feed.next_id(feed.generation))
    assert up_to_date is not None and not (up_to_date.queues or up_to_date.agents)


def test_a_stream_resumes_with_a_snapshot_when_the_feed_cannot_say_what_changed() -> None:
    feed = ChangeFeed("postgresql://unused", history=2)
    first = feed.next_id(feed.generation)
    for n in range(3):
        notify(feed, {"tenant": "acme", "queues": [f"q{n}"], "agents": []})
    recent = feed.next_id(feed.generation)
    assert feed.changes_since("acme", first) is None  # older than the two notices kept
    assert feed.changes_since("acme", recent) is not None
    other_process = f"{int(recent.split('-')[0]) - 1}-1-3"
    mid_snapshot = feed.next_id(None)  # a client cut off before its snapshot's last event
    future = recent.rsplit("-", 1)[0] + "-99"
    superscript = recent.rsplit("-", 1)[0] + "-\u00b2"  # a digit to isdigit(), not to int()
    for unusable in (other_process, mid_snapshot, future, superscript, "nonsense", ""):
        assert feed.changes_since("acme", unusable) is None, unusable
