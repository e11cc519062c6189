"""Live supervision over HTTP: queues, agents and campaigns of the principal's tenant and scope.

Figures come from the stats projector's views and SQL metric formulas (docs/metrics.md);
durations are in milliseconds, rates between 0 and 1, null when there is nothing to divide.

Every request and stream of the same tenant and scopes shares one read of each kind
(:class:`LiveViews`), serialised to JSON once: a wallboard polled by many screens costs one
query per change of the read models, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import ReadModels, Row
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.entrypoints.http_denials import not_found
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_contracts.events.access import DeniedReason

Caller = Annotated[Principal, Depends(current_principal)]


class AgentsInState(BaseModel):
    state: str = Field(description="Agent state.", examples=["available"])
    pause_code: str | None = Field(description="Pause code, for paused agents.")
    agents: int = Field(ge=0, description="Logged-in agents able to take this queue's calls.")


class QueueToday(BaseModel):
    measures: dict[str, int] = Field(
        description="Today's additive measures (offered, answered, abandoned, "
        "answer_wait_ms, handled, handle_ms, answered_wait_le_<s>s...), local day."
    )
    offered: int
    answered: int
    abandoned: int
    service_level: float | None = Field(description="Answered within the threshold ÷ counted.")
    asa_ms: float | None = Field(description="Average speed of answer.")
    aht_ms: float | None = Field(description="Average handle time (talk + hold + wrap-up).")
    abandonment_rate: float | None


class Queue(BaseModel):
    """A queue now and today."""

    queue_id: str = Field(examples=["q-support"])
    name: str | None
    service_level_threshold_s: int
    service_level_target: float | None
    calls_waiting: int = Field(ge=0)
    longest_waiting_since: datetime | None = Field(description="When the longest wait began.")
    agents_by_state: list[AgentsInState]
    today: QueueToday


class AgentToday(BaseModel):
    handled: int
    occupancy: float | None
    aht_ms: float | None
    measures: dict[str, int]


class Agent(BaseModel):
    """An agent now (state, since when, pause code) and today."""

    agent_id: str = Field(examples=["a-1001"])
    state: str = Field(examples=["on_call"])
    since: datetime
    pause_code: str | None
    call_id: str | None
    queue_id: str | None
    extension: str | None
    skills: list[str]
    today: AgentToday


class CampaignPeriod(BaseModel):
    measures: dict[str, int]
    compliance_abandonment_rate: float | None = Field(
        description="Live answers not connected to an agent within 2 s ÷ live answers."
    )


class Campaign(BaseModel):
    """A campaign now (status, progress, dial level), today and over the last 30 days."""

    campaign_id: str = Field(examples=["cmp-renewals"])
    name: str | None
    status: str | None
    list_version: int | None
    contacts_in_list: int | None
    contacts_dialled: int
    dial_level: float | None
    today: CampaignPeriod
    last_30_days: CampaignPeriod


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def queue_model(row: Row) -> Queue:
    measures = {k: int(v) for k, v in row["measures"].items()}
    return Queue(
        queue_id=row["queue_id"],
        name=row["name"],
        service_level_threshold_s=row["service_level_threshold_s"],
        service_level_target=row["service_level_target"],
        calls_waiting=row["calls_waiting"],
        longest_waiting_since=row["longest_waiting_since"],
        agents_by_state=[AgentsInState(**a) for a in row["agents_by_state"]],
        today=QueueToday(
            measures=measures,
            offered=measures.get("offered", 0),
            answered=measures.get("answered", 0),
            abandoned=measures.get("abandoned", 0),
            service_level=_float(row["service_level"]),
            asa_ms=_float(row["asa_ms"]),
            aht_ms=_float(row["aht_ms"]),
            abandonment_rate=_float(row["abandonment_rate"]),
        ),
    )


def agent_model(row: Row) -> Agent:
    return Agent(
        agent_id=row["agent_id"],
        state=row["state"],
        since=row["since"],
        pause_code=row["pause_code"],
        call_id=row["call_id"],
        queue_id=row["queue_id"],
        extension=row["extension"],
        skills=list(row["skills"]),
        today=AgentToday(
            handled=row["handled_today"],
            occupancy=_float(row["occupancy"]),
            aht_ms=_float(row["aht_ms"]),
            measures={k: int(v) for k, v in row["measures"].items()},
        ),
    )


def campaign_model(row: Row) -> Campaign:
    return Campaign(
        campaign_id=row["campaign_id"],
        name=row["name"],
        status=row["status"],
        list_version=row["list_version"],
        contacts_in_list=row["contacts_in_list"],
        contacts_dialled=row["contacts_dialled"],
        dial_level=row["dial_level"],
        today=CampaignPeriod(
            measures={k: int(v) for k, v in row["today"].items()},
            compliance_abandonment_rate=_float(row["today_compliance_abandonment_rate"]),
        ),
        last_30_days=CampaignPeriod(
            measures={k: int(v) for k, v in row["last_30_days"].items()},
            compliance_abandonment_rate=_float(row["last_30_days_compliance_abandonment_rate"]),
        ),
    )


Kind = Literal["queue", "agent", "campaign"]

#: How many notification generations of shared reads are kept.
SHARED_GENERATIONS = 16


class Generations(Protocol):
    """What tells that the read models changed: a number bumped by every change notice
    (the stream's ``ChangeFeed``)."""

    @property
    def generation(self) -> int: ...


@dataclass(frozen=True)
class View:
    """One read of one kind of row for one tenant and scope, serialised once."""

    rows: dict[str, bytes]  # id -> that row's JSON, in id order
    body: bytes  # the JSON array of every row

    @classmethod
    def of(cls, rows: dict[str, bytes]) -> View:
        return cls(rows, b"[" + b",".join(rows.values()) + b"]")


_MODELS: dict[Kind, tuple[str, Callable[[Row], BaseModel]]] = {
    "queue": ("queue_id", queue_model),
    "agent": ("agent_id", agent_model),
    "campaign": ("campaign_id", campaign_model),
}

_ViewKey = tuple[str, frozenset[str] | None, frozenset[str] | None, Kind, int]


class LiveViews:
    """Supervision rows read once per (tenant, scopes, kind, change generation) and shared
    by every request and stream that asks meanwhile.

    A read made at one generation is current until the next change notice bumps it; it is
    also never served older than ``max_age_s``, so figures that move with the clock alone
    (today's, at midnight) or a missed notice are never stale for longer than that.
    """

    def __init__(
        self,
        read_models: ReadModels,
        changes: Generations,
        *,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_models = read_models
        self._changes = changes
        self._max_age_s = max_age_s
        self._clock = clock
        self._reads: dict[_ViewKey, tuple[float, asyncio.Future[View]]] = {}

    @property
    def generation(self) -> int:
        return self._changes.generation

    async def view(self, principal: Principal, kind: Kind, generation: int | None = None) -> View:
        """The rows of ``kind`` the principal may see, as of ``generation`` (default: now)."""
        generation = self.generation if generation is None else generation
        key = (principal.tenant, principal.queue_scope, principal.campaign_scope, kind, generation)
        now = self._clock()
        found = self._reads.get(key)
        if found is None or now - found[0] > self._max_age_s:
            self._forget_old(now, generation)
            found = (now, asyncio.ensure_future(self._read(principal, kind)))
            self._reads[key] = found
        try:
            # Shielded: a request that goes away must not cancel the read others wait for.
            return await asyncio.shield(found[1])
        except Exception:
            if self._reads.get(key) is found:
                del self._reads[key]
            raise

    def _forget_old(self, now: float, generation: int) -> None:
        for key in [
            k
            for k, (at, _) in self._reads.items()
            if k[4] < generation - SHARED_GENERATIONS or now - at > self._max_age_s
        ]:
            del self._reads[key]

    async def _read(self, principal: Principal, kind: Kind) -> View:
        id_column, model = _MODELS[kind]
        if kind == "queue":
            rows = await self._read_models.queues(principal)
        elif kind == "agent":
            rows = await self._read_models.agents(principal)
        else:
            rows = await self._read_models.campaigns(principal)
        return View.of({r[id_column]: model(r).model_dump_json().encode() for r in rows})


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def supervision_router(live: LiveViews, audit: AuditTrail) -> APIRouter:
    """``/api/v1/queues``, ``/agents``, ``/campaigns`` and one of each by id."""
    router = APIRouter(tags=["supervision"])

    async def one(principal: Principal, request: Request, kind: Kind, ident: str) -> Response:
        """One row by id; 404 (audited) when out of the principal's scope or not visible."""
        in_scope = (
            principal.may_see_queue(ident)
            if kind == "queue"
            else principal.may_see_campaign(ident)
            if kind == "campaign"
            else True
        )
        if not in_scope:
            raise await not_found(audit, principal, request, kind, ident, DeniedReason.OUT_OF_SCOPE)
        row = (await live.view(principal, kind)).rows.get(ident)
        if row is None:
            raise await not_found(audit, principal, request, kind, ident, DeniedReason.OTHER_TENANT)
        return _json(row)

    # The routes answer the shared, already serialised JSON; ``response_model`` documents it.
    @router.get("/queues", response_model=list[Queue], summary="Queues now and today")
    async def list_queues(principal: Caller) -> Response:
        return _json((await live.view(principal, "queue")).body)

    @router.get(
        "/queues/{queue_id}",
        response_model=Queue,
        summary="One queue now and today",
        responses={404: {"description": "No such queue in the caller's tenant and scope."}},
    )
    async def get_queue(queue_id: str, principal: Caller, request: Request) -> Response:
        return await one(principal, request, "queue", queue_id)

    @router.get("/agents", response_model=list[Agent], summary="Agents now and today")
    async def list_agents(principal: Caller) -> Response:
        return _json((await live.view(principal, "agent")).body)

    @router.get(
        "/agents/{agent_id}",
        response_model=Agent,
        summary="One agent now and today",
        responses={404: {"description": "No such agent in the caller's tenant and scope."}},
    )
    async def get_agent(agent_id: str, principal: Caller, request: Request) -> Response:
        return await one(principal, request, "agent", agent_id)

    @router.get("/campaigns", response_model=list[Campaign], summary="Campaigns")
    async def list_campaigns(principal: Caller) -> Response:
        return _json((await live.view(principal, "campaign")).body)

    @router.get(
        "/campaigns/{campaign_id}",
        response_model=Campaign,
        summary="One campaign now, today and over 30 days",
        responses={404: {"description": "No such campaign in the caller's tenant and scope."}},
    )
    async def get_campaign(campaign_id: str, principal: Caller, request: Request) -> Response:
        return await one(principal, request, "campaign", campaign_id)

    return router
