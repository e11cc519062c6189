"""The little SDP the B2BUA needs to touch when media is not anchored (RFC 4566, RFC 3264).

Signalling-only, the gateway relays each party's SDP to the other. Three things still need
editing, and nothing more is parsed:

* **one origin per customer leg.** Over a call's life the customer may see the SDP of
  several agents (transfers), of the gateway itself (hold), then an agent again. RFC 3264
  §8 wants one ``o=`` line per session whose version grows with every change, so every SDP
  sent to the customer is re-stamped by ``Origin``;
* **hold:** an offer with every stream ``a=inactive`` (RFC 3264 §8.4) — nothing flows in
  either direction, which is honest when there is no music to send;
* **refusing an offer** the gateway must answer but cannot use (a live answer abandoned
  for compliance, with no media relay to play the message): every stream rejected with
  port 0 (RFC 3264 §6), a valid answer that sets up no media.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")


def _lines(sdp: bytes) -> list[str]:
    return sdp.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")


def _join(lines: list[str]) -> bytes:
    while lines and lines[-1] == "":
        lines.pop()
    return ("\r\n".join(lines) + "\r\n").encode()


def is_hold(sdp: bytes) -> bool:
    """Whether an offer puts the other side on hold (RFC 3264 §8.4, or RFC 2543's 0.0.0.0)."""
    lines = [line.strip() for line in _lines(sdp)]
    return any(line in ("a=sendonly", "a=inactive") for line in lines) or any(
        line.startswith("c=IN IP4 0.0.0.0") for line in lines
    )


def with_direction(sdp: bytes, direction: str) -> bytes:
    """``sdp`` with every media stream's direction set to ``direction`` (e.g. ``inactive``)."""
    out: list[str] = []
    in_media = False
    for line in _lines(sdp):
        stripped = line.strip()
        if stripped in _DIRECTIONS:
            continue  # replaced below, once per stream
        if stripped.startswith("m="):
            in_media = True
            out.append(line)
            out.append(f"a={direction}")
            continue
        out.append(line)
    if not in_media:
        out.append(f"a={direction}")
    return _join(out)


def rejecting_answer(offer: bytes) -> bytes:
    """An answer to ``offer`` that rejects every stream (port 0), keeping formats as offered."""
    out: list[str] = []
    for line in _lines(offer):
        if line.startswith("m="):
            kind, _port, rest = line[2:].split(" ", 2)
            out.append(f"m={kind} 0 {rest}")
        elif line.startswith("o="):
            parts = line[2:].split(" ")
            if len(parts) == 6:
                parts[0] = "plateau"
            out.append("o=" + " ".join(parts))
        else:
            out.append(line)
    return _join(out)


@dataclass
class Origin:
    """The ``o=`` line of one leg as the gateway presents it: fixed id, growing version."""

    session_id: int = field(default_factory=lambda: secrets.randbelow(2**62) + 1)
    version: int = 0
    _last: bytes | None = None

    def stamp(self, sdp: bytes) -> bytes:
        """``sdp`` with this leg's origin; the version grows only when the body changed."""
        lines = _lines(sdp)
        body = _join([line for line in lines if not line.startswith("o=")])
        if body != self._last:
            self.version += 1
            self._last = body
        out = []
        for line in lines:
            if line.startswith("o="):
                parts = line[2:].split(" ")
                address = " ".join(parts[3:6]) if len(parts) == 6 else "IN IP4 0.0.0.0"
                out.append(f"o=plateau {self.session_id} {self.version} {address}")
            else:
                out.append(line)
        return _join(out)
