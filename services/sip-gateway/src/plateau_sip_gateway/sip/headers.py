"""The header fields of a SIP message: names, compact forms, lists and the collection."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from plateau_sip_gateway.sip.grammar import QUOTED_RE, is_token

_CANONICAL_NAMES = (
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}
"""Single-letter header names and the header each stands for."""

# lower-cased name or compact form -> (key, canonical spelling)
_NAMES: dict[str, tuple[str, str]] = {n.lower(): (n.lower(), n) for n in _CANONICAL_NAMES}
_NAMES.update({c: (n.lower(), n) for c, n in COMPACT_FORMS.items()})

# Headers whose grammar is a comma-separated list, so that "H: a, b" is "H: a" + "H: b"
# (RFC 3261 §7.3.1). The authentication headers, Date, Retry-After, Warning-free text
# headers and every unknown header are never split: commas are part of their values.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)

_LIST_SPECIAL_RE = re.compile(r'[",<]')


def canonical_name(name: str) -> tuple[str, str]:
    """(lookup key, spelling to send) for a header name; compact forms are expanded.

    Unknown names keep the spelling they were given. Raises ValueError for a name that is
    not a token.
    """
    known = _NAMES.get(name.lower())
    if known is not None:
        return known
    if not is_token(name):
        raise ValueError(f"not a valid header name: {name!r}")
    return name.lower(), name


def split_list(value: str) -> list[str]:
    """The elements of a comma-separated header value.

    Commas inside quoted strings and inside ``<...>`` are not separators.
    """
    if "," not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    pos = 0
    end = len(value)
    search = _LIST_SPECIAL_RE.search
    while pos < end:
        m = search(value, pos)
        if m is None:
            break
        pos = m.start()
        char = value[pos]
        if char == ",":
            parts.append(value[start:pos].strip(" \t"))
            pos += 1
            start = pos
        elif char == '"':
            quoted = QUOTED_RE.match(value, pos)
            # An unbalanced quote: leave the rest whole for the value's own parser to reject.
            pos = end if quoted is None else quoted.end()
        else:
            close = value.find(">", pos)
            pos = end if close < 0 else close + 1
    parts.append(value[start:].strip(" \t"))
    return parts


class Headers:
    """An immutable, ordered, case-insensitive collection of header fields.

    Each field holds one value: a comma-separated list header (Via, Contact, Route,
    Supported...) given as ``a, b`` is held as two fields, as RFC 3261 §7.3.1 permits.
    Compact names are expanded (``v`` is ``Via``). Equality follows RFC 3261 too: the order
    of fields with the same name matters, the order between different names does not.
    """

    __slots__ = ("_fields", "_hash", "_index")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        normalised: list[tuple[str, str, str]] = []
        for name, value in fields:
            key, canonical = canonical_name(name)
            _check_value(value)
            if key in LIST_HEADERS:
                normalised.extend((key, canonical, v) for v in split_list(value.strip(" \t")))
            else:
                normalised.append((key, canonical, value.strip(" \t")))
        self._fields: tuple[tuple[str, str, str], ...] = tuple(normalised)
        self._index: dict[str, tuple[str, ...]] | None = None
        self._hash: int | None = None

    @classmethod
    def _trusted(
        cls,
        fields: tuple[tuple[str, str, str], ...],
        index: dict[str, tuple[str, ...]] | None = None,
    ) -> Headers:
        """Headers from fields already normalised (key, name, value): the parser's path."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._index = index
        headers._hash = None
        return headers

    def _by_key(self) -> dict[str, tuple[str, ...]]:
        index = self._index
        if index is None:
            grouped: dict[str, list[str]] = {}
            for key, _, value in self._fields:
                grouped.setdefault(key, []).append(value)
            index = self._index = {k: tuple(v) for k, v in grouped.items()}
        return index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name, value) for every field, in order."""
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __bool__(self) -> bool:
        return bool(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._by_key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._by_key() == other._by_key()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._by_key().items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (any spelling or compact form), or None."""
        values = self._by_key().get(_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of ``name``, in order."""
        return self._by_key().get(_key(name), ())

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def names(self) -> tuple[str, ...]:
        """The distinct header names, in order of first appearance."""
        seen: dict[str, str] = {}
        for key, name, _ in self._fields:
            seen.setdefault(key, name)
        return tuple(seen.values())

    def add(self, name: str, value: str, *, first: bool = False) -> Headers:
        """These headers plus ``name: value``: after the last field of that name, or before
        the first when ``first`` (how a proxy pushes its Via on top)."""
        added = Headers([(name, value)])._fields
        if not added:
            return self
        key = added[0][0]
        positions = [i for i, f in enumerate(self._fields) if f[0] == key]
        if first:
            at = positions[0] if positions else 0
        else:
            at = positions[-1] + 1 if positions else len(self._fields)
        return Headers._trusted(self._fields[:at] + added + self._fields[at:])

    def remove(self, name: str) -> Headers:
        """These headers without any field called ``name``."""
        key = _key(name)
        return Headers._trusted(tuple(f for f in self._fields if f[0] != key))

    def remove_first(self, name: str) -> Headers:
        """These headers without the first field called ``name`` (a top Via, a top Route)."""
        key = _key(name)
        for i, f in enumerate(self._fields):
            if f[0] == key:
                return Headers._trusted(self._fields[:i] + self._fields[i + 1 :])
        return self

    def replace(self, name: str, *values: str) -> Headers:
        """These headers with every ``name`` field replaced by ``values`` (where the first
        one stood, or at the end); no values removes the header."""
        key = _key(name)
        new = Headers([(name, v) for v in values])._fields
        kept: list[tuple[str, str, str]] = []
        inserted = False
        for f in self._fields:
            if f[0] == key:
                if not inserted:
                    kept.extend(new)
                    inserted = True
            else:
                kept.append(f)
        if not inserted:
            kept.extend(new)
        return Headers._trusted(tuple(kept))


def _key(name: str) -> str:
    known = _NAMES.get(name.lower())
    return known[0] if known is not None else name.lower()


def _check_value(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value cannot contain CR or LF: {value!r}")
