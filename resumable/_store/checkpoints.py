"""Checkpoints: their rows, their large payloads (in a folder or an object store), and collecting what nothing needs.

``Payloads`` owns the payload place (``places.py``) and the signing key: serializing (``_codec``),
the digest and signature checks before anything is unpickled, and removing payloads no row points
to. The row functions work inside a transaction the store opened.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Sequence
from typing import Any

from resumable import _codec
from resumable._records import Blob
from resumable._store import faults
from resumable._store.base import CheckpointRef, Completion, EncodeError, WriteFault
from resumable._store.dialect import Connection
from resumable._store.places import FolderPlace, PayloadPlace
from resumable.errors import CheckpointIntegrityError

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
    """Every large payload a checkpoint row points to (its name relative to the payload place)."""
    return {r[0] for r in con.execute("SELECT file FROM checkpoints WHERE file IS NOT NULL").fetchall()}


def _unknown_codec(codec: str) -> str:
    return (
        f"is in a payload format this version of resumable cannot check ({codec!r}: a newer version's, "
        f"which upgrading resumable loads, or the row was changed)"
    )


class Payloads:
    """Where large payloads live (a :class:`~resumable._store.places.PayloadPlace`) and the key that signs them."""

    def __init__(self, place: PayloadPlace, signing_key: bytes | None) -> None:
        self.place = place
        self.signing_key = signing_key

    def encode(self, name: str, value: object) -> Blob:
        """Serialize an output; a large one is in its place before this returns, durable unless written behind.

        A blob with ``synced`` False (a DuckDB store's folder, ``FolderPlace(write_behind=True)``)
        is on disk only once :meth:`sync` ran: whoever commits a row pointing at it calls that first.

        EncodeError when the value cannot be pickled; WriteFault when the place cannot take it
        (a full disk, a read-only file system, an object store that cannot be reached).
        """
        try:
            return self.place.write(name, value)
        except _codec.EncodeFailure as exc:
            raise EncodeError(exc.name, exc.type_name, exc.reason) from exc.__cause__
        except _codec.WriteFailure as exc:
            fault = faults.classify(exc.error, exc.path, exc.written)
            if fault is None:  # pragma: no cover - an OSError always classifies
                fault = WriteFault(faults.WRITE, str(exc.path), str(exc.error), exc.written)
            raise fault from exc.error

    def sync(self, blobs: Sequence[Blob]) -> None:
        """Put payloads written behind on disk (file and name): before any row that points at them is committed.

        A committed ``completed`` row never points at bytes a power cut could still take.
        """
        for blob in blobs:
            if not blob.synced and blob.file is not None and isinstance(self.place, FolderPlace):
                _codec.sync_payload(self.place.folder / blob.file)

    def bind(self, done: Completion) -> Completion:
        """Sign each blob for its place (run, step, kind, name), so a row copied elsewhere fails its check."""
        if self.signing_key is None:
            return done

        def signed(blob: Blob, kind: str) -> Blob:
            key = self.signing_key
            return dataclasses.replace(
                blob, signature=_codec.sign(key, blob.digest, done.run_id, done.step, kind, blob.name, blob.codec)
            )

        display = signed(done.display, "display") if done.display is not None else None
        return dataclasses.replace(done, outputs=tuple(signed(b, "value") for b in done.outputs), display=display)

    def load(self, ref: CheckpointRef) -> Any:
        """Check the payload's place, the signature (with a key configured) and the digest, then unpickle."""
        if not _codec.known_codec(ref.codec):  # first: its signature and digest could not be checked
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, _unknown_codec(ref.codec))
        if ref.file:
            misplaced = self.place.misplaced(ref.file)
            if misplaced is not None:
                raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, misplaced)
        if self.signing_key is not None:
            self._check_signature(ref)
        try:
            if not ref.file:
                return _codec.decode(ref.data, None, ref.digest, ref.codec)
            with self.place.fetch(ref.file) as file:
                return _codec.decode(None, file, ref.digest, ref.codec)
        except _codec.DigestMismatch as exc:
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, f"failed its digest check ({exc})") from None

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
        expected = _codec.sign(self.signing_key, ref.digest, ref.run_id, ref.step, ref.kind, ref.name, ref.codec)
        if expected is None or not hmac.compare_digest(ref.signature, expected):
            raise CheckpointIntegrityError(ref.run_id, ref.step, ref.name, "has a bad signature")

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Remove payloads no row points to, except young ones; returns (payloads removed, bytes freed).

        What a removal killed halfway left aside is put back first when a row points to it: otherwise
        it would look unreferenced here, and be taken once past the write grace.
        """
        self.place.recover(referenced)
        return self.place.remove_unreferenced(referenced)
