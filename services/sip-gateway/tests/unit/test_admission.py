"""Admission control: never more calls than a trunk's capacity, and no slot ever leaks."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from plateau_contracts.events.calls import RejectReason
from plateau_sip_gateway.domain.admission import (
    Admission,
    AdmissionToken,
    TrunkLimit,
    UnknownTrunkError,
)
from plateau_sip_gateway.domain.trunks import InboundRefused, TrunkConfig

pytestmark = pytest.mark.unit


def test_admits_up_to_capacity_then_answers_503_with_retry_after() -> None:
    admission = Admission({"mno": TrunkLimit(max_calls=2, retry_after_s=7)})
    first, second = admission.admit("mno"), admission.admit("mno")
    assert isinstance(first, AdmissionToken)
    assert isinstance(second, AdmissionToken)
    refused = admission.admit("mno")
    assert isinstance(refused, InboundRefused)
    assert (refused.reason, refused.sip_code, refused.retry_after_s, refused.trunk) == (
        RejectReason.OVER_CAPACITY,
        503,
        7,
        "mno",
    )
    assert refused.detail == "trunk mno at 2/2 calls"
    event = refused.to_event("c-9", source="10.0.0.1:5060", dnis="+242053000100")
    assert (event.reason, event.sip_code, event.trunk) == (RejectReason.OVER_CAPACITY, 503, "mno")

    assert admission.release(first) is True
    assert isinstance(admission.admit("mno"), AdmissionToken)


def test_release_is_idempotent() -> None:
    admission = Admission({"mno": TrunkLimit(max_calls=1)})
    token = admission.admit("mno")
    assert isinstance(token, AdmissionToken)
    assert admission.release(token) is True
    assert admission.release(token) is False
    assert admission.in_use("mno") == 0
    # A forged or foreign token frees nothing.
    other = admission.admit("mno")
    assert admission.release(AdmissionToken("mno", 999)) is False
    assert admission.release(AdmissionToken("nowhere", 1)) is False
    assert admission.in_use("mno") == 1
    assert isinstance(other, AdmissionToken)


def test_capacity_comes_from_the_trunk_configuration() -> None:
    config = TrunkConfig.model_validate(
        {
            "name": "mno",
            "tenant": "acme",
            "source_networks": ["192.0.2.0/28"],
            "capacity": {"kind": "bandwidth", "bandwidth_kbps": 4000},
            "retry_after_s": 30,
        }
    )
    admission = Admission.for_trunks([config])
    tokens = [admission.admit("mno") for _ in range(45)]
    assert all(isinstance(token, AdmissionToken) for token in tokens)
    refused = admission.admit("mno")
    assert isinstance(refused, InboundRefused)
    assert refused.retry_after_s == 30


def test_unknown_trunk_is_an_error_that_says_what_to_check() -> None:
    with pytest.raises(UnknownTrunkError, match="trunk configuration"):
        Admission({}).admit("mno")


def test_lowering_capacity_keeps_calls_in_progress() -> None:
    admission = Admission({"mno": TrunkLimit(max_calls=3)})
    tokens = [admission.admit("mno") for _ in range(3)]
    admission.reconfigure({"mno": TrunkLimit(max_calls=1), "new": TrunkLimit(max_calls=1)})
    assert admission.in_use("mno") == 3
    assert isinstance(admission.admit("mno"), InboundRefused)
    for token in tokens:
        assert isinstance(token, AdmissionToken)
        admission.release(token)
    assert isinstance(admission.admit("mno"), AdmissionToken)
    admission.reconfigure({"new": TrunkLimit(max_calls=1)})
    assert admission.release(tokens[0]) is False  # removed trunk: harmless


CAPACITIES = {"a": 0, "b": 1, "c": 3}


class AdmissionMachine(RuleBasedStateMachine):
    """Random admits and (repeated) releases against a model of the slots held."""

    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.admission = Admission({name: TrunkLimit(cap) for name, cap in CAPACITIES.items()})
        self.held: dict[str, set[AdmissionToken]] = {name: set() for name in CAPACITIES}
        self.issued: list[AdmissionToken] = []

    @rule(target=tokens, trunk=st.sampled_from(sorted(CAPACITIES)))
    def admit(self, trunk: str) -> object:
        result = self.admission.admit(trunk)
        if isinstance(result, InboundRefused):
            assert len(self.held[trunk]) == CAPACITIES[trunk]
            assert result.sip_code == 503
            return multiple()
        assert len(self.held[trunk]) < CAPACITIES[trunk]
        assert result not in self.issued  # tokens are never reused
        self.issued.append(result)
        self.held[trunk].add(result)
        return result

    @rule(token=consumes(tokens))
    def release(self, token: AdmissionToken) -> None:
        # True unless `release_again` already gave this one back.
        assert self.admission.release(token) is (token in self.held[token.trunk])
        self.held[token.trunk].discard(token)

    @rule(index=st.integers(min_value=0))
    def release_again(self, index: int) -> None:
        # Releasing any token already given back (or still held) never frees a second slot.
        if not self.issued:
            return
        token = self.issued[index % len(self.issued)]
        was_held = token in self.held[token.trunk]
        assert self.admission.release(token) is was_held
        self.held[token.trunk].discard(token)

    @invariant()
    def never_over_capacity(self) -> None:
        for trunk, capacity in CAPACITIES.items():
            assert self.admission.in_use(trunk) == len(self.held[trunk]) <= capacity

    def teardown(self) -> None:
        for token in self.issued:
            self.admission.release(token)
        assert all(self.admission.in_use(trunk) == 0 for trunk in CAPACITIES)


AdmissionMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestAdmissionMachine = AdmissionMachine.TestCase
