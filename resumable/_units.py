"""Sizes and durations as people read them; shared by the CLI, the magics and the panel."""

from __future__ import annotations

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
