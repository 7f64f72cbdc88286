"""Functions defined in a notebook, checkpointed as their code without their globals."""

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
