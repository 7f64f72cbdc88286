"""Noticing a torn write-ahead log: how long DuckDB's ``.wal`` was after our last commit, kept beside it.

DuckDB replays ``<store>.wal`` when it opens the file and stops, silently, at the first entry that
is cut short: a log truncated by a torn write, a failing disk or a copy made mid-write loses the
transactions at its end, committed steps included, without an error (measured with DuckDB 2.0: a
log cut by 150 bytes opens without complaint and one committed row is gone).

So after every commit the log's identity and length are written to ``<store>.walmark`` (16 bytes,
no fsync: a mark that is lost or old only makes the check miss, never cry wolf, because the mark
is written after the commit it describes). Before the next open, a log that is the same file but
shorter than its mark lost committed bytes, and the user is warned. The check cannot see a log
whose tail was overwritten in place rather than cut (DuckDB refuses most of those with a checksum
error), nor a log lost together with its mark.

It relies on DuckDB removing the log when it checkpoints (as 2.0 does, at commit or close) rather
than cutting it to zero in place, and on the mark being written again right after each commit and
close, while the writer still holds or has just let go of the file.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

from resumable.errors import StoreLogTornWarning

_FORMAT = "<QQ"  # inode, length


def _wal(path: Path) -> Path:
    return Path(str(path) + ".wal")


def mark_file(path: Path) -> Path:
    """Where the mark of the store at ``path`` is kept."""
    return Path(str(path) + ".walmark")


def record(path: Path) -> None:
    """Write the log's current identity and length as the mark (after a commit, or once the log is created)."""
    try:
        st = _wal(path).stat()
        data = struct.pack(_FORMAT, st.st_ino, st.st_size)
    except FileNotFoundError:  # checkpointed: everything is in the database file
        data = struct.pack(_FORMAT, 0, 0)  # always 16 bytes: one write, no truncate
    try:
        fd = os.open(mark_file(path), os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:  # a folder this process cannot write: nothing to compare later
        return
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def check(path: Path) -> None:
    """Before the store is opened: warn when its log is shorter than what was committed to it."""
    try:
        raw = mark_file(path).read_bytes()
        st = _wal(path).stat()
    except OSError:
        return
    if len(raw) != struct.calcsize(_FORMAT):
        return
    inode, length = struct.unpack(_FORMAT, raw)
    if st.st_ino == inode and st.st_size < length:
        warnings.warn(StoreLogTornWarning(str(path), length - st.st_size), stacklevel=4)
        record(path)  # told once
