"""The do-not-call list over real gRPC and PostgreSQL: numbers added, removed, listed and
imported from a file, each change a fact of the dialer's store, per tenant; a bad number
refuses the whole request; an import scrubs listed numbers; a number listed after a file
was imported is refused at its next dial (the compliance check reads the list then)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, time

import asyncpg
import grpc
import pytest

from plateau_contracts.catalogue import parse
from plateau_contracts.events import agents as ag
from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    DialComplianceChecked,
    DoNotCallNumberAdded,
    DoNotCallNumberRemoved,
    PacingMode,
)
from plateau_contracts.events.routing import QueueConfigured
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as call_pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as call_grpc
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc
from plateau_dialer.adapters.gateway import GrpcCallControl
from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.dialing import DialingLoop
from plateau_dialer.do_not_call import DoNotCallList
from plateau_dialer.domain.contacts_file import FileHints
from plateau_dialer.entrypoints.campaigns import campaigns_service
from plateau_runtime.eventstore import EventStore, NewEvent
from plateau_runtime.grpc_server import GrpcServer, GrpcService
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

TENANT = "mno-cg"
OTHER = "other-bpo"
NOW = datetime(2026, 8, 13, 9, 0, tzinfo=UTC)  # a Thursday, 10:00 in Brazzaville


def meta(tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    return (("x-plateau-tenant", tenant), ("x-plateau-user", "supervisor-1"))


class Dialer:
    def __init__(self, stub: pb_grpc.CampaignsStub, store: EventStore, pool: asyncpg.Pool) -> None:
        self.stub = stub
        self.store = store
        self.pool = pool

    async def add(
        self, *numbers: str, reason: str = "", tenant: str = TENANT
    ) -> pb.DoNotCallChange:
        request = pb.AddDoNotCallRequest(numbers=numbers, reason=reason)
        return await self.stub.AddDoNotCall(request, metadata=meta(tenant))

    async def remove(self, *numbers: str, tenant: str = TENANT) -> pb.DoNotCallChange:
        request = pb.RemoveDoNotCallRequest(numbers=numbers, reason="customer asked")
        return await self.stub.RemoveDoNotCall(request, metadata=meta(tenant))

    async def listed(self, tenant: str = TENANT) -> list[pb.DoNotCallEntry]:
        return [
            e
            async for e in self.stub.ListDoNotCall(pb.ListDoNotCallRequest(), metadata=meta(tenant))
        ]

    async def upload(self, data: bytes, filename: str = "optouts.csv") -> pb.DoNotCallImportReport:
        def parts() -> Iterator[pb.ImportDoNotCallRequest]:
            yield pb.ImportDoNotCallRequest(
                header=pb.DoNotCallImportHeader(filename=filename, reason="opt-out campaign")
            )
            for start in range(0, len(data), 5):
                yield pb.ImportDoNotCallRequest(chunk=data[start : start + 5])

        return await self.stub.ImportDoNotCall(parts(), metadata=meta())

    async def events(self) -> list[object]:
        return [
            e
            async for stored in self.store.iterate()
            if isinstance(
                e := parse(stored.envelope), DoNotCallNumberAdded | DoNotCallNumberRemoved
            )
        ]


@pytest.fixture
async def dialer(
    service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> AsyncIterator[Dialer]:
    store = EventStore(service_pool, service_schema.schema)
    service = campaigns_service(
        CampaignCommands(store, service_pool),
        DoNotCallList(store, service_pool),
        # Never ticks here, so its gateway is never dialled: it only reports progress.
        DialingLoop(store, service_pool, GrpcCallControl("127.0.0.1:1")),
        max_upload_bytes=64 * 1024,
    )
    server = GrpcServer("127.0.0.1", 0, [service])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Dialer(pb_grpc.CampaignsStub(channel), store, service_pool)
    finally:
        await server.stop(0)


async def test_numbers_are_added_removed_and_listed_as_facts_of_the_tenant(dialer: Dialer) -> None:
    added = await dialer.add("06 612 34 56", "+242 05 512 34 56", reason="customer asked")
    assert list(added.changed) == ["+242066123456", "+242055123456"]
    again = await dialer.add("00242066123456", "06 600 00 01")
    assert (list(again.changed), list(again.unchanged)) == (["+242066000001"], ["+242066123456"])

    entries = await dialer.listed()
    assert [(e.number, e.source, e.reason) for e in entries] == [
        ("+242055123456", "manual", "customer asked"),
        ("+242066000001", "manual", ""),
        ("+242066123456", "manual", "customer asked"),
    ]
    assert all(e.added_at.endswith("+00:00") for e in entries)
    assert await dialer.listed(OTHER) == []  # another tenant's list is its own

    removed = await dialer.remove("066123456", "066999999")
    assert (list(removed.changed), list(removed.unchanged)) == (
        ["+242066123456"],
        ["+242066999999"],
    )
    assert [e.number for e in await dialer.listed()] == ["+242055123456", "+242066000001"]

    events = await dialer.events()
    assert [(type(e).__name__, getattr(e, "number", None)) for e in events] == [
        ("DoNotCallNumberAdded", "+242066123456"),
        ("DoNotCallNumberAdded", "+242055123456"),
        ("DoNotCallNumberAdded", "+242066000001"),
        ("DoNotCallNumberRemoved", "+242066123456"),
    ]
    first = events[0]
    assert isinstance(first, DoNotCallNumberAdded)
    assert (first.added_by, first.reason) == ("supervisor-1", "customer asked")
    streams = [s.envelope.stream async for s in dialer.store.iterate()]
    assert streams[0] == f"do-not-call-{TENANT}:+242066123456"

    # The same number on another tenant's list: its own stream, its own row.
    other = await dialer.add("+242066123456", tenant=OTHER)
    assert list(other.changed) == ["+242066123456"]
    assert [e.number for e in await dialer.listed(OTHER)] == ["+242066123456"]


async def test_a_bad_number_refuses_the_whole_request(dialer: Dialer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await dialer.add("06 612 34 56", "appeler après 18h")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "'appeler après 18h' is not a number that can be listed" in details
    assert "nothing was changed" in details
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await dialer.remove("12")
    assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await dialer.add()
    assert "at least one number" in (empty.value.details() or "")
    assert await dialer.events() == []
    assert await dialer.listed() == []


async def test_a_file_of_numbers_is_read_as_customer_files_are(dialer: Dialer) -> None:
    await dialer.add("+242066000001")
    data = (
        "Nom;Téléphone\r\n"
        "Élodie;06 612 34 56\r\n"
        "Noël;00242066123456\r\n"  # the same number
        "Zoé;pas de numéro\r\n"
        "Paul;+33 6 12 34 56 78\r\n"  # foreign: may be listed
        "Ange;06 600 00 01\r\n"  # already listed
    ).encode("cp1252")
    report = await dialer.upload(data)
    assert (report.encoding, report.delimiter, report.rows_total) == ("cp1252", ";", 5)
    assert (report.numbers_added, report.numbers_already_listed) == (2, 1)
    assert (report.rows_rejected, report.rows_duplicate) == (1, 1)
    assert [(p.line, p.code) for p in report.problems] == [(3, "duplicate"), (4, "has_letters")]
    entries = {e.number: e.source for e in await dialer.listed()}
    assert entries == {
        "+242066000001": "manual",
        "+242066123456": "file:optouts.csv",
        "+33612345678": "file:optouts.csv",
    }

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await dialer.upload(b"nom;ville\nAnge;Brazzaville\n")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no phone column" in (refused.value.details() or "")


async def test_a_listed_number_is_scrubbed_from_the_next_import(dialer: Dialer) -> None:
    await dialer.add("06 612 34 56")
    commands = CampaignCommands(dialer.store, dialer.pool)
    await commands.create(TENANT, _campaign())
    outcome = await commands.import_file(
        TENANT,
        "renewals",
        filename="c.csv",
        source=io.BytesIO(b"phone\n066123456\n066000002\n"),
        hints=FileHints(),
        imported_by="test",
    )
    assert [c.number for c in outcome.file.contacts] == ["+242066000002"]
    assert [r.reason for r in outcome.file.reports if r.reason] == ["do_not_call"]


class _Gateway(call_grpc.CallControlServicer):
    def __init__(self) -> None:
        self.numbers: list[str] = []

    async def Originate(
        self, request: call_pb.OriginateRequest, context: grpc.aio.ServicerContext
    ) -> call_pb.OriginateResponse:
        self.numbers.append(request.number)
        return call_pb.OriginateResponse(call_id=f"call-{len(self.numbers)}")


async def test_a_number_listed_after_the_import_is_refused_at_dial_time(dialer: Dialer) -> None:
    commands = CampaignCommands(dialer.store, dialer.pool)
    await commands.create(TENANT, _campaign())
    await commands.import_file(
        TENANT,
        "renewals",
        filename="c.csv",
        source=io.BytesIO(b"phone\n066000001\n066000002\n"),
        hints=FileHints(),
        imported_by="test",
    )
    await commands.command(TENANT, "renewals", lambda c: c.start("test"))
    # After the import, the customer of the first number asks never to be called.
    await dialer.add("06 600 00 01", reason="asked on the phone")

    gateway = _Gateway()
    server = GrpcServer(
        "127.0.0.1",
        0,
        [
            GrpcService(
                "plateau.calls.v1.CallControl", call_grpc.add_CallControlServicer_to_server, gateway
            )
        ],
    )
    await server.start()
    adapter = GrpcCallControl(f"127.0.0.1:{server.port}")
    try:
        loop = DialingLoop(dialer.store, dialer.pool, adapter, clock=lambda: NOW)
        facts = [
            QueueConfigured(
                queue_id="q-sales",
                name="Sales",
                strategy="longest_idle",
                required_skills=("sales",),
                service_level_threshold_s=20,
                service_level_target=0.8,
                ring_timeout_s=15,
            ),
            ag.AgentLoggedIn(agent_id="a-1", extension="1001", skills=(ag.Skill(name="sales"),)),
            ag.AgentBecameAvailable(agent_id="a-1"),
            ag.AgentLoggedIn(agent_id="a-2", extension="1002", skills=(ag.Skill(name="sales"),)),
            ag.AgentBecameAvailable(agent_id="a-2"),
        ]
        for fact in facts:
            [stored] = await dialer.store.append(
                "facts-" + fact.stream_id(TENANT), [NewEvent(fact, tenant=TENANT, occurred_at=NOW)]
            )
            async with dialer.pool.acquire() as conn, conn.transaction():
                await loop.apply(conn, stored.envelope)
        assert await loop.tick() == 1
        assert await loop.tick() == 0
    finally:
        await adapter.close()
        await server.stop(0)

    assert gateway.numbers == ["+242066000002"]
    ledger = [
        e
        async for stored in dialer.store.iterate()
        if isinstance(e := parse(stored.envelope), DialComplianceChecked)
    ]
    assert sorted((c.number, c.decision, c.on_do_not_call, c.refusal) for c in ledger) == [
        ("+242066000001", "refused", True, "do_not_call"),
        ("+242066000002", "allowed", False, None),
    ]
    done = await dialer.pool.fetchval("select done from dial_plans where number = '+242066000001'")
    assert done == "do_not_call"


def _campaign() -> CampaignCreated:
    return CampaignCreated(
        campaign_id="renewals",
        name="Renewals",
        queue_id="q-sales",
        pacing=PacingMode.PROGRESSIVE,
        max_abandon_rate=0.03,
        max_attempts=2,
        retry_after_s=3600,
        ring_timeout_s=20,
        calling_window=CallingWindow(
            start=time(8),
            end=time(20),
            days=("mon", "tue", "wed", "thu", "fri"),
            time_zone="Africa/Brazzaville",
        ),
    )
