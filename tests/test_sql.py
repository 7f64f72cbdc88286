"""``resumable sql`` and ``resumable.connect()``: the documented views, read-only, and nothing outside the store."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pg_server
import pytest
from history_store import build, fingerprint, start_worker

import resumable
from resumable._store import forget_all

DOCS = Path(__file__).parent.parent / "docs" / "sql.md"


def cli(*args: str | Path, code: int = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == code, out.stderr
    return out


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """The stores with a history built so far in this module, by kind (each built once, on first use)."""
    return {}


def _history(kind: str, request: pytest.FixtureRequest, built: dict[str, Path | str]) -> Path | str:
    """One store with a history (``history_store.py``), shared by the read-only tests of this module."""
    if kind not in built:
        tmp = request.getfixturevalue("tmp_path_factory").mktemp(f"history-{kind}")
        if kind == "duckdb":
            store: Path | str = tmp / ".resumable" / "store.duckdb"
        else:
            cluster = request.getfixturevalue("pg_cluster")
            if not isinstance(cluster, pg_server.Cluster):
                pytest.skip(f"PostgreSQL half skipped: {cluster}")
            store = f"{cluster.new_database()}?payloads={tmp / 'payloads'}"
        build(store, tmp)
        built[kind] = store
    return built[kind]


@pytest.fixture(scope="module", params=["duckdb", "postgresql"])
def history(request: pytest.FixtureRequest, histories: dict[str, Path | str]) -> Path | str:
    """A store with a history, once a DuckDB file and once a PostgreSQL database."""
    return _history(request.param, request, histories)


@pytest.fixture(scope="module")
def file_history(request: pytest.FixtureRequest, histories: dict[str, Path | str]) -> Path:
    """The DuckDB file with a history, for what only a file has (external access, its lock)."""
    store = _history("duckdb", request, histories)
    assert isinstance(store, Path)
    return store


def doc_queries() -> list[str]:
    """The example queries of docs/sql.md, in order."""
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def doc_columns() -> dict[str, list[str]]:
    """Each view's columns as docs/sql.md lists them (``a, b | TYPE`` rows name several)."""
    out: dict[str, list[str]] = {}
    for section in re.split(r"^### ", DOCS.read_text(), flags=re.MULTILINE)[1:]:
        view = section.split("\n", 1)[0].strip()
        names = re.findall(r"^\| ([a-z_, ]+) \| [A-Z]", section, flags=re.MULTILINE)
        out[view] = [n.strip() for row in names for n in row.split(",")]
    return out


def test_docs_has_ten_example_queries_and_each_answers_from_a_real_store(history: Path | str) -> None:
    """Every example in docs/sql.md runs as written and finds rows in a store made by running pipelines."""
    queries = doc_queries()
    assert len(queries) == 10
    db = resumable.connect(history)
    for query in queries:
        result = db.sql(query)
        assert result.rows, f"no rows for:\n{query}"


def test_the_examples_answer_what_they_ask(history: Path | str) -> None:
    """The answers match what the pipelines did: the failures, the rerun key, the killed process, the payload file."""
    db = resumable.connect(history)
    failed, space, _, _, effects, retried, dead, _, timeline, largest = (db.sql(q) for q in doc_queries())
    assert failed.rows == (("etl", "load", 2),)  # the first attempt in etl-1 and the one in etl-3
    assert {r[0] for r in space.rows} == {"etl", "checkout", "nightly"}
    assert effects.rows == (("co-1", "charge", "completed", 2, 2),)  # the rerun: a second execution, a new key
    assert retried.to_dicts() == [  # the rerun of co-1's charge is a second execution, not a second attempt
        {"run_id": "etl-1", "step": "load", "execution": 1, "attempts": 2, "outcomes": ["failed", "completed"]},
    ]
    assert [(r[0], r[1], r[2]) for r in dead.rows] == [("nightly-1", "nightly", "crunch")]
    assert [(r[2], r[4]) for r in timeline.rows][-2:] == [("load", "running"), ("load", "failed")]
    assert largest.rows[0][:4] == ("etl-2", "archive", "return", largest.rows[0][3])
    assert largest.rows[0][4] != "store file" and largest.rows[0][3] > 400_000


def test_views_have_the_documented_columns(history: Path | str) -> None:
    """Each of the seven views has exactly the columns docs/sql.md lists, in that order."""
    documented = doc_columns()
    assert list(documented) == list(resumable.StoreReader.views)
    db = resumable.connect(history)
    for view, columns in documented.items():
        assert list(db.sql(f"SELECT * FROM {view} LIMIT 0").columns) == columns, view


def test_views_show_what_the_store_holds(history: Path | str) -> None:
    """Parameters, inputs, checkpoints without bytes, and run states that agree with `resumable runs`."""
    db = resumable.connect(history)
    assert db.sql("SELECT run_id, name, value FROM parameters WHERE run_id = 'etl-2'").rows == (
        ("etl-2", "region", '"us"'),
    )
    assert "data" not in db.sql("SELECT * FROM checkpoints LIMIT 0").columns
    assert db.sql("SELECT count(*) FROM inputs WHERE step = 'transform'").rows[0][0] == 3
    listed = json.loads(cli("runs", "--json", "--store", history).stdout)
    states = {r["run_id"]: r["state"] for r in listed}
    assert dict(db.sql("SELECT run_id, state FROM runs").rows) == states
    durations = dict(db.sql("SELECT run_id, duration_s FROM runs").rows)
    assert all(abs(durations[r["run_id"]] - r["duration_s"]) < 1e-3 for r in listed)
    assert states == {
        "etl-1": "completed", "etl-2": "completed", "etl-3": "failed", "co-1": "completed", "nightly-1": "interrupted",
    }  # fmt: skip


_REFUSED = "Queries read the store's views and nothing else; nothing was written. To keep a result, print it with "
_REFUSED += "--csv or --json and redirect the output to a file."


@pytest.mark.parametrize(
    ("query", "problem", "said"),
    [
        (
            "COPY (SELECT * FROM runs) TO '{tmp}/out.csv'",
            "it copies data to or from a file",
            'Permission Error: Cannot access file "{tmp}/out.csv" - file system operations are disabled by '
            "configuration",
        ),
        (
            "SELECT * FROM read_csv('{tmp}/secret.csv')",
            "it reads a file outside the store",
            'Permission Error: Cannot access file "{tmp}/secret.csv" - file system operations are disabled by '
            "configuration",
        ),
        (
            "SELECT * FROM read_parquet('{tmp}/secret.parquet')",
            "it reads a file outside the store",
            'Permission Error: Cannot access file "{tmp}/secret.parquet" - file system operations are disabled by '
            "configuration",
        ),
        (
            "SELECT * FROM glob('{tmp}/*')",
            "it reads a file outside the store",
            'Permission Error: Cannot access file "{tmp}/*" - file system operations are disabled by configuration',
        ),
        (
            "ATTACH '{tmp}/other.duckdb' AS other",
            "it attaches another database",
            'Permission Error: Cannot access file "{tmp}/other.duckdb" - file system operations are disabled by '
            "configuration",
        ),
        (
            "LOAD httpfs",
            "it installs or loads a DuckDB extension",
            "Permission Error: Loading external extensions is disabled through configuration",
        ),
    ],
)
def test_a_query_cannot_reach_outside_the_store(
    file_history: Path, tmp_path: Path, query: str, problem: str, said: str
) -> None:
    """COPY TO, reading files, ATTACH and LOAD are refused with our own error; no file appears."""
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    before = fingerprint(file_history)
    with pytest.raises(resumable.QueryError) as excinfo:
        resumable.connect(file_history).sql(query.format(tmp=tmp_path))
    assert str(excinfo.value) == f"the query was refused: {problem} (DuckDB: {said.format(tmp=tmp_path)}). {_REFUSED}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv"]
    assert fingerprint(file_history) == before


def test_install_is_refused(file_history: Path) -> None:
    """INSTALL cannot fetch or write an extension."""
    with pytest.raises(resumable.QueryError) as excinfo:
        resumable.connect(file_history).sql("INSTALL httpfs")
    assert str(excinfo.value).startswith("the query was refused: it installs or loads a DuckDB extension (DuckDB: ")
    assert str(excinfo.value).endswith(f"). {_REFUSED}")


def test_external_access_cannot_be_switched_back_on_nor_the_store_changed(file_history: Path) -> None:
    """The settings are locked, and the store is open read-only."""
    db = resumable.connect(file_history)
    with pytest.raises(resumable.QueryError) as excinfo:
        db.sql("SET enable_external_access = true")
    assert str(excinfo.value) == (
        "the query was refused: it changes DuckDB's settings, which are locked for queries (DuckDB: Invalid Input "
        'Error: Cannot change configuration option "enable_external_access" - the configuration has been locked). '
        "Query the views runs, steps, attempts, events, checkpoints, inputs, parameters (their columns are listed "
        "in docs/sql.md)."
    )
    with pytest.raises(resumable.QueryError) as excinfo:
        db.sql("CREATE TABLE main.notes (a INTEGER)")
    assert str(excinfo.value).startswith("the query was refused: it changes the store, which queries open read-only")


def test_sql_command_prints_a_table_json_or_csv(history: Path | str) -> None:
    """A plain tab-separated table into a pipe, JSON with nested parameters, CSV with a header."""
    query = "SELECT run_id, state, params FROM runs WHERE pipeline = 'etl' ORDER BY run_id"
    table = cli("sql", query, "--store", history).stdout
    assert table.splitlines() == [
        "run_id\tstate\tparams",
        'etl-1\tcompleted\t{"region": "eu"}',
        'etl-2\tcompleted\t{"region": "us"}',
        'etl-3\tfailed\t{"region": "eu"}',
    ]
    as_json = json.loads(cli("sql", query, "--json", "--store", history).stdout)
    assert as_json[0] == {"run_id": "etl-1", "state": "completed", "params": {"region": "eu"}}
    rows = list(csv.reader(io.StringIO(cli("sql", query, "--csv", "--store", history).stdout)))
    assert rows[0] == ["run_id", "state", "params"] and rows[3] == ["etl-3", "failed", '{"region": "eu"}']


def test_sql_command_errors_exit_2_with_the_message(file_history: Path, tmp_path: Path) -> None:
    """A refused or broken query exits 2 and says why; --json with --csv is a usage error."""
    refused = cli("sql", f"COPY runs TO '{tmp_path}/x.csv'", "--store", file_history, code=2)
    assert refused.stderr.startswith("error: the query was refused: it copies data to or from a file (DuckDB: ")
    assert not (tmp_path / "x.csv").exists()
    broken = cli("sql", "SELEC 1", "--store", file_history, code=2)
    assert broken.stderr == (
        'error: the query failed (DuckDB: Parser Error: syntax error at or near "SELEC"). Query the views runs, '
        "steps, attempts, events, checkpoints, inputs, parameters (their columns are listed in docs/sql.md).\n"
    )
    both = cli("sql", "SELECT 1", "--json", "--csv", "--store", file_history, code=2)
    assert "--json and --csv cannot be combined; pick one." in both.stderr


def test_connect_to_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    """connect() never creates a store: a wrong path is reported, and the folder stays absent."""
    nowhere = tmp_path / "none" / "store.duckdb"
    with pytest.raises(resumable.CheckpointNotFoundError) as excinfo:
        resumable.connect(nowhere)
    assert str(excinfo.value) == (
        f"there is no store at '{nowhere}'; nothing was created. Run a pipeline first, or pass store= or set "
        "RESUMABLE_STORE to an existing store."
    )
    assert not nowhere.parent.exists()


def test_connect_in_the_process_that_writes_the_store(store_location: str) -> None:
    """A notebook can query its own store between steps: the reader and the writer take turns on the file."""
    with resumable.Pipeline("p", store=store_location).run(run_id="r0") as run:
        run.step("a", lambda: 0)
    forget_all()
    db = resumable.connect(store_location)  # opened read-only first, then the same process writes
    assert db.sql("SELECT count(*) FROM steps").rows == ((1,),)
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1") as run:
        run.step("a", lambda: 1)
        assert db.sql("SELECT step, state FROM steps WHERE run_id = 'r1'").rows == (("a", "completed"),)
        run.step("b", lambda: 2)
    assert db.sql("SELECT count(*) FROM steps WHERE run_id = 'r1' AND state = 'completed'").rows == ((2,),)
    frame = db.sql("SELECT step, state FROM steps WHERE run_id = 'r1' ORDER BY seq").df()
    assert frame["state"].tolist() == ["completed", "completed"]


def test_sql_while_another_process_runs_a_step(store_location: str, tmp_path: Path) -> None:
    """While a live process is inside a step, sql answers within seconds and shows the step running."""
    worker = start_worker(store_location, "nightly-1", tmp_path / "started")
    try:
        out = cli("sql", "SELECT step, state FROM steps ORDER BY seq", "--json", "--store", store_location, timeout=60)
        assert json.loads(out.stdout) == [
            {"step": "fetch", "state": "completed"},
            {"step": "crunch", "state": "running"},
        ]
    finally:
        worker.kill()
        worker.communicate(timeout=30)
    forget_all()


def test_a_reader_waits_for_a_foreign_holder_then_names_it(file_history: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that keeps the file open: sql and runs wait the configured time, then exit 6 naming its pid."""
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(file_history)], stdout=subprocess.PIPE, text=True)
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "0.5")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        for args in (("sql", "SELECT 1"), ("runs",)):
            out = cli(*args, "--store", file_history, code=6)
            assert out.stderr == (
                f"error: store '{file_history}' stayed locked by process {holder.pid} for 0.5 s. resumable holds the "
                "file only for short transactions, so a long hold means that process keeps it open (a DuckDB shell or "
                "notebook connection?). Close it, or raise RESUMABLE_LOCK_TIMEOUT.\n"
            )
    finally:
        holder.kill()
        holder.communicate(timeout=30)


def test_the_examples_give_the_same_answers_on_both_stores(
    request: pytest.FixtureRequest, histories: dict[str, Path | str]
) -> None:
    """The same pipelines recorded in a file and on a server: each example answers alike, but for times."""
    file_store, server = _history("duckdb", request, histories), _history("postgresql", request, histories)
    timeless = {0, 1, 3, 4, 5}  # the others show durations, times or event numbers, which differ per run
    for i, query in enumerate(doc_queries()):
        on_file, on_server = resumable.connect(file_store).sql(query), resumable.connect(server).sql(query)
        assert on_file.columns == on_server.columns, query
        assert len(on_file.rows) == len(on_server.rows), query
        if i in timeless:
            assert on_file.rows == on_server.rows, query
    for view in resumable.StoreReader.views:  # the documented types, by DuckDB's names, on both
        query = f"SELECT * FROM {view} LIMIT 0"
        file_types = resumable.connect(file_store).sql(query).types
        server_types = resumable.connect(server).sql(query).types
        assert [t.replace("HUGEINT", "BIGINT") for t in file_types] == list(server_types), view


_SERVER_REFUSED = (
    "Queries read the store's views in a read-only transaction; nothing was written. To keep a result, print it "
    "with --csv or --json and redirect the output to a file."
)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "INSERT INTO public.runs (run_id) VALUES ('x')",
            "the query was refused: it changes the store, which queries read in a read-only transaction "
            f"(PostgreSQL: cannot execute INSERT in a read-only transaction). {_SERVER_REFUSED}",
        ),
        (
            "DELETE FROM public.events",
            "the query was refused: it changes the store, which queries read in a read-only transaction "
            f"(PostgreSQL: cannot execute DELETE in a read-only transaction). {_SERVER_REFUSED}",
        ),
        (
            "CREATE TABLE public.notes (a INTEGER)",
            "the query was refused: it changes the store, which queries read in a read-only transaction "
            f"(PostgreSQL: cannot execute CREATE TABLE in a read-only transaction). {_SERVER_REFUSED}",
        ),
        (
            "SELECT nextval('event_seq')",
            "the query was refused: it changes the store, which queries read in a read-only transaction "
            f"(PostgreSQL: cannot execute nextval() in a read-only transaction). {_SERVER_REFUSED}",
        ),
        (
            "SET TRANSACTION READ WRITE",
            "the query was refused: it changes the transaction's mode (PostgreSQL: transaction read-write mode "
            f"must be set before any query). {_SERVER_REFUSED}",
        ),
        (
            "COMMIT; DELETE FROM public.steps",
            "the query was refused: it holds several statements; a query is one statement (PostgreSQL: cannot "
            "insert multiple commands into a prepared statement). Query the views runs, steps, attempts, events, "
            "checkpoints, inputs, parameters (their columns are listed in docs/sql.md).",
        ),
    ],
    ids=["insert", "delete", "create", "nextval", "read-write", "two-statements"],
)
def test_a_query_cannot_change_a_server_store(
    request: pytest.FixtureRequest, histories: dict[str, Path | str], query: str, message: str
) -> None:
    """On PostgreSQL the query runs in a READ ONLY transaction of its own: writes are refused, nothing changes."""
    server = _history("postgresql", request, histories)
    before = fingerprint(server)
    with pytest.raises(resumable.QueryError) as excinfo:
        resumable.connect(server).sql(query)
    assert str(excinfo.value) == message
    assert fingerprint(server) == before
    assert resumable.connect(server).sql("SELECT count(*) FROM runs").rows == ((5,),)  # the views are still there


def test_a_broken_query_on_a_server_exits_2_with_the_server_message(
    request: pytest.FixtureRequest, histories: dict[str, Path | str]
) -> None:
    """The CLI says what PostgreSQL said, as it does for DuckDB."""
    server = _history("postgresql", request, histories)
    broken = cli("sql", "SELEC 1", "--store", server, code=2)
    assert broken.stderr == (
        'error: the query failed (PostgreSQL: syntax error at or near "SELEC"). Query the views runs, '
        "steps, attempts, events, checkpoints, inputs, parameters (their columns are listed in docs/sql.md).\n"
    )


def test_a_nul_character_in_a_parameter_does_not_break_the_views(store_location: str) -> None:
    """PostgreSQL's jsonb cannot hold a NUL: there it reads as a backslash and x00; every view still answers."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1", params={"a": "x\x00y", "b": "as typed: \\u0000"}) as run:
        run.step("s", lambda text: text, "x\x00y")
    forget_all()
    db = resumable.connect(store_location)
    for view in resumable.StoreReader.views:
        assert db.sql(f"SELECT count(*) FROM {view}").rows[0][0] >= 1, view
    values = dict(db.sql("SELECT name, value FROM parameters").rows)
    nul = "x\\u0000y" if not store_location.startswith("postgresql://") else "x\\\\x00y"
    assert values == {"a": f'"{nul}"', "b": '"as typed: \\\\u0000"'}
    assert json.loads(values["b"]) == "as typed: \\u0000"  # a backslash the user typed stays one


def test_a_role_that_only_reads_queries_the_views_and_cannot_read_server_files(
    request: pytest.FixtureRequest, histories: dict[str, Path | str]
) -> None:
    """docs/sql.md's advice: a role that is not a superuser, granted SELECT, gets the views and no server files."""
    import psycopg

    server = str(_history("postgresql", request, histories))
    plain = server.split("?", 1)[0]
    role = f"reader_{os.getpid()}"
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = plain.replace("postgresql://resumable@", f"postgresql://{role}@")
    db = resumable.connect(reader)
    assert db.sql("SELECT count(*) FROM runs").rows == ((5,),)
    with pytest.raises(resumable.QueryError) as excinfo:
        db.sql("SELECT pg_read_file('/etc/hostname')")
    assert str(excinfo.value) == (
        "the query was refused: the server's role may not do that (PostgreSQL: permission denied for function "
        "pg_read_file). Query the views runs, steps, attempts, events, checkpoints, inputs, parameters (their "
        "columns are listed in docs/sql.md)."
    )
