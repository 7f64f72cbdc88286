"""Bad input: each a clear error of our own, and no completed checkpoint lost."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

import resumable
from resumable import StepState
from resumable._store import forget_all


def _completed_store(store_location: str) -> resumable.Pipeline:
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1") as run:
        run.step("good", lambda: {"total": 42})
    return pipe


@pytest.mark.parametrize("name", ["", " ", "has space", "-dash", "a/b", "x" * 200, None, 3])
def test_bad_pipeline_and_step_names(store_path: Path, name: object) -> None:
    """An empty or malformed name is refused when defined, with the rule and an example."""
    with pytest.raises(resumable.StepDefinitionError, match="is not valid: use 1 to 128 letters"):
        resumable.Pipeline(name, store=store_path)  # type: ignore[arg-type]
    pipe = resumable.Pipeline("p", store=store_path)
    with pytest.raises(resumable.StepDefinitionError, match="for example 'load_data'"):
        pipe.step(name=name)(lambda: 1)  # type: ignore[arg-type]


RETRIES_RULE = "retries counts attempts after the first and must be a whole number, 0 or more."
BACKOFF_RULE = "it is the first delay in seconds: a finite number, 0 or more."
TIMEOUT_RULE = "give a finite number of seconds above 0, or None for no limit."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, f"retries=-1 is not valid; {RETRIES_RULE}"),
        ({"retries": 1.5}, f"retries=1.5 is not valid; {RETRIES_RULE}"),
        ({"backoff": -2}, f"backoff=-2 is not valid; {BACKOFF_RULE}"),
        ({"backoff": float("nan")}, f"backoff=nan is not valid; {BACKOFF_RULE}"),
        ({"backoff": float("inf")}, f"backoff=inf is not valid; {BACKOFF_RULE}"),
        ({"timeout": 0}, f"timeout=0 is not valid; {TIMEOUT_RULE}"),
        ({"timeout": -1.0}, f"timeout=-1.0 is not valid; {TIMEOUT_RULE}"),
        ({"timeout": float("nan")}, f"timeout=nan is not valid; {TIMEOUT_RULE}"),
        ({"timeout": float("inf")}, f"timeout=inf is not valid; {TIMEOUT_RULE}"),
        ({"timeout": float("-inf")}, f"timeout=-inf is not valid; {TIMEOUT_RULE}"),
        ({"retry_on": "ValueError"}, "retry_on='ValueError' is not valid; give an exception class or a tuple of them."),
    ],
)
def test_bad_step_options_are_refused_at_definition(store_path: Path, options: dict[str, object], message: str) -> None:
    """Options are checked when the step is defined, not on its first call: nan and infinities too,
    which used to pass here and fail later inside setitimer or sleep with an error naming neither."""
    pipe = resumable.Pipeline("p", store=store_path)

    def charge() -> None: ...

    with pytest.raises(resumable.StepDefinitionError) as excinfo:
        pipe.step(**options)(charge)  # type: ignore[call-overload]
    assert str(excinfo.value) == "step 'charge': " + message
    (option,) = options
    assert (excinfo.value.step, excinfo.value.option) == ("charge", option)
    with pytest.raises(resumable.StepDefinitionError) as again, pipe.run(run_id="r1") as run:
        run.step("charge", charge, **options)
    assert str(again.value) == "step 'charge': " + message


def test_bad_name_message(store_path: Path) -> None:
    """A bad name says which kind of name, the rule and an example."""
    with pytest.raises(resumable.StepDefinitionError) as excinfo:
        resumable.Pipeline("has space", store=store_path)
    assert str(excinfo.value) == (
        "pipeline name 'has space' is not valid: use 1 to 128 letters, digits, '_', '-' or '.', "
        "not starting with '-' or '.', for example 'load_data'."
    )


def test_store_path_that_is_a_folder(tmp_path: Path) -> None:
    """A folder given as the store says so and suggests a file inside it."""
    pipe = resumable.Pipeline("p", store=tmp_path)
    with pytest.raises(resumable.StorePathError) as excinfo:
        pipe.runs()
    assert str(excinfo.value) == (
        f"store '{tmp_path}' is a folder. Name a file inside it, e.g. '{tmp_path / 'store.duckdb'}'."
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_store_path_not_writable(tmp_path: Path) -> None:
    """A folder the user cannot write to is reported before anything is attempted."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(resumable.StorePathError, match="is not writable"):
        resumable.Pipeline("p", store=locked / "s.duckdb").runs()


def test_store_path_in_a_read_only_file_system() -> None:
    """A store that cannot be created (here under /proc, read-only even for root) says so and why."""
    with pytest.raises(resumable.StorePathError, match=r"cannot be created \(.*\)\. Choose a writable folder\."):
        resumable.Pipeline("p", store="/proc/resumable-test/store.duckdb").runs()


def test_store_path_under_a_file(tmp_path: Path) -> None:
    """A store whose parent is a file cannot be created, and the error says which path."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(resumable.StorePathError, match="blocker"):
        resumable.Pipeline("p", store=blocker / "s.duckdb").runs()


def test_file_that_is_not_a_duckdb_database(tmp_path: Path) -> None:
    """A text file is refused and left untouched."""
    path = tmp_path / "notes.duckdb"
    path.write_text("my notes, not a database")
    with pytest.raises(resumable.StorePathError, match="exists but is not a DuckDB database"):
        resumable.Pipeline("p", store=path).runs()
    assert path.read_text() == "my notes, not a database"


def test_store_is_private_to_its_user(tmp_path: Path) -> None:
    """The store's folder is created 0700 and its file 0600."""
    path = tmp_path / "private" / "store.duckdb"
    _completed_store(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("large", [False, True])
def test_checkpoint_whose_bytes_changed_is_refused_not_unpickled(store_location: str, large: bool) -> None:
    """Tampered bytes fail the digest check with the command that recomputes them."""
    pipe = resumable.Pipeline("p", store=store_location)
    value = b"x" * (2_000_000 if large else 10)
    with pipe.run(run_id="r1") as run:
        run.step("blob", lambda: value)
    store = pipe.store
    (ref,) = store.checkpoint_refs("r1", "blob")
    if large:
        assert ref.file is not None
        payload = store.payload_dir / ref.file
        data = bytearray(payload.read_bytes())
        data[100] ^= 0xFF
        payload.write_bytes(bytes(data))
    else:
        assert ref.data is not None
        tampered = type(ref)(
            **{**{f: getattr(ref, f) for f in ref.__slots__}, "data": ref.data[:-12] + b"Y" + ref.data[-11:]}
        )
        with pytest.raises(resumable.CheckpointIntegrityError):
            store.load_value(tampered)
        return
    with pytest.raises(resumable.CheckpointIntegrityError) as excinfo:
        resumable.load("r1", "blob", store=store_location)
    assert str(excinfo.value) == (
        f"output 'return' of step 'blob' (run 'r1') {excinfo.value.reason} and was not loaded. "
        "Recompute it with: resumable invalidate r1 blob"
    )
    assert excinfo.value.reason.startswith("failed its digest check")
    assert store.get_step("r1", "blob").state is StepState.COMPLETED  # type: ignore[union-attr]


def test_signed_store_refuses_unsigned_checkpoints(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a signing key configured, a checkpoint written without it is refused."""
    _completed_store(store_location)
    forget_all()
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", "k3y")
    with pytest.raises(resumable.CheckpointIntegrityError, match="was not signed with the configured key"):
        resumable.load("r1", "good", store=store_location)


def test_unserializable_output_is_clear_and_loses_nothing(store_location: str) -> None:
    """A lock cannot be pickled: the error names it, the step is not completed, earlier steps stay."""
    pipe = _completed_store(store_location)
    with pytest.raises(resumable.UnserializableOutputError) as excinfo, pipe.run(run_id="r1") as run:
        run.step("bad", threading.Lock)
    assert str(excinfo.value) == (
        "the return value of step 'bad' (run 'r1') is a _thread.lock, which cannot be pickled "
        "(TypeError: cannot pickle '_thread.lock' object). Nothing from this attempt was stored and earlier "
        "checkpoints are intact. Return a value that cloudpickle can serialize."
    )
    assert excinfo.value.variable is None
    assert run.status("bad").state is StepState.FAILED
    assert run.status("good").state is StepState.COMPLETED
    assert resumable.load("r1", "good", store=store_location) == {"total": 42}
    assert pipe.store.payload_dir is not None and not list(pipe.store.payload_dir.glob("tmp/*.part"))
