"""A campaign's life and its contact-list versions: a pure fold over its ``campaign-*`` stream.

Commands are checked against the state and answered with the events that record them:

* ``create``: idempotent on the campaign id — the same settings again record nothing,
  other settings are refused (:class:`CampaignConflictError`);
* ``start`` needs a list (at least one import) and a created campaign; ``pause`` a running
  one; ``resume`` a paused one; ``stop`` anything not stopped yet, for good, and every
  contact still allowed is withdrawn with it (the gateway stops allowing the numbers);
* ``import_list``: an accepted file becomes the next list version. Numbers new to the list
  are allowed, numbers of the previous list absent from this one are withdrawn
  (``superseded``), numbers in both stay allowed. The same file (by digest) imported again
  records nothing and answers the version it made the first time. A stopped campaign takes
  no file.

Contact ids are stable for a (tenant, campaign, number) and unique across tenants: a
name-based UUID, so a contact's stream never collides with another tenant's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from plateau_contracts.events.common import StreamedEvent, tenant_stream
from plateau_contracts.events.dialer import (
    CampaignCreated,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
    ContactAllowed,
    ContactListImported,
    ContactWithdrawn,
    WithdrawReason,
)

_CONTACT_NAMESPACE = uuid.UUID("6f0b5a52-3c1e-4c5e-9d55-0d1a7c2f9e61")


class CampaignStatus(StrEnum):
    NONE = "none"  # no such campaign yet
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class CampaignError(Exception):
    """A command the campaign's state forbids; the message says why."""


class CampaignNotFoundError(CampaignError):
    pass


class CampaignConflictError(CampaignError):
    pass


def contact_id_for(tenant: str, campaign_id: str, number: str) -> str:
    """The contact id of a number in a campaign: stable across list versions."""
    return str(uuid.uuid5(_CONTACT_NAMESPACE, f"{tenant}\x1f{campaign_id}\x1f{number}"))


@dataclass(frozen=True)
class Campaign:
    """What the campaign's stream says so far."""

    campaign_id: str
    status: CampaignStatus = CampaignStatus.NONE
    created: CampaignCreated | None = None
    list_version: int = 0
    #: The list version each imported file (by SHA-256) made.
    imports: Mapping[str, ContactListImported] = field(default_factory=dict)
    version: int = 0  # the stream version folded so far

    @staticmethod
    def stream_of(tenant: str, campaign_id: str) -> str:
        """The campaign's stream (``campaign-<tenant>:<campaign_id>``)."""
        return tenant_stream(CampaignCreated.stream_prefix, tenant, campaign_id)

    # -- folding --------------------------------------------------------------------------

    def evolve(  # noqa: PLR0911 - one return per kind of event
        self, event: StreamedEvent, stream_version: int | None = None
    ) -> Campaign:
        """The campaign after one of its events (a replayed one changes nothing)."""
        if stream_version is not None and stream_version <= self.version:
            return self
        state = self if stream_version is None else replace(self, version=stream_version)
        match event:
            case CampaignCreated():
                return replace(state, status=CampaignStatus.CREATED, created=event)
            case CampaignStarted() | CampaignResumed():
                return replace(state, status=CampaignStatus.RUNNING)
            case CampaignPaused():
                return replace(state, status=CampaignStatus.PAUSED)
            case CampaignStopped():
                return replace(state, status=CampaignStatus.STOPPED)
            case ContactListImported():
                return replace(
                    state,
                    list_version=event.list_version,
                    imports={**state.imports, event.sha256: event},
                )
        return state

    @classmethod
    def fold(cls, campaign_id: str, events: Iterable[tuple[StreamedEvent, int]]) -> Campaign:
        state = cls(campaign_id)
        for event, stream_version in events:
            state = state.evolve(event, stream_version)
        return state

    # -- commands -------------------------------------------------------------------------

    def create(self, wanted: CampaignCreated) -> list[StreamedEvent]:
        if self.created is None:
            return [wanted]
        if self.created == wanted:
            return []
        raise CampaignConflictError(
            f"campaign {self.campaign_id} exists with other settings; use a new id"
        )

    def start(self, requested_by: str) -> list[StreamedEvent]:
        self.require_existing()
        if self.status is CampaignStatus.RUNNING:
            return []
        if self.status is not CampaignStatus.CREATED:
            raise CampaignError(f"campaign {self.campaign_id} is {self.status}: resume it")
        if self.list_version == 0:
            raise CampaignError(
                f"campaign {self.campaign_id} has no contacts: import a customer file first"
            )
        return [CampaignStarted(campaign_id=self.campaign_id, requested_by=requested_by)]

    def pause(self, requested_by: str, reason: str | None) -> list[StreamedEvent]:
        self.require_existing()
        if self.status is CampaignStatus.PAUSED:
            return []
        if self.status is not CampaignStatus.RUNNING:
            raise CampaignError(f"campaign {self.campaign_id} is {self.status}, not running")
        return [
            CampaignPaused(campaign_id=self.campaign_id, requested_by=requested_by, reason=reason)
        ]

    def resume(self, requested_by: str) -> list[StreamedEvent]:
        self.require_existing()
        if self.status is CampaignStatus.RUNNING:
            return []
        if self.status is not CampaignStatus.PAUSED:
            raise CampaignError(f"campaign {self.campaign_id} is {self.status}, not paused")
        return [CampaignResumed(campaign_id=self.campaign_id, requested_by=requested_by)]

    def stop(
        self, requested_by: str, reason: str | None, allowed: Mapping[str, str]
    ) -> list[StreamedEvent]:
        """Stop for good; ``allowed`` maps each number still allowed to its contact id."""
        self.require_existing()
        if self.status is CampaignStatus.STOPPED:
            return []
        withdrawn: list[StreamedEvent] = [
            ContactWithdrawn(
                contact_id=contact_id,
                campaign_id=self.campaign_id,
                number=number,
                list_version=max(self.list_version, 1),
                reason=WithdrawReason.CAMPAIGN_STOPPED,
            )
            for number, contact_id in allowed.items()
        ]
        stopped = CampaignStopped(
            campaign_id=self.campaign_id, requested_by=requested_by, reason=reason
        )
        return [stopped, *withdrawn]

    def import_list(self, plan: ListPlan) -> list[StreamedEvent]:
        """The events of a new list version (``plan.imported`` first), or none for a file
        imported before."""
        self.require_existing()
        if self.status is CampaignStatus.STOPPED:
            raise CampaignError(f"campaign {self.campaign_id} is stopped: it takes no file")
        if plan.imported.sha256 in self.imports:
            return []
        return [plan.imported, *plan.allowed, *plan.withdrawn]

    def require_existing(self) -> None:
        """``CampaignNotFoundError`` unless the campaign was created."""
        if self.created is None:
            raise CampaignNotFoundError(f"no campaign {self.campaign_id}")


@dataclass(frozen=True)
class ListPlan:
    """A new list version: its record, the numbers it allows and those it withdraws."""

    imported: ContactListImported
    allowed: list[ContactAllowed]
    withdrawn: list[ContactWithdrawn]


def plan_list(
    tenant: str,
    campaign: Campaign,
    imported: ContactListImported,
    numbers: Iterable[str],
    previously_allowed: Mapping[str, str],
) -> ListPlan:
    """Allow what is new, withdraw what is gone; ``imported`` gets the withdrawal count."""
    version = campaign.list_version + 1
    wanted = set(numbers)
    allowed = [
        ContactAllowed(
            contact_id=contact_id_for(tenant, campaign.campaign_id, number),
            campaign_id=campaign.campaign_id,
            number=number,
            list_version=version,
        )
        for number in sorted(wanted - previously_allowed.keys())
    ]
    withdrawn = [
        ContactWithdrawn(
            contact_id=contact_id,
            campaign_id=campaign.campaign_id,
            number=number,
            list_version=version,
            reason=WithdrawReason.SUPERSEDED,
        )
        for number, contact_id in sorted(previously_allowed.items())
        if number not in wanted
    ]
    record = imported.model_copy(
        update={"list_version": version, "contacts_withdrawn": len(withdrawn)}
    )
    return ListPlan(record, allowed, withdrawn)
