"""What a configuration application records: only the differences, as events."""

from __future__ import annotations

import pytest

from plateau_acd.configuration import Recorded, desired_events, tenant_digest
from plateau_acd.domain.config import load_config
from plateau_contracts.events.agents import AgentConfigured, AgentRemoved
from plateau_contracts.events.routing import (
    EntryPointMapped,
    EntryPointUnmapped,
    QueueConfigured,
)

pytestmark = pytest.mark.unit


def tenant(**changes: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "id": "mno",
        "name": "MNO",
        "queues": [
            {"id": "q-1", "name": "One", "required_skills": [{"name": "fr", "min_level": 3}]},
            {"id": "q-2", "name": "Two", "priority": 5},
        ],
        "entry_points": [{"dnis": "+242053000100", "queue": "q-1"}],
        "agents": [{"id": "a-1", "name": "A", "extension": "1001"}],
    }
    spec.update(changes)
    return {"tenants": [spec]}


def recorded_after(config: dict[str, object]) -> Recorded:
    [spec] = load_config(config).tenants
    events, _ = desired_events(spec, Recorded())
    state = Recorded()
    for event in events:
        state.apply(event)
    return state


def test_a_first_application_records_everything() -> None:
    [spec] = load_config(tenant()).tenants
    events, warnings = desired_events(spec, Recorded())
    assert [type(e) for e in events] == [
        QueueConfigured,
        QueueConfigured,
        EntryPointMapped,
        AgentConfigured,
    ]
    q1 = events[0]
    assert isinstance(q1, QueueConfigured)
    assert [(s.name, s.min_level) for s in q1.skill_levels or ()] == [("fr", 3)]
    assert warnings == []


def test_the_same_file_again_records_nothing() -> None:
    state = recorded_after(tenant())
    [spec] = load_config(tenant()).tenants
    assert desired_events(spec, state) == ([], [])


def test_changes_removals_and_a_queue_left_out() -> None:
    state = recorded_after(tenant())
    changed = tenant(
        queues=[{"id": "q-1", "name": "One", "required_skills": [{"name": "fr", "min_level": 4}]}],
        entry_points=[],
        agents=[],
    )
    [spec] = load_config(changed).tenants
    events, warnings = desired_events(spec, state)
    assert [type(e) for e in events] == [QueueConfigured, EntryPointUnmapped, AgentRemoved]
    assert warnings == [
        "queue q-2 is no longer in the file; queues are not removed, it keeps its configuration"
    ]


def test_the_digest_follows_the_content() -> None:
    [one] = load_config(tenant()).tenants
    [same] = load_config(tenant()).tenants
    [other] = load_config(tenant(name="MNO 2")).tenants
    assert tenant_digest(one) == tenant_digest(same) != tenant_digest(other)
