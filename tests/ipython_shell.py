"""A real IPython shell with resumable loaded, and what a kernel restart does to it (shared by tests)."""

from __future__ import annotations

from typing import Any

from IPython.testing import globalipapp

import resumable
from resumable._kernel_run import set_notebook_run
from resumable._magics.magics import DurableMagics


def fresh_kernel(ip: Any) -> None:
    """What a kernel restart does to resumable: new magics state, no current run, empty namespace."""
    for magics in list(ip.magics_manager.registry.values()):
        if isinstance(magics, DurableMagics):  # a dead kernel's hooks die with it
            for event, hook in (("pre_run_cell", magics.remember_cell), ("post_run_cell", magics.track_plain_cell)):
                if hook in ip.events.callbacks[event]:
                    ip.events.unregister(event, hook)
    ip.register_magics(DurableMagics(ip, make_panel=resumable.panel))
    set_notebook_run(None)
    for name in [n for n in ip.user_ns if not n.startswith("_") and n not in ip.user_ns_hidden]:
        del ip.user_ns[name]


def started_shell() -> Any:
    """The process's IPython shell with resumable loaded and a fresh kernel's state."""
    globalipapp.start_ipython()
    ip = globalipapp.get_ipython()
    if "resumable" not in ip.extension_manager.loaded:
        ip.run_line_magic("load_ext", "resumable")
    fresh_kernel(ip)
    return ip


def shell_on_run(store: str, pipeline: str, run_id: str = "r1") -> Any:
    """A started shell on ``store`` in run ``run_id``, with ``os`` imported as a setup cell would (not an input).

    For the scripts the tests run in an interpreter of their own (to kill it, or to fill its disk).
    """
    import os

    os.environ["RESUMABLE_STORE"] = store
    ip = started_shell()
    ip.run_cell(f"%durable_run {pipeline} --run-id {run_id}").raise_error()
    ip.user_ns["os"] = os
    ip.user_ns_hidden["os"] = os
    return ip


def step(ip: Any, line: str, body: str) -> Any:
    """Run a %%durable_step cell the way a notebook does; return the ExecutionResult."""
    return ip.run_cell(f"%%durable_step {line}\n{body}")
