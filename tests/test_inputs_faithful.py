"""Parameters and inputs (issue 11 §4): stored faithfully, refused clearly, read-only stores readable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import duckdb
import pytest
from IPython.core.error import UsageError

import resumable
from resumable import _magic_lines
from resumable._headless import params as headless_params
from resumable._store import forget_all, open_store
from resumable.errors import NotebookInputError

FAITHFUL: dict[str, Any] = {
    "mixed_keys": {1: 2, "a": 3},
    "empty_set": set(),
    "complex": [0j, 1 + 2j],
    "pair": (1, "a"),
    "flag": True,
    "one": 1,
    "float_one": 1.0,
    "neg_zero": -0.0,
    "big": 10**30,
    "raw": b"\x00\xff",
    "nested": {"k": [(1, 2), {3}], (1, 2): None},
}


def test_parameters_come_back_exactly_as_they_were_given(store_location: str) -> None:
    """Sets, complex numbers, tuples, non-string keys, bytes: recorded and read back equal and of the same type."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1", params=FAITHFUL):
        pass
    forget_all()
    stored = open_store(store_location).get_run("r1")
    assert stored is not None
    assert stored.params == FAITHFUL
    assert {k: type(v) for k, v in stored.params.items()} == {k: type(v) for k, v in FAITHFUL.items()}
    assert repr(stored.params["nested"]) == repr(FAITHFUL["nested"])
    with pipe.run(run_id="r1", params=dict(FAITHFUL)):  # the same values resume without a mismatch
        pass


def test_a_change_of_type_is_a_change(store_location: str) -> None:
    """1, True and 1.0 are equal in Python but three different parameters; the message shows literals."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1", params={"n": 1, "s": {1}}):
        pass
    with pytest.raises(resumable.ParameterMismatchError) as excinfo, pipe.run(run_id="r1", params={"n": True}):
        pass
    assert str(excinfo.value) == (
        "run 'r1' started with other parameters:\n  - n: started with 1, now True\n"
        "  - s: started with {1}, now missing\n"
        "Resume it with its original parameters, or start a new run with new=True."
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "its repr is not a Python literal (ValueError)"),
        (float("inf"), "its repr is not a Python literal (ValueError)"),
        (object, "its repr is not a Python literal (SyntaxError)"),
        (Path("x"), "its repr is not a Python literal (ValueError)"),
    ],
)
def test_a_parameter_that_cannot_come_back_is_refused(store_path: Path, value: object, problem: str) -> None:
    """nan, a class, a Path: refused with our error before anything is written; the store keeps no run."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pytest.raises(resumable.ParameterValueError) as excinfo, pipe.run(run_id="r1", params={"x": value}):
        pass
    assert str(excinfo.value) == (
        f"parameter 'x' = {value!r} ({type(value).__name__}) cannot be recorded with the run: {problem}; nothing "
        "was stored. Use strings, numbers, booleans, None, and lists, tuples, sets or dicts of them."
    )
    assert open_store(store_path).get_run("r1") is None


def test_a_run_recorded_as_json_by_an_older_version_still_resumes(store_path: Path) -> None:
    """Rows written before parameters were literals read back as their JSON, and the same values match them."""
    pipe = resumable.Pipeline("p", store=store_path)
    with pipe.run(run_id="r1"):
        pass
    forget_all()
    with duckdb.connect(str(store_path)) as con:
        con.execute("""UPDATE runs SET params = '{"region": "eu", "tags": [1, 2]}'""")
    run = open_store(store_path).get_run("r1")
    assert run is not None and run.params == {"region": "eu", "tags": [1, 2]}
    with pipe.run(run_id="r1", params={"region": "eu", "tags": (1, 2)}):  # JSON made tuples lists
        pass


def test_dash_p_values_of_every_kind_are_collected() -> None:
    """-p x "{1: 2, 'a': 3}" is a dict with an int key; -p x 1e999 (infinity) is refused as a usage problem."""
    assert headless_params.collect([("x", "{1: 2, 'a': 3}"), ("s", "set()"), ("c", "[0j]")]) == {
        "x": {1: 2, "a": 3},
        "s": set(),
        "c": [0j],
    }
    with pytest.raises(NotebookInputError) as excinfo:
        headless_params.collect([("x", "1e999")])
    assert str(excinfo.value) == (
        "parameter 'x' = inf (float) cannot be written into the notebook as a Python literal (its repr is not a "
        "Python literal (ValueError)). Use strings, numbers, booleans, None, and lists, tuples, sets or dicts of them."
    )


def test_an_unbalanced_quote_in_a_magic_line_is_a_usage_error() -> None:
    """shlex's 'No closing quotation' becomes a UsageError that names the line and the fix."""
    with pytest.raises(UsageError) as excinfo:
        _magic_lines.parse("durable_step", "load --outputs 'a,b")
    assert str(excinfo.value) == (
        "%%durable_step load --outputs 'a,b: the line cannot be split into arguments (No closing quotation). "
        "Close the quote, or leave quotes out: names and options need none."
    )
    with pytest.raises(UsageError, match=r"^%durable_run \"checkout: the line cannot be split"):
        _magic_lines.parse("durable_run", '"checkout')


def test_wrong_types_and_nul_bytes_are_our_errors(store_path: Path, tmp_path: Path) -> None:
    """store=0, load(0, 0, 0), a NUL byte in a path: our errors saying what was expected; nothing created."""
    with pytest.raises(resumable.ArgumentTypeError) as excinfo:
        resumable.Pipeline("p", store=0)  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        "store must be a file path (str or os.PathLike) or a store, not int (0); nothing was changed."
    )
    assert isinstance(excinfo.value, TypeError)
    with pytest.raises(resumable.ArgumentTypeError) as excinfo:
        resumable.load(0, 0, 0, store=store_path)  # type: ignore[arg-type]
    assert str(excinfo.value) == "run_id must be a string, not int (0); nothing was changed."
    with pytest.raises(resumable.ArgumentTypeError, match=r"^name must be a string or None, not int"):
        resumable.load("r", "s", 0, store=store_path)  # type: ignore[arg-type]
    with pytest.raises(resumable.StorePathError) as path_error:
        resumable.Pipeline("p", store=str(tmp_path / "a\x00b")).runs()
    assert str(path_error.value) == (
        f"store '{tmp_path}/a\\x00b' contains a NUL byte, which no file name can hold. Choose another path."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _can_mount_read_only() -> bool:
    try:
        done = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare to mount a folder read-only")
def test_a_read_only_store_can_be_listed_shown_and_loaded(tmp_path: Path) -> None:
    """On a read-only file system (even as root), runs, show --json and export work; writes are refused clearly."""
    folder = tmp_path / "ro"
    store = folder / "store.duckdb"
    pipe = resumable.Pipeline("p", store=store)
    with pipe.run(run_id="r1", params={"s": {1}}) as run:
        run.step("a", lambda: {"total": 42})
    forget_all()
    shutil.rmtree(folder / "store.duckdb.payloads", ignore_errors=True)  # small outputs are inline

    def readonly(*args: str) -> subprocess.CompletedProcess[str]:
        inner = f'mount --bind -o ro {folder} {folder} && exec {sys.executable} -m resumable "$@"'
        return subprocess.run(
            ["unshare", "-r", "-m", "sh", "-c", inner, "sh", *args],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
            env={**os.environ, "RESUMABLE_STORE": str(store)},
        )  # fmt: skip

    shown = readonly("show", "r1", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["params"] == {"s": "{1}"}
    assert [(s["step"], s["state"]) for s in doc["steps"]] == [("a", "completed")]
    listed = readonly("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["r1"]
    exported = readonly("export", "r1", "a", "-o", str(tmp_path / "a.json"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == {"total": 42}
    refused = readonly("invalidate", "r1", "a")
    assert refused.returncode == 6
    assert refused.stderr == (
        f"error: store '{store}' is not writable by this user. Fix its permissions or point RESUMABLE_STORE "
        "elsewhere.\n"
    )


CRASHING_WRITER = """
import os, sys, resumable
pipe = resumable.Pipeline("p", store=sys.argv[1])
with pipe.run(run_id="r1") as run:
    for i in range(5):
        run.step(f"s{i}", lambda: "x" * 50)
    run.step("fence", resumable.idempotency_key)  # every earlier completion is committed first
    os.kill(os.getpid(), 9)
"""


def _crash_after_steps(store_path: Path) -> Path:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(store_path)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr
    wal = Path(str(store_path) + ".wal")
    assert wal.stat().st_size > 0
    return wal


def test_a_torn_write_ahead_log_is_reported_once(store_path: Path) -> None:
    """A log cut short after a crash loses committed steps; the next open says so, with our warning, once."""
    wal = _crash_after_steps(store_path)
    committed = wal.stat().st_size
    with open(wal, "r+b") as f:  # a torn tail: the same file, shorter
        f.truncate(committed - 100)
    with pytest.warns(resumable.StoreLogTornWarning) as warned:
        steps = open_store(store_path).list_steps("r1")
    assert [str(w.message) for w in warned if isinstance(w.message, resumable.StoreLogTornWarning)] == [
        f"store '{store_path}': its write-ahead log ('{store_path}.wal') is 100 bytes shorter than what was "
        "committed to it (a torn write, a failing disk, or a copy taken while it was written). The changes at its "
        "end are lost: steps recorded there as completed will run again on the next resume, and effect steps among "
        "them repeat their side effects unless the service honours their idempotency keys. See what the store "
        "holds with: resumable runs"
    ]
    assert [s.step for s in steps if s.state is resumable.StepState.COMPLETED][:4] == ["s0", "s1", "s2", "s3"]
    forget_all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_store(store_path).list_steps("r1")  # told once


def test_a_crash_without_a_torn_log_warns_nothing(store_path: Path) -> None:
    """A SIGKILL after commits leaves a whole log: it replays and no warning is given."""
    _crash_after_steps(store_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps = open_store(store_path).list_steps("r1")
    completed = [s.step for s in steps if s.state is resumable.StepState.COMPLETED]
    assert completed[:5] == ["s0", "s1", "s2", "s3", "s4"]  # the fence too, when its group commit made it


def test_a_headless_run_resumed_without_p_gets_its_parameters_back_exactly(tmp_path: Path) -> None:
    """-p s "set()" -p c "[0j]": resumed without -p, the kernel gets a set and a complex list again, not strings."""
    from notebook_files import write_nb

    nb = write_nb(
        tmp_path / "typed.ipynb",
        ("s = None\nc = None\nx = None", ["parameters"]),
        "print(type(s).__name__, type(c[0]).__name__, sorted(x, key=str))",
    )

    def execute(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "resumable", "execute", nb.name, "--run-id", "r1", "--quiet", *extra],
            capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
        )  # fmt: skip

    first = execute("-p", "s", "set()", "-p", "c", "[0j]", "-p", "x", "{1: 2, 'a': 3}")
    assert first.returncode == 0, first.stderr
    resumed = execute()
    assert resumed.returncode == 0, resumed.stderr
    import nbformat

    out = nbformat.read(tmp_path / "typed.resumable.ipynb", as_version=4)
    assert out.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "c = [0j]\ns = set()\nx = {1: 2, 'a': 3}" in out.cells[1].source  # by name, as recorded
    printed = "".join(o.get("text", "") for o in out.cells[2].outputs if o.get("name") == "stdout")
    assert printed == "set complex [1, 'a']\n", out.cells[2].outputs
