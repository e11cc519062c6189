"""A small seeded run of bench/dialer_sim.py: relations between the algorithms that could fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SIM_PATH = Path(__file__).resolve().parents[4] / "bench" / "dialer_sim.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dialer_sim", SIM_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dialer_sim"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_predictive_keeps_agents_busier_than_progressive_within_the_target(
    sim: ModuleType,
) -> None:
    scenario = sim.design_scenario()
    seeds = range(3)
    predictive = sim.summarize(sim.run_days(scenario, "predictive", seeds, 1.0))
    progressive = sim.summarize(sim.run_days(scenario, "progressive", seeds, 1.0))
    assert predictive["occupancy"] > progressive["occupancy"] + 0.05
    assert predictive["us"] <= sim.TARGET
    assert progressive["us"] == 0.0  # one call per free agent cannot abandon without churn
    assert predictive["wait_p95"] < progressive["wait_p95"]


def test_the_simulated_floor_accounts_for_every_live_answer(sim: ModuleType) -> None:
    scenario = sim.Scenario(name="churny", agents=5, live=0.3, pattern="step", churn=True)
    days = sim.run_days(scenario, "predictive", range(2), 1.0)
    for day in days:
        connected = len(day.waits)
        # every live answer was either connected to an agent or abandoned, except those
        # still waiting for an agent when the day ended
        assert connected + day.abandons <= day.live_answers <= connected + day.abandons + 5
        assert 0.0 < day.busy <= day.staffed
        assert day.talk <= day.busy
