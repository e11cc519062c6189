"""Events of call legs, recorded by the sip-gateway (topic ``plateau.calls``).

A call's stream is ``call-<call id>``; every leg fact of that call lands in it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from plateau_contracts.catalogue import event
from plateau_contracts.envelope import EventData
from plateau_contracts.topics import Topic

Direction = Literal["inbound", "outbound"]


class CallEvent(EventData):
    """Common shape of call events: they all name the call."""

    topic: ClassVar[str] = Topic.CALLS
    call_id: str = Field(description="Plateau call id (the stream is `call-<call_id>`).")


@event
class CallOffered(CallEvent):
    """A carrier offered an inbound call on a trunk and the gateway admitted it."""

    event_type: ClassVar[str] = "call.offered"
    direction: Direction = "inbound"
    ani: str = Field(
        description="Calling number (caller id) as received.", examples=["+242066123456"]
    )
    dnis: str = Field(description="Dialled number (entry point).", examples=["+242053000100"])
    trunk: str = Field(description="Name of the trunk the call arrived on.")
    sip_call_id: str = Field(description="SIP Call-ID of the carrier leg.")
