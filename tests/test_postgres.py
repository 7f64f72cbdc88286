"""The PostgreSQL store: its URL, its errors, races between processes, and where large checkpoints go.

The store-level behaviour shared with DuckDB runs over both stores through the ``store_location``
fixture (test_store, test_pipeline, test_concurrency, test_lease); these tests are about what only
a server store has, or races that matter most there.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pg_server
import pytest
import store_sql
from pg_proxy import Relay

import resumable
from resumable._states import StepState
from resumable._store import forget_all, open_store
from resumable._store.schema import SCHEMA_VERSION

RACER = """
import sys, time, pathlib, resumable
store, go, release = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
pipe = resumable.Pipeline("p", store=store)
pipe.runs()  # the store is open (and its schema made) before the race
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
def hold():
    while not release.exists():
        time.sleep(0.01)
    return 1
try:
    with pipe.run(run_id="r1") as run:
        print("won", flush=True)
        run.step("hold", hold)
except resumable.RunOwnedError as exc:
    print("lost", exc.pid, flush=True)
"""


@pytest.fixture
def cluster(pg_cluster: pg_server.Cluster | str) -> pg_server.Cluster:
    if not isinstance(pg_cluster, pg_server.Cluster):
        pytest.skip(f"PostgreSQL half skipped: {pg_cluster}")
    return pg_cluster


def test_processes_racing_for_one_run_one_wins_the_others_are_told_who(store_location: str, tmp_path: Path) -> None:
    """Four processes claim one new run at once: exactly one runs it, each other one names the winner's pid."""
    go, release = tmp_path / "go", tmp_path / "release"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store_location, str(go), str(release)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline() == "ready\n", racer.stderr.read() if racer.stderr else ""
        go.touch()
        first_lines = {racer.pid: racer.stdout.readline().split() for racer in racers if racer.stdout}
        winners = [pid for pid, line in first_lines.items() if line == ["won"]]
        assert len(winners) == 1, first_lines
        losers = {pid: line for pid, line in first_lines.items() if pid != winners[0]}
        assert all(line == ["lost", str(winners[0])] for line in losers.values()), first_lines
    finally:
        release.touch()
        for racer in racers:
            racer.wait(timeout=60)
    assert all(racer.returncode == 0 for racer in racers)
    store = open_store(store_location)
    assert [(s.step, s.state.value, s.attempts) for s in store.list_steps("r1")] == [("hold", "completed", 1)]
    assert [e.pid for e in store.list_events("r1", "hold")] == [winners[0], winners[0]]


def test_new_server_store_opened_by_several_processes_at_once_is_made_once(cluster: pg_server.Cluster) -> None:
    """Processes opening an empty database together: one creates the tables, every one can use them."""
    url = cluster.new_database()
    opener = "import sys, resumable; print(len(resumable.Pipeline('p', store=sys.argv[1]).runs()))"
    openers = [
        subprocess.Popen([sys.executable, "-c", opener, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [o.communicate(timeout=60) for o in openers]
    assert [(o.returncode, out) for o, (out, _) in zip(openers, outputs, strict=True)] == [(0, "0\n")] * 4, outputs
    assert store_sql.execute(url, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_the_location_never_shows_the_password(cluster: pg_server.Cluster) -> None:
    """A URL with a password is connected with, and shown (and keyed) without it."""
    url = cluster.new_database()
    with_secret = url.replace("resumable@", "resumable:s3cret@")
    store = open_store(with_secret)
    assert store.location == url
    assert open_store(url) is store


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    """Nothing listens on the port: our own error naming the store (no password) and what to check."""
    with pytest.raises(resumable.StoreServerError) as excinfo:
        open_store("postgresql://me:secret@127.0.0.1:1/shop")
    message = str(excinfo.value)
    assert message.startswith("store 'postgresql://me@127.0.0.1:1/shop' could not be reached or refused the ")
    assert message.endswith(
        ". What was being written was not stored; completed steps already in the store are kept. Check that the "
        "server is running and that the URL's host, port, database and user are right, then try again."
    )
    assert "secret" not in message


def test_large_checkpoints_go_to_the_shared_folder_or_else_into_the_database(
    cluster: pg_server.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a payload folder a large output is a file there, fsynced before its row; without one it is a row."""
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: above the inline limit
    shared = tmp_path / "shared"
    with_folder = cluster.new_database()
    pipe = resumable.Pipeline("p", store=f"{with_folder}?payloads={shared}")
    with pipe.run(run_id="r1") as run:
        run.step("make", lambda: big)
    (ref,) = open_store(with_folder).checkpoint_refs("r1", "make")
    assert ref.data is None and ref.file is not None
    assert (shared / ref.file).stat().st_size == ref.size
    reader = "import sys, resumable; print(resumable.load('r1', 'make', store=sys.argv[1]).sum())"
    loaded = subprocess.run(
        [sys.executable, "-c", reader, f"{with_folder}?payloads={shared}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.stdout == f"{big.sum()}\n", loaded.stderr
    in_database = cluster.new_database()
    pipe = resumable.Pipeline("p", store=in_database)
    with pipe.run(run_id="r1") as run:
        run.step("make", lambda: big)
    (ref,) = open_store(in_database).checkpoint_refs("r1", "make")
    assert ref.file is None and ref.data is not None and len(ref.data) == ref.size
    np.testing.assert_array_equal(resumable.load("r1", "make", store=in_database), big)


def test_the_spill_folder_is_made_private_again_when_ours_and_refused_otherwise(
    cluster: pg_server.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a payload location a large output passes through a folder under TMPDIR: checked on every use.

    Ours but opened up: made 0700 again and the step completes. A symbolic link planted in its
    place: the step fails with the whole message, nothing is written through the link, and the
    completed step is kept. Another user's folder can only be made by root: that case only as root.
    A write past ``ulimit -f`` there is the same error, with its own way out.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = cluster.new_database()
    big = np.arange(40_000, dtype=np.float64)  # 320 kB: above the inline limit, so it is spilled
    pipe = resumable.Pipeline("p", store=url)
    spill = tmp_path / f"resumable-spill-{os.getuid()}"
    spill.mkdir(mode=0o777)
    spill.chmod(0o777)
    with pipe.run(run_id="r1") as run:
        run.step("make", lambda: big)
    assert stat.S_IMODE(spill.stat().st_mode) == 0o700
    assert stat.S_IMODE((spill / "tmp").stat().st_mode) == 0o700
    planted = tmp_path / "planted"
    spill.rename(planted)
    spill.symlink_to(planted)
    kept = "The step's outputs were not stored; completed steps and their checkpoints are intact."
    fix = "Remove it (resumable makes a private one), or set TMPDIR to a folder of your own, then try again."
    with pytest.raises(resumable.StagingFolderError) as refused, pipe.run(run_id="r1") as run:
        run.step("more", lambda: big + 1)
    assert str(refused.value) == (
        f"the local folder '{spill}', which holds large checkpoints of the PostgreSQL store at '{url}' on their "
        f"way into its rows, is a symbolic link (to '{planted}'), which anyone could have planted in a shared "
        f"folder, so a checkpoint copy there could be read or swapped before it is stored. {kept} {fix}"
    )
    assert list((planted / "tmp").iterdir()) == []
    store = open_store(url)
    assert store.get_step("r1", "more").state is StepState.FAILED  # type: ignore[union-attr]
    np.testing.assert_array_equal(resumable.load("r1", "make", store=url), big)
    spill.unlink()
    if os.geteuid() == 0:
        spill.mkdir(mode=0o700)
        os.chown(spill, 65534, 65534)
        with pytest.raises(resumable.StagingFolderError) as foreign, pipe.run(run_id="r1") as run:
            run.step("more", lambda: big + 1)
        assert str(foreign.value) == (
            f"the local folder '{spill}', which holds large checkpoints of the PostgreSQL store at '{url}' on their "
            "way into its rows, belongs to another user (uid 65534), who can change what is in it, so a checkpoint "
            f"copy there could be read or swapped before it is stored. {kept} {fix}"
        )
        spill.rmdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # Python ignores SIGXFSZ: the write gets EFBIG
    try:
        with pytest.raises(resumable.StagingFolderError) as limited, pipe.run(run_id="r1") as run:
            run.step("more", lambda: big + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(limited.value) == (
        f"the local folder '{spill}', which holds large checkpoints of the PostgreSQL store at '{url}' on their "
        "way into its rows, took a file past this process's file size limit ('ulimit -f') (OSError: [Errno 27] "
        f"File too large). {kept} Raise the limit ('ulimit -f unlimited'), then try again."
    )
    with pipe.run(run_id="r1") as run:
        run.step("more", lambda: big + 1)
    np.testing.assert_array_equal(resumable.load("r1", "more", store=url), big + 1)


def test_databases_sharing_one_payload_folder_never_remove_each_others_checkpoints(
    cluster: pg_server.Cluster, tmp_path: Path
) -> None:
    """One folder for every store (one RESUMABLE_PAYLOADS): each database writes and collects in a folder of its own.

    Both databases store the same large output (one file, were payloads shared by their content)
    and the second another one: removing the first database's run and its gc, past the write
    grace, leave every checkpoint of the second loadable; the second's gc keeps them too.
    """
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: a payload file
    shared = tmp_path / "shared"
    first, second = (f"{cluster.new_database()}?payloads={shared}" for _ in range(2))
    for store in (first, second):
        with resumable.Pipeline("p", store=store).run(run_id="r1") as run:
            run.step("make", lambda: big)
    with resumable.Pipeline("p", store=second).run(run_id="r2") as run:
        run.step("other", lambda: big + 1)
    assert resumable.remove_runs("r1", store=first).files_removed == 1
    hours_ago = time.time() - 2 * 3600
    for file in shared.rglob("*"):
        os.utime(file, (hours_ago, hours_ago))
    assert open_store(first).gc().files_removed == 0
    assert open_store(second).gc().files_removed == 0
    np.testing.assert_array_equal(resumable.load("r1", "make", store=second), big)
    np.testing.assert_array_equal(resumable.load("r2", "other", store=second), big + 1)


def test_gc_puts_back_a_payload_a_killed_removal_moved_aside(cluster: pg_server.Cluster, tmp_path: Path) -> None:
    """A remover killed between moving a file aside and checking it: gc puts back what a row needs, however old."""
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: a payload file
    store = f"{cluster.new_database()}?payloads={tmp_path / 'shared'}"
    with resumable.Pipeline("p", store=store).run(run_id="r1") as run:
        run.step("make", lambda: big)
    [payload] = (tmp_path / "shared").rglob("*.bin")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    aside = payload.with_name(f"{payload.name}.{int(gone.stdout)}.removing")
    payload.rename(aside)
    hours_ago = time.time() - 2 * 3600
    os.utime(aside, (hours_ago, hours_ago))  # old enough for gc to take it, were it garbage
    assert open_store(store).gc().files_removed == 0
    assert payload.exists() and not aside.exists()
    np.testing.assert_array_equal(resumable.load("r1", "make", store=store), big)


def test_a_store_keeps_the_payload_folder_it_was_first_given(
    cluster: pg_server.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that names no folder finds the large checkpoints where they are; one naming another is refused."""
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: a payload file
    database = cluster.new_database()
    monkeypatch.setenv("RESUMABLE_PAYLOADS", str(tmp_path / "shared"))
    with resumable.Pipeline("p", store=database).run(run_id="r1") as run:
        run.step("make", lambda: big)
    forget_all()
    monkeypatch.delenv("RESUMABLE_PAYLOADS")
    np.testing.assert_array_equal(resumable.load("r1", "make", store=database), big)
    forget_all()
    with pytest.raises(resumable.StorePathError) as excinfo:
        open_store(f"{database}?payloads={tmp_path / 'elsewhere'}")
    assert str(excinfo.value) == (
        f"store '{database}?payloads={quote(str(tmp_path / 'elsewhere'), safe='')}' keeps its large checkpoints in "
        f"{tmp_path / 'shared'}, and this process names {tmp_path / 'elsewhere'} (RESUMABLE_PAYLOADS or ?payloads=). "
        f"Nothing was read or written. Name {tmp_path / 'shared'} (a shared folder must be mounted at that path on "
        "every machine), or leave the setting out to use it"
    )
    np.testing.assert_array_equal(resumable.load("r1", "make", store=database), big)


def test_sql_on_a_server_store_does_not_wait_for_a_writer(
    cluster: pg_server.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session holding a run's row locked: a query still answers at once (the server reads beside writers).

    A database without a store is reported as no store, and nothing is created in it.
    """
    import psycopg

    url = cluster.new_database()
    pipe = resumable.Pipeline("p", store=url)
    with pipe.run(run_id="r1") as run:
        run.step("one", lambda: 1)
    forget_all()
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "0.5")
    with psycopg.connect(url) as holder:
        holder.execute("SELECT * FROM runs WHERE run_id = 'r1' FOR UPDATE")
        started = time.monotonic()
        assert resumable.connect(url).sql("SELECT run_id, state FROM runs").rows == (("r1", "completed"),)
        assert time.monotonic() - started < 10
    empty = cluster.new_database()
    with pytest.raises(resumable.CheckpointNotFoundError):
        resumable.connect(empty)
    with psycopg.connect(empty) as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone() == (0,)


def test_a_lock_held_past_the_timeout_is_reported(cluster: pg_server.Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session holding a run's row past RESUMABLE_LOCK_TIMEOUT: StoreLockedError, nothing changed."""
    import psycopg

    url = cluster.new_database()
    pipe = resumable.Pipeline("p", store=url)
    with pipe.run(run_id="r1") as run:
        run.step("one", lambda: 1)
    forget_all()
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "0.5")
    with psycopg.connect(url) as holder:
        holder.execute("SELECT * FROM runs WHERE run_id = 'r1' FOR UPDATE")
        started = time.monotonic()
        late = resumable.Pipeline("p", store=url)  # opened under the short timeout
        with pytest.raises(resumable.StoreLockedError) as excinfo, late.run(run_id="r1"):
            pass
        assert time.monotonic() - started < 10
        assert excinfo.value.path == url
    assert [s.state.value for s in open_store(url).list_steps("r1")] == ["completed"]


def test_a_server_restart_between_steps_loses_nothing(cluster: pg_server.Cluster) -> None:
    """pg_ctl restart while a run is open, between two steps and inside one: every completion is kept, once."""
    url = cluster.new_database()
    pipe = resumable.Pipeline("p", store=url)

    def during() -> int:
        cluster.restart()  # the step's session is cut while it runs; its completion goes on a new one
        return 3

    with pipe.run(run_id="r1") as run:
        assert run.step("before", lambda: 1) == 1
        cluster.restart()
        assert run.step("after", lambda: 2) == 2
        assert run.step("during", during) == 3
    with pipe.run(run_id="r1") as run:
        assert run.step("before", lambda: 99) == 1  # restored, not run again
    states = [(s.step, s.state.value, s.attempts) for s in open_store(url).list_steps("r1")]
    assert states == [("before", "completed", 1), ("after", "completed", 1), ("during", "completed", 1)]


def test_a_completion_whose_commit_answer_is_lost_finds_itself_committed(cluster: pg_server.Cluster) -> None:
    """The server commits, the answer never comes back: the retry finds this very completion and is done.

    Neither completed twice nor reported failed; the body ran once.
    """
    url = cluster.new_database()
    relay = Relay(cluster.port)
    try:
        pipe = resumable.Pipeline("p", store=url.replace(f":{cluster.port}/", f":{relay.port}/"))
        calls: list[int] = []

        def one() -> int:
            calls.append(1)
            relay.armed.set()  # the next COMMIT is this step's completion
            return 41

        with pipe.run(run_id="r1") as run:
            assert run.step("one", one) == 41
            assert relay.cut.is_set()
            assert run.step("two", lambda: 2) == 2
    finally:
        relay.close()
    assert calls == [1]
    events = [(e.source, e.target) for e in open_store(url).list_events("r1", "one")]
    assert events == [("pending", "running"), ("running", "completed")]
    assert resumable.load("r1", "one", store=url) == 41


def test_a_retry_whose_commit_answer_is_lost_goes_on_with_the_attempt(cluster: pg_server.Cluster) -> None:
    """The retry's start commits, its answer never comes back: the step goes on with that attempt (two calls in all)."""
    from resumable import _engine

    url = cluster.new_database()
    relay = Relay(cluster.port)

    def arm(event: _engine.StepEvent) -> None:
        if event.state.value == "failed":  # the failure is written: the next COMMIT is the retry's start
            relay.armed.set()

    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first attempt")
        return 7

    _engine.add_listener(arm)
    try:
        pipe = resumable.Pipeline("p", store=url.replace(f":{cluster.port}/", f":{relay.port}/"))
        with pipe.run(run_id="r1") as run:
            assert run.step("one", flaky, retries=2, backoff=0) == 7
            assert relay.cut.is_set()
    finally:
        _engine.remove_listener(arm)
        relay.close()
    assert len(calls) == 2
    assert resumable.load("r1", "one", store=url) == 7
    events = [(e.source, e.target, e.attempt) for e in open_store(url).list_events("r1", "one")]
    assert events == [("pending", "running", 1), ("running", "failed", 1), ("failed", "running", 2),
                      ("running", "completed", 2)]  # fmt: skip


def test_a_completion_cut_off_before_its_commit_is_written_on_a_new_session(cluster: pg_server.Cluster) -> None:
    """The completing session is terminated (pg_terminate_backend) while it waits: written once on a new one.

    The holder is closed only once the thread that rolled it back has its answer: closing it while
    that ROLLBACK's answer is still on its way (a thread a loaded machine has not scheduled yet,
    though the server already let the completion go on) failed the thread, and so the test.
    """
    import threading

    import psycopg

    url = cluster.new_database()
    pipe = resumable.Pipeline("p", store=url)
    holder = psycopg.connect(url)  # a transaction that holds the step's row while the completion waits for it
    terminated: list[int] = []

    def cut() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as admin:
                deadline = time.monotonic() + 60
                while not terminated and time.monotonic() < deadline:
                    row = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    ).fetchone()
                    if row is not None:
                        admin.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                        terminated.append(row[0])
                    time.sleep(0.01)
        finally:
            holder.rollback()  # the completion goes on, cut or not: the assertions below say which

    cutter = threading.Thread(target=cut, daemon=True)

    def one() -> int:
        holder.execute("SELECT 1 FROM steps WHERE run_id = 'r1' AND step = 'one' FOR UPDATE")
        cutter.start()
        return 41

    try:
        with pipe.run(run_id="r1") as run:
            assert run.step("one", one) == 41
    finally:
        if cutter.ident is not None:
            cutter.join(timeout=60)
        holder.close()
    assert len(terminated) == 1, "the completion never waited for the row"
    events = [(e.source, e.target) for e in open_store(url).list_events("r1", "one")]
    assert events == [("pending", "running"), ("running", "completed")]


def test_resumable_execute_runs_a_notebook_on_a_server_store(cluster: pg_server.Cluster, tmp_path: Path) -> None:
    """--store with a URL: the kernel records its steps on the server; the second execution restores them."""
    import json

    import nbformat

    url = cluster.new_database()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext resumable"),
        nbformat.v4.new_code_cell("%%durable_step one\nx = 41"),
        nbformat.v4.new_code_cell("%%durable_step two\ny = x + 1"),
    ]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    command = [sys.executable, "-m", "resumable", "execute", "nb.ipynb", "--store", url, "--run-id", "r1", "--json"]
    reports = []
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    assert [(r["steps_executed"], r["steps_restored"]) for r in reports] == [(["one", "two"], []), ([], ["one", "two"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nb.ipynb",
        "nb.resumable.ipynb",
    ]  # no file named after the URL
    assert [(s.step, s.state.value) for s in open_store(url).list_steps("r1")] == [
        ("one", "completed"),
        ("two", "completed"),
    ]


def test_execute_on_a_server_store_resumes_after_the_kernel_dies_and_charges_once(
    cluster: pg_server.Cluster, tmp_path: Path
) -> None:
    """RESUMABLE_STORE a URL; the kernel dies inside the charge step, after its effect: execute restarts the
    kernel, restores the step before it from the server and charges under the same key, so the shop charged once."""
    import json
    import os

    import nbformat
    from notebook_files import write_nb

    from resumable._demo.shop import ShopServer

    url = cluster.new_database()
    nb = write_nb(
        tmp_path / "checkout.ipynb",
        ('shop_url = ""', ["parameters"]),
        "%load_ext resumable\nimport os, pathlib, resumable\nfrom resumable._demo.shop import call",
        "%%durable_step load\nopen('executed.log', 'a').write('load ')\nqty = 2",
        "%%durable_step charge\nopen('executed.log', 'a').write('charge ')\n"
        "reply = call(shop_url, 'charge', 'o1', resumable.idempotency_key(), amount=qty)\n"
        "if not pathlib.Path('died-once').exists():\n    pathlib.Path('died-once').write_text('x')\n    os._exit(1)",
        "print('charged', reply['id'])",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")} | {"RESUMABLE_STORE": url}
    with ShopServer() as shop:
        done = subprocess.run(
            [sys.executable, "-m", "resumable", "execute", nb.name, "-p", "shop_url", shop.url, "--run-id", "r1",
             "--quiet", "--json"],
            capture_output=True, text=True, timeout=200, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert shop.ledger.count("charge", "o1") == 1
    summary = json.loads(done.stdout)
    assert summary["restarts"] == 1
    assert (tmp_path / "executed.log").read_text().split() == ["load", "charge", "charge"]  # load restored
    out = nbformat.read(tmp_path / "checkout.resumable.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for o in out.cells[-1].outputs if o.get("name") == "stdout")
    assert printed.startswith("charged charge-"), out.cells[-1].outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkout.ipynb", "checkout.resumable.ipynb", "died-once", "executed.log",
    ]  # fmt: skip
    store = open_store(url)
    assert [(s.step, s.state.value) for s in store.list_steps("r1")] == [("load", "completed"), ("charge", "completed")]
    assert [(e.source, e.target) for e in store.list_events("r1", "charge")] == [
        ("pending", "running"), ("running", "interrupted"), ("interrupted", "running"), ("running", "completed"),
    ]  # fmt: skip


# A worker that pretends to run on another machine: its host name is the first argument. Given a
# fourth (a file), it opens the store, says 'ready' and waits for that file before it asks for the run.
HOST_WORKER = """
import socket, sys
socket.gethostname = lambda: sys.argv[1]
import json, pathlib, time, resumable
host, store, marker = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
pipe = resumable.Pipeline("p", store=store)
if sys.argv[4:]:
    pipe.runs()  # the store is open before the other owner dies
    print("ready", flush=True)
    go, waiting = pathlib.Path(sys.argv[4]), time.monotonic() + 60
    while not go.exists() and time.monotonic() < waiting:
        time.sleep(0.002)
deadline = time.monotonic() + 60
while True:
    try:
        with pipe.run(run_id="r1") as run:
            quick = run.step("quick", lambda: host)
            def long():
                marker.write_text("started")
                if host == "host-a":
                    time.sleep(600)
                return host
            print(json.dumps({"quick": quick, "long": run.step("long", long)}), flush=True)
        break
    except resumable.RunOwnedError as exc:
        print(json.dumps({"owned_by": [exc.host, exc.pid]}), flush=True)
        assert time.monotonic() < deadline
        time.sleep(0.2)
"""


def test_a_worker_killed_on_another_host_is_resumed_by_another_once_its_lease_expires(
    cluster: pg_server.Cluster, tmp_path: Path
) -> None:
    """host-a dies inside a step: host-b is refused while the lease runs, then resumes the run, once."""
    import json
    import os
    import signal

    url = cluster.new_database()
    env = {**os.environ, "RESUMABLE_LEASE_S": "3"}
    marker = tmp_path / "started"
    a = subprocess.Popen(
        [sys.executable, "-c", HOST_WORKER, "host-a", url, str(marker)], env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and a.poll() is None, "host-a never started its long step"
        time.sleep(0.01)
    # host-b is started (Python, resumable and the store open) before host-a dies, and asks for the run
    # the moment it is told: on a loaded machine an interpreter's start alone can outlast a short lease.
    go = tmp_path / "go"
    b = subprocess.Popen(
        [sys.executable, "-c", HOST_WORKER, "host-b", url, str(marker), str(go)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert b.stdout is not None and b.stdout.readline() == "ready\n", b.communicate(timeout=90)
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
        marker.unlink()
        go.touch()
        out, err = b.communicate(timeout=120)
    finally:
        b.kill()
    assert b.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"owned_by": ["host-a", a.pid]}  # its lease was still running
    assert lines[-1] == {"quick": "host-a", "long": "host-b"}  # quick restored from host-a, long resumed
    events = [(e.source, e.target, e.host) for e in open_store(url).list_events("r1", "long")]
    assert events == [
        ("pending", "running", "host-a"),
        ("running", "interrupted", "host-b"),
        ("interrupted", "running", "host-b"),
        ("running", "completed", "host-b"),
    ]
    assert open_store(url).list_events("r1", "long")[1].detail == f"owner pid {a.pid} on host 'host-a' is gone"


def test_a_read_only_command_on_an_empty_database_creates_nothing(cluster: pg_server.Cluster) -> None:
    """resumable runs on a database resumable never wrote: 'no store there' (exit 6), and no table is made."""
    url = cluster.new_database()
    done = subprocess.run(
        [sys.executable, "-m", "resumable", "runs", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 6
    assert done.stderr == (
        f"error: there is no store at '{url}'; nothing was created. Run a pipeline first, or pass --store or set "
        "RESUMABLE_STORE to an existing store.\n"
    )
    assert store_sql.execute(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [
        (0,)
    ]


def test_an_error_message_with_a_nul_character_is_recorded(cluster: pg_server.Cluster) -> None:
    """PostgreSQL's text holds no NUL: the failure is stored escaped, and the run goes on."""
    url = cluster.new_database()
    pipe = resumable.Pipeline("p", store=url)

    def bad() -> None:
        raise ValueError("bad\x00byte")

    with pipe.run(run_id="r1") as run:
        with pytest.raises(ValueError, match="bad"):
            run.step("bad", bad)
        assert run.step("next", lambda: 2) == 2
    status = open_store(url).get_step("r1", "bad")
    assert status is not None and status.state.value == "failed"
    assert status.error == "ValueError: bad\\x00byte"


def test_fork_why_rm_and_gc_commands_on_a_server_store(cluster: pg_server.Cluster) -> None:
    """The commands of forks and retention take a URL; gc says why the server store is not compacted."""
    url = cluster.new_database()
    pipe = resumable.Pipeline("etl", store=url)
    for run_id in ("a", "b"):
        with pipe.run(run_id=run_id) as run:
            run.step("x", lambda: 1)
            run.step("y", lambda: 2)
    forget_all()

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "resumable", *args, "--store", url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("fork", "a", "--from", "y", "--run-id", "f").startswith(
        "forked run 'f' from run 'a' at step 'y': 1 step shares its checkpoints (x)"
    )
    assert cli("why", "f", "x") == (
        "step 'x': restored from the fork of run 'a': it shares that run's checkpoint (not executed in this run)\n"
    )
    removed = cli("rm", "a", "b").splitlines()
    assert [line.split(" (")[0] for line in removed[:2]] == [
        "removed run 'a' of pipeline 'etl'", "removed run 'b' of pipeline 'etl'",
    ]  # fmt: skip
    assert removed[2] == (
        "freed 105 B: 3 checkpoint rows (105 B inside the database) and 0 payload files (0 B); the store was not "
        "compacted: a PostgreSQL server reuses the space of deleted rows itself (autovacuum)"
    )
    assert [r.run_id for r in pipe.runs()] == ["f"]
    assert resumable.load("f", "x", store=url) == 1  # its origin is gone; the row it shares stays
