"""State a step changes outside its variables, saved with the step and put back when it is restored.

A restored step does not run, so whatever it did besides binding variables would be lost: the
global random generators it advanced (``np.random.seed(1)`` in one step, draws in the next), the
settings it made (``plt.style.use``, ``mpl.rc``, ``pd.set_option``) and the setup magics it ran
(``%matplotlib inline``, ``%load_ext``). An executed step that did any of these stores a
``<state>`` pseudo-output:

- the states of Python's ``random`` and of numpy's legacy global ``RandomState`` after the step,
  when the step changed them (a few kilobytes), put back on restore, so later draws continue
  where an uninterrupted run would have;
- the matplotlib ``rcParams`` and pandas options the step changed (the difference between before
  and after), made again on restore;
- the setup line magics in the step's source (:data:`SETUP_MAGICS`), run again on restore: they
  are idempotent, and the next cell may need them (``Line magic function ... not found``).

Not seen: other libraries' global state (``torch.manual_seed``, ``tf.random``, a module's own
globals), environment variables, the working directory. The docs list them with what to do.
"""

from __future__ import annotations

import importlib
import random
import shlex
import sys
from collections.abc import Mapping
from typing import Any

STATE = "<state>"  # the pseudo-output name (no cell can bind it)

#: Line magics that set up the session; a restored step's source is scanned for them and they run again.
SETUP_MAGICS = frozenset({"matplotlib", "load_ext", "reload_ext", "config", "autoreload", "aimport"})
# Backend keys follow %matplotlib, run again itself: setting them as rcParams would switch backends.
_RC_SKIPPED = frozenset({"backend", "backend_fallback", "interactive"})


def _pandas_options() -> dict[str, Any]:
    """Pandas' options, flattened to ``display.max_rows``-style keys (empty when pandas is not loaded)."""
    if "pandas" not in sys.modules:
        return {}
    try:
        from pandas._config import config
    except ImportError:
        return {}
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[prefix + key] = value

    walk("", config._global_config)  # type: ignore[attr-defined]
    return out


def _rc_params() -> dict[str, Any]:
    """Matplotlib's rcParams as stored (empty when matplotlib is not loaded)."""
    mpl = sys.modules.get("matplotlib")
    if mpl is None or not hasattr(mpl, "rcParams"):
        return {}
    return {k: v for k, v in dict.items(mpl.rcParams) if k not in _RC_SKIPPED}


def _numpy_state() -> Any:
    numpy = sys.modules.get("numpy")
    return numpy.random.get_state() if numpy is not None else None


def _same_numpy_state(a: Any, b: Any) -> bool:
    """Whether two ``np.random.get_state()`` tuples are equal (one holds an array)."""
    if a is None or b is None:
        return a is b
    numpy = sys.modules["numpy"]
    return bool(a[0] == b[0] and numpy.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:]))


def settings() -> dict[str, Any]:
    """What a step may change besides its variables, taken before it runs."""
    return {
        "matplotlib": _rc_params(), "pandas": _pandas_options(),
        "random": random.getstate(), "numpy": _numpy_state(),
    }  # fmt: skip


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in after.items():
        try:
            same = key in before and bool(before[key] == value)
        except Exception:  # an array-valued setting: compared by identity
            same = key in before and before[key] is value
        if not same:
            out[key] = value
    return out


def setup_magics(raw: str) -> list[tuple[str, str]]:
    """The setup line magics a step's source runs (``%matplotlib inline`` -> ``('matplotlib', 'inline')``)."""
    found = []
    for line in raw.splitlines():
        text = line.strip()
        if not text.startswith("%") or text.startswith("%%"):
            continue
        name, _, rest = text[1:].partition(" ")
        if name in SETUP_MAGICS:
            found.append((name, rest.strip()))
    return found


def capture(before: Mapping[str, Any], raw: str) -> dict[str, Any]:
    """The ``<state>`` of a step that just ran: what it changed of the random states and settings, its setup magics.

    Empty when the step changed none of them (most steps): nothing more is stored. A random state
    the step did not advance needs no restoring: the cells before it leave it as they did.
    """
    state: dict[str, Any] = {}
    now = settings()
    if now["random"] != before.get("random"):
        state["random"] = now["random"]
    if not _same_numpy_state(now["numpy"], before.get("numpy")):
        state["numpy"] = now["numpy"]
    for kind in ("matplotlib", "pandas"):
        delta = _changed(before.get(kind, {}), now[kind])
        if delta:
            state[kind] = delta
    magics = setup_magics(raw)
    if magics:
        state["magics"] = magics
    return state


def apply(state: Mapping[str, Any] | None, shell: Any) -> list[str]:
    """Put a restored step's ``<state>`` back; return what could not be (one line each, for the user)."""
    if not state:
        return []
    problems: list[str] = []
    for name, line in state.get("magics", ()):
        if name in ("load_ext", "reload_ext") and all(e in shell.extension_manager.loaded for e in shlex.split(line)):
            continue  # loaded already: %load_ext would only say so
        try:
            shell.run_line_magic(name, line)
        except Exception as exc:
            problems.append(f"%{name} {line}: {type(exc).__name__}: {exc}")
    if state.get("matplotlib"):
        try:
            importlib.import_module("matplotlib").rcParams.update(state["matplotlib"])
        except Exception as exc:
            problems.append(f"matplotlib rcParams: {type(exc).__name__}: {exc}")
    for key, value in state.get("pandas", {}).items():
        try:
            importlib.import_module("pandas").set_option(key, value)
        except Exception as exc:
            problems.append(f"pandas option {key!r}: {type(exc).__name__}: {exc}")
    if "random" in state:
        random.setstate(state["random"])
    if "numpy" in state:
        importlib.import_module("numpy").random.set_state(state["numpy"])
    return problems
