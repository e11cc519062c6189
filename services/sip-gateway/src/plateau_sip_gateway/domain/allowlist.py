"""The allow-list: which numbers a tenant may dial, built from the dialer's events.

Only a number that is currently an allowed contact (``contact.allowed``, not since
``contact.withdrawn``) of an **active** campaign of the same tenant may be dialled:

* ``check(tenant, campaign, number)`` for ``Originate`` and transfers to a number: the
  number must be allowed in *that* campaign, and that campaign must be active;
* ``check(tenant, None, number)`` for an agent dialling from a softphone: the number must
  be allowed in *some* active campaign of the agent's tenant.

A number on the tenant's do-not-call list (``dnc.number_added``, not since
``dnc.number_removed``) is refused whatever the files say: the dialer scrubs it from imports
and checks it before each dial, and this check also stops an integrator's ``Originate`` or
an agent's softphone from reaching it after it was listed.

A campaign is active after ``campaign.started`` or ``campaign.resumed``, inactive when
created, paused or stopped; a stop is final (a later start or resume is ignored: the
dialer's contract says a stopped campaign's contacts may no longer be dialled). An active
campaign still dials only inside the calling window its ``campaign.created`` gave, read
in the window's time zone on the injected clock (``outside_calling_window``).

Numbers are compared in E.164 after ``numbers.normalise`` (national formats in ``CG``),
so ``06 612 34 56``, ``066123456``, ``00242066123456`` and ``+242066123456`` are one
number; a number that cannot be normalised is refused as ``malformed_number``.

Replays and redelivery (the bus is at-least-once, DESIGN §3). ``apply(envelope)``
remembers the last ``stream_version`` applied per stream and ignores anything not newer,
so replaying a history any number of times changes nothing. A bare payload
(``apply(event, tenant=...)``) has no version; contact facts are then ordered by their
``list_version`` (a newer list wins; within one version a withdrawal wins over an
allowance, since re-allowing a withdrawn number needs a new import), which makes them
idempotent and insensitive to order. Campaign lifecycle facts without envelope apply in
the order given.

The projection is mutable on purpose: it holds whole customer files (hundreds of
thousands of numbers) and an immutable copy per event would cost a copy per event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from plateau_contracts.catalogue import parse
from plateau_contracts.envelope import Envelope, EventData
from plateau_contracts.events.calls import DialRefusalReason, DialRefused, DialRequester
from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
    ContactAllowed,
    ContactWithdrawn,
    DoNotCallNumberAdded,
    DoNotCallNumberRemoved,
    WithdrawReason,
)
from plateau_sip_gateway.domain.numbers import DEFAULT_REGION, MalformedNumberError, normalise


class CampaignStatus(StrEnum):
    """Whether a campaign's contacts may be dialled now."""

    CREATED = "created"
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"


class RefusalReason(StrEnum):
    """Why the allow-list refuses a number."""

    NOT_IN_FILE = "not_in_file"  # no campaign of the tenant has ever allowed it
    WITHDRAWN = "withdrawn"  # it was allowed, then withdrawn
    CAMPAIGN_NOT_ACTIVE = "campaign_not_active"  # allowed, but its campaign is not running
    UNKNOWN_CAMPAIGN = "unknown_campaign"  # the named campaign is not one of the tenant's
    UNKNOWN_TENANT = "unknown_tenant"  # the tenant has no campaign and no contact at all
    MALFORMED_NUMBER = "malformed_number"  # not a telephone number
    OUTSIDE_CALLING_WINDOW = "outside_calling_window"  # allowed, but not at this hour
    DO_NOT_CALL = "do_not_call"  # on the tenant's do-not-call list


#: How each refusal is recorded in ``call.dial_refused`` (its ``reason`` enum is coarser).
DIAL_REFUSAL_REASON = {
    RefusalReason.NOT_IN_FILE: DialRefusalReason.NOT_IN_CONTACT_LIST,
    RefusalReason.WITHDRAWN: DialRefusalReason.CONTACT_WITHDRAWN,
    RefusalReason.CAMPAIGN_NOT_ACTIVE: DialRefusalReason.CAMPAIGN_NOT_RUNNING,
    RefusalReason.UNKNOWN_CAMPAIGN: DialRefusalReason.UNKNOWN_CAMPAIGN,
    RefusalReason.UNKNOWN_TENANT: DialRefusalReason.NOT_IN_CONTACT_LIST,
    RefusalReason.MALFORMED_NUMBER: DialRefusalReason.INVALID_NUMBER,
    RefusalReason.OUTSIDE_CALLING_WINDOW: DialRefusalReason.OUTSIDE_CALLING_WINDOW,
    RefusalReason.DO_NOT_CALL: DialRefusalReason.DO_NOT_CALL,
}


@dataclass(frozen=True)
class Allowed:
    """The number may be dialled: the contact and list version that allow it."""

    number: str  # E.164
    campaign_id: str
    contact_id: str
    list_version: int


@dataclass(frozen=True)
class Refused:
    """The number may not be dialled, and why."""

    reason: RefusalReason
    detail: str
    number: str  # as requested

    def to_event(
        self,
        call_id: str,
        *,
        requested_by: DialRequester,
        requester: str,
        campaign_id: str | None = None,
        contact_id: str | None = None,
        attempt_id: str | None = None,
        sip_code: int | None = None,
    ) -> DialRefused:
        """The ``call.dial_refused`` fact (``sip_code`` only for a softphone, e.g. 403)."""
        return DialRefused(
            call_id=call_id,
            number=self.number,
            requested_by=requested_by,
            requester=requester,
            reason=DIAL_REFUSAL_REASON[self.reason],
            campaign_id=campaign_id,
            contact_id=contact_id,
            attempt_id=attempt_id,
            sip_code=sip_code,
            detail=f"{self.reason}: {self.detail}",
        )


Decision = Allowed | Refused


@dataclass(frozen=True)
class _Contact:
    contact_id: str
    list_version: int
    withdrawn: WithdrawReason | None  # None: allowed

    def supersedes(self, other: _Contact) -> bool:
        # Newer list first; within a version a withdrawal beats an allowance.
        return (self.list_version, self.withdrawn is not None) > (
            other.list_version,
            other.withdrawn is not None,
        )


class _Tenant:
    def __init__(self) -> None:
        self.campaigns: dict[str, CampaignStatus] = {}
        self.windows: dict[str, CallingWindow] = {}  # from campaign.created
        self.known_campaigns: set[str] = set()  # named by any fact, lifecycle or contact
        # number (E.164) -> campaign -> latest fact about that contact
        self.contacts: dict[str, dict[str, _Contact]] = {}
        self.do_not_call: set[str] = set()  # E.164


_LIFECYCLE = (CampaignCreated, CampaignStarted, CampaignPaused, CampaignResumed, CampaignStopped)


class AllowList:
    """The tenants' dialable numbers, projected from ``plateau.dialer`` events."""

    def __init__(
        self,
        default_region: str = DEFAULT_REGION,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._region = default_region
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._stream_versions: dict[tuple[str, str], int] = {}

    def apply(self, item: Envelope | EventData, tenant: str | None = None) -> bool:
        """Take one dialer fact into account; ``False`` when it changed nothing.

        An envelope carries its tenant; a bare payload needs ``tenant``. Events that are
        not allow-list facts are ignored.
        """
        if isinstance(item, Envelope):
            key = (item.tenant, item.stream)
            if item.stream_version <= self._stream_versions.get(key, 0):
                return False
            if not is_allow_list_type(item.type):
                return False
            event = parse(item)
            self._stream_versions[key] = item.stream_version
            return self._apply(item.tenant, event)
        if tenant is None:
            raise ValueError("a bare event has no tenant: pass tenant=")
        return self._apply(tenant, item)

    def check(self, tenant: str, campaign_id: str | None, number: str) -> Decision:
        """Whether ``tenant`` may dial ``number`` now, for ``campaign_id`` or any campaign:
        an allowed contact of an active campaign whose calling window is open."""
        try:
            e164 = normalise(number, self._region)
        except MalformedNumberError as exc:
            return Refused(RefusalReason.MALFORMED_NUMBER, str(exc), number)
        state = self._tenants.get(tenant)
        if state is None:
            return Refused(
                RefusalReason.UNKNOWN_TENANT, f"tenant {tenant!r} has no campaign", number
            )
        if e164 in state.do_not_call:
            return Refused(RefusalReason.DO_NOT_CALL, f"{e164} is on the do-not-call list", number)
        contacts = state.contacts.get(e164, {})
        if campaign_id is not None:
            return self._check_campaign(state, campaign_id, e164, number, contacts)
        return self._check_any(state, e164, number, contacts)

    def campaign_status(self, tenant: str, campaign_id: str) -> CampaignStatus | None:
        """The campaign's status as last heard; ``None`` when never heard of."""
        state = self._tenants.get(tenant)
        return None if state is None else state.campaigns.get(campaign_id)

    # -- internals ----------------------------------------------------------------------

    def _check_campaign(
        self,
        state: _Tenant,
        campaign_id: str,
        e164: str,
        number: str,
        contacts: dict[str, _Contact],
    ) -> Decision:
        status = state.campaigns.get(campaign_id)
        contact = contacts.get(campaign_id)
        if campaign_id not in state.known_campaigns:
            return Refused(
                RefusalReason.UNKNOWN_CAMPAIGN,
                f"campaign {campaign_id!r} is not a campaign of this tenant",
                number,
            )
        if status is not CampaignStatus.ACTIVE:
            return Refused(
                RefusalReason.CAMPAIGN_NOT_ACTIVE,
                f"campaign {campaign_id!r} is {status or 'not started'}",
                number,
            )
        if contact is None:
            return Refused(
                RefusalReason.NOT_IN_FILE,
                f"{e164} is not in the contact list of campaign {campaign_id!r}",
                number,
            )
        if contact.withdrawn is not None:
            return Refused(
                RefusalReason.WITHDRAWN,
                f"{e164} was withdrawn from campaign {campaign_id!r} ({contact.withdrawn})",
                number,
            )
        if not self._window_open(state, campaign_id):
            return Refused(
                RefusalReason.OUTSIDE_CALLING_WINDOW,
                f"campaign {campaign_id!r} may not dial now: its calling window is "
                f"{self._describe(state, campaign_id)}",
                number,
            )
        return Allowed(e164, campaign_id, contact.contact_id, contact.list_version)

    def _window_open(self, state: _Tenant, campaign_id: str) -> bool:
        window = state.windows.get(campaign_id)
        return window is None or window.is_open(self._clock())

    @staticmethod
    def _describe(state: _Tenant, campaign_id: str) -> str:
        window = state.windows[campaign_id]
        days = ",".join(window.days)
        return f"{days} {window.start:%H:%M}-{window.end:%H:%M} {window.time_zone}"

    def _check_any(
        self, state: _Tenant, e164: str, number: str, contacts: dict[str, _Contact]
    ) -> Decision:
        allowed = sorted(
            (campaign, contact)
            for campaign, contact in contacts.items()
            if contact.withdrawn is None
        )
        active = [
            (campaign, contact)
            for campaign, contact in allowed
            if state.campaigns.get(campaign) is CampaignStatus.ACTIVE
        ]
        for campaign, contact in active:
            if self._window_open(state, campaign):
                return Allowed(e164, campaign, contact.contact_id, contact.list_version)
        if active:
            names = ", ".join(repr(campaign) for campaign, _ in active)
            return Refused(
                RefusalReason.OUTSIDE_CALLING_WINDOW,
                f"{e164} is only in campaigns outside their calling window now: {names}",
                number,
            )
        if allowed:
            names = ", ".join(repr(campaign) for campaign, _ in allowed)
            return Refused(
                RefusalReason.CAMPAIGN_NOT_ACTIVE,
                f"{e164} is only in campaigns that are not running: {names}",
                number,
            )
        if contacts:
            return Refused(
                RefusalReason.WITHDRAWN, f"{e164} was withdrawn from every campaign", number
            )
        return Refused(
            RefusalReason.NOT_IN_FILE, f"{e164} is in no contact list of this tenant", number
        )

    def _apply(self, tenant: str, event: EventData) -> bool:
        if isinstance(event, ContactAllowed | ContactWithdrawn):
            return self._apply_contact(tenant, event)
        if isinstance(event, _LIFECYCLE):
            return self._apply_lifecycle(tenant, event)
        if isinstance(event, DoNotCallNumberAdded | DoNotCallNumberRemoved):
            return self._apply_do_not_call(tenant, event)
        return False

    def _apply_do_not_call(
        self, tenant: str, event: DoNotCallNumberAdded | DoNotCallNumberRemoved
    ) -> bool:
        try:
            e164 = normalise(event.number, self._region)
        except MalformedNumberError:
            return False  # the contract requires E.164; such a number is never dialled
        listed = self._tenants.setdefault(tenant, _Tenant()).do_not_call
        before = e164 in listed
        if isinstance(event, DoNotCallNumberAdded):
            listed.add(e164)
        else:
            listed.discard(e164)
        return (e164 in listed) is not before

    def _apply_lifecycle(
        self,
        tenant: str,
        event: CampaignCreated
        | CampaignStarted
        | CampaignPaused
        | CampaignResumed
        | CampaignStopped,
    ) -> bool:
        state = self._tenants.setdefault(tenant, _Tenant())
        state.known_campaigns.add(event.campaign_id)
        current = state.campaigns.get(event.campaign_id)
        if current is CampaignStatus.STOPPED:
            return False
        new: CampaignStatus
        if isinstance(event, CampaignCreated):
            state.windows[event.campaign_id] = event.calling_window
            new = current or CampaignStatus.CREATED
        elif isinstance(event, CampaignStarted | CampaignResumed):
            new = CampaignStatus.ACTIVE
        elif isinstance(event, CampaignPaused):
            new = CampaignStatus.PAUSED
        else:
            new = CampaignStatus.STOPPED
        state.campaigns[event.campaign_id] = new
        return new is not current

    def _apply_contact(self, tenant: str, event: ContactAllowed | ContactWithdrawn) -> bool:
        try:
            e164 = normalise(event.number, self._region)
        except MalformedNumberError:
            # The contract pattern already requires E.164; one libphonenumber cannot read
            # can never match a normalised dial, so leaving it out refuses nothing more.
            return False
        fact = _Contact(
            event.contact_id,
            event.list_version,
            event.reason if isinstance(event, ContactWithdrawn) else None,
        )
        state = self._tenants.setdefault(tenant, _Tenant())
        state.known_campaigns.add(event.campaign_id)
        by_campaign = state.contacts.setdefault(e164, {})
        current = by_campaign.get(event.campaign_id)
        if current is not None and not fact.supersedes(current):
            return False
        by_campaign[event.campaign_id] = fact
        return True


_ALLOW_LIST_TYPES = frozenset(
    cls.event_type
    for cls in (
        ContactAllowed,
        ContactWithdrawn,
        DoNotCallNumberAdded,
        DoNotCallNumberRemoved,
        *_LIFECYCLE,
    )
)


def is_allow_list_type(event_type: str) -> bool:
    return event_type in _ALLOW_LIST_TYPES
