"""Bindings other replicas hold: how they travel as JSON, are mirrored, and are looked up
together with this replica's own registrar."""

from __future__ import annotations

import json

import pytest

from plateau_sip_gateway.bootstrap import Gateway, allowlist_group
from plateau_sip_gateway.domain.peers import (
    PeerBindings,
    SharedBindings,
    binding_from_json,
    binding_to_json,
)
from plateau_sip_gateway.domain.registrar import (
    Binding,
    ContactRequest,
    RegisterRequest,
    Registrar,
)
from plateau_sip_gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

NOW = 1_000_000.0


def binding(
    aor: str = "1001",
    contact: str = "sip:1001@10.0.0.5:5062",
    *,
    expires_at: float = NOW + 60,
    updated_at: float = NOW,
    q: float | None = None,
    source: tuple[str, int] | None = ("10.0.0.5", 5062),
) -> Binding:
    return Binding(
        aor=aor,
        contact=contact,
        expires_at=expires_at,
        call_id="reg-1",
        cseq=2,
        updated_at=updated_at,
        q=q,
        user_agent="sipp",
        source=source,
        transport="UDP",
    )


def test_a_binding_survives_the_trip_through_json() -> None:
    original = binding(q=0.5)
    text = json.dumps(binding_to_json(original))
    assert binding_from_json(json.loads(text)) == original


def test_every_field_of_a_binding_is_written() -> None:
    written = binding_to_json(binding())
    assert set(written) == set(Binding.__dataclass_fields__)
    assert written["source"] == ["10.0.0.5", 5062]


def test_a_field_this_replica_does_not_know_is_ignored_and_a_missing_optional_one_defaults() -> (
    None
):
    data = binding_to_json(binding())
    data["path"] = ["<sip:kamailio;lr>"]  # from a newer replica
    del data["user_agent"]
    restored = binding_from_json(data)
    assert restored.user_agent is None
    assert restored.contact == "sip:1001@10.0.0.5:5062"


def test_a_row_without_a_required_field_is_refused() -> None:
    data = binding_to_json(binding())
    del data["contact"]
    with pytest.raises(ValueError, match="not a stored binding"):
        binding_from_json(data)


def test_peers_mirror_other_replicas_and_skip_their_own() -> None:
    peers = PeerBindings("gw-0")
    peers.replace("1001", {"gw-0": [binding(contact="sip:mine@h")], "gw-1": [binding()]})
    assert [b.contact for b in peers.lookup("1001", NOW)] == ["sip:1001@10.0.0.5:5062"]
    assert peers.bound_from(("10.0.0.5", 5062), NOW)
    assert not peers.bound_from(("10.0.0.9", 5062), NOW)


def test_a_change_replaces_an_extension_and_none_forgets_it() -> None:
    peers = PeerBindings("gw-0")
    peers.replace("1001", {"gw-1": [binding()]})
    peers.replace("1001", {})
    assert peers.lookup("1001", NOW) == ()
    assert not peers.bound_from(("10.0.0.5", 5062), NOW)
    assert peers.extensions() == ()


def test_lapsed_peer_bindings_are_not_found() -> None:
    peers = PeerBindings("gw-0")
    peers.replace("1001", {"gw-1": [binding(expires_at=NOW - 1)]})
    assert peers.lookup("1001", NOW) == ()
    assert not peers.bound_from(("10.0.0.5", 5062), NOW)


def test_a_full_load_replaces_the_whole_mirror() -> None:
    peers = PeerBindings("gw-0")
    peers.replace("1002", {"gw-1": [binding(aor="1002", source=("10.0.0.7", 5060))]})
    peers.load([("gw-2", binding()), ("gw-0", binding(aor="1003"))])
    assert peers.extensions() == ("1001",)
    assert not peers.bound_from(("10.0.0.7", 5060), NOW)
    assert len(peers.lookup("1001", NOW)) == 1


def register(registrar: Registrar, contact: str, source: tuple[str, int]) -> None:
    registrar.register(
        RegisterRequest(
            aor="1001",
            call_id="local-reg",
            cseq=1,
            contacts=(ContactRequest(contact, expires=120),),
            source=source,
        ),
        NOW - 10,
    )


def test_shared_lookup_merges_local_and_peer_bindings_preferred_first() -> None:
    local = Registrar()
    register(local, "sip:1001@10.0.0.1:5060", ("10.0.0.1", 5060))
    peers = PeerBindings("gw-0")
    peers.replace("1001", {"gw-1": [binding(updated_at=NOW)]})
    shared = SharedBindings(local, peers)
    found = shared.lookup("1001", NOW)
    # The peer's is more recent: first, as the registrar orders its own.
    assert [b.contact for b in found] == ["sip:1001@10.0.0.5:5062", "sip:1001@10.0.0.1:5060"]
    assert shared.bound_from(("10.0.0.1", 5060), NOW)
    assert shared.bound_from(("10.0.0.5", 5062), NOW)


def test_without_peers_shared_lookup_is_the_registrar_alone() -> None:
    local = Registrar()
    register(local, "sip:1001@10.0.0.1:5060", ("10.0.0.1", 5060))
    shared = SharedBindings(local)
    assert shared.lookup("1001", NOW) == local.lookup("1001", NOW)
    assert not shared.bound_from(("10.0.0.5", 5062), NOW)


def test_a_replica_name_needs_the_address_peers_reach_it_at() -> None:
    with pytest.raises(ValueError, match="PLATEAU_SIP_REPLICA_ADDRESS"):
        GatewaySettings(sip_replica="sip-gateway-0")
    with pytest.raises(ValueError, match="PLATEAU_SIP_REPLICA"):
        GatewaySettings(sip_replica_address="sip-gateway-0.sip-gateway-pods:50051")
    single = GatewaySettings()
    assert not single.clustered
    clustered = GatewaySettings(
        sip_replica="sip-gateway-0", sip_replica_address="sip-gateway-0.sip-gateway-pods:50051"
    )
    assert clustered.clustered


def test_the_registrar_service_tells_each_change_of_an_extension() -> None:
    from test_registrar_service import PHONE, Clock, authorization, make_service
    from test_registrar_service import register as register_request

    clock = Clock()
    service = make_service(clock)
    changes: list[tuple[str, tuple[str, ...]]] = []
    service.on_change = lambda aor, held: changes.append((aor, tuple(b.contact for b in held)))
    challenge, _ = service.handle(register_request(), PHONE, "udp")
    assert changes == []  # a challenge changes nothing
    service.handle(register_request(cseq=2, authorization=authorization(challenge)), PHONE, "udp")
    assert changes == [("1001", ("sip:1001@192.0.2.10:5062;transport=udp",))]
    clock.now += 121
    service.sweep()
    assert changes[-1] == ("1001", ())


def test_each_replica_follows_the_allow_list_in_its_own_group() -> None:
    single = GatewaySettings()
    replica = GatewaySettings(sip_replica="sip-gateway-1", sip_replica_address="gw-1:50051")
    assert allowlist_group(single) == "sip-gateway-allowlist"
    assert allowlist_group(replica) == "sip-gateway-allowlist-sip-gateway-1"


def test_a_replica_cannot_be_built_without_the_shared_database() -> None:
    from plateau_runtime.eventstore import EventStore

    replica = GatewaySettings(sip_replica="sip-gateway-1", sip_replica_address="gw-1:50051")
    store = EventStore(None, "sip_gateway")  # type: ignore[arg-type]  # never used
    with pytest.raises(ValueError, match="pass pool"):
        Gateway.build(replica, store, passwords={})
