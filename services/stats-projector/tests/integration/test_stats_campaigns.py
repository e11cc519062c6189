"""A campaign's live status (state, progress through its list, dial level) is the same
whatever order its facts arrive in, and replaying them changes nothing."""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from plateau_contracts.envelope import Envelope
from plateau_contracts.events import dialer
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.testing import as_stored
from plateau_stats_projector.adapters.read_models import Projection

pytestmark = pytest.mark.integration


def campaign_facts(campaign: str) -> list[Envelope]:
    start = datetime(2026, 5, 4, 8, tzinfo=UTC)
    events: list[tuple[int, StreamedEvent]] = [
        (0, dialer.CampaignStarted(campaign_id=campaign, requested_by="u-1")),
        (60, dialer.CampaignPaused(campaign_id=campaign, requested_by="dialer")),
        (120, dialer.CampaignResumed(campaign_id=campaign, requested_by="u-1")),
    ]
    for version, accepted in ((1, 40), (2, 35)):
        events.append(
            (
                version,
                dialer.ContactListImported(
                    campaign_id=campaign,
                    list_version=version,
                    filename="clients.csv",
                    sha256="0" * 64,
                    encoding="latin-1",
                    delimiter=";",
                    rows_total=accepted,
                    rows_accepted=accepted,
                    rows_rejected=0,
                    rows_duplicate=0,
                    imported_by="u-1",
                ),
            )
        )
    for n in range(12):
        contact = f"ct-{n % 9}"  # three contacts get a second attempt
        events.append(
            (
                10 + 10 * n,
                dialer.DialAttempted(
                    contact_id=contact,
                    campaign_id=campaign,
                    attempt_id=f"at-{n}",
                    attempt_number=1 + n // 9,
                    number="+242066000009",
                    list_version=1,
                    dial_level=1.0 + n / 10,
                ),
            )
        )
    ordered = sorted(events, key=lambda e: e[0])
    return as_stored("acme", [(start + timedelta(seconds=s), e) for s, e in ordered])


async def status(pool: asyncpg.Pool, campaign: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "select status, list_version, contacts_in_list, contacts_dialled, dial_level "
        "from campaign_status where tenant = 'acme' and campaign_id = $1",
        campaign,
    )
    assert row is not None
    return row


async def test_campaign_status_does_not_depend_on_arrival_order_or_replays(
    service_pool: asyncpg.Pool,
) -> None:
    projection = Projection(notify=False)
    rows = []
    for seed in (1, 2):
        campaign = f"cmp-{secrets.token_hex(3)}"
        facts = campaign_facts(campaign)
        by_stream: dict[str, list[Envelope]] = {}
        for envelope in facts:
            by_stream.setdefault(envelope.stream, []).append(envelope)
        # Streams interleaved at random, each in its own order; then everything again.
        order = [s for s, events in by_stream.items() for _ in events]
        random.Random(seed).shuffle(order)
        cursors = dict.fromkeys(by_stream, 0)
        shuffled = []
        for stream in order:
            shuffled.append(by_stream[stream][cursors[stream]])
            cursors[stream] += 1
        async with service_pool.acquire() as conn:
            for envelope in shuffled + facts:
                async with conn.transaction():
                    await projection.apply(conn, envelope)
        rows.append(tuple(await status(service_pool, campaign)))
    assert rows[0] == rows[1] == ("running", 2, 35, 9, pytest.approx(2.1))
