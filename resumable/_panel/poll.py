"""The status panel's one background thread: coalesced redraws and the poll of other processes' changes.

Kept apart from :mod:`resumable.panel` (which holds the widgets) because it is plain threading
over the store: it never touches a widget itself, only the :class:`Watched` methods of a panel.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Protocol

from resumable._store import Store, stop_at_exit

POLL_S = 2.0
MIN_REDRAW_S = 0.1  # listener-driven redraws at most ten times a second ...
REDRAW_SHARE = 0.2  # ... and at most a fifth of the time, so quick steps stay quick beside a large run
TICK_S = 1.0  # a running step's elapsed time advances once a second, only while a shown step runs


class Watched(Protocol):
    """What the thread needs of a panel."""

    closed: bool
    dirty: bool
    poll_s: float | None

    @property
    def ticking(self) -> bool:
        """Whether a shown step is running (its elapsed time needs ticks)."""

    def tick(self) -> None:
        """Advance running steps' elapsed time without reading the store; never raises."""

    def store_if_known(self) -> Store | None:
        """The store of the shown run, or None."""

    def redraw_soon(self) -> None:
        """Redraw from the store; never raises."""

    def poll_tick(self, seq: int | BaseException) -> None:
        """The store's newest event number (or why it could not be read); never raises."""


class Poller:
    """One daemon thread per process that redraws panels and watches the stores of every open one.

    Engine listeners only mark a panel dirty and wake this thread, so a step never waits for a
    redraw and a burst of quick steps costs one redraw. However many panels are open, each store is
    asked for ``last_event_seq()`` once per tick; the thread ends when the last panel closes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._panels: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._wake = threading.Event()
        self._halt = threading.Event()  # set once, by stop: ends the wait that gathers a burst of changes too
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, panel: Watched) -> None:
        with self._lock:
            self._panels.add(panel)
            if self._stopped:
                return
            self._wake.set()  # a waiting thread picks up the new panel's poll interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="resumable-panel-poll", daemon=True)
                self._thread.start()

    def remove(self, panel: Watched) -> None:
        with self._lock:
            self._panels.discard(panel)
        self._wake.set()

    def wake(self) -> None:
        """Redraw the dirty panels now."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread for good and wait for it (at exit, before the stores close: it reads them)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._halt.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def thread(self) -> threading.Thread | None:
        """The thread, while one runs."""
        return self._thread

    def _loop(self) -> None:
        next_poll = time.monotonic()
        next_tick = next_poll + TICK_S
        last_redraw, cost = 0.0, 0.0
        while True:
            with self._lock:
                panels = [p for p in self._panels if not p.closed]
                if not panels or self._stopped:
                    self._thread = None
                    return
            intervals = [p.poll_s for p in panels if p.poll_s is not None]
            ticking = [p for p in panels if p.ticking]
            due = [t for t, wanted in ((next_poll, intervals), (next_tick, ticking)) if wanted]
            self._wake.wait(max(0.0, min(due) - time.monotonic()) if due else None)  # None: nothing to tick
            self._wake.clear()
            if self._stopped:
                continue  # leaves at the top of the loop, under the lock
            try:
                if any(p.dirty for p in panels):
                    gap = max(MIN_REDRAW_S, cost / REDRAW_SHARE)
                    # Gather a burst of changes: seconds when a redraw was slow (a loaded machine), so
                    # the wait ends at once at exit, or the exit handler would wait for it (or give up).
                    if self._halt.wait(max(0.0, last_redraw + gap - time.monotonic())):
                        continue
                    last_redraw = time.monotonic()
                    for panel in panels:
                        if panel.dirty and not panel.closed and not self._stopped:
                            panel.redraw_soon()
                    cost = time.monotonic() - last_redraw
                if ticking and time.monotonic() >= next_tick:
                    for panel in ticking:
                        panel.tick()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                if intervals and time.monotonic() >= next_poll:
                    self._poll([p for p in panels if p.poll_s is not None])
                    next_poll = time.monotonic() + min(intervals)
            except Exception:  # a panel closed mid-redraw: this thread must outlive it, without spinning
                next_poll = time.monotonic() + min(intervals or [POLL_S])

    @staticmethod
    def _poll(panels: list[Watched]) -> None:
        seqs: dict[str, int | BaseException] = {}
        for panel in panels:
            try:
                store = panel.store_if_known()
            except Exception as exc:  # never into the kernel: the panel shows it
                panel.poll_tick(exc)
                continue
            if store is None or panel.closed:
                continue
            key = store.location
            if key not in seqs:
                try:
                    seqs[key] = store.last_event_seq()
                except Exception as exc:
                    seqs[key] = exc
            panel.poll_tick(seqs[key])


POLLER = Poller()
stop_at_exit(POLLER.stop)
