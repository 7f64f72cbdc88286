r"""Serialize outputs to bytes the store can keep, and back, with a digest checked before unpickling.

Format of one payload (inline in the store or in a file beside it)::

    b"RSMP1\\n" | pickle stream | out-of-band buffer 0 | ... | buffer n-1 | footer
    footer = pickle_len (u64) | n (u32) | n * buffer_len (u64) | footer_len (u32) | b"RSMPEND\\n"

Pickle protocol 5 with out-of-band buffers lets numpy and pandas hand over their memory without a
copy; the in-band stream is written as the pickler produces it. The digest (sha256) covers every
byte and is computed while writing, so a large payload is read from memory exactly once.
Loading a checkpoint is unpickling: only load stores you trust (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import cloudpickle

from resumable._records import Blob

CODEC = "cloudpickle-p5"
MAGIC = b"RSMP1\n"
END = b"RSMPEND\n"
INLINE_LIMIT = 256 * 1024


class EncodeFailure(Exception):
    """An output could not be pickled; the engine turns this into UnserializableOutputError."""

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        self.name = name
        self.type_name = type_name
        self.reason = reason
        super().__init__(name, type_name, reason)


class DigestMismatch(Exception):
    """The bytes read are not the bytes written; nothing was unpickled."""


def type_name(value: object) -> str:
    """``module.qualname`` of a value's type, as messages show it."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class _PayloadWriter:
    """Hashes and counts what the pickler writes.

    Small payloads stay in memory (they go inline into the store); past the inline limit the bytes
    move to a temporary file in the payload folder.
    """

    def __init__(self, payload_dir: Path) -> None:
        self.payload_dir = payload_dir
        self.hash = hashlib.sha256()
        self.size = 0
        self.memory: io.BytesIO | None = io.BytesIO()
        self.file: io.FileIO | None = None
        self.path: Path | None = None

    def write(self, data: bytes | memoryview | pickle.PickleBuffer) -> int:
        view = memoryview(data).cast("B")
        if self.memory is not None and self.size + view.nbytes > INLINE_LIMIT:
            self._spill()
        self.hash.update(view)
        (self.file or self.memory).write(view)  # type: ignore[union-attr]
        self.size += view.nbytes
        return view.nbytes

    def _spill(self) -> None:
        tmp = self.payload_dir / "tmp"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = tmp / f"{secrets.token_hex(8)}.part"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = io.FileIO(fd, "wb", closefd=True)
        assert self.memory is not None
        self.file.write(self.memory.getbuffer())
        self.memory = None

    def finish(self, ok: bool) -> None:
        """Fsync and close a spilled file; remove it when the write failed."""
        if self.file is None:
            return
        try:
            if ok:
                os.fsync(self.file.fileno())
        finally:
            self.file.close()
            if not ok and self.path is not None:
                self.path.unlink(missing_ok=True)


def _write_payload(value: object, name: str, out: _PayloadWriter) -> None:
    buffers: list[pickle.PickleBuffer] = []
    out.write(MAGIC)
    start = out.size
    try:
        cloudpickle.CloudPickler(out, protocol=5, buffer_callback=buffers.append).dump(value)  # type: ignore[arg-type]
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


def sign(digest: str, key: bytes | None) -> str | None:
    """The HMAC of a digest under the configured key, or None when no key is configured."""
    if key is None:
        return None
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def encode(name: str, value: object, payload_dir: Path, key: bytes | None) -> Blob:
    """Serialize ``value``; small results stay in memory, large ones land fsynced in ``payload_dir``.

    A file is written under a temporary name, fsynced and renamed to its digest before the caller
    records it, so a row never points to a missing or partial file.
    """
    out = _PayloadWriter(payload_dir)
    ok = False
    try:
        _write_payload(value, name, out)
        ok = True
    finally:
        out.finish(ok)
    digest = out.hash.hexdigest()
    signature = sign(digest, key)
    if out.memory is not None:
        return Blob(name, CODEC, digest, out.size, out.memory.getvalue(), None, signature)
    assert out.path is not None
    relative = f"{digest[:2]}/{digest}.bin"
    final = payload_dir / relative
    final.parent.mkdir(mode=0o700, exist_ok=True)
    out.path.replace(final)
    _fsync_dir(final.parent)
    return Blob(name, CODEC, digest, out.size, None, relative, signature)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def decode(blob_bytes: bytes | None, file: Path | None, digest: str) -> Any:
    """Read a payload, check its digest, and only then unpickle it."""
    if blob_bytes is not None:
        if hashlib.sha256(blob_bytes).hexdigest() != digest:
            raise DigestMismatch("its bytes no longer match their digest")
        return _unpickle_memory(memoryview(blob_bytes))
    assert file is not None
    try:
        f = open(file, "rb")  # noqa: SIM115 - closed below, read in parts
    except FileNotFoundError:
        raise DigestMismatch(f"its payload file {file.name} is missing") from None
    with f:
        return _unpickle_file(f, digest)


def _read_footer(read_tail: Callable[[int], bytes]) -> tuple[int, list[int]]:
    tail = read_tail(len(END) + 4)
    if len(tail) != len(END) + 4 or not tail.endswith(END):
        raise DigestMismatch("its bytes no longer match their digest")
    (footer_len,) = struct.unpack("<I", tail[:4])
    footer = read_tail(len(END) + 4 + footer_len)[:footer_len]
    try:
        pickle_len, n = struct.unpack("<QI", footer[:12])
        lengths = list(struct.unpack(f"<{n}Q", footer[12 : 12 + 8 * n]))
    except struct.error:
        raise DigestMismatch("its bytes no longer match their digest") from None
    return pickle_len, lengths


def _unpickle_memory(view: memoryview) -> Any:
    pickle_len, lengths = _read_footer(lambda n: bytes(view[-n:]))
    start = len(MAGIC)
    stream = view[start : start + pickle_len]
    offset = start + pickle_len
    buffers = []
    for n in lengths:
        buffers.append(bytearray(view[offset : offset + n]))
        offset += n
    return pickle.loads(stream, buffers=buffers)


def _unpickle_file(f: IO[bytes], digest: str) -> Any:
    size = f.seek(0, os.SEEK_END)

    def read_tail(n: int) -> bytes:
        f.seek(max(0, size - n))
        return f.read(n)

    pickle_len, lengths = _read_footer(read_tail)
    f.seek(0)
    hasher = hashlib.sha256()
    head = f.read(len(MAGIC) + pickle_len)
    hasher.update(head)
    buffers = []
    for n in lengths:
        buf = bytearray(n)
        f.readinto(buf)  # type: ignore[attr-defined]
        hasher.update(buf)
        buffers.append(buf)
    hasher.update(f.read())
    if hasher.hexdigest() != digest:
        raise DigestMismatch("its bytes no longer match their digest")
    return pickle.loads(memoryview(head)[len(MAGIC) :], buffers=buffers)
