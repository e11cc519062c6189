"""Contributions: what one call or one agent state span adds to the interval measures.

A projection keeps, per call, the contribution it last added. When a call's facts change
(a late or out-of-order event), the new contribution is computed from all its facts and
only the difference is applied: the measures then depend on the set of facts received,
never on the order they arrived in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from plateau_stats_projector.domain.intervals import interval_of, split
from plateau_stats_projector.domain.metrics import Dimension


class Key(NamedTuple):
    """Where a measure is counted: a queue, agent or campaign, an interval, a measure."""

    dimension: Dimension
    dimension_id: str
    interval_ms: int
    measure: str


Contribution = Counter[Key]


def add_count(
    out: Contribution, owner: tuple[Dimension, str], at_ms: int, measure: str, value: int = 1
) -> None:
    """Count ``value`` in the interval holding ``at_ms``."""
    if value:
        out[Key(owner[0], owner[1], interval_of(at_ms), measure)] += value


def add_duration(
    out: Contribution, owner: tuple[Dimension, str], start_ms: int, end_ms: int, measure: str
) -> None:
    """Add ``[start, end)`` to ``measure``, split exactly across the intervals it covers."""
    for interval, ms in split(start_ms, end_ms):
        out[Key(owner[0], owner[1], interval, measure)] += ms


def delta(old: Mapping[Key, int], new: Mapping[Key, int]) -> dict[Key, int]:
    """What to add to the measures to turn ``old`` into ``new`` (no zero entries)."""
    change: dict[Key, int] = {}
    for key in old.keys() | new.keys():
        diff = new.get(key, 0) - old.get(key, 0)
        if diff:
            change[key] = diff
    return change


def total(contributions: Iterable[Mapping[Key, int]]) -> Contribution:
    """The sum of several contributions."""
    out: Contribution = Counter()
    for contribution in contributions:
        out.update(contribution)
    return out
