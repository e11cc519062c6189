"""The dialer's application layer for campaigns and customer files.

A command reads the campaign's stream, asks the pure ``Campaign`` what it leads to, and
appends the answer with the stream version it read (a concurrent command makes it retry on
the newer state). An import records, in one transaction, the list version
(``contact_list.imported``), one ``contact.allowed`` per new number and one
``contact.withdrawn`` per number gone — the allow-list the gateway enforces — together with
the dialer's working copy of the contacts. Either all of it is recorded or none: a file is
never half-imported.

Reading the file is CPU work (``phonenumbers`` per row); it runs in a worker thread so the
service keeps answering while a large file is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import asyncpg
import structlog

from plateau_contracts.catalogue import parse
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.dialer import CampaignCreated, ContactListImported
from plateau_dialer.domain.campaign import Campaign, ListPlan, contact_id_for, plan_list
from plateau_dialer.domain.contacts_file import (
    ContactFile,
    ContactRules,
    FileHints,
    read_contact_file,
)
from plateau_runtime.db import Connection
from plateau_runtime.errors import ConcurrencyError
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend

log = structlog.get_logger(__name__)

_ATTEMPTS = 5


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did: the file as read, and the list version it made (or had made)."""

    file: ContactFile
    record: ContactListImported | None  # None: no row was accepted, nothing recorded
    already_imported: bool


class CampaignCommands:
    """Campaign commands and imports of one dialer, over its event store."""

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        *,
        default_region: str = "CG",
        allowed_regions: frozenset[str] = frozenset({"CG"}),
    ) -> None:
        self._store = store
        self._pool = pool
        self._default_region = default_region
        self._allowed_regions = allowed_regions

    async def campaign(self, tenant: str, campaign_id: str) -> Campaign:
        """The campaign as its stream says (status NONE when there is none)."""
        campaign, _ = await self._read(tenant, campaign_id)
        return campaign

    async def _read(self, tenant: str, campaign_id: str) -> tuple[Campaign, int]:
        stream = Campaign.stream_of(tenant, campaign_id)
        stored = await self._store.read_stream(stream)
        campaign = Campaign.fold(
            campaign_id,
            (
                (data, e.envelope.stream_version)
                for e in stored
                if e.envelope.tenant == tenant
                and isinstance(data := parse(e.envelope), StreamedEvent)
            ),
        )
        return campaign, len(stored)

    async def command(
        self, tenant: str, campaign_id: str, decide: Callable[[Campaign], list[StreamedEvent]]
    ) -> Campaign:
        """Decide on the current campaign and record the outcome (retried on a race)."""
        for attempt in range(_ATTEMPTS):
            campaign, version = await self._read(tenant, campaign_id)
            events = decide(campaign)
            if not events:
                return campaign
            after = campaign
            for event in events:
                after = after.evolve(event)
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await self._store.append_many(
                        self._appends(tenant, campaign_id, version, events), conn=conn
                    )
                    await _keep_status(conn, tenant, after)
            except ConcurrencyError:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            return after
        raise AssertionError("unreachable")  # pragma: no cover

    async def create(self, tenant: str, created: CampaignCreated) -> Campaign:
        return await self.command(tenant, created.campaign_id, lambda c: c.create(created))

    async def stop(
        self, tenant: str, campaign_id: str, requested_by: str, reason: str | None
    ) -> Campaign:
        allowed = await self._allowed(tenant, campaign_id)
        campaign = await self.command(
            tenant, campaign_id, lambda c: c.stop(requested_by, reason, allowed)
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "update contacts set allowed = false where tenant = $1 and campaign_id = $2",
                tenant,
                campaign_id,
            )
            # Dials in flight finish (their outcome arrives); nothing new is planned.
            await conn.execute(
                "update dial_plans set done = 'campaign_stopped', not_before = null "
                "where tenant = $1 and campaign_id = $2 and done is null and in_flight is null",
                tenant,
                campaign_id,
            )
        return campaign

    async def import_file(
        self,
        tenant: str,
        campaign_id: str,
        *,
        filename: str,
        source: BinaryIO,
        hints: FileHints,
        imported_by: str,
        region: str | None = None,
    ) -> ImportOutcome:
        """Read the file whole, then record its list version (``ContactFileRefused`` and
        campaign errors propagate: nothing is recorded then)."""
        campaign = await self.campaign(tenant, campaign_id)
        campaign.require_existing()  # before reading a file for nothing
        rules = ContactRules(
            default_region=region or self._default_region,
            allowed_regions=self._allowed_regions | ({region} if region else set()),
            do_not_call=await self._do_not_call(tenant),
        )
        file = await asyncio.to_thread(read_contact_file, source, rules, hints)
        summary = file.summary
        if not file.contacts:
            return ImportOutcome(file, None, already_imported=False)
        earlier = campaign.imports.get(summary.sha256)
        if earlier is not None:
            return ImportOutcome(file, earlier, already_imported=True)
        record = ContactListImported(
            campaign_id=campaign_id,
            list_version=1,  # the plan sets the next version
            filename=filename,
            sha256=summary.sha256,
            encoding=summary.encoding,
            delimiter=summary.delimiter or ",",
            rows_total=summary.rows_total,
            rows_accepted=summary.accepted,
            rows_rejected=summary.rejected,
            rows_duplicate=summary.duplicates,
            imported_by=imported_by,
        )
        for attempt in range(_ATTEMPTS):
            campaign, version = await self._read(tenant, campaign_id)
            earlier = campaign.imports.get(summary.sha256)
            if earlier is not None:
                return ImportOutcome(file, earlier, already_imported=True)
            previously = await self._allowed(tenant, campaign_id)
            plan = plan_list(
                tenant, campaign, record, (c.number for c in file.contacts), previously
            )
            events = campaign.import_list(plan)
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await self._store.append_many(
                        self._appends(tenant, campaign_id, version, events), conn=conn
                    )
                    await self._keep_contacts(conn, tenant, campaign_id, file, plan)
                    await _keep_status(conn, tenant, campaign.evolve(plan.imported))
            except ConcurrencyError:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            log.info(
                "dialer.list_imported",
                tenant=tenant,
                campaign=campaign_id,
                list_version=plan.imported.list_version,
                allowed=len(plan.allowed),
                withdrawn=len(plan.withdrawn),
                rejected=summary.rejected,
            )
            return ImportOutcome(file, plan.imported, already_imported=False)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- storage ----------------------------------------------------------------------------

    def _appends(
        self, tenant: str, campaign_id: str, version: int, events: list[StreamedEvent]
    ) -> list[StreamAppend]:
        """The campaign's own events checked against the version read; contact events
        (their own streams) appended as they come."""
        stream = Campaign.stream_of(tenant, campaign_id)
        own = [NewEvent(e, tenant=tenant) for e in events if e.stream_id(tenant) == stream]
        appends = [StreamAppend(stream, own, expected_version=version)] if own else []
        appends.extend(
            StreamAppend(e.stream_id(tenant), [NewEvent(e, tenant=tenant)])
            for e in events
            if e.stream_id(tenant) != stream
        )
        return appends

    async def allowed_count(self, tenant: str, campaign_id: str) -> int:
        """Contacts of the campaign that may be dialled now."""
        count = await self._pool.fetchval(
            "select count(*) from contacts where tenant = $1 and campaign_id = $2 and allowed",
            tenant,
            campaign_id,
        )
        return int(count)

    async def _allowed(self, tenant: str, campaign_id: str) -> dict[str, str]:
        rows = await self._pool.fetch(
            "select number, contact_id from contacts "
            "where tenant = $1 and campaign_id = $2 and allowed",
            tenant,
            campaign_id,
        )
        return {r["number"]: r["contact_id"] for r in rows}

    async def _do_not_call(self, tenant: str) -> frozenset[str]:
        rows = await self._pool.fetch("select number from do_not_call where tenant = $1", tenant)
        return frozenset(r["number"] for r in rows)

    async def _keep_contacts(
        self, conn: Connection, tenant: str, campaign_id: str, file: ContactFile, plan: ListPlan
    ) -> None:
        """The working copy of the new list: every contact of the file (allowed, with its
        latest details) and the withdrawn ones marked so."""
        version = plan.imported.list_version
        await conn.execute(
            # attributes travel as text: COPY's binary format has no encoder for jsonb.
            "create temporary table incoming (like contacts) on commit drop;"
            "alter table incoming alter column attributes type text"
        )
        await conn.copy_records_to_table(
            "incoming",
            records=(
                (
                    tenant,
                    campaign_id,
                    c.number,
                    contact_id_for(tenant, campaign_id, c.number),
                    version,
                    True,
                    c.line,
                    c.name,
                    c.reference,
                    json.dumps(dict(c.attributes), ensure_ascii=False),
                )
                for c in file.contacts
            ),
            columns=[
                "tenant",
                "campaign_id",
                "number",
                "contact_id",
                "list_version",
                "allowed",
                "line",
                "name",
                "reference",
                "attributes",
            ],
        )
        await conn.execute(
            "update contacts set allowed = false, list_version = $3 "
            "where tenant = $1 and campaign_id = $2 and allowed "
            "and number not in (select number from incoming)",
            tenant,
            campaign_id,
            version,
        )
        # Dial plans: new numbers are due at once (-infinity: the loop still waits for the
        # window, and takes them in file order), numbers allowed again plan afresh, withdrawn
        # ones are done.
        await conn.execute(
            "insert into dial_plans (tenant, contact_id, campaign_id, number, not_before) "
            "select tenant, contact_id, campaign_id, number, '-infinity' from incoming "
            "on conflict (tenant, contact_id) do update set done = null, "
            "not_before = coalesce(dial_plans.not_before, '-infinity') "
            "where dial_plans.done = 'withdrawn'"
        )
        await conn.execute(
            "update dial_plans set done = 'withdrawn', not_before = null "
            "where tenant = $1 and campaign_id = $2 and done is null and in_flight is null "
            "and number not in (select number from incoming)",
            tenant,
            campaign_id,
        )
        await conn.execute(
            "insert into contacts (tenant, campaign_id, number, contact_id, list_version, "
            "allowed, line, name, reference, attributes) "
            "select tenant, campaign_id, number, contact_id, list_version, allowed, line, "
            "name, reference, attributes::jsonb from incoming "
            "on conflict (tenant, campaign_id, number) do update set "
            "list_version = excluded.list_version, allowed = true, line = excluded.line, "
            "name = excluded.name, reference = excluded.reference, "
            "attributes = excluded.attributes"
        )


async def _keep_status(conn: Connection, tenant: str, campaign: Campaign) -> None:
    """The pacing loop's copy of the campaign's state, in the transaction of its events."""
    if campaign.created is None:
        return
    await conn.execute(
        "insert into campaign_status (tenant, campaign_id, status, settings, list_version) "
        "values ($1, $2, $3, $4::jsonb, $5) on conflict (tenant, campaign_id) do update set "
        "status = excluded.status, settings = excluded.settings, "
        "list_version = excluded.list_version",
        tenant,
        campaign.campaign_id,
        campaign.status.value,
        campaign.created.model_dump_json(),
        campaign.list_version,
    )
