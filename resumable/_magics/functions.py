"""Functions and classes defined in a notebook: stored without their globals, rebound to the notebook on restore."""

from __future__ import annotations

import builtins
import types
from typing import Any

_REBIND = "__resumable_rebind__"


def _function_from_code(
    code: types.CodeType,
    qualname: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    annotations: dict[str, Any],
    doc: str | None,
    attrs: dict[str, Any],
) -> types.FunctionType:
    """Rebuild a notebook function from its code, with a bare namespace until a restore rebinds it."""
    fn = types.FunctionType(code, {"__builtins__": builtins, "__name__": "__main__"}, code.co_name, defaults)
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    fn.__annotations__ = annotations
    fn.__doc__ = doc
    fn.__dict__.update(attrs)
    setattr(fn, _REBIND, True)
    return fn


class NotebookFunction:
    """A function defined in the notebook, stored as its code, without its globals.

    cloudpickle would copy every global such a function uses into its checkpoint (a connection
    makes it unpicklable, a DataFrame makes it large) and the restored function would read those
    copies forever. Stored as code, it unpickles to a plain function (``resumable.load`` returns a
    function), and a restore rebinds it to the notebook's namespace, as if its ``def`` ran again.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Any, ...]:
        fn = self.fn
        attrs = {k: v for k, v in fn.__dict__.items() if k != _REBIND}
        state = (fn.__code__, fn.__qualname__, fn.__defaults__, fn.__kwdefaults__, dict(fn.__annotations__))
        return (_function_from_code, (*state, fn.__doc__, attrs))

    @classmethod
    def wrap(cls, value: Any, namespace: dict[str, Any]) -> Any:
        """Wrap a function whose globals are the notebook's; anything else is stored as it is."""
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace and value.__closure__ is None:
            return cls(value)
        return value


def unwrap(value: Any, namespace: dict[str, Any]) -> Any:
    """A restored notebook function, bound to the notebook's namespace again."""
    if not (isinstance(value, types.FunctionType) and getattr(value, _REBIND, False)):
        return value
    fn = types.FunctionType(value.__code__, namespace, value.__name__, value.__defaults__)
    fn.__kwdefaults__ = value.__kwdefaults__
    fn.__qualname__ = value.__qualname__
    fn.__annotations__ = value.__annotations__
    fn.__doc__ = value.__doc__
    fn.__dict__.update({k: v for k, v in value.__dict__.items() if k != _REBIND})
    return fn


def _rebound(fn: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """``fn`` looking up its globals in ``namespace`` (its closure, ``super()``'s cell included, kept)."""
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__annotations__ = fn.__annotations__
    new.__doc__ = fn.__doc__
    new.__module__ = fn.__module__
    new.__dict__.update(fn.__dict__)
    return new


def _detached(fn: object, namespace: dict[str, Any]) -> bool:
    return isinstance(fn, types.FunctionType) and fn.__module__ == "__main__" and fn.__globals__ is not namespace


def _rebind_member(member: object, namespace: dict[str, Any]) -> object | None:
    """The class member with its notebook functions rebound, or None when nothing needed it."""
    if isinstance(member, types.FunctionType):
        return _rebound(member, namespace) if _detached(member, namespace) else None
    if isinstance(member, (staticmethod, classmethod)) and _detached(member.__func__, namespace):
        return type(member)(_rebound(member.__func__, namespace))  # type: ignore[arg-type]
    if isinstance(member, property):
        parts = [member.fget, member.fset, member.fdel]
        if any(_detached(p, namespace) for p in parts):
            fget, fset, fdel = (_rebound(p, namespace) if _detached(p, namespace) else p for p in parts)  # type: ignore[arg-type]
            return property(fget, fset, fdel, member.__doc__)  # type: ignore[arg-type]
    return None


def rebind_class(value: Any, namespace: dict[str, Any]) -> None:
    """Make the methods of a notebook class (or of a notebook object's class) see the notebook's globals.

    cloudpickle stores a class defined in the notebook by value, its methods with a copy of the
    globals they named; restored, they would look names up in that detached copy (a helper that
    ``eval``s a name, or reads a global another cell changed, raises ``NameError`` or reads an old
    value). They are rebound to the notebook's namespace, as if the ``class`` statement ran again.
    """
    cls = value if isinstance(value, type) else type(value)
    for klass in cls.__mro__:
        if klass.__module__ != "__main__":
            continue
        for attr, member in list(vars(klass).items()):
            new = _rebind_member(member, namespace)
            if new is not None:
                setattr(klass, attr, new)
