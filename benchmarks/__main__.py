"""``python -m benchmarks [--quick] [--only step,open,...] [--no-dbos] [--json FILE] [--compare BASELINE.json]``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from benchmarks import _compare
from benchmarks._report import Result, Skipped, line, write_json
from benchmarks._util import Config, machine

# Concern name -> module; each module has run(cfg) -> list[Result | Skipped].
CONCERNS = {
    "step": "step",
    "open": "open_store",
    "primitives": "primitives",
    "throughput": "throughput",
    "memory": "memory",
    "notebook": "notebook",
    "headless": "headless",
    "inplace": "inplace",
    "fork": "fork",
    "takeover": "takeover",
    "postgres": "postgres",
    "sweep": "sweep",
    "import": "imports",
    "resume": "resume",
    "bigstore": "bigstore",
    "datascience": "datascience",
    "midsize": "midsize",
    "bigdata": "bigdata",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that every concern runs (figures mean nothing)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated concerns among {', '.join(CONCERNS)}")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison (it takes seconds to start)")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine description here")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="BASELINE.json",
        help="print each figure next to the same figure of an earlier --json run and flag "
        "regressions beyond the noise between repetitions (exit status 1 when there are any)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        metavar="RUN.json",
        help="with --compare: compare this saved --json run instead of measuring now",
    )
    args = parser.parse_args(argv)
    if args.results and not args.compare:
        parser.error("--results needs --compare BASELINE.json")
    chosen = [c.strip() for c in args.only.split(",") if c.strip()] or list(CONCERNS)
    unknown = [c for c in chosen if c not in CONCERNS]
    if unknown:
        parser.error(f"unknown concern(s) {', '.join(unknown)}; choose among {', '.join(CONCERNS)}")
    args.concerns = chosen
    return args


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    baseline: list[Result] = []
    if args.compare:
        try:
            baseline = _compare.load(args.compare)
            if args.results:
                return _print_comparison(_compare.load(args.results), baseline, args.compare)
        except _compare.BaselineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    cfg = Config.make(args.quick or args.smoke, dbos=not args.no_dbos, smoke=args.smoke)
    meta = machine()
    sizes = "smoke" if args.smoke else "quick" if cfg.quick else "full"
    print(f"# resumable benchmarks ({sizes} sizes) on {meta['cpu']}, "
          f"{meta['cores']} cores, {meta['memory_gib']} GiB, Python {meta['python']}", flush=True)  # fmt: skip
    results: list[Result | Skipped] = []
    for concern in args.concerns:
        started, load_before = time.perf_counter(), _load()
        module = importlib.import_module(f"benchmarks.{CONCERNS[concern]}")
        try:
            found = module.run(cfg)
        except Exception as exc:  # one broken concern must not hide the others' figures
            found = [Skipped(concern, "all", f"{type(exc).__name__}: {exc}")]
        for r in found:
            print(line(r), flush=True)
        # Other work on the machine skews absolute figures; the load average tells a reader how much.
        took = time.perf_counter() - started
        print(f"# {concern} took {took:.1f} s; 1-min load average {load_before:.1f} before, {_load():.1f} after",
              flush=True)  # fmt: skip
        results += found
    if args.json:
        write_json(
            args.json,
            results,
            {**meta, "quick": cfg.quick, "smoke": args.smoke, "argv": sys.argv[1:] if argv is None else argv},
        )
    if args.compare:
        return _print_comparison(results, baseline, args.compare)
    return 0


def _print_comparison(results: list[Result | Skipped] | list[Result], baseline: list[Result], path: Path) -> int:
    """Print every figure next to the baseline run's; 1 when any regressed beyond the noise."""
    lines, regressions = _compare.report(results, baseline)
    print(f"# compared with {path}: a figure is flagged when it is worse by more than the noise between "
          f"repetitions (the larger of the two runs'; {_compare.ASSUMED_NOISE:.0%} assumed where neither "
          f"repeated it)")  # fmt: skip
    for text in lines:
        print(text)
    print(f"# {regressions} regression(s) beyond the noise")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
