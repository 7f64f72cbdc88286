"""Checkpoints: their rows, their payload files beside the database, and collecting what nothing needs.

``Payloads`` owns the payload folder and the signing key: serializing (``_codec``), the digest and
signature checks before anything is unpickled, and removing files no row points to. The row
functions work inside a transaction the store opened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from resumable import _codec
from resumable._records import Blob
from resumable._store import faults
from resumable._store.base import CheckpointRef, EncodeError, WriteFault
from resumable.errors import CheckpointIntegrityError

# An unreferenced payload file younger than this may belong to a write in progress in some process:
# a large output is renamed into place when it is encoded, and its row is committed only once the
# step's other outputs are encoded too. Such files are left for a later gc.
WRITE_GRACE_S = 3600.0


def refs(con: duckdb.DuckDBPyConnection, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
    """A step's checkpoints: the display first, then the values by name."""
    rows = con.execute(
        """SELECT name, kind, codec, digest, signature, size, data, file FROM checkpoints
           WHERE run_id = ? AND step = ? ORDER BY kind DESC, name""",
        [run_id, step],
    ).fetchall()
    return tuple(CheckpointRef(run_id, step, *r) for r in rows)


def replace(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    step: str,
    outputs: Sequence[Blob],
    display: Blob | None,
    *,
    had_checkpoints: bool,
) -> None:
    """Make ``outputs`` (and ``display``) the step's checkpoints, dropping any it had."""
    if had_checkpoints:
        con.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step])
    rows = [(b, "value") for b in outputs] + ([(display, "display")] if display is not None else [])
    if not rows:
        return
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())"] * len(rows))
    flat: list[Any] = []
    for blob, kind in rows:
        flat += [run_id, step, blob.name, kind, blob.codec, blob.digest, blob.signature, blob.size]
        flat += [blob.inline, blob.file]
    con.execute(
        "INSERT INTO checkpoints (run_id, step, name, kind, codec, digest, signature, size, data, file, created_at) "
        f"VALUES {values}",
        flat,
    )


def drop_superseded(con: duckdb.DuckDBPyConnection) -> int:
    """Delete checkpoint rows of steps sent back to pending (invalidated, stale) or gone; returns how many.

    A step that is running, failed or interrupted keeps the checkpoint of its last completed
    attempt: it is the last good result until a new attempt completes (and replaces it).
    """
    rows = con.execute(
        """DELETE FROM checkpoints c WHERE NOT EXISTS (
               SELECT 1 FROM steps s WHERE s.run_id = c.run_id AND s.step = c.step AND s.state <> 'pending')
           RETURNING 1"""
    ).fetchall()
    return len(rows)


def referenced_files(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every payload file a checkpoint row points to (relative to the payload folder)."""
    return {r[0] for r in con.execute("SELECT file FROM checkpoints WHERE file IS NOT NULL").fetchall()}


class Payloads:
    """The payload folder beside the database and the key that signs what is written there."""

    def __init__(self, folder: Path, signing_key: bytes | None) -> None:
        self.folder = folder
        self.signing_key = signing_key

    def encode(self, name: str, value: object) -> Blob:
        """Serialize an output; a large one lands fsynced in the folder.

        EncodeError when the value cannot be pickled; WriteFault when the folder cannot take it
        (a full disk, a read-only file system).
        """
        try:
            return _codec.encode(name, value, self.folder, self.signing_key)
        except _codec.EncodeFailure as exc:
            raise EncodeError(exc.name, exc.type_name, exc.reason) from exc.__cause__
        except _codec.WriteFailure as exc:
            fault = faults.classify(exc.error, self.folder, exc.written)
            if fault is None:  # pragma: no cover - an OSError always classifies
                fault = WriteFault(faults.WRITE, str(self.folder), str(exc.error), exc.written)
            raise fault from exc.error

    def load(self, ref: CheckpointRef) -> Any:
        """Check the signature (with a key configured) and the digest, then unpickle."""
        if self.signing_key is not None and ref.signature != _codec.sign(ref.digest, self.signing_key):
            reason = "was not signed with the configured key" if ref.signature is None else "has a bad signature"
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, reason)
        file = self.folder / ref.file if ref.file else None
        try:
            return _codec.decode(ref.data, file, ref.digest)
        except _codec.DigestMismatch as exc:
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, f"failed its digest check ({exc})") from None

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Delete files no row points to, except young ones; returns (files removed, bytes freed)."""
        removed = 0
        freed = 0
        if not self.folder.exists():
            return removed, freed
        now = time.time()
        for file in self.folder.rglob("*"):
            if not file.is_file():
                continue
            if file.relative_to(self.folder).as_posix() in referenced:
                continue
            stat = file.stat()
            if now - stat.st_mtime < WRITE_GRACE_S:
                continue
            freed += stat.st_size
            file.unlink()
            removed += 1
        return removed, freed
