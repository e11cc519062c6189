"""What each dial fact says about its compliance-ledger row, and that entries merge into
the same row in any order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events import agents, calls, dialer
from plateau_contracts.events.common import StreamedEvent
from plateau_stats_projector.domain.ledger import LedgerEntry, ledger_entry, merge_entries

pytestmark = pytest.mark.unit

AT = datetime(2026, 5, 4, 9, tzinfo=UTC)


def envelope(event: StreamedEvent, seconds: int = 0) -> Envelope:
    at = AT + timedelta(seconds=seconds)
    return Envelope(
        event_id=new_event_id(),
        type=event.event_type,
        schema_version=event.schema_version,
        stream=event.stream_id("acme"),
        stream_version=1,
        tenant="acme",
        occurred_at=at,
        recorded_at=at,
        data=event.model_dump(mode="json"),
    )


FACTS = [
    dialer.DialComplianceChecked(
        contact_id="ct-1",
        campaign_id="cmp-1",
        attempt_id="at-1",
        attempt_number=2,
        max_attempts=3,
        number="+242066000001",
        decision="allowed",
        list_version=4,
        on_do_not_call=False,
        local_time="2026-05-04T10:00:00+01:00",
        within_calling_window=True,
    ),
    dialer.DialAttempted(
        contact_id="ct-1",
        campaign_id="cmp-1",
        attempt_id="at-1",
        attempt_number=2,
        number="+242066000001",
        list_version=4,
        call_id="o-1",
    ),
    calls.DialCompleted(
        call_id="o-1",
        outcome=calls.DialOutcome.BUSY,
        campaign_id="cmp-1",
        attempt_id="at-1",
        sip_code=486,
    ),
]


def test_each_fact_fills_its_own_columns_of_the_attempts_row() -> None:
    check, dial, outcome = (ledger_entry(envelope(f, n)) for n, f in enumerate(FACTS))
    assert check is not None and dial is not None and outcome is not None
    assert {check.ledger_id, dial.ledger_id, outcome.ledger_id} == {"at-1"}
    assert (check.decision, check.list_version, check.checked_at) == ("allowed", 4, AT)
    assert check.call_id is None and check.dial_outcome is None
    assert (dial.call_id, dial.dialled_at, dial.decision) == (
        "o-1",
        AT + timedelta(seconds=1),
        None,
    )
    assert (outcome.dial_outcome, outcome.sip_code, outcome.checked_at) == ("busy", 486, None)


def test_a_gateway_refusal_is_a_row_of_its_own() -> None:
    refused = ledger_entry(
        envelope(
            calls.DialRefused(
                call_id="g-1",
                number="0612",
                requested_by=calls.DialRequester.INTEGRATOR,
                requester="crm",
                reason=calls.DialRefusalReason.OUTSIDE_CALLING_WINDOW,
                campaign_id="cmp-1",
                attempt_id="at-9",
            )
        )
    )
    assert refused == LedgerEntry(
        ledger_id="gateway:g-1",
        source="gateway",
        attempt_id="at-9",
        campaign_id="cmp-1",
        number="0612",
        decision="refused",
        refusal="outside_calling_window",
        within_calling_window=False,
        checked_at=AT,
        requested_by="integrator",
        requester="crm",
        call_id="g-1",
    )


def test_facts_the_ledger_does_not_use_give_nothing() -> None:
    assert ledger_entry(envelope(agents.AgentBecameAvailable(agent_id="a-1"))) is None


@given(st.permutations(range(len(FACTS))))
def test_entries_merge_into_the_same_row_in_any_order(order: list[int]) -> None:
    entries = [ledger_entry(envelope(f, n)) for n, f in enumerate(FACTS)]
    assert all(e is not None for e in entries)
    in_order = merge_entries([e for e in entries if e is not None])
    shuffled = merge_entries([e for e in (entries[i] for i in order) if e is not None])
    assert shuffled == in_order and len(in_order) == 1
    assert (in_order[0].decision, in_order[0].call_id, in_order[0].dial_outcome) == (
        "allowed",
        "o-1",
        "busy",
    )
