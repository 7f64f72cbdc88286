"""The store's tables and the numbered migrations that create and evolve them.

Each migration is a list of statements run in one transaction with the ``schema_version`` bump, so
a store is always at exactly one version. A store written by a newer resumable is refused rather
than guessed at.
"""

from __future__ import annotations

from resumable._store.dialect import Connection, dialect_of
from resumable._store.numbering import numbered_events
from resumable.errors import SchemaVersionError, StoreError

SCHEMA_VERSION = 8

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            pipeline VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,    -- its last change is its newest event (derived)
            params VARCHAR NOT NULL,            -- JSON object
            owner_host VARCHAR,                 -- set while a process holds the whole run (Python API)
            owner_pid INTEGER,
            owner_started DOUBLE,
            owner_kernel VARCHAR
        )""",
        """CREATE TABLE steps (
            run_id VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            seq INTEGER NOT NULL,               -- order of first start within the run
            state VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            source VARCHAR,
            source_digest VARCHAR,
            reads VARCHAR NOT NULL,             -- JSON list of names the step reads
            outputs VARCHAR NOT NULL,           -- JSON list of names it produced
            options VARCHAR NOT NULL,           -- JSON object: retries, backoff, timeout...
            owner_host VARCHAR,
            owner_pid INTEGER,
            owner_started DOUBLE,
            owner_kernel VARCHAR,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            duration_s DOUBLE,
            output_bytes BIGINT NOT NULL,
            error VARCHAR,
            traceback VARCHAR,
            PRIMARY KEY (run_id, step)
        )""",
        "CREATE SEQUENCE event_seq START 1",
        """CREATE TABLE events (
            seq BIGINT NOT NULL DEFAULT nextval('event_seq'),
            run_id VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            happened_at TIMESTAMPTZ NOT NULL,
            transition VARCHAR NOT NULL,
            source VARCHAR,
            target VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            host VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            detail VARCHAR
        )""",
        # No primary key: a step's checkpoints are replaced by delete + insert in one transaction,
        # which DuckDB's unique indexes have refused in some versions.
        """CREATE TABLE checkpoints (
            run_id VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,              -- 'value' or 'display'
            codec VARCHAR NOT NULL,
            digest VARCHAR NOT NULL,
            signature VARCHAR,
            size BIGINT NOT NULL,
            data BLOB,                          -- small payloads inline
            file VARCHAR,                       -- large payloads: path in the payload folder
            created_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    # What a step read and whether it has side effects (docs/durability.md, "Inputs" and "Effects").
    2: [
        # JSON: name -> fingerprints; NULL for steps recorded before inputs were tracked (not compared)
        "ALTER TABLE steps ADD COLUMN inputs VARCHAR",
        "ALTER TABLE steps ADD COLUMN effect BOOLEAN DEFAULT false",  # asked for a key, or declared
        "ALTER TABLE steps ADD COLUMN key_generation INTEGER DEFAULT 1",  # bumped by a deliberate rerun
        "ALTER TABLE steps ADD COLUMN key_used BOOLEAN DEFAULT false",  # completed under this generation
        "ALTER TABLE steps ADD COLUMN rerun_token VARCHAR",  # the request a rerun was made for
    ],
    # How far each process's completion log has been applied (completion_log.py, replay.py): a
    # group commit updates its row in the same transaction, so a replay never applies a record twice.
    3: [
        """CREATE TABLE completion_logs (
            process VARCHAR PRIMARY KEY,        -- host_pid_started, as the log files are named
            applied BIGINT NOT NULL,            -- records 1..applied are in this store
            updated_at TIMESTAMPTZ NOT NULL
        )""",
    ],
    # Ownership leases (docs/durability.md, "Who owns a run"): a process that owns a run or runs a
    # step keeps its lease here and renews it, so an owner on another host that stops renewing
    # (a container restarted under a new name) no longer holds its runs once the lease expires.
    4: [
        """CREATE TABLE leases (
            host VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            started DOUBLE NOT NULL,            -- the process's start time, as owners record it
            expires DOUBLE NOT NULL,            -- seconds since the epoch, by the owner's clock
            PRIMARY KEY (host, pid, started)
        )""",
    ],
    # Why a step ran (``resumable why``): the source it had before an edit made it execute again,
    # so the edit can be shown as a diff (NULL when its last start was not caused by an edit).
    5: [
        "ALTER TABLE steps ADD COLUMN previous_source VARCHAR",
    ],
    # Forks (docs/durability.md, "Forks share checkpoints"): a run made from another one's steps
    # before a step shares their checkpoint rows by reference. Each completion writes its rows at a
    # new generation and points its step at them, so a run that shares a step keeps restoring the
    # exact rows it forked from, whatever the origin does to that step later.
    6: [
        "ALTER TABLE runs ADD COLUMN forked_from VARCHAR",  # the run this one was forked from
        "ALTER TABLE runs ADD COLUMN forked_at VARCHAR",  # the step it was forked at (executes in the fork)
        "ALTER TABLE checkpoints ADD COLUMN generation INTEGER DEFAULT 0",
        # A step's checkpoints are the rows of (coalesce(checkpoint_run, run_id), step, checkpoint_generation).
        "ALTER TABLE steps ADD COLUMN checkpoint_run VARCHAR",  # NULL: the step's own rows
        "ALTER TABLE steps ADD COLUMN checkpoint_generation INTEGER DEFAULT 0",
    ],
    # Attempts counted per execution (docs/durability.md, "Attempts and executions"): an execution
    # begins at each start from pending (the transition ``start``); a retry of a failed or
    # interrupted step is another attempt of the same one. ``attempts`` becomes the attempts of
    # the current execution, ``executions`` counts them, both recounted from the event log, which
    # stays as it was: readers number its events the same way (``numbering.numbered_events``).
    7: [
        "ALTER TABLE steps ADD COLUMN executions INTEGER DEFAULT 1",
        """UPDATE steps SET executions = n.executions, attempts = n.attempts
           FROM (SELECT run_id, step, greatest(1, max(execution)) AS executions,
                        greatest(1, arg_max(attempt, seq)) AS attempts
                 FROM ("""
        + numbered_events("events")
        + """) AS numbered GROUP BY run_id, step) n
           WHERE steps.run_id = n.run_id AND steps.step = n.step""",
        # ``key_used`` now means "completed as an effect under this generation" (``steps.complete``):
        # a step that completed without side effects, or has not completed since its last start,
        # has not used its key, so a retry of its effect keeps that key.
        """UPDATE steps SET key_used = false
           WHERE key_used AND (NOT coalesce(effect, false) OR state IN ('running', 'failed', 'interrupted'))""",
    ],
    # Fencing tokens (docs/scale.md, "Leases"): each acquisition of a run or of a running step takes
    # the next number of one sequence, kept on the run or the step; every write its owner makes later
    # carries the number and changes nothing unless it is still the current one, so an owner that
    # lost its lease (a network partition) and was taken over cannot write late, whatever its host
    # name and pid. The lease keeps the newest number its process took, for messages.
    8: [
        "CREATE SEQUENCE lease_generation START 1",
        "ALTER TABLE runs ADD COLUMN owner_generation BIGINT",  # the token of the run's current claim
        "ALTER TABLE steps ADD COLUMN owner_generation BIGINT",  # the token its running attempt started under
        "ALTER TABLE leases ADD COLUMN generation BIGINT",  # the newest token the process took
    ],
}


def migrate(con: Connection, location: str) -> None:
    """Bring the store to ``SCHEMA_VERSION`` inside the caller's transaction; refuse a newer one untouched."""
    sql = dialect_of(con)
    sql.lock_name(con, "schema")  # two processes opening a new server store: one migrates it
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(location, version, SCHEMA_VERSION)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[number]:
            con.execute(sql.ddl(statement))
    if version != SCHEMA_VERSION:
        con.execute(sql.upsert("meta", ("key", "value"), ("key",)), ["schema_version", str(SCHEMA_VERSION)])


def check_version(con: Connection, location: str) -> None:
    """For a read-only open: the store must be at ``SCHEMA_VERSION`` already (nothing is migrated)."""
    exists = con.execute(dialect_of(con).exists_table, ["meta"]).fetchone()
    row = (
        con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if exists and exists[0] else None
    )
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(location, version, SCHEMA_VERSION)
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"store '{location}' is at schema version {version}, older than this resumable's "
            f"({SCHEMA_VERSION}), and a command that only reads does not upgrade it. Run a pipeline or any "
            "command that writes to the store (resumable gc) once, then read it again."
        )
