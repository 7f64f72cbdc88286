"""The notebook user's path on a PostgreSQL server store: the magics' representative tests, run again.

Each test imported below is the very test of its own module (which runs it on a DuckDB file);
collected here, it resolves this module's fixtures, so ``store_path`` is a new database on the
session's real PostgreSQL server instead and the same assertions hold there. Together they cover
a step's outputs restored in a fresh kernel namespace, an edited cell executing again and its
readers going stale, a failed step and a retried one, an effect step's idempotency key stable
across retries and held when its inputs change, and in-place changes (a DataFrame column, a
list.append, ``np.add.at``) kept across a restart, ``%durable_run`` joining, resuming or starting a
run, ``%durable_status``'s table, and a notebook's function loaded outside it. The server half is
skipped, with the reason, where the cluster cannot start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ipython_shell import started_shell
from test_hidden_state import new_kernel, test_np_add_at_and_a_helper_appending_are_kept
from test_inputs import (
    test_a_new_kernel_running_the_same_cells_restores_every_step,
    test_an_effect_step_is_held_when_its_inputs_change_and_runs_again_only_when_asked,
)
from test_magics import (
    calls,
    test_completed_step_is_restored_not_rerun,
    test_durable_run_resumes_latest_or_starts,
    test_edited_cell_runs_again_and_its_readers_become_stale,
    test_failing_cell_fails_the_step_and_the_notebook,
    test_idempotency_key_is_stable_across_retries_and_new_after_a_rerun,
    test_in_place_change_of_an_earlier_object_survives_a_restart,
    test_notebook_function_loads_as_a_function_outside_the_notebook,
    test_retries_run_the_body_again_and_show_the_attempt,
    test_status_table_lists_steps,
)
from test_magics_first_hour import test_an_edited_step_says_why_it_runs_again_before_its_output

__all__ = [  # collected here, on this module's fixtures
    "calls",
    "test_a_new_kernel_running_the_same_cells_restores_every_step",
    "test_an_edited_step_says_why_it_runs_again_before_its_output",
    "test_an_effect_step_is_held_when_its_inputs_change_and_runs_again_only_when_asked",
    "test_completed_step_is_restored_not_rerun",
    "test_durable_run_resumes_latest_or_starts",
    "test_edited_cell_runs_again_and_its_readers_become_stale",
    "test_failing_cell_fails_the_step_and_the_notebook",
    "test_idempotency_key_is_stable_across_retries_and_new_after_a_rerun",
    "test_in_place_change_of_an_earlier_object_survives_a_restart",
    "test_notebook_function_loads_as_a_function_outside_the_notebook",
    "test_np_add_at_and_a_helper_appending_are_kept",
    "test_retries_run_the_body_again_and_show_the_attempt",
    "test_status_table_lists_steps",
]

pytestmark = pytest.mark.parametrize("store_location", ["postgresql"], indirect=True)


@pytest.fixture
def store_path(store_location: str) -> str:
    """The store the imported tests open: a new database on the server (their own modules run the DuckDB file)."""
    assert store_location.startswith("postgresql://"), store_location
    return store_location


@pytest.fixture
def shell(store_path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The union of the imported modules' shells: run 'r1', in the test's folder, a new kernel afterwards."""
    monkeypatch.setenv("RESUMABLE_STORE", store_path)
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    monkeypatch.chdir(tmp_path)
    ip = started_shell()
    yield ip
    new_kernel(ip)
