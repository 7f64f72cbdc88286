"""Shared fixtures: real components only, one store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import fresh_kernel, started_shell

from resumable._store import forget_all


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh store file in the test's own folder (created on first use)."""
    return tmp_path / ".resumable" / "store.duckdb"


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real IPython shell on this test's store, its run 'r1'; a fresh kernel namespace afterwards."""
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's RESUMABLE_* settings or another test's open store."""
    for var in ("RESUMABLE_STORE", "RESUMABLE_RUN_ID", "RESUMABLE_SIGNING_KEY", "RESUMABLE_SIGNING_KEY_FILE"):
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
