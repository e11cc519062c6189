"""Interval reports over HTTP: measures and metrics per queue, agent or campaign and period,
with the event positions and chain heads they were computed up to."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, Field

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import JsonReport, ReadModels
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.domain.reports import (
    Granularity,
    ReportKind,
    checked_instant,
    period_problem,
)
from plateau_access_gateway.entrypoints.http_denials import not_found
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_contracts.events.access import DeniedReason, ReportViewed

Caller = Annotated[Principal, Depends(current_principal)]


class SourcePosition(BaseModel):
    """How far into one event store the read models are computed."""

    source: str = Field(examples=["acd"])
    position: int = Field(description="Last applied event position of that store.")
    chain_head: str = Field(description="Hash-chain head at that position (hex).")
    applied_at: datetime | None


class Metrics(BaseModel):
    service_level: float | None = Field(description="With the queue's threshold (queues).")
    service_level_threshold_s: int | None
    asa_ms: float | None
    aht_ms: float | None
    abandonment_rate: float | None
    occupancy: float | None = Field(description="Agents.")
    compliance_abandonment_rate: float | None = Field(description="Campaigns.")


class ReportRow(BaseModel):
    id: str = Field(description="Queue, agent or campaign id.")
    period_start: datetime = Field(description="Start of the period (tenant's local periods).")
    measures: dict[str, int]
    metrics: Metrics


class Report(BaseModel):
    """An interval report and what it was computed from."""

    dimension: str = Field(examples=["queue"])
    granularity: Granularity
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    formula_versions: dict[str, int]
    computed_up_to: list[SourcePosition]
    rows: list[ReportRow]

    model_config = {"populate_by_name": True}


@dataclass(frozen=True)
class ReportRequest:
    """A validated report request, with the ids narrowed to what the principal may see."""

    kind: ReportKind
    ids: list[str] | None
    start: datetime
    end: datetime
    granularity: Granularity

    def filters(self) -> dict[str, str]:
        return {
            "ids": ",".join(self.ids) if self.ids is not None else "*",
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "granularity": self.granularity.value,
        }


def _split(ids: list[str] | None) -> list[str] | None:
    if not ids:
        return None
    out = [part.strip() for value in ids for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(out)) or None


async def resolve_report(  # noqa: PLR0917 - the request's own parameters
    read_models: ReadModels,
    audit: AuditTrail,
    principal: Principal,
    request: Request,
    kind: ReportKind,
    ids: list[str] | None,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> ReportRequest:
    """Validate a report request and scope its ids; 422 or 404 (audited) otherwise."""
    problem = period_problem(start, end, granularity)
    if problem is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)
    wanted = _split(ids)
    in_scope: Callable[[str], bool]
    if kind is ReportKind.QUEUES:
        scoped = principal.queue_scope is not None
        visible = {r["queue_id"] for r in await read_models.queues(principal)}
        in_scope = principal.may_see_queue
    elif kind is ReportKind.CAMPAIGNS:
        scoped = principal.campaign_scope is not None
        visible = {r["campaign_id"] for r in await read_models.campaigns(principal)}
        in_scope = principal.may_see_campaign
    else:
        # Agents are scoped through the queues they can serve (see adapters.read_models).
        scoped = principal.queue_scope is not None
        visible = {r["agent_id"] for r in await read_models.agents(principal)}

        in_scope = lambda _agent_id: not scoped  # noqa: E731

    for ident in wanted or ():
        if ident not in visible:
            reason = DeniedReason.OTHER_TENANT if in_scope(ident) else DeniedReason.OUT_OF_SCOPE
            raise await not_found(audit, principal, request, kind.dimension, ident, reason)
    if wanted is None and scoped:
        wanted = sorted(visible)
    return ReportRequest(kind, wanted, start, end, granularity)


async def report_body(
    dimension: str, granularity: Granularity, start: datetime, end: datetime, report: JsonReport
) -> AsyncIterator[bytes]:
    """The report endpoint's answer, piece by piece: a ``Report`` whose rows are the JSON
    the database made (``ReadModels.report_json``, in ``ReportRow``'s shape); everything
    around them is the model's own serialisation."""
    envelope = Report(
        dimension=dimension,
        granularity=granularity,
        start=start,
        end=end,
        formula_versions=report.provenance.formula_versions,
        computed_up_to=[SourcePosition(**p) for p in report.provenance.sources],
        rows=[],
    ).model_dump_json(by_alias=True, exclude={"rows"})
    yield envelope[:-1].encode() + b',"rows":'
    async for piece in report.rows:
        yield piece
    yield b"}"


IdsQuery = Annotated[
    list[str] | None,
    Query(description="Ids to report on (comma-separated or repeated); all visible by default."),
]
FromQuery = Annotated[
    datetime,
    Query(alias="from", description="Start (with UTC offset)."),
    AfterValidator(checked_instant),
]
ToQuery = Annotated[
    datetime, Query(alias="to", description="End, exclusive."), AfterValidator(checked_instant)
]
GranularityQuery = Annotated[Granularity, Query(description="Length of each period.")]


def reports_router(read_models: ReadModels, audit: AuditTrail) -> APIRouter:
    """``GET /api/v1/reports/{queues|agents|campaigns}``."""
    router = APIRouter(tags=["reports"])

    @router.get(
        "/reports/{kind}",
        response_model=Report,
        response_model_by_alias=True,
        summary="Interval report per queue, agent or campaign",
        responses={
            404: {"description": "An id outside the caller's tenant or scope."},
            422: {"description": "An invalid period or granularity."},
        },
    )
    async def report(
        *,
        kind: Annotated[ReportKind, Path(description="What to report on.")],
        principal: Caller,
        request: Request,
        start: FromQuery,
        end: ToQuery,
        granularity: GranularityQuery = Granularity.HOUR,
        ids: IdsQuery = None,
    ) -> StreamingResponse:
        asked = await resolve_report(
            read_models, audit, principal, request, kind, ids, start, end, granularity
        )

        async def answer() -> AsyncGenerator[bytes]:
            async with read_models.report_json(
                principal, kind.dimension, asked.ids, start, end, granularity.value
            ) as report:
                await audit.record(
                    principal.tenant,
                    ReportViewed(
                        user_id=principal.user_id,
                        session_id=principal.credential_id,
                        report=f"{kind.dimension}_intervals",
                        filters=asked.filters(),
                    ),
                )
                async for piece in report_body(kind.dimension, granularity, start, end, report):
                    yield piece

        # Up to the first piece before answering, so that a database that fails or an
        # audit record that cannot be written gets its error response, not a 200 cut
        # short. The rest streams: memory stays bounded whatever the report's size.
        pieces = answer()
        first = await anext(pieces)

        async def streamed() -> AsyncIterator[bytes]:
            try:
                yield first
                async for piece in pieces:
                    yield piece
            finally:  # however the sending ends: the snapshot's connection goes back
                await pieces.aclose()

        return StreamingResponse(streamed(), media_type="application/json")

    return router
