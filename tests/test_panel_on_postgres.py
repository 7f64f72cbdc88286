"""The panel's store reads and writes on a PostgreSQL server store: test_panel's representative tests, run again.

As in test_front_ends_on_postgres, each imported test is collected here on this module's fixtures,
so ``store_path`` is a new database on the session's real server (test_panel runs the DuckDB file).
They cover the rows showing what the store holds, a Retry click completing a failed step, and a
change made by another process (the CLI, by URL) showing up through the poll.
"""

from __future__ import annotations

import pytest
from test_panel import (
    panels,
    shell,
    test_changes_from_another_process_appear_through_the_poll,
    test_retry_turns_a_failed_step_completed,
    test_rows_show_what_the_store_holds,
)

__all__ = [  # collected here, on this module's fixtures
    "panels",
    "shell",
    "test_changes_from_another_process_appear_through_the_poll",
    "test_retry_turns_a_failed_step_completed",
    "test_rows_show_what_the_store_holds",
]

pytestmark = pytest.mark.parametrize("store_location", ["postgresql"], indirect=True)


@pytest.fixture
def store_path(store_location: str) -> str:
    """The store the imported tests open: a new database on the server."""
    assert store_location.startswith("postgresql://"), store_location
    return store_location
