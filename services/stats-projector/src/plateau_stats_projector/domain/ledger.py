"""The compliance ledger's entries: what each dial fact says about one row of the ledger.

One row per dial check (docs/metrics.md, "Compliance ledger"). The dialer's check, its dial
and the gateway's outcome facts each fill in their own columns of the row of the attempt;
the gateway's own refusals are rows of their own. Because each column comes from one kind
of fact only, merging entries in any order gives the same row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import calls, dialer

#: What each outcome fact makes of a dial, strongest first: a compliance abandon is the
#: ledger's outcome even though the dial was answered, and so is a connection to an agent.
OUTCOME_PRECEDENCE = ("compliance_abandoned", "connected")


@dataclass(frozen=True)
class LedgerEntry:
    """The columns one fact sets on a ledger row (None: this fact does not say)."""

    ledger_id: str
    source: str
    attempt_id: str | None = None
    campaign_id: str | None = None
    contact_id: str | None = None
    number: str | None = None
    attempt_number: int | None = None
    max_attempts: int | None = None
    list_version: int | None = None
    decision: str | None = None
    refusal: str | None = None
    on_do_not_call: bool | None = None
    do_not_call_version: str | None = None
    within_calling_window: bool | None = None
    local_time: str | None = None
    checked_at: datetime | None = None
    requested_by: str | None = None
    requester: str | None = None
    call_id: str | None = None
    dialled_at: datetime | None = None
    dial_outcome: str | None = None
    sip_code: int | None = None
    dial_completed_at: datetime | None = None
    abandoned_at: datetime | None = None

    def merged(self, other: LedgerEntry) -> LedgerEntry:
        """This entry with the columns ``other`` sets and this one does not."""
        more = {
            f.name: getattr(other, f.name)
            for f in fields(self)
            if getattr(self, f.name) is None and getattr(other, f.name) is not None
        }
        return replace(self, **more) if more else self

    def to_json(self) -> dict[str, Any]:
        """The row's columns as ``jsonb_populate_recordset`` reads them."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def gateway_ledger_id(call_id: str) -> str:
    """The ledger row of a dial the gateway refused itself."""
    return f"gateway:{call_id}"


def ledger_entry(envelope: Envelope) -> LedgerEntry | None:  # noqa: PLR0911 (one case per event)
    """The ledger columns an event sets; None for events the ledger does not use."""
    try:
        data = parse(envelope)
    except UnknownEventError:
        return None
    at = envelope.occurred_at
    match data:
        case dialer.DialComplianceChecked():
            return LedgerEntry(
                ledger_id=data.attempt_id,
                source="dialer",
                attempt_id=data.attempt_id,
                campaign_id=data.campaign_id,
                contact_id=data.contact_id,
                number=data.number,
                attempt_number=data.attempt_number,
                max_attempts=data.max_attempts,
                list_version=data.list_version,
                decision=data.decision,
                refusal=data.refusal,
                on_do_not_call=data.on_do_not_call,
                do_not_call_version=data.do_not_call_version,
                within_calling_window=data.within_calling_window,
                local_time=data.local_time,
                checked_at=at,
            )
        case dialer.DialAttempted():
            return LedgerEntry(
                ledger_id=data.attempt_id,
                source="dialer",
                attempt_id=data.attempt_id,
                campaign_id=data.campaign_id,
                contact_id=data.contact_id,
                call_id=data.call_id,
                dialled_at=at,
            )
        case calls.DialCompleted():
            return LedgerEntry(
                ledger_id=data.attempt_id,
                source="dialer",
                attempt_id=data.attempt_id,
                campaign_id=data.campaign_id,
                call_id=data.call_id,
                dial_outcome=data.outcome.value,
                sip_code=data.sip_code,
                dial_completed_at=at,
            )
        case calls.ComplianceAbandoned():
            return LedgerEntry(
                ledger_id=data.attempt_id,
                source="dialer",
                attempt_id=data.attempt_id,
                campaign_id=data.campaign_id,
                call_id=data.call_id,
                abandoned_at=at,
            )
        case calls.DialRefused():
            return LedgerEntry(
                ledger_id=gateway_ledger_id(data.call_id),
                source="gateway",
                attempt_id=data.attempt_id,
                campaign_id=data.campaign_id,
                contact_id=data.contact_id,
                number=data.number,
                decision="refused",
                refusal=data.reason.value,
                within_calling_window=(
                    False if data.reason is calls.DialRefusalReason.OUTSIDE_CALLING_WINDOW else None
                ),
                checked_at=at,
                requested_by=data.requested_by.value,
                requester=data.requester,
                call_id=data.call_id,
                sip_code=data.sip_code,
            )
        case _:
            return None


def merge_entries(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """One entry per row, in row order (the order rows are locked in)."""
    rows: dict[str, LedgerEntry] = {}
    for entry in entries:
        kept = rows.get(entry.ledger_id)
        rows[entry.ledger_id] = entry if kept is None else kept.merged(entry)
    return [rows[key] for key in sorted(rows)]
