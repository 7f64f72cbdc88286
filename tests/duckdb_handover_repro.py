"""DuckDB alone: processes that each open one file for a short INSERT+UPDATE transaction, then close it.

This is how resumable's store hands the file between processes. Without a lock of its own around
``connect .. close``, DuckDB can read the file's header while another process writes it (DuckDB
reads the header before it takes its own lock), and a committed transaction is lost or the open
fails with ``Could not read enough bytes`` / a checksum error, mostly under CPU load.

Run it by hand to see the fault (``--no-lock``) or to check the fix (default: each open is held
under ``resumable._store.filelock``, as the store does)::

    python tests/duckdb_handover_repro.py STORE --writers 4 --per-writer 150 --busy 3 [--no-lock]

It prints one JSON line: ``{"lost": [...], "errors": [...], "committed": N, "seconds": S}``.
``tests/test_multiprocess.py`` runs it through the lock as a regression test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb

BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def _open(path: str) -> duckdb.DuckDBPyConnection:
    """Connect, retrying while another process holds DuckDB's own lock (as the store does)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return duckdb.connect(path, config={"threads": 1})
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def writer(path: str, who: int, count: int, use_lock: bool) -> None:
    """Open, INSERT a 'running' row, UPDATE it to 'done', COMMIT, close: ``count`` times."""
    from resumable._store import filelock

    committed: list[int] = []
    errors: list[str] = []
    for i in range(count):
        if use_lock:
            filelock.acquire(Path(path), 60)
        try:
            con = _open(path)
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute("INSERT INTO t VALUES (?, ?, 'running')", [who, i])
                con.execute("UPDATE t SET state = 'done' WHERE who = ? AND i = ?", [who, i])
                con.execute("COMMIT")
                committed.append(i)
            finally:
                con.close()
        except duckdb.Error as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if use_lock:
                filelock.release(Path(path))
    print(json.dumps({"who": who, "committed": committed, "errors": errors}), flush=True)


def campaign(path: Path, writers: int, per_writer: int, busy: int, use_lock: bool) -> dict[str, object]:
    """Run the writers (and busy-loop processes for CPU load); report lost rows and errors."""
    if path.exists():
        path.unlink()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (who INTEGER, i INTEGER, state VARCHAR)")
    con.close()
    started = time.monotonic()
    burners = [subprocess.Popen([sys.executable, "-c", BUSY, "120"]) for _ in range(busy)]
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, str(path), "--as-writer", str(w), "--per-writer", str(per_writer)]
                + ([] if use_lock else ["--no-lock"]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(writers)
        ]
        reports = []
        errors: list[str] = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            if p.returncode != 0:
                errors.append(f"writer exited {p.returncode}: {err.strip()[-500:]}")
                continue
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    con = duckdb.connect(str(path))
    stored = {(w, i): s for w, i, s in con.execute("SELECT who, i, state FROM t").fetchall()}
    con.close()
    lost = []
    for r in reports:
        errors.extend(r["errors"])
        lost.extend(f"{r['who']}/{i}" for i in r["committed"] if stored.get((r["who"], i)) != "done")
    return {
        "lost": lost,
        "errors": errors,
        "committed": sum(len(r["committed"]) for r in reports),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=150)
    parser.add_argument("--busy", type=int, default=3)
    parser.add_argument("--no-lock", action="store_true")
    parser.add_argument("--as-writer", type=int, default=None)
    args = parser.parse_args()
    if args.as_writer is not None:
        writer(str(args.store), args.as_writer, args.per_writer, not args.no_lock)
        return
    print(json.dumps(campaign(args.store, args.writers, args.per_writer, args.busy, not args.no_lock)))


if __name__ == "__main__":
    main()
