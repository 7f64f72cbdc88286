"""This user's private folder under ``TMPDIR`` for checkpoint bytes that only pass through this machine.

Two kinds of store use it, ``resumable-spill-UID`` under the temporary folder:

- a store whose large payloads live in an object store stages each one there on its way to the
  bucket, and downloads each one there before it is unpickled (``object_place.py``);
- a PostgreSQL store with no payload location serializes a large output there before its bytes go
  into the row (:class:`SpillPlace`).

The temporary folder is shared by every user of the machine, and the bytes there are a
checkpoint: others must be able neither to read them nor to swap them before they are stored or
unpickled. So the folder (and its ``tmp``) is checked private on every use, not only when it is
created, and the decision is made here, once, for both: a folder of ours that others may write to
is made 0700 again; a symbolic link or a folder of another user is refused. A folder that cannot
be written, whose disk is full, or that takes a file past ``ulimit -f``, is this machine's
problem, never the bucket's nor the database's. Each is :class:`~resumable.errors.StagingFolderError`,
whose way out is ``TMPDIR``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import tempfile
from pathlib import Path

from resumable import _codec
from resumable._records import Blob
from resumable._store import faults
from resumable._store.places import FolderPlace
from resumable._units import human_size
from resumable.errors import StagingFolderError

# What the local disk says when a file cannot be written there; a bucket's answer never maps to these.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
LOCAL_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_RETRY = "then try again"


def staging_folder() -> Path:
    """This user's private folder for payloads on their way to or from a remote place, or into a row."""
    return Path(tempfile.gettempdir()) / f"resumable-spill-{os.getuid()}"


def first_line(exc: BaseException) -> str:
    """An exception as a message quotes it: its type and the first line of what it says."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def private_folder(folder: Path, url: str, *, loading: bool, spill: bool = False) -> Path:
    """The folder's ``tmp``, both checked private to this user (made so when they are ours).

    Checked on every use: a folder that already exists may have been made by someone else (the
    temporary folder is shared) or opened up since, and a payload copy in a folder others can
    write to could be read, or swapped before it is unpickled or stored. ``url`` is the store the
    bytes belong to, ``spill`` whether it is a PostgreSQL store's spill (else an object store's staging).
    """
    tmp = folder / "tmp"
    for each in (folder, tmp):
        try:
            if each == folder:
                _codec.make_private_dir(each)  # the parents too, when TMPDIR names a new folder
            else:
                with contextlib.suppress(FileExistsError):
                    each.mkdir(mode=0o700)
            problem = _not_private(each)
        except OSError as exc:
            raise unusable(each, exc, url, loading=loading, spill=spill) from exc
        if problem is not None:
            threat = "read or swapped before it is stored" if spill else "swapped before it is unpickled"
            raise StagingFolderError(
                str(each),
                url,
                f"{problem}, so a checkpoint copy there could be {threat}",
                f"Remove it (resumable makes a private one), or set TMPDIR to a folder of your own, {_RETRY}.",
                loading=loading,
                spill=spill,
            )
    return tmp


def stage(folder: Path, url: str, name: str, value: object, *, spill: bool) -> Blob:
    """Serialize ``value`` into the checked folder, unsynced under a name of its own (small ones stay in memory).

    A local disk's refusal (full, read-only, ``ulimit -f``) is StagingFolderError, not the store's fault.
    """
    private_folder(folder, url, loading=False, spill=spill)
    try:
        return _codec.encode(name, value, folder, staged=True)
    except _codec.WriteFailure as exc:
        if exc.error.errno not in LOCAL_ONLY:
            raise
        raise unusable(folder, exc.error, url, loading=False, spill=spill) from exc.error


def unusable(
    folder: Path, exc: OSError, url: str, *, loading: bool, spill: bool = False, needed: int | None = None
) -> StagingFolderError:
    """The folder's disk refused a write: full, over this process's file size limit, or not writable."""
    reason = first_line(exc)
    if exc.errno == errno.EFBIG:
        problem = f"took a file past this process's file size limit ('ulimit -f') ({reason})"
        fix = f"Raise the limit ('ulimit -f unlimited'), {_RETRY}."
    elif exc.errno in DISK_FULL:
        sizes = [f"{human_size(needed)} needed"] if needed else []
        free = faults.free_bytes(folder)
        if free is not None:
            sizes.append(f"{human_size(free)} free")
        problem = f"has no room on its disk ({reason}{'; ' if sizes else ''}{', '.join(sizes)})"
        fix = f"Make room on that disk, or set TMPDIR to a folder on a disk with room, {_RETRY}."
    else:
        problem = f"cannot be written ({reason})"
        fix = f"Make it writable by you, or set TMPDIR to a writable folder of your own, {_RETRY}."
    return StagingFolderError(str(folder), url, problem, fix, loading=loading, spill=spill)


def _not_private(folder: Path) -> str | None:
    """Why ``folder`` is not this user's alone, or None; a folder of ours open to others is made private first."""
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode):
        return f"is a symbolic link (to '{folder.readlink()}'), which anyone could have planted in a shared folder"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.getuid():
        return f"belongs to another user (uid {info.st_uid}), who can change what is in it"
    if info.st_mode & 0o077:
        folder.chmod(0o700)
    return None


class SpillPlace(FolderPlace):
    """A PostgreSQL store's large outputs when it names no payload location: serialized here, then into the row.

    Rows of such a store never name a file, so everything but writing is the folder's (and finds
    nothing). The file is written under a name unique to this write and not fsynced: the row's
    commit is what makes the bytes durable, and two processes spilling the same bytes at once
    never rename over, or remove, each other's file.
    """

    def __init__(self, folder: Path, location: str) -> None:
        super().__init__(folder)
        self.location = location

    def write(self, name: str, value: object) -> Blob:
        blob = stage(self.folder, self.location, name, value, spill=True)
        if blob.file is None:
            return blob
        spilled = self.folder / blob.file
        try:
            data = spilled.read_bytes()
        finally:
            spilled.unlink(missing_ok=True)
        return dataclasses.replace(blob, inline=data, file=None)
