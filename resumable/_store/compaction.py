"""Compaction: giving back the space deleted rows left, by rewriting the database into a fresh file.

DuckDB does not shrink a file after DELETE: freed blocks are reused by later writes but the file
keeps its size (and blocks only partly emptied stay in use). So the live rows are copied into a
fresh file (``ATTACH`` + ``COPY FROM DATABASE``, which keeps tables, primary keys, indexes and the
sequences' current values: ``event_seq`` goes on where it was, so the event log keeps its order),
and that file is swapped in by a rename. All of it happens while this process holds the store's
lock (``filelock.py``) with no other handle open, so no other process has the file open:

1. leftovers of a compaction killed earlier are removed (``<store>.compacting`` and its ``.wal``);
2. the store is checkpointed, its rows copied, and the copy checked (row counts of every table,
   every sequence's value); the copy is detached (written out in full, no ``.wal`` left) and the
   store closed (no ``.wal`` left: one that stays means something was not checkpointed, and the
   swap is called off);
3. the copy is fsynced, its identity appended to ``<store>.lineage`` (fsynced), it is renamed over
   the store, and the folder fsynced.

A crash before the rename leaves the old file, whole, as the store, and a temporary file the
next open removes; after it, the new file, complete and synced. Processes that had the store open
before notice that the file at the path is another one; ``<store>.lineage`` tells them it is the
same store compacted (``follows``) rather than a store deleted or replaced by hand.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from resumable._codec import fsync_path
from resumable._store import walmark
from resumable._store.base import Compaction

# File operations here call ``os`` directly, not ``Path``: the kill-point harness of the tests
# (tests/killpoint_hook) sees a call into ``os`` made from this package as a point to die at.

# Compact on its own when at least this share of the file is free space.
WORTH_SHARE = 0.2
_ALIAS = "resumable_compacted"


class CopyMismatch(Exception):
    """The fresh file does not hold what the store holds; the swap is called off."""


def temp_folder(store: Path) -> Path:
    """A private folder (0700) beside the store that holds the fresh file while it is written.

    DuckDB creates the file with the default mode and cannot attach one made private beforehand
    (an empty file is not a database to it), so the folder keeps its checkpoint bytes private.
    """
    return store.with_name(store.name + ".compacting")


def temp_path(store: Path) -> Path:
    """Where the fresh file is written before it replaces the store."""
    return temp_folder(store) / store.name


def lineage_path(store: Path) -> Path:
    """The record of the files the store has been, one compaction a line: ``dev ino -> dev ino``."""
    return store.with_name(store.name + ".lineage")


def clean_leftovers(store: Path) -> None:
    """Remove what a compaction killed before its rename left behind (call holding the store's lock)."""
    folder = temp_folder(store)
    try:
        if folder.is_dir():
            shutil.rmtree(folder)
        else:
            folder.unlink(missing_ok=True)
    except OSError:  # a folder this process may not write (a reader): the next writer cleans up
        pass


def follows(store: Path, old: tuple[int, int], new: tuple[int, int]) -> bool:
    """Whether the file ``new`` is the store that was ``old``, compacted (once or several times)."""
    try:
        text = lineage_path(store).read_text()
    except OSError:
        return False
    successor: dict[tuple[int, int], tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[2] == "->" and all(p.isdigit() for p in parts[:2] + parts[3:]):
            successor[(int(parts[0]), int(parts[1]))] = (int(parts[3]), int(parts[4]))
    seen = {old}
    current = old
    while current in successor:
        current = successor[current]
        if current == new:
            return True
        if current in seen:
            return False
        seen.add(current)
    return False


def waste(con: duckdb.DuckDBPyConnection) -> int:
    """Bytes of free blocks in the open database, as DuckDB counts them."""
    row = con.execute("SELECT block_size, free_blocks FROM pragma_database_size()").fetchone()
    return 0 if row is None else int(row[0]) * int(row[1])


def worth_it(size: int, free: int) -> bool:
    """Whether compacting a file of ``size`` bytes with ``free`` of them unused is worth its cost."""
    return size > 0 and free >= WORTH_SHARE * size and free >= 256 * 1024


def _counts(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, int]:
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1, 2", [database]
    ).fetchall()
    return {
        f"{schema}.{table}": int(con.execute(f'SELECT count(*) FROM "{database}"."{schema}"."{table}"').fetchone()[0])  # type: ignore[index]
        for schema, table in tables
    }


def _sequences(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, int | None]:
    rows = con.execute(
        "SELECT sequence_name, last_value FROM duckdb_sequences() WHERE database_name = ?", [database]
    ).fetchall()
    return {name: value for name, value in rows}


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _copy(con: duckdb.DuckDBPyConnection, temp: Path) -> None:
    """Copy every table, index and sequence of the open store into a fresh file at ``temp``, and check the copy."""
    con.execute("CHECKPOINT")
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    database = str(row[0])
    quoted = str(temp).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {_ALIAS}")
    try:
        con.execute(f'COPY FROM DATABASE "{database}" TO {_ALIAS}')
        if _counts(con, database) != _counts(con, _ALIAS) or _sequences(con, database) != _sequences(con, _ALIAS):
            raise CopyMismatch("the copy does not hold the same rows and sequences as the store")
    finally:
        con.execute(f"DETACH {_ALIAS}")


def compact(store: Path, decide: Callable[[duckdb.DuckDBPyConnection, int], str | None]) -> Compaction:
    """Rewrite ``store`` into a fresh file and swap it in; call holding its lock with no handle open.

    ``decide(con, free_bytes)`` looks at the open store first and returns why not to compact, or None.
    """
    start = time.monotonic()
    clean_leftovers(store)
    size_before = store.stat().st_size
    temp = temp_path(store)
    temp.parent.mkdir(mode=0o700)
    con = duckdb.connect(str(store))
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB draws one on stdout during a long copy
        reason = decide(con, waste(con))
        if reason is None:
            _copy(con, temp)
    except BaseException:
        con.close()
        clean_leftovers(store)
        raise
    con.close()
    if reason is not None:
        return Compaction(False, size_before, size_before, time.monotonic() - start, reason)
    # A log left non-empty would be replayed against the wrong file: the swap is called off. An empty
    # one was made private ahead of time (``connection.private_wal``) and never written.
    logs = [Path(str(store) + ".wal"), Path(str(temp) + ".wal")]
    if any(log.exists() and log.stat().st_size > 0 for log in logs):
        clean_leftovers(store)
        return Compaction(False, size_before, size_before, time.monotonic() - start, "a write-ahead log was left")
    for log in logs:
        log.unlink(missing_ok=True)
    os.chmod(temp, 0o600)  # noqa: PTH101
    fsync_path(temp)
    old, new = _identity(store), _identity(temp)
    with open(lineage_path(store), "a", encoding="ascii") as out:
        out.write(f"{old[0]} {old[1]} -> {new[0]} {new[1]}\n")
        out.flush()
        os.fsync(out.fileno())
    os.chmod(lineage_path(store), 0o600)  # noqa: PTH101
    os.replace(temp, store)  # noqa: PTH105
    try:  # swapped: what follows only tidies up, and must not be reported as a failed compaction
        fsync_path(store.parent)
    except OSError:
        pass
    clean_leftovers(store)  # the folder, empty now
    walmark.record(store)
    return Compaction(True, size_before, store.stat().st_size, time.monotonic() - start)
