"""The status panel, ``resumable.panel()`` (``%durable_panel`` calls it).

``widget`` draws a run and acts on it, ``format`` writes its text, ``poll`` redraws panels from the
store in one thread, ``rules`` says which actions a step allows.
"""

from __future__ import annotations

from resumable._panel.widget import panel

__all__ = ["panel"]
