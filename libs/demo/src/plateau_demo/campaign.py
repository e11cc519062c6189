"""The demo's outbound campaign, set up the way an operator would: created, given a customer
file of fictitious Congolese numbers, and started through the dialer's ``Campaigns`` gRPC
API. Every step is idempotent, so a demo started again on the same data goes on with it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc

from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc
from plateau_demo.model import customer_file

log = logging.getLogger(__name__)

CAMPAIGN_ID = "demo-renewals"
QUEUE_ID = "q-general"
CONTACTS = 120
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class DemoCampaign:
    """Creates, fills and starts the demo campaign; pauses it when the demo stops, so a
    later ``plateau up`` does not dial customers nobody simulates."""

    def __init__(self, channel: grpc.aio.Channel, tenant: str) -> None:
        self.stub = pb_grpc.CampaignsStub(channel)
        self.metadata = (("x-plateau-tenant", tenant), ("x-plateau-user", "plateau-demo"))

    def settings(self) -> pb.CampaignSettings:
        settings = pb.CampaignSettings(
            name="Contract renewals (demo)",
            queue_id=QUEUE_ID,
            pacing=pb.PACING_MODE_PROGRESSIVE,
            max_abandon_rate=0.03,
            max_attempts=3,
            calling_window=pb.CallingWindow(start="00:00", end="23:59", days=EVERY_DAY),
        )
        settings.retry_after.FromTimedelta(timedelta(minutes=2))
        settings.ring_timeout.FromTimedelta(timedelta(seconds=15))
        return settings

    async def start(self) -> list[str]:
        """Make the campaign run; lines saying what was done."""
        lines = []
        meta, timeout = self.metadata, 30
        create = pb.CreateCampaignRequest(campaign_id=CAMPAIGN_ID, settings=self.settings())
        campaign = await self.stub.CreateCampaign(create, metadata=meta, timeout=timeout)
        data = customer_file(CONTACTS)

        async def parts() -> AsyncIterator[pb.ImportContactsRequest]:
            header = pb.ImportHeader(
                campaign_id=CAMPAIGN_ID,
                filename="demo-customers.csv",
                sha256=hashlib.sha256(data).hexdigest(),
            )
            yield pb.ImportContactsRequest(header=header)
            yield pb.ImportContactsRequest(chunk=data)

        report = await self.stub.ImportContacts(parts(), metadata=meta, timeout=timeout)
        lines.append(
            f"campaign {CAMPAIGN_ID}: customer file of {report.rows_accepted} fictitious "
            f"numbers is list version {report.list_version}"
        )
        get = pb.GetCampaignRequest(campaign_id=CAMPAIGN_ID)
        campaign = await self.stub.GetCampaign(get, metadata=meta, timeout=timeout)
        if campaign.state == pb.CAMPAIGN_STATE_CREATED:
            start = pb.StartCampaignRequest(campaign_id=CAMPAIGN_ID)
            campaign = await self.stub.StartCampaign(start, metadata=meta, timeout=timeout)
        elif campaign.state == pb.CAMPAIGN_STATE_PAUSED:
            resume = pb.ResumeCampaignRequest(campaign_id=CAMPAIGN_ID)
            campaign = await self.stub.ResumeCampaign(resume, metadata=meta, timeout=timeout)
        state = pb.CampaignState.Name(campaign.state).removeprefix("CAMPAIGN_STATE_").lower()
        lines.append(
            f"campaign {CAMPAIGN_ID}: {state}, progressive dialling into {QUEUE_ID}, "
            f"{campaign.contacts_remaining} of {campaign.contacts_total} contacts to call"
        )
        return lines

    async def pause(self) -> None:
        request = pb.PauseCampaignRequest(campaign_id=CAMPAIGN_ID, reason="plateau demo stopped")
        try:
            await self.stub.PauseCampaign(request, metadata=self.metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.debug("pausing the demo campaign: %s", exc.details())
