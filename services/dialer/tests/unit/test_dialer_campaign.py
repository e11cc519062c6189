"""The campaign's pure fold and commands: life cycle, list versions, stable contact ids."""

from __future__ import annotations

from datetime import time

import pytest

from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    ContactListImported,
    PacingMode,
)
from plateau_dialer.domain.campaign import (
    Campaign,
    CampaignConflictError,
    CampaignError,
    CampaignNotFoundError,
    CampaignStatus,
    contact_id_for,
    plan_list,
)

pytestmark = pytest.mark.unit

CREATED = CampaignCreated(
    campaign_id="c1",
    name="Renewals",
    queue_id="q",
    pacing=PacingMode.PROGRESSIVE,
    max_abandon_rate=0.03,
    max_attempts=3,
    retry_after_s=60,
    ring_timeout_s=25,
    calling_window=CallingWindow(
        start=time(8), end=time(20), days=("mon",), time_zone="Africa/Brazzaville"
    ),
)


def imported(sha: str) -> ContactListImported:
    return ContactListImported(
        campaign_id="c1",
        list_version=1,
        filename="f.csv",
        sha256=sha * 64,
        encoding="utf-8",
        delimiter=";",
        rows_total=2,
        rows_accepted=2,
        rows_rejected=0,
        rows_duplicate=0,
        imported_by="test",
    )


def run(campaign: Campaign, events: list) -> Campaign:  # type: ignore[type-arg]
    for event in events:
        campaign = campaign.evolve(event)
    return campaign


def test_create_is_idempotent_and_refuses_other_settings() -> None:
    campaign = run(Campaign("c1"), Campaign("c1").create(CREATED))
    assert campaign.status is CampaignStatus.CREATED
    assert campaign.create(CREATED) == []
    with pytest.raises(CampaignConflictError):
        campaign.create(CREATED.model_copy(update={"name": "Other"}))


def test_commands_on_a_missing_campaign_are_not_found() -> None:
    with pytest.raises(CampaignNotFoundError):
        Campaign("c1").start("me")


def test_start_needs_a_list_and_the_life_cycle_is_legal_only() -> None:
    campaign = run(Campaign("c1"), [CREATED])
    with pytest.raises(CampaignError, match="import a customer file"):
        campaign.start("me")
    plan = plan_list("t", campaign, imported("a"), ["+242066123456"], {})
    campaign = run(campaign, campaign.import_list(plan))
    campaign = run(campaign, campaign.start("me"))
    assert campaign.status is CampaignStatus.RUNNING
    assert campaign.start("me") == []  # already running
    assert campaign.resume("me") == []
    campaign = run(campaign, campaign.pause("me", "lunch"))
    with pytest.raises(CampaignError):
        campaign.start("me")  # a paused campaign is resumed, not started
    campaign = run(campaign, campaign.stop("me", None, {"+242066123456": "id-1"}))
    assert campaign.status is CampaignStatus.STOPPED
    with pytest.raises(CampaignError):
        campaign.resume("me")
    with pytest.raises(CampaignError, match="stopped"):
        campaign.import_list(plan_list("t", campaign, imported("b"), [], {}))


def test_a_new_list_allows_new_numbers_and_withdraws_the_missing_ones() -> None:
    campaign = run(Campaign("c1"), [CREATED])
    first = plan_list("t", campaign, imported("a"), ["+242066123456", "+242055123456"], {})
    assert first.imported.list_version == 1
    assert [a.number for a in first.allowed] == ["+242055123456", "+242066123456"]
    campaign = run(campaign, campaign.import_list(first))
    previously = {a.number: a.contact_id for a in first.allowed}
    second = plan_list("t", campaign, imported("b"), ["+242066123456", "+242044444444"], previously)
    assert second.imported.list_version == 2
    assert second.imported.contacts_withdrawn == 1
    assert [a.number for a in second.allowed] == ["+242044444444"]
    assert [(w.number, w.contact_id) for w in second.withdrawn] == [
        ("+242055123456", previously["+242055123456"])
    ]
    campaign = run(campaign, campaign.import_list(second))
    # The first file again: recorded before, so nothing new.
    assert campaign.import_list(plan_list("t", campaign, imported("a"), [], previously)) == []


def test_a_replayed_event_changes_nothing() -> None:
    once = Campaign("c1").evolve(CREATED, 1)
    assert once.evolve(CREATED.model_copy(update={"name": "X"}), 1) == once


def test_contact_ids_are_stable_per_campaign_number_and_tenant() -> None:
    one = contact_id_for("t1", "c1", "+242066123456")
    assert one == contact_id_for("t1", "c1", "+242066123456")
    assert one != contact_id_for("t2", "c1", "+242066123456")
    assert one != contact_id_for("t1", "c2", "+242066123456")
