"""The stats projector's pure domain: what the reports count, and how.

No I/O and no clock: time comes in with the facts. ``facts`` maps events to reporting
facts (the one place a new event type is taught); ``intervals`` splits time exactly at
15-minute boundaries and reads roll-up periods in a tenant's zone; ``calls`` assembles a
call's detail record and contribution from its facts in any order; ``agents`` folds an
agent's state timeline; ``contributions`` adds them up and diffs them; ``metrics`` holds
the measures and the versioned formulas of docs/metrics.md.
"""
