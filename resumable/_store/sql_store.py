"""What both stores do alike: each method here is one transaction around a row module's function.

The DuckDB and PostgreSQL stores differ in how a transaction opens (a file under the store's lock,
a pooled server session) and in how steps are claimed, begun and completed (group commits and a
completion log, or a commit per step). Reading runs and steps, forking, unlocking, invalidating
and the fence before a side effect are the same SQL through the same row modules, so they are
written once, here, on top of the store's own ``_transaction``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from resumable._records import Event, Owner, RunInfo, StepStatus
from resumable._states import RunState
from resumable._store import checkpoints, forks, places, retention, runs, steps
from resumable._store.base import CheckpointRef, PayloadsAt, Removal, RunFilter, Unlocked
from resumable._store.dialect import Connection


class SqlStore:
    """The methods of the ``Store`` seam that both stores implement the same way."""

    location: str
    _payloads: checkpoints.Payloads

    def _transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # each store opens its own

    def _rolled_back_transaction(self) -> AbstractContextManager[Connection]:
        """The transaction of a dry run, which an exception rolls back."""
        return self._transaction()

    @property
    def payloads_at(self) -> PayloadsAt:
        where = self._payloads.place.where
        return PayloadsAt(where, places.is_url(where))

    # ------------------------------------------------------------------ runs

    def get_run(self, run_id: str) -> RunInfo | None:
        with self._transaction() as con:
            return runs.get_run(con, run_id)

    def latest_run(self, pipeline: str) -> RunInfo | None:
        found = self.list_runs(pipeline, limit=1)
        return found[0] if found else None

    def list_runs(
        self,
        pipeline: str | None = None,
        limit: int = 100,
        *,
        state: RunState | None = None,
        since: datetime | None = None,
    ) -> list[RunInfo]:
        with self._transaction() as con:
            return runs.list_runs(con, pipeline, limit, state, since)

    def fork_run(
        self,
        origin: str,
        step: str,
        run_id: str,
        who: Owner,
        params: dict[str, Any] | None = None,
        *,
        pipeline: str | None = None,
    ) -> RunInfo:
        """One transaction (``forks.py``); on a server it locks the steps it copies, so no completion moves them."""
        with self._transaction() as con:
            return forks.fork(con, self.location, origin, step, run_id, who, params, pipeline)

    def unlock_run(self, run_id: str, who: Owner) -> Unlocked:
        with self._transaction() as con:
            return runs.unlock(con, self.location, run_id, who)

    # ------------------------------------------------------------------ steps

    def _read_back(self, run_id: str, step: str) -> StepStatus | None:
        try:
            return self.get_step(run_id, step)
        except Exception:
            return None

    def invalidate(
        self, run_id: str, step: str, who: Owner, *, downstream: bool = False, reason: str = "user asked"
    ) -> list[str]:
        with self._transaction() as con:
            return steps.invalidate(con, self.location, run_id, step, who, downstream, reason)

    def get_step(self, run_id: str, step: str) -> StepStatus | None:
        with self._transaction() as con:
            return steps.get_step(con, run_id, step)

    def list_steps(self, run_id: str) -> list[StepStatus]:
        with self._transaction() as con:
            return steps.list_steps(con, run_id)

    def list_events(self, run_id: str, step: str | None = None) -> list[Event]:
        with self._transaction() as con:
            return steps.list_events(con, run_id, step)

    def previous_source(self, run_id: str, step: str) -> str | None:
        with self._transaction() as con:
            return steps.previous_source(con, run_id, step)

    def last_event_seq(self) -> int:
        with self._transaction() as con:
            return steps.last_event_seq(con)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_refs(self, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
        with self._transaction() as con:
            return checkpoints.refs(con, run_id, step)

    def load_value(self, ref: CheckpointRef) -> Any:
        return self._payloads.load(ref)

    # ------------------------------------------------------------------ deleting runs

    def remove_runs(self, which: RunFilter | tuple[str, ...], who: Owner, *, dry_run: bool = False) -> Removal:
        """One transaction deletes the rows (rolled back for a dry run); the payloads go after its commit.

        The payloads are removed only once the rows that pointed to them are committed away: a crash
        in between leaves unreferenced payloads (garbage for ``gc``), never a row without its payload. On
        a server each run's row is locked before its holder is checked (``retention.delete``), so a
        process claiming the run meanwhile either waits for the deletion or is seen as its holder.
        """
        place = self._payloads.place
        if dry_run:
            try:
                with self._rolled_back_transaction() as con:
                    deleted = retention.delete(con, self.location, place, which)
                    raise _DryRun  # noqa: TRY301 - the one way to roll a transaction back here
            except _DryRun:
                pass
            size = sum(f[2] for f in deleted.files)
            return Removal(
                deleted.removed, deleted.refused, deleted.checkpoints_removed, deleted.inline_bytes,
                len(deleted.files), size, dry_run=True,
            )  # fmt: skip
        with self._transaction() as con:
            deleted = retention.delete(con, self.location, place, which)
        files, size = place.remove(deleted.files)
        return Removal(deleted.removed, deleted.refused, deleted.checkpoints_removed, deleted.inline_bytes, files, size)


class _DryRun(Exception):
    """Raised inside a dry run's transaction to roll it back."""
