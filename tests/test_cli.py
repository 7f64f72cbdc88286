"""The command line as a user runs it: real subprocesses, their output and exit codes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import resumable
from resumable._store import close_all


def cli(*args: str | Path, check_code: int | None = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    if check_code is not None:
        assert out.returncode == check_code, out.stderr
    return out


def _store_with_run(store: str) -> str:
    """A store holding run 'r1': a completed step with a frame, a failed step."""
    pipe = resumable.Pipeline("shop", store=store)
    with pipe.run(run_id="r1", params={"region": "eu"}) as run:
        run.step("load", lambda: pd.DataFrame({"id": [1, 2], "amount": [9.5, 3.0]}))
        with pytest.raises(ConnectionError):
            run.step("charge", _refuse)
    close_all()  # the CLI is another process: let go of the file
    return store


@pytest.fixture
def store_with_run(store_location: str) -> str:
    """Run 'r1' in a DuckDB file and in a PostgreSQL database."""
    return _store_with_run(store_location)


@pytest.fixture
def file_with_run(store_path: Path) -> str:
    """Run 'r1' in a DuckDB file: for what the store's kind does not change (the export formats)."""
    return _store_with_run(str(store_path))


def _refuse() -> None:
    raise ConnectionError("card declined")


def test_runs_and_show_as_json(store_with_run: str) -> None:
    """runs and show --json report what the store holds: states, attempts, errors, parameters."""
    runs = json.loads(cli("runs", "--json", "--store", store_with_run).stdout)
    assert [(r["run_id"], r["pipeline"], r["state"], r["params"]) for r in runs] == [
        ("r1", "shop", "failed", {"region": "eu"})
    ]
    shown = json.loads(cli("show", "r1", "--json", "--events", "--store", store_with_run).stdout)
    steps = {s["step"]: s for s in shown["steps"]}
    assert steps["load"]["state"] == "completed" and steps["load"]["output_bytes"] > 0
    assert steps["charge"]["state"] == "failed"
    assert steps["charge"]["error"] == "ConnectionError: card declined"
    assert [(e["step"], e["to"]) for e in shown["events"]] == [
        ("load", "running"), ("load", "completed"), ("charge", "running"), ("charge", "failed"),
    ]  # fmt: skip


def test_show_as_a_table_names_the_run_and_the_error(store_with_run: str) -> None:
    """The human view names the run, its parameters and the failing step's error."""
    out = cli("show", "r1", "--store", store_with_run).stdout
    assert "run r1 of pipeline shop: failed (parameters: region='eu')" in out
    assert "ConnectionError: card declined" in out


def test_invalidate_then_gc_then_the_step_runs_again(store_with_run: str) -> None:
    """invalidate sends a step back to pending; gc drops its old checkpoint; the next pass re-executes."""
    assert (
        "invalidated in run 'r1': load, charge"
        in cli("invalidate", "r1", "load", "--downstream", "--store", store_with_run).stdout
    )
    assert "removed 1 superseded checkpoint rows" in cli("gc", "--store", store_with_run).stdout
    calls = []
    pipe = resumable.Pipeline("shop", store=store_with_run)
    with pipe.run(run_id="r1") as run:
        run.step("load", lambda: calls.append(1) or 5)
    assert calls == [1]


def test_export_writes_the_value_in_the_format_asked(file_with_run: str, tmp_path: Path) -> None:
    """export writes a checkpointed frame as CSV, or any value as a pickle file."""
    cli("export", "r1", "load", "-o", tmp_path / "load.csv", "--store", file_with_run)
    assert pd.read_csv(tmp_path / "load.csv")["amount"].tolist() == [9.5, 3.0]
    cli("export", "r1", "load", "-o", tmp_path / "load.pkl", "--store", file_with_run)
    assert pickle.loads((tmp_path / "load.pkl").read_bytes())["id"].tolist() == [1, 2]


def test_errors_have_their_documented_exit_codes(store_with_run: str, tmp_path: Path) -> None:
    """A missing run or store exits 6 with a message that says what to do; --help lists the codes."""
    missing = cli("show", "nope", "--store", store_with_run, check_code=6)
    assert missing.stderr == (
        f"error: run 'nope' does not exist in store '{store_with_run}'. List the runs with: resumable runs\n"
    )
    nowhere = tmp_path / "none" / "store.duckdb"
    no_store = cli("runs", "--store", nowhere, check_code=6)
    assert no_store.stderr == (
        f"error: there is no store at '{nowhere}'; nothing was created. Run a pipeline first, or pass --store or "
        f"set RESUMABLE_STORE to an existing store.\n"
    )
    assert not nowhere.parent.exists()
    failed_export = cli("export", "r1", "charge", "-o", tmp_path / "x.pkl", "--store", store_with_run, check_code=6)
    assert failed_export.stderr == (
        "error: step 'charge' (run 'r1') is failed, not completed, so it has no checkpoint to load. Resume the run "
        "to complete it; see its steps with: resumable show r1\n"
    )
    no_step = cli("invalidate", "r1", "ship", "--store", store_with_run, check_code=6)
    assert no_step.stderr == (
        f"error: run 'r1' has no step 'ship' in store '{store_with_run}'. See its steps with: resumable show r1\n"
    )
    assert "4  the run is owned by another live process" in cli("--help").stdout


def test_export_writes_parquet_only_for_a_dataframe(store_path: Path, tmp_path: Path) -> None:
    """A .parquet or .csv name for a list is refused, saying what to use; a frame becomes real Parquet."""
    pipe = resumable.Pipeline("shop", store=store_path)
    with pipe.run(run_id="r1") as run:
        run.step("rows", lambda: [{"id": 1}, {"id": 2}])
        run.step("frame", lambda: pd.DataFrame({"id": [1, 2]}))
    close_all()
    for suffix, label in ((".parquet", "Parquet"), (".csv", "CSV")):
        refused = cli("export", "r1", "rows", "-o", tmp_path / f"rows{suffix}", "--store", store_path, check_code=2)
        assert refused.stderr == (
            f"error: output 'return' of step 'rows' (run 'r1') is a list, not a DataFrame, so it cannot be written as "
            f"{label}; nothing was written. Use rows.json for JSON (plain data) or rows.pkl for a pickle.\n"
        )
        assert not (tmp_path / f"rows{suffix}").exists()
    cli("export", "r1", "rows", "-o", tmp_path / "rows.json", "--store", store_path)
    assert json.loads((tmp_path / "rows.json").read_text()) == [{"id": 1}, {"id": 2}]
    cli("export", "r1", "frame", "-o", tmp_path / "frame.parquet", "--store", store_path)
    assert (tmp_path / "frame.parquet").read_bytes()[:4] == b"PAR1"
    assert pd.read_parquet(tmp_path / "frame.parquet")["id"].tolist() == [1, 2]


def test_tables_are_plain_tab_separated_lines_into_a_pipe(store_with_run: str) -> None:
    """Off a terminal: a header line, one line per row, tabs between cells, a tab inside a value escaped."""
    lines = cli("show", "r1", "--store", store_with_run).stdout.splitlines()
    assert lines[1] == "#\tstep\tstate\tattempts\texecutions\tduration\tsize\tlast error"
    assert [line.split("\t")[1:3] for line in lines[2:]] == [["load", "completed"], ["charge", "failed"]]
    assert all("│" not in line and "━" not in line for line in lines)  # no box drawing
    query = "SELECT 'a' || chr(9) || 'b' AS v, 'x' || chr(10) || 'y' AS w"
    assert cli("sql", query, "--store", store_with_run).stdout == "v\tw\na\\tb\tx\\ny\n"


def test_read_commands_never_migrate_an_older_store(tmp_path: Path) -> None:
    """A store at an older schema is left as it is by runs, show and sql, with a message saying what to do."""
    import duckdb

    from resumable._store.schema import MIGRATIONS, SCHEMA_VERSION

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for statement in MIGRATIONS[1]:
        con.execute(statement)
    con.close()
    before = old.read_bytes()
    for args in (("runs",), ("show", "r1"), ("sql", "SELECT 1")):
        out = cli(*args, "--store", old, check_code=6)
        assert out.stderr == (
            f"error: store '{old}' is at schema version 1, older than this resumable's ({SCHEMA_VERSION}), and a "
            "command that only "
            "reads does not upgrade it. Run a pipeline or any command that writes to the store (resumable gc) once, "
            "then read it again.\n"
        )
    assert old.read_bytes() == before


def test_messages_name_the_commands_own_options_not_python_keywords(tmp_path: Path, store_path: Path) -> None:
    """Through the command line, our errors say --new, --store and 'resumable export', never new=True, store= or
    load(...); the Python API keeps its own words for the same errors."""
    nb = tmp_path / "ok.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    both = cli("execute", nb, "--run-id", "r1", "--new", "--store", store_path, check_code=2)
    assert both.stderr.splitlines()[-1] == (
        "Error: run id 'r1' was given together with --new. Pass a run id to resume or name a run, or --new to "
        "start one, not both."
    )
    not_a_store = tmp_path / "notes.duckdb"
    not_a_store.write_text("my notes, not a database\n")
    refused = cli("runs", "--store", not_a_store, check_code=6)
    assert refused.stderr == (
        f"error: store '{not_a_store}' exists but is not a DuckDB database. resumable left it untouched; point "
        "--store or RESUMABLE_STORE at another file.\n"
    )
    assert not_a_store.read_text() == "my notes, not a database\n"

    pipe = resumable.Pipeline("shop", store=store_path)
    with pipe.run(run_id="r1") as run:
        run.step("split", lambda: 1)
    with pytest.raises(resumable.RunExistsError) as exists, pipe.run(run_id="r1", new=True):
        pass
    assert str(exists.value) == (
        "run 'r1' of pipeline 'shop' already exists, so it cannot start as a new run. Resume it (leave out "
        "new=True), or choose another run id."
    )
    close_all()
    with pytest.raises(resumable.StorePathError) as python_words:
        resumable.load("r1", "split", store=not_a_store)
    assert str(python_words.value) == (
        f"store '{not_a_store}' exists but is not a DuckDB database. resumable left it untouched; point store= or "
        "RESUMABLE_STORE at another file."
    )
