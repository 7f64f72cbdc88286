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

__all__ = ["_function_from_code", "load_ipython_extension"]


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
