"""Large checkpoints in an object store (``?payloads=s3://bucket/prefix``) on the PostgreSQL store.

Real components: the session's PostgreSQL server (``pg_server.py``) and an S3-compatible server
(moto's, a real subprocess: ``s3_server.py``), reached through s3fs as a user's bucket would be.
Payloads are kept just over the 256 kB inline limit, except the one frame of over 1 MB.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pg_server
import pytest
import s3_server
from click.testing import CliRunner
from ipython_shell import fresh_kernel, started_shell, step

import resumable
from resumable._owner import current_owner
from resumable._states import StepState
from resumable._store import forget_all, open_store
from resumable._store import object_place as object_place_module
from resumable._units import human_size
from resumable.cli import main as cli_main

PREFIX = "runs"


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A frame of ``rows`` float rows plus a short text column (8 bytes a row and a little more)."""
    return pd.DataFrame({"x": np.arange(rows, dtype=np.float64) + seed, "k": np.arange(rows) % 7})


JUST_OVER = 20_000  # 16 bytes a row: 320 kB serialized, just over the inline limit


@dataclass
class Bucket:
    """A fresh database whose large payloads go to a fresh bucket, and a client to look behind its back."""

    url: str  # the store URL, ?payloads=s3://... included
    bucket: str
    fs: Any

    def key(self, relative: str) -> str:
        return f"{self.bucket}/{PREFIX}/{relative}"


@pytest.fixture
def bucket_store(
    pg_cluster: pg_server.Cluster | str, s3: s3_server.S3Server | str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bucket]:
    if not isinstance(pg_cluster, pg_server.Cluster):
        pytest.skip(f"needs the PostgreSQL server: {pg_cluster}")
    if not isinstance(s3, s3_server.S3Server):
        pytest.skip(f"needs the S3-compatible server: {s3}")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    yield Bucket(f"{pg_cluster.new_database()}?payloads=s3://{bucket}/{PREFIX}", bucket, s3.filesystem())


def completed(url: str, run_id: str, name: str, value: Any) -> str:
    """Run one step returning ``value``; the key of its payload object, relative to the prefix."""
    pipe = resumable.Pipeline("p", store=url)
    with pipe.run(run_id=run_id) as run:
        run.step(name, lambda: value)
    (ref,) = open_store(url).checkpoint_refs(run_id, name)
    assert ref.data is None and ref.file is not None
    return ref.file


def test_a_large_frame_is_an_object_in_the_bucket_and_a_fresh_process_restores_it(
    bucket_store: Bucket, tmp_path: Path
) -> None:
    """A 1.6 MB frame: completed, its object in the bucket (nothing in the row), restored equal elsewhere."""
    big = frame(100_000)
    key = completed(bucket_store.url, "r1", "make", big)
    (ref,) = open_store(bucket_store.url).checkpoint_refs("r1", "make")
    assert ref.size > 1_000_000
    assert bucket_store.fs.info(bucket_store.key(key))["size"] == ref.size
    out = tmp_path / "loaded.pickle"
    reader = (
        "import pickle, sys, resumable\n"
        "pickle.dump(resumable.load('r1', 'make', store=sys.argv[1]), open(sys.argv[2], 'wb'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", reader, bucket_store.url, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pickle.loads(out.read_bytes()), big)


def test_an_object_deleted_or_overwritten_behind_our_back_is_refused_whole(bucket_store: Bucket) -> None:
    """Nothing is unpickled from a missing or changed object, nor fetched from outside the prefix: whole messages."""
    key = completed(bucket_store.url, "r1", "make", frame(JUST_OVER))
    store = open_store(bucket_store.url)
    (ref,) = store.checkpoint_refs("r1", "make")
    for outside in ("../elsewhere/x.bin", f"s3://{bucket_store.bucket}/x.bin"):
        with pytest.raises(resumable.CheckpointIntegrityError) as escaped:
            store.load_value(dataclasses.replace(ref, file=outside))
        assert str(escaped.value) == (
            f"output 'return' of step 'make' (run 'r1') points to an object outside the store's payload location "
            f"({outside!r}) and was not loaded. Recompute it with: resumable invalidate r1 make"
        )
    bucket_store.fs.pipe(bucket_store.key(key), b"RSMP1\nsomething else entirely")
    with pytest.raises(resumable.CheckpointIntegrityError) as changed:
        resumable.load("r1", "make", store=bucket_store.url)
    assert str(changed.value) == (
        "output 'return' of step 'make' (run 'r1') failed its digest check (its bytes no longer match their "
        "digest) and was not loaded. Recompute it with: resumable invalidate r1 make"
    )
    bucket_store.fs.rm_file(bucket_store.key(key))
    with pytest.raises(resumable.CheckpointIntegrityError) as missing:
        resumable.load("r1", "make", store=bucket_store.url)
    assert str(missing.value) == (
        f"output 'return' of step 'make' (run 'r1') failed its digest check (its payload object {key} is missing "
        f"from s3://{bucket_store.bucket}/{PREFIX}) and was not loaded. Recompute it with: resumable invalidate r1 make"
    )


def test_gc_and_rm_remove_the_objects_no_row_references_once_past_the_write_grace(
    bucket_store: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A young unreferenced object stays (a write in progress may own it); an old one goes, referenced ones stay.

    The grace is an hour by the object's last-modified time; the store cannot be made to date an
    object back, so the second gc runs with the grace set to nothing.
    """
    kept = completed(bucket_store.url, "r1", "keep", frame(JUST_OVER))
    dropped = completed(bucket_store.url, "r1", "drop", frame(JUST_OVER, seed=1))
    orphan = dropped.split("/")[0] + "/ab/" + "ab" * 32 + ".0123456789abcdef.bin"  # in the store's own folder
    bucket_store.fs.pipe(bucket_store.key(orphan), b"left by a writer that was killed before its commit")
    store = open_store(bucket_store.url)
    store.invalidate("r1", "drop", current_owner())
    first = store.gc()
    assert (first.checkpoints_removed, first.files_removed) == (1, 0)  # the objects are younger than the grace
    monkeypatch.setattr(object_place_module, "WRITE_GRACE_S", 0.0)
    url = f"s3://{bucket_store.bucket}/{PREFIX}"
    sizes = {k: bucket_store.fs.info(bucket_store.key(k))["size"] for k in (kept, dropped, orphan)}
    second = CliRunner().invoke(cli_main, ["gc", "--store", bucket_store.url])  # the command line, in this process
    assert (second.exit_code, second.stdout) == (
        0,
        f"removed 0 superseded checkpoint rows and 2 payload objects in {url} "
        f"({human_size(sizes[dropped] + sizes[orphan])} freed); the store was not compacted: a PostgreSQL server "
        "reuses the space of deleted rows itself (autovacuum)\n",
    )
    assert not bucket_store.fs.exists(bucket_store.key(orphan))
    assert not bucket_store.fs.exists(bucket_store.key(dropped))
    pd.testing.assert_frame_equal(resumable.load("r1", "keep", store=bucket_store.url), frame(JUST_OVER))
    removal = CliRunner().invoke(cli_main, ["rm", "r1", "--store", bucket_store.url])
    assert removal.exit_code == 0, removal.output
    assert removal.stdout.splitlines()[-1] == (
        f"freed {human_size(sizes[kept])}: 1 checkpoint rows (0 B inside the database) and 1 payload objects in "
        f"{url} ({human_size(sizes[kept])}); the store was not compacted: a PostgreSQL server reuses the space "
        "of deleted rows itself (autovacuum)"
    )
    assert not bucket_store.fs.exists(bucket_store.key(kept))


def test_gc_of_one_store_never_removes_the_objects_of_another_store_sharing_the_bucket_prefix(
    bucket_store: Bucket, pg_cluster: pg_server.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two databases with the same ``?payloads=`` URL (as one RESUMABLE_PAYLOADS gives every store).

    Each store's gc collects only what it wrote: the other store's completed checkpoints, which
    none of its rows reference, stay, past the write grace too.
    """
    other = f"{pg_cluster.new_database()}?{bucket_store.url.partition('?')[2]}"
    completed(bucket_store.url, "r1", "mine", frame(JUST_OVER))
    theirs = completed(other, "r1", "theirs", frame(JUST_OVER, seed=3))
    monkeypatch.setattr(object_place_module, "WRITE_GRACE_S", 0.0)
    assert open_store(bucket_store.url).gc().files_removed == 0
    assert bucket_store.fs.exists(bucket_store.key(theirs))
    pd.testing.assert_frame_equal(resumable.load("r1", "theirs", store=other), frame(JUST_OVER, seed=3))


def test_an_object_store_that_cannot_take_an_output_fails_the_step_clearly_and_keeps_what_completed(
    bucket_store: Bucket, pg_cluster: pg_server.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreachable, or no such bucket: ObjectStoreWriteError, whole; the step is failed, the earlier one kept.

    A load while the store is unreachable is ObjectStoreError, whole. (The missing bucket is named
    by a database of its own: a store keeps the one payload location it recorded first.)
    """
    completed(bucket_store.url, "r1", "first", frame(JUST_OVER))
    database = pg_cluster.new_database()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    no_bucket = "FileNotFoundError: The specified bucket does not exist"
    unreachable = "EndpointConnectionError: Could not connect to the endpoint URL"
    cases = [
        (f"{database}?payloads=s3://no-such-bucket/x", "s3://no-such-bucket/x", no_bucket),
        (bucket_store.url, f"s3://{bucket_store.bucket}/{PREFIX}", unreachable),
    ]
    for n, (url, where, reason) in enumerate(cases):
        forget_all()  # a store opened anew, with the endpoint below
        if n == 1:
            monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        pipe = resumable.Pipeline("p", store=url)
        with pytest.raises(resumable.ObjectStoreWriteError) as excinfo, pipe.run(run_id="r1") as run:
            run.step(f"second{n}", lambda: frame(JUST_OVER, seed=2))
        message = str(excinfo.value)
        assert message.startswith(
            f"step 'second{n}' (run 'r1'): its outputs could not be stored: the object store did not take them at "
            f"'{where}' ({reason}"
        )
        assert message.endswith(
            "The step was marked failed; completed steps and their checkpoints are intact. Check that the bucket "
            "exists and can be reached from this machine, and that the credentials (for s3://, the usual AWS_* "
            "environment variables or ~/.aws files) allow writing there, then run the step again."
        )
        assert open_store(url).get_step("r1", f"second{n}").state is StepState.FAILED  # type: ignore[union-attr]
    with pytest.raises(resumable.ObjectStoreError) as unread:  # still unreachable: a load says so, loads nothing
        resumable.load("r1", "first", store=bucket_store.url)
    assert str(unread.value).startswith(
        f"the object store at 's3://{bucket_store.bucket}/{PREFIX}' could not be reached or refused the request: "
        "EndpointConnectionError: Could not connect to the endpoint URL"
    )
    assert str(unread.value).endswith(
        "Nothing was loaded from it; completed steps and their checkpoints are kept. Check that the bucket can be "
        "reached from this machine and that the credentials (for s3://, the usual AWS_* environment variables or "
        "~/.aws files) allow reading there (and deleting, for gc and rm), then try again."
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    forget_all()
    pd.testing.assert_frame_equal(resumable.load("r1", "first", store=bucket_store.url), frame(JUST_OVER))


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd, resumable
    pipe = resumable.Pipeline("p", store=sys.argv[1])
    with pipe.run(run_id=sys.argv[2]) as run:
        for i in range(1000):
            run.step(f"s{i}", lambda i=i: pd.DataFrame({"x": np.arange(200_000, dtype=np.float64) + i}))
            print(i, flush=True)
    """
)


def test_a_writer_killed_at_random_while_it_puts_objects_leaves_no_completed_step_without_its_object(
    bucket_store: Bucket,
) -> None:
    """SIGKILL at random moments of a loop that mostly serializes and PUTs 1.6 MB objects.

    Every step the store calls completed restores equal; the killed attempt is not completed.
    Trials: RESUMABLE_OBJECT_KILLS (default 2).
    """
    rng = random.Random()
    for trial in range(int(os.environ.get("RESUMABLE_OBJECT_KILLS", "2"))):
        run_id = f"k{trial}"
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, bucket_store.url, run_id], stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "0"  # one step completed: the writer is in its loop
            try:  # a random kill moment, not a synchronisation: the writer is not expected to exit
                writer.wait(timeout=rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                pass
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait(timeout=30)
        store = open_store(bucket_store.url)
        done = [s for s in store.list_steps(run_id) if s.state is StepState.COMPLETED]
        assert done, "the first step completed before the kill"
        for status in done:
            (ref,) = store.checkpoint_refs(run_id, status.step)
            assert bucket_store.fs.exists(bucket_store.key(ref.file))
            i = int(status.step[1:])
            restored = resumable.load(run_id, status.step, store=bucket_store.url)
            assert restored["x"].iloc[0] == i and len(restored) == 200_000


def test_a_notebook_cell_restores_its_frame_from_the_bucket_in_a_fresh_kernel(
    bucket_store: Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The magics' user's path: a %%durable_step cell's frame goes to the bucket and comes back after a restart."""
    monkeypatch.setenv("RESUMABLE_STORE", bucket_store.url)
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    monkeypatch.chdir(tmp_path)
    ip = started_shell()
    body = f"import numpy as np, pandas as pd\nframe = pd.DataFrame({{'x': np.arange({2 * JUST_OVER}, dtype=float)}})"
    try:
        assert step(ip, "make", body).error_in_exec is None
        (ref,) = (r for r in open_store(bucket_store.url).checkpoint_refs("r1", "make") if r.name == "frame")
        assert ref.file is not None and bucket_store.fs.exists(bucket_store.key(ref.file))
        fresh_kernel(ip)
        capsys.readouterr()
        again = step(ip, "make", body)
        assert again.error_in_exec is None
        assert "↺ restored" in capsys.readouterr().out  # restored from the bucket, not executed again
        pd.testing.assert_frame_equal(ip.user_ns["frame"], pd.DataFrame({"x": np.arange(2 * JUST_OVER, dtype=float)}))
        statuses = {s.step: s for s in open_store(bucket_store.url).list_steps("r1")}
        assert statuses["make"].state is StepState.COMPLETED
    finally:
        fresh_kernel(ip)


def test_a_payload_url_fsspec_cannot_open_or_a_file_store_given_one_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown scheme is refused when the store opens; a DuckDB file never takes RESUMABLE_PAYLOADS' bucket."""
    with pytest.raises(resumable.StorePathError) as unknown:
        open_store("postgresql://me@127.0.0.1:1/db?payloads=nosuchscheme://bucket/x")
    assert str(unknown.value).startswith(
        "store 'nosuchscheme://bucket/x' names an object store fsspec cannot open (ValueError: Protocol not known: "
        "nosuchscheme). Install the package for that scheme (for s3://: pip install 'resumable[objectstore]') or "
        "fix the URL"
    )
    monkeypatch.setenv("RESUMABLE_PAYLOADS", "s3://bucket/prefix")
    path = tmp_path / "store.duckdb"
    with pytest.raises(resumable.StorePathError) as file_store:
        open_store(path)
    assert str(file_store.value) == (
        f"store '{path}' is a DuckDB file, whose large checkpoints stay in the folder beside it, but "
        "RESUMABLE_PAYLOADS names an object store ('s3://bucket/prefix'), which only a PostgreSQL store uses. "
        "Unset RESUMABLE_PAYLOADS to use this file, or use a postgresql:// store with ?payloads=<URL> "
        "(docs/scale.md)."
    )
    assert not path.exists()


def test_a_staging_folder_others_could_write_to_is_made_private_when_ours_and_refused_otherwise(
    bucket_store: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging folder is checked on every use, not only when created: whole messages.

    Ours but opened up (mode 0777): made 0700 again, and the load goes on. A symbolic link planted
    in its place: refused for a load (nothing unpickled, the object untouched) and for a step's write
    (the step failed, the earlier checkpoint kept). A folder of another user can only be made by
    root, so that case runs only as root.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = completed(bucket_store.url, "r1", "make", frame(JUST_OVER))
    staging = tmp_path / f"resumable-spill-{os.getuid()}"
    staging.chmod(0o777)
    pd.testing.assert_frame_equal(resumable.load("r1", "make", store=bucket_store.url), frame(JUST_OVER))
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    url = f"s3://{bucket_store.bucket}/{PREFIX}"
    staging.rename(tmp_path / "planted")
    staging.symlink_to(tmp_path / "planted")
    with pytest.raises(resumable.StagingFolderError) as planted:
        resumable.load("r1", "make", store=bucket_store.url)
    assert str(planted.value) == (
        f"the local folder '{staging}', which stages checkpoints of the object store at '{url}', is a symbolic link "
        f"(to '{tmp_path / 'planted'}'), which anyone could have planted in a shared folder, so a checkpoint copy "
        "there could be swapped before it is unpickled. Nothing was unpickled and the checkpoint in the object "
        "store is untouched. Remove it (resumable makes a private one), or set TMPDIR to a folder of your own, "
        "then try again."
    )
    pipe = resumable.Pipeline("p", store=bucket_store.url)
    with pytest.raises(resumable.StagingFolderError) as writing, pipe.run(run_id="r1") as run:
        run.step("second", lambda: frame(JUST_OVER, seed=1))
    assert str(writing.value).endswith(
        "could be swapped before it is unpickled. The step's outputs were not stored; completed steps and their "
        "checkpoints are intact. Remove it (resumable makes a private one), or set TMPDIR to a folder of your own, "
        "then try again."
    )
    assert open_store(bucket_store.url).get_step("r1", "second").state is StepState.FAILED  # type: ignore[union-attr]
    assert bucket_store.fs.exists(bucket_store.key(key))
    staging.unlink()
    if os.geteuid() == 0:
        staging.mkdir(mode=0o700)
        os.chown(staging, 65534, 65534)
        with pytest.raises(resumable.StagingFolderError) as foreign:
            resumable.load("r1", "make", store=bucket_store.url)
        assert str(foreign.value).startswith(
            f"the local folder '{staging}', which stages checkpoints of the object store at '{url}', belongs to "
            "another user (uid 65534), who can change what is in it, so a checkpoint copy there could be swapped"
        )
        staging.rmdir()
    pd.testing.assert_frame_equal(resumable.load("r1", "make", store=bucket_store.url), frame(JUST_OVER))


LOCAL_DISK = textwrap.dedent(
    """
    import json, os, resource, shutil, sys, tempfile
    import resumable
    from resumable._store import forget_all, open_store
    url, read_only, full, limited = sys.argv[1:5]
    seen = {}
    for case, folder in (("read_only", read_only), ("full", full), ("limit", limited)):
        tempfile.tempdir = folder
        forget_all()
        if case == "limit":
            resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        try:
            resumable.load("r1", "make", store=url)
        except resumable.StagingFolderError as exc:
            seen[case] = str(exc)
        seen[case + "_free"] = shutil.disk_usage(folder).free
    seen["full_left"] = os.listdir(f"{full}/resumable-spill-{os.getuid()}/tmp")
    tempfile.tempdir = full  # a step's large output staged on the full disk on its way to the bucket
    forget_all()
    pipe = resumable.Pipeline("p", store=url)
    try:
        with pipe.run(run_id="r1") as run:
            run.step("more", lambda: b"x" * 300_000)
    except resumable.StagingFolderError as exc:
        seen["write"] = str(exc)
    seen["states"] = {s.step: s.state.value for s in open_store(url).list_steps("r1")}
    print(json.dumps(seen))
    """
)


def test_a_read_only_or_full_local_disk_is_blamed_on_the_staging_folder_not_the_bucket(
    bucket_store: Bucket, tmp_path: Path
) -> None:
    """Real file systems refuse the download: a read-only tmpfs, a 64 kB tmpfs, a file size limit.

    The two tmpfs are mounted in a user and mount namespace of the reading subprocess (``unshare``,
    no root needed where unprivileged namespaces are allowed), so the disk is really full (ENOSPC)
    without filling a disk of the machine; ``RLIMIT_FSIZE`` gives the kernel's EFBIG. Each is a
    StagingFolderError naming the local folder, never an ObjectStoreError; the object stays.
    """
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        pytest.skip("needs unshare with user and mount namespaces for a tmpfs of its own")
    key = completed(bucket_store.url, "r1", "make", frame(JUST_OVER))
    (ref,) = open_store(bucket_store.url).checkpoint_refs("r1", "make")
    read_only, full, limited = (tmp_path / name for name in ("ro", "full", "limited"))
    for folder in (read_only, full, limited):
        folder.mkdir()
    script = tmp_path / "load.py"
    script.write_text(LOCAL_DISK)
    mounts = f'mount -t tmpfs -o ro tmpfs {read_only} && mount -t tmpfs -o size=64k tmpfs {full} && exec "$@"'
    command = [sys.executable, str(script), bucket_store.url, str(read_only), str(full), str(limited)]
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mounts, "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    url = f"s3://{bucket_store.bucket}/{PREFIX}"
    spill = f"resumable-spill-{os.getuid()}"
    kept = "Nothing was unpickled and the checkpoint in the object store is untouched."
    assert seen["read_only"] == (
        f"the local folder '{read_only / spill}', which stages checkpoints of the object store at '{url}', cannot be "
        f"written (OSError: [Errno 30] Read-only file system: '{read_only / spill}'). {kept} Make it writable by "
        "you, or set TMPDIR to a writable folder of your own, then try again."
    )
    free = human_size(seen["full_free"])
    assert seen["full"] == (
        f"the local folder '{full / spill / 'tmp'}', which stages checkpoints of the object store at '{url}', has no "
        f"room on its disk (OSError: [Errno 28] No space left on device; {human_size(ref.size)} "
        f"needed, {free} free). {kept} Make room on that disk, or set TMPDIR to a folder on a disk with room, "
        "then try again."
    )
    assert seen["limit"] == (
        f"the local folder '{limited / spill / 'tmp'}', which stages checkpoints of the object store at '{url}', took "
        "a file past this process's file size limit ('ulimit -f') (OSError: [Errno 27] File too large). "
        f"{kept} Raise the limit ('ulimit -f unlimited'), then try again."
    )
    assert bucket_store.fs.exists(bucket_store.key(key))
    assert seen["full_left"] == []  # the partial download was removed
    # A step's output staged on that full disk: blamed on it too, with TMPDIR as the way out.
    assert seen["write"].startswith(
        f"the local folder '{full / spill}', which stages checkpoints of the object store at '{url}', has no room on "
        "its disk (OSError: [Errno 28] No space left on device; "
    )
    assert seen["write"].endswith(
        " free). The step's outputs were not stored; completed steps and their checkpoints are intact. Make room "
        "on that disk, or set TMPDIR to a folder on a disk with room, then try again."
    )
    assert seen["states"] == {"make": "completed", "more": "failed"}
