"""The one verdict rule: every verdict the reports show comes from here, and its words live only here.

A claim is tested through a quantity whose sign says what the claim predicts (positive: as claimed)
and an interval for it at the configured confidence level:

* **supported**: the interval lies above the reference (0 unless stated, e.g. a chance rate);
* **contradicted**: the interval lies below it;
* **inconclusive**: the interval contains it (or has an open end on that side);
* **not tested**: the evidence cannot test the claim (a law that could not be fitted, optima mostly
  on the grid's edge, no held-out runs, no interval).

A claim made of several parts is supported when every part is, contradicted when any part is, not
tested when any part is not tested (and none is contradicted), and inconclusive otherwise.
"""

from __future__ import annotations

from typing import Iterable, Sequence

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED)

RULE = ("supported when the interval of the tested quantity lies above the reference, contradicted when it lies below, "
        "inconclusive when it contains the reference; not tested when the evidence cannot test the claim")


def from_interval(interval: Sequence[float | None] | None, reference: float = 0.0) -> str:
    """The verdict of one interval against ``reference``; an open end (None) reaches past the reference."""
    if interval is None or len(interval) != 2:
        return NOT_TESTED
    low, high = interval
    if low is not None and low > reference:
        return SUPPORTED
    if high is not None and high < reference:
        return CONTRADICTED
    return INCONCLUSIVE


def all_of(verdicts: Iterable[str]) -> str:
    """The verdict of a claim made of parts (module docstring)."""
    verdicts = list(verdicts)
    if not verdicts:
        return NOT_TESTED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if NOT_TESTED in verdicts:
        return NOT_TESTED
    return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE


def not_tested() -> str:
    """The verdict of a claim the evidence cannot test (the caller records why)."""
    return NOT_TESTED


def flipped(interval: Sequence[float | None] | None) -> list[float | None] | None:
    """The interval of the negated quantity (for a claim that predicts a negative sign)."""
    if interval is None:
        return None
    low, high = interval
    return [None if high is None else -high, None if low is None else -low]
