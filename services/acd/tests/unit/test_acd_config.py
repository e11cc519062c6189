"""The declarative configuration: a valid file, and errors that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from plateau_acd.domain.config import ConfigError, load_config, location_path
from plateau_acd.domain.queue import FinalAction, SkillRequirement, Strategy

pytestmark = pytest.mark.unit


def demo() -> dict[str, Any]:
    return {
        "tenants": [
            {
                "id": "mno",
                "name": "Mobile operator customer service",
                "pause_codes": ["break", "lunch", "training"],
                "queues": [
                    {
                        "id": "q-support",
                        "name": "Support",
                        "wrap_up_s": 30,
                        "max_wait_s": 120,
                        "overflow_queue": "q-french",
                    },
                    {
                        "id": "q-french",
                        "name": "French",
                        "strategy": "skills_based",
                        "required_skills": [{"name": "french", "min_level": 3}],
                        "priority": 10,
                    },
                ],
                "entry_points": [
                    {"dnis": "+242053000100", "queue": "q-support"},
                    {"dnis": "+242053000300", "queue": "q-french", "name": "French line"},
                ],
                "agents": [
                    {
                        "id": "a-1001",
                        "name": "Awa",
                        "extension": "1001",
                        "skills": [{"name": "french", "level": 5}],
                    },
                    {"id": "a-1002", "name": "Bienvenu", "extension": "1002"},
                ],
            }
        ]
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(data)
    return [str(p) for p in raised.value.problems]


def test_a_valid_file_loads_with_defaults() -> None:
    config = load_config(demo())
    tenant = config.tenants[0]
    assert tenant.time_zone == "Africa/Brazzaville"
    support, french = tenant.queue_configs()
    assert support.strategy is Strategy.LONGEST_IDLE
    assert support.ring_timeout_s == 15
    assert support.final_action is FinalAction.HANG_UP
    assert support.overflow_queue_id == "q-french"
    assert french.required_skills == (SkillRequirement("french", 3),)
    assert french.priority == 10
    assert tenant.entry_point_map() == {"+242053000100": "q-support", "+242053000300": "q-french"}


def test_location_path() -> None:
    assert location_path(("tenants", 0, "queues", 2, "ring_timeout_s")) == (
        "tenants[0].queues[2].ring_timeout_s"
    )
    assert location_path(()) == ""
    assert location_path(("version",)) == "version"


def test_field_errors_name_the_field() -> None:
    data = demo()
    tenant = data["tenants"][0]
    tenant["queues"][1]["ring_timeout_s"] = 0
    tenant["queues"][0]["strategy"] = "random"
    tenant["agents"][1]["extension"] = "ext-1"
    tenant["agents"][0]["skills"][0]["level"] = 11
    tenant["time_zone"] = "Mars/Olympus"
    tenant["colour"] = "blue"
    found = problems(data)
    paths = [p.split(":")[0] for p in found]
    assert len(paths) == len(set(paths))  # one per problem
    assert set(paths) == {
        "tenants[0].time_zone",
        "tenants[0].queues[0].strategy",
        "tenants[0].queues[1].ring_timeout_s",
        "tenants[0].agents[0].skills[0].level",
        "tenants[0].agents[1].extension",
        "tenants[0].colour",
    }
    assert any("unknown time zone 'Mars/Olympus'" in p for p in found)


def test_references_are_checked_with_their_path() -> None:
    data = copy.deepcopy(demo())
    tenant = data["tenants"][0]
    tenant["entry_points"][1]["queue"] = "q-nowhere"
    tenant["queues"][0]["overflow_queue"] = "q-gone"
    tenant["queues"][1]["overflow_queue"] = "q-french"
    tenant["agents"][1]["extension"] = "1001"
    tenant["agents"].append({"id": "a-1001", "name": "Copy", "extension": "1003"})
    assert problems(data) == [
        "tenants[0].agents[2].id: duplicate agent id 'a-1001'",
        "tenants[0].agents[1].extension: duplicate extension '1001'",
        "tenants[0].queues[0].overflow_queue: unknown queue 'q-gone'; known: q-french, q-support",
        "tenants[0].queues[1].overflow_queue: a queue cannot overflow to itself",
        "tenants[0].queues[1].max_wait_s: an overflow queue needs a max_wait_s",
        "tenants[0].entry_points[1].queue: unknown queue 'q-nowhere'; known: q-french, q-support",
    ]


def test_the_acd_pause_code_is_reserved() -> None:
    data = demo()
    data["tenants"][0]["pause_codes"] = ["break", "not_responding"]
    assert problems(data) == [
        "tenants[0].pause_codes: 'not_responding' is the acd's own pause code; choose another name"
    ]


def test_an_empty_file_says_tenants_are_missing() -> None:
    assert problems({}) == ["tenants: Field required"]
    assert problems({"tenants": []}) == ["tenants: at least one tenant is needed"]
