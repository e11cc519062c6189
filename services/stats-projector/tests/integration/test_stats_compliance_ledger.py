"""The compliance ledger: one row per dial check with every field its facts give, the same
whatever order the dialer's and the gateway's streams arrive in (an outcome before the
dial's record included), unchanged by replays, and rebuilt from the stores row for row."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from plateau_contracts.envelope import Envelope
from plateau_contracts.events import calls, dialer
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import apply_batch_once
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend
from plateau_runtime.testing import MigratedSchema, as_stored, make_schema
from plateau_stats_projector.adapters.read_models import Projection
from plateau_stats_projector.entrypoints.consumer import CONSUMER
from plateau_stats_projector.rebuild import rebuild

pytestmark = pytest.mark.integration

START = datetime(2026, 5, 4, 9, tzinfo=UTC)
NUMBER = "+242066000001"


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


def checked(
    n: int, *, decision: str = "allowed", refusal: str | None = None, window: bool = True
) -> dialer.DialComplianceChecked:
    return dialer.DialComplianceChecked(
        contact_id=f"ct-{n}",
        campaign_id="cmp-1",
        attempt_id=f"at-{n}",
        attempt_number=n,
        max_attempts=3,
        number=f"+24206600000{n}",
        decision=decision,  # type: ignore[arg-type]
        list_version=2,
        on_do_not_call=False,
        do_not_call_version="dnc-7",
        local_time=f"2026-05-04T10:0{n}:00+01:00",
        within_calling_window=window,
        refusal=refusal,
    )


def attempted(n: int) -> dialer.DialAttempted:
    return dialer.DialAttempted(
        contact_id=f"ct-{n}",
        campaign_id="cmp-1",
        attempt_id=f"at-{n}",
        attempt_number=n,
        number=f"+24206600000{n}",
        list_version=2,
        call_id=f"call-{n}",
        dial_level=1.5,
    )


def completed(n: int, outcome: calls.DialOutcome, sip: int | None) -> calls.DialCompleted:
    return calls.DialCompleted(
        call_id=f"call-{n}",
        outcome=outcome,
        campaign_id="cmp-1",
        attempt_id=f"at-{n}",
        sip_code=sip,
    )


#: (seconds after START, fact, which store records it)
FACTS: list[tuple[int, StreamedEvent, str]] = [
    # at-1: answered and connected to an agent
    (60, checked(1), "dialer"),
    (61, attempted(1), "dialer"),
    (75, completed(1, calls.DialOutcome.ANSWERED, None), "gateway"),
    (76, calls.CallConnected(call_id="call-1", agent_id="a-1", extension="1001"), "gateway"),
    # at-2: busy
    (120, checked(2), "dialer"),
    (121, attempted(2), "dialer"),
    (124, completed(2, calls.DialOutcome.BUSY, 486), "gateway"),
    # at-3: answered, no agent in time: a compliance abandon
    (180, checked(3), "dialer"),
    (181, attempted(3), "dialer"),
    (190, completed(3, calls.DialOutcome.ANSWERED, None), "gateway"),
    (
        192,
        calls.ComplianceAbandoned(
            call_id="call-3",
            campaign_id="cmp-1",
            attempt_id="at-3",
            waited_ms=2000,
            message_played=True,
        ),
        "gateway",
    ),
    # at-4: refused by the dialer itself, never dialled
    (240, checked(4, decision="refused", refusal="outside_calling_window", window=False), "dialer"),
    # an agent's softphone dialling a number of no customer file: refused by the gateway
    (
        300,
        calls.DialRefused(
            call_id="call-g1",
            number="+242069999999",
            requested_by=calls.DialRequester.AGENT_SOFTPHONE,
            requester="1001",
            reason=calls.DialRefusalReason.NOT_IN_CONTACT_LIST,
            sip_code=403,
        ),
        "gateway",
    ),
]

COLUMNS = (
    "ledger_id, source, attempt_id, campaign_id, contact_id, number, attempt_number, "
    "max_attempts, list_version, decision, refusal, on_do_not_call, do_not_call_version, "
    "within_calling_window, local_time, checked_at, requested_by, requester, call_id, "
    "dialled_at, dial_outcome, sip_code, dial_completed_at, connected_at, abandoned_at, "
    "outcome, outcome_at"
)


def dialer_row(n: int, **more: object) -> dict[str, object]:
    row: dict[str, object] = {
        "ledger_id": f"at-{n}",
        "source": "dialer",
        "attempt_id": f"at-{n}",
        "campaign_id": "cmp-1",
        "contact_id": f"ct-{n}",
        "number": f"+24206600000{n}",
        "attempt_number": n,
        "max_attempts": 3,
        "list_version": 2,
        "decision": "allowed",
        "refusal": None,
        "on_do_not_call": False,
        "do_not_call_version": "dnc-7",
        "within_calling_window": True,
        "local_time": f"2026-05-04T10:0{n}:00+01:00",
        "checked_at": at(n * 60),
        "requested_by": None,
        "requester": None,
        "call_id": f"call-{n}",
        "dialled_at": at(n * 60 + 1),
        "dial_outcome": None,
        "sip_code": None,
        "dial_completed_at": None,
        "connected_at": None,
        "abandoned_at": None,
        "outcome": None,
        "outcome_at": None,
    }
    row.update(more)
    return row


EXPECTED = {
    "at-1": dialer_row(
        1,
        dial_outcome="answered",
        dial_completed_at=at(75),
        connected_at=at(76),
        outcome="connected",
        outcome_at=at(76),
    ),
    "at-2": dialer_row(
        2,
        dial_outcome="busy",
        sip_code=486,
        dial_completed_at=at(124),
        outcome="busy",
        outcome_at=at(124),
    ),
    "at-3": dialer_row(
        3,
        dial_outcome="answered",
        dial_completed_at=at(190),
        abandoned_at=at(192),
        outcome="compliance_abandoned",
        outcome_at=at(192),
    ),
    "at-4": dialer_row(
        4,
        decision="refused",
        refusal="outside_calling_window",
        within_calling_window=False,
        call_id=None,
        dialled_at=None,
    ),
    "gateway:call-g1": {
        **{c: None for c in COLUMNS.split(", ")},
        "ledger_id": "gateway:call-g1",
        "source": "gateway",
        "number": "+242069999999",
        "decision": "refused",
        "refusal": "not_in_contact_list",
        "checked_at": at(300),
        "requested_by": "agent_softphone",
        "requester": "1001",
        "call_id": "call-g1",
        "sip_code": 403,
    },
}


def envelopes(tenant: str) -> list[Envelope]:
    return as_stored(tenant, [(at(seconds), event) for seconds, event, _ in FACTS])


def interleaved(facts: list[Envelope], seed: int) -> list[Envelope]:
    """Streams shuffled against one another, each kept in its own order."""
    by_stream: dict[str, list[Envelope]] = {}
    for envelope in facts:
        by_stream.setdefault(envelope.stream, []).append(envelope)
    order = [s for s, events in by_stream.items() for _ in events]
    random.Random(seed).shuffle(order)
    cursors = dict.fromkeys(by_stream, 0)
    out = []
    for stream in order:
        out.append(by_stream[stream][cursors[stream]])
        cursors[stream] += 1
    return out


async def ledger(pool: asyncpg.Pool, tenant: str) -> dict[str, dict[str, object]]:
    rows = await pool.fetch(
        f"select {COLUMNS} from compliance_ledger where tenant = $1 order by ledger_id", tenant
    )
    return {r["ledger_id"]: dict(r) for r in rows}


async def apply_one_by_one(pool: asyncpg.Pool, facts: list[Envelope]) -> None:
    projection = Projection(notify=False)
    async with pool.acquire() as conn:
        for envelope in facts:
            async with conn.transaction():
                await projection.apply(conn, envelope)


async def test_every_field_of_every_dial_check_is_in_the_ledger(
    service_pool: asyncpg.Pool,
) -> None:
    tenant = f"t-{secrets.token_hex(3)}"
    await apply_one_by_one(service_pool, envelopes(tenant))
    assert await ledger(service_pool, tenant) == EXPECTED


async def test_outcomes_before_the_dials_record_and_replays_give_the_same_rows(
    service_pool: asyncpg.Pool,
) -> None:
    # Every gateway fact first (outcomes, connection, refusals), then the dialer's records.
    for seed, first in ((1, "gateway"), (2, "dialer")):
        tenant = f"t-{secrets.token_hex(3)}"
        facts = envelopes(tenant)
        sources = [source for _, _, source in FACTS]
        ordered = [e for e, s in zip(facts, sources, strict=True) if s == first] + [
            e for e, s in zip(facts, sources, strict=True) if s != first
        ]
        await apply_one_by_one(service_pool, ordered)
        assert await ledger(service_pool, tenant) == EXPECTED, first
        # Replayed twice more, interleaved differently, in one batch: nothing changes.
        await apply_one_by_one(service_pool, interleaved(facts, seed))
        async with service_pool.acquire() as conn, conn.transaction():
            await Projection(notify=False).apply_batch(conn, interleaved(facts, seed + 10))
        assert await ledger(service_pool, tenant) == EXPECTED, first


async def test_one_batch_holding_every_fact_of_a_dial_gives_the_same_rows(
    service_pool: asyncpg.Pool,
) -> None:
    tenant = f"t-{secrets.token_hex(3)}"
    facts = envelopes(tenant)
    # The outcomes ahead of the dials' records, each stream in its order, in one poll.
    sources = [source for _, _, source in FACTS]
    ordered = sorted(zip(facts, sources, strict=True), key=lambda pair: pair[1] != "gateway")
    async with service_pool.acquire() as conn:
        await apply_batch_once(
            conn, "ledger-batch", [e for e, _ in ordered], Projection(notify=False).apply_batch
        )
    assert await ledger(service_pool, tenant) == EXPECTED


@dataclass
class Stores:
    dialer: EventStore
    gateway: EventStore
    pools: list[asyncpg.Pool]


@pytest.fixture
async def stores(admin_dsn: str) -> AsyncIterator[Stores]:
    schemas = [await make_schema(admin_dsn, prefix=p) for p in ("dl", "gw")]
    pools = [await create_pool(s.dsn, max_size=2) for s in schemas]
    yield Stores(
        EventStore(pools[0], schemas[0].schema), EventStore(pools[1], schemas[1].schema), pools
    )
    for pool in pools:
        await pool.close()


async def test_a_rebuild_from_the_stores_gives_the_ledger_row_for_row(
    stores: Stores,
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    admin_dsn: str,
) -> None:
    tenant = f"t-{secrets.token_hex(3)}"
    for name, store in (("dialer", stores.dialer), ("gateway", stores.gateway)):
        await store.append_many(
            [
                StreamAppend(
                    event.stream_id(tenant),
                    [NewEvent(event, tenant=tenant, occurred_at=at(seconds))],
                )
                for seconds, event, source in FACTS
                if source == name
            ]
        )
    everything = [
        stored.envelope
        for store in (stores.gateway, stores.dialer)
        async for stored in store.iterate()
    ]
    async with service_pool.acquire() as conn:
        await apply_batch_once(conn, CONSUMER, everything, Projection(notify=False).apply_batch)
    incremental = await service_pool.fetch(
        "select * from compliance_ledger where tenant = $1 order by ledger_id", tenant
    )
    assert {r["ledger_id"] for r in incremental} == set(EXPECTED)
    # Damage the ledger, as a bug in an older projector version would have.
    await service_pool.execute("update compliance_ledger set outcome = 'lost', number = null")
    await service_pool.execute("delete from compliance_ledger where ledger_id = 'at-4'")

    report = await rebuild(
        admin_dsn,
        service_schema.schema,
        [stores.dialer.schema, stores.gateway.schema],
        service_schema.service.migrations_dir,
    )

    assert report.rows["compliance_ledger"] == len(EXPECTED)
    rebuilt = await service_pool.fetch(
        "select * from compliance_ledger where tenant = $1 order by ledger_id", tenant
    )
    assert [tuple(r.values()) for r in rebuilt] == [tuple(r.values()) for r in incremental]
