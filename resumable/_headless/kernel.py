"""Kernels for headless runs: checked names, Unix-socket transport, quick death detection, Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resumable import _step_report
from resumable.errors import NotebookInputError


def check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        problem = f"is not installed (installed: {known})"
        raise NotebookInputError("Jupyter kernel", name, problem, "Pass one of them with --kernel.") from None


def ipc_config(socket_dir: str) -> Any:
    """Kernels listen on Unix sockets in a private folder, not on TCP ports anyone local can reach."""
    from traitlets.config import Config

    config = Config()
    if sys.platform != "win32":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(socket_dir) / "kernel")
    return config


ALIVE_POLL_S = 0.02
EXIT_POLL_S = 0.01


def manager_class() -> Any:
    """jupyter_client's AsyncKernelManager, noticing a kernel's exit at shutdown within 10 ms.

    A graceful shutdown asks the kernel to exit, then polls the process every 0.1 s: each run paid
    up to 0.1 s after its kernel had already exited (a quarter of the shutdown, measured). The
    kernel is still asked and still given the same time to run its exit handlers; only the
    checking is more frequent (a ``poll()`` of the process, costing nothing measurable). If
    jupyter_client renames this private hook, the override is unused and shutdown keeps its pace.
    """
    from jupyter_client.manager import AsyncKernelManager

    class _Manager(AsyncKernelManager):  # type: ignore[misc]
        async def _async_finish_shutdown(
            self, waittime: float | None = None, pollinterval: float = 0.1, *args: Any, **kwargs: Any
        ) -> None:
            await super()._async_finish_shutdown(waittime, min(pollinterval, EXIT_POLL_S), *args, **kwargs)

    return _Manager


def client_class() -> Any:
    """The NotebookClient of nbclient, taking step reports out of the outputs and noticing a dead kernel quickly.

    Step reports (``resumable._step_report``) go to the client's ``on_step_report``, not into the
    executed notebook.

    A dead kernel is noticed within 0.02 s instead of 1 s: nbclient checks a running cell's kernel
    once a second, and after a crash that second is most of what a restart costs beyond starting
    the new kernel. The check is a ``poll()`` of the kernel process, so doing it fifty times as
    often costs nothing measurable. If nbclient renames this private hook, the override is simply
    unused and detection falls back to nbclient's pace.
    """
    import asyncio

    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    class _Client(NotebookClient):  # type: ignore[misc]
        on_step_report: Callable[[dict[str, Any]], None] | None = None

        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            """Hand a step report to ``on_step_report``; it is never one of the cell's outputs."""
            if msg["msg_type"] == "display_data" and _step_report.MIME in msg["content"].get("data", {}):
                if self.on_step_report is not None:
                    self.on_step_report(msg["content"]["data"])
                return None
            return super().process_message(msg, cell, cell_index)

        async def _async_poll_kernel_alive(self) -> None:
            while True:
                await asyncio.sleep(ALIVE_POLL_S)
                try:
                    await self._async_check_alive()
                except DeadKernelError:
                    if self.task_poll_for_reply is not None:
                        self.task_poll_for_reply.cancel()
                    return

    return _Client


def execute_or_interrupt(client: Any, env: dict[str, str]) -> None:
    """Run the client; a SIGINT or SIGTERM is a KeyboardInterrupt, never a kernel death to restart from.

    nbclient answers those signals by shutting the kernel down, which looks like a dead kernel.
    """
    try:
        client.execute(env=env)
    except BaseException:
        # nbclient sets this attribute only in its SIGINT/SIGTERM handler.
        if getattr(client, "_async_cleanup_kernel_future", None) is not None:
            raise KeyboardInterrupt from None
        raise
