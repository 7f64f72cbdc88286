"""The Python interface: pipelines, runs, durable steps, idempotency keys and ``load``."""

from __future__ import annotations

import functools
import inspect
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from resumable import _engine, _keys
from resumable._context import current_step
from resumable._engine import RETURN
from resumable._owner import current_owner
from resumable._records import RunInfo, StepPolicy, StepStatus
from resumable._runs import choose_run
from resumable._states import StepState
from resumable._store import Store, open_store
from resumable._units import is_seconds
from resumable.errors import (
    CheckpointNotFoundError,
    NoActiveRunError,
    NotInStepError,
    StepDefinitionError,
)

P = ParamSpec("P")
R = TypeVar("R")

StoreArg = str | os.PathLike[str] | Store | None


def _resolve_store(store: StoreArg) -> Store:
    if store is None or isinstance(store, (str, os.PathLike)):
        return open_store(store)
    return store


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

    Examples
    --------
    >>> pipe = resumable.Pipeline("checkout", store="shop.duckdb")
    >>> @pipe.step(retries=3)
    ... def charge(order): ...
    >>> with pipe.run(run_id="order-42"):
    ...     receipt = charge(order)
    """

    def __init__(self, name: str, store: StoreArg = None) -> None:
        self.name = check_name("pipeline", name)
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

        A completed step returns its checkpointed value without calling the function.
        """

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            step_name = check_name("step", name or func.__name__)
            policy = make_policy(step_name, retries, backoff, retry_on, timeout)
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    run = self._active(step_name)
                    return await run._call_async(step_name, policy, func, args, kwargs)  # type: ignore[arg-type]

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                run = self._active(step_name)
                return run._call(step_name, policy, func, args, kwargs)

            return wrapper

        return decorate(fn) if fn is not None else decorate

    def _active(self, step: str) -> Run:
        run = _active_run.get()
        if run is None or run.pipeline is not self:
            raise NoActiveRunError(self.name, step)
        return run

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
        self._token: Any = None
        self._owner = current_owner()

    def __repr__(self) -> str:
        return f"Run({self.pipeline.name!r}, {self.run_id!r})"

    @property
    def store(self) -> Store:
        """The pipeline's store."""
        return self.pipeline.store

    def __enter__(self) -> Run:
        store = self.store
        store.open_run(self.run_id, self.pipeline.name, self._params)
        store.claim_run(self.run_id, self._owner)
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

    def _engine_call(self, name: str, policy: StepPolicy) -> _engine.StepCall:
        return _engine.StepCall(
            self.store, self.pipeline.name, self.run_id, self._unique_name(name), self._owner, policy,
            source=name,
        )  # fmt: skip

    def _call(
        self, name: str, policy: StepPolicy, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> R:
        outcome = _engine.run_sync(self._engine_call(name, policy), lambda: {RETURN: fn(*args, **kwargs)})
        return outcome.values[RETURN]  # type: ignore[no-any-return]

    async def _call_async(
        self,
        name: str,
        policy: StepPolicy,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        async def body() -> dict[str, Any]:
            return {RETURN: await fn(*args, **kwargs)}

        outcome = await _engine.run_async(self._engine_call(name, policy), body)
        return outcome.values[RETURN]  # type: ignore[no-any-return]

    def step(self, name: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` as the durable step ``name``.

        The keywords ``retries``, ``backoff``, ``retry_on`` and ``timeout`` set the step's policy;
        every other argument goes to ``fn``.
        """
        options = {k: kwargs.pop(k) for k in ("retries", "backoff", "retry_on", "timeout") if k in kwargs}
        policy = make_policy(check_name("step", name), **options)
        if _active_run.get() is not self:
            raise NoActiveRunError(self.pipeline.name, name)
        return self._call(name, policy, fn, args, kwargs)

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
    return _keys.idempotency_key(ctx.pipeline, ctx.run_id, ctx.step, scope)


def load(run_id: str, step: str, name: str | None = None, store: StoreArg = None) -> Any:
    """Return a checkpointed value of a completed step (its return value, or the output ``name``).

    The digest is checked before anything is unpickled; loading is still unpickling, so load only
    stores you trust.

    Raises
    ------
    CheckpointNotFoundError
        When the run has no step ``step``, the step is not completed, it has no output ``name``,
        or it has several outputs and ``name`` is not given.
    CheckpointIntegrityError
        When the stored bytes fail their digest or signature check (nothing is unpickled).
    """
    opened = _resolve_store(store)
    status = opened.get_step(run_id, step)
    if status is None:
        known_run = opened.get_run(run_id) is not None
        raise CheckpointNotFoundError(opened.location, run_id, step if known_run else None)
    if status.state is not StepState.COMPLETED:
        raise CheckpointNotFoundError(opened.location, run_id, step, state=status.state.value)
    refs = {r.name: r for r in opened.checkpoint_refs(run_id, step) if r.kind == "value"}
    if name is None:
        if RETURN in refs:
            name = RETURN
        elif len(refs) == 1:
            name = next(iter(refs))
        else:
            raise CheckpointNotFoundError(opened.location, run_id, step, outputs=list(refs))
    if name not in refs:
        raise CheckpointNotFoundError(opened.location, run_id, step, output=name, outputs=list(refs))
    return opened.load_value(refs[name])
