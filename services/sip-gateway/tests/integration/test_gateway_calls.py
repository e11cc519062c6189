"""The gateway's calls with real peers: sipp as the carrier and as agent softphones
(registered with digest auth), ``CallControl`` over real gRPC, facts read back from the
real event store in their recorded order."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sip_gateway_harness import (
    DNIS,
    TENANT,
    RunningGateway,
    agent_answers,
    agent_rejects,
    agent_rings_out,
    carrier_cancels,
    carrier_hears_bye,
    carrier_refused,
    carrier_talks,
    free_port,
    register,
    run_sipp,
    running_gateway,
    start_sipp,
    trunks,
    wait_until,
    write,
)

from plateau_contracts.events.calls import CallOffered
from plateau_runtime.eventstore import EventStore, NewEvent
from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.testing.sipp import asked_to_auto_answer

pytestmark = pytest.mark.integration

EXTENSION = "1001"
PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool,
        tmp_path,
        passwords={EXTENSION: PASSWORD},
        config=trunks(max_calls=2),
        schema=service_schema.schema,
    ) as running:
        yield running


async def register_agent(gw: RunningGateway, tmp_path: Path, contact_port: int) -> None:
    scenario = write(tmp_path, "register.xml", register(EXTENSION, PASSWORD, contact_port))
    code, output = await run_sipp(["-sf", scenario, "-m", "1", gw.sip_target], tmp_path)
    assert code == 0, f"REGISTER failed:\n{output}"


async def one_offered_call(gw: RunningGateway, known: set[str] | None = None) -> str:
    known = known or set()

    async def offered() -> bool:
        return bool(set(await gw.offered_calls()) - known)

    await wait_until(offered, what="call.offered")
    return (set(await gw.offered_calls()) - known).pop()


async def test_a_call_connects_to_the_agent_and_the_caller_hangs_up(
    gw: RunningGateway, tmp_path: Path
) -> None:
    agent_port = free_port()
    # An inbound call rings the agent as usual: no auto-answer.
    ringing = asked_to_auto_answer(agent_answers(), asked=False)
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", ringing), "-m", "1"],
        tmp_path,
        port=agent_port,
    )
    await register_agent(gw, tmp_path, agent_port)
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_talks()),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    response = await gw.connect_agent(call_id, EXTENSION)
    assert response.agent_sip_call_id

    code, output = await carrier.result()
    assert code == 0, f"carrier sipp failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"agent sipp failed:\n{output}"

    streams = await gw.streams()
    assert streams[f"call-{call_id}"] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    ended = (await gw.events(f"call-{call_id}"))[-1]
    assert ended["cause"] == "caller_hangup" and ended["ended_by"] == "caller"
    assert ended["sip_code"] is None and ended["agent_id"] == "a-1"
    assert streams[f"extension-{EXTENSION}"] == ["extension.registered"]
    assert gw.gateway.b2bua.open_calls == 0


async def test_the_api_hangs_up_a_connected_call(gw: RunningGateway, tmp_path: Path) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_answers()), "-m", "1"], tmp_path, port=agent_port
    )
    await register_agent(gw, tmp_path, agent_port)
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_hears_bye()),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    await gw.connect_agent(call_id, EXTENSION)

    async def connected() -> bool:
        return (await gw.streams())[f"call-{call_id}"][-1] == "call.connected"

    await wait_until(connected, what="call.connected")
    await gw.hangup(call_id)
    assert (await carrier.result())[0] == 0
    assert (await agent.result())[0] == 0
    ended = (await gw.events(f"call-{call_id}"))[-1]
    assert ended["type"] == "call.ended" and ended["cause"] == "api_hangup"


async def test_the_caller_cancels_while_the_agent_rings(gw: RunningGateway, tmp_path: Path) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_rings_out()), "-m", "1"],
        tmp_path,
        port=agent_port,
    )
    await register_agent(gw, tmp_path, agent_port)
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_cancels(1500)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    await gw.connect_agent(call_id, EXTENSION, ring_timeout_s=30)

    code, output = await carrier.result()
    assert code == 0, f"carrier sipp failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"agent sipp did not get the CANCEL:\n{output}"
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == ["call.offered", "call.agent_ringing", "call.ended"]
    assert events[-1]["cause"] == "caller_hangup" and events[-1]["sip_code"] == 487


async def test_an_agent_who_does_not_answer_is_cancelled_and_the_caller_waits(
    gw: RunningGateway, tmp_path: Path
) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_rings_out()), "-m", "1"],
        tmp_path,
        port=agent_port,
    )
    await register_agent(gw, tmp_path, agent_port)
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_refused(480, ringback=True)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    await gw.connect_agent(call_id, EXTENSION, ring_timeout_s=1.0)
    code, output = await agent.result()
    assert code == 0, f"agent sipp did not get the CANCEL:\n{output}"

    async def back_to_waiting() -> bool:
        return (await gw.streams())[f"call-{call_id}"][-1] == "call.agent_no_answer"

    await wait_until(back_to_waiting, what="call.agent_no_answer")
    await gw.hangup(call_id)  # routing gives up: the caller gets 480
    code, output = await carrier.result()
    assert code == 0, f"carrier sipp failed:\n{output}"
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.agent_no_answer",
        "call.ended",
    ]
    assert 900 <= int(events[2]["rang_ms"]) < 5000  # type: ignore[call-overload]
    assert events[-1]["sip_code"] == 480


@pytest.mark.parametrize("code", [486, 603, 480])
async def test_an_agent_who_rejects_leaves_the_caller_waiting(
    gw: RunningGateway, tmp_path: Path, code: int
) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_rejects(code)), "-m", "1"],
        tmp_path,
        port=agent_port,
    )
    await register_agent(gw, tmp_path, agent_port)
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_refused(480, ringback=True)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    await gw.connect_agent(call_id, EXTENSION)
    assert (await agent.result())[0] == 0

    async def rejected() -> bool:
        return (await gw.streams())[f"call-{call_id}"][-1] == "call.agent_rejected"

    await wait_until(rejected, what="call.agent_rejected")
    rejection = (await gw.events(f"call-{call_id}"))[-1]
    assert rejection["sip_code"] == code
    assert rejection["reason"] == {486: "busy", 603: "declined", 480: "unreachable"}[code]
    await gw.hangup(call_id)
    assert (await carrier.result())[0] == 0


async def test_an_unregistered_agent_is_reported_without_ringing(
    gw: RunningGateway, tmp_path: Path
) -> None:
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_refused(480, ringback=True)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    call_id = await one_offered_call(gw)
    response = await gw.connect_agent(call_id, "1002")
    assert response.agent_sip_call_id == ""
    await gw.hangup(call_id)
    assert (await carrier.result())[0] == 0
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == ["call.offered", "call.agent_rejected", "call.ended"]
    assert events[1]["reason"] == "not_registered"


async def test_refusals_are_answered_and_recorded(gw: RunningGateway, tmp_path: Path) -> None:
    # Not a trunk: the carrier's sipp on 127.0.0.2, outside the trunk's 127.0.0.1/32.
    code, output = await run_sipp(
        [
            "-sf",
            write(tmp_path, "foreign.xml", carrier_refused(403)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
        ip="127.0.0.2",
    )
    assert code == 0, f"no 403 for a foreign address:\n{output}"
    # Unknown dialled number.
    code, output = await run_sipp(
        [
            "-sf",
            write(tmp_path, "unknown.xml", carrier_refused(404)),
            "-s",
            "0999",
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    assert code == 0, f"no 404 for an unknown number:\n{output}"
    # Over capacity (2 calls): two calls wait with ringback, the third gets 503.
    waiting = await start_sipp(
        [
            "-sf",
            write(tmp_path, "wait.xml", carrier_refused(480, ringback=True)),
            "-s",
            DNIS,
            "-m",
            "2",
            "-l",
            "2",
            gw.sip_target,
        ],
        tmp_path,
    )
    await wait_until(lambda: _count(gw, 2), what="two calls offered")
    code, output = await run_sipp(
        [
            "-sf",
            write(tmp_path, "full.xml", carrier_refused(503)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    assert code == 0, f"no 503 over capacity:\n{output}"
    for call_id in await gw.offered_calls():
        await gw.hangup(call_id)
    assert (await waiting.result())[0] == 0

    streams = await gw.streams()
    rejected = [
        (await gw.events(stream))[0]
        for stream, types in streams.items()
        if types == ["call.rejected"]
    ]
    by_reason = {e["reason"]: e for e in rejected}
    assert set(by_reason) == {"not_a_trunk", "unknown_dnis", "over_capacity"}
    assert by_reason["not_a_trunk"]["sip_code"] == 403
    assert str(by_reason["not_a_trunk"]["source"]).startswith("127.0.0.2:")
    assert by_reason["unknown_dnis"]["sip_code"] == 404
    assert by_reason["over_capacity"]["sip_code"] == 503
    assert by_reason["over_capacity"]["retry_after_s"] == 7
    assert gw.gateway.b2bua.admission.in_use("carrier") == 0


async def _count(gw: RunningGateway, n: int) -> bool:
    return len(await gw.offered_calls()) >= n


async def test_a_restart_closes_calls_left_open(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    offered = CallOffered(
        call_id="left-open",
        ani="+242066123456",
        dnis="+242053000100",
        trunk="carrier",
        sip_call_id="x@carrier",
    )
    await store.append("call-left-open", [NewEvent(offered, tenant=TENANT)], expected_version=0)
    async with running_gateway(
        service_pool, tmp_path, passwords={}, schema=service_schema.schema
    ) as gw:
        events = await gw.events("call-left-open")
    assert [e["type"] for e in events] == ["call.offered", "call.ended"]
    assert events[-1]["cause"] == "gateway_restart" and events[-1]["ended_by"] == "gateway"
