"""Shared fixtures: real components only, one store per test."""

from __future__ import annotations

import compileall
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
import s3_server
from ipython_shell import fresh_kernel, started_shell

import benchmarks
import resumable
from resumable._store import forget_all


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh store file in the test's own folder (created on first use)."""
    return tmp_path / ".resumable" / "store.duckdb"


@pytest.fixture
def kernel_sockets() -> Iterator[Path]:
    """A folder for the Unix sockets of the kernels a test starts (``kernel_sockets.py`` says why).

    Made in the system's temporary folder, not under ``tmp_path``: a socket's path must stay under
    about 100 characters, and a long test name would push it past that.
    """
    folder = Path(tempfile.mkdtemp(prefix="rk-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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


# The suite's longest tests (20 s or more each in the last measured run of ``pytest -n 2 --durations``),
# longest first. They are run before every other test: with ``-n 2 --dist worksteal`` a worker that
# runs out of tests takes some of the other's, which works at the end of a run only if what is left
# is short; one long test starting last kept a core idle for its whole length. Only the order changes.
LONGEST_FIRST = (
    "test_exit.py::test_fourteen_scripts_that_show_a_panel_exit_0",
    "test_crash.py::test_sigkill_at_random_instants_on_a_server_store_never_repeats_an_effect",
    "test_crash.py::test_sigkill_at_random_instants_never_repeats_an_effect",
    "test_sweep.py::test_a_sweep_runs_each_set_once_and_running_it_again_restores_everything",
    "test_retention.py::test_gc_keep_last_collects_20_runs_down_to_2_and_the_file_shrinks",
    "test_headless_durable.py::test_sigkill_of_the_kernel_at_random_moments_repeats_no_effect",
    "test_notebook_trials.py::test_a_kill_after_a_cell_with_hidden_state_resumes_to_the_plain_runs_results",
    "test_sweep.py::test_a_killed_worker_s_run_resumes_on_another_worker_and_its_effect_happens_once",
    "test_postgres.py::test_resumable_execute_runs_a_notebook_on_a_server_store",
    "test_killpoints.py::test_a_kill_at_each_store_write_point_resumes_with_the_effect_made_once",
    "test_notebook_trials.py::test_killed_notebooks_resume_to_the_plain_runs_results_and_a_rerun_restores_everything",
    # Its module's fixture (the plain run) is made again on a second worker if the three are split.
    "test_hidden_state_kernel.py::test_a_killed_and_resumed_notebook_ends_as_an_uninterrupted_one",
    "test_notebook_kernel.py::test_the_quickstart_edit_of_load_holds_the_charge",
    "test_fork.py::test_resumable_fork_show_why_and_sql",
    "test_sweep.py::test_max_failures_stops_the_sweep_and_cancels_the_runs_not_finished",
    "test_runner_inputs.py::test_nbconvert_after_an_edited_parameters_cell_reruns_its_reader_and_holds_the_effect",
    "test_notebook_kernel.py::test_nbconvert_execute_resumes",
    "test_retention.py::test_a_sigkill_anywhere_in_gc_or_compaction_loses_nothing_kept",
    "test_sweep.py::test_a_scheduler_killed_mid_sweep_reports_the_unfinished_run_and_a_new_cluster_resumes_it",
    "test_benchmarks_smoke.py::test_every_concern_runs_and_prints_its_ratios",
    "test_runner_inputs.py::test_jupyterlab_with_a_changed_parameter_reruns_its_reader_and_holds_the_effect",
    "test_headless_durable.py::test_a_failing_step_stops_the_run_and_its_resume_command_finishes_it",
    "test_multiprocess.py::test_writers_and_readers_on_one_store_under_load_lose_nothing",
    "test_inputs_faithful.py::test_a_headless_run_resumed_without_p_gets_its_parameters_back_exactly",
    "test_honest_states.py::test_runs_filters_by_pipeline_state_and_age_and_reports_durations",
    "test_headless.py::test_a_failure_caused_by_a_parameter_gives_a_resume_command_that_corrects_it",
    "test_postgres.py::test_execute_on_a_server_store_resumes_after_the_kernel_dies_and_charges_once",
    "test_faults.py::test_sigint_aimed_at_the_completion_always_stops_and_never_leaves_a_step_running",
    "test_headless.py::test_parameters_are_injected_recorded_and_a_changed_value_reruns_its_readers",
    "test_honest_states.py::test_a_killed_run_reads_as_interrupted_and_reading_changes_no_byte",
    "test_headless.py::test_one_executor_per_run_and_ctrl_c_stops_without_a_restart",
    "test_exit.py::test_five_kernels_that_show_a_panel_shut_down_with_status_0",
    "test_headless.py::test_a_step_refused_in_the_kernel_because_another_process_owns_the_run_is_owned",
    "test_demo.py::test_demo_survives_the_crash_and_charges_the_card_once",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of LONGEST_FIRST first, in its order; every other test after them, in collection order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the order within a rank (parameters, the rest) stays the collection's


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package's bytecode once, before any test starts a process that imports it.

    Hundreds of tests start a kernel, the CLI or a script, and each imports about 80 modules of
    ``resumable``. Where ``PYTHONDONTWRITEBYTECODE`` is set (as on CI's machines), no process
    writes the bytecode it compiles, so every one of them compiled the package from source again:
    0.1-0.3 s of CPU each. Compiled files already present are still read, as an installed wheel's
    are; this changes how fast the suite runs, never what it runs.
    """
    if hasattr(config, "workerinput"):  # an xdist worker: the controller compiled it already
        return
    for package in (resumable, benchmarks):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--campaign-runs",
        type=int,
        default=None,
        help="Trials of the multi-process store campaign (default 3, or RESUMABLE_CAMPAIGN_RUNS).",
    )


@pytest.fixture
def campaign_runs(request: pytest.FixtureRequest) -> int:
    """How many trials the multi-process campaign runs: --campaign-runs > RESUMABLE_CAMPAIGN_RUNS > 3."""
    chosen = request.config.getoption("--campaign-runs")
    return int(chosen if chosen is not None else os.environ.get("RESUMABLE_CAMPAIGN_RUNS", "3"))


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
