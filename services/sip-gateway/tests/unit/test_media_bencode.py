"""The bencode codec of the ng protocol: known encodings, round trips, and hostile input."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_sip_gateway.media.bencode import (
    MAX_DEPTH,
    BencodeError,
    BValue,
    decode,
    decode_dict,
    encode,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"i0e"),
        (-42, b"i-42e"),
        (2**70, b"i1180591620717411303424e"),
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        ("café", b"5:caf\xc3\xa9"),
        ([], b"le"),
        ([b"a", 1, [b"b"]], b"l1:ai1el1:bee"),
        ({}, b"de"),
        ({"command": "ping"}, b"d7:command4:pinge"),
        # keys are written in byte order whatever the order given
        ({"z": 1, "a": 2, b"m": 3}, b"d1:ai2e1:mi3e1:zi1ee"),
    ],
)
def test_known_encodings(value: Any, wire: bytes) -> None:
    assert encode(value) == wire


def test_an_ng_offer_reply_decodes() -> None:
    reply = b"d3:sdp14:v=0\r\no=- 1 1\r\n6:result2:oke"
    assert decode_dict(reply) == {b"sdp": b"v=0\r\no=- 1 1\r\n", b"result": b"ok"}


def test_unsorted_keys_are_accepted_on_reading() -> None:
    # rtpengine does not sort the keys of its replies
    assert decode(b"d6:result2:ok3:sdp0:e") == {b"result": b"ok", b"sdp": b""}


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "ends"),
        (b"i12", "not terminated"),
        (b"ie", "malformed integer"),
        (b"i-e", "malformed integer"),
        (b"i03e", "canonical"),
        (b"i-0e", "canonical"),
        (b"i1.5e", "malformed integer"),
        (b"5:abc", "claims 5 bytes"),
        (b"05:abcde", "leading zeros"),
        (b"3abc", "not followed by ':'"),
        (b"l1:a", "list not terminated"),
        (b"d1:a", "ends"),
        (b"di1ei2ee", "not a string"),
        (b"d1:ai1e1:ai2ee", "repeated"),
        (b"i1ei2e", "trailing"),
        (b"x", "unexpected byte"),
        (b"l" * (MAX_DEPTH + 2), "nested deeper"),
    ],
)
def test_malformed_input_says_what_is_wrong(wire: bytes, why: str) -> None:
    with pytest.raises(BencodeError, match=why):
        decode(wire)


def test_a_body_that_is_not_a_dictionary_is_refused() -> None:
    with pytest.raises(BencodeError, match="expected a dictionary"):
        decode_dict(b"l4:pinge")


@pytest.mark.parametrize(
    "value",
    [True, 1.5, None, {1: b"x"}, {"k": object()}, {"a": 1, b"a": 2}],
)
def test_values_bencode_cannot_carry_are_refused(value: Any) -> None:
    with pytest.raises(BencodeError):
        encode(value)


def test_nesting_beyond_the_limit_is_refused_on_encoding() -> None:
    deep: list[Any] = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(BencodeError, match="nested deeper"):
        encode(deep)


values: st.SearchStrategy[BValue] = st.recursive(
    st.integers() | st.binary(max_size=64),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.binary(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: BValue) -> None:
    wire = encode(value)
    assert decode(wire) == value
    assert encode(decode(wire)) == wire


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8))
def test_text_is_sent_as_utf8(message: dict[str, str]) -> None:
    decoded = decode_dict(encode(message))
    assert {k.decode(): v for k, v in decoded.items()} == {
        k: v.encode() for k, v in message.items()
    }


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bencode_error(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


@settings(max_examples=1000)
@given(values, st.data())
def test_truncated_or_corrupted_messages_raise_only_bencode_error(
    value: BValue, data: st.DataObject
) -> None:
    wire = bytearray(encode(value))
    cut = data.draw(st.integers(0, len(wire)))
    if data.draw(st.booleans()) and wire:
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(BencodeError):
        decode(bytes(wire[:cut]))
