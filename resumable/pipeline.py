"""The Python interface: pipelines, runs, durable steps, idempotency keys and ``load``."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from resumable import _aliases, _config, _engine, _inputs, _keys, _why
from resumable._context import current_step
from resumable._engine import RETURN
from resumable._owner import current_owner
from resumable._records import RunInfo, StepPolicy, StepStatus
from resumable._runs import choose_run
from resumable._states import StepState
from resumable._store import Removal, Store, open_store
from resumable._units import is_seconds
from resumable.errors import (
    ArgumentTypeError,
    AsyncStepError,
    CheckpointNotFoundError,
    LastGoodCheckpointWarning,
    NoActiveRunError,
    NotInStepError,
    StepDefinitionError,
    front_end,
)

P = ParamSpec("P")
R = TypeVar("R")

StoreArg = str | os.PathLike[str] | Store | None


def _is_store(store: object) -> bool:
    return all(callable(getattr(store, m, None)) for m in ("get_step", "checkpoint_refs", "load_value", "open_run"))


def _resolve_store(store: StoreArg) -> Store:
    if store is None or isinstance(store, (str, os.PathLike)):
        return open_store(store)
    if not _is_store(store):
        raise ArgumentTypeError("store", store, "a file path (str or os.PathLike) or a store")
    return store


def _check_text(argument: str, value: object, *, optional: bool = False) -> None:
    """Refuse a non-string where a run id, step or output name is expected (``load(0, 0, 0)``)."""
    if isinstance(value, str) or (optional and value is None):
        return
    raise ArgumentTypeError(argument, value, "a string" + (" or None" if optional else ""))


def check_name(kind: str, name: object) -> str:
    """Return ``name`` when it may name a pipeline, run or step; raise StepDefinitionError otherwise."""
    if not _keys.is_valid_name(name):
        raise StepDefinitionError(f"{kind} name", name, f"use {_keys.NAME_RULE}, for example 'load_data'")
    assert isinstance(name, str)
    return name


def make_policy(
    step: str,
    retries: int = 0,
    backoff: float = 1.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    timeout: float | None = None,
) -> StepPolicy:
    """Check retry and timeout options when the step is defined, not on its first call.

    The Python API, the magics (``--retries``, ``--backoff``, ``--timeout``) and so the panel's
    Retry, which runs the stored magic line, all come through here.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise StepDefinitionError(
            "retries", retries, "retries counts attempts after the first and must be a whole number, 0 or more", step
        )
    if not is_seconds(backoff, zero_ok=True):
        expected = "it is the first delay in seconds: a finite number, 0 or more"
        raise StepDefinitionError("backoff", backoff, expected, step)
    if timeout is not None and not is_seconds(timeout, zero_ok=False):
        raise StepDefinitionError(
            "timeout", timeout, "give a finite number of seconds above 0, or None for no limit", step
        )
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise StepDefinitionError("retry_on", retry_on, "give an exception class or a tuple of them", step)
    return StepPolicy(retries, float(backoff), kinds, None if timeout is None else float(timeout))


@dataclass(frozen=True, slots=True)
class StepDeclaration:
    """What a step says about itself besides its policy."""

    effect: bool = False
    depends_on: tuple[str, ...] = ()


def _check_paths(step: str, paths: object) -> tuple[str, ...]:
    """``depends_on`` as a tuple of paths (a single path is taken as one); anything else is refused."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise StepDefinitionError("depends_on", paths, "give a file path or a list of file paths", step)
    return tuple(os.fspath(p) for p in paths)


def _arguments(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """A call's arguments by parameter name (``*args`` items numbered), as messages name them."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):  # the call itself will raise, or the signature is unknown
        return [(f"argument {i + 1}", v) for i, v in enumerate(args)] + [(k, v) for k, v in kwargs.items()]
    out: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out += [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out += list(value.items())
        else:
            out.append((name, value))
    return out


def _is_async(fn: object) -> bool:
    """An ``async def`` function, a partial of one, or an object whose ``__call__`` is one."""
    call = type(fn).__dict__.get("__call__") if not inspect.isroutine(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _function_name(fn: object) -> str:
    """How a message names the function: its name, else its type's."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    return str(getattr(target, "__name__", None) or type(target).__name__)


_log = logging.getLogger("resumable")
_active_run: ContextVar[Run | None] = ContextVar("resumable_run", default=None)


class Pipeline:
    """A named sequence of durable steps whose runs live in one store.

    Parameters
    ----------
    name
        The pipeline's name (``checkout``): letters, digits, ``_``, ``-``, ``.``.
    store
        A path to the DuckDB file, a store object, or None for ``RESUMABLE_STORE`` or
        ``.resumable/store.duckdb``.
    durability
        ``"durable"`` (the default; ``RESUMABLE_DURABILITY`` sets it too): a step that has returned
        survives the death of the process. ``"deferred"``: quick steps that returned within the
        last 50 ms may execute again after a crash (a little faster; docs/durability.md). In both,
        every earlier completion is on disk before ``idempotency_key()`` returns or an effect
        step starts.

    Raises
    ------
    OptionError
        ``durability`` (or ``RESUMABLE_DURABILITY``) is neither ``"durable"`` nor ``"deferred"``.

    Examples
    --------
    >>> pipe = resumable.Pipeline("checkout", store="shop.duckdb")
    >>> @pipe.step(retries=3)
    ... def charge(order): ...
    >>> with pipe.run(run_id="order-42"):
    ...     receipt = charge(order)
    """

    @front_end("python")  # errors name new=True, store=
    def __init__(self, name: str, store: StoreArg = None, *, durability: str | None = None) -> None:
        self.name = check_name("pipeline", name)
        self.durability = _config.durability(durability)
        if not (store is None or isinstance(store, (str, os.PathLike)) or _is_store(store)):
            raise ArgumentTypeError("store", store, "a file path (str or os.PathLike) or a store")
        self._store_arg = store
        self._store: Store | None = None

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r})"

    @property
    def store(self) -> Store:
        """The store, opened on first use."""
        if self._store is None:
            self._store = _resolve_store(self._store_arg)
        return self._store

    @overload
    def step(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        effect: bool = False,
        depends_on: Sequence[str | os.PathLike[str]] = (),
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def step(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        effect: bool = False,
        depends_on: Sequence[str | os.PathLike[str]] = (),
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Make a function a durable step; usable bare (``@pipe.step``) or called.

        Parameters
        ----------
        name
            The step's name within a run; default the function's name.
        retries
            Attempts after the first when the body raises one of ``retry_on``.
        backoff
            The first delay between attempts in seconds; it doubles each time, with jitter.
        retry_on
            Exception classes worth another attempt; others fail at once.
        timeout
            Seconds one attempt may take before it fails with :class:`StepTimeout`.
        effect
            The step has side effects (asking for :func:`idempotency_key` makes it one too): once
            completed it is never called again unless :meth:`Run.rerun` asks for it.
        depends_on
            Files the step reads: a change of their content makes a completed step execute again.

        A completed step returns its checkpointed value without calling the function, as long as
        it is called with the same arguments (compared by fingerprint: the checkpoint of the step
        that returned an argument, else its value); otherwise it executes again and logs why.
        """

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            step_name = check_name("step", name or func.__name__)
            policy = make_policy(step_name, retries, backoff, retry_on, timeout)
            declared = StepDeclaration(effect=bool(effect), depends_on=_check_paths(step_name, depends_on))
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    run = self._active(step_name)
                    return await run._call_async(step_name, policy, declared, func, args, kwargs)  # type: ignore[arg-type]

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                run = self._active(step_name)
                return run._call(step_name, policy, declared, func, args, kwargs)

            return wrapper

        return decorate(fn) if fn is not None else decorate

    def _active(self, step: str) -> Run:
        run = _active_run.get()
        if run is None or run.pipeline is not self:
            raise NoActiveRunError(self.name, step)
        return run

    @front_end("python")  # errors name new=True, store=
    def run(self, run_id: str | None = None, new: bool = False, params: dict[str, Any] | None = None) -> Run:
        """A run of this pipeline, to use as a context manager.

        ``run_id`` resumes that run (or starts it under that id); without one, the run named by
        ``RESUMABLE_RUN_ID`` is joined, else a new id is generated. ``new=True`` refuses to resume
        an existing ``run_id`` (:class:`RunExistsError`).
        """
        if run_id is not None:
            check_name("run", run_id)
        # The shared precedence (resumable._runs), except that the Python API never resumes a run it
        # was not named: a completed step replays even when its code was edited (docs/python-api.md),
        # so quietly resuming the latest run would hand an edited script stale results.
        choice = choose_run(self.store, self.name, run_id, new=new or run_id is None)
        return Run(self, check_name("run", choice.run_id), params=params)

    @front_end("python")  # errors name run_id=, store=
    def fork(
        self, origin: str, from_step: str, /, *, run_id: str | None = None, params: dict[str, Any] | None = None
    ) -> Run:
        """A new run made from run ``origin``: its steps before ``from_step`` restore, the others execute.

        The completed steps before ``from_step`` share ``origin``'s checkpoints by reference (no
        byte is copied), and keep restoring exactly those values whatever ``origin`` does later.
        ``from_step`` and every step after it execute in the new run. Its parameters are
        ``origin``'s, overridden by ``params``. Returns the run, not yet entered: use it as
        ``with pipe.fork("order-42", "courier") as run:``. ``run_id`` names it (default: a new id).
        A copied step still executes again when called with other arguments, as in any run (an
        effect step is held instead; see docs/durability.md).

        Raises
        ------
        CheckpointNotFoundError
            There is no run ``origin``.
        PipelineMismatchError
            ``origin`` belongs to another pipeline.
        ForkError
            ``origin`` has no step ``from_step``, or run ``run_id`` exists already; nothing was written.
        """
        _check_text("origin", origin)
        _check_text("from_step", from_step)
        check_name("run", origin)
        check_name("step", from_step)
        new_id = check_name("run", run_id) if run_id is not None else _keys.new_run_id()
        made = self.store.fork_run(origin, from_step, new_id, current_owner(), params, pipeline=self.name)
        return Run(self, made.run_id)

    def runs(self) -> list[RunInfo]:
        """This pipeline's runs, newest first."""
        return self.store.list_runs(self.name)


class Run:
    """One execution history of a pipeline. Inside ``with``, this process owns the run."""

    def __init__(self, pipeline: Pipeline, run_id: str, *, params: dict[str, Any] | None = None):
        self.pipeline = pipeline
        self.run_id = run_id
        self._params = params
        self._calls: Counter[str] = Counter()
        self._reruns: set[str] = set()
        # What steps of this run returned, by identity, with their checkpoint digests: an argument
        # that is one of them is fingerprinted by that digest, never hashed again.
        self._produced: dict[int, tuple[Any, str]] = {}
        self._token: Any = None
        self._owner = current_owner()

    def __repr__(self) -> str:
        return f"Run({self.pipeline.name!r}, {self.run_id!r})"

    @property
    def store(self) -> Store:
        """The pipeline's store."""
        return self.pipeline.store

    @front_end("python")  # errors name new=True, store=
    def __enter__(self) -> Run:
        store = self.store
        store.open_run(self.run_id, self.pipeline.name, self._params)
        store.claim_run(self.run_id, self._owner, self.pipeline.durability)
        self._token = _active_run.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active_run.reset(self._token)
        self.store.release_run(self.run_id, self._owner)

    def _unique_name(self, name: str) -> str:
        # The n-th call of one step within a run gets its own checkpoint, as DBOS numbers calls.
        self._calls[name] += 1
        n = self._calls[name]
        return name if n == 1 else f"{name}#{n}"

    def rerun(self, step: str) -> None:
        """Execute the completed step ``step`` again at its next call, even an effect step (new key generation).

        For an effect step this is the only way it runs again; asked again for the same arguments
        after it ran, it restores (a rerun is made once). The step must have completed before.
        """
        self._reruns.add(check_name("step", step))

    def _remember(self, value: Any, digest: str) -> None:
        """Keep ``id(value) -> digest`` for as long as the value lives (held strongly when it cannot be weakly)."""
        key = id(value)
        try:
            held: Any = weakref.ref(value, lambda _: self._produced.pop(key, None))
        except TypeError:  # lists, dicts, tuples: kept alive, so their id stays theirs
            held = value
        self._produced[key] = (held, digest)

    def _engine_call(
        self,
        name: str,
        policy: StepPolicy,
        declared: StepDeclaration,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _engine.StepCall:
        unique = self._unique_name(name)
        produced = {key: digest for key, (_, digest) in self._produced.items()}
        inputs = {label: _inputs.of_argument(v, produced) for label, v in _arguments(fn, args, kwargs)}
        inputs.update(_inputs.of_file(unique, path) for path in declared.depends_on)
        rerun = name in self._reruns or unique in self._reruns
        self._reruns.discard(name)
        self._reruns.discard(unique)
        return _engine.StepCall(
            self.store, self.pipeline.name, self.run_id, unique, self._owner, policy,
            source=name, inputs=inputs, effect=declared.effect, rerun=rerun,
        )  # fmt: skip

    def _outcome(self, outcome: _engine.StepOutcome, step: str) -> Any:
        """Remember what the step returned, and say why it ran again or was held."""
        value = outcome.values[RETURN]
        digest = outcome.digests.get(RETURN)
        if digest is not None and not _inputs.is_small_plain(value):
            self._remember(value, digest)
        begin = outcome.begin
        if begin.held is not None and begin.why is not None:
            warnings.warn(
                _why.held_warning(
                    step, begin.why, begin.held, f"run.rerun({step!r}) before calling it",
                    f"resumable invalidate {self.run_id} {step}", begin.key_generation,
                ),
                stacklevel=4,
            )  # fmt: skip
        elif not outcome.restored and begin.why:
            _log.info(_why.runs_again(step, begin.why))
        return value

    def _call(
        self,
        name: str,
        policy: StepPolicy,
        declared: StepDeclaration,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        call = self._engine_call(name, policy, declared, fn, args, kwargs)
        outcome = _engine.run_sync(call, lambda: {RETURN: fn(*args, **kwargs)})
        return self._outcome(outcome, call.step)  # type: ignore[no-any-return]

    async def _call_async(
        self,
        name: str,
        policy: StepPolicy,
        declared: StepDeclaration,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        async def body() -> dict[str, Any]:
            return {RETURN: await fn(*args, **kwargs)}

        call = self._engine_call(name, policy, declared, fn, args, kwargs)
        outcome = await _engine.run_async(call, body)
        return self._outcome(outcome, call.step)  # type: ignore[no-any-return]

    def step(self, name: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` as the durable step ``name``.

        The keywords ``retries``, ``backoff``, ``retry_on`` and ``timeout`` set the step's policy,
        ``effect`` and ``depends_on`` mean what they mean for :meth:`Pipeline.step`, and
        ``rerun=True`` asks for a rerun of this call (:meth:`rerun`); every other argument goes to ``fn``.
        An async ``fn`` is refused before it is called (:class:`AsyncStepError`): use :meth:`astep`.
        """
        step_name = check_name("step", name)
        if _is_async(fn):  # checked first: calling it would only make a coroutine nobody awaits
            raise AsyncStepError(step_name, _function_name(fn))
        policy, declared = self._declare(step_name, kwargs)

        def body() -> dict[str, Any]:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):  # a plain function that hands back a coroutine
                if inspect.iscoroutine(value):
                    value.close()  # never awaited, on purpose: say so ourselves, not in a RuntimeWarning
                raise AsyncStepError(step_name, _function_name(fn), returned=True)
            return {RETURN: value}

        call = self._engine_call(step_name, policy, declared, fn, args, kwargs)
        outcome = _engine.run_sync(call, body)
        return self._outcome(outcome, call.step)  # type: ignore[no-any-return]

    async def astep(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await run.astep(name, fn, ...)``: :meth:`step` for an async ``fn``, awaited in this event loop.

        Takes the same keywords as :meth:`step`; ``timeout`` cancels the coroutine. A plain ``fn``
        is called as :meth:`step` would, and an awaitable it returns is awaited.
        """
        step_name = check_name("step", name)
        policy, declared = self._declare(step_name, kwargs)

        async def body() -> dict[str, Any]:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return {RETURN: value}

        call = self._engine_call(step_name, policy, declared, fn, args, kwargs)
        outcome = await _engine.run_async(call, body)
        return self._outcome(outcome, call.step)

    def _declare(self, step_name: str, kwargs: dict[str, Any]) -> tuple[StepPolicy, StepDeclaration]:
        """Take the step's own keywords out of ``kwargs`` (the rest go to the function)."""
        options = {k: kwargs.pop(k) for k in ("retries", "backoff", "retry_on", "timeout") if k in kwargs}
        effect = bool(kwargs.pop("effect", False))
        depends_on = kwargs.pop("depends_on", ())
        policy = make_policy(step_name, **options)
        declared = StepDeclaration(effect=effect, depends_on=_check_paths(step_name, depends_on))
        if _active_run.get() is not self:
            raise NoActiveRunError(self.pipeline.name, step_name)
        if kwargs.pop("rerun", False):
            self.rerun(step_name)
        return policy, declared

    def status(self, step: str) -> StepStatus:
        """The stored status of one step."""
        status = self.store.get_step(self.run_id, step)
        if status is None:
            raise CheckpointNotFoundError(self.store.location, self.run_id, step)
        return status

    def steps(self) -> list[StepStatus]:
        """Every step of this run, in order."""
        return self.store.list_steps(self.run_id)

    def __iter__(self) -> Iterator[StepStatus]:
        return iter(self.steps())


def idempotency_key(scope: str | None = None) -> str:
    """A token for side effects, stable across retries, crashes, restarts and edits of the step.

    Parameters
    ----------
    scope
        Tells several effects of one step apart (``"charge"``, ``"email"``).

    Raises
    ------
    NotInStepError
        When called outside a step.
    """
    ctx = current_step()
    if ctx is None:
        raise NotInStepError
    if ctx.asks_key is not None:
        ctx.asks_key()  # the step is an effect step from now on, and every earlier completion is durable
    return _keys.idempotency_key(ctx.pipeline, ctx.run_id, ctx.step, scope, ctx.key_generation)


def fencing_token() -> int:
    """The fencing token of the executing step's attempt: a number that grows with every change of owner.

    Each time a process takes a run or starts a step it takes the next number of one sequence in
    the store, and every write it makes afterwards carries it: once another owner took over (this
    process's lease ran out, a network partition), the store refuses the old owner's writes
    (:class:`LeaseLostError`). Pass it with a write to a system that should refuse late writes too
    (keep the highest token seen per resource, refuse lower ones), next to :func:`idempotency_key`,
    which stays the same across owners and attempts. See docs/scale.md, "Leases".

    Raises
    ------
    NotInStepError
        When called outside a step.
    """
    ctx = current_step()
    token = ctx.fencing_token() if ctx is not None and ctx.fencing_token is not None else None
    if token is None:
        raise NotInStepError("fencing_token")
    return token


@front_end("python")
def remove_runs(*run_ids: str, store: StoreArg = None, dry_run: bool = False, compact: bool | None = None) -> Removal:
    """Delete whole runs (steps, events, checkpoints nothing else needs, their payloads), as ``resumable rm`` does.

    A run that a live process owns or executes is left whole and listed in ``Removal.refused``
    with a sentence naming the process, as is a run that does not exist; the others go. Then the
    database file is compacted when at least a fifth of it is free (``compact=True``: always,
    ``False``: never). With ``dry_run`` nothing changes and the result says what would go.
    """
    for run_id in run_ids:
        _check_text("run_id", run_id)
    opened = _resolve_store(store)
    removal = opened.remove_runs(tuple(run_ids), current_owner(), dry_run=dry_run)
    if not dry_run and removal.removed and compact is not False:
        opened.compact(force=bool(compact), freed_hint=removal.inline_bytes)
    return removal


@front_end("python")
def load(run_id: str, step: str, name: str | None = None, store: StoreArg = None) -> Any:
    """Return a checkpointed value of a completed step (its return value, or the output ``name``).

    The digest is checked before anything is unpickled; loading is still unpickling, so load only
    stores you trust. A step whose latest attempt failed (or is running, or was interrupted) after
    an earlier attempt completed still has that attempt's checkpoint: it is returned with a
    :class:`LastGoodCheckpointWarning` naming the attempt.

    Raises
    ------
    CheckpointNotFoundError
        When the run has no step ``step``, the step is not completed, it has no output ``name``,
        or it has several outputs and ``name`` is not given.
    CheckpointIntegrityError
        When the stored bytes fail their digest or signature check (nothing is unpickled).
    """
    _check_text("run_id", run_id)
    _check_text("step", step)
    _check_text("name", name, optional=True)
    # Loading only reads: a store this user cannot write is opened read-only rather than refused.
    opened = open_store(store, read_only=True) if store is None or isinstance(store, (str, os.PathLike)) else None
    opened = opened or _resolve_store(store)
    status = opened.get_step(run_id, step)
    if status is None:
        known_run = opened.get_run(run_id) is not None
        raise CheckpointNotFoundError(opened.location, run_id, step if known_run else None)
    kept = status.state is not StepState.COMPLETED
    if kept and status.kept_attempt is None:
        raise CheckpointNotFoundError(opened.location, run_id, step, state=status.state.value)
    every = {r.name: r for r in opened.checkpoint_refs(run_id, step) if r.kind == "value"}
    refs = {n: r for n, r in every.items() if not _keys.is_pseudo_output(n)}  # <state>, <shared>: not outputs
    if name is None:
        if RETURN in refs:
            name = RETURN
        elif len(refs) == 1:
            name = next(iter(refs))
        else:
            raise CheckpointNotFoundError(opened.location, run_id, step, outputs=list(refs))
    if name not in refs:
        raise CheckpointNotFoundError(opened.location, run_id, step, output=name, outputs=list(refs))
    value = opened.load_value(refs[name])
    if kept and status.kept_attempt is not None:
        warning = LastGoodCheckpointWarning(
            run_id, step, name, status.kept_attempt, status.state.value, status.attempts,
            status.kept_execution or 1, status.executions,
        )  # fmt: skip
        warnings.warn(warning, stacklevel=2)
    if isinstance(value, _aliases.SharedRef) and _aliases.SHARED in every:  # stored with those sharing its memory
        value = _aliases.unpack(opened.load_value(every[_aliases.SHARED]))[value.name]
    return value
