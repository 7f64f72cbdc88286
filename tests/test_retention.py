"""Deleting runs and giving the disk back: ``resumable rm``, ``resumable gc --keep-last ...``, compaction.

Real DuckDB files and real processes: the CLI runs as a subprocess, live owners are real processes
(``history_store.start_worker``), and the crash test kills ``resumable gc`` with SIGKILL at its
store write points (the hook of ``tests/killpoint_hook``) and reopens the store after each kill.

Deleting runs (``rm``, ``gc --keep-last/--state/--older-than``, ``remove_runs``, dry runs, a live
owner's run refused) runs on both stores (``store_location``). Compaction, its crash test, the file
lock and the file's size stay DuckDB-only: a PostgreSQL server compacts nothing itself (autovacuum).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from history_store import fingerprint, start_worker
from killpoints import HOOK, ROOT, spread
from retention_store import build, copy_store, disk_bytes, restore_all, value

import resumable
from resumable._owner import current_owner
from resumable._store import RunFilter, forget_all, open_store
from resumable.cli import main

MB = 5.0  # per run in the size test (the 100 MB case: docs/performance.md)


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def cli_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command in this process (no interpreter start-up): for what does not need a process of its own."""
    result = CliRunner().invoke(main, [str(a) for a in args], prog_name="resumable")
    forget_all()  # the command's store handle is this process's: let go of the file
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def payload_files(store: str) -> list[Path]:
    """The files of the store's payload folder (a file's own folder; a server store's shared one)."""
    folder = open_store(store).payload_dir
    forget_all()
    assert folder is not None
    return sorted(f for f in folder.rglob("*") if f.is_file() and "tmp" not in f.relative_to(folder).parts)


def contents(store: str) -> tuple[dict[str, str], dict[Path, str]]:
    """The store's rows (a server's tables) or database file, and its payload files, by digest."""
    rows = fingerprint(store) if store.startswith("postgresql://") else {store: digest(Path(store))}
    return rows, {f: digest(f) for f in payload_files(store)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def twenty_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 20 runs of ~5 MB of small inline checkpoints each plus a payload file each; copied per test."""
    store = tmp_path_factory.mktemp("twenty") / "store.duckdb"
    build(store, [f"r{i:02d}" for i in range(20)], MB)
    return store


@pytest.mark.timeout(300)
def test_gc_keep_last_collects_20_runs_down_to_2_and_the_file_shrinks(twenty_runs: Path, tmp_path: Path) -> None:
    """What is left takes at most 1.2 x a fresh store of the same 2 runs; they restore byte-identical, events intact."""
    store = tmp_path / "store.duckdb"
    copy_store(twenty_runs, store)
    kept = ["r18", "r19"]
    before = disk_bytes(store)
    events_before = {r: open_store(store).list_events(r) for r in kept}
    forget_all()

    done = cli("gc", "--keep-last", "2", "--store", store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("'")[1] for line in lines if line.startswith("removed run")] == [
        f"r{i:02d}" for i in range(17, -1, -1)
    ]
    assert any(line.startswith("freed ") and "18 payload files" in line for line in lines), done.stdout
    assert "compacted the store from" in done.stdout

    # The yardstick: a fresh store holding only the kept runs, built the same way.
    fresh = tmp_path / "fresh" / "store.duckdb"
    build(fresh, kept, MB)
    after, yardstick = disk_bytes(store), disk_bytes(fresh)
    assert sum(after) <= 1.2 * sum(yardstick), (before, after, yardstick)
    assert after[0] <= 0.1 * before[0], (before, after)  # the database file itself gave the space back
    assert after[1] == yardstick[1], (after, yardstick)  # the kept runs' payload files, no more

    opened = open_store(store)
    assert [r.run_id for r in opened.list_runs()] == ["r19", "r18"]
    for run_id in kept:
        restore_all(store, run_id, MB)
        assert opened.list_events(run_id) == events_before[run_id]  # same rows, numbers and order
    # The event numbering goes on where it was: a restarted sequence would reorder the log.
    last = max(e.seq for events in events_before.values() for e in events)
    pipe = resumable.Pipeline("etl", store=store)
    with pipe.run(run_id="r20") as run:
        run.step("after", lambda: 1)
    assert min(e.seq for e in opened.list_events("r20")) > last
    forget_all()


def test_rm_removes_the_runs_named_and_leaves_a_shared_payload_file(store_location: str, tmp_path: Path) -> None:
    """Two runs that returned the same large value share its payload file: removing one keeps it for the other."""
    store = store_location
    pipe = resumable.Pipeline("etl", store=store)
    shared = value("any", "shared", 400_000)
    for run_id in ("a", "b", "c"):
        with pipe.run(run_id=run_id) as run:
            run.step("big", lambda: shared)
            run.step("small", value, run_id, "small", 1000)
    forget_all()
    done = cli_here("rm", "a", "b", "--store", store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("removed run 'a' of pipeline 'etl' (completed, 2 steps, last changed ")
    assert lines[1].startswith("removed run 'b' of pipeline 'etl' (completed, 2 steps, last changed ")
    assert "0 payload files" in done.stdout  # still pointed to by run c
    opened = open_store(store)
    assert [r.run_id for r in opened.list_runs()] == ["c"]
    assert opened.list_steps("a") == [] and opened.list_events("a") == []
    assert resumable.load("c", "big", store=store) == shared
    assert resumable.load("c", "small", store=store) == value("c", "small", 1000)
    forget_all()
    done = cli_here("rm", "c", "--store", store)
    assert done.returncode == 0, done.stderr
    assert "1 payload files" in done.stdout
    assert payload_files(store) == []


def test_rm_keeps_a_payload_file_another_process_just_wrote_again(tmp_path: Path) -> None:
    """A step elsewhere renames the same content into place before committing its row: rm leaves that file."""
    store = tmp_path / "store.duckdb"
    shared = value("any", "shared", 400_000)
    with resumable.Pipeline("etl", store=store).run(run_id="a") as run:
        run.step("big", lambda: shared)
    forget_all()
    [payload] = [p for p in (tmp_path / "store.duckdb.payloads").rglob("*") if p.is_file()]
    # What a writer of the same value does (resumable/_codec.py): a new file, renamed over the name.
    part = payload.with_name(payload.name + ".part")
    part.write_bytes(payload.read_bytes())
    time.sleep(0.01)  # the file system's clock is coarse: a write in the tick of the row's commit looks older
    part.replace(payload)
    done = cli_here("rm", "a", "--no-compact", "--store", store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "freed 0 B: 1 checkpoint rows (0 B inside the database) and 0 payload files (0 B)"
    )
    assert payload.is_file()  # the other writer's row, once committed, finds its file


def test_rm_of_a_missing_run_says_so_and_still_removes_the_others(store_location: str, tmp_path: Path) -> None:
    store = store_location
    build(store, ["a", "b"], 0.1)
    done = cli_here("rm", "nope", "a", "--store", store)
    assert done.returncode == 6
    assert done.stderr == (f"error: run 'nope' does not exist in store '{store}'. List the runs with: resumable runs\n")
    assert done.stdout.startswith("removed run 'a' of pipeline 'etl' (completed, 2 steps, last changed ")
    assert [r.run_id for r in open_store(store).list_runs()] == ["b"]
    forget_all()


def test_dry_run_changes_nothing_and_says_what_would_go(store_location: str, tmp_path: Path) -> None:
    store = store_location
    build(store, ["a", "b", "c"], 0.5)
    open_store(store).list_runs()  # a first writable open rewrites the header once; that is not the dry run's
    forget_all()
    before = contents(store)
    done = cli_here("gc", "--keep-last", "1", "--dry-run", "--store", store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("'")[1] for line in lines[:2]] == ["b", "a"]
    assert lines[0].startswith("would remove run 'b' of pipeline 'etl' (completed, 3 steps")
    assert lines[2] == (
        "dry run, nothing changed: would free about 1.6 MB: 6 checkpoint rows (960.2 kB inside the database) "
        "and 2 payload files (600.1 kB)"
    )
    assert contents(store) == before
    assert [r.run_id for r in open_store(store).list_runs()] == ["c", "b", "a"]
    forget_all()


OPTION_CASES = [
        (["--keep-last", "0"], "Invalid value for '--keep-last': '0' is not a number of runs; give a whole number of "
         "1 or more, e.g. --keep-last 20"),
        (["--keep-last", "two"], "Invalid value for '--keep-last': 'two' is not a number of runs"),
        (["--older-than", "soon"], "Invalid value for '--older-than': 'soon' is neither an age like 30m, 12h, 7d or "
         "2w nor a date like 2026-12-01"),
        (["--state", "gone"], "Invalid value for '--state': 'gone' is not one of"),
        (["-P", "etl"], "--pipeline only narrows which runs are deleted; say which runs of 'etl' to delete with "
         "--keep-last N, --older-than AGE or --state STATE (add --dry-run to see them first)."),
]  # fmt: skip


def test_gc_options_are_checked_before_anything_changes(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    build(store, ["a"], 0.1)
    before = digest(store)
    for args, message in OPTION_CASES:
        done = cli_here("gc", *args, "--store", store)
        assert done.returncode == 2, args
        assert message in " ".join(done.stderr.split()), done.stderr
    assert digest(store) == before


def test_gc_state_and_older_than_select_runs(store_location: str, tmp_path: Path) -> None:
    """--state failed deletes only failed runs; --older-than only runs last changed before then."""
    store = store_location
    build(store, ["ok1", "ok2"], 0.1)
    pipe = resumable.Pipeline("etl", store=store)
    with pytest.raises(ZeroDivisionError), pipe.run(run_id="bad") as run:
        run.step("boom", lambda: 1 / 0)
    forget_all()
    done = cli_here("gc", "--state", "failed", "--store", store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("removed run 'bad' of pipeline 'etl' (failed, 1 step, ")
    assert cli_here("gc", "--older-than", "2w", "--store", store).stderr == "no runs match\n"
    assert [r.run_id for r in open_store(store).list_runs()] == ["ok2", "ok1"]
    forget_all()
    done = cli_here("gc", "--older-than", "0s", "--keep-last", "1", "--store", store)
    assert [r.run_id for r in open_store(store).list_runs()] == ["ok2"], done.stdout + done.stderr
    forget_all()


def test_rm_refuses_a_run_a_live_process_executes_and_removes_the_others(store_location: str, tmp_path: Path) -> None:
    """The worker's run stays whole and the message names its process; a dead owner's run can go."""
    store = store_location
    build(store, ["old"], 0.1)
    worker = start_worker(store, "live", tmp_path / "marker")
    try:
        done = cli_here("rm", "live", "old", "--store", store)
        assert done.returncode == 4, done.stdout + done.stderr
        expected = (
            f"error: not removed: run 'live' of pipeline 'nightly' is owned by another live process (pid "
            f"{worker.pid} on host '{socket.gethostname()}', started DATE) (step 'crunch' is running). Stop it or "
            f"wait; if it dies, its running steps become 'interrupted' and resume on the next start.\n"
        )
        pattern = re.escape(expected).replace("DATE", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
        assert re.fullmatch(pattern, done.stderr), done.stderr
        assert done.stdout.startswith("removed run 'old' ")
        compacted = cli_here("gc", "--compact", "--store", store)
        assert compacted.returncode == 0
        if store.startswith("postgresql://"):  # a server compacts nothing itself
            assert "the store was not compacted: a PostgreSQL server reuses" in compacted.stdout, compacted.stdout
        else:
            assert f"the store was not compacted: process pid {worker.pid} on host" in compacted.stdout
            assert "is executing run 'live' in this store" in compacted.stdout
        assert [r.run_id for r in open_store(store, read_only=True).list_runs()] == ["live"]
        forget_all()
    finally:
        worker.kill()
        worker.communicate()
    done = cli_here("rm", "live", "--store", store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed run 'live' of pipeline 'nightly' (interrupted, 2 steps")
    assert open_store(store).list_runs() == []
    forget_all()


HOLDER = """
import sys, duckdb
from pathlib import Path
from resumable._store import filelock
store = Path(sys.argv[1])
filelock.acquire(store, 10)
con = duckdb.connect(str(store))
print("held", flush=True)
sys.stdin.read()
"""


def test_a_command_waits_a_bounded_time_for_a_process_holding_the_store_then_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store.duckdb"
    build(store, ["a"], 0.1)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "1")
        start = time.monotonic()
        done = cli_here("rm", "a", "--store", store)
        assert time.monotonic() - start < 15
        assert done.returncode == 6
        assert done.stderr.startswith(f"error: store '{store}' stayed locked by process {holder.pid} for 1.0 s.")
    finally:
        holder.communicate("", timeout=30)
    monkeypatch.delenv("RESUMABLE_LOCK_TIMEOUT")
    assert [r.run_id for r in open_store(store).list_runs()] == ["a"]
    forget_all()


def test_a_process_that_had_the_store_open_goes_on_after_another_compacts_it(tmp_path: Path) -> None:
    """The file at the path is new after compaction; the lineage says it is the same store, not a removed one."""
    store = tmp_path / "store.duckdb"
    build(store, ["a", "b", "c"], 1.0)
    pipe = resumable.Pipeline("etl", store=store)
    with pipe.run(run_id="d") as run:
        run.step("first", lambda: 1)
    inode = store.stat().st_ino
    open_store(store).close()
    done = cli("gc", "--keep-last", "2", "--store", store)
    assert "compacted the store" in done.stdout, done.stdout + done.stderr
    assert store.stat().st_ino != inode
    with pipe.run(run_id="d") as run:  # the same store object of this process
        assert run.step("first", lambda: 2) == 1  # restored, not re-run in a store made anew
        run.step("second", lambda: 3)
    forget_all()
    assert [s.step for s in open_store(store).list_steps("d")] == ["first", "second"]
    restore_all(store, "c", 1.0)
    forget_all()


def test_a_leftover_of_a_killed_compaction_is_removed_on_the_next_open(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    build(store, ["a"], 0.1)
    leftover = store.with_name(store.name + ".compacting")
    leftover.mkdir()
    (leftover / store.name).write_bytes(b"half a database")
    assert cli_here("runs", "--store", store).returncode == 0  # a reader leaves it: it changes nothing
    assert leftover.exists()
    open_store(store).list_runs()
    assert not leftover.exists()
    forget_all()


# ---------------------------------------------------------------- SIGKILL during gc and compaction

KILL_RUNS = [f"k{i}" for i in range(6)]
KILL_MB = 0.5


def _kill_env(folder: Path, at: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "KILLPOINT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(HOOK), str(ROOT)])
    env["KILLPOINT_ONCE"] = str(folder / "killed")
    if at is None:
        env["KILLPOINT_COUNT"] = str(folder / "count")
    else:
        env["KILLPOINT_AT"] = str(at)
    return env


def _gc_killed_at(template: Path, folder: Path, at: int | None) -> Path:
    store = folder / "store.duckdb"
    copy_store(template, store)
    args = [sys.executable, "-m", "resumable", "gc", "--keep-last", "2", "--compact", "--store", str(store)]
    proc = subprocess.run(args, env=_kill_env(folder, at), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, -9), proc.stderr
    return store


def _check_nothing_kept_is_lost(store: Path, point: int) -> None:
    """Every run still in the store restores whole; the two newest are always there."""
    opened = open_store(store)
    present = [r.run_id for r in opened.list_runs()]
    assert present[:2] == ["k5", "k4"], f"point {point}: {present}"
    for run_id in present:
        restore_all(store, run_id, KILL_MB)
    assert not store.with_name(store.name + ".compacting").exists()
    forget_all()


@pytest.mark.timeout(600)
def test_a_sigkill_anywhere_in_gc_or_compaction_loses_nothing_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kill ``gc --keep-last 2 --compact`` at its store write points; reopen, restore, then finish the gc.

    ``RESUMABLE_RETENTION_KILLS`` (default 6) points are tried: half spread over the whole command
    (first and last included), half the last ones (the compaction's swap); ``all`` tries every point.
    """
    template = tmp_path / "template" / "store.duckdb"
    build(template, KILL_RUNS, KILL_MB)
    _gc_killed_at(template, tmp_path / "probe", None)
    total = int((tmp_path / "probe" / "count").read_text())
    wanted = os.environ.get("RESUMABLE_RETENTION_KILLS", "6")
    if wanted == "all":
        points = list(range(1, total + 1))
    else:  # the last few are the swap: the lineage written, the rename, the folder's fsync
        last = int(wanted) // 2
        points = sorted(set(spread(total, int(wanted) - last + 1)) | set(range(max(1, total - last + 1), total + 1)))
    landed = 0
    for point in points:
        folder = tmp_path / f"point-{point}"
        store = _gc_killed_at(template, folder, point)
        landed += (folder / "killed").exists()
        _check_nothing_kept_is_lost(store, point)
        opened = open_store(store)  # and the store goes on: the same gc, finished in this process
        opened.remove_runs(RunFilter(keep_last=2), current_owner())
        opened.gc()
        assert opened.compact(force=True).done, f"point {point}"
        assert [r.run_id for r in opened.list_runs()] == ["k5", "k4"], f"point {point}"
        forget_all()
        _check_nothing_kept_is_lost(store, point)
    with capsys.disabled():
        print(f"\ngc --keep-last 2 --compact: {total} store write points, {len(points)} kills, {landed} landed")
    assert total >= 20, f"only {total} write points: the hook no longer sees gc's writes"
    assert landed >= len(points) - 2, f"{landed} of {len(points)} kills landed"


def test_remove_runs_in_python_reports_what_went_and_what_was_refused(store_location: str, tmp_path: Path) -> None:
    store = store_location
    build(store, ["a", "b"], 0.3)
    preview = resumable.remove_runs("a", "zz", store=store, dry_run=True)
    assert [r.run_id for r in preview.removed] == ["a"] and preview.dry_run
    assert [r.run_id for r in open_store(store).list_runs()] == ["b", "a"]
    done = resumable.remove_runs("a", "zz", store=store)
    assert [r.run_id for r in done.removed] == ["a"]
    assert [(r.run_id, r.missing) for r in done.refused] == [("zz", True)]
    assert done.checkpoints_removed == 2 and done.files_removed == 1
    assert [r.run_id for r in open_store(store).list_runs()] == ["b"]
    restore_all(store, "b", 0.3)
    forget_all()


COMPACT = "import sys; from resumable._store import open_store; print(open_store(sys.argv[1]).compact(force=True))"


def test_a_compaction_that_runs_out_of_room_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """A file size limit (as a full disk would) stops the copy: the store is byte-identical and restores."""
    store = tmp_path / "store.duckdb"
    build(store, ["a", "b", "c"], 1.0)
    resumable.remove_runs("a", "b", store=store, compact=False)
    forget_all()
    before = digest(store)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run(
        [sys.executable, "-c", COMPACT, str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=small_files,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done=False" in proc.stdout and "so the store was left as it was" in proc.stdout, proc.stdout
    assert digest(store) == before
    assert not store.with_name(store.name + ".compacting").exists()
    restore_all(store, "c", 1.0)
    forget_all()


def test_a_payload_file_rewritten_meanwhile_is_not_removed(tmp_path: Path) -> None:
    """Files are named by content: one a step wrote again after the deletion (a new inode) stays."""
    from resumable._store import places

    folder = tmp_path / "payloads"
    (folder / "ab").mkdir(parents=True)
    old = folder / "ab" / "abc.bin"
    old.write_bytes(b"x" * 10)
    recorded = (old.relative_to(folder).as_posix(), old.stat().st_ino, 10)
    fresh = folder / "ab" / "new.part"
    fresh.write_bytes(b"x" * 10)
    fresh.replace(old)  # what a step writing the same content does before it records its row
    assert places.remove_files(folder, [recorded]) == (0, 0)
    assert old.read_bytes() == b"x" * 10
    assert [p.name for p in (folder / "ab").iterdir()] == ["abc.bin"]
    recorded = (recorded[0], old.stat().st_ino, 10)
    assert places.remove_files(folder, [recorded]) == (1, 10)
    assert not old.exists()


def test_a_payload_moved_aside_by_a_killed_removal_is_put_back(tmp_path: Path) -> None:
    """A remover killed between moving a file aside and checking it: the next gc puts back what a row needs."""
    store = tmp_path / "store.duckdb"
    build(store, ["a"], 0.1)
    [payload] = store.with_name(store.name + ".payloads").rglob("*.bin")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    aside = payload.with_name(f"{payload.name}.{int(gone.stdout)}.removing")
    payload.rename(aside)
    open_store(store).gc()
    assert payload.exists() and not aside.exists()
    restore_all(store, "a", 0.1)
    forget_all()
