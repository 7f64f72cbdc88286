"""A per-process, append-only log of deferred step completions: what makes a quick step durable as it returns.

While a process owns a run, a quick step's start and completion are committed to DuckDB in groups
(``journal.py``), up to a window later. So that a crash inside the window cannot take a returned
step back, each deferred completion is first appended here, with one ``write`` of a framed record
(magic, length, crc32, payload) before the step returns: from then on it survives the death of the
process (the bytes are in the kernel's page cache). The group commit then applies the steps to
DuckDB and records, in the same transaction, how many of this log's records it has applied; the
log is fsynced when its window falls due, so a power cut costs at most one window.

Logs live beside the store, one folder (0700) with files (0600) named after their process
(``host_pid_started_generation.log``). A log whose process has died is replayed into DuckDB by the
next process that opens a transaction on the store (``replay.py``) and then removed. A torn last
record (a crash in the middle of a ``write``) fails its checksum and is dropped: its step had not
returned to its caller.

This module holds no SQL: it only writes, reads and names the files.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from resumable._owner import is_alive
from resumable._records import Owner

MAGIC = b"RSL1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32 of the payload
# A log is rotated (a new file started) at a group commit once it holds this much; the old file
# is removed when that commit has applied it, so logs stay small under a steady stream of steps.
ROTATE_BYTES = 1 << 20
_NAME = re.compile(r"^(?P<host>[A-Za-z0-9.-]+)_(?P<pid>\d+)_(?P<started>\d+(?:\.\d+)?)_(?P<gen>\d+)\.log$")


def folder_for(store_path: Path) -> Path:
    """The folder beside the store that holds its processes' completion logs."""
    return store_path.with_name(store_path.name + ".journal")


def _host(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", name) or "-"


def process_key(owner: Owner) -> str:
    """What names one process's logs (and its row of applied records in the store)."""
    return f"{_host(owner.host)}_{owner.pid}_{owner.started:.2f}"


def frame(payload: bytes) -> bytes:
    """One record as written: a header the reader checks, then the payload."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> tuple[list[bytes], bool]:
    """Every intact record of a log, in order, and whether a damaged tail was dropped.

    Reading stops at the first record whose header or checksum does not hold: a crash in the
    middle of a ``write`` tears only the last record, and that step never returned to its caller.
    """
    data = path.read_bytes()
    out: list[bytes] = []
    at = 0
    while at < len(data):
        if len(data) - at < _HEADER.size:
            return out, True
        magic, length, crc = _HEADER.unpack_from(data, at)
        payload = data[at + _HEADER.size : at + _HEADER.size + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            return out, True
        out.append(payload)
        at += _HEADER.size + length
    return out, False


@dataclass(frozen=True, slots=True)
class LogFile:
    """One log file and the process that wrote it."""

    path: Path
    key: str  # the process (``process_key``)
    host: str
    pid: int
    started: float
    generation: int


def parse(path: Path) -> LogFile | None:
    """The log file's writer, or None for a file that is not a completion log."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    host, pid, started = match["host"], int(match["pid"]), float(match["started"])
    return LogFile(path, f"{host}_{pid}_{match['started']}", host, pid, started, int(match["gen"]))


def dead_logs(folder: Path, me: str) -> dict[str, list[LogFile]]:
    """Logs of processes on this host that no longer run, by process, oldest generation first.

    A log of another host cannot be judged from here and is left alone, as its runs are.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder yet (nothing was ever deferred), or one this user cannot read
        return {}
    here = _host(socket.gethostname())
    found: dict[str, list[LogFile]] = {}
    alive: dict[str, bool] = {}
    for entry in entries:
        log = parse(Path(entry.path))
        if log is None or log.key == me or log.host != here:
            continue
        if log.key not in alive:
            alive[log.key] = is_alive(Owner(socket.gethostname(), log.pid, log.started))
        if not alive[log.key]:
            found.setdefault(log.key, []).append(log)
    for logs in found.values():
        logs.sort(key=lambda f: f.generation)
    return found


class CompletionLog:
    """This process's log for one store: appended to by quick steps, rotated and removed by group commits.

    Not thread-safe on its own: the store calls :meth:`append` under its journal lock and the
    other methods under its connection lock with the journal lock held where they touch the file
    being appended to.
    """

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.folder = folder
        self.key = process_key(owner)
        self.records = 0  # records appended by this process so far (numbers them)
        self._fd: int | None = None
        self._size = 0
        self._generation = 0
        self._synced_folder = False
        self._path: Path | None = None
        self._files: list[Path] = []  # every file of this process not yet removed

    def _open(self) -> int:
        if self._fd is None:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._generation += 1
            path = self.folder / f"{self.key}_{self._generation}.log"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._path, self._size, self._synced_folder = path, 0, False
            self._files.append(path)
        return self._fd

    @property
    def next_number(self) -> int:
        """The number the next record carries (records are numbered from 1 per process)."""
        return self.records + 1

    def append(self, payload: bytes) -> int:
        """Write one record (numbered ``next_number``) with one ``write``; on error nothing is left half-written."""
        fd = self._open()
        data = frame(payload)
        try:
            written = os.write(fd, data)
        except BaseException:
            self._undo(fd)
            raise
        if written != len(data):  # a short write (a full disk): undo it, so the log stays readable
            self._undo(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._size += len(data)
        self.records += 1
        return self.records

    def _undo(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            pass

    def sync(self) -> None:
        """Make what was appended so far survive a power cut (the file, and the folder entry once)."""
        if self._fd is None:
            return
        os.fsync(self._fd)
        if not self._synced_folder:
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._synced_folder = True

    def rotate_if_large(self) -> None:
        """Start a new file at the next append once this one has grown past ``ROTATE_BYTES``."""
        if self._fd is not None and self._size >= ROTATE_BYTES:
            os.close(self._fd)
            self._fd = None

    def applied_all(self) -> None:
        """Every record so far is in DuckDB: remove the files it was in, except the one being appended to."""
        keep = [self._path] if self._fd is not None else []
        for path in self._files:
            if path not in keep:
                path.unlink(missing_ok=True)
        self._files = list(keep)  # type: ignore[arg-type]

    def close(self) -> None:
        """At the end (everything applied): close and remove this process's files."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.applied_all()

    def forget_inherited(self) -> None:
        """In a forked child: the parent's file is the parent's; never write to it or remove it."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._files = []
        self._path = None
