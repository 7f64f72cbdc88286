"""Where large payloads live: a folder on this machine's file system, or an object store by URL.

``Payloads`` (``checkpoints.py``) and the deletion of runs (``retention.py``) reach payloads only
through :class:`PayloadPlace`, so the two kinds of place share everything above it: serializing,
the digest and signature checks before unpickling, which rows reference what. A place writes
a payload, hands one back as a local file to map, and removes what no row references.

:class:`FolderPlace` is the folder code as it always was (fsync, rename into place, the ``.part``
and ``.removing`` rules, mapping a file without a copy); ``object_place.ObjectPlace`` is the
object store, imported only when a store names one, so fsspec is never loaded otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from resumable import _codec
from resumable._records import Blob

# An unreferenced payload younger than this may belong to a write in progress in some process:
# a large output is put in place when it is encoded, and its row is committed only once the
# step's other outputs are encoded too. Such payloads are left for a later gc.
WRITE_GRACE_S = 3600.0

# (relative name, identity, size) of a payload a deleting transaction left unreferenced. The
# identity tells whether it is still the very payload the rows pointed to (a file's inode).
Unreferenced = tuple[str, int, int]


class PayloadPlace(Protocol):
    """What ``Payloads`` and the deletion of runs need from a place that holds large payloads."""

    @property
    def where(self) -> str:
        """The place as messages show it: a folder's path or an object store's URL."""

    def write(self, name: str, value: object) -> Blob:
        """Serialize ``value``; a large payload is in place before this returns, durable unless written behind.

        Written behind (``Blob.synced`` False), its bytes may still be only in the page cache: the
        store syncs it before the transaction that records it (``Payloads.sync``).

        Raises ``_codec.EncodeFailure`` (the value), ``_codec.WriteFailure`` (a local disk) or the
        seam's ``WriteFault`` (a remote place that did not take it).
        """

    def misplaced(self, relative: str) -> str | None:
        """Why a row's payload name points outside this place (checked before anything is read), or None."""

    def fetch(self, relative: str) -> AbstractContextManager[Path]:
        """The payload as a local file to map, for as long as the context lasts.

        A missing payload raises ``_codec.DigestMismatch`` saying so; a place that cannot be
        reached raises :class:`~resumable.errors.ObjectStoreError`.
        """

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Remove payloads no row points to, except young ones (``WRITE_GRACE_S``); (removed, bytes freed)."""

    def recover(self, referenced: set[str]) -> None:
        """Repair what an earlier removal killed halfway left (before a deleting transaction reads the rows)."""

    def unreferenced(self, gone: Sequence[str], written: dict[str, datetime]) -> list[Unreferenced]:
        """Of the payloads a deleting transaction left unreferenced, those to remove once it commits.

        ``written`` maps each to when its newest row was written: a payload put in place after
        that belongs to a step elsewhere about to commit a row for it, and stays.
        """

    def remove(self, files: Sequence[Unreferenced]) -> tuple[int, int]:
        """Remove those payloads, after the deleting transaction committed; (removed, bytes freed)."""


class SharedPlace(PayloadPlace, Protocol):
    """A place several databases may be given: each store keeps to a folder of its own in it."""

    def use_namespace(self, namespace: str) -> None:
        """New payloads go under ``namespace``, and gc looks only there."""


def is_url(location: str) -> bool:
    """Whether a payload location is an fsspec URL (``s3://bucket/prefix``) rather than a folder.

    ``file://`` is a folder (the folder code, with its fsync); a one-letter scheme is a Windows drive.
    """
    scheme = urlsplit(location).scheme
    return len(scheme) > 1 and scheme != "file" and "://" in location


def folder_of(location: str) -> Path:
    """The folder a plain path or a ``file://`` URL names."""
    if location.startswith("file://"):
        location = urlsplit(location).path
    return Path(location).expanduser().absolute()


class FolderPlace:
    """Payloads as files in a folder: written, fsynced and renamed into place; mapped without a copy.

    A DuckDB file's folder is its own. A folder a server store names may be named by several
    databases too (one ``RESUMABLE_PAYLOADS`` for every store), so such a store writes and collects
    only under a subfolder of its own (``use_namespace``); rows name files relative to the folder,
    so files written before a store had one stay readable.
    """

    def __init__(self, folder: Path, *, write_behind: bool = False) -> None:
        self.folder = folder
        self.namespace: str | None = None
        # Files renamed into place before the disk has them (``_codec.encode``): a DuckDB store's,
        # which syncs each before the transaction that records it (``Payloads.sync``).
        self.write_behind = write_behind

    @property
    def where(self) -> str:
        return str(self.folder)

    @property
    def own(self) -> Path:
        """The folder this store writes into and collects in: its subfolder, or the whole folder."""
        return self.folder / self.namespace if self.namespace else self.folder

    def use_namespace(self, namespace: str) -> None:
        """The store's own subfolder: new files go there, and gc looks only there."""
        self.namespace = namespace

    def write(self, name: str, value: object) -> Blob:
        blob = _codec.encode(name, value, self.own, write_behind=self.write_behind)
        if blob.file is None or not self.namespace:
            return blob
        return dataclasses.replace(blob, file=f"{self.namespace}/{blob.file}")

    def misplaced(self, relative: str) -> str | None:
        path = Path(relative)
        folder = self.folder.resolve()
        if path.is_absolute() or ".." in path.parts or not (self.folder / path).resolve().is_relative_to(folder):
            return f"points to a file outside the store's payload folder ({relative!r})"
        return None

    @contextmanager
    def fetch(self, relative: str) -> Iterator[Path]:
        yield (self.folder / relative).resolve()  # a missing file: decode says so

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Also a ``.part`` file (a payload being written) as soon as the process named in it is gone.

        Whatever its age: that write was killed and can never be recorded.
        """
        removed = 0
        freed = 0
        if not self.own.exists():
            return removed, freed
        now = time.time()
        for file in self.own.rglob("*"):
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

    def recover(self, referenced: set[str]) -> None:
        recover_aside(self.folder, referenced)

    def unreferenced(self, gone: Sequence[str], written: dict[str, datetime]) -> list[Unreferenced]:
        files = []
        for relative in gone:
            try:
                st = (self.folder / relative).stat()
            except OSError:  # already gone: nothing to give back
                continue
            if st.st_mtime > written[relative].timestamp():
                # Written after its last row was: a step elsewhere wrote the same content into a new
                # file and renamed it over this one, and will commit a row pointing at it. It stays;
                # gc takes it once it is old and still unreferenced. (A copy of the store that kept
                # modification times, as backups do, still frees its files here.)
                continue
            files.append((relative, st.st_ino, st.st_size))
        return files

    def remove(self, files: Sequence[Unreferenced]) -> tuple[int, int]:
        return remove_files(self.folder, files)


def remove_files(payloads: Path, files: Sequence[Unreferenced]) -> tuple[int, int]:
    """Remove payload files the deleting transaction left unreferenced; returns (files, bytes).

    Payload files are named by their content, and a step in another process may be writing the
    same content right now: it renames its own new file over this name (a new inode) before
    committing a row that points to it. So each file is first moved aside and removed only when it
    is still the very file (inode) the deleted rows pointed to; otherwise it is put back.
    """
    removed = freed = 0
    for relative, inode, size in files:
        path = payloads / relative
        aside = path.with_name(f"{path.name}.{os.getpid()}.removing")
        try:
            os.rename(path, aside)  # noqa: PTH104
        except OSError:  # gone already, or not ours to move
            continue
        try:
            same = os.stat(aside).st_ino == inode  # noqa: PTH116
        except OSError:
            continue
        if same:
            os.unlink(aside)  # noqa: PTH108
            removed += 1
            freed += size
            continue
        try:
            os.link(aside, path)  # someone wrote the same content meanwhile: it stays
        except FileExistsError:  # and again since: that newest file is the one to keep
            pass
        os.unlink(aside)  # noqa: PTH108
    return removed, freed


def recover_aside(payloads: Path, referenced: set[str]) -> None:
    """Put back a file that ``remove_files`` moved aside when it was killed before it could check it.

    A ``.removing`` file whose name a row points to, with nothing at that name, is that row's
    payload: it goes back. One that nothing points to is garbage once its remover is gone.
    """
    if not payloads.exists():
        return
    for aside in [*payloads.glob("*/*.removing"), *payloads.glob("*/*/*.removing")]:  # a store's subfolder too
        name, _, rest = aside.name.rpartition(".removing")[0].rpartition(".")
        original = aside.with_name(name)
        relative = original.relative_to(payloads).as_posix()
        try:
            if relative in referenced and not original.exists():
                os.link(aside, original)
                os.unlink(aside)  # noqa: PTH108
            elif rest.isdigit() and not _pid_alive(int(rest)):
                os.unlink(aside)  # noqa: PTH108
        except OSError:  # a remover at work on it right now: left for next time
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
