"""The allow-list: only numbers of an injected file, for an active campaign of the tenant."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_contracts.envelope import Envelope, EventData, new_event_id
from plateau_contracts.events.calls import DialRefusalReason, DialRequester
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.dialer import (
    CampaignCreated,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
    ContactAllowed,
    ContactWithdrawn,
    DialScheduled,
    DoNotCallNumberAdded,
    DoNotCallNumberRemoved,
    WithdrawReason,
)
from plateau_sip_gateway.domain.allowlist import (
    Allowed,
    AllowList,
    CampaignStatus,
    RefusalReason,
    Refused,
)
from plateau_sip_gateway.domain.numbers import MalformedNumberError, normalise

pytestmark = pytest.mark.unit

T = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
NUMBER = "+242066123456"


class Recorder:
    """Wraps dialer payloads in envelopes with per-stream versions, as the store would."""

    def __init__(self) -> None:
        self.versions: defaultdict[str, int] = defaultdict(int)
        self.history: list[Envelope] = []

    def __call__(self, tenant: str, event: StreamedEvent) -> Envelope:
        stream = event.stream_id(tenant)
        self.versions[stream] += 1
        envelope = Envelope(
            event_id=new_event_id(),
            type=event.event_type,
            schema_version=event.schema_version,
            stream=stream,
            stream_version=self.versions[stream],
            tenant=tenant,
            occurred_at=T,
            recorded_at=T,
            data=event.model_dump(mode="json"),
        )
        self.history.append(envelope)
        return envelope


def started(campaign: str = "cmp-1") -> CampaignStarted:
    return CampaignStarted(campaign_id=campaign, requested_by="supervisor")


def allowed(
    number: str = NUMBER, campaign: str = "cmp-1", contact: str = "ct-1", version: int = 1
) -> ContactAllowed:
    return ContactAllowed(
        contact_id=contact, campaign_id=campaign, number=number, list_version=version
    )


def withdrawn(
    number: str = NUMBER,
    campaign: str = "cmp-1",
    contact: str = "ct-1",
    version: int = 1,
    reason: WithdrawReason = WithdrawReason.DO_NOT_CALL,
) -> ContactWithdrawn:
    return ContactWithdrawn(
        contact_id=contact,
        campaign_id=campaign,
        number=number,
        list_version=version,
        reason=reason,
    )


@pytest.fixture
def record() -> Recorder:
    return Recorder()


def reason_of(decision: Allowed | Refused) -> RefusalReason | None:
    return decision.reason if isinstance(decision, Refused) else None


def test_a_number_is_allowed_only_while_its_campaign_is_active(record: Recorder) -> None:
    allow = AllowList()
    allow.apply(record("acme", allowed()))
    assert reason_of(allow.check("acme", "cmp-1", NUMBER)) is RefusalReason.CAMPAIGN_NOT_ACTIVE

    allow.apply(record("acme", started()))
    assert allow.check("acme", "cmp-1", NUMBER) == Allowed(NUMBER, "cmp-1", "ct-1", 1)

    allow.apply(record("acme", CampaignPaused(campaign_id="cmp-1", requested_by="dialer")))
    assert reason_of(allow.check("acme", "cmp-1", NUMBER)) is RefusalReason.CAMPAIGN_NOT_ACTIVE
    assert allow.campaign_status("acme", "cmp-1") is CampaignStatus.PAUSED

    allow.apply(record("acme", CampaignResumed(campaign_id="cmp-1", requested_by="supervisor")))
    assert isinstance(allow.check("acme", "cmp-1", NUMBER), Allowed)

    allow.apply(record("acme", CampaignStopped(campaign_id="cmp-1", requested_by="supervisor")))
    assert reason_of(allow.check("acme", "cmp-1", NUMBER)) is RefusalReason.CAMPAIGN_NOT_ACTIVE
    # A stop is final: a stray resume does not reopen the campaign.
    allow.apply(record("acme", CampaignResumed(campaign_id="cmp-1", requested_by="supervisor")))
    assert reason_of(allow.check("acme", "cmp-1", NUMBER)) is RefusalReason.CAMPAIGN_NOT_ACTIVE


def test_withdrawn_is_refused_until_a_newer_list_allows_it_again(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed(), withdrawn()):
        allow.apply(record("acme", event))
    refused = allow.check("acme", "cmp-1", NUMBER)
    assert reason_of(refused) is RefusalReason.WITHDRAWN
    assert reason_of(allow.check("acme", None, NUMBER)) is RefusalReason.WITHDRAWN

    allow.apply(record("acme", allowed(version=2)))
    assert allow.check("acme", "cmp-1", NUMBER) == Allowed(NUMBER, "cmp-1", "ct-1", 2)


def test_numbers_outside_the_file_and_unknown_names_are_refused(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    assert reason_of(allow.check("acme", "cmp-1", "+242069999999")) is RefusalReason.NOT_IN_FILE
    assert reason_of(allow.check("acme", None, "+242069999999")) is RefusalReason.NOT_IN_FILE
    assert reason_of(allow.check("acme", "cmp-x", NUMBER)) is RefusalReason.UNKNOWN_CAMPAIGN
    assert reason_of(allow.check("nobody", None, NUMBER)) is RefusalReason.UNKNOWN_TENANT


def test_another_tenants_file_never_allows(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    allow.apply(record("globex", started("cmp-g")))
    # Same campaign id, same number, other tenant: nothing of acme's file leaks over.
    assert reason_of(allow.check("globex", "cmp-1", NUMBER)) is RefusalReason.UNKNOWN_CAMPAIGN
    assert reason_of(allow.check("globex", "cmp-g", NUMBER)) is RefusalReason.NOT_IN_FILE
    assert reason_of(allow.check("globex", None, NUMBER)) is RefusalReason.NOT_IN_FILE
    assert isinstance(allow.check("acme", None, NUMBER), Allowed)


def test_agent_dials_need_some_active_campaign_of_the_tenant(record: Recorder) -> None:
    allow = AllowList()
    for event in (
        allowed(campaign="cmp-a", contact="ct-a"),
        allowed(campaign="cmp-b", contact="ct-b"),
        started("cmp-b"),
    ):
        allow.apply(record("acme", event))
    assert allow.check("acme", None, NUMBER) == Allowed(NUMBER, "cmp-b", "ct-b", 1)
    allow.apply(record("acme", CampaignStopped(campaign_id="cmp-b", requested_by="dialer")))
    refused = allow.check("acme", None, NUMBER)
    assert reason_of(refused) is RefusalReason.CAMPAIGN_NOT_ACTIVE


@pytest.mark.parametrize(
    "spelling",
    [
        "+242066123456",
        "+242 06 612 34 56",
        "06 612 34 56",
        "066123456",
        "00242066123456",
        "06-612-34-56",
        "(06) 612.34.56",
    ],
)
def test_national_and_international_spellings_are_one_number(
    record: Recorder, spelling: str
) -> None:
    assert normalise(spelling) == NUMBER
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    assert allow.check("acme", "cmp-1", spelling) == Allowed(NUMBER, "cmp-1", "ct-1", 1)
    assert isinstance(allow.check("acme", None, spelling), Allowed)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "12",
        "066123456#",
        "*31#066123456",
        "sip:066123456@example.com",
        "+",
        "0" * 40,
        "06612345a6",
        "+242 06 612 34 56 78 90 12",
    ],
)
def test_garbage_is_refused_as_malformed(record: Recorder, garbage: str) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    refused = allow.check("acme", "cmp-1", garbage)
    assert reason_of(refused) is RefusalReason.MALFORMED_NUMBER
    with pytest.raises(MalformedNumberError):
        normalise(garbage)


def test_refusal_becomes_a_dial_refused_event(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    refused = allow.check("acme", None, "06 999 99 99")
    assert isinstance(refused, Refused)
    event = refused.to_event(
        "c-7", requested_by=DialRequester.AGENT_SOFTPHONE, requester="1001", sip_code=403
    )
    assert event.reason is DialRefusalReason.NOT_IN_CONTACT_LIST
    assert (event.number, event.requester, event.sip_code) == ("06 999 99 99", "1001", 403)
    assert event.detail is not None and event.detail.startswith("not_in_file:")
    assert event.stream_id() == "call-c-7"


@pytest.mark.parametrize(
    ("reason", "recorded"),
    [
        (RefusalReason.WITHDRAWN, DialRefusalReason.CONTACT_WITHDRAWN),
        (RefusalReason.CAMPAIGN_NOT_ACTIVE, DialRefusalReason.CAMPAIGN_NOT_RUNNING),
        (RefusalReason.UNKNOWN_CAMPAIGN, DialRefusalReason.UNKNOWN_CAMPAIGN),
        (RefusalReason.UNKNOWN_TENANT, DialRefusalReason.NOT_IN_CONTACT_LIST),
        (RefusalReason.MALFORMED_NUMBER, DialRefusalReason.INVALID_NUMBER),
    ],
)
def test_every_refusal_maps_to_a_contract_reason(
    reason: RefusalReason, recorded: DialRefusalReason
) -> None:
    event = Refused(reason, "why", "x").to_event(
        "c-1", requested_by=DialRequester.DIALER, requester="dialer", campaign_id="cmp-1"
    )
    assert event.reason is recorded


def test_replaying_the_history_twice_changes_nothing(record: Recorder) -> None:
    allow = AllowList()
    events: list[EventData] = [
        started(),
        allowed(),
        allowed("+242066000001", contact="ct-2"),
        withdrawn("+242066000001", contact="ct-2"),
        CampaignPaused(campaign_id="cmp-1", requested_by="dialer"),
        CampaignResumed(campaign_id="cmp-1", requested_by="supervisor"),
    ]
    for event in events:
        assert isinstance(event, StreamedEvent)
        allow.apply(record("acme", event))
    probes = [(NUMBER, "cmp-1"), ("+242066000001", "cmp-1"), (NUMBER, None)]
    before = [allow.check("acme", campaign, number) for number, campaign in probes]
    for envelope in record.history * 2:
        assert allow.apply(envelope) is False
    assert [allow.check("acme", campaign, number) for number, campaign in probes] == before

    # A fresh projection fed the history twice ends where one pass ends.
    again = AllowList()
    for envelope in record.history + record.history:
        again.apply(envelope)
    assert [again.check("acme", campaign, number) for number, campaign in probes] == before


def test_other_dialer_events_are_ignored(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    scheduled = DialScheduled(
        contact_id="ct-1",
        campaign_id="cmp-1",
        attempt_number=1,
        not_before=T,
        reason="first_attempt",
    )
    assert allow.apply(record("acme", scheduled)) is False
    # The next contact fact of that stream still applies (versions are per stream).
    assert allow.apply(record("acme", withdrawn())) is True


def test_a_do_not_call_number_is_refused_whatever_the_files_say(record: Recorder) -> None:
    allow = AllowList()
    for event in (started(), allowed()):
        allow.apply(record("acme", event))
    listed = DoNotCallNumberAdded(number=NUMBER, source="manual", added_by="ops")
    assert allow.apply(record("acme", listed)) is True
    assert reason_of(allow.check("acme", "cmp-1", NUMBER)) is RefusalReason.DO_NOT_CALL
    # National spelling and the softphone path are refused too.
    assert reason_of(allow.check("acme", None, "06 612 34 56")) is RefusalReason.DO_NOT_CALL
    refused = allow.check("acme", "cmp-1", NUMBER)
    assert isinstance(refused, Refused)
    event = refused.to_event("call-1", requested_by=DialRequester.DIALER, requester="dialer")
    assert event.reason is DialRefusalReason.DO_NOT_CALL
    # Another tenant's list does not refuse acme's dials, nor the other way round.
    allow.apply(
        record(
            "globex", DoNotCallNumberAdded(number="+242069999999", source="manual", added_by="ops")
        )
    )
    assert isinstance(allow.check("acme", "cmp-1", NUMBER), Refused)
    assert reason_of(allow.check("globex", None, NUMBER)) is RefusalReason.NOT_IN_FILE

    removed = DoNotCallNumberRemoved(number=NUMBER, removed_by="ops")
    assert allow.apply(record("acme", removed)) is True
    assert allow.check("acme", "cmp-1", NUMBER) == Allowed(NUMBER, "cmp-1", "ct-1", 1)
    # A redelivered (older) fact of the same stream changes nothing.
    assert allow.apply(record.history[2]) is False
    assert isinstance(allow.check("acme", "cmp-1", NUMBER), Allowed)


def test_bare_payloads_need_a_tenant() -> None:
    allow = AllowList()
    with pytest.raises(ValueError, match="tenant="):
        allow.apply(started())
    assert allow.apply(started(), tenant="acme") is True
    assert allow.apply(started(), tenant="acme") is False


_contact_facts = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=1, max_value=4)), min_size=1, max_size=8
)


@settings(max_examples=200)
@given(facts=_contact_facts, data=st.data())
def test_bare_contact_facts_are_order_insensitive_and_idempotent(
    facts: list[tuple[bool, int]], data: st.DataObject
) -> None:
    """Without envelopes, redelivery in any order and any number of times ends the same."""
    events: list[EventData] = [
        (withdrawn if is_withdrawal else allowed)(version=version)
        for is_withdrawal, version in facts
    ]
    reference = AllowList()
    for event in [started(), *events]:
        reference.apply(event, tenant="acme")
    shuffled = data.draw(st.permutations(events + events))
    replayed = AllowList()
    for event in [started(), *shuffled]:
        replayed.apply(event, tenant="acme")
    assert replayed.check("acme", "cmp-1", NUMBER) == reference.check("acme", "cmp-1", NUMBER)
    # The newest list decides; within it a withdrawal wins.
    newest = max(version for _, version in facts)
    withdrawn_in_newest = any(w for w, version in facts if version == newest)
    decision = reference.check("acme", "cmp-1", NUMBER)
    assert isinstance(decision, Refused) is withdrawn_in_newest


# -- calling windows ------------------------------------------------------------------------


def created(
    campaign: str = "cmp-1",
    start: str = "08:00",
    end: str = "20:00",
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat"),
    zone: str = "Africa/Brazzaville",
) -> CampaignCreated:
    return CampaignCreated.model_validate(
        {
            "campaign_id": campaign,
            "name": "renewals",
            "queue_id": "q-out",
            "pacing": "predictive",
            "max_abandon_rate": 0.03,
            "max_attempts": 3,
            "retry_after_s": 3600,
            "ring_timeout_s": 25,
            "calling_window": {"start": start, "end": end, "days": days, "time_zone": zone},
        }
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        # Brazzaville is UTC+1 all year: 08:00-20:00 local is 07:00-19:00 UTC.
        (datetime(2026, 5, 4, 6, 59, tzinfo=UTC), False),  # Monday 07:59 local
        (datetime(2026, 5, 4, 7, 0, tzinfo=UTC), True),  # Monday 08:00 local: opens
        (datetime(2026, 5, 4, 18, 59, tzinfo=UTC), True),
        (datetime(2026, 5, 4, 19, 0, tzinfo=UTC), False),  # 20:00 local: no dial starts
        (datetime(2026, 5, 10, 10, 0, tzinfo=UTC), False),  # Sunday
        (datetime(2026, 5, 9, 23, 30, tzinfo=UTC), False),  # Saturday UTC, Sunday 00:30 local
    ],
)
def test_an_active_campaign_dials_only_inside_its_calling_window(
    record: Recorder, utc: datetime, open_: bool
) -> None:
    clock = Clock(utc)
    allowlist = AllowList(clock=clock)
    for event in (created(), started(), allowed()):
        allowlist.apply(record("acme", event))
    for campaign in ("cmp-1", None):  # Originate names it; a softphone dial does not
        decision = allowlist.check("acme", campaign, NUMBER)
        if open_:
            assert isinstance(decision, Allowed)
        else:
            assert reason_of(decision) is RefusalReason.OUTSIDE_CALLING_WINDOW


def test_a_window_past_midnight_belongs_to_the_day_it_opened(record: Recorder) -> None:
    clock = Clock(datetime(2026, 5, 8, 22, 30, tzinfo=UTC))  # Friday 23:30 local
    allowlist = AllowList(clock=clock)
    friday_night = created(start="22:00", end="02:00", days=("fri",))
    for event in (friday_night, started(), allowed()):
        allowlist.apply(record("acme", event))
    assert isinstance(allowlist.check("acme", "cmp-1", NUMBER), Allowed)
    clock.now = datetime(2026, 5, 9, 0, 30, tzinfo=UTC)  # Saturday 01:30 local: still Friday's
    assert isinstance(allowlist.check("acme", "cmp-1", NUMBER), Allowed)
    clock.now = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)  # Saturday 02:00 local: closed
    assert reason_of(allowlist.check("acme", "cmp-1", NUMBER)) is (
        RefusalReason.OUTSIDE_CALLING_WINDOW
    )
    clock.now = datetime(2026, 5, 9, 21, 30, tzinfo=UTC)  # Saturday 22:30: not a Friday
    assert reason_of(allowlist.check("acme", "cmp-1", NUMBER)) is (
        RefusalReason.OUTSIDE_CALLING_WINDOW
    )


def test_an_agent_dial_passes_when_any_active_campaign_of_the_number_is_open(
    record: Recorder,
) -> None:
    clock = Clock(datetime(2026, 5, 4, 20, 0, tzinfo=UTC))  # Monday 21:00 local
    allowlist = AllowList(clock=clock)
    for event in (
        created("day"),
        created("evening", start="18:00", end="22:00", days=("mon",)),
        started("day"),
        started("evening"),
        allowed(campaign="day", contact="ct-d"),
        allowed(campaign="evening", contact="ct-e"),
    ):
        allowlist.apply(record("acme", event))
    decision = allowlist.check("acme", None, NUMBER)
    assert isinstance(decision, Allowed) and decision.campaign_id == "evening"
    assert reason_of(allowlist.check("acme", "day", NUMBER)) is (
        RefusalReason.OUTSIDE_CALLING_WINDOW
    )


def test_a_window_in_an_unknown_time_zone_is_never_open(record: Recorder) -> None:
    allowlist = AllowList(clock=Clock(T))
    for event in (created(zone="Mars/Olympus_Mons"), started(), allowed()):
        allowlist.apply(record("acme", event))
    assert reason_of(allowlist.check("acme", "cmp-1", NUMBER)) is (
        RefusalReason.OUTSIDE_CALLING_WINDOW
    )
