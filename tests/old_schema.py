"""Making a store look as an older resumable left it, for the migration tests."""

from __future__ import annotations

from pathlib import Path

import duckdb

import resumable
from resumable._owner import current_owner
from resumable._store import forget_all

# What migration 6 (forks) added.
MIGRATION_6_COLUMNS = (
    ("runs", "forked_from"), ("runs", "forked_at"), ("checkpoints", "generation"),
    ("steps", "checkpoint_run"), ("steps", "checkpoint_generation"),
)  # fmt: skip


def drop_migration_6(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what migration 6 added (the caller sets the version it pretends to be)."""
    for table, column in MIGRATION_6_COLUMNS:
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


# Undoing migration 8 (fencing tokens), in SQL both stores run (``store_sql.execute``).
UNDO_MIGRATION_8 = (
    "ALTER TABLE runs DROP COLUMN owner_generation",
    "ALTER TABLE steps DROP COLUMN owner_generation",
    "ALTER TABLE leases DROP COLUMN generation",
    "DROP SEQUENCE lease_generation",
)


def drop_migration_8(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what migration 8 added (the caller sets the version it pretends to be)."""
    for statement in UNDO_MIGRATION_8:
        con.execute(statement)


def two_executions_of_a_flaky_step(store: str | Path) -> resumable.Pipeline:
    """Run 'old' of pipeline 'p', step 'a': execution 1 (a failed attempt, then a completed one), then, invalidated,
    execution 2; the store is let go of, ready to be made to look older. The history the migration-7 tests recount."""
    pipe = resumable.Pipeline("p", store=store)
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return len(calls)

    with pipe.run(run_id="old") as run:
        run.step("a", flaky, retries=1, backoff=0)  # execution 1: attempts 1 (failed) and 2
    pipe.store.invalidate("old", "a", current_owner())
    with pipe.run(run_id="old") as run:
        run.step("a", flaky)  # execution 2
    forget_all()
    return pipe
