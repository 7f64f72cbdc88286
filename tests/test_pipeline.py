"""The Python API: steps that restore, retry, time out and carry stable idempotency keys."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import resumable
from resumable import StepState


def test_completed_step_is_restored_not_called_again(store_location: str, tmp_path: Path) -> None:
    """A second pass over a completed step returns the stored value and does not run the body."""
    calls = tmp_path / "calls"
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step
    def load() -> pd.DataFrame:
        with open(calls, "a") as f:
            f.write("x")
        return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

    with pipe.run(run_id="r1"):
        first = load()
    with pipe.run(run_id="r1"):
        second = load()
    pd.testing.assert_frame_equal(first, second)
    assert calls.read_text() == "x"
    pd.testing.assert_frame_equal(resumable.load("r1", "load", store=store_location), first)


def test_recorded_failure_is_retried_then_completed(store_location: str) -> None:
    """A step that failed on one pass runs again on the next and completes (attempts count both)."""
    calls = 0
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step
    def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("reset by peer")
        return 7

    with pytest.raises(ConnectionError), pipe.run(run_id="r1"):
        flaky()
    with pipe.run(run_id="r1") as run:
        assert flaky() == 7
    status = run.status("flaky")
    assert status.attempts == 2
    assert status.state is StepState.COMPLETED


def test_retries_with_backoff_then_step_failed(store_location: str) -> None:
    """Retries exhausted: StepFailed names the attempts and the last error; the step is failed."""
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step(retries=2, backoff=0.01)
    def always() -> None:
        raise ConnectionError("reset by peer")

    with pytest.raises(resumable.StepFailed) as excinfo, pipe.run(run_id="r1") as run:
        always()
    assert str(excinfo.value) == (
        "step 'always' (run 'r1') failed after 3 attempts; last error: ConnectionError: reset by peer"
    )
    assert isinstance(excinfo.value.__cause__, ConnectionError)
    status = run.status("always")
    assert (status.state, status.attempts) == (StepState.FAILED, 3)
    assert "ConnectionError: reset by peer" in (status.traceback or "")
    assert "in always" in (status.traceback or "")
    assert "_engine.py" not in (status.traceback or "")  # starts at the user's own frame
    transitions = [e.transition for e in run.store.list_events("r1", "always")]
    assert transitions == ["start", "error", "retry", "error", "retry", "error"]


def test_exception_outside_retry_on_fails_at_once(store_location: str) -> None:
    """Only the listed exceptions are retried; others propagate after one attempt."""
    calls = 0
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step(retries=5, backoff=0.01, retry_on=ConnectionError)
    def bad() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad order")

    with pytest.raises(ValueError, match="bad order"), pipe.run(run_id="r1"):
        bad()
    assert calls == 1


def test_timeout_fails_the_attempt_with_step_timeout(store_location: str) -> None:
    """An attempt past its timeout raises StepTimeout and is recorded as failed."""
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step(timeout=0.2)
    def slow() -> None:
        time.sleep(5)

    started = time.monotonic()
    with (
        pytest.raises(resumable.StepTimeout) as excinfo,
        pipe.run(run_id="r1") as run,
    ):
        slow()
    assert str(excinfo.value) == "step 'slow' ran longer than its timeout of 0.2 s"
    assert time.monotonic() - started < 5  # the attempt ended before its body would have, however loaded the machine
    assert run.status("slow").state is StepState.FAILED


def test_async_steps_restore_retry_and_time_out(store_location: str) -> None:
    """Async step functions checkpoint and retry like plain ones; their timeout cancels them."""
    pipe = resumable.Pipeline("p", store=store_location)
    calls = 0

    @pipe.step(retries=1, backoff=0.01)
    async def fetch(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first")
        await asyncio.sleep(0)
        return x * 2

    @pipe.step(timeout=0.1)
    async def hang() -> None:
        await asyncio.sleep(5)

    async def main() -> int:
        with pipe.run(run_id="r1"):
            return await fetch(21)

    assert asyncio.run(main()) == 42
    assert asyncio.run(main()) == 42
    assert calls == 2

    async def hanging() -> None:
        with pipe.run(run_id="r1"):
            await hang()

    with pytest.raises(resumable.StepTimeout):
        asyncio.run(hanging())


def test_run_step_refuses_an_async_function_and_run_astep_awaits_it(store_location: str) -> None:
    """run.step of an async function raises our error naming await run.astep before calling it (no coroutine is
    made, so no 'never awaited' warning); await run.astep checkpoints the awaited result and restores it."""
    pipe = resumable.Pipeline("p", store=store_location)
    calls = 0

    async def fetch(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return x + 1

    async def main() -> tuple[int, int]:
        with pipe.run(run_id="r1") as run:
            with pytest.raises(resumable.AsyncStepError) as refused:
                run.step("a", fetch, 1)
            assert str(refused.value) == (
                "step 'a': fetch is an async function, so run.step would only create its coroutine; it was not "
                "called. Inside async code, use await run.astep('a', fetch, ...) instead (or decorate the function "
                "with '@pipe.step' and await its call)."
            )
            with pytest.raises(resumable.AsyncStepError) as returned:
                run.step("b", lambda: fetch(5))
            assert str(returned.value) == (
                "step 'b': <lambda> returned an awaitable instead of a result, so nothing was checkpointed. Inside "
                "async code, use await run.astep('b', <lambda>, ...) instead (or decorate the function with "
                "'@pipe.step' and await its call)."
            )
            return await run.astep("a", fetch, 1), await run.astep("c", lambda: fetch(10), retries=1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine never awaited would warn: none may
        assert asyncio.run(main()) == (2, 11)
        assert calls == 2  # fetch(5) was made only to be closed: it never ran
        assert asyncio.run(main()) == (2, 11)
    assert calls == 2  # the second pass restored both
    assert resumable.load("r1", "a", store=store_location) == 2
    assert pipe.run(run_id="r1").status("b").state is StepState.FAILED


def test_idempotency_key_is_stable_per_step_and_distinct_between_runs(store_location: str) -> None:
    """Retries see one key; another step or run sees another; outside a step it is an error."""
    pipe = resumable.Pipeline("p", store=store_location)
    seen: list[str] = []

    @pipe.step(retries=2, backoff=0.01)
    def charge() -> str:
        seen.append(resumable.idempotency_key())
        if len(seen) < 3:
            raise ConnectionError("retry me")
        return seen[-1]

    @pipe.step
    def email() -> str:
        return resumable.idempotency_key()

    with pipe.run(run_id="r1"):
        key = charge()
        other = email()
    with pipe.run(run_id="r2"):
        seen.clear()
        key2 = charge()
    assert seen[0] == key2
    assert len(set(seen)) == 1
    assert len({key, other, key2}) == 3
    with pytest.raises(resumable.NotInStepError) as excinfo:
        resumable.idempotency_key()
    assert str(excinfo.value) == (
        "idempotency_key() was called outside a step. Call it inside a '%%durable_step' cell "
        "or a function decorated with '@pipe.step'."
    )


def test_run_step_passes_arguments_and_numbers_repeated_calls(store_location: str) -> None:
    """run.step forwards arguments; calling one step twice in a run checkpoints each call."""
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step
    def double(x: int) -> int:
        return 2 * x

    with pipe.run(run_id="r1") as run:
        assert run.step("add", lambda a, b: a + b, 2, b=3, retries=1) == 5
        assert [double(1), double(2)] == [2, 4]
    assert [s.step for s in run.steps()] == ["add", "double", "double#2"]
    with pipe.run(run_id="r1"):
        assert [double(1), double(2)] == [2, 4]


def test_step_outside_a_run_is_a_clear_error(store_location: str) -> None:
    """Calling a decorated step with no active run says how to fix it."""
    pipe = resumable.Pipeline("p", store=store_location)

    @pipe.step
    def load() -> int:
        return 1

    with pytest.raises(resumable.NoActiveRunError) as excinfo:
        load()
    assert str(excinfo.value) == (
        "step 'load' of pipeline 'p' was called outside a run. Call it inside 'with pipe.run():' "
        "so its result is checkpointed."
    )


def test_run_id_comes_from_environment_or_is_generated(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a run id a new run is generated; RESUMABLE_RUN_ID joins a supervisor's run."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run() as a, pipe.run() as b:
        pass
    assert a.run_id != b.run_id
    monkeypatch.setenv("RESUMABLE_RUN_ID", "nightly-7")
    with pipe.run() as c:
        pass
    assert c.run_id == "nightly-7"
    with pytest.raises(resumable.RunExistsError) as excinfo, pipe.run(run_id="nightly-7", new=True):
        pass
    assert str(excinfo.value) == (
        "run 'nightly-7' of pipeline 'p' already exists, so it cannot start as a new run. "
        "Resume it (leave out new=True), or choose another run id."
    )
    with pipe.run(new=True) as d:  # RESUMABLE_RUN_ID wins over new: a supervisor restarts into its run
        pass
    assert d.run_id == "nightly-7"
    monkeypatch.delenv("RESUMABLE_RUN_ID")
    with pipe.run() as e:  # the Python API never resumes a run it was not named
        pass
    assert e.run_id not in {a.run_id, b.run_id, "nightly-7"}


def test_a_run_resumed_with_other_parameters_is_refused(store_location: str) -> None:
    """A run keeps the parameters it started with; other values are named, old and new."""
    pipe = resumable.Pipeline("p", store=store_location)
    with pipe.run(run_id="r1", params={"region": "eu", "limit": 3}):
        pass
    with pytest.raises(resumable.ParameterMismatchError) as excinfo, pipe.run(run_id="r1", params={"region": "us"}):
        pass
    assert str(excinfo.value) == (
        "run 'r1' started with other parameters:\n"
        "  - limit: started with 3, now missing\n"
        "  - region: started with 'eu', now 'us'\n"
        "Resume it with its original parameters, or start a new run with new=True."
    )


def test_a_retry_and_a_contended_store_leave_the_users_random_sequence_alone(store_path: Path) -> None:
    """A seeded ``random`` gives the same draws whether or not a step was retried or the store was busy:
    resumable's jitter comes from a generator of its own."""
    import random
    import subprocess
    import sys

    pipe = resumable.Pipeline("p", store=store_path)
    failures = [ConnectionError("reset by peer")]

    @pipe.step(retries=1, backoff=0.001)
    def flaky() -> int:
        if failures:
            raise failures.pop()
        return 7

    random.seed(5)
    expected = [random.random() for _ in range(3)]
    random.seed(5)
    with pipe.run(run_id="r1"):
        assert flaky() == 7
    assert pipe.store.get_step("r1", "flaky").attempts == 2  # type: ignore[union-attr]
    assert [random.random() for _ in range(3)] == expected
    # Another process holds the store file: opening it waits with jitter until the file is free.
    resumable._store.forget_all()  # this process lets go of the file first, or the holder cannot open it
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\n"
         "print('held', flush=True)\ntime.sleep(0.4)\ncon.close()", str(store_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    random.seed(5)
    assert [r.run_id for r in resumable.Pipeline("p", store=store_path).store.list_runs(None, 5)] == ["r1"]
    assert holder.wait(timeout=30) == 0
    assert [random.random() for _ in range(3)] == expected
