r"""Serialize outputs to bytes the store can keep, and back, with a digest checked before unpickling.

Format of one payload (inline in the store or in a file beside it)::

    b"RSMP1\\n" | pickle stream | out-of-band buffer 0 | ... | buffer n-1 | footer
    footer = pickle_len (u64) | n (u32) | n * buffer_len (u64) | footer_len (u32) | b"RSMPEND\\n"

Pickle protocol 5 with out-of-band buffers lets numpy and pandas hand over their memory without a
copy; the in-band stream is written as the pickler produces it. The digest covers every byte: it
is the hash of the list of hashes of each 16 MiB chunk, computed by a helper thread while the main
thread writes, and checked by several threads at once when the payload is loaded. The codec name,
stored with each checkpoint, says which hash: ``cloudpickle-p5-blake3`` (what is written now:
BLAKE3, two to three times cheaper per byte than sha256 and as binding for the signature) or
``cloudpickle-p5`` (sha256, what earlier versions wrote; still read and checked exactly as then).
Loading a checkpoint is unpickling: only load stores you trust (docs/security.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import io
import json
import mmap
import os
import pickle
import queue
import secrets
import socket
import struct
import sys
import threading
from collections import ChainMap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import blake3
import cloudpickle

from resumable._owner import current_owner, is_alive
from resumable._records import Blob, Owner

CODEC = "cloudpickle-p5-blake3"  # what new payloads are written as
LEGACY_CODEC = "cloudpickle-p5"  # the same layout with sha256 chunk digests: still read and checked
CHUNK = 16 * 1024 * 1024
MAGIC = b"RSMP1\n"
END = b"RSMPEND\n"
INLINE_LIMIT = 256 * 1024


class EncodeFailure(Exception):
    """An output could not be pickled; the store turns this into the seam's ``EncodeError``."""

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        self.name = name
        self.type_name = type_name
        self.reason = reason
        super().__init__(name, type_name, reason)


class WriteFailure(Exception):
    """Writing a payload file failed (a full disk, a read-only file system): not the value's fault.

    ``written`` counts the bytes the payload needed up to the error (a lower bound of its size);
    the partial file is gone.
    """

    def __init__(self, name: str, path: Path, error: OSError, written: int) -> None:
        self.name = name
        self.path = path
        self.error = error
        self.written = written
        super().__init__(name, str(path), str(error), written)


class DigestMismatch(Exception):
    """The bytes read are not the bytes written; nothing was unpickled."""


class UnknownCodec(Exception):
    """A checkpoint names a payload format this version cannot check (a newer resumable's); nothing was read."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        super().__init__(codec)


class _Hash(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


def _new_blake3(data: memoryview | bytes = b"") -> _Hash:
    # Single-threaded on purpose: blake3's own threads (``max_threads``) come from a pool that a
    # forked child inherits without its threads, where hashing then waits forever; parallel checks
    # use the chunks and this module's fork-aware pool instead.
    return blake3.blake3(data)


def _new_sha256(data: memoryview | bytes = b"") -> _Hash:
    return hashlib.sha256(data)


# Each codec's chunk hash. The layout (and the pickling) is the same; only the hash differs, so a
# row's codec name says how to check its payload, and a name not listed here is refused unread.
_HASHES: dict[str, Callable[..., _Hash]] = {CODEC: _new_blake3, LEGACY_CODEC: _new_sha256}


def known_codec(codec: str) -> bool:
    """Whether this version can check (and read) a payload written with ``codec``."""
    return codec in _HASHES


def _hash_of(codec: str) -> Callable[..., _Hash]:
    try:
        return _HASHES[codec]
    except KeyError:
        raise UnknownCodec(codec) from None


def type_name(value: object) -> str:
    """``module.qualname`` of a value's type, as messages show it."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class _ChunkDigest:
    """The hash of the hashes of each ``CHUNK``-sized piece of the stream, in order (the codec's hash).

    The same digest can be checked by several threads at once (one chunk each), which is what
    makes a restore fast; writing feeds it sequentially.
    """

    def __init__(self, codec: str = CODEC) -> None:
        self.new = _hash_of(codec)
        self.chunks: list[bytes] = []
        self.current = self.new()
        self.fill = 0

    def feed(self, view: memoryview) -> None:
        offset = 0
        if self.fill:  # finish the chunk in progress
            offset = min(CHUNK - self.fill, view.nbytes)
            self._update(view[:offset])
        whole = (view.nbytes - offset) // CHUNK
        if whole >= 2:  # whole chunks of a large buffer: hashed by several threads at once
            start = offset
            self.chunks.extend(
                _pool().map(
                    lambda i: self.new(view[start + i * CHUNK : start + (i + 1) * CHUNK]).digest(), range(whole)
                )
            )
            offset += whole * CHUNK
        while offset < view.nbytes:
            take = min(CHUNK - self.fill, view.nbytes - offset)
            self._update(view[offset : offset + take])
            offset += take

    def _update(self, view: memoryview) -> None:
        self.current.update(view)
        self.fill += view.nbytes
        if self.fill == CHUNK:
            self.chunks.append(self.current.digest())
            self.current = self.new()
            self.fill = 0

    def hexdigest(self) -> str:
        chunks = self.chunks + ([self.current.digest()] if self.fill or not self.chunks else [])
        return self.new(b"".join(chunks)).hexdigest()


WRITEBACK_CHUNK = 32 * 1024 * 1024
WRITE_PIECE = 32 * 1024 * 1024  # a multiple of CHUNK: each piece's whole chunks are hashed in parallel


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(WRITE): start writing a range to disk now, without waiting for it.

    Started while the rest of the payload is still being pickled and written, the disk works in
    parallel, and the final fsync only waits for the tail (measured here: 1 GB with fsync at
    1.0-1.1 GB/s plain, 1.5 GB/s with early write-back). Elsewhere it is simply not used.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE; a failure only loses the head start

    return start_writeback


_START_WRITEBACK = _load_sync_file_range()
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL  # noqa: PLW0603 - one small pool per process, created on first large payload
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="resumable-hash")
    return _POOL


def shutdown() -> None:
    """Join the hashing threads (at exit, before the interpreter finalizes)."""
    global _POOL
    pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True)


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's hashing threads: it makes its own pool when it needs one.

    The inherited pool would believe its threads idle and queue work nobody runs: a child hashing
    a large payload (a ``multiprocessing`` worker loading a checkpoint) would wait forever.
    """
    global _POOL  # noqa: PLW0603 - the one pool of this process
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def digest_of(view: memoryview, codec: str) -> str:
    """The chunked digest of bytes in memory by ``codec``'s hash, chunks hashed in parallel (both release the GIL).

    UnknownCodec when this version does not know the codec.
    """
    new = _hash_of(codec)
    n = max(1, -(-view.nbytes // CHUNK))
    if n == 1:
        return new(new(view).digest()).hexdigest()
    parts = _pool().map(lambda i: new(view[i * CHUNK : (i + 1) * CHUNK]).digest(), range(n))
    return new(b"".join(parts)).hexdigest()


class _PayloadWriter:
    """Hashes and counts what the pickler writes.

    Small payloads stay in memory (they go inline into the store). Past the inline limit the bytes
    move to a temporary file in the payload folder, and hashing moves to a helper thread, so that
    writing and hashing use both cores instead of taking turns.
    """

    def __init__(self, payload_dir: Path, *, durable: bool = True, fsync: bool = True, codec: str = CODEC) -> None:
        self.payload_dir = payload_dir
        self.durable = durable  # start write-back early; not for a file only staged for upload
        self.fsync = durable and fsync  # and wait for it at the end (``write_behind``: the group commit does)
        self.digest = _ChunkDigest(codec)
        self.size = 0
        self.memory: io.BytesIO | None = io.BytesIO()
        self.file: io.FileIO | None = None
        self.path: Path | None = None
        # Bounded, so the pickler's frames waiting to be hashed never add up to a copy of the value.
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=32)
        self._hasher: threading.Thread | None = None
        self._hash_error: BaseException | None = None
        self._written_back = 0
        self._writeback: queue.SimpleQueue[tuple[int, int] | None] | None = None  # the helper's requests
        self.needed = 0  # bytes the payload needed so far when a write of ours failed

    def write(self, data: bytes | memoryview | pickle.PickleBuffer) -> int:
        view = memoryview(data).cast("B")
        if self.memory is not None:
            if self.size + view.nbytes <= INLINE_LIMIT:
                self.digest.feed(view)
                self.memory.write(view)
                self.size += view.nbytes
                return view.nbytes
            self._checked(self._spill, view)
        # A large buffer (a column) goes in pieces: the disk starts on the first piece while the
        # next is copied, and the hasher hashes a piece while the writer copies the next one.
        before = self.size
        for start in range(0, view.nbytes, WRITE_PIECE):
            piece = view[start : start + WRITE_PIECE]
            self._queue.put(piece)
            try:
                self._checked(self._write_all, piece)
            except _OwnWriteError:
                self.needed = before + view.nbytes  # the whole buffer, as when it was written at once
                raise
            self.size += piece.nbytes
            if _START_WRITEBACK is not None and self.durable and self.size - self._written_back >= WRITEBACK_CHUNK:
                self._start_writeback()
        return view.nbytes

    def _start_writeback(self) -> None:
        """Start the disk on what was written since the last call.

        Written behind (no fsync here), the request is made by a helper thread: sync_file_range
        blocks while the disk's queue is full, and the writer would then wait for the disk after
        all. The helper holds a descriptor of its own, so closing the file never cuts it short.
        """
        assert self.file is not None and _START_WRITEBACK is not None
        start, length = self._written_back, self.size - self._written_back
        self._written_back = self.size
        if self.fsync:
            _START_WRITEBACK(self.file.fileno(), start, length)
            return
        if self._writeback is None:
            ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
            fd = os.dup(self.file.fileno())
            thread = threading.Thread(
                target=_writeback_loop, args=(fd, ranges), name="resumable-writeback", daemon=True
            )
            thread.start()
            self._writeback = ranges
        self._writeback.put((start, length))

    def _checked(self, write: Callable[[memoryview], None], view: memoryview) -> None:
        """Run one of our own file writes; an OSError is the disk's, with the bytes the payload needed so far."""
        try:
            write(view)
        except OSError as exc:
            self.needed = self.size + view.nbytes
            raise _OwnWriteError(exc) from exc

    def _write_all(self, view: memoryview) -> None:
        assert self.file is not None
        written = 0
        while written < view.nbytes:  # FileIO.write may write less than asked
            written += self.file.write(view[written:]) or 0

    def _spill(self, _view: memoryview) -> None:
        tmp = self.payload_dir / "tmp"
        make_private_dir(tmp)
        # Named after the writing process, so gc can tell a killed write's leftover from a live one.
        self.path = tmp / f"{part_prefix()}{secrets.token_hex(8)}.part"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = io.FileIO(fd, "wb", closefd=True)
        assert self.memory is not None
        self.file.write(self.memory.getbuffer())
        self.memory = None
        hasher = threading.Thread(target=self._hash_loop, name="resumable-hash-writer", daemon=True)
        hasher.start()
        self._hasher = hasher  # only once started: finish() joins it (a Ctrl-C inside start() leaves it idle)

    def _hash_loop(self) -> None:
        # Keeps draining after an error so the writer never blocks on a full queue.
        while (view := self._queue.get()) is not None:
            if self._hash_error is None:
                try:
                    self.digest.feed(view)
                except BaseException as exc:  # reported by finish()
                    self._hash_error = exc

    def finish(self, ok: bool) -> None:
        """Wait for the hasher; fsync and close a spilled file; remove it when the write failed."""
        if ok and self.durable and self.file is not None and _START_WRITEBACK is not None:
            # The disk starts on the tail now, while the hasher catches up, instead of at the fsync.
            self._start_writeback()
        if self._writeback is not None:
            self._writeback.put(None)  # the helper ends (and closes its descriptor) once it has asked for all
        if self._hasher is not None:
            self._queue.put(None)
            self._hasher.join()
            if self._hash_error is not None and ok:
                raise self._hash_error
        if self.file is None:
            if not ok and self.path is not None:  # interrupted between creating the file and opening it
                self.path.unlink(missing_ok=True)
            return
        failed = not ok
        try:
            if ok and self.fsync:
                os.fsync(self.file.fileno())
        except BaseException:
            failed = True
            raise
        finally:
            try:
                self.file.close()
            finally:
                if failed and self.path is not None:
                    self.path.unlink(missing_ok=True)


def _writeback_loop(fd: int, ranges: queue.SimpleQueue[tuple[int, int] | None]) -> None:
    """Ask the disk to start on each range written, then close this helper's own descriptor."""
    try:
        while (item := ranges.get()) is not None:
            if _START_WRITEBACK is not None:
                _START_WRITEBACK(fd, *item)
    finally:
        os.close(fd)


class _OwnWriteError(Exception):
    """An OSError of our own payload file, told apart from one the value's pickling raised."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        super().__init__(error)


def _view_as(array: Any, dtype: str) -> Any:
    """Rebuild a datetime or timedelta array pickled as its 64-bit integers (``_Pickler``).

    Part of the payload format: payloads written since this function exists name it, so it stays.
    """
    return array.view(dtype)


def _reduce_ndarray(array: Any) -> Any:
    """A contiguous datetime or timedelta array as its integers (out of band); any other as numpy pickles it.

    A dtype carrying metadata keeps numpy's own pickle, which preserves it.
    """
    dtype = array.dtype
    if dtype.kind in "mM" and dtype.metadata is None and (array.flags.c_contiguous or array.flags.f_contiguous):
        return _view_as, (array.view(f"{dtype.byteorder}i{dtype.itemsize}"), dtype.str)
    return array.__reduce_ex__(5)


class _Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]
    """cloudpickle, with numpy datetime and timedelta arrays handed over out of band.

    numpy pickles those dtypes in band (a copy of the column inside the pickle stream: 148 MB of a
    1 GB frame with one datetime column, held in memory while it is written). Viewed as integers
    of the same width they go out of band like any other column, and ``_view_as`` views them back.
    The reducer sits in the dispatch table, looked up by exact type, so subclasses of ndarray keep
    numpy's own pickle.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # read by the C pickler when it is initialised: set first
            # A view in front of cloudpickle's table (itself a view of copyreg's): reducers registered
            # later still count, and building it costs nothing per checkpoint (a merged copy: 30 us).
            self.dispatch_table = ChainMap({numpy.ndarray: _reduce_ndarray}, cloudpickle.CloudPickler.dispatch_table)
        super().__init__(*args, **kwargs)


def _write_payload(value: object, name: str, out: _PayloadWriter) -> None:
    buffers: list[pickle.PickleBuffer] = []
    out.write(MAGIC)
    start = out.size
    try:
        _Pickler(out, protocol=5, buffer_callback=buffers.append).dump(value)  # type: ignore[arg-type]
    except _OwnWriteError:
        raise  # the disk's fault, not the value's
    except Exception as exc:  # pickle raises TypeError, PicklingError, AttributeError...
        raise EncodeFailure(name, type_name(value), f"{type(exc).__name__}: {exc}") from exc
    pickle_len = out.size - start
    lengths = []
    for buf in buffers:
        raw = buf.raw()
        lengths.append(raw.nbytes)
        out.write(raw)
    footer = struct.pack(f"<QI{len(lengths)}Q", pickle_len, len(lengths), *lengths)
    out.write(footer + struct.pack("<I", len(footer)) + END)


SIGNATURE_VERSION = 2
_SIGNATURE_PREFIX = f"v{SIGNATURE_VERSION}:"


def sign(key: bytes | None, digest: str, run_id: str, step: str, kind: str, name: str, codec: str) -> str | None:
    """The HMAC binding a digest, and the codec that says how to check it, to its place (run, step, kind, output name).

    None without a key. Version 1 signed the digest alone, so a validly signed row copied to
    another step or output verified there too. The place is encoded as a JSON list, so no two
    places share a message. A codec other than the legacy one is part of the message (a list one
    longer), so a row whose codec name is changed no longer verifies; the legacy codec's message
    is the one it was always signed with, so those signatures still verify.
    """
    if key is None:
        return None
    fields: list[object] = ["resumable-checkpoint", SIGNATURE_VERSION, run_id, step, kind, name, digest]
    if codec != LEGACY_CODEC:
        fields.append(codec)
    message = json.dumps(fields)
    return _SIGNATURE_PREFIX + hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_version(signature: str) -> int:
    """The scheme a stored signature was made with (1: the digest alone, written before version 2)."""
    head, sep, _ = signature.partition(":")
    if sep and head.startswith("v") and head[1:].isdigit():
        return int(head[1:])
    return 1


def encode(
    name: str,
    value: object,
    payload_dir: Path,
    *,
    staged: bool = False,
    write_behind: bool = False,
    codec: str | None = None,
) -> Blob:
    """Serialize ``value``; small results stay in memory, large ones land in ``payload_dir``.

    The blob is not signed yet: its signature binds it to a run and step, which the store knows
    only when it records the blob (``Payloads.bind``).

    A file is written under a temporary name, fsynced and renamed to its digest before the caller
    records it, so a row never points to a missing or partial file. ``write_behind``: the file is
    renamed without waiting for the disk (write-back is started as it is written) and the blob
    says so (``synced`` False); whoever commits a row pointing at it calls :func:`sync_payload`
    first. A file of that name already there (the same bytes, maybe a committed step's) is never
    replaced by unsynced bytes (``_link_new``): that one write is synced first, as without
    write-behind.
    ``staged``: the file is only a copy on its way to an object store, which is where its
    durability comes from; it is left under its temporary name (unique to this write, so no
    other process renames over it) and not fsynced, and the blob names that temporary file.
    ``codec``: :data:`CODEC` (read when called), but for tests writing what an earlier version wrote.
    """
    codec = codec or CODEC
    out = _PayloadWriter(payload_dir, durable=not staged, fsync=not write_behind, codec=codec)
    ok = False
    try:
        try:
            _write_payload(value, name, out)
            ok = True
        finally:
            out.finish(ok)
    except _OwnWriteError as exc:
        raise WriteFailure(name, payload_dir, exc.error, max(out.needed, out.size)) from exc.error
    except OSError as exc:  # the final fsync (a full disk may only show there)
        raise WriteFailure(name, payload_dir, exc, out.size) from exc
    digest = out.digest.hexdigest()
    if out.memory is not None:
        return Blob(name, codec, digest, out.size, out.memory.getvalue(), None, None)
    assert out.path is not None
    if staged:
        return Blob(name, codec, digest, out.size, None, out.path.relative_to(payload_dir).as_posix(), None)
    relative = f"{digest[:2]}/{digest}.bin"
    final = payload_dir / relative
    synced = not write_behind
    try:
        make_private_dir(final.parent)
        if not synced and not _link_new(out.path, final):  # the name is taken: sync ours, then rename over it
            fsync_path(out.path)
            synced = True
        if synced:
            out.path.replace(final)
            fsync_path(final.parent)
    except OSError as exc:
        out.path.unlink(missing_ok=True)
        raise WriteFailure(name, payload_dir, exc, out.size) from exc
    return Blob(name, codec, digest, out.size, None, relative, None, synced)


def _link_new(path: Path, final: Path) -> bool:
    """Give ``path`` the name ``final`` only if no file has it (atomically), and drop the old name; False: not done.

    A plain rename would replace a file another process just renamed there, maybe already recorded
    by a committed row, with bytes not on disk yet.
    """
    try:
        os.link(path, final)
    except OSError:  # taken, or a file system without hard links: the synced way
        return False
    path.unlink()
    return True


def sync_payload(path: Path) -> None:
    """Put a payload written behind (``encode(write_behind=True)``) and its name on disk: before a row points at it."""
    fsync_path(path)
    fsync_path(path.parent)


def check_payload(path: Path, digest: str, size: int, codec: str) -> str | None:
    """Sync a payload written behind and check it holds the bytes its digest names (by ``codec``): None, or the fault.

    What a replay asks of a dead process's unsynced payload: the process's death keeps the page
    cache, a power cut may not (the name can survive without the bytes). The bytes are read from
    the disk, not the page cache: the dead process's fsync may have met a write-back error, which
    Linux reports once, so this fsync returns 0 while the cache still holds bytes the disk never
    got. Once synced its pages are clean, and ``POSIX_FADV_DONTNEED`` drops clean pages no one maps,
    so the read that follows comes from the device (O_DIRECT would too, but needs aligned buffers
    and is refused by some file systems).
    """
    if not known_codec(codec):
        return f"its payload format {codec!r} is not one this version of resumable knows"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return f"its payload file {path.name} is missing"
    try:
        found = os.fstat(fd).st_size
        if found != size:
            return f"its payload file {path.name} holds {found} bytes, not {size}"
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
    finally:
        os.close(fd)
    if mapped is None:
        return f"its payload file {path.name} is empty"
    try:
        with memoryview(mapped) as view:
            if digest_of(view, codec) != digest:
                return f"its payload file {path.name} no longer matches its digest"
    finally:
        mapped.close()
    fsync_path(path.parent)
    return None


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents private to the user (0700), whatever the umask."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        folder.chmod(0o700)


def part_prefix() -> str:
    """``PID-START-`` of this process: the start of its temporary payload files' names."""
    me = current_owner()
    return f"{me.pid}-{me.started:.2f}-"


def part_writer_alive(name: str) -> bool | None:
    """Whether the process that named a ``.part`` file still runs; None when the name does not say."""
    pid, _, rest = name.partition("-")
    started, sep, _ = rest.partition("-")
    if not sep or not pid.isdigit():
        return None
    try:
        owner = Owner(socket.gethostname(), int(pid), float(started), None)
    except ValueError:
        return None
    return is_alive(owner)


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to the disk by its path: both go through one read-only descriptor."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def decode(blob_bytes: bytes | None, file: Path | None, digest: str, codec: str) -> Any:
    """Read a payload, check its digest by ``codec``'s hash, and only then unpickle it.

    UnknownCodec, before anything is read, when this version does not know ``codec``. A payload
    file is mapped copy-on-write rather than read: its out-of-band buffers (numpy and
    pandas memory) become the restored objects' memory without a copy, and stay writable. Payload
    files are never modified once renamed into place, so the mapping stays valid.
    """
    _hash_of(codec)
    if blob_bytes is not None:
        view = memoryview(blob_bytes)
        if digest_of(view, codec) != digest:
            raise DigestMismatch("its bytes no longer match their digest")
        return _unpickle(view, copy_buffers=True)
    assert file is not None
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        raise DigestMismatch(f"its payload file {file.name} is missing") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise DigestMismatch("its payload file is empty")
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    view = memoryview(mapped)
    if digest_of(view, codec) != digest:
        raise DigestMismatch("its bytes no longer match their digest")
    return _unpickle(view, copy_buffers=False)


def _read_footer(view: memoryview) -> tuple[int, list[int]]:
    tail = bytes(view[-(len(END) + 4) :])
    if len(tail) != len(END) + 4 or not tail.endswith(END):
        raise DigestMismatch("its bytes no longer match their digest")
    (footer_len,) = struct.unpack("<I", tail[:4])
    footer = bytes(view[-(len(END) + 4 + footer_len) : -(len(END) + 4)])
    try:
        pickle_len, n = struct.unpack("<QI", footer[:12])
        lengths = list(struct.unpack(f"<{n}Q", footer[12 : 12 + 8 * n]))
    except struct.error:
        raise DigestMismatch("its bytes no longer match their digest") from None
    return pickle_len, lengths


def _unpickle(view: memoryview, *, copy_buffers: bool) -> Any:
    pickle_len, lengths = _read_footer(view)
    start = len(MAGIC)
    stream = view[start : start + pickle_len]
    offset = start + pickle_len
    buffers: list[Any] = []
    for n in lengths:
        part = view[offset : offset + n]
        buffers.append(bytearray(part) if copy_buffers else part)
        offset += n
    return pickle.loads(stream, buffers=buffers)
