"""Telephone numbers as the gateway compares them: E.164, after normalisation.

A number reaches the gateway in many spellings: the dialer's files say ``+242066123456``,
a carrier's Request-URI may say ``242066123456`` or ``066123456``, an agent types
``06 612 34 56`` or ``00242066123456`` on a softphone. Two spellings are the same number
when they normalise to the same E.164 string; every comparison (allow-list, trunk entry
points) is done on that string only.

National formats are read in ``default_region`` (``CG``, the Republic of the Congo, as
the dialer's imports). Normalisation uses Google's libphonenumber metadata
(``phonenumbers``) and accepts a number when it is *possible* (a plausible length for its
country), not only when it is in a currently assigned range: refusing a real number
because the metadata is a release behind would be a worse failure than letting an
unassigned number reach the allow-list, which refuses it anyway unless it is in a file.
"""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "CG"
"""Region national numbers are read in when no other is configured."""

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# Whatever people and softphones put between digits; anything else (letters, `*`, `#`,
# SIP URI syntax) makes a number malformed rather than being silently dropped.
_VISUAL_SEPARATORS = re.compile(r"[\s.\-()/]")
_DIALLABLE = re.compile(r"^\+?[0-9]+$")
MAX_INPUT_LENGTH = 32
"""Longer input is refused outright (it is attacker-controlled and never a real number)."""


class MalformedNumberError(ValueError):
    """A string is not a telephone number that can be written in E.164."""


def normalise(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """The E.164 form (``+242066123456``) of ``raw``, read in ``default_region`` if national.

    Raises ``MalformedNumberError`` naming the input when it is not a possible number.
    """
    if len(raw) > MAX_INPUT_LENGTH:
        raise MalformedNumberError(f"number too long ({len(raw)} characters): {raw[:16]!r}...")
    compact = _VISUAL_SEPARATORS.sub("", raw)
    if not _DIALLABLE.fullmatch(compact):
        raise MalformedNumberError(
            f"not a telephone number: {raw!r} (digits, an optional leading + and "
            "spaces, dots, dashes or brackets only)"
        )
    try:
        parsed = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException as exc:
        raise MalformedNumberError(f"not a telephone number: {raw!r} ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise MalformedNumberError(
            f"not a possible number: {raw!r} (wrong length for country code +{parsed.country_code})"
        )
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not _E164.fullmatch(e164):  # pragma: no cover - libphonenumber guarantees this
        raise MalformedNumberError(f"not representable in E.164: {raw!r}")
    return e164


def try_normalise(raw: str, default_region: str = DEFAULT_REGION) -> str | None:
    """``normalise`` that answers ``None`` instead of raising, for lookups."""
    try:
        return normalise(raw, default_region)
    except MalformedNumberError:
        return None
