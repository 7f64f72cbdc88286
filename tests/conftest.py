"""Shared fixtures: real components only, one store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
import s3_server
from ipython_shell import fresh_kernel, started_shell

from resumable._store import forget_all


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh store file in the test's own folder (created on first use)."""
    return tmp_path / ".resumable" / "store.duckdb"


@pytest.fixture
def shell_store(store_path: Path) -> str:
    """The store ``shell`` works in: the test's file; a module overrides it with ``store_location`` to run on both."""
    return str(store_path)


@pytest.fixture
def shell(shell_store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real IPython shell on this test's store, its run 'r1'; a fresh kernel namespace afterwards."""
    monkeypatch.setenv("RESUMABLE_STORE", shell_store)
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's RESUMABLE_* settings or another test's open store."""
    for var in (
        "RESUMABLE_STORE",
        "RESUMABLE_RUN_ID",
        "RESUMABLE_SIGNING_KEY",
        "RESUMABLE_SIGNING_KEY_FILE",
        "RESUMABLE_PAYLOADS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RESUMABLE_LOCK_TIMEOUT", "20")
    yield
    forget_all()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--campaign-runs",
        type=int,
        default=None,
        help="Trials of the multi-process store campaign (default 5, or RESUMABLE_CAMPAIGN_RUNS).",
    )


@pytest.fixture
def campaign_runs(request: pytest.FixtureRequest) -> int:
    """How many trials the multi-process campaign runs: --campaign-runs > RESUMABLE_CAMPAIGN_RUNS > 5."""
    chosen = request.config.getoption("--campaign-runs")
    return int(chosen if chosen is not None else os.environ.get("RESUMABLE_CAMPAIGN_RUNS", "5"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg_server.Cluster | str]:
    """One throwaway PostgreSQL cluster for the session (or why it cannot start), stopped at the end."""
    cluster = pg_server.start()
    yield cluster
    if isinstance(cluster, pg_server.Cluster):
        cluster.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[s3_server.S3Server | str]:
    """One S3-compatible server (moto's, a real subprocess) for the session (or why it cannot start)."""
    server = s3_server.start()
    yield server
    if isinstance(server, s3_server.S3Server):
        server.stop()


@pytest.fixture(params=["duckdb", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh store, once as a DuckDB file and once as a new database on a real PostgreSQL server.

    The server's half is skipped, with the reason, where the cluster cannot start. Its large
    checkpoints go to a payload folder of the test's own (``RESUMABLE_PAYLOADS``), as a team's
    shared folder would, so subprocesses find it too.
    """
    if request.param == "duckdb":
        yield str(tmp_path / ".resumable" / "store.duckdb")
        return
    cluster = request.getfixturevalue("pg_cluster")
    if not isinstance(cluster, pg_server.Cluster):
        pytest.skip(f"PostgreSQL half skipped: {cluster}")
    monkeypatch.setenv("RESUMABLE_PAYLOADS", str(tmp_path / "payloads"))
    yield cluster.new_database()
