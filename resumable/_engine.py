"""Executing one step: restore or run, retries with backoff and jitter, timeouts, transitions.

Both front ends (the Python API and the notebook magics) drive a step through :class:`StepCall`.
Its phases are plain methods so the sync and async drivers below differ only in how they call the
body. Unlike DBOS, a recorded error is not replayed: a failed step runs again on the next pass, and
its stored traceback feeds the panel.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from resumable import _step_report
from resumable._context import StepContext, entered
from resumable._inputs import Input
from resumable._records import Blob, Owner, StepPolicy
from resumable._states import StepState
from resumable._store import Begin, Completion, EncodeError, StepRequest, Store, WriteFault
from resumable._tracebacks import user_traceback
from resumable._why import Why
from resumable.errors import (
    KEY,
    TOKEN,
    LeaseLostError,
    ResumableError,
    StepChangedError,
    StepFailed,
    StepTimeout,
    StoreRemovedError,
    StoreWriteError,
    UnserializableOutputError,
    write_error_class,
)

# Jitter from a generator of our own: the global one belongs to the user's notebook (a seeded
# ``random`` must give the same draws whether or not a retry happened in between).
_JITTER = random.Random()

MAX_BACKOFF_S = 300.0
RETURN = "return"  # the output name of a Python-API step's return value (no cell can bind it)


@dataclass(frozen=True, slots=True)
class StepEvent:
    """What listeners (the panel) hear when a step changes state in this process."""

    pipeline: str
    run_id: str
    step: str
    state: StepState
    attempt: int


_listeners: list[Callable[[StepEvent], None]] = []


def add_listener(listener: Callable[[StepEvent], None]) -> None:
    """Call ``listener`` on every state change made by this process."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Callable[[StepEvent], None]) -> None:
    """Stop calling ``listener``."""
    if listener in _listeners:
        _listeners.remove(listener)


if _step_report.token() is not None:  # a kernel of ``resumable execute``: tell the executor each change
    add_listener(_step_report.on_step_event)
    _step_report.listening()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one call of a step gave: its outputs, restored from the store or just executed."""

    restored: bool
    values: Mapping[str, Any]
    display: Any  # the recorded output (prints, rich results); None when there was none
    finished_at: datetime | None  # when the restored checkpoint was written; None when executed now
    digests: Mapping[str, str]  # each output's checkpoint digest: the fingerprint readers of it record
    begin: Begin  # the store's decision (why it ran again, whether an effect step was held)


@dataclass
class StepCall:
    """One invocation of a step, from the store's decision to the recorded outcome."""

    store: Store
    pipeline: str
    run_id: str
    step: str
    owner: Owner
    policy: StepPolicy = field(default_factory=StepPolicy)
    source: str | None = None
    source_digest: str | None = None
    reads: tuple[str, ...] = ()
    force: bool = False
    fix_hint: Callable[[str], str] = lambda name: "Return a value that cloudpickle can serialize."
    extra_options: dict[str, Any] = field(default_factory=dict)  # stored with the step (the magic's line)
    display: Any = None  # what the body showed; stored with the outputs when ``succeed`` gets none
    errors: list[str] = field(default_factory=list)
    inputs: Mapping[str, Input] = field(default_factory=dict)
    effect: bool = False  # declared side-effecting (``--effect``, ``effect=True``)
    rerun: bool = False  # a deliberate rerun (``--rerun``, ``run.rerun()``)
    attempt: int = 0
    stale: tuple[str, ...] = ()
    key_generation: int = 1
    why: Why | None = None  # why a completed step executes again (the store's finding)
    digests: dict[str, str] = field(default_factory=dict)  # of the outputs of the last successful attempt
    _marked: bool = False  # this attempt has told the store it has side effects

    def begin(self) -> Begin:
        """Ask the store whether to restore or execute; when executing, the step is now running."""
        request = StepRequest(
            self.run_id, self.step, self.owner, self.source, self.source_digest, self.reads,
            {"retries": self.policy.retries, "backoff": self.policy.backoff, "timeout": self.policy.timeout,
             **self.extra_options},
            self.force, self.inputs, self.effect, self.rerun,
        )  # fmt: skip
        try:
            begin = self.store.begin_step(request)
        except ResumableError:
            raise  # refused (owned, changed, bad rerun): nothing was started
        except WriteFault as fault:  # a full or read-only disk: nothing was started
            raise self._write_error(fault, starting=True) from fault.__cause__
        except BaseException as exc:
            self._undo_start(exc)
            raise
        self.attempt = begin.attempt
        self.stale = begin.stale
        self.key_generation = begin.key_generation
        self.why = begin.why if begin.action == "execute" else None
        self._marked = begin.effect  # a known effect step starts behind the fence (never deferred)
        if begin.action == "execute":
            self._notify(StepState.RUNNING)
        return begin

    def restore(self, begin: Begin) -> StepOutcome:
        """Load every output of a completed step (digests checked before unpickling)."""
        values: dict[str, Any] = {}
        digests: dict[str, str] = {}
        display = None
        for ref in begin.checkpoints:
            value = self.store.load_value(ref)
            if ref.kind == "display":
                display = value
            else:
                values[ref.name] = value
                digests[ref.name] = ref.digest
        return StepOutcome(True, values, display, begin.finished_at, digests, begin)

    def executed(self, begin: Begin, outputs: Mapping[str, Any]) -> StepOutcome:
        """The outcome of an attempt that completed now."""
        return StepOutcome(False, outputs, self.display, None, dict(self.digests), begin)

    def context(self) -> StepContext:
        """The context the body sees (``idempotency_key()`` reads it)."""
        return StepContext(
            self.pipeline, self.run_id, self.step, self.attempt, self.key_generation, self.asks_key, self.asks_token
        )

    def asks_key(self) -> None:
        """The body asks for an idempotency key: the step has side effects, recorded before the key exists.

        A full or read-only disk refuses that record: the key is not handed out (StoreFullError,
        StoreReadOnlyError), so no side effect rests on a step the store does not know has one.
        """
        if not self._marked:
            try:
                self.store.mark_effect(self.run_id, self.step, self.owner)
            except WriteFault as fault:
                raise self._write_error(fault, asked=KEY) from fault.__cause__
            self._marked = True

    def asks_token(self) -> int | None:
        """The body asks for its fencing token, which rests on the step's start being stored (written first)."""
        try:
            return self.store.fencing_token(self.run_id, self.step)
        except WriteFault as fault:
            raise self._write_error(fault, asked=TOKEN) from fault.__cause__

    def succeed(
        self, outputs: Mapping[str, Any], duration_s: float, display: Any = None, reads: tuple[str, ...] | None = None
    ) -> None:
        """Serialize every output, then mark the step completed in the transaction that stores them.

        Every way out leaves the step completed (when the read-back says the commit happened) or
        failed with the reason in the event log: a value that cannot be pickled, a full or
        read-only disk, a Ctrl-C while a large output is written or during COMMIT. A Ctrl-C
        always propagates, also when the step completed, so the program stops.
        """
        if display is None:
            display = self.display
        try:
            blobs = [self._encode(name, value) for name, value in outputs.items()]
            # An empty display (a cell that showed nothing) is not stored: one row less per step.
            display_blob = self._encode("<display>", display) if display else None
        except UnserializableOutputError as exc:
            self._record_failure(exc, duration_s, None)  # no traceback: the message says it all
            raise
        except WriteFault as fault:
            full = self._write_error(fault)
            self._record_failure(full, duration_s, None)
            raise full from fault.__cause__
        except BaseException as exc:  # a Ctrl-C while a large output is written
            self._record_failure(exc, duration_s, user_traceback(exc), storing=True)
            raise
        done = Completion(self.run_id, self.step, self.owner, tuple(blobs), duration_s, display_blob, reads)
        try:
            self.store.complete_step(done)
        except (StoreRemovedError, LeaseLostError):
            # The store went with what it held, or another owner has the step now (its failure would
            # be refused as the completion was): there is no step of this attempt left to mark failed.
            raise
        except BaseException as exc:
            if self._completed_anyway(done):  # only a KeyboardInterrupt during COMMIT gets here
                self._completed(blobs)
                raise
            error = self._write_error(exc) if isinstance(exc, WriteFault) else None
            try:
                if error is not None:
                    self._record_failure(error, duration_s, None)
                else:
                    self._record_failure(exc, duration_s, user_traceback(exc), storing=True)
            except StepChangedError:
                # DuckDB may finish an interrupted COMMIT after reporting the interrupt, so the first
                # read-back can miss it: a step no longer running when its failure is written has
                # completed after all (or another process took it, and then it is not ours).
                if not self._completed_anyway(done):
                    raise
                self._completed(blobs)
                raise exc from None
            if error is not None:
                raise error from exc.__cause__
            raise
        self._completed(blobs)

    def _completed(self, blobs: list[Blob]) -> None:
        self.digests = {b.name: b.digest for b in blobs}
        self._notify(StepState.COMPLETED)

    def _undo_start(self, exc: BaseException) -> None:
        """A start that raised (a Ctrl-C during its COMMIT) may have happened: fail it, so it is not left running.

        The store's own guard catches what this read-back misses: a step found running under this
        process that the process no longer runs becomes interrupted when it starts again.
        """
        try:
            status = self.store.get_step(self.run_id, self.step)
        except Exception:
            return
        owner = status.owner if status is not None else None
        if status is None or status.state is not StepState.RUNNING or owner is None:
            return
        if (owner.host, owner.pid) != (self.owner.host, self.owner.pid):
            return
        line = f"{_line(exc)} (while the step was starting)"
        self.store.fail_step(self.run_id, self.step, self.owner, line, None, 0.0)

    def _write_error(self, fault: WriteFault, *, starting: bool = False, asked: str | None = None) -> StoreWriteError:
        kind = write_error_class(fault.kind)
        return kind(
            self.step,
            self.run_id,
            fault.path,
            fault.reason,
            fault.needed,
            fault.free,
            starting=starting,
            kept=fault.kept,
            asked=asked,
        )

    def _completed_anyway(self, done: Completion) -> bool:
        """Whether a completion that raised was committed after all (the store's own read-back)."""
        try:
            status = self.store.get_step(done.run_id, done.step)
        except Exception:
            return False
        return done.found_in(status)

    def _encode(self, name: str, value: object) -> Blob:
        try:
            return self.store.encode(name, value)
        except EncodeError as exc:
            variable = None if exc.name == RETURN else exc.name
            raise UnserializableOutputError(
                self.step, self.run_id, variable, exc.type_name, exc.reason, self.fix_hint(exc.name)
            ) from exc.__cause__

    def fail(self, exc: BaseException, duration_s: float) -> float | None:
        """Record a failed attempt; return the delay before the next attempt, or None to give up."""
        self._record_failure(exc, duration_s, user_traceback(exc))
        if isinstance(exc, KeyboardInterrupt) or not isinstance(exc, self.policy.retry_on):
            return None
        if self.attempt > self.policy.retries:  # attempts after the first are the retries
            return None
        base = self.policy.backoff * float(2 ** (len(self.errors) - 1))
        return min(base, MAX_BACKOFF_S) * (0.5 + _JITTER.random() / 2)

    def _record_failure(self, exc: BaseException, duration_s: float, tb: str | None, *, storing: bool = False) -> None:
        line = _line(exc)
        if storing:
            line += " (while its outputs were being stored)"
        self.errors.append(line)
        self.store.fail_step(self.run_id, self.step, self.owner, line, tb, duration_s)
        self._notify(StepState.FAILED)

    def retry(self) -> None:
        """Start the next attempt (the key generation stays: the effect has not completed)."""
        try:
            self.attempt = self.store.retry_step(self.run_id, self.step, self.owner)
        except ResumableError:
            raise
        except BaseException as exc:
            self._undo_start(exc)
            raise
        self._marked = False
        self._notify(StepState.RUNNING)

    def delay_or_raise(self, exc: BaseException, duration_s: float) -> float:
        """Record a failed attempt; return the delay before the next one, or raise what the caller sees."""
        delay = self.fail(exc, duration_s)
        if delay is not None:
            return delay
        error = self.give_up(exc)
        if error is exc:
            raise exc
        raise error from exc

    def give_up(self, exc: BaseException) -> BaseException:
        """The error the caller sees once no attempt is left."""
        if len(self.errors) > 1 and not isinstance(exc, (KeyboardInterrupt, UnserializableOutputError)):
            failed = StepFailed(self.step, self.run_id, len(self.errors), list(self.errors))
            failed.__cause__ = exc
            return failed
        return exc

    def _notify(self, state: StepState) -> None:
        if not _listeners:  # the common case: no panel open; keep the per-step path bare
            return
        event = StepEvent(self.pipeline, self.run_id, self.step, state, self.attempt)
        for listener in list(_listeners):
            try:
                listener(event)
            except Exception:  # a broken panel must never break a step
                pass


def _line(exc: BaseException) -> str:
    """An error's one line, as the event log records it."""
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: interrupted by the user"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def deadline(seconds: float | None, step: str) -> Iterator[None]:
    """Raise StepTimeout in this (main) thread when the block runs past ``seconds``."""
    if seconds is None:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise StepTimeout(step, seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_with_timeout(call: StepCall, body: Callable[[], Any]) -> Any:
    timeout = call.policy.timeout
    if timeout is None:
        return body()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with deadline(timeout, call.step):
            return body()
    # Off the main thread no signal can interrupt the body: run it in a helper thread and stop
    # waiting. The body keeps running in the background; docs/python-api.md says so.
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(body())
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=target, name=f"resumable-step-{call.step}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StepTimeout(call.step, timeout)
    if failure:
        raise failure[0]
    return result[0]


def run_sync(call: StepCall, body: Callable[[], Mapping[str, Any]]) -> StepOutcome:
    """Restore or execute a step whose body is a plain function returning its named outputs."""
    begin = call.begin()
    if begin.action == "restore":
        return call.restore(begin)
    while True:
        started = time.perf_counter()
        try:
            with entered(call.context()):
                outputs: Mapping[str, Any] = _call_with_timeout(call, body)
        except BaseException as exc:
            time.sleep(call.delay_or_raise(exc, time.perf_counter() - started))
            call.retry()
            continue
        call.succeed(outputs, time.perf_counter() - started)
        return call.executed(begin, outputs)


async def run_async(call: StepCall, body: Callable[[], Awaitable[Mapping[str, Any]]]) -> StepOutcome:
    """The same as :func:`run_sync` for a coroutine body; the timeout cancels the coroutine."""
    import asyncio  # here, not at the top: a synchronous pipeline never pays for importing it

    begin = call.begin()
    if begin.action == "restore":
        return call.restore(begin)
    while True:
        started = time.perf_counter()
        try:
            with entered(call.context()):
                if call.policy.timeout is None:
                    outputs = await body()
                else:
                    try:
                        outputs = await asyncio.wait_for(body(), call.policy.timeout)
                    except asyncio.TimeoutError:
                        raise StepTimeout(call.step, call.policy.timeout) from None
        except BaseException as exc:
            await asyncio.sleep(call.delay_or_raise(exc, time.perf_counter() - started))
            call.retry()
            continue
        call.succeed(outputs, time.perf_counter() - started)
        return call.executed(begin, outputs)
