"""``--compare BASELINE.json``: each figure next to the same figure of an earlier ``--json`` run.

A figure is matched by its concern, name and baseline name. What is compared is the figure a
target is about: the ratio to its same-run baseline where it has one (absolute times move with the
machine's load, ratios much less), else the value itself. A change counts as a regression only
beyond the noise: the larger of the two runs' spreads between repetitions (``Result.spread``), or
``ASSUMED_NOISE`` for a figure measured once in both runs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from benchmarks._report import Result, Skipped, fmt

ASSUMED_NOISE = 0.20  # a figure with no repetitions in either run: a change under 20 % is not flagged
MIN_NOISE = 0.02  # two repetitions can agree by chance; never call a 1 % change a regression


class BaselineError(Exception):
    """The file given to ``--compare`` is not a ``--json`` output of these benchmarks."""


@dataclass(frozen=True, slots=True)
class Change:
    """One figure of this run against the same figure of the baseline run."""

    new: Result
    old: Result
    relative: float  # > 0: worse, < 0: better, as a fraction of the old figure
    noise: float
    assumed: bool  # no spread recorded in either run

    @property
    def regression(self) -> bool:
        return self.relative > self.noise


def load(path: Path) -> list[Result]:
    """The figures saved by ``--json`` (skipped cases have no figure to compare)."""
    try:
        data = json.loads(path.read_text())
        rows = data["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{path} is not a benchmark result file written by --json ({type(exc).__name__}: {exc})"
        raise BaselineError(msg) from None
    names = {f.name for f in fields(Result)}
    out = []
    for row in rows:
        if row.get("kind") == "Result":
            out.append(Result(**{k: v for k, v in row.items() if k in names}))
    return out


def _higher_is_better(r: Result) -> bool:
    if r.target:
        return r.target.startswith(">=")
    return r.unit.endswith("/s")  # speeds; times, sizes and counts are costs


def _figure(r: Result) -> float | None:
    return r.ratio if r.baseline is not None else r.value


def _keyed(results: list[Result | Skipped] | list[Result]) -> dict[tuple[str, str, str, int], Result]:
    seen: Counter[tuple[str, str, str]] = Counter()
    out = {}
    for r in results:
        if isinstance(r, Result):
            key = (r.concern, r.name, r.baseline_name)
            out[(*key, seen[key])] = r
            seen[key] += 1
    return out


def compare(new: Result, old: Result) -> Change | None:
    """How much worse ``new`` is than ``old`` (negative: better), and the noise it must exceed."""
    a, b = _figure(new), _figure(old)
    if a is None or b is None or b == 0:
        return None
    relative = (a - b) / abs(b)
    if _higher_is_better(new):
        relative = -relative
    spreads = [s for s in (new.spread, old.spread) if s is not None]
    noise = max([MIN_NOISE, *spreads]) if spreads else ASSUMED_NOISE
    return Change(new, old, relative, noise, not spreads)


def line(c: Change) -> str:
    """One printed line: the figure, the earlier one, the change and whether it is beyond the noise."""
    n, o = c.new, c.old
    text = f"[{n.concern}] {n.name}: {fmt(n.value, n.unit)} (was {fmt(o.value, o.unit)})"
    if n.baseline is not None and o.baseline is not None:
        text += f" | {n.baseline_name}: {fmt(n.baseline, n.unit)} (was {fmt(o.baseline, o.unit)})"
        text += f" | ratio {n.ratio:.2f} (was {o.ratio:.2f})"
    pct = abs(c.relative) * 100
    noise = f"noise +-{c.noise * 100:.1f} %" + (" assumed" if c.assumed else "")
    if c.regression:
        verdict = f"REGRESSION: {pct:.1f} % worse, beyond {noise}"
    elif pct < 0.05:
        verdict = f"unchanged ({noise})"
    elif c.relative < -c.noise:
        verdict = f"better by {pct:.1f} % ({noise})"
    else:
        verdict = f"within noise ({pct:.1f} % {'worse' if c.relative > 0 else 'better'}, {noise})"
    return f"{text} | {verdict}"


def report(results: list[Result | Skipped] | list[Result], baseline: list[Result]) -> tuple[list[str], int]:
    """Printed lines for every figure of this run, and how many regressed beyond the noise."""
    old = _keyed(baseline)
    lines, regressions = [], 0
    for key, r in _keyed(results).items():
        before = old.get(key)
        change = compare(r, before) if before is not None else None
        if change is None:
            lines.append(f"[{r.concern}] {r.name}: {fmt(r.value, r.unit)} | not in the baseline run")
            continue
        regressions += change.regression
        lines.append(line(change))
    return lines, regressions
