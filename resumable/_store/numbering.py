"""Executions and attempts, numbered from the event log: one rule for every reader and the migration.

An execution begins at each ``start`` transition (pending to running: a first run, an edit, a
changed input, an upstream step that re-ran, an invalidation, ``--force`` or ``--rerun``), and at
a ``forked`` arrival (a fork's copy of a completed step counts as its first execution, with no
attempt of its own, as the copied step row does); each
entry into ``running`` within it (the start, then every ``retry`` of a failed or interrupted step)
is one attempt. The log is never rewritten, so its events are numbered when read, the same way for
a store whose events recorded a step's lifetime attempt count (before executions were counted) as for one
whose events record the attempt within the execution: the numbers agree wherever both exist.
"""

from __future__ import annotations


def numbered_events(events: str) -> str:
    """A query over ``events`` (a table or a parenthesised subquery with the events table's columns).

    Its rows are those events with ``attempt`` replaced by the attempt within the execution and a
    column ``execution`` added (0 for a step's events before its first start: none are recorded).
    Plain SQL both stores speak (the columns are named, no ``SELECT * REPLACE``).
    """
    return f"""SELECT seq, run_id, step, happened_at, transition, source, target,
                   CAST(sum(CASE WHEN target = 'running' THEN 1 ELSE 0 END)
                   OVER (PARTITION BY run_id, step, execution ORDER BY seq) AS INTEGER) AS attempt,
                   host, pid, detail, execution
        FROM (SELECT *, CAST(sum(CASE WHEN transition IN ('start', 'forked') THEN 1 ELSE 0 END)
                   OVER (PARTITION BY run_id, step ORDER BY seq) AS INTEGER) AS execution
              FROM {events} AS logged) AS counted"""
