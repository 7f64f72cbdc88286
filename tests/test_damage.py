"""Damaged store and payload files (issue 11 §7): every damage ends in our error or the right value.

Hypothesis picks where the bytes of a payload file or of the database file are flipped, cut or
appended to. Loading then either returns exactly what was stored or raises one of our errors
(``CheckpointIntegrityError`` for a payload whose bytes fail their digest; ``StoreError`` subclasses
for a database DuckDB cannot read): never a foreign traceback, never a wrong value, and never
anything unpickled from bytes that failed their check. Payload damage never costs another step its
checkpoint. Bounded like ``test_properties.py`` (``RESUMABLE_HYPOTHESIS_EXAMPLES``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resumable
from resumable._store import forget_all
from resumable.errors import CheckpointIntegrityError, StoreError

EXAMPLES = max(5, int(os.environ.get("RESUMABLE_HYPOTHESIS_EXAMPLES", "60")) // 3)
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
BIG = bytes(range(256)) * 4096  # 1 MiB: past the inline limit, so it is a payload file
SMALL = {"total": 42, "rows": list(range(50))}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a large checkpoint in a payload file and a small one inline, closed."""
    store = tmp_path_factory.mktemp("pristine") / "store.duckdb"
    pipe = resumable.Pipeline("damage", store=store)
    with pipe.run(run_id="r1") as run:
        run.step("big", lambda: BIG)
        run.step("small", lambda: SMALL)
    forget_all()
    return store


def _copy(pristine: Path, into: Path) -> Path:
    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(pristine.parent, into)
    return into / pristine.name


def _damage(path: Path, how: str, at: float, byte: int) -> None:
    data = bytearray(path.read_bytes())
    where = min(int(at * len(data)), len(data) - 1)
    if how == "flip":
        data[where] ^= byte or 1
    elif how == "cut":
        del data[where:]
    else:  # "append"
        data += bytes([byte]) * (where % 64 + 1)
    path.write_bytes(bytes(data))


DAMAGE = st.tuples(st.sampled_from(["flip", "cut", "append"]), st.floats(0, 1), st.integers(0, 255))


@BOUNDED
@given(damage=DAMAGE)
def test_a_damaged_payload_file_is_refused_before_unpickling_and_costs_no_other_step(
    pristine: Path, tmp_path: Path, damage: tuple[str, float, int]
) -> None:
    store = _copy(pristine, tmp_path / "copy")
    (payload,) = [p for p in (store.parent / "store.duckdb.payloads").rglob("*.bin")]
    _damage(payload, *damage)
    try:
        try:
            value = resumable.load("r1", "big", store=store)
        except CheckpointIntegrityError as exc:
            assert str(exc).startswith("output 'return' of step 'big' (run 'r1') ")
            assert str(exc).endswith("Recompute it with: resumable invalidate r1 big")
        else:
            assert value == BIG, "damaged bytes were loaded as a value"
        assert resumable.load("r1", "small", store=store) == SMALL
    finally:
        forget_all()


@BOUNDED
@given(damage=DAMAGE)
def test_a_damaged_database_file_gives_our_error_or_the_stored_values(
    pristine: Path, tmp_path: Path, damage: tuple[str, float, int]
) -> None:
    store = _copy(pristine, tmp_path / "copy")
    _damage(store, *damage)
    try:
        for step, expected in (("big", BIG), ("small", SMALL)):
            try:
                value = resumable.load("r1", step, store=store)
            except StoreError as exc:  # our own, naming the store or the checkpoint
                assert str(store) in str(exc) or f"step '{step}'" in str(exc), str(exc)
            else:
                assert value == expected, f"step {step!r} loaded a wrong value from a damaged store"
    finally:
        forget_all()
