"""The IPython extension: ``%load_ext resumable`` registers :class:`~resumable._magics.magics.DurableMagics`.

``magics`` holds the magics, ``executor`` runs a cell's attempts and trims tracebacks, ``awaiting``
has IPython await a step cell that awaits, ``outputs`` reads ``--outputs``/``--exclude`` and
collects the values to store, ``functions`` checkpoints notebook functions as code.
IPython's magic machinery is imported only when the extension loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Checkpoints written before the move name this module as the home of the rebuild function.
from resumable._magics.functions import _function_from_code

__all__ = ["_function_from_code", "fork_from_here", "load_ipython_extension"]


def load_ipython_extension(ipython: Any, make_panel: Callable[..., Any] | None = None) -> None:
    """Register one :class:`DurableMagics` (loading twice keeps the first).

    ``make_panel`` is ``resumable.panel``, which ``%durable_panel`` calls; ``resumable``'s own
    ``load_ipython_extension`` hands it in, since one front end never imports another.
    """
    from resumable._magics.magics import DurableMagics

    for existing in ipython.magics_manager.registry.values():
        if isinstance(existing, DurableMagics):
            existing.make_panel = existing.make_panel or make_panel
            return
    ipython.register_magics(DurableMagics(ipython, make_panel))


def fork_from_here(ipython: Any, step: str) -> str:
    """Fork the notebook's current run from ``step`` and make the new run current; returns the new run id.

    What the panel's "Fork from here" calls (as ``functools.partial(fork_from_here, shell)``, a
    ``Callable[[str], str]``): exactly ``%durable_run NAME --fork CURRENT --from STEP``. Raises
    IPython's UsageError, with our message, when the kernel has no run yet or the fork is refused.
    """
    from IPython.core.error import UsageError

    from resumable._magics.magics import DurableMagics

    for existing in ipython.magics_manager.registry.values():
        if isinstance(existing, DurableMagics):
            return existing.fork_from(step)
    raise UsageError("resumable: '%load_ext resumable' first, then start a run with '%durable_run NAME'.")
