"""Outbound dials are checked against the allow-list, fed from ``plateau.dialer`` over the
real broker (this test publishes the dialer's facts itself): ``Originate`` to a number
outside the file, or listed do-not-call after its file was imported, is PERMISSION_DENIED,
an agent's softphone dialling an arbitrary number gets 403; all are recorded as
``call.dial_refused``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from sip_gateway_harness import TENANT, RunningGateway, run_sipp, running_gateway, wait_until, write

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.dialer import (
    CampaignStarted,
    ContactAllowed,
    DoNotCallNumberAdded,
)
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_runtime.bus import ensure_topics
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.adapters.allowlist_feed import allowlist_consumer, load_allowlist
from plateau_sip_gateway.domain.allowlist import Allowed, AllowList, RefusalReason, Refused

pytestmark = pytest.mark.integration

EXTENSION = "1003"
PASSWORD = secrets.token_urlsafe(12)
ALLOWED = "+242066123456"
CAMPAIGN = f"cmp-{secrets.token_hex(3)}"


async def publish(bootstrap: str, tenant: str, events: list[StreamedEvent]) -> None:
    """Publish dialer facts as the dialer's relay would (key = stream, JSON envelope)."""
    await ensure_topics(bootstrap, ["plateau.dialer"])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        versions: dict[str, int] = {}
        now = datetime.now(UTC)
        for event in events:
            stream = event.stream_id(tenant)
            versions[stream] = versions.get(stream, 0) + 1
            envelope = Envelope(
                event_id=new_event_id(),
                type=event.event_type,
                schema_version=event.schema_version,
                stream=stream,
                stream_version=versions[stream],
                tenant=tenant,
                occurred_at=now,
                recorded_at=now,
                data=event.model_dump(mode="json"),
            )
            await producer.send_and_wait(
                "plateau.dialer", envelope.to_message(), key=stream.encode()
            )
    finally:
        await producer.stop()


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    broker: EmbeddedBroker,
    tmp_path: Path,
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool, tmp_path, passwords={EXTENSION: PASSWORD}, schema=service_schema.schema
    ) as running:
        feed = allowlist_consumer(service_pool, broker.bootstrap, running.gateway.allowlist)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            await publish(
                broker.bootstrap,
                TENANT,
                [
                    CampaignStarted(campaign_id=CAMPAIGN, requested_by="supervisor"),
                    ContactAllowed(
                        contact_id="ct-1", campaign_id=CAMPAIGN, number=ALLOWED, list_version=1
                    ),
                ],
            )

            async def fed() -> bool:
                decision = running.gateway.allowlist.check(TENANT, CAMPAIGN, ALLOWED)
                return isinstance(decision, Allowed)

            await wait_until(fed, 30, "the allow-list fed from plateau.dialer")
            yield running
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await task


async def refusals(gw: RunningGateway) -> list[dict[str, object]]:
    found = []
    for stream, types in (await gw.streams()).items():
        if types == ["call.dial_refused"]:
            found.extend(await gw.events(stream))
    return found


async def test_originate_to_a_number_outside_the_file_is_denied_and_recorded(
    gw: RunningGateway,
) -> None:
    request = pb.OriginateRequest(
        request_id="attempt-1",
        campaign_id=CAMPAIGN,
        contact_id="ct-9",
        attempt_id="attempt-1",
        number="+242066999999",
        requested_by=pb.REQUESTER_DIALER,
        requester="dialer",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.stub.Originate(request, metadata=(("x-plateau-tenant", TENANT),), timeout=10)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "+242066999999" in (refused.value.details() or "")
    trailing = dict(refused.value.trailing_metadata() or ())
    assert trailing["x-plateau-refusal-reason"] == "not_in_contact_list"

    [event] = await refusals(gw)
    assert event["number"] == "+242066999999"
    assert event["reason"] == "not_in_contact_list"
    assert event["requested_by"] == "dialer" and event["campaign_id"] == CAMPAIGN


def softphone_dials(number: str) -> str:
    """An agent's softphone: REGISTER with digest, then INVITE ``number`` (407, retry).

    sipp computes every digest over one URI (``-auth_uri``), so both requests use the
    dialled number's URI as their Request-URI.
    """

    def message(method: str, cseq: int, uri: str, to: str, auth: bool) -> str:
        credentials = f"[authentication username={EXTENSION} password={PASSWORD}]\n" if auth else ""
        extra = (
            f"Contact: <sip:{EXTENSION}@[local_ip]:[local_port]>\nExpires: 3600\n"
            if method == "REGISTER"
            else f"Contact: <sip:{EXTENSION}@[local_ip]:[local_port]>\n"
        )
        return f"""<send retrans="500"><![CDATA[
{method} {uri} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: {to}
Call-ID: [call_id]
CSeq: {cseq} {method}
{extra}{credentials}Max-Forwards: 70
Content-Length: 0
]]></send>"""

    aor = f"<sip:{EXTENSION}@[remote_ip]>"
    target = f"sip:{number}@[remote_ip]:[remote_port]"

    def ack(cseq: int) -> str:
        return f"""<send><![CDATA[
ACK {target} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <{target}>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
]]></send>"""

    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone dials {number}">
{message("REGISTER", 1, target, aor, False)}
<recv response="401" auth="true"/>
{message("REGISTER", 2, target, aor, True)}
<recv response="200"/>
{message("INVITE", 3, target, f"<{target}>", False)}
<recv response="100" optional="true"/>
<recv response="407" auth="true"/>
{ack(3)}
{message("INVITE", 4, target, f"<{target}>", True)}
<recv response="100" optional="true"/>
<recv response="403"/>
{ack(4)}
</scenario>"""


async def test_a_softphone_dialling_an_arbitrary_number_gets_403_recorded(
    gw: RunningGateway, tmp_path: Path
) -> None:
    scenario = write(tmp_path, "dial.xml", softphone_dials("066777888"))
    auth_uri = f"066777888@{gw.sip_target}"
    code, output = await run_sipp(
        ["-sf", scenario, "-m", "1", "-auth_uri", auth_uri, gw.sip_target], tmp_path
    )
    assert code == 0, f"the softphone's dial was not refused with 403:\n{output}"
    [event] = await refusals(gw)
    assert event["requested_by"] == "agent_softphone" and event["requester"] == EXTENSION
    assert event["sip_code"] == 403
    assert event["reason"] == "not_in_contact_list"


async def test_the_allow_list_is_kept_and_reloaded_after_a_restart(
    gw: RunningGateway, service_pool: asyncpg.Pool
) -> None:
    # A restarted gateway starts from an empty list and reads back what it kept.
    restarted = AllowList()
    assert isinstance(restarted.check(TENANT, CAMPAIGN, ALLOWED), Refused)
    assert await load_allowlist(service_pool, restarted) == 2
    allowed = restarted.check(TENANT, CAMPAIGN, ALLOWED)
    assert isinstance(allowed, Allowed) and allowed.contact_id == "ct-1"
    assert isinstance(restarted.check(TENANT, CAMPAIGN, "+242066999999"), Refused)


async def test_a_number_listed_do_not_call_after_its_import_is_denied_and_recorded(
    gw: RunningGateway, broker: EmbeddedBroker
) -> None:
    listed = "+242066123457"
    await publish(
        broker.bootstrap,
        TENANT,
        [
            ContactAllowed(contact_id="ct-2", campaign_id=CAMPAIGN, number=listed, list_version=1),
            DoNotCallNumberAdded(number=listed, source="manual", added_by="ops"),
        ],
    )

    async def listed_refused() -> bool:
        decision = gw.gateway.allowlist.check(TENANT, CAMPAIGN, listed)
        return isinstance(decision, Refused) and decision.reason is RefusalReason.DO_NOT_CALL

    await wait_until(listed_refused, 30, "the do-not-call fact reaching the allow-list")
    request = pb.OriginateRequest(
        request_id="attempt-2",
        campaign_id=CAMPAIGN,
        contact_id="ct-2",
        attempt_id="attempt-2",
        number=listed,
        requested_by=pb.REQUESTER_INTEGRATOR,
        requester="crm",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.stub.Originate(request, metadata=(("x-plateau-tenant", TENANT),), timeout=10)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    trailing = dict(refused.value.trailing_metadata() or ())
    assert trailing["x-plateau-refusal-reason"] == "do_not_call"
    [event] = await refusals(gw)
    assert event["number"] == listed and event["reason"] == "do_not_call"
    assert event["requested_by"] == "integrator"
