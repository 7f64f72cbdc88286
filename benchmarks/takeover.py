"""From a worker's death (SIGKILL) to another worker resuming its run, on DuckDB and on PostgreSQL.

Worker A owns a run and sits inside a step; worker B is already polling for the run (refused with
RunOwnedError, retrying every 10 ms). The instant A is killed is taken just before the SIGKILL; the
instant B resumes is stamped by B's step body. Three cases per store:

- B on the same host: A's death is seen by its pid, so the takeover costs B's next poll and claim.
  Baseline: the same hand-over when A leaves cleanly (its step fails, it releases the run and exits),
  measured in the same run; the ratio says what a crash adds to a clean exit.
- B on another host (its host name faked, as the tests do): A's pid cannot be checked, so B waits
  for A's lease to run out. Baseline: the lease length (``RESUMABLE_LEASE_S``); the ratio is at most
  about 1, since A renewed its lease at most a third of a lease before it died.

PostgreSQL: ``RESUMABLE_BENCH_PG`` names a database to use (each case gets a fresh one of its own
name); otherwise a throwaway cluster is started as the tests start one, and the store is skipped
with the reason where that is impossible.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks._report import Result, Skipped
from benchmarks._util import Config

CONCERN = "takeover"
LEASE_S = 3.0

# argv: store, folder, host, role ('a-kill', 'a-clean' or 'b').
WORKER = r"""
import os, socket, sys, time, pathlib
store, folder, host, role = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
socket.gethostname = lambda: host
import resumable
pipe = resumable.Pipeline("bench", store=store)

def stamp(name):
    (folder / (name + ".tmp")).write_text(repr(time.time()))
    os.replace(folder / (name + ".tmp"), folder / name)

if role.startswith("a"):
    def long():
        stamp("a.in")
        while not (folder / "go").exists():
            time.sleep(0.01)
        raise RuntimeError("leaving cleanly")
    try:
        with pipe.run(run_id="r") as run:
            run.step("first", lambda: 1)
            run.step("long", long)
    except RuntimeError:
        pass
    stamp("a.gone")
    os._exit(0)

def resumed():
    stamp("b.resumed")
    return 2

told = False
while True:
    try:
        with pipe.run(run_id="r") as run:
            run.step("first", lambda: 1)
            run.step("long", resumed)
        break
    except resumable.RunOwnedError:
        if not told:
            stamp("b.polling")
            told = True
        time.sleep(0.01)
"""


def _wait(path: Path, procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for proc in procs:
            if proc.poll() not in (None, 0, -signal.SIGKILL):
                raise RuntimeError(f"a worker failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} never appeared")
        time.sleep(0.002)
    return float(path.read_text())


def one(store: str, kill: bool, other_host: bool) -> float:
    """Seconds from A's death (or clean exit) to B's resumed step."""
    env = {**os.environ, "RESUMABLE_LEASE_S": str(LEASE_S)}
    with tempfile.TemporaryDirectory(prefix="rsm-takeover-") as tmp:
        folder = Path(tmp)
        if store == "duckdb":
            store = str(folder / "store.duckdb")

        def start(host: str, role: str) -> subprocess.Popen[bytes]:
            command = [sys.executable, "-c", WORKER, store, str(folder), host, role]
            return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)

        a = start("host-a", "a-kill" if kill else "a-clean")
        procs = [a]
        try:
            _wait(folder / "a.in", procs)
            b = start("host-b" if other_host else "host-a", "b")
            procs.append(b)
            _wait(folder / "b.polling", procs)
            if kill:
                gone = time.time()
                os.kill(a.pid, signal.SIGKILL)
            else:
                (folder / "go").touch()
                gone = _wait(folder / "a.gone", procs)
            resumed = _wait(folder / "b.resumed", procs)
            if b.wait(timeout=120) != 0:
                raise RuntimeError(f"worker B failed: {b.stderr.read().decode() if b.stderr else ''}")
            return resumed - gone
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


@contextmanager
def _stores() -> Iterator[list[tuple[str, Callable[[], str] | str]]]:
    """``(name, store)`` pairs: DuckDB, and PostgreSQL (a factory of fresh databases) or why not."""
    url = os.environ.get("RESUMABLE_BENCH_PG")
    if url:
        yield [("duckdb", lambda: "duckdb"), ("postgresql", _databases_on(url))]
        return
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    try:
        import pg_server  # the tests' throwaway cluster
    except ImportError as exc:
        yield [("duckdb", lambda: "duckdb"), ("postgresql", f"tests/pg_server.py cannot be imported: {exc}")]
        return
    finally:
        sys.path.remove(str(tests))
    cluster = pg_server.start()
    if not isinstance(cluster, pg_server.Cluster):
        yield [("duckdb", lambda: "duckdb"), ("postgresql", str(cluster))]
        return
    try:
        yield [("duckdb", lambda: "duckdb"), ("postgresql", cluster.new_database)]
    finally:
        cluster.stop()


def _databases_on(url: str) -> Callable[[], str]:
    import psycopg

    numbers = iter(range(1, 1_000_000))

    def new() -> str:
        name = f"takeover_{os.getpid()}_{next(numbers)}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return url.rsplit("/", 1)[0] + "/" + name

    return new


def run(cfg: Config) -> list[Result | Skipped]:
    """Takeover after SIGKILL on this host and on another, per store, against a clean hand-over and the lease."""
    reps = 1 if cfg.quick else cfg.reps
    results: list[Result | Skipped] = []
    with _stores() as stores:
        for name, store in stores:
            if isinstance(store, str):
                results.append(Skipped(CONCERN, name, store))
                continue
            make = store

            def median(kill: bool, other_host: bool, make: Callable[[], str] = make) -> float:
                return statistics.median(one(make(), kill, other_host) for _ in range(reps))

            try:
                clean = median(kill=False, other_host=False)
                same = median(kill=True, other_host=False)
                other = median(kill=True, other_host=True)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results.append(Skipped(CONCERN, name, str(exc).strip().splitlines()[-1]))
                continue
            results += [
                Result(CONCERN, f"takeover after SIGKILL, same host ({name})", same, "s",
                       "clean hand-over", clean, "<= 2",
                       f"median of {reps}; the owner's pid is checked, so the next poll (10 ms) claims the run"),
                Result(CONCERN, f"takeover after SIGKILL, other host ({name})", other, "s",
                       "lease length", LEASE_S, "<= 1.1",
                       f"median of {reps}; RESUMABLE_LEASE_S={LEASE_S:g}, renewed every {LEASE_S / 3:g} s"),
            ]  # fmt: skip
    return results
