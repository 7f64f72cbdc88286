"""Checkpoint bytes: round trips of real data, in-memory and in files, and refused tampering."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resumable import _codec


def _round_trip(value: object, tmp_path: Path) -> object:
    blob = _codec.encode("x", value, tmp_path)
    return _codec.decode(blob.inline, tmp_path / blob.file if blob.file else None, blob.digest, blob.codec)


def test_large_frame_spans_several_chunks_and_comes_back_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame of int, float, datetime, category and string columns over many chunks restores equal."""
    monkeypatch.setattr(_codec, "CHUNK", 1024 * 1024)  # many chunks from a small frame
    n = 200_000
    frame = pd.DataFrame(
        {
            "i": np.arange(n),
            "f": np.linspace(0, 1, n),
            "t": pd.date_range("2026-01-01", periods=n, freq="s"),
            "c": pd.Categorical(np.array(["a", "b", "c"])[np.arange(n) % 3]),
            "s": [f"order-{k}" for k in range(n)],
        }
    )
    blob = _codec.encode("frame", frame, tmp_path)
    assert blob.file is not None and blob.size > 4 * _codec.CHUNK
    restored = _codec.decode(None, tmp_path / blob.file, blob.digest, blob.codec)
    pd.testing.assert_frame_equal(restored, frame)
    assert not list(tmp_path.glob("tmp/*"))


def test_restored_arrays_are_writable_and_private(tmp_path: Path) -> None:
    """A restored array can be modified in place without changing the stored checkpoint."""
    array = np.arange(3_000_000, dtype=np.int64)
    blob = _codec.encode("a", array, tmp_path)
    first = _codec.decode(None, tmp_path / str(blob.file), blob.digest, blob.codec)
    first[:10] = -1
    second = _codec.decode(None, tmp_path / str(blob.file), blob.digest, blob.codec)
    assert second[0] == 0
    np.testing.assert_array_equal(second, array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(600_000).astype("datetime64[ns]"),
        np.arange(600_000).astype("datetime64[ns]").reshape(1000, 600).T,  # Fortran order
        np.arange(600_000).astype("datetime64[us]").reshape(1000, 600)[:, ::2],  # not contiguous: in band
        np.arange(300_000).astype(">m8[s]"),  # big-endian timedelta
        np.array([], dtype="datetime64[D]"),
    ],
)
def test_datetime_arrays_come_back_equal_without_a_copy_in_the_pickle_stream(tmp_path: Path, array: np.ndarray) -> None:
    """Datetime and timedelta arrays restore with their dtype, shape, order and values, and writable.

    A contiguous one travels out of band (numpy alone would copy it into the pickle stream, which
    is held in memory while it is written): the stream stays small whatever the array's size.
    """
    blob = _codec.encode("t", array, tmp_path)
    restored = _codec.decode(blob.inline, tmp_path / blob.file if blob.file else None, blob.digest, blob.codec)
    assert isinstance(restored, np.ndarray)
    assert (restored.dtype, restored.shape, restored.flags.f_contiguous) == (
        array.dtype,
        array.shape,
        array.flags.f_contiguous,
    )
    np.testing.assert_array_equal(restored, array)
    assert restored.flags.writeable
    if blob.file is not None:
        pickle_len, lengths = _codec._read_footer(memoryview((tmp_path / blob.file).read_bytes()))
        contiguous = array.flags.c_contiguous or array.flags.f_contiguous
        assert (pickle_len < 1000, sum(lengths) == array.nbytes) == (contiguous, contiguous)


@pytest.mark.parametrize("value", [None, 0, "text", {"nested": [1, 2.5, ("t",)]}, np.zeros(10)])
def test_small_values_stay_inline(tmp_path: Path, value: object) -> None:
    """Small outputs live in the database row, not in a file, and restore equal."""
    blob = _codec.encode("v", value, tmp_path)
    assert blob.inline is not None and blob.file is None
    restored = _codec.decode(blob.inline, None, blob.digest, blob.codec)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(restored, value)
    else:
        assert restored == value


def test_truncated_payload_file_is_refused(tmp_path: Path) -> None:
    """A payload cut short is reported as a digest failure, not unpickled."""
    blob = _codec.encode("a", np.ones(1_000_000), tmp_path)
    path = tmp_path / str(blob.file)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(_codec.DigestMismatch):
        _codec.decode(None, path, blob.digest, blob.codec)


def test_unpicklable_value_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A value that fails half-way through a large write removes its partial file."""

    class Bad:
        def __reduce__(self) -> tuple[object, ...]:
            raise TypeError("cannot pickle Bad")

    with pytest.raises(_codec.EncodeFailure) as excinfo:
        _codec.encode("v", [np.ones(1_000_000), Bad()], tmp_path)
    assert excinfo.value.type_name == "list"
    assert not list(tmp_path.glob("tmp/*"))


@pytest.mark.parametrize("codec", [_codec.CODEC, _codec.LEGACY_CODEC])
def test_digest_does_not_depend_on_how_the_bytes_were_written(monkeypatch: pytest.MonkeyPatch, codec: str) -> None:
    """Pickle frames, huge buffers or odd slices: a payload's digest is the same, so it always verifies."""
    import random

    monkeypatch.setattr(_codec, "CHUNK", 64 * 1024)
    data = memoryview(bytes(random.Random(7).randbytes(7 * _codec.CHUNK + 12_345)))
    expected = _codec.digest_of(data, codec)
    rng = random.Random(11)
    for _ in range(20):
        digest = _codec._ChunkDigest(codec)
        offset = 0
        while offset < data.nbytes:
            n = rng.choice([1, 100, 4096, _codec.CHUNK - 7, 3 * _codec.CHUNK + 5, 5 * _codec.CHUNK])
            digest.feed(data[offset : offset + n])
            offset += n
        assert digest.hexdigest() == expected


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_hashes_a_large_payload_after_its_parent_did() -> None:
    """The parent's hashing threads are not the child's: the child checks a 40 MB payload's digest too."""
    data = memoryview(bytes(40 * 1024 * 1024))  # several chunks: hashed by the pool
    expected = _codec.digest_of(data, _codec.CODEC)
    pid = os.fork()
    if pid == 0:  # the child: a hang ends by the alarm's signal, a wrong digest or an error by status 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(20)
            os._exit(0 if _codec.digest_of(data, _codec.CODEC) == expected else 1)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
