"""The dialer's compliance ledger over HTTP: one row per dial check, filtered and paged with
opaque keyset cursors (the signed exports are in ``http_exports``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AfterValidator, BaseModel, Field

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import ComplianceFilter, ReadModels, Row
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.domain.reports import (
    CursorError,
    checked_instant,
    decode_cursor,
    encode_cursor,
)
from plateau_access_gateway.entrypoints.http_denials import not_found
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_contracts.events.access import DeniedReason, ReportViewed

Caller = Annotated[Principal, Depends(current_principal)]
Decision = Literal["allowed", "refused"]

#: The report name the audit trail and exports give the ledger.
REPORT = "compliance_ledger"
MAX_LIMIT = 500


class ComplianceRecord(BaseModel):
    """One dial check: why a dial was allowed or refused, and how the dial ended."""

    ledger_id: str = Field(description="The dialer's attempt id, or `gateway:<call id>`.")
    source: Literal["dialer", "gateway"] = Field(
        description="`dialer`: the dialer's own check; `gateway`: a dial the gateway refused."
    )
    checked_at: datetime = Field(description="When the check (or the refusal) happened.")
    campaign_id: str | None
    contact_id: str | None
    attempt_id: str | None
    number: str | None = Field(description="Number to be dialled, as requested.")
    attempt_number: int | None
    max_attempts: int | None = Field(description="The campaign's attempt limit at the time.")
    list_version: int | None = Field(description="Contact-list version the number was in.")
    decision: Decision
    refusal: str | None = Field(description="Which rule refused the dial, when refused.")
    on_do_not_call: bool | None
    do_not_call_version: str | None
    within_calling_window: bool | None
    local_time: str | None = Field(description="Customer-local time of the check (ISO 8601).")
    requested_by: str | None = Field(
        description="Gateway refusals: `dialer`, `integrator` or `agent_softphone`."
    )
    requester: str | None = Field(description="Gateway refusals: extension or client id.")
    call_id: str | None
    dialled_at: datetime | None
    outcome: str | None = Field(
        description="How the dial ended; null while it has not or when nothing was dialled.",
        examples=["connected", "compliance_abandoned", "busy", "no_answer", "failed", "machine"],
    )
    sip_code: int | None
    outcome_at: datetime | None


class ComplianceSource(BaseModel):
    """How far into one event store the ledger is computed."""

    source: str
    position: int
    chain_head: str
    applied_at: datetime | None


class CompliancePage(BaseModel):
    records: list[ComplianceRecord]
    computed_up_to: list[ComplianceSource]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


def compliance_filters(where: ComplianceFilter) -> dict[str, str]:
    """The filters as the audit trail and an export's provenance record them."""
    named: dict[str, object] = {
        "from": where.start,
        "to": where.end,
        "campaign": where.campaign,
        "decision": where.decision,
    }
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v)
        for k, v in named.items()
        if v is not None
    }


#: A time of the filter: within the range every conversion handles (else 422).
InRange = AfterValidator(checked_instant)


def compliance_filter(
    *,
    start: Annotated[datetime | None, Query(alias="from"), InRange] = None,
    end: Annotated[datetime | None, Query(alias="to"), InRange] = None,
    campaign: Annotated[str | None, Query(max_length=128)] = None,
    decision: Decision | None = None,
) -> ComplianceFilter:
    """The ledger filter of a request's query (the page's and the exports')."""
    return ComplianceFilter(start, end, campaign, decision)


ComplianceFilterQuery = Annotated[ComplianceFilter, Depends(compliance_filter)]


async def resolve_compliance_filter(
    read_models: ReadModels,
    audit: AuditTrail,
    principal: Principal,
    request: Request,
    where: ComplianceFilter,
) -> ComplianceFilter:
    """404 (audited) when the filter names a campaign the principal may not see."""
    if where.start and where.end and where.end <= where.start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "to must be after from")
    if where.campaign is not None and not principal.may_see_campaign(where.campaign):
        raise await not_found(
            audit, principal, request, "campaign", where.campaign, DeniedReason.OUT_OF_SCOPE
        )
    if where.campaign is not None and not await read_models.compliance_campaign_known(
        principal, where.campaign
    ):
        raise await not_found(
            audit, principal, request, "campaign", where.campaign, DeniedReason.OTHER_TENANT
        )
    return where


def compliance_router(read_models: ReadModels, audit: AuditTrail) -> APIRouter:
    """``GET /api/v1/compliance``."""
    router = APIRouter(tags=["compliance"])

    @router.get(
        "/compliance",
        response_model=CompliancePage,
        summary="The dialer's compliance ledger (oldest check first, keyset pages)",
        responses={
            404: {"description": "A campaign outside the caller's tenant or scope."},
            422: {"description": "An invalid filter, limit or cursor."},
        },
    )
    async def compliance_ledger(
        *,
        principal: Caller,
        request: Request,
        asked: ComplianceFilterQuery,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> CompliancePage:
        after = None
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except CursorError as exc:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        where = await resolve_compliance_filter(read_models, audit, principal, request, asked)
        # One row more than asked says whether another page follows.
        async with read_models.compliance(principal, where, after, limit + 1) as reading:
            found = [compliance_record(r) async for r in reading.rows]
        page, more = found[:limit], len(found) > limit
        await audit.record(
            principal.tenant,
            ReportViewed(
                user_id=principal.user_id,
                session_id=principal.credential_id,
                report=REPORT,
                filters=compliance_filters(where),
            ),
        )
        return CompliancePage(
            records=page,
            computed_up_to=[ComplianceSource(**p) for p in reading.provenance.sources],
            next_cursor=encode_cursor(page[-1].checked_at, page[-1].ledger_id) if more else None,
        )

    return router


def compliance_record(row: Row) -> ComplianceRecord:
    return ComplianceRecord(**row)
