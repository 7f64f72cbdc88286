"""Stores of many runs for the retention tests and benchmark: small inline checkpoints plus payload files.

Every value is derived from its run and step, so a test can check that a restore is byte-identical
without keeping the values around. ``python tests/retention_store.py DIR --runs 20 --mb 100``
measures the benchmark case (docs/performance.md): build, collect down to 2 runs, compare sizes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import resumable
from resumable._store import forget_all, open_store

INLINE_BYTES = 240_000  # under the inline limit (256 KiB): kept inside the database file
FILE_BYTES = 300_000  # over it: a payload file


def value(run_id: str, step: str, size: int) -> bytes:
    """The bytes step ``step`` of run ``run_id`` returns: random-looking, so nothing compresses them away."""
    seed = int.from_bytes(hashlib.sha256(f"{run_id}/{step}".encode()).digest()[:8], "big")
    return random.Random(seed).randbytes(size)


def step_sizes(mb: float) -> dict[str, int]:
    """The steps of one run and the size each returns: ``mb`` megabytes inline, one payload file."""
    sizes = {f"s{k:03d}": INLINE_BYTES for k in range(max(1, int(mb * 1e6 // INLINE_BYTES)))}
    sizes["payload"] = FILE_BYTES
    return sizes


def build(store: Path, run_ids: list[str], mb: float, pipeline: str = "etl") -> None:
    """Run one pipeline run per id, each completing every step of ``step_sizes(mb)``."""
    pipe = resumable.Pipeline(pipeline, store=store)
    sizes = step_sizes(mb)
    for run_id in run_ids:
        with pipe.run(run_id=run_id, new=True) as run:
            for step, size in sizes.items():
                run.step(step, value, run_id, step, size)
    forget_all()


def restore_all(store: Path, run_id: str, mb: float) -> None:
    """Every step of the run restores the very bytes it returned (AssertionError naming the first that does not)."""
    opened = open_store(store)
    for step, size in step_sizes(mb).items():
        ref = [r for r in opened.checkpoint_refs(run_id, step) if r.name == "return"]
        assert ref, f"run {run_id}: step {step} has no checkpoint"
        assert opened.load_value(ref[0]) == value(run_id, step, size), f"run {run_id}: step {step} restored wrong"


def disk_bytes(store: Path) -> tuple[int, int]:
    """(database file, payload folder) sizes in bytes."""
    payloads = store.with_name(store.name + ".payloads")
    files = sum(f.stat().st_size for f in payloads.rglob("*") if f.is_file()) if payloads.exists() else 0
    return store.stat().st_size, files


def copy_store(source: Path, target: Path) -> None:
    """Copy a store that no process has open: the database file and its payload folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    payloads = source.with_name(source.name + ".payloads")
    if payloads.exists():
        shutil.copytree(payloads, target.with_name(target.name + ".payloads"))


def benchmark(folder: Path, runs: int, mb: float) -> None:
    """Build ``runs`` runs of ``mb`` MB, collect down to the newest 2 with the CLI, and print the sizes."""
    store = folder / "store.duckdb"
    ids = [f"r{i:03d}" for i in range(runs)]
    start = time.monotonic()
    build(store, ids, mb)
    built = time.monotonic() - start
    before = disk_bytes(store)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "resumable", "gc", "--keep-last", "2", "--store", str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    collected = time.monotonic() - start
    after = disk_bytes(store)
    fresh = folder / "fresh" / "store.duckdb"
    build(fresh, ids[-2:], mb)
    yardstick = disk_bytes(fresh)
    for run_id in ids[-2:]:
        restore_all(store, run_id, mb)
    forget_all()
    print(proc.stdout.strip())
    print(f"built {runs} runs of {mb} MB in {built:.1f} s: database {before[0] / 1e6:.1f} MB, payloads "
          f"{before[1] / 1e6:.1f} MB")  # fmt: skip
    print(
        f"gc --keep-last 2 took {collected:.1f} s: database {after[0] / 1e6:.1f} MB, payloads {after[1] / 1e6:.1f} MB"
    )
    print(
        f"a fresh store of the 2 kept runs: database {yardstick[0] / 1e6:.1f} MB, payloads {yardstick[1] / 1e6:.1f} MB"
    )
    print(f"ratio (database + payloads): {sum(after) / sum(yardstick):.2f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mb", type=float, default=100.0)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    os.environ.pop("RESUMABLE_STORE", None)
    benchmark(args.folder, args.runs, args.mb)
