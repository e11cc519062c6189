"""Times at the edges of what Python can hold, in every filter and cursor of the read
endpoints: a 422 naming the accepted range, never a server error (the call search answered
500 to ``from=0001-01-01T00:00:00+01:00``: its conversion to UTC overflowed)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from access_read_harness import World, build_world, tag

from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

BEFORE = "0001-01-01T00:00:00+01:00"  # 31 Dec of year 0 in UTC
AFTER = "9999-12-31T23:59:59-01:00"  # year 10000 in UTC
EARLY = "0001-01-01T12:00:00+00:00"  # representable, but a tenant's local day may not be


def cursor(at: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at, "call-1"]).encode()).decode()


@pytest.fixture
async def world(
    admin_dsn: str, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[World]:
    async for built in build_world(admin_dsn, service_schema, tmp_path, heartbeat_s=1.0):
        yield built


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/calls", {"from": BEFORE}),
        ("/api/v1/calls", {"to": AFTER}),
        ("/api/v1/calls", {"from": EARLY}),
        ("/api/v1/compliance", {"from": BEFORE}),
        ("/api/v1/compliance", {"to": AFTER}),
        ("/api/v1/reports/queues", {"from": BEFORE, "to": "0001-01-02T00:00:00+01:00"}),
        ("/api/v1/reports/queues", {"from": "9999-12-30T00:00:00+00:00", "to": AFTER}),
        ("/api/v1/exports/calls.csv", {"from": BEFORE}),
        ("/api/v1/exports/compliance.xlsx", {"to": AFTER}),
        ("/api/v1/exports/report.csv", {"kind": "queues", "from": BEFORE, "to": EARLY}),
    ],
)
async def test_a_time_beyond_the_accepted_range_is_a_422(
    world: World, path: str, params: dict[str, str]
) -> None:
    await world.sign_in("a", f"alpha{tag()}")
    async with world.client("a") as http:
        answer = await http.get(path, params=params)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "dates must lie between 0001-01-02 and 9999-12-30 (UTC)" in answer.text


@pytest.mark.parametrize("path", ["/api/v1/calls", "/api/v1/compliance"])
@pytest.mark.parametrize("at", [BEFORE, AFTER])
async def test_a_cursor_beyond_the_accepted_range_is_refused(
    world: World, path: str, at: str
) -> None:
    await world.sign_in("a", f"alpha{tag()}")
    async with world.client("a") as http:
        answer = await http.get(path, params={"cursor": cursor(at)})
        inside = await http.get(path, params={"cursor": cursor("2026-05-04T10:00:00+01:00")})
    assert answer.status_code == 422, answer.text
    assert "cursor" in answer.json()["detail"]
    assert inside.status_code == 200, inside.text
