"""Content fingerprints cheap enough to take before and after every step, to see changes made in place.

A step that calls ``rng.normal()``, ``np.add.at(counts, ...)`` or a helper that appends to a
list changes objects an earlier step produced, and the syntax of the cell cannot always show it.
The notebook front end fingerprints what a step read before the body runs and again after; a
name whose fingerprint changed is checkpointed with the step's outputs.

How a value is fingerprinted: it is pickled (protocol 5) into a hash, with large buffers (numpy
arrays, the columns of a DataFrame, pyarrow arrays) handed out of band and not copied. A buffer up
to :data:`FULL_HASH_BYTES` is hashed whole; a larger one by the sums of its 4 KB rows taken as
64-bit words, and up to :data:`COLUMN_SUMS_BYTES` also by its column sums. Any change of a value,
and any move of a value to another row, changes the row sums; they cannot see a reordering of
values *within* one 4 KB row of a buffer larger than :data:`COLUMN_SUMS_BYTES`, or changes whose
sums cancel exactly. A buffer larger than :data:`ROW_SUMS_BYTES` has only :data:`SAMPLE_BYTES` of
rows summed, spread evenly (so a 1 GB frame costs milliseconds, not a pass over memory on every
step): a change of a few values between the rows read goes unseen there, while a change to many
values, or to the object's structure (a column added, a shape changed), is seen. What pickles to
more than :data:`INBAND_LIMIT_BYTES` apart from its buffers (a list of ten million tuples) or
cannot be pickled (a generator, an open file) has no fingerprint: the caller says so, naming the
variable.

Pure: no store, no IPython.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from dataclasses import dataclass
from typing import Any

import cloudpickle

#: Buffers up to this size are hashed whole.
FULL_HASH_BYTES = 1024 * 1024
#: Buffers up to this size are summed by rows and by columns; larger ones by rows only.
COLUMN_SUMS_BYTES = 8 * 1024 * 1024
#: Buffers up to this size have every row summed; of a larger one, rows spread evenly are.
ROW_SUMS_BYTES = 64 * 1024 * 1024
#: How much of a buffer larger than :data:`ROW_SUMS_BYTES` is read.
SAMPLE_BYTES = 4 * 1024 * 1024
#: The pickled structure (everything but the large buffers) is hashed up to this many bytes.
INBAND_LIMIT_BYTES = 64 * 1024 * 1024
_ROW_WORDS = 512  # 4 KB rows of 64-bit words


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A value's content fingerprint, or why none could be taken."""

    digest: str | None
    problem: str | None = None  # "cannot be pickled (TypeError: ...)", "is too large to fingerprint"


class _Sink(io.RawIOBase):
    """Hashes what pickle writes; gives up past the limit."""

    def __init__(self, limit: int) -> None:
        self.hash = hashlib.sha1(usedforsecurity=False)
        self.left = limit

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        if size > FULL_HASH_BYTES:  # an array pickle wrote in band (a datetime column): summed, not hashed
            self.hash.update(_buffer_digest(view))
            return size
        self.left -= size
        if self.left < 0:
            raise OverflowError
        self.hash.update(view)
        return size


def _array_parts(*parts: Any) -> None:
    """Never called: the stand-in an array is fingerprinted as (its type, shape or lengths, and buffers)."""


class _Pickler(pickle.Pickler):
    """Pickles numpy and pyarrow arrays (pandas' columns) as their buffers, out of band, instead of copying them."""

    def reducer_override(self, obj: Any) -> Any:
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(obj) is numpy.ndarray and not obj.dtype.hasobject:
            flat = obj.ravel(order="K")  # a view when the array is contiguous in either order
            if flat.base is obj or flat is obj or numpy.shares_memory(flat, obj):
                # datetime arrays offer no buffer, so numpy's own pickle copies them in band: viewed as bytes
                data = pickle.PickleBuffer(flat.view(numpy.uint8))
                return (_array_parts, ("ndarray", str(obj.dtype), obj.shape, obj.strides, data))
            return NotImplemented
        pa = sys.modules.get("pyarrow")
        if pa is None:
            return NotImplemented
        pandas_arrow = getattr(sys.modules.get("pandas.core.arrays.arrow.array"), "ArrowExtensionArray", None)
        if pandas_arrow is not None and isinstance(obj, pandas_arrow):  # its own pickle copies every chunk
            return (_array_parts, (type(obj).__qualname__, str(obj.dtype), obj._pa_array))
        if not isinstance(obj, (pa.Array, pa.ChunkedArray)):
            return NotImplemented
        chunks = obj.chunks if isinstance(obj, pa.ChunkedArray) else [obj]
        parts: list[Any] = [str(obj.type)]
        for chunk in chunks:
            parts += [chunk.offset, len(chunk)]
            parts += [pickle.PickleBuffer(b) if b is not None else None for b in chunk.buffers()]
        return (_array_parts, tuple(parts))


def _buffer_digest(view: memoryview) -> bytes:
    """A buffer's fingerprint: whole for small ones, by row (and column) sums of 64-bit words for large ones."""
    size = view.nbytes
    numpy = sys.modules.get("numpy")
    if size <= FULL_HASH_BYTES or numpy is None:
        return hashlib.sha1(view, usedforsecurity=False).digest()
    words = numpy.frombuffer(view, dtype=numpy.uint64, count=size // 8)
    rows = len(words) // _ROW_WORDS
    block = words[: rows * _ROW_WORDS].reshape(rows, _ROW_WORDS)
    h = hashlib.sha1(size.to_bytes(8, "little"), usedforsecurity=False)
    if size > ROW_SUMS_BYTES:  # rows spread evenly, the last one included: SAMPLE_BYTES read, not all
        stride = -(-rows // (SAMPLE_BYTES // (_ROW_WORDS * 8)))
        h.update(block[-1:].sum(axis=1, dtype=numpy.uint64).tobytes())
        block = block[::stride]  # a view: summed where it lies, never copied
    h.update(block.sum(axis=1, dtype=numpy.uint64).tobytes())  # sums wrap around: exact, never rounded
    if size <= COLUMN_SUMS_BYTES:
        h.update(block.sum(axis=0, dtype=numpy.uint64).tobytes())
    h.update(view[rows * _ROW_WORDS * 8 :])
    return h.digest()


def fingerprint(value: object) -> Fingerprint:
    """The content fingerprint of ``value`` now (equal fingerprints: unchanged content, see the module doc)."""
    sink = _Sink(INBAND_LIMIT_BYTES)
    buffers: list[pickle.PickleBuffer] = []
    try:
        _Pickler(sink, protocol=5, buffer_callback=buffers.append).dump(value)
    except OverflowError:
        return Fingerprint(None, "is too large to fingerprint")
    except Exception:  # a lambda or a notebook class inside: cloudpickle takes those (by value)
        sink, buffers = _Sink(INBAND_LIMIT_BYTES), []
        try:
            cloudpickle.CloudPickler(sink, protocol=5, buffer_callback=buffers.append).dump(value)
        except OverflowError:
            return Fingerprint(None, "is too large to fingerprint")
        except Exception as exc:  # a generator, a lock, an open file: nothing can pickle them
            return Fingerprint(None, f"cannot be pickled ({type(exc).__name__}: {exc})")
    for buffer in buffers:
        with buffer.raw() as view:
            sink.hash.update(_buffer_digest(view))
    return Fingerprint(sink.hash.hexdigest())
