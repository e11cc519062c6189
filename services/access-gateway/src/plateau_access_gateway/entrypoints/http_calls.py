"""Call detail records over HTTP, filtered and paged with opaque keyset cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AfterValidator, BaseModel, Field

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import CallFilter, ReadModels, Row
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.domain.reports import (
    CursorError,
    checked_instant,
    decode_cursor,
    encode_cursor,
)
from plateau_access_gateway.entrypoints.http_denials import not_found
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_contracts.events.access import DeniedReason

Caller = Annotated[Principal, Depends(current_principal)]

MAX_LIMIT = 500


class CallRecord(BaseModel):
    """One call from start to end (durations in milliseconds)."""

    call_id: str
    direction: str | None = Field(examples=["inbound"])
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    outcome: str = Field(examples=["answered", "abandoned", "in_progress"])
    end_cause: str | None
    ani: str | None = Field(description="Calling number.")
    dnis: str | None = Field(description="Dialled number.")
    campaign_id: str | None
    queues: list[str]
    agents: list[str]
    wait_ms: int
    talk_ms: int
    hold_ms: int
    wrap_up_ms: int
    transfers: int


class CallPage(BaseModel):
    calls: list[CallRecord]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


def call_record(row: Row) -> CallRecord:
    return CallRecord(**{**row, "queues": list(row["queues"]), "agents": list(row["agents"])})


async def resolve_call_filter(
    read_models: ReadModels,
    audit: AuditTrail,
    principal: Principal,
    request: Request,
    where: CallFilter,
) -> CallFilter:
    """404 (audited) when the filter names a queue or agent the principal may not see."""
    if where.start and where.end and where.end <= where.start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "to must be after from")
    if where.queue is not None and not principal.may_see_queue(where.queue):
        raise await not_found(
            audit, principal, request, "queue", where.queue, DeniedReason.OUT_OF_SCOPE
        )
    if where.queue is not None and not await read_models.queues(principal, where.queue):
        raise await not_found(
            audit, principal, request, "queue", where.queue, DeniedReason.OTHER_TENANT
        )
    if where.agent is not None and not await read_models.agent_visible(principal, where.agent):
        raise await not_found(
            audit, principal, request, "agent", where.agent, DeniedReason.OTHER_TENANT
        )
    return where


#: A time of the filter: within the range every conversion handles (else 422).
InRange = AfterValidator(checked_instant)


def call_filter(
    *,
    start: Annotated[datetime | None, Query(alias="from"), InRange] = None,
    end: Annotated[datetime | None, Query(alias="to"), InRange] = None,
    queue: str | None = None,
    agent: str | None = None,
    outcome: Annotated[str | None, Query(max_length=64)] = None,
    direction: Literal["inbound", "outbound"] | None = None,
) -> CallFilter:
    """The call detail filter of a request's query (the search's and the exports')."""
    return CallFilter(start, end, queue, agent, outcome, direction)


CallFilterQuery = Annotated[CallFilter, Depends(call_filter)]


def calls_router(read_models: ReadModels, audit: AuditTrail) -> APIRouter:
    """``GET /api/v1/calls``."""
    router = APIRouter(tags=["calls"])

    @router.get(
        "/calls",
        response_model=CallPage,
        summary="Search call detail records (oldest first, keyset pages)",
        responses={
            404: {"description": "A queue or agent outside the caller's tenant or scope."},
            422: {"description": "An invalid filter, limit or cursor."},
        },
    )
    async def search_calls(
        *,
        principal: Caller,
        request: Request,
        asked: CallFilterQuery,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> CallPage:
        after = None
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except CursorError as exc:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        where = await resolve_call_filter(
            read_models,
            audit,
            principal,
            request,
            asked,
        )
        # One row more than asked says whether another page follows.
        async with read_models.calls(principal, where, after, limit + 1) as reading:
            found = [call_record(r) async for r in reading.rows]
        page, more = found[:limit], len(found) > limit
        next_cursor = encode_cursor(page[-1].started_at, page[-1].call_id) if more else None
        return CallPage(calls=page, next_cursor=next_cursor)

    return router
