"""Results and how they are printed: one line per figure, with its baseline and the target ratio."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure, optionally compared with a baseline from the same run.

    ``ratio`` is ``value / baseline`` for costs (lower is better) and ``value / baseline`` for
    speeds too; ``target`` says which side of it is good (``"<= 0.5"`` or ``">= 1"``).
    ``spread`` is the noise between repetitions of the same run: half the range of the repeated
    figure (the ratio where there is a baseline) over its median, so 0.08 means +-8 %. ``None``
    when the figure was measured once; ``--compare`` then assumes ``ASSUMED_NOISE``.
    """

    concern: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    note: str = ""
    spread: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if not self.target or self.ratio is None:
            return ""
        op, bound = self.target.split()
        ok = self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)
        return "ok" if ok else "MISS"


def spread(samples: list[float]) -> float | None:
    """Half the range of repeated measurements over their median (0.1 = +-10 %); None for fewer than two."""
    if len(samples) < 2:
        return None
    ordered = sorted(samples)
    mid = statistics.median(ordered)
    return (ordered[-1] - ordered[0]) / 2 / abs(mid) if mid else None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A concern or case that could not be measured here, with the reason."""

    concern: str
    name: str
    reason: str


def fmt(value: float, unit: str) -> str:
    """A figure with 3 significant digits and its unit."""
    return f"{value:.3g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def line(r: Result | Skipped) -> str:
    """The printed form; every compared figure carries the word 'ratio' (the smoke test reads it)."""
    if isinstance(r, Skipped):
        return f"[{r.concern}] {r.name}: SKIPPED - {r.reason}"
    text = f"[{r.concern}] {r.name}: {fmt(r.value, r.unit)}"
    if r.baseline is not None:
        text += f" | {r.baseline_name}: {fmt(r.baseline, r.unit)}"
        if r.ratio is not None:
            text += f" | ratio {r.ratio:.2f}"
        if r.target:
            text += f" (target {r.target}: {r.verdict})"
    if r.note:
        text += f"  [{r.note}]"
    if r.spread is not None:
        text += f"  [noise +-{r.spread * 100:.1f} % between repetitions]"
    return text


def write_json(path: Path, results: list[Result | Skipped], meta: dict[str, object]) -> None:
    """Save every figure (with the machine description) for docs/performance.md."""
    rows = []
    for r in results:
        row = asdict(r)
        row["kind"] = type(r).__name__
        if isinstance(r, Result):
            row["ratio"] = r.ratio
            row["verdict"] = r.verdict
        rows.append(row)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str))
