"""Bencode, the dictionary encoding of rtpengine's ``ng`` control protocol (pure, no I/O).

Strings are byte strings (``str`` is accepted on encoding and sent as UTF-8), integers are
arbitrary-precision, lists and dictionaries nest. Dictionaries are written with their keys
in byte order as the format requires; on reading, keys in any order are accepted, because
rtpengine itself does not sort the keys of its replies. Any malformed input raises
:class:`BencodeError` — never another exception — so a hostile datagram cannot crash a reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

#: What :func:`decode` returns: strings stay bytes, the caller decides how to read them.
BValue: TypeAlias = int | bytes | list["BValue"] | dict[bytes, "BValue"]

#: What :func:`encode` accepts.
Bencodable: TypeAlias = (
    int
    | bytes
    | str
    | Sequence["Bencodable"]
    | Mapping[str, "Bencodable"]
    | Mapping[bytes, "Bencodable"]
)

#: Deeper nesting than this is refused: no ng message comes close, and it bounds recursion.
MAX_DEPTH = 64
#: Longer integer literals than this are refused (Python would parse them slowly).
MAX_INT_DIGITS = 64


class BencodeError(ValueError):
    """Bytes that are not one well-formed bencoded value, or a value bencode cannot carry."""


def encode(value: Bencodable) -> bytes:
    """The bencoding of ``value``; raises :class:`BencodeError` for an unsupported type."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _key_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise BencodeError(f"dictionary keys must be strings, not {type(key).__name__}")


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError(f"value nested deeper than {MAX_DEPTH} levels")
    # bool is an int subclass; True would silently become 1, so it is refused instead.
    if isinstance(value, bool):
        raise BencodeError("bencode has no booleans; send 'yes'/'no' or 1/0 explicitly")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode(), out, depth)
    elif isinstance(value, Mapping):
        items: dict[bytes, object] = {}
        for key, item in value.items():
            raw_key = _key_bytes(key)
            if raw_key in items:
                raise BencodeError(f"dictionary key {raw_key!r} given twice (as str and bytes)")
            items[raw_key] = item
        out.append(b"d")
        for raw_key in sorted(items):
            _encode(raw_key, out, depth + 1)
            _encode(items[raw_key], out, depth + 1)
        out.append(b"e")
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode a value of type {type(value).__name__}")


def decode(data: bytes) -> BValue:
    """The one value bencoded in ``data``; trailing bytes are an error."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError(f"bencoded input must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    value, end = _decode(raw, 0, 0)
    if end != len(raw):
        raise BencodeError(f"{len(raw) - end} unexpected trailing byte(s) at offset {end}")
    return value


def decode_dict(data: bytes) -> dict[bytes, BValue]:
    """The dictionary bencoded in ``data`` (an ng message body is always one)."""
    value = decode(data)
    if not isinstance(value, dict):
        raise BencodeError(f"expected a dictionary, got {type(value).__name__}")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[BValue, int]:
    if depth > MAX_DEPTH:
        raise BencodeError(f"value nested deeper than {MAX_DEPTH} levels at offset {pos}")
    if pos >= len(data):
        raise BencodeError(f"input ends at offset {pos} where a value was expected")
    lead = data[pos]
    if lead == ord("i"):
        return _decode_int(data, pos)
    if lead == ord("l"):
        return _decode_list(data, pos + 1, depth)
    if lead == ord("d"):
        return _decode_dict(data, pos + 1, depth)
    if ord("0") <= lead <= ord("9"):
        return _decode_bytes(data, pos)
    raise BencodeError(f"unexpected byte {bytes([lead])!r} at offset {pos}")


def _decode_list(data: bytes, pos: int, depth: int) -> tuple[list[BValue], int]:
    items: list[BValue] = []
    while True:
        if pos >= len(data):
            raise BencodeError("list not terminated by 'e'")
        if data[pos] == ord("e"):
            return items, pos + 1
        item, pos = _decode(data, pos, depth + 1)
        items.append(item)


def _decode_dict(data: bytes, pos: int, depth: int) -> tuple[dict[bytes, BValue], int]:
    mapping: dict[bytes, BValue] = {}
    while True:
        if pos >= len(data):
            raise BencodeError("dictionary not terminated by 'e'")
        if data[pos] == ord("e"):
            return mapping, pos + 1
        if not data[pos : pos + 1].isdigit():
            raise BencodeError(f"dictionary key at offset {pos} is not a string")
        key, pos = _decode_bytes(data, pos)
        if key in mapping:
            raise BencodeError(f"dictionary key {key!r} repeated at offset {pos}")
        mapping[key], pos = _decode(data, pos, depth + 1)


def _decode_int(data: bytes, pos: int) -> tuple[int, int]:
    end = data.find(b"e", pos + 1, pos + 2 + MAX_INT_DIGITS + 1)
    if end < 0:
        raise BencodeError(f"integer at offset {pos} not terminated by 'e' (or too long)")
    digits = data[pos + 1 : end]
    body = digits[1:] if digits.startswith(b"-") else digits
    if not body or not body.isdigit():
        raise BencodeError(f"malformed integer {digits!r} at offset {pos}")
    if (body.startswith(b"0") and len(body) > 1) or digits == b"-0":
        raise BencodeError(f"integer {digits!r} at offset {pos} is not in canonical form")
    return int(digits), end + 1


def _decode_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos, pos + MAX_INT_DIGITS + 1)
    if colon < 0:
        raise BencodeError(f"string length at offset {pos} not followed by ':'")
    digits = data[pos:colon]
    if not digits.isdigit():
        raise BencodeError(f"malformed string length {digits!r} at offset {pos}")
    if digits.startswith(b"0") and len(digits) > 1:
        raise BencodeError(f"string length {digits!r} at offset {pos} has leading zeros")
    length = int(digits)
    start = colon + 1
    if start + length > len(data):
        raise BencodeError(
            f"string at offset {pos} claims {length} bytes, only {len(data) - start} remain"
        )
    return data[start : start + length], start + length
