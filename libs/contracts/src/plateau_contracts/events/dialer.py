"""Campaign, contact-list and dial facts, recorded by the dialer (topic ``plateau.dialer``).

Three kinds of stream:

* ``campaign-<tenant>:<campaign_id>``: the campaign's life and its contact-list imports
  (campaign ids are the client's, so the stream carries the tenant);
* ``contact-<contact_id>``: one contact (one number in one campaign): whether it may be
  dialled (``contact.allowed`` / ``contact.withdrawn``), its attempts and the compliance
  record of each. A contact id is stable for a (campaign, number) across list versions;
* ``do-not-call-<tenant>:<number>``: one number of a tenant's do-not-call list
  (``dnc.number_added`` / ``dnc.number_removed``).

``contact.allowed`` and ``contact.withdrawn`` are the allow-list the sip-gateway enforces:
only a number currently allowed for a running campaign of the tenant may be dialled.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from plateau_contracts.catalogue import event
from plateau_contracts.events.common import E164, Ident, Sha256Hex, StreamedEvent, UtcDatetime
from plateau_contracts.topics import Topic

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PacingMode(StrEnum):
    """How the dialer paces a campaign's calls."""

    PREDICTIVE = "predictive"  # more dials than free agents, held to the abandonment limit
    PROGRESSIVE = "progressive"  # one dial per free agent
    PREVIEW = "preview"  # the agent sees the contact first and asks for the dial


class WithdrawReason(StrEnum):
    """Why a contact may no longer be dialled."""

    SUPERSEDED = "superseded"  # a newer list version no longer contains the number
    DO_NOT_CALL = "do_not_call"  # the number is on a do-not-call list or opted out
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"
    COMPLETED = "completed"  # the contact was reached; no further dial is wanted
    CAMPAIGN_STOPPED = "campaign_stopped"


class CallingWindow(BaseModel):
    """When a campaign may dial, in local time of a time zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time = Field(description="First local time a dial may start.", examples=["08:00:00"])
    end: time = Field(description="Local time after which no dial starts.", examples=["20:00:00"])
    days: tuple[Weekday, ...] = Field(
        description="Days of the week dialling is allowed.",
        examples=[["mon", "tue", "wed", "thu", "fri", "sat"]],
    )
    time_zone: str = Field(
        description="IANA time zone the window is read in.", examples=["Africa/Brazzaville"]
    )
    holidays: tuple[date, ...] = Field(
        default=(),
        description="Local dates on which no dial starts (public holidays), in the window's "
        "time zone; for a window past midnight, the date it opened counts.",
        examples=[["2026-08-15", "2026-11-28"]],
    )

    def zone(self) -> ZoneInfo | None:
        """The window's time zone, or None when nobody can read it (then it is never open)."""
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def is_open(self, at: datetime) -> bool:
        """Whether a dial may start at ``at`` (aware): on an allowed day that is not a
        holiday, from ``start`` up to but not including ``end``, in the window's time zone.
        A window whose end is before its start runs past midnight; the day that counts is
        the day it opened. The dialer and the gateway both decide with this one rule."""
        zone = self.zone()
        if zone is None:
            return False  # a zone nobody can read is never open: refusing is the safe side
        local = at.astimezone(zone)
        moment = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            opened_on = local if self.start <= moment < self.end else None
        elif moment >= self.start:
            opened_on = local
        elif moment < self.end:
            opened_on = local - timedelta(days=1)
        else:
            opened_on = None
        return (
            opened_on is not None
            and _WEEKDAYS[opened_on.weekday()] in self.days
            and opened_on.date() not in self.holidays
        )


class CampaignEvent(StreamedEvent):
    """Common shape of campaign events: they name the campaign."""

    topic: ClassVar[str] = Topic.DIALER
    stream_prefix: ClassVar[str] = "campaign"
    stream_key: ClassVar[str] = "campaign_id"
    # The client chooses campaign ids: two tenants may both have a "renewals".
    tenant_scoped: ClassVar[bool] = True
    campaign_id: Ident = Field(
        description="Campaign (the stream is `campaign-<tenant>:<campaign_id>`).",
        examples=["cmp-2026-05"],
    )


class ContactEvent(StreamedEvent):
    """Common shape of contact events: they name the contact and its campaign."""

    topic: ClassVar[str] = Topic.DIALER
    stream_prefix: ClassVar[str] = "contact"
    stream_key: ClassVar[str] = "contact_id"
    contact_id: Ident = Field(description="Contact (the stream is `contact-<contact_id>`).")
    campaign_id: Ident = Field(description="Campaign the contact belongs to.")


# -- campaigns --------------------------------------------------------------------------


@event
class CampaignCreated(CampaignEvent):
    """A campaign was created with its pacing and compliance settings; it does not dial yet."""

    event_type: ClassVar[str] = "campaign.created"
    name: str = Field(description="Display name.", examples=["May renewals"])
    queue_id: Ident = Field(description="Queue live answers are offered to.")
    pacing: PacingMode = Field(description="How calls are paced.")
    caller_id: E164 | None = Field(default=None, description="Number presented to customers.")
    max_abandon_rate: float = Field(
        ge=0, le=1, description="Compliance abandonment limit.", examples=[0.03]
    )
    max_attempts: int = Field(ge=1, description="Dials per contact at most.", examples=[3])
    retry_after_s: int = Field(ge=0, description="Minimum delay between two attempts.")
    ring_timeout_s: int = Field(ge=1, description="How long a dial may ring.", examples=[25])
    calling_window: CallingWindow = Field(description="When dialling is allowed.")
    required_skills: tuple[Ident, ...] = Field(
        default=(),
        description="Skills an agent needs for this campaign's answers, on top of the queue's.",
        examples=[["french"]],
    )


@event
class CampaignStarted(CampaignEvent):
    """A campaign started dialling."""

    event_type: ClassVar[str] = "campaign.started"
    requested_by: str = Field(description="User or integrator that started it.")


@event
class CampaignPaused(CampaignEvent):
    """A campaign stopped placing new dials for now; calls in progress continue."""

    event_type: ClassVar[str] = "campaign.paused"
    requested_by: str = Field(description="User, integrator or `dialer` (automatic pause).")
    reason: str | None = Field(
        default=None, description="Why it was paused.", examples=["abandonment limit reached"]
    )


@event
class CampaignResumed(CampaignEvent):
    """A paused campaign started dialling again."""

    event_type: ClassVar[str] = "campaign.resumed"
    requested_by: str = Field(description="User or integrator that resumed it.")


@event
class CampaignStopped(CampaignEvent):
    """A campaign ended for good; its contacts may no longer be dialled."""

    event_type: ClassVar[str] = "campaign.stopped"
    requested_by: str = Field(description="User, integrator or `dialer` (list exhausted).")
    reason: str | None = Field(default=None, description="Why it was stopped.")


@event
class ContactListImported(CampaignEvent):
    """A customer file was validated and became a new version of the campaign's contact list."""

    event_type: ClassVar[str] = "contact_list.imported"
    list_version: int = Field(ge=1, description="Version this import created (1, 2, ...).")
    filename: str = Field(description="File name as uploaded.", examples=["clients_mai.csv"])
    sha256: Sha256Hex = Field(description="Digest of the uploaded bytes.")
    encoding: str = Field(description="Text encoding used to read it.", examples=["latin-1"])
    delimiter: str = Field(
        min_length=1, max_length=1, description="Field separator used.", examples=[";"]
    )
    rows_total: int = Field(ge=0, description="Data rows read (header excluded).")
    rows_accepted: int = Field(ge=0, description="Rows that became dialable contacts.")
    rows_rejected: int = Field(ge=0, description="Rows refused (see the validation report).")
    rows_duplicate: int = Field(ge=0, description="Rows repeating a number already accepted.")
    contacts_withdrawn: int = Field(
        default=0, ge=0, description="Contacts of the previous version not in this one."
    )
    imported_by: str = Field(description="User or integrator that uploaded the file.")


# -- contacts: the allow-list -----------------------------------------------------------


@event
class ContactAllowed(ContactEvent):
    """A number of an injected customer file may be dialled for a campaign."""

    event_type: ClassVar[str] = "contact.allowed"
    number: E164 = Field(description="Number that may be dialled.")
    list_version: int = Field(ge=1, description="Contact-list version that allows it.")


@event
class ContactWithdrawn(ContactEvent):
    """A number may no longer be dialled for a campaign."""

    event_type: ClassVar[str] = "contact.withdrawn"
    number: E164 = Field(description="Number that may no longer be dialled.")
    list_version: int = Field(ge=1, description="Current contact-list version of the campaign.")
    reason: WithdrawReason = Field(description="Why it was withdrawn.")


# -- dials ------------------------------------------------------------------------------


@event
class DialScheduled(ContactEvent):
    """The dialer planned the next attempt on a contact."""

    event_type: ClassVar[str] = "dial.scheduled"
    attempt_number: int = Field(ge=1, description="1 for the first attempt, then 2, 3, ...")
    not_before: UtcDatetime = Field(description="Earliest time the attempt may be dialled.")
    reason: Literal["first_attempt", "retry_no_answer", "retry_busy", "retry_failed"] = Field(
        description="Why this attempt is planned."
    )


@event
class DialComplianceChecked(ContactEvent):
    """The dialer checked one dial against the rules and recorded why it was allowed or not.

    These records are the compliance ledger the client can export.
    """

    event_type: ClassVar[str] = "dial.compliance_checked"
    attempt_id: Ident = Field(description="Dial attempt checked.")
    attempt_number: int = Field(ge=1, description="Attempt number on this contact.")
    max_attempts: int = Field(ge=1, description="The campaign's attempt limit at the time.")
    number: E164 = Field(description="Number to be dialled.")
    decision: Literal["allowed", "refused"] = Field(description="Outcome of the check.")
    list_version: int = Field(ge=1, description="Contact-list version the number was found in.")
    on_do_not_call: bool = Field(description="Whether the number is on a do-not-call list.")
    do_not_call_version: str | None = Field(
        default=None, description="Version of the do-not-call list consulted, if one exists."
    )
    local_time: str = Field(
        description="Customer-local date and time the window was checked at (ISO 8601).",
        examples=["2026-05-04T10:15:00+01:00"],
    )
    within_calling_window: bool = Field(description="Whether the local time is in the window.")
    refusal: str | None = Field(
        default=None, description="Which rule refused the dial, when refused."
    )


@event
class DialAttempted(ContactEvent):
    """The dialer asked the gateway to dial a contact."""

    event_type: ClassVar[str] = "dial.attempted"
    attempt_id: Ident = Field(description="Id of this attempt.")
    attempt_number: int = Field(ge=1, description="Attempt number on this contact.")
    number: E164 = Field(description="Number dialled.")
    list_version: int = Field(ge=1, description="Contact-list version that allowed it.")
    call_id: str | None = Field(
        default=None, description="Call id the gateway returned; null if Originate failed."
    )
    dial_level: float | None = Field(
        default=None, ge=0, description="Dials per free agent when this dial was paced."
    )


# -- the do-not-call list -----------------------------------------------------------------


class DoNotCallEvent(StreamedEvent):
    """Common shape of do-not-call events: one stream per number of a tenant's list."""

    topic: ClassVar[str] = Topic.DIALER
    stream_prefix: ClassVar[str] = "do-not-call"
    stream_key: ClassVar[str] = "number"
    # The same number may be on several tenants' lists, each with its own history.
    tenant_scoped: ClassVar[bool] = True
    number: E164 = Field(
        description="Number concerned (the stream is `do-not-call-<tenant>:<number>`)."
    )


@event
class DoNotCallNumberAdded(DoNotCallEvent):
    """A number was put on the tenant's do-not-call list: no campaign may dial it."""

    event_type: ClassVar[str] = "dnc.number_added"
    reason: str | None = Field(
        default=None, description="Why, for the record (e.g. the customer's request)."
    )
    source: str = Field(
        description="How it was added: `manual`, or `file:<name>` for an imported list.",
        examples=["manual", "file:optouts-2026-05.csv"],
    )
    added_by: str = Field(description="User or integrator that added it.")


@event
class DoNotCallNumberRemoved(DoNotCallEvent):
    """A number was taken off the tenant's do-not-call list."""

    event_type: ClassVar[str] = "dnc.number_removed"
    reason: str | None = Field(default=None, description="Why, for the record.")
    removed_by: str = Field(description="User or integrator that removed it.")
