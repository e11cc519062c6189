"""LiveViews: one read per tenant, scopes, kind and change generation, shared; never older
than its maximum age; a failed read is not kept."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from plateau_access_gateway.adapters.read_models import ReadModels, Row
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_access_gateway.entrypoints.http_supervision import LiveViews

pytestmark = pytest.mark.unit


def queue_row(queue_id: str, waiting: int) -> Row:
    return {
        "queue_id": queue_id,
        "name": None,
        "service_level_threshold_s": 20,
        "service_level_target": None,
        "calls_waiting": waiting,
        "longest_waiting_since": None,
        "agents_by_state": [],
        "measures": {},
        "service_level": None,
        "asa_ms": None,
        "aht_ms": None,
        "abandonment_rate": None,
    }


@dataclass
class CountingReadModels:
    """Answers queue reads from ``waiting`` and counts them; fails when told to."""

    waiting: int = 0
    reads: list[tuple[str, frozenset[str] | None]] = field(default_factory=list)
    fail: bool = False

    async def queues(self, principal: Principal) -> list[Row]:
        self.reads.append((principal.tenant, principal.queue_scope))
        await asyncio.sleep(0)  # let concurrent requests pile up on the same read
        if self.fail:
            raise ConnectionError("the database went away")
        return [queue_row("q1", self.waiting), queue_row("q2", 0)]


@dataclass
class Changes:
    generation: int = 0


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def analyst(tenant: str = "acme", queues: frozenset[str] | None = None) -> Principal:
    return Principal(tenant, f"u-{tenant}", "ana", Role.CLIENT_ANALYST, Via.SESSION, "s-1", queues)


def views(read_models: CountingReadModels, changes: Changes, clock: Clock) -> LiveViews:
    return LiveViews(cast(ReadModels, read_models), changes, max_age_s=1.0, clock=clock)


def waiting(body: bytes) -> dict[str, Any]:
    return {q["queue_id"]: q["calls_waiting"] for q in json.loads(body)}


async def test_concurrent_requests_of_one_scope_share_one_read_serialised_once() -> None:
    read_models, changes, clock = CountingReadModels(waiting=3), Changes(), Clock()
    live = views(read_models, changes, clock)
    seen = await asyncio.gather(*(live.view(analyst(), "queue") for _ in range(20)))
    assert read_models.reads == [("acme", None)]
    assert {id(v) for v in seen} == {id(seen[0])}
    assert waiting(seen[0].body) == {"q1": 3, "q2": 0}
    assert json.loads(seen[0].rows["q1"])["calls_waiting"] == 3
    # Another tenant, or another scope in the same tenant, reads for itself.
    await live.view(analyst("globex"), "queue")
    await live.view(analyst(queues=frozenset({"q1"})), "queue")
    assert read_models.reads[1:] == [("globex", None), ("acme", frozenset({"q1"}))]


async def test_a_change_notice_or_the_maximum_age_makes_the_next_request_read_again() -> None:
    read_models, changes, clock = CountingReadModels(waiting=1), Changes(), Clock()
    live = views(read_models, changes, clock)
    assert waiting((await live.view(analyst(), "queue")).body)["q1"] == 1
    read_models.waiting = 2
    clock.now = 0.5
    assert waiting((await live.view(analyst(), "queue")).body)["q1"] == 1  # no notice yet
    changes.generation += 1
    assert waiting((await live.view(analyst(), "queue")).body)["q1"] == 2
    read_models.waiting = 5  # a change without a notice (say, one missed while reconnecting)
    clock.now = 1.6
    assert waiting((await live.view(analyst(), "queue")).body)["q1"] == 5
    assert len(read_models.reads) == 3


async def test_a_failed_read_is_not_kept() -> None:
    read_models, changes, clock = CountingReadModels(fail=True), Changes(), Clock()
    live = views(read_models, changes, clock)
    with pytest.raises(ConnectionError):
        await live.view(analyst(), "queue")
    read_models.fail = False
    assert waiting((await live.view(analyst(), "queue")).body) == {"q1": 0, "q2": 0}
