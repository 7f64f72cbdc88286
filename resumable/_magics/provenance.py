"""Where each notebook variable came from, so a step's inputs can be fingerprinted without hashing data.

The kernel keeps one :class:`Provenance`. Every plain cell that finishes (``post_run_cell``)
records, for the names it bound or changed in place, a fingerprint derived from its source and
from what it read; every durable step records its outputs by their checkpoint digests. A new
kernel running the same cells rebuilds the same fingerprints, so objects that merely differ
between kernels (a client, a connection, a timestamp made by an unchanged cell) do not count as
changed, while an edited cell does. The rules themselves live in :mod:`resumable._inputs`.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

from resumable import _cellast, _inputs
from resumable._inputs import Input
from resumable._keys import is_pseudo_output
from resumable._magics.functions import NotebookFunction
from resumable._magics.outputs import normalized

_STEP_MAGIC = "%%durable_step"
_FUNCTION_DEPTH = 3  # globals of helpers the step calls, of the helpers they call, ...


def is_step_cell(raw: str) -> bool:
    """Whether a cell is a durable step (its names are recorded by the step, not as a plain cell)."""
    return raw.lstrip().startswith(_STEP_MAGIC)


def is_injected_parameters_cell(raw: str) -> bool:
    """Whether a cell is a runner's injected parameters cell (papermill's and ``resumable execute``'s).

    Both runners start the cell they inject with ``# Parameters``; the kernel sees no cell tags.
    """
    return raw.lstrip().startswith("# Parameters")


def injected_parameters(raw: str, python: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values a runner's injected parameters cell binds; only small plain values, what a runner can inject."""
    if not is_injected_parameters_cell(raw):
        return {}
    try:
        names = _cellast.analyze(python)
    except SyntaxError:
        return {}
    return {n: namespace[n] for n in names.binds if n in namespace and _inputs.is_small_plain(namespace[n])}


def _code_names(code: types.CodeType) -> set[str]:
    """Global names a function's code (and the code nested in it) may look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _function_of(value: object) -> types.FunctionType | None:
    """The notebook function behind ``value`` (a plain function or a class's methods are not followed)."""
    if isinstance(value, NotebookFunction):
        return None
    if isinstance(value, types.FunctionType) and value.__module__ in ("__main__", None):
        return value
    return None


def _method_names(value: object) -> set[str]:
    """Global names the methods of a notebook class (or of a notebook object's class) may look up.

    ``acc.add(v)`` whose method appends to a notebook list makes that list something the step
    reads (and may change in place), as a helper function's globals are.
    """
    cls = value if isinstance(value, type) else type(value)
    if cls.__module__ != "__main__":
        return set()
    names: set[str] = set()
    for member in vars(cls).values():
        func = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
        if isinstance(func, types.FunctionType):
            names |= _code_names(func.__code__)
    return names


def _changed_in_place(found: Input) -> bool:
    return (found.origin or "").startswith(_inputs.CHANGED_IN_PLACE)


class Provenance:
    """The fingerprint of every variable the kernel has seen bound, by name."""

    def __init__(self) -> None:
        self.known: dict[str, Input] = {}
        self.weak_told: set[str] = set()

    def of(self, name: str, value: object) -> Input:
        """The fingerprint of ``name`` now: where it came from, else by its content.

        A module is code, not data: it is fingerprinted by the module it is (``np`` made to name
        ``cupy`` is a change), never by the cell that imported it. Otherwise editing an import cell,
        or importing ``resumable`` before ``%load_ext`` in one kernel and after it in the next, made
        every step that reads the module look changed after a restart, and held effect steps
        listed it among their changed inputs. A module a plain cell changed (``cfg.threshold = 0.7``)
        keeps that change in its fingerprint, chained from the module's own.
        """
        found = self.known.get(name)
        if isinstance(value, types.ModuleType) and (found is None or not _changed_in_place(found)):
            return Input(origin="module:" + value.__name__, shown=value.__name__)
        if found is not None:
            return found
        return _inputs.of_unknown(value)

    def inputs(self, reads: Iterable[str], namespace: Mapping[str, Any]) -> dict[str, Input]:
        """What a cell reads, fingerprinted; notebook functions it calls bring the globals they use.

        A helper ``def keep(x): return x > threshold`` makes ``threshold`` an input of every step
        that calls ``keep``, so editing the cell that binds it re-runs those steps.
        """
        out: dict[str, Input] = {}
        todo = [(name, 0) for name in reads]
        while todo:
            name, depth = todo.pop(0)
            if name in out or name not in namespace:
                continue  # a builtin, or bound by the cell before it is read
            value = namespace[name]
            out[name] = self.of(name, value)
            fn = _function_of(value)
            if fn is not None and depth < _FUNCTION_DEPTH:
                todo += [(n, depth + 1) for n in sorted(_code_names(fn.__code__)) if n != name]
            elif depth < _FUNCTION_DEPTH:
                todo += [(n, depth + 1) for n in sorted(_method_names(value)) if n != name]
        return out

    def after_plain_cell(self, python: str, namespace: Mapping[str, Any]) -> None:
        """Record the names a plain cell bound or changed, derived from its source and what it read."""
        try:
            names = _cellast.analyze(python)
        except SyntaxError:
            return  # it did not run
        read = self.inputs(names.reads, namespace)
        source = normalized(python)
        for name in names.mutates:
            before = read.get(name) or self.known.get(name)
            if before is not None and name in namespace:
                self.known[name] = _inputs.changed_in_place(before, source)
        for name in names.binds:
            if name in namespace:
                value = namespace[name]
                # A function's globals are followed where it is called (``inputs``), so a ``def``
                # counts as its own source only: an edit of ``threshold`` is reported once, as itself.
                chained = {} if _function_of(value) is not None else read
                self.known[name] = _inputs.of_cell(source, name, chained, value)
        for name in names.deletes:
            self.known.pop(name, None)

    def after_step(
        self,
        python: str,
        names: _cellast.CellNames,
        inputs: Mapping[str, Input],
        digests: Mapping[str, str],
        namespace: Mapping[str, Any],
    ) -> None:
        """Record a step's outputs by their checkpoints; what it bound but did not store, by its source."""
        source = normalized(python)
        # Besides what the syntax shows, a step stores what it changed in place and what shares memory with it.
        found = [n for n in digests if not is_pseudo_output(n)]
        for name in dict.fromkeys([*names.binds, *names.mutates, *found]):
            if name in digests:
                self.known[name] = _inputs.of_checkpoint(digests[name], namespace.get(name))
            elif name in namespace:
                self.known[name] = _inputs.of_cell(source, name, inputs, namespace[name])
        for name in names.deletes:
            self.known.pop(name, None)

    def weak_notice(self, step: str, inputs: Mapping[str, Input], namespace: Mapping[str, Any]) -> str | None:
        """Once per name: which inputs could be fingerprinted by their type only, and what that means."""
        weak = [n for n, i in inputs.items() if i.weak and n not in self.weak_told]
        if not weak:
            return None
        self.weak_told.update(weak)
        listed = ", ".join(f"'{n}' ({type(namespace.get(n)).__name__})" for n in weak)
        return (
            f"resumable: step '{step}' reads {listed}, bound outside any cell resumable saw and too large or "
            "not picklable to fingerprint; a change of its content will not make the step run again. "
            "Bind it in a cell of this notebook (or a step), or use --force."
        )
