"""RFC 3261 §25 building blocks shared by the URI and header parsers.

Every pattern is linear: no repeated group can match the same text in two ways, so a
hostile 64 KiB header cannot make a regex backtrack catastrophically; and repeated groups
are possessive (``*+``) so that the regex engine keeps no per-iteration backtracking state
(without it a 64 KiB quoted string costs megabytes to scan).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from plateau_sip_gateway.sip.errors import SipParseError

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105 (the SIP grammar's token, no secret)
TOKEN = f"[{TOKEN_CHARS}]++"
# quoted-string: qdtext (any text but DQUOTE, backslash and CTLs other than HTAB) or a
# quoted-pair (backslash and any ASCII octet but CR and LF).
QUOTED = (
    r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*+'
    r'(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\\x00-\x08\x0a-\x1f\x7f]*+)*+"'
)
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]++\]"
WS = r"[ \t]*+"

TOKEN_RE = re.compile(TOKEN)
QUOTED_RE = re.compile(QUOTED)
# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string
PARAM_RE = re.compile(rf"{WS};{WS}({TOKEN})(?:{WS}={WS}({TOKEN}|{QUOTED}|{IPV6_REFERENCE}))?{WS}")
# ";name=token;name" without whitespace or quotes: the usual case, split without a loop.
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;{TOKEN}(?:={TOKEN})?)++")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_QUOTING_RE = re.compile(rf"[^{TOKEN_CHARS}]")
_MUST_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 3261 token (method names, header names, tags...)."""
    return TOKEN_RE.fullmatch(text) is not None


def unquote(text: str) -> str:
    """The content of a quoted-string (quotes removed, quoted-pairs resolved).

    Text that is not quoted is returned unchanged.
    """
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote(text: str) -> str:
    """``text`` as a quoted-string: backslash, double quote and control characters other
    than HTAB become quoted-pairs. CR and LF cannot be quoted at all (ValueError)."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"a quoted string cannot hold CR or LF: {text!r}")
    return '"' + _MUST_ESCAPE_RE.sub(r"\\\g<0>", text) + '"'


def quote_if_needed(text: str) -> str:
    """``text`` unchanged when it is a token, otherwise as a quoted-string."""
    return text if text and _NEEDS_QUOTING_RE.search(text) is None else quote(text)


@dataclass(frozen=True, slots=True)
class Params:
    """An ordered, immutable list of ``;name[=value]`` parameters.

    Values are kept as they were written (a quoted-string keeps its quotes, a URI
    parameter its %-escapes), so serialising gives back the same text; ``get`` returns
    the unquoted value. Names compare case-insensitively, as RFC 3261 says, and
    ``name in params`` asks whether a parameter is present.
    """

    items: tuple[tuple[str, str | None], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        wanted = name.lower()
        return any(key.lower() == wanted for key, _ in self.items)

    def __str__(self) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.items)

    def raw(self, name: str) -> str | None:
        """The value of ``name`` as written (None when absent or valueless)."""
        wanted = name.lower()
        for key, value in self.items:
            if key.lower() == wanted:
                return value
        return None

    def get(self, name: str) -> str | None:
        """The value of ``name``, unquoted (None when absent or valueless)."""
        value = self.raw(name)
        return None if value is None else unquote(value)

    def set(self, name: str, value: str | None) -> Params:
        """These parameters with ``name`` set to ``value`` (already in wire form)."""
        wanted = name.lower()
        items = list(self.items)
        for i, (key, _) in enumerate(items):
            if key.lower() == wanted:
                items[i] = (key, value)
                return Params(tuple(items))
        return Params((*items, (name, value)))

    def remove(self, name: str) -> Params:
        """These parameters without ``name``."""
        wanted = name.lower()
        return Params(tuple((k, v) for k, v in self.items if k.lower() != wanted))

    @classmethod
    def of(cls, items: Iterable[tuple[str, str | None]]) -> Params:
        """Parameters from (name, value) pairs; a value that is not a token is quoted."""
        return cls(tuple((k, None if v is None else quote_if_needed(v)) for k, v in items))


EMPTY_PARAMS = Params()


def parse_params(text: str, pos: int, what: str) -> Params:
    """The ``;name=value`` parameters of a header value from ``pos`` to its end.

    Whitespace around ``;`` and ``=`` is allowed (SEMI and EQUAL carry SWS).
    """
    end = len(text)
    if pos >= end:
        return EMPTY_PARAMS
    if _SIMPLE_PARAMS_RE.fullmatch(text, pos) is not None:
        return split_simple_params(text[pos:])
    items: list[tuple[str, str | None]] = []
    match = PARAM_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            if not text[pos:].strip(" \t"):
                break
            raise SipParseError(f"malformed parameters in {what}: {text[pos:][:60]!r}")
        items.append((m.group(1), m.group(2)))
        pos = m.end()
    return Params(tuple(items))


def split_simple_params(text: str) -> Params:
    """``;a=b;c`` already known to be well formed (no whitespace, quotes or escapes)."""
    items: list[tuple[str, str | None]] = []
    for chunk in text[1:].split(";"):
        name, equals, value = chunk.partition("=")
        items.append((name, value) if equals else (name, None))
    return Params(tuple(items))
