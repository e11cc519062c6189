"""The tenant's do-not-call list: which numbers a request names, and what adding or removing
them records.

A number on the list is never dialled: imports scrub it, and the compliance check of every
dial reads the list at dial time, so a number added after a file was imported is refused
from the next dial on. Each change is a fact of the number's own stream
(``dnc.number_added`` / ``dnc.number_removed``); a request that changes nothing records
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers

from plateau_contracts.events.dialer import DoNotCallNumberAdded, DoNotCallNumberRemoved
from plateau_dialer.domain.contacts_file import ContactRules, normalise_number

#: Any valid number may be listed, whatever the regions the campaigns dial: listing a
#: number nobody dials harms no one, and refusing it would surprise the operator.
ANY_REGION = frozenset(phonenumbers.SUPPORTED_REGIONS)


class BadNumberError(ValueError):
    """A number of the request is not a phone number; nothing of the request is recorded."""


def listing_rules(default_region: str) -> ContactRules:
    """How numbers of a do-not-call request or file are read: as a customer file's, in the
    default region, any region allowed, nothing scrubbed."""
    return ContactRules(default_region=default_region, allowed_regions=ANY_REGION)


def read_numbers(texts: Sequence[str], default_region: str) -> list[str]:
    """The E.164 numbers of a request, in order, each once; ``BadNumberError`` names the
    first one that cannot be read, and why."""
    if not texts:
        raise BadNumberError("numbers: give at least one number")
    rules = listing_rules(default_region)
    numbers: dict[str, None] = {}
    for text in texts:
        number = normalise_number(text, rules)
        if isinstance(number, tuple):
            _, why = number
            raise BadNumberError(
                f"{text!r} is not a number that can be listed ({why}); write it in E.164 "
                f"(+242066123456) or as dialled in {default_region} (06 612 34 56)"
            )
        numbers[number] = None
    return list(numbers)


@dataclass(frozen=True)
class Change:
    """What a request records, and the numbers it leaves as they were."""

    events: list[DoNotCallNumberAdded | DoNotCallNumberRemoved]
    unchanged: list[str]

    @property
    def changed(self) -> list[str]:
        return [e.number for e in self.events]


def add(
    numbers: Iterable[str],
    listed: frozenset[str],
    *,
    reason: str | None,
    source: str,
    added_by: str,
) -> Change:
    """Put ``numbers`` on the list; those already ``listed`` stay as they are."""
    wanted = list(dict.fromkeys(numbers))
    return Change(
        [
            DoNotCallNumberAdded(number=n, reason=reason, source=source, added_by=added_by)
            for n in wanted
            if n not in listed
        ],
        [n for n in wanted if n in listed],
    )


def remove(
    numbers: Iterable[str], listed: frozenset[str], *, reason: str | None, removed_by: str
) -> Change:
    """Take ``numbers`` off the list; those not ``listed`` stay as they are."""
    wanted = list(dict.fromkeys(numbers))
    return Change(
        [
            DoNotCallNumberRemoved(number=n, reason=reason, removed_by=removed_by)
            for n in wanted
            if n in listed
        ],
        [n for n in wanted if n not in listed],
    )
