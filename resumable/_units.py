"""Sizes, durations and times as people read them, and which numbers of seconds an option accepts.

The one home for these: the CLI, the magics, the panel and the headless executor all format with
the functions below, so a duration or a time reads the same wherever it is shown.
"""

from __future__ import annotations

import math
from datetime import datetime

UNKNOWN = "\u2014"


def human_size(n_bytes: int | None) -> str:
    """``512 B``, ``1.2 kB``, ``3.4 MB`` (decimal units, as file managers show them)."""
    if n_bytes is None:
        return UNKNOWN
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


def human_duration(seconds: float | None) -> str:
    """``0.41 s``, ``12.3 s``, ``2 min 03 s``, ``1 h 02 min``; an em dash when unknown."""
    if seconds is None:
        return UNKNOWN
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def human_time(moment: datetime | float | None) -> str:
    """A moment in local time, ``2026-11-25 10:02:11``; ``""`` when unknown.

    Takes a datetime (an aware one is converted to local time) or seconds since the epoch.
    """
    if moment is None:
        return ""
    local = datetime.fromtimestamp(moment) if isinstance(moment, (int, float)) else moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S")


def is_seconds(value: object, *, zero_ok: bool) -> bool:
    """Whether ``value`` is a finite number of seconds: 0 or more (``zero_ok``), else above 0.

    ``nan`` and the infinities are refused here, where the option is given: later they would fail
    inside ``setitimer`` or ``sleep`` with an error that names neither the option nor the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if zero_ok else value > 0
