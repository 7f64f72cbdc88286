"""Errors raised by resumable.

Every error derives from :class:`ResumableError`, so ``except resumable.ResumableError`` catches
all of ours and nothing of the user's::

    ResumableError
     ├─ StepDefinitionError(ValueError)      bad options or names: raised when the step is defined
     ├─ OptionError(ValueError)              a bad option outside a step (the panel's poll_s)
     ├─ ArgumentTypeError(TypeError)         an argument of the wrong type (store=0, load(0, ...))
     ├─ AsyncStepError(TypeError)            run.step was given an async function: await run.astep
     ├─ NotInStepError(RuntimeError)         idempotency_key() outside a step
     ├─ NoActiveRunError(RuntimeError)       a decorated step called outside ``with pipe.run()``
     ├─ StoreError                           never raised itself: one subclass per problem
     │   ├─ StorePathError                   the store path is a folder, not writable, not DuckDB
     │   ├─ StoreLockedError                 another process kept the file locked past the limit
     │   ├─ StoreDatabaseError               DuckDB refused a read or write (its message is kept)
     │   │   ├─ StoreCorruptError            the file cannot be read as a database
     │   │   └─ StoreServerError             a PostgreSQL server cannot be reached or refused (its message is kept)
     │   ├─ StoreRemovedError                the store file was deleted or replaced under this process
     │   ├─ SchemaVersionError               the store was written by a newer resumable
     │   ├─ RunOwnedError                    another live process owns the run
     │   ├─ RunExistsError                   a new run was asked for under an id already taken
     │   ├─ ForkError                        a fork's id is taken or its step is not in the origin run
     │   ├─ PipelineMismatchError            a run opened under another pipeline than its own
     │   ├─ ParameterMismatchError           a run resumed with other parameters than it started with
     │   ├─ StepChangedError                 another process changed a step this process was running
     │   │   └─ LeaseLostError               ... because this process's lease ran out and another owner took over
     │   ├─ StepNotStoredError               a kernel's step returned but the store then refused to record it
     │   │   └─ StepWriteBackError           ... because its outputs written behind did not reach the disk
     │   ├─ StepRunningError                 a running step cannot be invalidated
     │   ├─ CheckpointIntegrityError         digest or signature mismatch; bytes were not unpickled
     │   ├─ CheckpointNotFoundError          no such store, run, step or output
     │   ├─ StoreWriteError                  a step's outputs, start, key or token could not be written (I/O)
     │   │   ├─ StoreFullError               ... because the disk is full (or a quota or file size limit)
     │   │   ├─ StoreReadOnlyError           ... because the store's file system is read-only
     │   │   └─ ObjectStoreWriteError        ... because the object store holding payloads did not take them
     │   ├─ ObjectStoreError                 the object store holding payloads cannot be read or listed (load, gc, rm)
     │   ├─ StagingFolderError               the local folder staging them (or a PostgreSQL store's spill) is not
     │   │                                   private, not writable or full
     │   └─ SigningKeyError                  the signing-key file is missing, unreadable or empty
     ├─ ParameterValueError(ValueError)      a run parameter whose value cannot be recorded faithfully
     ├─ DependencyError(ValueError)          a --depends-on file is missing, a folder or unreadable
     ├─ RerunError(ValueError)               --rerun of a step that never completed
 ├─ DuplicateStepError(ValueError)       a second notebook cell ran a step name another cell ran
     ├─ QueryError(ValueError)               a ``resumable sql`` query failed or was refused; nothing changed
     ├─ UnserializableOutputError(TypeError) .step, .variable, .type_name
     ├─ StepTimeout(TimeoutError)            one attempt ran past ``timeout``; retried like any error
     ├─ StepFailed                           retries exhausted: .attempts, .errors
     ├─ InvalidTransition                    a bug in resumable, never user error
     ├─ NotebookExecutionError               .cell_index, .ename, .evalue, .traceback
     ├─ KernelDiedError                      restarts exhausted: .run_id, .restarts, .step
     ├─ NotebookInputError(ValueError)       a headless run's notebook, parameters or options are unusable
     │   └─ SweepFileError                   a sweep's parameter file (or list) cannot be used: .file, .entry
     ├─ SweepClusterError                    a sweep's Dask cluster cannot be started or reached
     ├─ DuplicateStepWarning(UserWarning)    no longer issued (DuplicateStepError); kept for filters
     ├─ EffectHeldWarning(UserWarning)       a completed effect step was held although its inputs changed
     └─ LastGoodCheckpointWarning(UserWarning) a value was loaded from the last good checkpoint of a
                                             step whose later attempt failed

Each class keeps its identifiers as attributes and defines ``__reduce__`` because errors are
stored and cross process boundaries (a kernel, a subprocess).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

FrontEnd = Literal["python", "command"]
_FRONT_END: ContextVar[FrontEnd | None] = ContextVar("resumable_front_end", default=None)


@contextmanager
def front_end(name: FrontEnd) -> Iterator[None]:
    """Word the errors raised inside for one front end: a message names the options the user can type.

    ``"command"`` (the ``resumable`` command line) says ``--new`` and ``--store``, ``"python"`` says
    ``new=True`` and ``store=``; outside both (a notebook, ``execute_notebook``) a message names both.
    """
    if _FRONT_END.get() is not None:  # the outermost wins: the command line calling load() keeps its words
        yield
        return
    token = _FRONT_END.set(name)
    try:
        yield
    finally:
        _FRONT_END.reset(token)


def option_words(python: str, command: str) -> str:
    """How a message names an option: as the current front end spells it, or both ways when it is unknown."""
    chosen = _FRONT_END.get()
    if chosen == "python":
        return python
    if chosen == "command":
        return command
    return f"{python} / {command}"


class ResumableError(Exception):
    """Base of every error resumable raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[ResumableError], args: tuple[Any, ...], state: dict[str, Any]) -> ResumableError:
    err = Exception.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class StepDefinitionError(ResumableError, ValueError):
    """A step or pipeline was defined with a bad name or bad options: ``.option``, ``.value``, ``.step``.

    With ``step``, an option of that step (``retries``, ``--outputs``); without, a name (``option``
    is then what it names: ``step name``, ``run name``).
    """

    def __init__(self, option: str, value: object, expected: str, step: str | None = None) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        self.step = step
        if step is None:
            super().__init__(f"{option} {value!r} is not valid: {expected}.")
        else:
            super().__init__(f"step '{step}': {option}={value!r} is not valid; {expected}.")


class OptionError(ResumableError, ValueError):
    """An option outside a step's definition has a value it cannot take (the panel's ``poll_s``)."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"{option}={value!r} is not valid; {expected}.")


class ArgumentTypeError(ResumableError, TypeError):
    """An argument of a public function has the wrong type: ``.argument``, ``.value``, ``.expected``."""

    def __init__(self, argument: str, value: object, expected: str) -> None:
        self.argument = argument
        self.value = value
        self.expected = expected
        super().__init__(f"{argument} must be {expected}, not {type(value).__name__} ({value!r}); nothing was changed.")


class AsyncStepError(ResumableError, TypeError):
    """``run.step`` was given an async function (or one that returned an awaitable): ``.step``, ``.function``.

    ``run.step`` calls its function and checkpoints what it returns; an async function returns a
    coroutine, which is neither the result nor storable. ``await run.astep(...)`` awaits it.
    """

    def __init__(self, step: str, function: str, returned: bool = False) -> None:
        self.step = step
        self.function = function
        self.returned = returned
        if returned:
            what = f"{function} returned an awaitable instead of a result, so nothing was checkpointed"
        else:
            what = f"{function} is an async function, so run.step would only create its coroutine; it was not called"
        super().__init__(
            f"step '{step}': {what}. Inside async code, use await run.astep({step!r}, {function}, ...) "
            f"instead (or decorate the function with '@pipe.step' and await its call)."
        )


class NotInStepError(ResumableError, RuntimeError):
    """``idempotency_key()`` (or ``fencing_token()``) was called outside a step."""

    def __init__(self, function: str = "idempotency_key") -> None:
        self.function = function
        super().__init__(
            f"{function}() was called outside a step. Call it inside a '%%durable_step' cell "
            "or a function decorated with '@pipe.step'."
        )


class NoActiveRunError(ResumableError, RuntimeError):
    """A decorated step was called while no run of its pipeline is active."""

    def __init__(self, pipeline: str, step: str) -> None:
        self.pipeline = pipeline
        self.step = step
        super().__init__(
            f"step '{step}' of pipeline '{pipeline}' was called outside a run. Call it inside "
            f"'with pipe.run():' so its result is checkpointed."
        )


class StoreError(ResumableError):
    """Something about the store prevents reading or writing it.

    Catch it to handle every store problem at once; each problem is raised as its own subclass,
    which names the objects involved.
    """


class StorePathError(StoreError):
    """The store path cannot hold a store (a folder, not writable, not a DuckDB file)."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"store '{path}' {problem}. {fix}")


class StoreLockedError(StoreError):
    """Another process held the store's file past the configured wait."""

    def __init__(self, path: str, holder_pid: int | None, waited_s: float, reason: str | None = None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        self.waited_s = waited_s
        self.reason = reason  # what the holder wrote beside its pid: why it keeps the file
        who = f"process {holder_pid}" if holder_pid is not None else "another process"
        if reason:
            super().__init__(
                f"store '{path}' stayed locked by {who} for {waited_s:.1f} s: that process ran steps that it "
                f"could not write to the store yet ({reason}), and keeps the store until they are written, so that "
                f"no other process runs them again. Nothing was changed here. Free space on the store's disk (that "
                f"process then writes them and lets go), then try again."
            )
            return
        super().__init__(
            f"store '{path}' stayed locked by {who} for {waited_s:.1f} s. resumable holds the file "
            f"only for short transactions, so a long hold means that process keeps it open "
            f"(a DuckDB shell or notebook connection?). Close it, or raise RESUMABLE_LOCK_TIMEOUT."
        )


class StoreDatabaseError(StoreError):
    """DuckDB refused a read or write of the store; ``.detail`` is DuckDB's own message."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"store '{path}' could not be read or written: {detail.strip()}. What was being written was not "
            f"stored; completed steps already in the store are kept. Try again; if it repeats, check the disk "
            f"and the file's permissions."
        )


class StoreCorruptError(StoreDatabaseError):
    """The store file cannot be read as a database (a damaged header or block)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        StoreError.__init__(
            self,
            f"store '{path}' cannot be read as a database ({detail.strip()}). Nothing in it was changed. "
            f"Keep a copy of the file (and its .wal, if any) before anything else; restore it from a backup, "
            f"or point RESUMABLE_STORE at a new file.",
        )


class StoreServerError(StoreDatabaseError):
    """A PostgreSQL store's server cannot be reached or refused a transaction; ``.detail`` is its message."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        StoreError.__init__(
            self,
            f"store '{path}' could not be reached or refused the transaction: {detail.strip()}. What was being "
            f"written was not stored; completed steps already in the store are kept. Check that the server is "
            f"running and that the URL's host, port, database and user are right, then try again.",
        )


class StoreRemovedError(StoreError):
    """The store file was deleted or replaced while this process was using it."""

    def __init__(self, path: str, how: str) -> None:
        self.path = path
        self.how = how
        super().__init__(
            f"store '{path}' was {how} while this process was using it, so what it was writing was not stored "
            f"(steps completed into the old file went with it). The next step creates a new, empty store at "
            f"'{path}' and runs from the start; to keep the old steps, put the file back first."
        )


class RunOwnedError(StoreError):
    """Another live process is executing a step of the same run."""

    def __init__(self, run_id: str, pipeline: str, host: str, pid: int, started: str, step: str | None) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.host = host
        self.pid = pid
        self.started = started
        self.step = step
        doing = f" (step '{step}' is running)" if step else ""
        super().__init__(
            f"run '{run_id}' of pipeline '{pipeline}' is owned by another live process "
            f"(pid {pid} on host '{host}', started {started}){doing}. Stop it or wait; if it dies, "
            f"its running steps become 'interrupted' and resume on the next start."
        )


class RunExistsError(StoreError):
    """A fresh run was asked for under the id of a run that already exists."""

    def __init__(self, run_id: str, pipeline: str) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        super().__init__(
            f"run '{run_id}' of pipeline '{pipeline}' already exists, so it cannot start as a new run. "
            f"Resume it (leave out {option_words('new=True', '--new')}), or choose another run id."
        )


class ForkError(StoreError):
    """A fork could not be made (its id is taken, the step is not in the origin run); nothing was written."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. {fix}")


class CheckpointIntegrityError(StoreError):
    """A checkpoint's bytes do not match the digest or signature written with them."""

    def __init__(self, run_id: str, step: str, name: str, reason: str) -> None:
        self.run_id = run_id
        self.step = step
        self.name = name
        self.reason = reason
        super().__init__(
            f"output '{name}' of step '{step}' (run '{run_id}') {reason} and was not loaded. "
            f"Recompute it with: resumable invalidate {run_id} {step}"
        )


class CheckpointNotFoundError(StoreError, LookupError):
    """The store, run, step or output asked for does not exist, or the step has no checkpoint yet.

    Parameters
    ----------
    store
        Where the store lives, as messages show it.
    run_id, step
        What was looked for; None for the levels above the missing one (no ``run_id``: the store
        itself is missing; no ``step``: the run is).
    state
        The step's state when it exists but is not completed.
    output, outputs
        The output asked for (None: the step's only one) and the outputs the step has.
    """

    def __init__(
        self,
        store: str,
        run_id: str | None = None,
        step: str | None = None,
        *,
        state: str | None = None,
        output: str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.step = step
        self.state = state
        self.output = output
        self.outputs = None if outputs is None else tuple(outputs)
        super().__init__(self._message())

    def _message(self) -> str:
        run, step = self.run_id, self.step
        if run is None:
            return (
                f"there is no store at '{self.store}'; nothing was created. Run a pipeline first, or pass "
                f"{option_words('store=', '--store')} or set RESUMABLE_STORE to an existing store."
            )
        if step is None:
            return f"run '{run}' does not exist in store '{self.store}'. List the runs with: resumable runs"
        if self.state is not None:
            return (
                f"step '{step}' (run '{run}') is {self.state}, not completed, so it has no checkpoint to load. "
                f"Resume the run to complete it; see its steps with: resumable show {run}"
            )
        if self.outputs is not None:
            return self._output_message(run, step, sorted(self.outputs))
        return f"run '{run}' has no step '{step}' in store '{self.store}'. See its steps with: resumable show {run}"

    def _output_message(self, run: str, step: str, names: list[str]) -> str:
        where = f"step '{step}' (run '{run}')"
        if self.output is not None:
            return f"{where} has no output '{self.output}'; it has {names}."
        if names:
            python = f"load({run!r}, {step!r}, {names[0]!r})"
            command = f"resumable export {run} {step} {names[0]} -o FILE"
            return f"{where} has outputs {names}; name one, e.g. {option_words(python, command)}."
        return f"{where} stored no outputs, so there is nothing to load."


class ParameterMismatchError(StoreError):
    """A run was resumed with parameters other than the ones it started with."""

    def __init__(self, run_id: str, differences: list[str]) -> None:
        self.run_id = run_id
        self.differences = differences
        lines = "\n".join(f"  - {d}" for d in differences)
        super().__init__(
            f"run '{run_id}' started with other parameters:\n{lines}\n"
            f"Resume it with its original parameters, or start a new run with {option_words('new=True', '--new')}."
        )


class ParameterValueError(ResumableError, ValueError):
    """A run parameter cannot be recorded so that it comes back as it was: ``.name``, ``.value``, ``.problem``."""

    def __init__(self, name: object, value: object, problem: str) -> None:
        self.name = name
        self.value = value
        self.problem = problem
        try:
            shown = repr(value)
        except Exception:  # a repr that raises still gets a message
            shown = f"<{type(value).__name__}>"
        super().__init__(
            f"parameter {name!r} = {shown} ({type(value).__name__}) cannot be recorded with the run: {problem}; "
            f"nothing was stored. Use strings, numbers, booleans, None, and lists, tuples, sets or dicts of them."
        )


class SchemaVersionError(StoreError):
    """The store was written by a newer version of resumable; it was left untouched."""

    def __init__(self, store: str, found: int, supported: int) -> None:
        self.store = store
        self.found = found
        self.supported = supported
        super().__init__(
            f"store '{store}' has schema version {found}, newer than the {supported} this version of resumable "
            f"understands. Nothing in it was read or changed. Upgrade resumable to open it."
        )


class PipelineMismatchError(StoreError):
    """A run was opened under another pipeline than the one it belongs to."""

    def __init__(self, run_id: str, pipeline: str, asked: str) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.asked = asked
        super().__init__(
            f"run '{run_id}' belongs to pipeline '{pipeline}', not '{asked}'; nothing was changed. "
            f"Use another run id, or open it with pipeline '{pipeline}'."
        )


class StepChangedError(StoreError):
    """Another process changed a step while this process was running it; the attempt was not recorded."""

    def __init__(self, run_id: str, step: str, expected: str) -> None:
        self.run_id = run_id
        self.step = step
        self.expected = expected
        super().__init__(
            f"step '{step}' (run '{run_id}') is no longer '{expected}' in this process: another process changed "
            f"it. Nothing from this attempt was stored and the step's earlier checkpoints are intact. See what "
            f"happened with: resumable show {run_id} --events"
        )


class LeaseLostError(StepChangedError):
    """A late write of an owner whose lease ran out and whose run (or step) another owner has taken over since.

    Every write an owner makes carries the fencing token (lease generation) it took with the run or
    step; the store refuses it once a newer one was taken (docs/scale.md, "Leases").
    """

    def __init__(
        self, run_id: str, step: str | None, generation: int, holder: str | None, holder_generation: int | None
    ) -> None:
        self.run_id = run_id
        self.step = step or ""
        self.expected = "running"
        self.generation = generation
        self.holder = holder
        self.holder_generation = holder_generation
        what = f"step '{step}' of run '{run_id}'" if step else f"run '{run_id}'"
        whom = holder or "another owner"
        if holder_generation is not None:
            whom += f" under lease generation {holder_generation}"
        StoreError.__init__(
            self,
            f"{what} was taken over by {whom} after this process's lease (generation {generation}) ran out, so "
            f"this process's late write was refused: nothing of it was stored, and the other owner's work is kept. "
            f"This process no longer owns the run: stop it, and start the run again to resume it from the store "
            f"(what the other owner completed is restored, not run again).",
        )


class StepNotStoredError(StoreError):
    """A kernel's step returned in this process, but the store then refused to record it (another owner has it)."""

    def __init__(self, run_id: str, step: str, refusal: str) -> None:
        self.run_id = run_id
        self.step = step
        self.refusal = refusal
        super().__init__(
            f"step '{step}' (run '{run_id}') returned in this process, but the store then refused to record it: "
            f"{refusal.rstrip('.')}. Its result was not stored (what the store holds for that step was kept); no "
            f"idempotency key or fencing token was handed out after it, and what raised this was stopped before it "
            f"ran on. Run the step again if its result is needed."
        )


class StepWriteBackError(StepNotStoredError):
    """A kernel's step returned with its large outputs written behind, and the disk then failed to write them.

    The disk reports such an error once (a later fsync of the same file succeeds while its bytes
    are lost), so the step is recorded failed with it, never completed: no restore reads bytes
    that never reached the disk.
    """

    def __init__(self, run_id: str, step: str, path: str, reason: str) -> None:
        self.run_id = run_id
        self.step = step
        self.path = path
        self.reason = reason
        self.refusal = f"its outputs did not reach the disk ({reason})"
        StoreError.__init__(
            self,
            f"step '{step}' (run '{run_id}') returned in this process, but its outputs then failed to reach the "
            f"disk at '{path}' ({reason}), so the step was recorded failed with that error, not completed. "
            f"Completed steps and their checkpoints are intact; no idempotency key or fencing token was handed out "
            f"after it returned, and what raised this was stopped before it ran on. Fix the disk (make space free, "
            f"or check the system log), then run the cell of step '{step}' again: steps that read its outputs run "
            f"again with them.",
        )


class StepRunningError(StoreError):
    """A running step cannot be invalidated."""

    def __init__(self, run_id: str, step: str) -> None:
        self.run_id = run_id
        self.step = step
        super().__init__(
            f"step '{step}' (run '{run_id}') is running in this process, so it cannot be invalidated; nothing was "
            f"changed. Invalidate it once it ends."
        )


def _size(n: int) -> str:
    """Bytes as a message shows them (``3.0 MB``); errors import nothing of ours, so this is local."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover - the loop always returns


KEY = "idempotency key"  # what StoreWriteError.asked names
TOKEN = "fencing token"  # noqa: S105 - what it names, not a secret


class StoreWriteError(StoreError):
    """A step's outputs could not be written to the store: an I/O error of the disk or file system.

    The step is recorded as failed (or kept in memory and recorded before the run's next step when
    even that cannot be written); completed steps and their checkpoints are intact. Subclasses name
    the two causes a user can fix: :class:`StoreFullError` and :class:`StoreReadOnlyError`.

    Parameters
    ----------
    step, run_id
        The step whose completion failed.
    path
        Where the write failed (the payload folder, or the store's folder for the database file).
    reason
        The operating system's (or DuckDB's) own words, e.g. ``[Errno 5] Input/output error``.
    needed
        Bytes the outputs needed at least (what was written, plus the write that failed), when known.
    free
        Bytes free on that file system after the failed write was cleaned up, when known.
    starting
        The step's start could not be stored (so its body never ran), not its outputs.
    kept
        With ``starting`` or ``asked``: this process holds steps it ran earlier that the store could not
        record yet (a failure, a kernel's cell); they are written once the store takes writes again.
    asked
        ``"idempotency key"`` or ``"fencing token"``: the step's body asked for it, and it was not handed
        out because the store could not first record what it must hold before one exists (the step's
        start, that the step has side effects). The body stopped at that call.
    """

    happened = "an error while writing them"

    def __init__(
        self,
        step: str,
        run_id: str,
        path: str,
        reason: str,
        needed: int | None = None,
        free: int | None = None,
        *,
        starting: bool = False,
        kept: bool = False,
        asked: str | None = None,
    ) -> None:
        self.step = step
        self.run_id = run_id
        self.path = path
        self.reason = reason
        self.needed = needed
        self.free = free
        self.starting = starting
        self.kept = kept
        self.asked = asked
        earlier = (
            "; what this process ran before and could not store yet is kept in this process and written as "
            "soon as the store takes writes again"
            if kept
            else ""
        )
        happened = self._happened()
        said_of_it = happened.replace(" them", " it")  # of the start or the fence, not of outputs
        if asked is not None:
            made = (
                "no side effect was made with it, and the step was not recorded as having side effects"
                if asked == KEY
                else "no write was made with it"
            )
            text = (
                f"step '{step}' (run '{run_id}'): its {asked} was not handed out: the store could not record the "
                f"step first: {said_of_it} at '{path}' ({reason}){self._sizes()}. The "
                f"call raised before the {asked} existed, so {made}; completed steps and their checkpoints are "
                f"intact{earlier}. "
            )
        elif starting:
            text = (
                f"step '{step}' (run '{run_id}') could not start: its start could not be stored: "
                f"{said_of_it} at '{path}' ({reason}){self._sizes()}. Its body did not run "
                f"and nothing of it was stored; completed steps and their checkpoints are intact{earlier}. "
            )
        else:
            text = (
                f"step '{step}' (run '{run_id}'): its outputs could not be stored: {happened} at '{path}' "
                f"({reason}){self._sizes()}. The step was marked failed; completed steps and their checkpoints are "
                f"intact. "
            )
        again = " It gets the same idempotency key." if asked == KEY else ""
        super().__init__(text + self._fix() + again)

    def _happened(self) -> str:
        """What went wrong, said of the outputs ("them"); a subclass may tell cases apart by ``reason``."""
        return self.happened

    def _sizes(self) -> str:
        return ""

    def _fix(self) -> str:
        return "Check the disk and the system log, then run the step again."


class StoreFullError(StoreWriteError):
    """The disk holding the store is full (ENOSPC), a quota is exceeded (EDQUOT) or a file size limit hit (EFBIG)."""

    happened = "no space left for them"

    @property
    def size_limit(self) -> bool:
        """EFBIG: not the disk but this process's file size limit; free space says nothing then."""
        return "File too large" in self.reason

    def _happened(self) -> str:
        return "a file reached this process's file size limit ('ulimit -f')" if self.size_limit else self.happened

    def _sizes(self) -> str:
        parts = []
        if self.needed:
            parts.append(f"they need at least {_size(self.needed)}")
        if self.free is not None and not self.size_limit:
            parts.append(f"{_size(self.free)} are free there")
        return "; " + " and ".join(parts) if parts else ""

    def _fix(self) -> str:
        if self.size_limit:
            above = f" above {_size(self.needed)}" if self.needed else ""
            return f"Raise the limit{above} ('ulimit -f unlimited'), then run the step again."
        room = f"at least {_size(self.needed)}" if self.needed else "space"
        return (
            f"Make {room} free on that disk (or raise the quota), or point RESUMABLE_STORE at a store on a "
            f"disk with room, then run the step again."
        )


class StoreReadOnlyError(StoreWriteError):
    """The store's file system (or folder) does not accept writes (EROFS, EACCES, EPERM)."""

    happened = "the store is read-only"

    def _fix(self) -> str:
        return (
            "Make that file system writable again (it may have been remounted read-only after disk errors; "
            "see the system log), or point RESUMABLE_STORE at a writable store, then run the step again."
        )


class ObjectStoreWriteError(StoreWriteError):
    """The object store holding the store's large payloads did not take an output.

    It could not be reached, refused the credentials, or has no such bucket: ``reason`` is the
    client's own words. The step was not completed; nothing completed was touched.
    """

    happened = "the object store did not take them"

    def _fix(self) -> str:
        return (
            "Check that the bucket exists and can be reached from this machine, and that the credentials "
            "(for s3://, the usual AWS_* environment variables or ~/.aws files) allow writing there, then run the "
            "step again."
        )


def write_error_class(kind: str) -> type[StoreWriteError]:
    """The class a write the store refused is told as, by the store's word for it (``WriteFault.kind``)."""
    return _WRITE_ERRORS.get(kind, StoreWriteError)


_WRITE_ERRORS: dict[str, type[StoreWriteError]] = {
    "full": StoreFullError,
    "read_only": StoreReadOnlyError,
    "object_store": ObjectStoreWriteError,
}


class ObjectStoreError(StoreError):
    """The object store holding the store's large payloads could not be read or listed (a load, gc, rm)."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            f"the object store at '{url}' could not be reached or refused the request: {detail.strip()}. Nothing "
            f"was loaded from it; completed steps and their checkpoints are kept. Check that the bucket can be "
            f"reached from this machine and that the credentials (for s3://, the usual AWS_* environment variables "
            f"or ~/.aws files) allow reading there (and deleting, for gc and rm), then try again."
        )


class StagingFolderError(StoreError):
    """The local folder that stages checkpoints on their way to or from the store cannot be used.

    The folder stages an object store's checkpoints on their way to or from the bucket, or holds a
    PostgreSQL store's large outputs on their way into its rows (when it names no payload
    location). Not the store's fault: this machine's folder (under ``TMPDIR``) cannot be written,
    its disk is full, or other users could write to it, and a checkpoint copy there could then be
    read, or swapped before it is unpickled or stored. ``.folder``, ``.url`` (the object store, or
    the PostgreSQL store), ``.problem`` (what is wrong, with the operating system's words),
    ``.loading`` (a load, else a step's write), ``.spill`` (a PostgreSQL store's folder).
    """

    def __init__(self, folder: str, url: str, problem: str, fix: str, *, loading: bool, spill: bool = False) -> None:
        self.folder = folder
        self.url = url
        self.problem = problem
        self.loading = loading
        self.spill = spill
        kept = (
            "Nothing was unpickled and the checkpoint in the object store is untouched."
            if loading
            else "The step's outputs were not stored; completed steps and their checkpoints are intact."
        )
        role = (
            f"which holds large checkpoints of the PostgreSQL store at '{url}' on their way into its rows"
            if spill
            else f"which stages checkpoints of the object store at '{url}'"
        )
        super().__init__(f"the local folder '{folder}', {role}, {problem}. {kept} {fix}")


class SigningKeyError(StoreError):
    """The signing-key file named by ``RESUMABLE_SIGNING_KEY_FILE`` cannot be used: ``.path``, ``.problem``."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"the signing-key file '{path}' (RESUMABLE_SIGNING_KEY_FILE) {problem}, so the store was not opened; "
            f"nothing was read or written and completed steps are intact. Restore the key file at that path "
            f"(the same key that signed the store's checkpoints), or unset RESUMABLE_SIGNING_KEY_FILE to use "
            f"the store without signatures."
        )


class UnserializableOutputError(ResumableError, TypeError):
    """A step output cannot be pickled; nothing from the attempt was stored.

    ``variable`` is the output's name, or None for the return value of a Python-API step.
    """

    def __init__(self, step: str, run_id: str, variable: str | None, type_name: str, reason: str, fix: str) -> None:
        self.step = step
        self.run_id = run_id
        self.variable = variable
        self.type_name = type_name
        self.reason = reason
        what = f"output '{variable}'" if variable is not None else "the return value"
        super().__init__(
            f"{what} of step '{step}' (run '{run_id}') is a {type_name}, which cannot be pickled "
            f"({reason}). Nothing from this attempt was stored and earlier checkpoints are intact. {fix}"
        )


class StepTimeout(ResumableError, TimeoutError):
    """One attempt of a step ran longer than its ``timeout``."""

    def __init__(self, step: str, timeout: float) -> None:
        self.step = step
        self.timeout = timeout
        super().__init__(f"step '{step}' ran longer than its timeout of {timeout:g} s")


class StepFailed(ResumableError):
    """A step failed on every attempt its retry policy allowed."""

    def __init__(self, step: str, run_id: str, attempts: int, errors: list[str]) -> None:
        self.step = step
        self.run_id = run_id
        self.attempts = attempts
        self.errors = errors
        last = errors[-1] if errors else "unknown error"
        super().__init__(f"step '{step}' (run '{run_id}') failed after {attempts} attempts; last error: {last}")


class InvalidTransition(ResumableError):
    """A state change outside the transition table: a bug in resumable, never a user error."""

    def __init__(self, step: str, source: str, target: str) -> None:
        self.step = step
        self.source = source
        self.target = target
        super().__init__(f"step '{step}': no transition from '{source}' to '{target}' (this is a bug in resumable)")


class DependencyError(ResumableError, ValueError):
    """A file a step declares with ``--depends-on`` / ``depends_on=`` cannot be fingerprinted: ``.step``, ``.path``."""

    def __init__(self, step: str, declared: str, resolved: str, problem: str) -> None:
        self.step = step
        self.path = declared
        self.resolved = resolved
        self.problem = problem
        shown = f"'{declared}'" if declared == resolved else f"'{declared}' ('{resolved}')"
        super().__init__(
            f"step '{step}' depends on {shown}, which {problem}. Nothing ran and every checkpoint is kept; "
            "fix the path or the file, or drop it from --depends-on."
        )


class QueryError(ResumableError, ValueError):
    """A query of ``resumable sql`` or ``resumable.connect().sql()`` failed or was refused: ``.query``, ``.problem``.

    Queries open the store read-only (DuckDB's external access off; a read-only transaction on a
    PostgreSQL server), so nothing was changed. ``engine`` names the database whose words ``detail`` are.
    """

    def __init__(
        self, query: str, problem: str, hint: str, detail: str | None = None, *, engine: str = "DuckDB"
    ) -> None:
        self.query = query
        self.problem = problem
        self.detail = detail
        said = f" ({engine}: {detail})" if detail else ""
        super().__init__(f"the query {problem}{said}. {hint}")


class RerunError(ResumableError, ValueError):
    """``--rerun`` / ``run.rerun()`` named a step that never completed: ``.step``, ``.run_id``, ``.state``."""

    def __init__(self, step: str, run_id: str, state: str | None) -> None:
        self.step = step
        self.run_id = run_id
        self.state = state
        where = "has never run" if state is None else f"is {state} and has never completed"
        super().__init__(
            f"step '{step}' of run '{run_id}' {where}, so there is nothing to run again; nothing ran. "
            "Remove the rerun request (--rerun, run.rerun): a step that has not completed executes anyway."
        )


class EffectHeldWarning(ResumableError, UserWarning):
    """A completed side-effecting step was restored, not executed: ``.step``, ``.changed``, ``.how``.

    ``.rerun_generation`` is set when a rerun was asked again for a request already rerun.
    """

    def __init__(self, step: str, changed: str, how: str, rerun_generation: int | None = None) -> None:
        self.step = step
        self.changed = changed
        self.how = how
        self.rerun_generation = rerun_generation
        if rerun_generation is None:
            text = f"step '{step}' has side effects and {changed}; it was not run again. To do it again: {how}"
        else:
            text = (
                f"step '{step}' has side effects and was already run again for this source and these inputs "
                f"(key generation {rerun_generation}); it was not run a third time. Remove the rerun request; "
                f"to do it yet again: {how}"
            )
        super().__init__(text)


class LastGoodCheckpointWarning(ResumableError, UserWarning):
    """A value was loaded from the last good checkpoint of a step whose later attempt did not complete.

    ``.execution`` and ``.attempt`` name the execution that wrote the checkpoint and its attempt;
    ``.state``, ``.executions`` and ``.attempts`` the step now (its execution and attempt within it).
    """

    def __init__(
        self, run_id: str, step: str, name: str, attempt: int, state: str, attempts: int,
        execution: int = 1, executions: int = 1,
    ) -> None:  # fmt: skip
        self.run_id = run_id
        self.step = step
        self.name = name
        self.attempt = attempt
        self.state = state
        self.attempts = attempts
        self.execution = execution
        self.executions = executions
        super().__init__(
            f"step '{step}' (run '{run_id}') is {state} (execution {executions}, attempt {attempts}); output "
            f"'{name}' was loaded from its last good checkpoint, written by execution {execution}. It is kept "
            "until an attempt completes."
        )


class SecretNotStoredWarning(ResumableError, UserWarning):
    """Outputs whose names look like secrets were left out of a step's checkpoint: ``.step``, ``.names``."""

    def __init__(self, step: str, names: Sequence[str]) -> None:
        self.step = step
        self.names = tuple(names)
        listed = ", ".join(f"'{n}'" for n in self.names)
        super().__init__(
            f"step '{step}': {listed} look{'s' if len(self.names) == 1 else ''} like a secret and "
            f"{'was' if len(self.names) == 1 else 'were'} not stored in its checkpoint, so a restore will not bring "
            f"{'it' if len(self.names) == 1 else 'them'} back. Read secrets in a cell that is not a step; to store "
            f"one anyway, name it in --outputs (e.g. '--outputs +{self.names[0]}')."
        )


class StoreLogTornWarning(ResumableError, UserWarning):
    """The store's write-ahead log was found shorter than what had been committed to it: ``.path``, ``.missing``."""

    def __init__(self, path: str, missing: int) -> None:
        self.path = path
        self.missing = missing
        super().__init__(
            f"store '{path}': its write-ahead log ('{path}.wal') is {missing} bytes shorter than what was committed "
            f"to it (a torn write, a failing disk, or a copy taken while it was written). The changes at its end are "
            f"lost: steps recorded there as completed will run again on the next resume, and effect steps among "
            f"them repeat their side effects unless the service honours their idempotency keys. See what the store "
            f"holds with: resumable runs"
        )


class DuplicateStepWarning(ResumableError, UserWarning):
    """No longer issued: a second cell with a step name is refused (:class:`DuplicateStepError`).

    Kept so code that filters it still imports.
    """

    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(
            f"step '{step}' was run by another cell of this notebook before. Two cells sharing a step "
            f"name replace each other's checkpoint and re-run on every pass: give this cell its own "
            f"name ('%%durable_step {step}_2'), or ignore this if you moved the step here."
        )


class DuplicateStepError(ResumableError, ValueError):
    """A second notebook cell ran a step name another cell ran in this kernel: ``.step``, ``.run_id``.

    Refused before the cell executes: the second cell would overwrite the first one's checkpoint,
    and each would then re-run the other on every pass. Running the refused cell again right away
    makes it the step's cell (the step was moved there on purpose).
    """

    def __init__(self, step: str, run_id: str) -> None:
        self.step = step
        self.run_id = run_id
        super().__init__(
            f"step '{step}' of run '{run_id}' belongs to another cell of this notebook, which ran it in this "
            f"kernel. This cell did not run, and that cell's checkpoint is kept. Two cells sharing a step name "
            f"overwrite each other's checkpoint: give this cell its own name ('%%durable_step {step}_2'). "
            f"If you moved the step here from that cell, run this cell again."
        )


class NotebookExecutionError(ResumableError):
    """A cell of a headless notebook raised."""

    def __init__(
        self,
        cell_index: int,
        ename: str,
        evalue: str,
        traceback: str,
        step: str | None = None,
        *,
        preview: str | None = None,
        output: str | None = None,
        resume_command: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.step = step
        self.output = output
        self.resume_command = resume_command
        self.params = dict(params or {})  # the parameters a corrected resume would pass again
        where = f"step '{step}' (cell {cell_index})" if step else f"cell {cell_index}"
        lines = [f"{where} raised {ename}: {evalue}"]
        if preview:
            lines.append(preview)
        if output:
            lines.append(f"The executed notebook, with the error marked, is at {output}.")
        if resume_command:
            lines.append(f"Completed steps are checkpointed. Fix the cell, then resume with:\n  {resume_command}")
        if resume_command and self.params:
            # A resume without -p reuses the recorded values, so a bad one would fail the same way.
            kept = ", ".join(f"{name}={value!r}" for name, value in self.params.items())
            again = " ".join(f"-p {name} VALUE" for name in self.params)
            lines.append(
                f"If a parameter caused the error, resume with it corrected (the run keeps {kept} until then; "
                f"the steps that read a changed parameter run again):\n  {resume_command} {again}"
            )
        super().__init__("\n".join(lines))


class KernelDiedError(ResumableError):
    """A headless run's kernel died more often than ``max_restarts`` allowed."""

    def __init__(
        self,
        run_id: str,
        restarts: int,
        *,
        step: str | None,
        cell_index: int | None,
        resume_command: str,
        output: str,
    ) -> None:
        self.run_id = run_id
        self.restarts = restarts
        self.step = step
        self.cell_index = cell_index
        self.resume_command = resume_command
        self.output = output
        where = f" in step '{step}'" if step else (f" in cell {cell_index}" if cell_index is not None else "")
        super().__init__(
            f"the kernel of run '{run_id}' died{where} and was restarted {restarts} times without finishing "
            f"(out of memory? os._exit? killed?). Completed steps are checkpointed. The executed notebook is at "
            f"{output}. Find the cause, then resume the run with:\n  {resume_command}"
        )


class NotebookInputError(ResumableError, ValueError):
    """The notebook, a parameter or an option of a headless run cannot be used.

    ``what`` names the kind of thing (``notebook``, ``parameter file``, ``timeout``), ``value`` the
    thing itself (a path, a name, a number), ``problem`` what is wrong with it and ``fix`` what to do.
    """

    def __init__(self, what: str, value: object, problem: str, fix: str = "") -> None:
        self.what = what
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{what} {value!r} {problem}." + (f" {fix}" if fix else ""))


def error_class(name: str) -> type[ResumableError] | None:
    """Our error class named ``name`` (the ``ename`` a kernel reports), or None for anyone else's."""
    found = globals().get(name)
    return found if isinstance(found, type) and issubclass(found, ResumableError) else None


class SweepFileError(NotebookInputError):
    """A sweep's parameter sets cannot be used.

    ``file`` is the parameter file (None for sets given in Python), ``entry`` the place in it
    (``entry 2``, ``grid 'lr'``) or None when the whole file is at fault.
    """

    def __init__(self, file: str | None, entry: str | None, problem: str, fix: str = "") -> None:
        self.file = file
        self.entry = entry
        self.what, self.value, self.problem, self.fix = "sweep file", file, problem, fix
        where = f"sweep file {file!r}" if file is not None else "sweep parameters"
        if entry:
            where += f" ({entry})"
        ResumableError.__init__(self, f"{where} {problem}." + (f" {fix}" if fix else ""))


class SweepClusterError(ResumableError):
    """A sweep could not start its local Dask cluster or reach the one it was given; no run was started."""

    def __init__(self, address: str | None, problem: str, fix: str) -> None:
        self.address = address
        self.problem = problem
        self.fix = fix
        where = f"the Dask scheduler at {address}" if address else "the local Dask cluster"
        super().__init__(f"{where}: {problem}. No run of the sweep was started. {fix}")
