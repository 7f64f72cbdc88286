"""Record what a step shows while it still shows it live, and show a recording again later.

This follows IPython's ``capture_output`` and ``CapturedIO.show()``, with one change: a tee. Every
write to ``sys.stdout`` and ``sys.stderr`` and every rich display goes to the real stream or
publisher *and* into a :class:`Recording`, so a long step streams its progress as usual instead
of showing everything at the end.

A recording is a list of nbformat-style output dicts (``stream``, ``display_data``,
``execute_result``), so it can be stored beside a step's outputs, shown again by :func:`replay`, and
read by any tool that knows notebooks. Images are kept base64-encoded as nbformat keeps them.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

Output = dict[str, Any]

_CR = re.compile(r"[^\n]*\r(?=[^\n])")  # text overwritten by a carriage return (progress bars)
# A widget view points at a model living in the kernel that showed it; replayed in another kernel
# it would render as "model not found". Its text/plain fallback is kept instead.
_LIVE_ONLY = frozenset({"application/vnd.jupyter.widget-view+json"})


class Recording:
    """The outputs one execution of a step produced, in the order they appeared."""

    def __init__(self) -> None:
        self._outputs: list[Output] = []
        self._display_ids: dict[str, Output] = {}
        self._clear_pending = False

    def _add(self, output: Output) -> None:
        if self._clear_pending:
            self.clear(wait=False)
        self._outputs.append(output)

    def stream(self, name: str, text: str) -> None:
        """Append text written to ``stdout`` or ``stderr``."""
        if not text:
            return
        last = self._outputs[-1] if self._outputs and not self._clear_pending else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self._add({"output_type": "stream", "name": name, "text": text})

    def display(
        self, data: dict[str, Any], metadata: dict[str, Any] | None, display_id: str | None, update: bool
    ) -> None:
        """Append a rich display; an update replaces the display with the same id, as frontends do."""
        output = {"output_type": "display_data", "data": _jsonable(data), "metadata": dict(metadata or {})}
        if not output["data"]:
            return
        if display_id is not None and display_id in self._display_ids:
            if update:
                self._display_ids[display_id].update(output)
                return
        elif update:
            return  # an update of a display this step did not create: nothing to keep
        self._add(output)
        if display_id is not None:
            self._display_ids[display_id] = output

    def result(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        """The cell's result (its last expression), shown as ``Out[n]``."""
        self._add({"output_type": "execute_result", "data": _jsonable(data), "metadata": dict(metadata or {})})

    def clear(self, wait: bool) -> None:
        """``clear_output()``: forget what was shown so far (at the next output when ``wait``)."""
        if wait:
            self._clear_pending = True
            return
        self._clear_pending = False
        self._outputs.clear()
        self._display_ids.clear()

    def outputs(self) -> list[Output]:
        """The recording as output dicts; carriage-return overwrites are collapsed."""
        out = []
        for output in self._outputs:
            copy = dict(output)
            if copy["output_type"] == "stream":
                copy["text"] = _CR.sub("", copy["text"])
            out.append(copy)
        return out


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """A mime bundle as nbformat stores it (binary payloads base64-encoded), minus live-only views."""
    return {
        k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
        for k, v in data.items()
        if k not in _LIVE_ONLY
    }


class _TeeStream:
    """Writes through to the real stream and records what was written."""

    def __init__(self, inner: Any, name: str, recording: Recording) -> None:
        self._inner = inner
        self._name = name
        self._recording = recording

    def write(self, text: str) -> int:
        self._recording.stream(self._name, text)
        return self._inner.write(text)  # type: ignore[no-any-return]

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ... of the real stream
        return getattr(self._inner, name)


class _TeePublisher:
    """Stands in for ``shell.display_pub``: records each display, then lets the real one publish."""

    def __init__(self, inner: Any, recording: Recording) -> None:
        self._inner = inner
        self._recording = recording

    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        display_id = (transient or {}).get("display_id")
        self._recording.display(data, metadata, display_id, update)
        self._inner.publish(data=data, metadata=metadata, transient=transient, update=update, **kwargs)

    def clear_output(self, wait: bool = False) -> None:
        self._recording.clear(wait)
        self._inner.clear_output(wait=wait)

    def __getattr__(self, name: str) -> Any:  # set_parent, register_hook, ... of the real publisher
        return getattr(self._inner, name)


@contextmanager
def tee(shell: Any) -> Iterator[Recording]:
    """Record stdout, stderr and rich displays while they still reach the notebook.

    Figures drawn with matplotlib's inline backend are shown (and recorded) before the block ends,
    since IPython would otherwise show them only after the cell, outside the recording.
    """
    recording = Recording()
    saved = sys.stdout, sys.stderr, shell.display_pub
    sys.stdout = _TeeStream(saved[0], "stdout", recording)  # type: ignore[assignment]
    sys.stderr = _TeeStream(saved[1], "stderr", recording)  # type: ignore[assignment]
    shell.display_pub = _TeePublisher(saved[2], recording)
    try:
        yield recording
        flush_inline_figures()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed stream must not hide the step's own error
                pass
        sys.stdout, sys.stderr, shell.display_pub = saved


Bundle = tuple[dict[str, Any], dict[str, Any]]  # what IPython's formatter returns: (data, metadata)


def show_as_recorded(shell: Any, value: object, bundle: Bundle) -> None:
    """Let IPython show ``value`` as ``Out[n]`` with the mime bundle already formatted for the recording.

    Formatting runs a value's ``_repr_html_`` and the like (a scikit-learn estimator's diagram takes
    tens of milliseconds), and IPython's displayhook would run them again right after the step.
    The displayhook asks ``compute_format_data`` for this cell's value once: the stand-in answers
    for this very object in this very cell (its execution count) only, and removes itself on first
    use; anything else gets IPython's own formatting. :func:`forget_shown` removes it when a cell
    starts or ends, in case nothing displayed the value. ``Out[n]`` and ``_`` still hold the value.
    """
    hook = getattr(shell, "displayhook", None)
    own = getattr(type(hook), "compute_format_data", None)
    if hook is None or own is None:
        return
    count = shell.execution_count

    def once(result: object) -> Bundle:
        forget_shown(shell)
        if result is value and shell.execution_count == count:
            return bundle
        return own(hook, result)  # type: ignore[no-any-return]

    once.resumable_shown = True  # type: ignore[attr-defined]
    hook.compute_format_data = once


def forget_shown(shell: Any) -> None:
    """Remove :func:`show_as_recorded`'s stand-in (and the value it holds), if it is still there."""
    hook = getattr(shell, "displayhook", None)
    found = getattr(hook, "__dict__", {}).get("compute_format_data")
    if getattr(found, "resumable_shown", False):
        del hook.__dict__["compute_format_data"]


def flush_inline_figures() -> None:
    """Show figures pending in matplotlib's inline backend now (a no-op when it is not in use)."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None:
        backend.flush_figures()


def replay(shell: Any, outputs: list[Output]) -> Output | None:
    """Show stored outputs again; return the stored cell result for the caller to show as ``Out[n]``.

    Streams go to ``sys.stdout``/``sys.stderr`` and displays to the shell's publisher, so they land
    where a live step's output would.
    """
    result = None
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            stream = sys.stderr if output.get("name") == "stderr" else sys.stdout
            stream.write(output.get("text", ""))
            stream.flush()
        elif kind == "display_data":
            sys.stdout.flush()
            shell.display_pub.publish(data=output["data"], metadata=output.get("metadata") or {})
        elif kind == "execute_result":
            result = output
    return result
