"""The completed steps of a run this process owns, read once, so that restoring them needs no transaction each.

A DuckDB transaction costs about a millisecond, and restoring a completed step took three queries
in one: more than executing a DBOS step. While this process owns the run and holds the file, no
other process can change it (DuckDB lets one process hold the file), and every change this
process makes goes through its store object. So the store reads, in one transaction, the owner
check :func:`runs.check_owner` makes for every step plus the row of every completed step and the
references to its checkpoints (without their bytes), and decides later restores from that
snapshot with :func:`steps.plain_restore`, the very rule the transaction applies. The snapshot is
thrown away the moment it might be out of date (``DuckDBStore`` owns that rule): the file was let
go of, another handle of this process committed into it, or this store made a change other than
the start, completion or failure of a step, whose own entry it drops.

Small checkpoints' bytes live inside the database. They are read when first needed, for that step
and the next ones in the run's order up to ``READ_AHEAD_BYTES``: one query serves a whole resume,
and a store of many runs (where DuckDB reads the whole ``data`` column for any query that selects
it) is scanned once per window instead of once per step. Every checkpoint is still checked against
its digest and signature when it is loaded (``checkpoints.Payloads.load``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from resumable._records import Owner
from resumable._store import runs
from resumable._store.base import CheckpointRef
from resumable._store.dialect import Connection
from resumable._store.rows import RunView

READ_AHEAD_BYTES = 16 * 1024 * 1024
# The bytes of rows in one read-ahead query at most, whatever their size (one statement's parameters).
READ_AHEAD_ROWS = 200

# A checkpoint row's identity: (run, step, generation, kind, name).
RowKey = tuple[str, str, int, str, str]


@dataclass(frozen=True, slots=True)
class Entry:
    """One completed step: its row as a decision reads it, and its checkpoint references (bytes not read)."""

    view: RunView
    refs: tuple[CheckpointRef, ...]
    seq: int

    def inline_refs(self) -> list[tuple[RowKey, CheckpointRef]]:
        generation = self.view.checkpoint_generation
        return [((r.run_id, r.step, generation, r.kind, r.name), r) for r in self.refs if r.file is None]


@dataclass(slots=True)
class Snapshot:
    """The completed steps of one run, and the inline bytes read ahead for them.

    The bytes are kept with the digest of the row they were read from and used only for a
    reference with that digest, so they may outlive the snapshot they were read under: a row
    whose content changed since has another digest and is read again (and every payload is
    checked against its digest when it is loaded, whatever happens here).
    """

    mark: object  # the store's change mark when it was read; equal marks: still true
    entries: dict[str, Entry]
    inline: dict[RowKey, tuple[str, bytes | None]] = field(default_factory=dict)

    def drop(self, *names: str) -> None:
        """Forget steps this process is changing (started, completed, failed, made stale)."""
        for name in names:
            self.entries.pop(name, None)

    def _has(self, key: RowKey, ref: CheckpointRef) -> bool:
        found = self.inline.get(key)
        return found is not None and found[0] == ref.digest

    def missing(self, entry: Entry) -> bool:
        """Whether some inline bytes of ``entry`` are not read yet."""
        return not all(self._has(key, ref) for key, ref in entry.inline_refs())

    def take(self, entry: Entry) -> tuple[CheckpointRef, ...] | None:
        """The step's references with their inline bytes, taken out of the read-ahead (each is restored once).

        None when some bytes are gone (another thread of the process restored the same step at
        the same moment): the caller lets a transaction decide instead.
        """
        out = []
        for key, ref in entry.inline_refs():
            found = self.inline.pop(key, None)
            if found is None or found[0] != ref.digest:
                return None
            out.append(dataclasses.replace(ref, data=found[1]))
        inline = iter(out)
        return tuple(next(inline) if ref.file is None else ref for ref in entry.refs)

    def window(self, entry: Entry) -> list[RowKey]:
        """The inline rows to read for ``entry``: its own, then the next steps' in run order, up to the budget."""
        keys = [k for k, ref in entry.inline_refs() if not self._has(k, ref)]
        size = sum(r.size for r in entry.refs if r.file is None)
        for other in sorted((e for e in self.entries.values() if e.seq > entry.seq), key=lambda e: e.seq):
            more = [k for k, ref in other.inline_refs() if not self._has(k, ref)]
            grown = size + sum(r.size for r in other.refs if r.file is None)
            if not more:
                continue
            if grown > READ_AHEAD_BYTES or len(keys) + len(more) > READ_AHEAD_ROWS:
                break
            keys += more
            size = grown
        return keys


def read(con: Connection, location: str, run_id: str, me: Owner, claim: int | None = None) -> dict[str, Entry]:
    """Check the run is this process's to decide (``check_owner``), then read its completed steps.

    Raises what ``check_owner`` raises (RunOwnedError when another live process holds the run,
    LeaseLostError when it was claimed under another token than ``claim`` since).
    """
    pipeline = runs.check_owner(con, location, run_id, me, claim=claim).pipeline
    rows = con.execute(
        f"""SELECT {runs.VIEW_COLUMNS}, seq FROM steps WHERE run_id = ? AND state = 'completed'""", [run_id]
    ).fetchall()
    entries: dict[str, Entry] = {}
    if not rows:
        return entries
    # The rows each step points at (a fork's steps: the origin's), found by one plain read of the
    # runs pointed at: DuckDB plans the join of steps and checkpoints several times more slowly.
    pointed = {(row[15], row[0], int(row[16])): row[0] for row in rows}
    refs: dict[str, list[CheckpointRef]] = {}
    for r in con.execute(
        "SELECT run_id, step, generation, name, kind, codec, digest, signature, size, file FROM checkpoints "
        "WHERE list_contains(?, run_id)",
        [sorted({key[0] for key in pointed})],
    ).fetchall():
        step = pointed.get((r[0], r[1], int(r[2])))
        if step is not None:
            refs.setdefault(step, []).append(CheckpointRef(r[0], r[1], r[3], r[4], r[5], r[6], r[7], r[8], None, r[9]))
    for found in refs.values():  # the order of ``checkpoints.refs``: by kind descending, then name
        found.sort(key=lambda ref: ref.name)
        found.sort(key=lambda ref: ref.kind, reverse=True)
    for row in rows:
        view = runs.view_from(pipeline, row[1], row)
        entries[row[0]] = Entry(view, tuple(refs.get(row[0], ())), int(row[-1]))
    return entries


def read_inline(con: Connection, keys: list[RowKey]) -> dict[RowKey, tuple[str, bytes | None]]:
    """The bytes of the inline rows ``keys``, in one query (rows of other generations are read and left out)."""
    by_run: dict[str, set[str]] = {}
    for key in keys:
        by_run.setdefault(key[0], set()).add(key[1])
    where = " OR ".join(["(run_id = ? AND list_contains(?, step))"] * len(by_run))
    params: list[object] = []
    for run_id, names in sorted(by_run.items()):
        params += [run_id, sorted(names)]
    found: dict[RowKey, tuple[str, bytes | None]] = {}
    wanted = set(keys)
    for run_id, step, generation, kind, name, digest, data in con.execute(
        f"SELECT run_id, step, generation, kind, name, digest, data FROM checkpoints WHERE file IS NULL AND ({where})",
        params,
    ).fetchall():
        key = (run_id, step, int(generation), kind, name)
        if key in wanted:
            found[key] = (digest, data)
    return found
