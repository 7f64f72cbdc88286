"""The user's traceback: where an error's frames leave resumable's own code.

The engine stores it (the panel and ``resumable show`` display it) and the magics show it for a
failed cell; both cut resumable's calling frames off the front with :func:`without_our_frames`.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

PACKAGE_DIR = str(Path(__file__).resolve().parent)
_FILE_LINE = re.compile(r'^(\s*)File "([^"]+)", line (\d+)', re.MULTILINE)
_labels: list[Callable[[str], str | None]] = []  # at most one: the notebook's cells


def label_files(labeler: Callable[[str], str | None]) -> None:
    """Name code files as the user knows them in stored tracebacks (``Cell In[16]``, not a temporary file).

    The magics hand in IPython's names for the cells it compiled; pure Python has none.
    """
    _labels[:] = [labeler]


def _labelled(text: str) -> str:
    if not _labels:
        return text

    def name(match: re.Match[str]) -> str:
        label = _labels[0](match.group(2))
        return match.group(0) if label is None else f"{match.group(1)}{label}, line {match.group(3)}"

    return _FILE_LINE.sub(name, text)


def _ours(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR)


def without_our_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first frame outside resumable on; None when every frame is ours."""
    while tb is not None and _ours(tb):
        tb = tb.tb_next
    return tb


def user_traceback(exc: BaseException) -> str:
    """The traceback text to store: from the user's first frame on (all of it when none is the user's)."""
    tb = without_our_frames(exc.__traceback__) or exc.__traceback__
    return _labelled("".join(traceback.format_exception(type(exc), exc, tb)))


def trim_chain(error: BaseException) -> None:
    """Start each traceback of the chain that leads in through resumable at the user's first frame.

    One that never left resumable (retries exhausted, an output that cannot be pickled) is dropped:
    its message says everything and resumable's frames would only bury the user's. Tracebacks that
    start elsewhere (errors chained inside a library) keep all their frames.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        if tb is not None and _ours(tb):
            current.__traceback__ = without_our_frames(tb)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
