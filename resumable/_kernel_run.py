"""The kernel's current run: the one ``%durable_run`` (or a first step) joined, which the panel shows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NotebookRun:
    """The run a kernel's ``%durable_run`` (or its first step) joined; the panel shows it."""

    pipeline: str
    run_id: str
    store_path: str


_notebook_run: NotebookRun | None = None


def set_notebook_run(run: NotebookRun | None) -> None:
    """Record the kernel's current run (the magics call this)."""
    global _notebook_run  # noqa: PLW0603 - one kernel, one current run
    _notebook_run = run


def notebook_run() -> NotebookRun | None:
    """The kernel's current run, or None before any ``%durable_run`` or step."""
    return _notebook_run
