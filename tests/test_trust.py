"""Trust (issue 11 §6): signatures bound to their place, payload paths, private files, key files, secrets."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import store_sql
from ipython_shell import step

import resumable
from resumable import _codec
from resumable._store import forget_all, open_store
from resumable.errors import SecretNotStoredWarning

KEY = "k3y-for-tests"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _payload_folder(store_location: str) -> Path:
    folder = open_store(store_location).payload_dir
    forget_all()  # let go of the file: the test changes it with SQL of its own next
    assert folder is not None
    return folder


def _two_steps(store_location: str) -> None:
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1") as run:
        run.step("a", lambda: "value of a")
        run.step("b", lambda: "value of b")
    forget_all()


def _sql(store_location: str, statement: str, params: list[Any] | None = None) -> list[Any]:
    return store_sql.execute(store_location, statement, params or [])


def test_a_signed_row_copied_to_another_step_is_refused(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step a's validly signed checkpoint, copied over step b's, does not load as b's value."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)
    _two_steps(store_location)
    assert resumable.load("r1", "b", store=store_location) == "value of b"
    forget_all()
    _sql(store_location, "DELETE FROM checkpoints WHERE step = 'b'")
    _sql(
        store_location,
        "INSERT INTO checkpoints SELECT run_id, 'b', name, kind, codec, digest, signature, size, data, file, "
        "created_at, generation FROM checkpoints WHERE step = 'a'",
    )
    with pytest.raises(resumable.CheckpointIntegrityError) as excinfo:
        resumable.load("r1", "b", store=store_location)
    assert str(excinfo.value) == (
        "output 'return' of step 'b' (run 'r1') has a bad signature and was not loaded. "
        "Recompute it with: resumable invalidate r1 b"
    )
    assert resumable.load("r1", "a", store=store_location) == "value of a"  # the original still loads


def test_a_signature_binds_the_output_name_and_kind(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same row under another output name, or as the step's display, fails its signature too."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)
    _two_steps(store_location)
    _sql(store_location, "UPDATE checkpoints SET name = 'other' WHERE step = 'a'")
    with pytest.raises(resumable.CheckpointIntegrityError, match=r"'other' of step 'a' .* has a bad signature"):
        resumable.load("r1", "a", "other", store=store_location)
    forget_all()
    signature = _sql(store_location, "SELECT signature FROM checkpoints WHERE step = 'a'")[0][0]
    assert signature.startswith("v2:")
    expected = _codec.sign(KEY.encode(), "x", "r1", "a", "value", "other", _codec.CODEC)
    assert expected != _codec.sign(KEY.encode(), "x", "r1", "a", "display", "other", _codec.CODEC)


def test_a_version_1_signature_is_refused_with_what_to_do(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint signed by the old scheme (the digest alone) is not trusted, and the message says why."""
    import hashlib
    import hmac

    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)
    _two_steps(store_location)
    digest = _sql(store_location, "SELECT digest FROM checkpoints WHERE step = 'a'")[0][0]
    old = hmac.new(KEY.encode(), digest.encode(), hashlib.sha256).hexdigest()
    _sql(store_location, "UPDATE checkpoints SET signature = ? WHERE step = 'a'", [old])
    with pytest.raises(resumable.CheckpointIntegrityError) as excinfo:
        resumable.load("r1", "a", store=store_location)
    assert str(excinfo.value) == (
        "output 'return' of step 'a' (run 'r1') carries a version-1 signature, which did not bind a checkpoint to "
        "its run and step, so it is no longer trusted and was not loaded. Recompute it with: resumable invalidate r1 a"
    )


EVIL = "import pathlib; pathlib.Path({marker!r}).write_text('unpickled')"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (EVIL.format(marker=self.marker),))


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink"])
def test_a_row_pointing_outside_the_payload_folder_is_refused_before_any_read(
    store_location: str, tmp_path: Path, where: str
) -> None:
    """Without a key, a row naming a file outside the payload folder is refused; the file is never unpickled."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1") as run:
        run.step("big", lambda: bytes(400_000))  # a payload file
    forget_all()
    marker = tmp_path / "was-unpickled"
    outside = tmp_path / "evil.bin"
    blob = _codec.encode("return", _Evil(str(marker)), tmp_path / "elsewhere")
    assert blob.inline is not None
    outside.write_bytes(blob.inline)
    payloads = _payload_folder(store_location)
    if where == "relative":
        pointer = os.path.relpath(outside, payloads)
    elif where == "absolute":
        pointer = str(outside)
    else:
        (payloads / "ab").mkdir(mode=0o700)
        (payloads / "ab" / "link.bin").symlink_to(outside)
        pointer = "ab/link.bin"
    _sql(store_location, "UPDATE checkpoints SET file = ?, digest = ? WHERE step = 'big'", [pointer, blob.digest])
    with pytest.raises(resumable.CheckpointIntegrityError) as excinfo:
        resumable.load("r1", "big", store=store_location)
    assert str(excinfo.value) == (
        f"output 'return' of step 'big' (run 'r1') points to a file outside the store's payload folder "
        f"({pointer!r}) and was not loaded. Recompute it with: resumable invalidate r1 big"
    )
    assert not marker.exists()


def test_store_wal_and_payload_folder_are_private(store_path: Path) -> None:
    """The database, its write-ahead log (left by a killed writer) and the payload folder are 0600/0700."""
    script = (
        "import os, resumable\n"
        f"pipe = resumable.Pipeline('p', store={str(store_path)!r})\n"
        "with pipe.run(run_id='r1') as run:\n"
        "    run.step('secret', lambda: 'hunter2' * 100)\n"
        "    run.step('big', lambda: bytes(400_000))\n"
        "    run.step('fence', resumable.idempotency_key)  # earlier completions are committed first\n"
        "    print('ready', flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "RESUMABLE_STORE": str(store_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout
    wal = Path(str(store_path) + ".wal")
    assert wal.exists()
    assert _mode(wal) == 0o600
    assert _mode(store_path) == 0o600
    payloads = store_path.parent / "store.duckdb.payloads"
    assert _mode(payloads) == 0o700
    assert all(_mode(p) == 0o700 for p in payloads.rglob("*") if p.is_dir())
    assert all(_mode(p) == 0o600 for p in payloads.rglob("*") if p.is_file())
    assert resumable.load("r1", "secret", store=store_path) == "hunter2" * 100  # the log replays


def test_the_waiting_marker_is_private(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While this process waits for the store's lock another process holds, its marker file is 0600."""
    resumable.Pipeline("p", store=store_path).runs()
    forget_all()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from pathlib import Path; from resumable._store import filelock; "
         f"filelock.acquire(Path({str(store_path)!r}), 5); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    marker = Path(str(store_path) + ".waiting")
    modes: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while not modes and time.monotonic() < deadline:
            try:
                modes.append(_mode(marker))
            except FileNotFoundError:
                time.sleep(0.001)

    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        watcher = threading.Thread(target=watch)
        watcher.start()
        monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "1")
        with pytest.raises(resumable.StoreLockedError):
            resumable.Pipeline("p", store=store_path).runs()
        watcher.join()
    finally:
        holder.kill()
        holder.wait()
    assert modes == [0o600]


def test_an_empty_or_missing_key_file_is_refused(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty key file would sign with a key everyone knows: refused, like a missing one, nothing touched."""
    _two_steps(store_path)
    key_file = tmp_path / "key"
    key_file.write_text("  \n")
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY_FILE", str(key_file))
    with pytest.raises(resumable.SigningKeyError) as excinfo:
        resumable.load("r1", "a", store=store_path)
    assert str(excinfo.value) == (
        f"the signing-key file '{key_file}' (RESUMABLE_SIGNING_KEY_FILE) is empty, so the store was not opened; "
        "nothing was read or written and completed steps are intact. Restore the key file at that path (the same "
        "key that signed the store's checkpoints), or unset RESUMABLE_SIGNING_KEY_FILE to use the store without "
        "signatures."
    )
    key_file.unlink()
    with pytest.raises(resumable.SigningKeyError, match="does not exist"):
        resumable.load("r1", "a", store=store_path)
    key_file.write_text(KEY)
    with pytest.raises(resumable.CheckpointIntegrityError, match="was not signed with the configured key"):
        resumable.load("r1", "a", store=store_path)  # written without a key: still refused under one


WRITER = """
import os, sys, threading
from resumable._store import open_store

class Stall:
    def __reduce__(self):
        print('writing', flush=True)
        threading.Event().wait()  # the parent kills this process mid-write
        return (int, ())

open_store(sys.argv[1]).encode('big', [bytes(400_000), Stall()])  # where the store writes its payloads
"""


def test_gc_collects_part_files_of_killed_writes_only(store_location: str) -> None:
    """A .part file left by a SIGKILLed writer is removed by gc; one a live process writes is kept."""
    resumable.Pipeline("p", store=store_location).runs()
    payloads = _payload_folder(store_location)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_location], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for w in writers:
            assert w.stdout is not None and w.stdout.readline() == "writing\n"
        parts = sorted(payloads.rglob("tmp/*.part"))
        assert len(parts) == 2
        assert {p.name.split("-")[0] for p in parts} == {str(w.pid) for w in writers}
        dead, live = writers
        dead.kill()
        dead.wait()
        report = open_store(store_location).gc()
        assert report.files_removed == 1
        assert report.bytes_freed >= 400_000
        left = [p.name for p in payloads.rglob("tmp/*.part")]
        assert len(left) == 1
        assert left[0].startswith(f"{live.pid}-")
    finally:
        for w in writers:
            w.kill()
            w.wait()
    assert open_store(store_location).gc().files_removed == 1


def _stored(store_path: Path, step_name: str) -> set[str]:
    return {r.name for r in open_store(store_path).checkpoint_refs("r1", step_name) if r.kind == "value"}


def test_names_that_look_like_secrets_are_not_stored(shell: Any, store_path: Path) -> None:
    """password, api_key, AWS_SECRET_ACCESS_KEY... stay out of the checkpoint, and the user is told once."""
    body = (
        "password = 'hunter2'\napi_key = 'sk-1'\nAWS_SECRET_ACCESS_KEY = 'abc'\naccessToken = 't'\n"
        "tokens = ['a', 'b']\nn = 3"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert step(shell, "login", body).error_in_exec is None
        shell.run_cell("%%durable_step login --force\n" + body)  # a second execution: not told again
    told = [w.message for w in caught if isinstance(w.message, SecretNotStoredWarning)]
    assert [str(m) for m in told] == [
        "step 'login': 'password', 'api_key', 'AWS_SECRET_ACCESS_KEY', 'accessToken' look like a secret and were "
        "not stored in its checkpoint, so a restore will not bring them back. Read secrets in a cell that is not a "
        "step; to store one anyway, name it in --outputs (e.g. '--outputs +password')."
    ]
    assert _stored(store_path, "login") == {"tokens", "n"}
    # Not in any checkpoint's bytes (the cell's source is stored, as docs/security.md says; the values are not).
    refs = open_store(store_path).checkpoint_refs("r1", "login")
    assert all(r.file is None and r.data is not None and b"hunter2" not in r.data for r in refs)


def test_a_secret_named_in_outputs_is_stored(shell: Any, store_path: Path) -> None:
    """Naming a secret-looking variable in --outputs is asking for it to be stored: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecretNotStoredWarning)
        assert step(shell, "keep --outputs +db_password", "db_password = 'x'\nuser = 'me'").error_in_exec is None
        assert step(shell, "exact --outputs token", "token = 'y'").error_in_exec is None
    assert _stored(store_path, "keep") == {"db_password", "user"}
    assert _stored(store_path, "exact") == {"token"}
