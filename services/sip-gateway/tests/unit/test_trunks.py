"""Trunks: bandwidth per call, validated configuration, and classification of inbound INVITEs."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from plateau_contracts.events.calls import CallRejected, RejectReason
from plateau_sip_gateway.domain.trunks import (
    BandwidthCapacity,
    Codec,
    InboundAccepted,
    InboundRefused,
    LinkLayer,
    TrunkConfig,
    TrunkDirectory,
    TrunksConfig,
    call_bandwidth_bps,
    calls_for_bandwidth,
)

pytestmark = pytest.mark.unit


def trunk(name: str = "mno", **overrides: object) -> TrunkConfig:
    fields: dict[str, object] = {
        "name": name,
        "tenant": "acme",
        "source_networks": ["192.0.2.0/28"],
        "entry_points": {"+242053000100": "sales"},
        "capacity": {"kind": "calls", "max_calls": 30},
    }
    fields.update(overrides)
    return TrunkConfig.model_validate(fields)


# -- bandwidth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "ptime", "ip_version", "link", "bps"),
    [
        # (payload + RTP 12 + UDP 8 + IP 20/40 + link) x 8 x packets per second
        (Codec.G711, 20, 4, LinkLayer.ETHERNET, 87_200),  # (160+40+18) x 8 x 50
        (Codec.G711, 20, 4, LinkLayer.NONE, 80_000),  # (160+40) x 8 x 50
        (Codec.G711, 20, 4, LinkLayer.ETHERNET_VLAN, 88_800),  # (160+40+22) x 8 x 50
        (Codec.G711, 20, 6, LinkLayer.ETHERNET, 95_200),  # (160+60+18) x 8 x 50
        (Codec.G711, 10, 4, LinkLayer.ETHERNET, 110_400),  # (80+40+18) x 8 x 100
        (Codec.G729, 20, 4, LinkLayer.ETHERNET, 31_200),  # (20+40+18) x 8 x 50
        (Codec.G729, 40, 4, LinkLayer.ETHERNET, 19_600),  # (40+40+18) x 8 x 25
    ],
)
def test_bandwidth_per_call(
    codec: Codec, ptime: int, ip_version: int, link: LinkLayer, bps: int
) -> None:
    assert call_bandwidth_bps(codec, ptime, ip_version=ip_version, link=link) == pytest.approx(bps)


@pytest.mark.parametrize(
    ("bandwidth_bps", "codec", "ptime", "calls"),
    [
        (4_000_000, Codec.G711, 20, 45),  # 4 Mbit/s / 87.2 kbit/s = 45.9 (DESIGN §4)
        (4_000_000, Codec.G711, 30, 50),  # 79.47 kbit/s per call
        (4_000_000, Codec.G729, 20, 128),  # 31.2 kbit/s per call
        (2_048_000, Codec.G711, 20, 23),  # an E1's worth of IP bandwidth
        (87_200, Codec.G711, 20, 1),
        (87_199, Codec.G711, 20, 0),
    ],
)
def test_calls_for_bandwidth(bandwidth_bps: int, codec: Codec, ptime: int, calls: int) -> None:
    assert calls_for_bandwidth(bandwidth_bps, codec, ptime) == calls


@pytest.mark.parametrize("ptime", [0, 5, 25, 130])
def test_unusable_ptime_is_refused(ptime: int) -> None:
    with pytest.raises(ValueError, match="ptime"):
        call_bandwidth_bps(Codec.G711, ptime)


# -- configuration ------------------------------------------------------------------------


def test_capacity_from_bandwidth() -> None:
    config = trunk(capacity={"kind": "bandwidth", "bandwidth_kbps": 4000})
    assert isinstance(config.capacity, BandwidthCapacity)
    assert config.max_calls == 45


def test_entry_points_are_normalised_to_e164() -> None:
    config = trunk(entry_points={"05 300 01 00": "sales", "+242053000200": "support"})
    assert dict(config.entry_points) == {"+242053000100": "sales", "+242053000200": "support"}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"source_networks": ["10.0.0.1/24"]}, "source_networks", "did you mean 10.0.0.0/24"),
        ({"source_networks": ["not-a-network"]}, "source_networks", "not a network"),
        ({"source_networks": []}, "source_networks", "at least 1"),
        ({"entry_points": {"sales-line": "sales"}}, "entry_points", "sales-line"),
        ({"name": "MNO Trunk"}, "name", "lowercase"),
        ({"region": "congo"}, "region", "two-letter"),
        ({"capacity": {"kind": "calls", "max_calls": 0}}, "capacity.calls.max_calls", ""),
        (
            {"capacity": {"kind": "bandwidth", "bandwidth_kbps": 50}},
            "capacity.bandwidth",
            "carries no g711 call",
        ),
        (
            {"capacity": {"kind": "bandwidth", "bandwidth_kbps": 4000, "ptime_ms": 25}},
            "capacity.bandwidth",
            "ptime",
        ),
        ({"capacity": {"kind": "erlangs"}}, "capacity", "does not match any of the expected"),
        ({"retry_after_s": 0}, "retry_after_s", ""),
        ({"options_interval_s": -1}, "options_interval_s", ""),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_configuration_errors_name_the_field(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        trunk(**overrides)
    rendered = str(caught.value)
    assert field in rendered
    assert message in rendered


def test_trunk_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="'mno' is used twice"):
        TrunksConfig(trunks=(trunk("mno"), trunk("mno", source_networks=["198.51.100.0/24"])))


def test_the_same_network_on_two_trunks_is_ambiguous() -> None:
    with pytest.raises(ValidationError, match=r"192\.0\.2\.0/28 is on trunks 'a' and 'b'"):
        TrunksConfig(trunks=(trunk("a"), trunk("b")))


def test_a_number_cannot_lead_to_two_tenants() -> None:
    other = trunk("b", tenant="globex", source_networks=["198.51.100.0/24"])
    with pytest.raises(ValidationError, match=r"\+242053000100 leads to tenant 'acme'"):
        TrunksConfig(trunks=(trunk("a"), other))


def test_two_carriers_may_deliver_the_same_number() -> None:
    backup = trunk("backup", source_networks=["198.51.100.0/24"])
    assert len(TrunkDirectory([trunk("a"), backup])) == 2


# -- classification -----------------------------------------------------------------------


@pytest.fixture
def directory() -> TrunkDirectory:
    return TrunkDirectory(
        [
            trunk(
                "wholesale",
                source_networks=["10.0.0.0/16", "2001:db8::/32"],
                entry_points={"+242053000100": "sales"},
            ),
            trunk(
                "mno",
                tenant="globex",
                source_networks=["10.0.5.0/24", "2001:db8:5::/48"],
                entry_points={"+242053000999": "support"},
            ),
            trunk("off", enabled=False, source_networks=["203.0.113.0/24"]),
        ]
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("10.0.0.1", "wholesale"),
        ("10.0.5.7", "mno"),  # inside both: the /24 is more specific than the /16
        ("10.0.6.7", "wholesale"),
        ("2001:db8:1::1", "wholesale"),
        ("2001:db8:5::1", "mno"),
        ("[2001:db8:5::1]", "mno"),
        ("::ffff:10.0.5.7", "mno"),  # a dual-stack socket's view of an IPv4 peer
        (ipaddress.ip_address("10.0.0.9"), "wholesale"),
        ("10.1.0.1", None),
        ("2001:db9::1", None),
        ("::ffff:10.1.0.1", None),
        ("not an address", None),
    ],
)
def test_source_to_trunk(
    directory: TrunkDirectory, source: str | ipaddress.IPv4Address, expected: str | None
) -> None:
    found = directory.trunk_for_source(source)
    assert (found.name if found else None) == expected


def test_a_foreign_source_is_refused_with_403(directory: TrunkDirectory) -> None:
    decision = directory.classify("198.51.100.7", "+242053000100")
    assert isinstance(decision, InboundRefused)
    assert (decision.reason, decision.sip_code, decision.trunk) == (
        RejectReason.NOT_A_TRUNK,
        403,
        None,
    )
    event = decision.to_event(
        "c-1", source="198.51.100.7:5060", ani="+242066123456", sip_call_id="abc@x"
    )
    assert isinstance(event, CallRejected)
    assert event.reason is RejectReason.NOT_A_TRUNK
    assert (event.sip_code, event.source, event.trunk) == (403, "198.51.100.7:5060", None)
    assert event.stream_id() == "call-c-1"


@pytest.mark.parametrize("dnis", ["+242053000100", "242053000100", "053000100", "05 300 01 00"])
def test_a_trunk_number_in_any_format_reaches_its_entry_point(
    directory: TrunkDirectory, dnis: str
) -> None:
    decision = directory.classify("10.0.0.1", dnis)
    assert isinstance(decision, InboundAccepted)
    assert (decision.trunk.name, decision.tenant, decision.dnis, decision.entry_point) == (
        "wholesale",
        "acme",
        "+242053000100",
        "sales",
    )


@pytest.mark.parametrize("dnis", ["+242053000999", "+242053000555", "support", "", None])
def test_an_unknown_number_is_refused_with_404(directory: TrunkDirectory, dnis: str | None) -> None:
    # +242053000999 is a number of another trunk: a carrier reaches only its own numbers.
    decision = directory.classify("10.0.0.1", dnis)
    assert isinstance(decision, InboundRefused)
    assert (decision.reason, decision.sip_code, decision.trunk, decision.tenant) == (
        RejectReason.UNKNOWN_DNIS,
        404,
        "wholesale",
        "acme",
    )


def test_a_disabled_trunk_answers_503_without_retry_after(directory: TrunkDirectory) -> None:
    decision = directory.classify("203.0.113.9", "+242053000100")
    assert isinstance(decision, InboundRefused)
    assert (decision.reason, decision.sip_code, decision.retry_after_s) == (
        RejectReason.TRUNK_DISABLED,
        503,
        None,
    )


def test_outbound_calls_leave_on_the_tenants_first_enabled_trunk_with_an_address() -> None:
    directory = TrunkDirectory(
        [
            trunk("inbound-only", source_networks=["10.0.0.0/24"]),
            trunk(
                "off",
                enabled=False,
                source_networks=["10.0.1.0/24"],
                outbound=[{"host": "10.0.1.1"}],
            ),
            trunk("out", source_networks=["10.0.2.0/24"], outbound=[{"host": "10.0.2.1"}]),
            trunk(
                "other-tenant",
                tenant="globex",
                source_networks=["10.0.3.0/24"],
                entry_points={"+242053000999": "support"},
                outbound=[{"host": "10.0.3.1"}],
            ),
        ]
    )
    found = directory.outbound_for("acme")
    assert found is not None and found.name == "out"
    assert directory.outbound_for("nobody") is None


def test_an_entry_point_is_found_from_a_number_in_any_format(directory: TrunkDirectory) -> None:
    wholesale = directory.get("wholesale")
    assert wholesale is not None
    assert directory.entry_point(wholesale, "053000100") == "sales"
    assert directory.entry_point(wholesale, "+242053000100") == "sales"
    assert directory.entry_point(wholesale, "+242053000999") is None
    assert directory.entry_point(wholesale, "not a number") is None
