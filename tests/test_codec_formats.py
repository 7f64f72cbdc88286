"""Payload formats: BLAKE3 digests for new checkpoints, sha256 ones (``cloudpickle-p5``) still read and checked.

Each checkpoint row names its codec, and the codec says which hash its digest was made with;
a load checks the payload by its own row's codec, and refuses a codec it does not know unread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
import store_sql

import resumable
from resumable import _codec
from resumable._store import forget_all, open_store

KEY = "k3y-for-format-tests"
BIG = np.arange(200_000, dtype=np.int64)  # 1.6 MB: a payload file


def _by_hand(data: bytes, new: Any, chunk: int) -> str:
    """The digest as documented: the hash of the concatenated hashes of each chunk."""
    parts = [new(data[i : i + chunk]).digest() for i in range(0, max(len(data), 1), chunk)]
    return str(new(b"".join(parts)).hexdigest())


HASHES = [("cloudpickle-p5-blake3", blake3.blake3), ("cloudpickle-p5", hashlib.sha256)]


@pytest.mark.parametrize(("codec", "new"), HASHES)
def test_each_codec_digest_is_its_hash_of_the_chunk_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, new: Any
) -> None:
    """Known answers: the legacy digest is exactly sha256 of the chunks' sha256s; the new one the same with BLAKE3."""
    monkeypatch.setattr(_codec, "CHUNK", 256 * 1024)
    blob = _codec.encode("a", BIG, tmp_path, codec=codec)
    assert blob.codec == codec and blob.file is not None
    data = (tmp_path / blob.file).read_bytes()
    assert blob.digest == _by_hand(data, new, 256 * 1024)
    small = _codec.encode("s", "small", tmp_path, codec=codec)
    assert small.inline is not None and small.digest == _by_hand(small.inline, new, 256 * 1024)


def _write(store_location: str, codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run r1 with a large (file) and a small (inline) output, its payloads written with ``codec``."""
    with monkeypatch.context() as patch:
        patch.setattr(_codec, "CODEC", codec)  # the writer reads it when called: the old format, as 0.x wrote it
        pipe = resumable.Pipeline("p", store=store_location)
        with pipe.run(run_id="r1") as run:
            run.step("big", lambda: BIG)
            run.step("small", lambda: "value of small")
    forget_all()


def _sql(store_location: str, statement: str, params: list[Any] | None = None) -> list[Any]:
    return store_sql.execute(store_location, statement, params or [])


def _flip_a_byte(store_location: str, step: str) -> None:
    """Change one byte in the middle of the step's payload (its file, or its row's inline bytes)."""
    (file,) = _sql(store_location, "SELECT file FROM checkpoints WHERE step = ?", [step])[0]
    if file is None:
        data = bytearray(_sql(store_location, "SELECT data FROM checkpoints WHERE step = ?", [step])[0][0])
        data[len(data) // 2] ^= 1
        _sql(store_location, "UPDATE checkpoints SET data = ? WHERE step = ?", [bytes(data), step])
        return
    folder = open_store(store_location).payload_dir
    forget_all()
    assert folder is not None
    path = folder / file
    path.chmod(0o600)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))


def _refused(store_location: str, step: str) -> str:
    with pytest.raises(resumable.CheckpointIntegrityError) as excinfo:
        resumable.load("r1", step, store=store_location)
    forget_all()
    return str(excinfo.value)


def _digest_failure(step: str) -> str:
    return (
        f"output 'return' of step '{step}' (run 'r1') failed its digest check (its bytes no longer match their "
        f"digest) and was not loaded. Recompute it with: resumable invalidate r1 {step}"
    )


@pytest.mark.parametrize("codec", ["cloudpickle-p5", "cloudpickle-p5-blake3"])
def test_old_and_new_checkpoints_restore_and_a_tampered_one_is_refused_alike(
    store_location: str, monkeypatch: pytest.MonkeyPatch, codec: str
) -> None:
    """A sha256 checkpoint of an earlier version restores (signed and verified as then); so does a new one.

    A byte changed in either, in a file or inline, is refused with the same message, unpickled never.
    """
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)
    _write(store_location, codec, monkeypatch)
    rows = _sql(store_location, "SELECT step, codec, signature FROM checkpoints ORDER BY step")
    assert [(r[0], r[1]) for r in rows] == [("big", codec), ("small", codec)]
    assert all(r[2].startswith("v2:") for r in rows)
    if codec == "cloudpickle-p5":  # signed exactly as an earlier version signed it: the same message, no codec
        digest = _sql(store_location, "SELECT digest FROM checkpoints WHERE step = 'big'")[0][0]
        message = json.dumps(["resumable-checkpoint", 2, "r1", "big", "value", "return", digest])
        assert rows[0][2] == "v2:" + hmac.new(KEY.encode(), message.encode(), hashlib.sha256).hexdigest()
    np.testing.assert_array_equal(resumable.load("r1", "big", store=store_location), BIG)
    assert resumable.load("r1", "small", store=store_location) == "value of small"
    forget_all()
    for step in ("big", "small"):
        _flip_a_byte(store_location, step)
        assert _refused(store_location, step) == _digest_failure(step)


def test_a_changed_codec_name_does_not_let_a_payload_pass(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another codec named in a row is refused: by the signature with a key (it binds the codec), else by the digest.

    Without a key, the payload is then hashed with the other algorithm, whose digest of the same
    bytes differs: a tampered payload would need a sha256 digest equal to a BLAKE3 one.
    """
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)
    _write(store_location, _codec.CODEC, monkeypatch)
    _sql(store_location, "UPDATE checkpoints SET codec = ?", [_codec.LEGACY_CODEC])
    for step in ("big", "small"):
        assert _refused(store_location, step) == (
            f"output 'return' of step '{step}' (run 'r1') has a bad signature and was not loaded. "
            f"Recompute it with: resumable invalidate r1 {step}"
        )
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY")
    for step in ("big", "small"):
        assert _refused(store_location, step) == _digest_failure(step)
    _sql(store_location, "UPDATE checkpoints SET codec = ?", [_codec.CODEC])
    np.testing.assert_array_equal(resumable.load("r1", "big", store=store_location), BIG)


def test_an_unknown_codec_is_refused_unread(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row naming a format this version does not know (a newer one's) is refused before its bytes are read."""
    _write(store_location, _codec.CODEC, monkeypatch)
    _sql(store_location, "UPDATE checkpoints SET codec = 'cloudpickle-p5-zz9' WHERE step = 'big'")
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", KEY)  # refused for its format first, not for its signature
    assert _refused(store_location, "big") == (
        "output 'return' of step 'big' (run 'r1') is in a payload format this version of resumable cannot check "
        "('cloudpickle-p5-zz9': a newer version's, which upgrading resumable loads, or the row was changed) "
        "and was not loaded. Recompute it with: resumable invalidate r1 big"
    )


@pytest.mark.parametrize("codec", [_codec.CODEC, _codec.LEGACY_CODEC])
def test_a_replay_checks_a_payload_written_behind_by_its_rows_codec(tmp_path: Path, codec: str) -> None:
    """What a replay asks of a dead process's unsynced payload: its bytes checked by the codec its row names."""
    blob = _codec.encode("a", BIG, tmp_path, write_behind=True, codec=codec)
    assert blob.file is not None and not blob.synced
    path = tmp_path / blob.file
    assert _codec.check_payload(path, blob.digest, blob.size, codec) is None
    other = _codec.LEGACY_CODEC if codec == _codec.CODEC else _codec.CODEC
    wrong = f"its payload file {path.name} no longer matches its digest"
    assert _codec.check_payload(path, blob.digest, blob.size, other) == wrong
    assert _codec.check_payload(path, blob.digest, blob.size, "cloudpickle-p5-zz9") == (
        "its payload format 'cloudpickle-p5-zz9' is not one this version of resumable knows"
    )
    path.chmod(0o600)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    assert _codec.check_payload(path, blob.digest, blob.size, codec) == wrong
