"""Checkpoints: their rows, their payload files beside the database, and collecting what nothing needs.

``Payloads`` owns the payload folder and the signing key: serializing (``_codec``), the digest and
signature checks before anything is unpickled, and removing files no row points to. The row
functions work inside a transaction the store opened.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resumable import _codec
from resumable._records import Blob
from resumable._store import faults
from resumable._store.base import CheckpointRef, Completion, EncodeError, WriteFault
from resumable._store.dialect import Connection
from resumable.errors import CheckpointIntegrityError

# An unreferenced payload file younger than this may belong to a write in progress in some process:
# a large output is renamed into place when it is encoded, and its row is committed only once the
# step's other outputs are encoded too. Such files are left for a later gc.
WRITE_GRACE_S = 3600.0


# A step's checkpoint rows: those its pointer names (a fork's step points at the origin's rows).
POINTED = """c.run_id = coalesce(s.checkpoint_run, s.run_id) AND c.step = s.step
              AND c.generation = coalesce(s.checkpoint_generation, 0)"""


def refs(con: Connection, run_id: str, step: str) -> tuple[CheckpointRef, ...]:
    """A step's checkpoints: the display first, then the values by name.

    Each ref keeps the run and step its row was written under (for a forked step, the origin's),
    which is what its signature binds.
    """
    rows = con.execute(
        f"""SELECT c.run_id, c.step, c.name, c.kind, c.codec, c.digest, c.signature, c.size, c.data, c.file
            FROM steps s JOIN checkpoints c ON {POINTED}
            WHERE s.run_id = ? AND s.step = ? ORDER BY c.kind DESC, c.name""",
        [run_id, step],
    ).fetchall()
    return tuple(CheckpointRef(*r) for r in rows)


def refs_at(con: Connection, run_id: str, step: str, generation: int) -> tuple[CheckpointRef, ...]:
    """The rows of (run, step) at ``generation``, for a step whose pointer is already known (no join)."""
    rows = con.execute(
        """SELECT run_id, step, name, kind, codec, digest, signature, size, data, file FROM checkpoints
           WHERE run_id = ? AND step = ? AND generation = ? ORDER BY kind DESC, name""",
        [run_id, step, generation],
    ).fetchall()
    return tuple(CheckpointRef(*r) for r in rows)


def next_generation(con: Connection, run_id: str, step: str) -> int:
    """A generation for new rows of (run, step) that no row and no step's pointer has used."""
    row = con.execute(
        """SELECT greatest(
               (SELECT max(generation) FROM checkpoints WHERE run_id = ? AND step = ?),
               (SELECT max(checkpoint_generation) FROM steps
                WHERE step = ? AND coalesce(checkpoint_run, run_id) = ?))""",
        [run_id, step, step, run_id],
    ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def write(
    con: Connection,
    run_id: str,
    step: str,
    generation: int,
    outputs: Sequence[Blob],
    display: Blob | None,
) -> None:
    """Insert ``outputs`` (and ``display``) as the rows of (run, step) at ``generation``."""
    rows = [(b, "value") for b in outputs] + ([(display, "display")] if display is not None else [])
    if not rows:
        return
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)"] * len(rows))
    flat: list[Any] = []
    for blob, kind in rows:
        flat += [run_id, step, blob.name, kind, blob.codec, blob.digest, blob.signature, blob.size]
        flat += [blob.inline, blob.file, generation]
    con.execute(
        "INSERT INTO checkpoints (run_id, step, name, kind, codec, digest, signature, size, data, file, created_at, "
        f"generation) VALUES {values}",
        flat,
    )


def drop_superseded(con: Connection, scope: Sequence[tuple[str, str]] = ()) -> int:
    """Delete checkpoint rows no step still needs; returns how many. The one rule for which rows stay.

    A row stays while a step of any run whose state is not pending points at it: the step that
    wrote it, or a fork's step that shares it. A step that is running, failed or interrupted
    keeps the checkpoint of its last completed attempt (its pointer moves only when an attempt
    completes): it is the last good result. Rows of steps sent back to pending (invalidated,
    stale) or gone, and older generations a completion replaced, go. ``scope`` limits the
    deletion to rows of those (run, step) pairs (a completion cleaning up after itself); empty
    means every row (gc).
    """
    where, params = "", []
    if scope:
        where = " AND (" + " OR ".join(["(c.run_id = ? AND c.step = ?)"] * len(scope)) + ")"
        params = [v for pair in scope for v in pair]
    rows = con.execute(
        f"""DELETE FROM checkpoints c WHERE NOT EXISTS (
               SELECT 1 FROM steps s WHERE {POINTED} AND s.state <> 'pending'){where}
           RETURNING 1""",
        params,
    ).fetchall()
    return len(rows)


def referenced_files(con: Connection) -> set[str]:
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
            return _codec.encode(name, value, self.folder)
        except _codec.EncodeFailure as exc:
            raise EncodeError(exc.name, exc.type_name, exc.reason) from exc.__cause__
        except _codec.WriteFailure as exc:
            fault = faults.classify(exc.error, self.folder, exc.written)
            if fault is None:  # pragma: no cover - an OSError always classifies
                fault = WriteFault(faults.WRITE, str(self.folder), str(exc.error), exc.written)
            raise fault from exc.error

    def bind(self, done: Completion) -> Completion:
        """Sign each blob for its place (run, step, kind, name), so a row copied elsewhere fails its check."""
        if self.signing_key is None:
            return done

        def signed(blob: Blob, kind: str) -> Blob:
            key = self.signing_key
            return dataclasses.replace(
                blob, signature=_codec.sign(key, blob.digest, done.run_id, done.step, kind, blob.name)
            )

        display = signed(done.display, "display") if done.display is not None else None
        return dataclasses.replace(done, outputs=tuple(signed(b, "value") for b in done.outputs), display=display)

    def load(self, ref: CheckpointRef) -> Any:
        """Check the file's place, the signature (with a key configured) and the digest, then unpickle."""
        file = self._payload_file(ref) if ref.file else None
        if self.signing_key is not None:
            self._check_signature(ref)
        try:
            return _codec.decode(ref.data, file, ref.digest)
        except _codec.DigestMismatch as exc:
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, f"failed its digest check ({exc})") from None

    def _payload_file(self, ref: CheckpointRef) -> Path:
        """The row's file, refused before any read unless it lies inside the payload folder."""
        assert ref.file is not None
        relative = Path(ref.file)
        folder = self.folder.resolve()
        candidate = (self.folder / relative).resolve()
        if relative.is_absolute() or ".." in relative.parts or not candidate.is_relative_to(folder):
            raise CheckpointIntegrityError(
                ref.run_id, ref.step, ref.name, f"points to a file outside the store's payload folder ({ref.file!r})"
            )
        return candidate

    def _check_signature(self, ref: CheckpointRef) -> None:
        if ref.signature is None:
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, "was not signed with the configured key")
        version = _codec.signature_version(ref.signature)
        if version != _codec.SIGNATURE_VERSION:
            reason = (
                f"carries a version-{version} signature, which did not bind a checkpoint to its run and step, "
                f"so it is no longer trusted"
            )
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, reason)
        expected = _codec.sign(self.signing_key, ref.digest, ref.run_id, ref.step, ref.kind, ref.name)
        if expected is None or not hmac.compare_digest(ref.signature, expected):
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, "has a bad signature")

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Delete files no row points to, except young ones; returns (files removed, bytes freed).

        A ``.part`` file (a payload being written) is removed as soon as the process named in it is
        gone, whatever its age: that write was killed and can never be recorded.
        """
        removed = 0
        freed = 0
        if not self.folder.exists():
            return removed, freed
        now = time.time()
        for file in self.folder.rglob("*"):
            if not file.is_file() or file.is_symlink():
                continue
            if file.relative_to(self.folder).as_posix() in referenced:
                continue
            try:
                stat = file.stat()
            except FileNotFoundError:  # its writer renamed or removed it meanwhile
                continue
            if file.suffix == ".part":
                writer_alive = _codec.part_writer_alive(file.name)
                if writer_alive or (writer_alive is None and now - stat.st_mtime < WRITE_GRACE_S):
                    continue
            elif now - stat.st_mtime < WRITE_GRACE_S:
                continue
            freed += stat.st_size
            file.unlink(missing_ok=True)
            removed += 1
        return removed, freed
