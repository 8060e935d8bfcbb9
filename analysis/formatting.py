"""Number formatting for the reports and figures: significant digits, percentages from fractions, the confidence
level as a percentage, intervals, counts as 16.4k / 2.43B. Formatting only: no number is typed here."""

from __future__ import annotations

import math


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def significant(value, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits; '-' for a missing or non-finite value (never '-0')."""
    if not _finite(value):
        return "-"
    return f"{0.0 if value == 0 else float(value):.{digits}g}"


def percent(value, digits: int = 1, signed: bool = False) -> str:
    """A fraction as a percentage: 0.0213 -> '2.1%' (no '-0.0%'); '-' when missing."""
    if not _finite(value):
        return "-"
    text = f"{100 * float(value):{'+' if signed else ''}.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return f"{text}%"


def percent_significant(value, digits: int = 3, signed: bool = False) -> str:
    """A fraction as a percentage to ``digits`` significant digits, in fixed notation: 3.91e-5 -> '0.00391%', 0.0485 ->
    '4.85%', so a small value that is not 0 never reads as 0.00%; '-' when missing."""
    if not _finite(value):
        return "-"
    scaled = float(f"{100 * float(value):.{digits}g}")  # rounded first: 0.009999 -> 1.00%, not 1.000%
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(scaled)))) if scaled else 0
    return f"{scaled:{'+' if signed else ''}.{decimals}f}%"


def level(value) -> str:
    """A confidence level as a percentage: 0.95 -> '95%', 0.9 -> '90%', 0.975 -> '97.5%'."""
    return f"{100 * float(value):g}%"


def count(value) -> str:
    """A raw count for reading: 16384 -> '16.4k', 1.389e7 -> '13.9M', 2.43e9 -> '2.43B'."""
    if not _finite(value):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _end(value, formatter, sign: str) -> str:
    return formatter(value) if _finite(value) else f"{sign}inf"


def interval(pair, digits: int = 3) -> str:
    """' [low, high]' of an interval (an open end shows as -inf/+inf); '' without one."""
    if not pair or len(pair) != 2:
        return ""
    return f" [{_end(pair[0], lambda v: significant(v, digits), '-')}, {_end(pair[1], lambda v: significant(v, digits), '+')}]"


def percent_interval(pair, digits: int = 1) -> str:
    """' [low%, high%]' of an interval of fractions (an open end shows as -inf/+inf); '' without one."""
    if not pair or len(pair) != 2:
        return ""
    return f" [{_end(pair[0], lambda v: percent(v, digits), '-')}, {_end(pair[1], lambda v: percent(v, digits), '+')}]"


def percent_significant_interval(pair, digits: int = 3) -> str:
    """' [low%, high%]' of an interval of fractions, each end to ``digits`` significant digits (``percent_significant``)."""
    if not pair or len(pair) != 2:
        return ""
    return (f" [{_end(pair[0], lambda v: percent_significant(v, digits), '-')}, "
            f"{_end(pair[1], lambda v: percent_significant(v, digits), '+')}]")


def percent_estimate(estimate, digits: int = 1) -> str:
    """'-2.1% [-4.6%, 7.9%]' or '-2.1% (no interval)' of a ``{"value", "interval"}`` record."""
    if not estimate or not _finite(estimate.get("value")):
        return "-"
    text = percent(estimate["value"], digits) + (percent_interval(estimate.get("interval"), digits) or " (no interval)")
    if estimate.get("dropped"):  # the verdict reads the interval with the dropped resamples at either extreme
        bounded = estimate.get("interval_with_dropped") or [None, None]
        within = percent_interval(bounded, digits) if all(_finite(v) for v in bounded) else " unbounded"
        noun = "resample" if estimate["dropped"] == 1 else "resamples"
        text += f" ({estimate['dropped']} {noun} dropped; counted at either extreme:{within})"
    return text


def estimate_text(estimate, digits: int = 4) -> str:
    """'1.39e+07 [1.26e+07, 1.43e+07]' of a ``{"value", "interval"}`` record."""
    if not estimate or not _finite(estimate.get("value")):
        return "-"
    return significant(estimate["value"], digits) + interval(estimate.get("interval"))


def cell(row) -> str:
    """A Markdown table cell: '|' escaped, no line breaks."""
    return str(row).replace("|", "\\|").replace("\n", " ")
