"""Live supervision over HTTP: queues, agents and campaigns of the principal's tenant and scope.

Figures come from the stats projector's views and SQL metric formulas (docs/metrics.md);
durations are in milliseconds, rates between 0 and 1, null when there is nothing to divide.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
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


def supervision_router(read_models: ReadModels, audit: AuditTrail) -> APIRouter:
    """``/api/v1/queues``, ``/agents``, ``/campaigns`` and one of each by id."""
    router = APIRouter(tags=["supervision"])

    @router.get("/queues", response_model=list[Queue], summary="Queues now and today")
    async def list_queues(principal: Caller) -> list[Queue]:
        return [queue_model(r) for r in await read_models.queues(principal)]

    @router.get(
        "/queues/{queue_id}",
        response_model=Queue,
        summary="One queue now and today",
        responses={404: {"description": "No such queue in the caller's tenant and scope."}},
    )
    async def get_queue(queue_id: str, principal: Caller, request: Request) -> Queue:
        if not principal.may_see_queue(queue_id):
            raise await not_found(
                audit, principal, request, "queue", queue_id, DeniedReason.OUT_OF_SCOPE
            )
        rows = await read_models.queues(principal, queue_id)
        if not rows:
            raise await not_found(
                audit, principal, request, "queue", queue_id, DeniedReason.OTHER_TENANT
            )
        return queue_model(rows[0])

    @router.get("/agents", response_model=list[Agent], summary="Agents now and today")
    async def list_agents(principal: Caller) -> list[Agent]:
        return [agent_model(r) for r in await read_models.agents(principal)]

    @router.get(
        "/agents/{agent_id}",
        response_model=Agent,
        summary="One agent now and today",
        responses={404: {"description": "No such agent in the caller's tenant and scope."}},
    )
    async def get_agent(agent_id: str, principal: Caller, request: Request) -> Agent:
        rows = await read_models.agents(principal, agent_id)
        if not rows:
            raise await not_found(
                audit, principal, request, "agent", agent_id, DeniedReason.OTHER_TENANT
            )
        return agent_model(rows[0])

    @router.get("/campaigns", response_model=list[Campaign], summary="Campaigns")
    async def list_campaigns(principal: Caller) -> list[Campaign]:
        return [campaign_model(r) for r in await read_models.campaigns(principal)]

    @router.get(
        "/campaigns/{campaign_id}",
        response_model=Campaign,
        summary="One campaign now, today and over 30 days",
        responses={404: {"description": "No such campaign in the caller's tenant and scope."}},
    )
    async def get_campaign(campaign_id: str, principal: Caller, request: Request) -> Campaign:
        if not principal.may_see_campaign(campaign_id):
            raise await not_found(
                audit, principal, request, "campaign", campaign_id, DeniedReason.OUT_OF_SCOPE
            )
        rows = await read_models.campaigns(principal, campaign_id)
        if not rows:
            raise await not_found(
                audit, principal, request, "campaign", campaign_id, DeniedReason.OTHER_TENANT
            )
        return campaign_model(rows[0])

    return router
