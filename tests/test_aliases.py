"""The sharing walk finds what it found before it decided each type once per walk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from resumable import _aliases


def reach_one_by_one(values: list[object], limit: int = _aliases.WALK_LIMIT) -> set[int]:
    """The walk as it was written first: every object's kind asked of the object itself."""
    seen: set[int] = set()
    todo = [v for v in values if _aliases._counted(v)]
    while todo and len(seen) < limit:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        owner = _aliases._owner(value)
        if owner is not None and owner is not value:
            todo.append(owner)
        todo += [c for c in _aliases._children(value) if _aliases._counted(c) and id(c) not in seen]
    return seen


class Claims:
    """Says it is an int (as a proxy does) but holds a list another name holds too."""

    def __init__(self, held: list[int]) -> None:
        self.held = held

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return int


def test_the_walk_reaches_the_same_objects_as_one_by_one() -> None:
    """Figures, frames with views and object columns, nested containers, and a walk cut at its limit."""
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3])
    base = np.arange(12.0).reshape(3, 4)
    frame = pd.DataFrame({"a": range(5), "b": list("abcde")})
    rows = [[i, str(i), (i, i + 0.5), {"k": [i]}] for i in range(50)]
    values: list[Any] = [fig, ax, base[:2], frame, rows, np.array([rows[0], None], dtype=object), ..., 3, "s"]
    for value in values:
        assert _aliases.reach([value]) == reach_one_by_one([value])
    assert _aliases.reach([fig], limit=500) == reach_one_by_one([fig], limit=500)


def test_an_object_claiming_an_immutable_class_is_still_walked() -> None:
    """A proxy saying it is an int can hold state: its list is found shared with another variable."""
    held = [1]
    proxy = Claims(held)
    assert isinstance(proxy, int)
    assert _aliases.sharing({"proxy": proxy}, {"other": held}) == ({"proxy", "other"}, {"other"})
