"""Which notebook variables share memory, so a step stores them together and a restore keeps them shared.

Each output is pickled on its own, so two names for one object (``b = a``, ``ax = fig.axes``,
``x_sub = x[:2, :2]``) would come back as separate copies, and a write through one would no longer
reach the other. The notebook front end asks :func:`sharing` which of a step's outputs share memory
with each other or with other variables of the notebook: those are stored in one pickle (a restore
gives one object again), and the other variables are added to the step's outputs (a view written
through changes its base, so the base is checkpointed too).

Sharing is found by identity, walking what each output refers to (``gc.get_referents``, the
elements of object arrays, the owner of a numpy view's memory), up to :data:`WALK_LIMIT` objects
per step. What it does not see: sharing deeper than the walk reaches, and objects that hide their
references from the garbage collector (extension types that do not expose them).

Pure: no store, no IPython.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from resumable._keys import is_pseudo_output

#: Objects walked from one step's outputs, at most.
WALK_LIMIT = 20_000

# Immutable leaves and shared machinery: two variables pointing at the same one do not share state.
_ATOMIC = (
    int, float, complex, str, bytes, bool, type(None), type, types.ModuleType, types.FunctionType,
    types.BuiltinFunctionType, types.MethodType, types.CodeType, range, slice, type(Ellipsis), type(NotImplemented),
)  # fmt: skip


def _counted(value: object) -> bool:
    """Whether ``value`` can carry state two names could share.

    Decided by the value's type alone (not by a ``__class__`` a proxy may claim), so a walk can
    decide it once per type: :func:`reach` keeps the answers for the length of one walk.
    """
    return not issubclass(type(value), _ATOMIC)


def _owner(value: object) -> object | None:
    """The object that owns a numpy array's memory (the array itself when it owns it); None otherwise."""
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(value, numpy.ndarray):
        return None
    while isinstance(value, numpy.ndarray) and value.base is not None:
        value = value.base
    return value


def _children(value: object) -> list[object]:
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        found: list[object] = [] if value.base is None else [value.base]
        if value.dtype.hasobject:
            found += value.ravel().tolist()[:WALK_LIMIT]
        return found
    return list(gc.get_referents(value))


def reach(values: Iterable[object], limit: int = WALK_LIMIT) -> set[int]:
    """The ids of what ``values`` refer to, directly or not, that can carry state (walked up to ``limit``)."""
    seen: set[int] = set()
    counted: dict[type, bool] = {}  # _counted per type, for this walk only
    todo = [v for v in values if _counted(v)]
    numpy = sys.modules.get("numpy")
    ndarray = numpy.ndarray if numpy is not None else ()
    referents = gc.get_referents
    while todo and len(seen) < limit:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, ndarray):
            owner = _owner(value)
            if owner is not None and owner is not value:
                todo.append(owner)
            children = _children(value)
        else:
            children = referents(value)
        for child in children:
            kind = type(child)
            keep = counted.get(kind)
            if keep is None:
                keep = counted[kind] = not issubclass(kind, _ATOMIC)
            if keep and id(child) not in seen:
                todo.append(child)
    return seen


def _surface(value: object) -> set[int]:
    """The ids by which another variable's walk can meet ``value``: itself, its memory's owner, its parts."""
    out = {id(value)}
    owner = _owner(value)
    if owner is not None:
        out.add(id(owner))
        if not value.dtype.hasobject:  # type: ignore[attr-defined]
            return out  # the elements of a numeric array are not objects another variable can hold
    try:
        large = len(value) > WALK_LIMIT  # type: ignore[arg-type]
    except Exception:  # not sized
        large = False
    if not large:
        out |= {id(c) for c in _children(value) if _counted(c)}
    return out


def sharing(outputs: Mapping[str, object], others: Mapping[str, object]) -> tuple[set[str], set[str]]:
    """Which outputs share memory with another output or variable, and which variables share it with outputs.

    Returns
    -------
    (shared, added)
        ``shared``: the outputs (and added variables) to pickle together; ``added``: the variables of
        ``others`` to store with the step because an output shares memory with them.
    """
    names = [n for n, v in outputs.items() if _counted(v)]
    reaches = {n: reach([outputs[n]]) for n in names}
    everything = set().union(*reaches.values()) if reaches else set()
    added = {n for n, v in others.items() if n not in outputs and _counted(v) and _surface(v) & everything}
    members = {**{n: outputs[n] for n in names}, **{n: others[n] for n in added}}
    for name in added:
        reaches[name] = reach([members[name]])
    shared: set[str] = set(added)
    listed = list(members)
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            if _surface(members[a]) & reaches[b] or _surface(members[b]) & reaches[a]:
                shared |= {a, b}
    return (shared if len(shared) > 1 else set()), added


SHARED = "<shared>"  # the pseudo-output holding the outputs pickled together


@dataclass(frozen=True, slots=True)
class SharedRef:
    """Stands for an output stored inside the step's ``<shared>`` pickle.

    ``token`` is new on every execution, so the stand-in's digest (which steps that read the name
    record as its fingerprint) changes whenever the shared values may have.
    """

    name: str
    token: str


@dataclass(frozen=True, slots=True)
class ArrayView:
    """A numpy array stored as a window on the array owning its memory (pickle alone would copy each view)."""

    owner: Any  # the ndarray that owns the memory, pickled once for every view on it
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: Any

    def array(self) -> Any:
        numpy = sys.modules["numpy"]
        return numpy.ndarray(self.shape, self.dtype, buffer=self.owner, offset=self.offset, strides=self.strides)


def pack(group: Mapping[str, object]) -> dict[str, object]:
    """The values to pickle together, numpy arrays sharing memory replaced by views on their owner."""
    numpy = sys.modules.get("numpy")
    out = dict(group)
    if numpy is None:
        return out
    for name, value in group.items():
        owner: Any = _owner(value)
        if owner is None or owner is value or not isinstance(owner, numpy.ndarray) or owner.base is not None:
            continue
        if not owner.flags.c_contiguous:
            continue
        assert isinstance(value, numpy.ndarray)
        start = owner.__array_interface__["data"][0]
        offset = value.__array_interface__["data"][0] - start
        out[name] = ArrayView(owner, offset, value.shape, value.strides, value.dtype)
    return out


def unpack(group: Mapping[str, object]) -> dict[str, object]:
    """The values :func:`pack` stored, views made views again."""
    return {n: v.array() if isinstance(v, ArrayView) else v for n, v in group.items()}


def resolve(values: Mapping[str, object]) -> dict[str, object]:
    """A step's restored outputs with every :class:`SharedRef` replaced by its value (pseudo-outputs left out)."""
    stored = values.get(SHARED)
    group = unpack(stored) if isinstance(stored, dict) else None
    out: dict[str, object] = {}
    for name, value in values.items():
        if is_pseudo_output(name):
            continue
        out[name] = group[value.name] if isinstance(value, SharedRef) and isinstance(group, dict) else value
    return out
