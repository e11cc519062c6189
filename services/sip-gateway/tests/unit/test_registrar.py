"""The registrar's bindings (RFC 3261 §10.3) and the facts it records."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_contracts.events.calls import ExtensionRegistered, ExtensionUnregistered
from plateau_sip_gateway.domain.registrar import (
    ContactRequest,
    Registered,
    RegisterRefused,
    RegisterRequest,
    Registrar,
    RegistrarPolicy,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0
PHONE = "sip:1001@192.0.2.10:5062"
DESK = "sip:1001@192.0.2.11:5060"


def req(
    *contacts: str | ContactRequest, cseq: int = 1, call_id: str = "c1", **kw
) -> RegisterRequest:
    items = tuple(c if isinstance(c, ContactRequest) else ContactRequest(c) for c in contacts)
    return RegisterRequest(aor="1001", call_id=call_id, cseq=cseq, contacts=items, **kw)


def ok(result: object) -> Registered:
    assert isinstance(result, Registered), result
    return result


def test_register_binds_and_records_the_fact() -> None:
    registrar = Registrar()
    result = ok(registrar.register(req(PHONE, expires=120, user_agent="baresip"), T0))
    (binding,) = result.bindings
    assert (binding.contact, binding.expires_in(T0)) == (PHONE, 120)
    assert result.events == (
        ExtensionRegistered(extension="1001", contact=PHONE, expires_s=120, user_agent="baresip"),
    )
    assert registrar.lookup("1001", T0 + 119) == (binding,)
    assert registrar.lookup("1001", T0 + 120) == ()


def test_contact_expires_beats_the_header_and_the_default_applies_otherwise() -> None:
    registrar = Registrar(RegistrarPolicy(default_expires=600))
    result = ok(registrar.register(req(ContactRequest(PHONE, expires=90), DESK, expires=300), T0))
    assert {b.contact: b.expires_in(T0) for b in result.bindings} == {PHONE: 90, DESK: 300}
    result = ok(Registrar(RegistrarPolicy(default_expires=600)).register(req(PHONE), T0))
    assert result.bindings[0].expires_in(T0) == 600


def test_too_brief_is_423_with_min_expires_and_too_long_is_shortened() -> None:
    registrar = Registrar(RegistrarPolicy(min_expires=60, max_expires=3600))
    refused = registrar.register(req(PHONE, expires=10), T0)
    assert refused == RegisterRefused(423, "registration interval too brief", 60)
    assert registrar.lookup("1001", T0) == ()
    result = ok(registrar.register(req(PHONE, expires=86400), T0))
    assert result.bindings[0].expires_in(T0) == 3600


def test_refresh_same_call_id_needs_a_higher_cseq() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, cseq=5, expires=60), T0))
    for cseq in (5, 4):
        refused = registrar.register(req(PHONE, cseq=cseq, expires=600), T0 + 1)
        assert isinstance(refused, RegisterRefused) and refused.status == 500
    assert registrar.lookup("1001", T0 + 1)[0].expires_at == T0 + 60  # untouched
    result = ok(registrar.register(req(PHONE, cseq=6, expires=600), T0 + 1))
    assert result.bindings[0].expires_at == T0 + 601
    # another Call-ID (the phone rebooted) replaces the binding whatever its CSeq
    ok(registrar.register(req(PHONE, cseq=1, call_id="c2", expires=600), T0 + 2))
    assert registrar.lookup("1001", T0 + 2)[0].call_id == "c2"


def test_out_of_order_request_changes_nothing_at_all() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, cseq=5, expires=60), T0))
    refused = registrar.register(req(DESK, PHONE, cseq=3, expires=60), T0)
    assert isinstance(refused, RegisterRefused)
    assert [b.contact for b in registrar.lookup("1001", T0)] == [PHONE]


def test_expires_zero_removes_one_binding_and_the_last_removal_unregisters() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, DESK, expires=60), T0))
    result = ok(registrar.register(req(PHONE, cseq=2, expires=0), T0 + 1))
    assert [b.contact for b in result.bindings] == [DESK]
    assert result.events == ()
    result = ok(registrar.register(req(ContactRequest(DESK, expires=0), cseq=3), T0 + 2))
    assert result.events == (ExtensionUnregistered(extension="1001", reason="unregistered"),)


def test_wildcard_with_expires_zero_removes_all() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, DESK, expires=60), T0))
    result = ok(registrar.register(req(wildcard=True, expires=0, cseq=2), T0 + 1))
    assert result.bindings == ()
    assert result.events == (ExtensionUnregistered(extension="1001", reason="unregistered"),)
    again = ok(registrar.register(req(wildcard=True, expires=0, cseq=3), T0 + 2))
    assert again.events == ()  # nothing was bound: nothing to report


@pytest.mark.parametrize(
    "bad",
    [req(wildcard=True, expires=60), req(wildcard=True), req(PHONE, wildcard=True, expires=0)],
)
def test_wildcard_misuse_is_400(bad: RegisterRequest) -> None:
    refused = Registrar().register(bad, T0)
    assert isinstance(refused, RegisterRefused) and refused.status == 400


def test_wildcard_respects_cseq_ordering() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, cseq=7, expires=60), T0))
    refused = registrar.register(req(wildcard=True, expires=0, cseq=7), T0)
    assert isinstance(refused, RegisterRefused) and refused.status == 500


def test_fetch_returns_bindings_unchanged() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, expires=60), T0))
    result = ok(registrar.register(req(cseq=2), T0 + 10))
    assert [b.expires_in(T0 + 10) for b in result.bindings] == [50]
    assert result.events == ()


def test_max_contacts_drops_the_least_recently_refreshed() -> None:
    registrar = Registrar(RegistrarPolicy(max_contacts=2))
    for i in range(3):
        ok(registrar.register(req(f"sip:1001@10.0.0.{i}", cseq=i + 1, expires=60), T0 + i))
    assert {b.contact for b in registrar.lookup("1001", T0 + 3)} == {
        "sip:1001@10.0.0.1",
        "sip:1001@10.0.0.2",
    }


def test_one_request_with_too_many_contacts_is_403() -> None:
    registrar = Registrar(RegistrarPolicy(max_contacts=2))
    refused = registrar.register(req(PHONE, DESK, "sip:1001@10.0.0.9", expires=60), T0)
    assert isinstance(refused, RegisterRefused) and refused.status == 403


def test_sweep_reports_each_lapsed_extension_once() -> None:
    registrar = Registrar()
    ok(
        registrar.register(
            req(ContactRequest(PHONE, expires=60), ContactRequest(DESK, expires=120)), T0
        )
    )
    assert registrar.next_expiry() == T0 + 60
    assert registrar.sweep(T0 + 60) == []  # DESK still live: the extension can ring
    assert registrar.sweep(T0 + 120) == [ExtensionUnregistered(extension="1001", reason="expired")]
    assert registrar.sweep(T0 + 500) == []
    assert registrar.extensions() == ()


def test_a_lapse_found_by_the_next_register_is_reported_before_the_new_binding() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, expires=60), T0))
    result = ok(registrar.register(req(PHONE, cseq=2, expires=60), T0 + 100))
    assert [type(e) for e in result.events] == [ExtensionUnregistered, ExtensionRegistered]
    assert isinstance(result.events[0], ExtensionUnregistered)
    assert result.events[0].reason == "expired"


def test_lookup_prefers_higher_q_then_most_recent() -> None:
    registrar = Registrar()
    ok(registrar.register(req(ContactRequest(PHONE, q=0.5), expires=60), T0))
    ok(registrar.register(req(ContactRequest(DESK, q=0.9), expires=60, cseq=2), T0 + 1))
    assert [b.contact for b in registrar.lookup("1001", T0 + 2)] == [DESK, PHONE]


def test_contacts_are_compared_with_the_injected_rule() -> None:
    registrar = Registrar(same_contact=lambda a, b: a.lower() == b.lower())
    ok(registrar.register(req(PHONE, expires=60), T0))
    ok(registrar.register(req(PHONE.upper(), expires=60, cseq=2), T0))
    assert len(registrar.lookup("1001", T0)) == 1


def test_unregister_all_closes_every_extension() -> None:
    registrar = Registrar()
    ok(registrar.register(req(PHONE, expires=60), T0))
    assert registrar.unregister_all("gateway_restart") == [
        ExtensionUnregistered(extension="1001", reason="gateway_restart")
    ]
    assert registrar.lookup("1001", T0) == ()


# property ---------------------------------------------------------------------------

AORS = ("1001", "1002")
CONTACTS = tuple(f"sip:u@10.0.0.{i}" for i in range(6))

step = st.one_of(
    st.tuples(
        st.just("register"),
        st.sampled_from(AORS),
        st.lists(
            st.tuples(st.sampled_from(CONTACTS), st.sampled_from([None, 0, 60, 61, 200])),
            max_size=4,
        ),
        st.sampled_from([None, 0, 60, 90, 5000]),
        st.sampled_from(["a", "b"]),
    ),
    st.tuples(st.just("wildcard"), st.sampled_from(AORS)),
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=150)),
    st.tuples(st.just("sweep")),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_bindings_stay_bounded_and_each_lapse_is_reported_exactly_once(
    steps: list[tuple[object, ...]],
) -> None:
    policy = RegistrarPolicy(min_expires=60, max_expires=600, default_expires=120, max_contacts=3)
    registrar = Registrar(policy)
    now, cseq = T0, 0
    events: dict[str, list[object]] = defaultdict(list)
    registered_spells: dict[str, int] = defaultdict(int)  # times an extension went 0 -> >0

    def apply(request: RegisterRequest) -> None:
        live_before = bool(registrar.lookup(request.aor, now))
        result = registrar.register(request, now)
        for event in result.events:
            events[request.aor].append(event)
        if registrar.lookup(request.aor, now) and not live_before:
            registered_spells[request.aor] += 1

    for item in steps:
        kind = item[0]
        if kind == "register":
            _, aor, contacts, expires, call_id = item
            cseq += 1
            apply(
                RegisterRequest(
                    aor=aor,
                    call_id=call_id,
                    cseq=cseq,
                    contacts=tuple(ContactRequest(uri, exp) for uri, exp in contacts),
                    expires=expires,
                )
            )
        elif kind == "wildcard":
            cseq += 1
            apply(RegisterRequest(aor=item[1], call_id="w", cseq=cseq, wildcard=True, expires=0))
        elif kind == "advance":
            now += item[1]
        else:
            for event in registrar.sweep(now):
                events[event.extension].append(event)
        for aor in AORS:
            assert len(registrar.lookup(aor, now)) <= policy.max_contacts

    now += 10_000
    final = registrar.sweep(now)
    for aor in AORS:
        for event in final:
            if event.extension == aor:
                events[aor].append(event)
        unregistered = [e for e in events[aor] if isinstance(e, ExtensionUnregistered)]
        # every spell of being reachable ends with exactly one unregistered fact
        assert len(unregistered) == registered_spells[aor]
        # and facts alternate: never two unregistered facts in a row
        kinds = [type(e) for e in events[aor]]
        for first, second in itertools.pairwise(kinds):
            assert not (first is ExtensionUnregistered and second is ExtensionUnregistered)


def _bound_by_scan(registrar: Registrar, source: tuple[str, int], now: float) -> bool:
    return any(
        binding.source == source
        for aor in registrar.extensions()
        for binding in registrar.lookup(aor, now)
    )


SOURCES = [("192.0.2.10", 5062), ("192.0.2.11", 5060), ("192.0.2.12", 5060)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1001", "1002"]),
            st.sampled_from([PHONE, DESK]),
            st.sampled_from(SOURCES),
            st.sampled_from([0, 60, 120]),
            st.integers(min_value=0, max_value=200),
        ),
        max_size=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_bound_from_agrees_with_a_scan_of_every_binding(
    steps: list[tuple[str, str, tuple[str, int], int, int]],
) -> None:
    registrar = Registrar()
    now = T0
    for cseq, (aor, contact, source, expires, later) in enumerate(steps, start=1):
        now += later
        request = RegisterRequest(
            aor=aor,
            call_id=f"{aor}-{source}",
            cseq=cseq,
            contacts=(ContactRequest(contact),),
            expires=expires,
            source=source,
        )
        registrar.register(request, now)
        if later % 3 == 0:
            registrar.sweep(now)
        for probe in SOURCES:
            for at in (now, now + 61, now + 121):
                assert registrar.bound_from(probe, at) == _bound_by_scan(registrar, probe, at)
    registrar.unregister_all("gateway_restart")
    assert not any(registrar.bound_from(probe, now) for probe in SOURCES)
