"""``Campaigns`` over real gRPC and PostgreSQL: campaign life, customer files streamed in,
the allow-list recorded as events, and nothing recorded when a file or a command is refused."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from plateau_contracts.catalogue import parse
from plateau_contracts.events.dialer import (
    CampaignCreated,
    ContactAllowed,
    ContactListImported,
    ContactWithdrawn,
)
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc
from plateau_dialer.adapters.gateway import GrpcCallControl
from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.dialing import DialingLoop
from plateau_dialer.do_not_call import DoNotCallList
from plateau_dialer.entrypoints.campaigns import campaigns_service
from plateau_runtime.eventstore import EventStore
from plateau_runtime.grpc_server import GrpcServer
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

TENANT = "mno-cg"
META = (("x-plateau-tenant", TENANT),)


class Dialer:
    def __init__(self, stub: pb_grpc.CampaignsStub, store: EventStore, pool: asyncpg.Pool) -> None:
        self.stub = stub
        self.store = store
        self.pool = pool

    async def create(self, campaign_id: str = "renewals", **changes: object) -> pb.Campaign:
        settings = pb.CampaignSettings(
            name="Renouvellements",
            queue_id="q-sales",
            pacing=pb.PACING_MODE_PREDICTIVE,
            max_abandon_rate=0.03,
            max_attempts=3,
            retry_after=Duration(seconds=1800),
            ring_timeout=Duration(seconds=25),
            calling_window=pb.CallingWindow(start="08:00", end="20:00", days=["mon", "tue"]),
        )
        for name, value in changes.items():
            if isinstance(value, Duration | pb.CallingWindow):
                getattr(settings, name).CopyFrom(value)
            elif isinstance(value, list):
                getattr(settings, name).extend(value)
            else:
                setattr(settings, name, value)
        return await self.stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign_id=campaign_id, settings=settings), metadata=META
        )

    async def upload(
        self,
        data: bytes,
        campaign_id: str = "renewals",
        *,
        chunk: int = 7,
        sha256: str = "",
        fmt: pb.FileFormat | None = None,
    ) -> pb.ImportReport:
        def parts() -> Iterator[pb.ImportContactsRequest]:
            yield pb.ImportContactsRequest(
                header=pb.ImportHeader(
                    campaign_id=campaign_id, filename="clients.csv", sha256=sha256, format=fmt
                )
            )
            for start in range(0, len(data), chunk):
                yield pb.ImportContactsRequest(chunk=data[start : start + chunk])

        return await self.stub.ImportContacts(parts(), metadata=META)

    async def events(self, kind: str | None = None) -> list[object]:
        return [
            parse(e.envelope)
            async for e in self.store.iterate()
            if kind is None or e.envelope.type == kind
        ]


@pytest.fixture
async def dialer(
    service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> AsyncIterator[Dialer]:
    store = EventStore(service_pool, service_schema.schema)
    commands = CampaignCommands(store, service_pool)
    dnc = DoNotCallList(store, service_pool)
    # Never ticks here, so its gateway is never dialled: it only reports progress.
    loop = DialingLoop(store, service_pool, GrpcCallControl("127.0.0.1:1"))
    server = GrpcServer(
        "127.0.0.1", 0, [campaigns_service(commands, dnc, loop, max_upload_bytes=64 * 1024)]
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Dialer(pb_grpc.CampaignsStub(channel), store, service_pool)
    finally:
        await server.stop(0)


EXCEL_FILE = (
    "Référence;Nom;Téléphone\r\n"
    "C-1;Élodie;06 612 34 56\r\n"
    "C-2;Noël;+242 05 512 34 56\r\n"
    "C-3;Gaëlle;00242066123456\r\n"  # the same number as C-1
    "C-4;Paul;+33 6 12 34 56 78\r\n"  # foreign
    "C-5;Zoé;appeler après 18h\r\n"  # letters
    "\r\n"
    "C-6;Ange;04 444 44 44\r\n"
).encode("cp1252")


async def test_a_campaign_is_created_once_and_its_settings_are_checked(dialer: Dialer) -> None:
    created = await dialer.create()
    assert created.state == pb.CAMPAIGN_STATE_CREATED
    assert created.settings.calling_window.time_zone == "Africa/Brazzaville"
    again = await dialer.create()
    assert again == created
    assert len(await dialer.events("campaign.created")) == 1

    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await dialer.create(name="Autre nom")
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as short_ring:
        await dialer.create("other", ring_timeout=Duration(seconds=10))
    assert short_ring.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ring_timeout" in (short_ring.value.details() or "")
    holidays = await dialer.create(
        "national-day",
        calling_window=pb.CallingWindow(
            start="08:00", end="20:00", days=["mon"], holidays=["2026-08-15", "2026-08-15"]
        ),
    )
    assert list(holidays.settings.calling_window.holidays) == ["2026-08-15"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_holiday:
        await dialer.create(
            "other",
            calling_window=pb.CallingWindow(start="08:00", end="20:00", holidays=["15/08"]),
        )
    assert "holidays" in (bad_holiday.value.details() or "")
    skilled = await dialer.create("lingala-speakers", required_skills=["lingala", "sales"])
    assert list(skilled.settings.required_skills) == ["lingala", "sales"]
    [*_, recorded] = await dialer.events("campaign.created")
    assert isinstance(recorded, CampaignCreated)
    assert recorded.required_skills == ("lingala", "sales")
    for skills, why in ((["lingala", "lingala"], "named twice"), ([""], "required_skills")):
        with pytest.raises(grpc.aio.AioRpcError) as bad_skill:
            await dialer.create("other", required_skills=skills)
        assert bad_skill.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in (bad_skill.value.details() or ""), bad_skill.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as no_pacing:
        await dialer.create("other", pacing=pb.PACING_MODE_UNSPECIFIED)
    assert "pacing" in (no_pacing.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await dialer.stub.GetCampaign(pb.GetCampaignRequest(campaign_id="nope"), metadata=META)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as no_tenant:
        await dialer.stub.GetCampaign(pb.GetCampaignRequest(campaign_id="renewals"))
    assert no_tenant.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Another tenant does not see this tenant's campaign.
    with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
        await dialer.stub.GetCampaign(
            pb.GetCampaignRequest(campaign_id="renewals"),
            metadata=(("x-plateau-tenant", "someone-else"),),
        )
    assert other_tenant.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_excel_file_streamed_in_becomes_list_version_one_of_allowed_numbers(
    dialer: Dialer,
) -> None:
    await dialer.create()
    report = await dialer.upload(EXCEL_FILE, sha256=hashlib.sha256(EXCEL_FILE).hexdigest())
    assert (report.list_version, report.encoding, report.delimiter) == (1, "cp1252", ";")
    assert (report.rows_total, report.rows_accepted, report.rows_rejected) == (6, 3, 2)
    assert report.rows_duplicate == 1
    assert report.sha256 == hashlib.sha256(EXCEL_FILE).hexdigest()
    assert [(p.line, p.code) for p in report.problems] == [
        (4, "duplicate"),
        (5, "foreign_number"),
        (6, "has_letters"),
    ]
    assert all(p.message for p in report.problems)

    allowed = await dialer.events("contact.allowed")
    assert sorted(a.number for a in allowed if isinstance(a, ContactAllowed)) == [
        "+242044444444",
        "+242055123456",
        "+242066123456",
    ]
    [imported] = await dialer.events("contact_list.imported")
    assert isinstance(imported, ContactListImported)
    assert (imported.list_version, imported.rows_accepted, imported.filename) == (
        1,
        3,
        "clients.csv",
    )
    # The working copy keeps what the client told about each customer (merged duplicates).
    row = await dialer.pool.fetchrow(
        "select name, reference, line from contacts where number = '+242066123456'"
    )
    assert (row["name"], row["reference"], row["line"]) == ("Élodie", "C-1", 2)


async def test_the_same_file_again_changes_nothing_and_a_new_file_supersedes_the_list(
    dialer: Dialer,
) -> None:
    await dialer.create()
    await dialer.upload(EXCEL_FILE)
    before = len(await dialer.events())
    again = await dialer.upload(EXCEL_FILE, chunk=1000)
    assert again.list_version == 1
    assert len(await dialer.events()) == before

    second = b"phone;name\n066123456;Elodie\n067000000;Nouveau\n"
    report = await dialer.upload(second)
    assert (report.list_version, report.contacts_withdrawn) == (2, 2)
    withdrawn = await dialer.events("contact.withdrawn")
    assert sorted(
        (w.number, w.reason.value) for w in withdrawn if isinstance(w, ContactWithdrawn)
    ) == [("+242044444444", "superseded"), ("+242055123456", "superseded")]
    new = [a for a in await dialer.events("contact.allowed") if isinstance(a, ContactAllowed)]
    assert [a.number for a in new if a.list_version == 2] == ["+242067000000"]
    campaign = await dialer.stub.GetCampaign(
        pb.GetCampaignRequest(campaign_id="renewals"), metadata=META
    )
    assert (campaign.list_version, campaign.contacts_total) == (2, 2)
    # Nothing dialled yet: both contacts remain, no pacing decision, no abandon.
    assert campaign.contacts_remaining == 2
    assert (campaign.dial_level, campaign.abandon_rate_today, campaign.abandon_rate_30d) == (
        0.0,
        0.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("data", "fmt", "code", "says"),
    [
        (b"nom;ville\nAnge;Bzv\n", None, grpc.StatusCode.INVALID_ARGUMENT, "no phone column"),
        (b"\x00\x01binary", None, grpc.StatusCode.INVALID_ARGUMENT, "not a text file"),
        (
            b"phone\n066123456\n",
            pb.FileFormat(delimiter="|"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "separator",
        ),
        (b"x" * 70_000, None, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than"),
    ],
)
async def test_a_refused_file_records_nothing_and_says_why(
    dialer: Dialer, data: bytes, fmt: pb.FileFormat | None, code: grpc.StatusCode, says: str
) -> None:
    await dialer.create()
    before = len(await dialer.events())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await dialer.upload(data, fmt=fmt, chunk=4096)
    assert refused.value.code() == code
    assert says in (refused.value.details() or "")
    assert len(await dialer.events()) == before
    assert await dialer.pool.fetchval("select count(*) from contacts") == 0


async def test_bytes_that_do_not_match_the_announced_digest_are_refused(dialer: Dialer) -> None:
    await dialer.create()
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await dialer.upload(EXCEL_FILE, sha256="0" * 64)
    assert lost.value.code() == grpc.StatusCode.DATA_LOSS
    assert await dialer.events("contact.allowed") == []


async def test_do_not_call_numbers_never_reach_the_allow_list(dialer: Dialer) -> None:
    await dialer.pool.execute(
        "insert into do_not_call (tenant, number, source) values ($1, '+242055123456', 'opt-out')",
        TENANT,
    )
    await dialer.create()
    report = await dialer.upload(EXCEL_FILE)
    assert "do_not_call" in [p.code for p in report.problems]
    allowed = await dialer.events("contact.allowed")
    assert "+242055123456" not in {a.number for a in allowed if isinstance(a, ContactAllowed)}


async def test_a_campaign_starts_with_contacts_pauses_resumes_and_stops_for_good(
    dialer: Dialer,
) -> None:
    await dialer.create()
    request = pb.StartCampaignRequest(campaign_id="renewals")
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await dialer.stub.StartCampaign(request, metadata=META)
    assert empty.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "import a customer file" in (empty.value.details() or "")

    await dialer.upload(EXCEL_FILE)
    started = await dialer.stub.StartCampaign(request, metadata=META)
    assert started.state == pb.CAMPAIGN_STATE_RUNNING
    paused = await dialer.stub.PauseCampaign(
        pb.PauseCampaignRequest(campaign_id="renewals", reason="lunch"), metadata=META
    )
    assert paused.state == pb.CAMPAIGN_STATE_PAUSED
    resumed = await dialer.stub.ResumeCampaign(
        pb.ResumeCampaignRequest(campaign_id="renewals"), metadata=META
    )
    assert resumed.state == pb.CAMPAIGN_STATE_RUNNING
    stopped = await dialer.stub.StopCampaign(
        pb.StopCampaignRequest(campaign_id="renewals", reason="done"), metadata=META
    )
    assert (stopped.state, stopped.contacts_total) == (pb.CAMPAIGN_STATE_STOPPED, 0)
    withdrawn = await dialer.events("contact.withdrawn")
    assert len(withdrawn) == 3
    assert {w.reason.value for w in withdrawn if isinstance(w, ContactWithdrawn)} == {
        "campaign_stopped"
    }
    with pytest.raises(grpc.aio.AioRpcError) as after:
        await dialer.upload(b"phone\n067000000\n")
    assert after.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as restart:
        await dialer.stub.ResumeCampaign(
            pb.ResumeCampaignRequest(campaign_id="renewals"), metadata=META
        )
    assert restart.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The chain of the dialer's store holds all of it.
    assert (await dialer.store.verify()).intact
