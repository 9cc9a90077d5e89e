"""Durations on the command line: a whole number and a unit, such as 90s, 30m, 12h or 7d."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str, *, units: str = "hd", allow_zero: bool = False) -> timedelta:
    """Parse ``text`` with one of ``units``; raise ValueError naming the accepted form.

    "0" alone is accepted when ``allow_zero`` is set; otherwise a duration of zero is invalid.
    """
    value = text.strip()
    if allow_zero and value == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(value)
    if match is None or match.group(2) not in units:
        examples = " or ".join(f"{n}{u}" for n, u in zip((90, 30, 12, 7), "smhd") if u in units)
        raise ValueError(f"invalid duration {text!r}: use a whole number with {', '.join(units)}, such as {examples}")
    amount = int(match.group(1))
    if amount == 0 and not allow_zero:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return timedelta(**{_UNITS[match.group(2)]: amount})
