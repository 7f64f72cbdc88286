"""Which names a cell binds, reads, changes in place and deletes: the rules docs/notebooks.md states."""

from __future__ import annotations

import pytest

from resumable._cellast import analyze


@pytest.mark.parametrize(
    ("source", "binds"),
    [
        ("x = 1", ("x",)),
        ("a = b = 2", ("a", "b")),
        ("first, *rest = items", ("first", "rest")),
        ("[p, (q, r)] = pairs", ("p", "q", "r")),
        ("n += 1", ("n",)),
        ("size: int = 3", ("size",)),
        ("size: int", ()),
        ("for i, row in enumerate(rows):\n    last = row", ("i", "row", "last")),
        ("with open(p) as fh, lock:\n    text = fh.read()", ("fh", "text")),
        ("if (m := match(s)):\n    pass", ("m",)),
        ("found = [y for x in xs if (y := f(x))]", ("y", "found")),
        ("import os.path, numpy as np\nfrom a.b import c, d as e", ("os", "np", "c", "e")),
        ("from mod import *", ()),
        ("def f(a, b=1):\n    inner = a\n    return inner", ("f",)),
        ("async def g():\n    pass", ("g",)),
        ("class K(Base):\n    attr = 1", ("K",)),
        ("try:\n    r = 1\nexcept ValueError as err:\n    r = 2", ("r",)),
        (
            "match cmd:\n    case {'go': where, **more}:\n        pass\n    case [one, *others]:\n        pass",
            ("where", "more", "one", "others"),
        ),
        ("def bump():\n    global counter\n    counter += 1", ("bump", "counter")),
        ("tmp = 1\ndel tmp", ()),
        ("tmp = 1\ndel tmp\ntmp = 2", ("tmp",)),
        ("while more():\n    batch = take()\nelse:\n    done = True", ("batch", "done")),
    ],
)
def test_binds(source: str, binds: tuple[str, ...]) -> None:
    """Every binding form at top level becomes an output, in first-binding order; del removes it."""
    assert analyze(source).binds == binds


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("y = x + 1", ("x",)),
        ("x = 1\ny = x + 1", ()),
        ("x = x + 1", ("x",)),
        ("n += 1", ("n",)),
        ("total = sum(v for v in values if v > limit)", ("values", "limit")),
        ("[[y for y in row] for row in grid]", ("grid",)),
        ("rows.sort(key=lambda r: r[col])", ("rows", "col")),
        ("def f(a):\n    return a * scale + len(a)", ("scale",)),
        ("scale = 2\ndef f(a):\n    return a * scale", ()),
        ("print(len(data))", ("data",)),
        ("del old", ("old",)),
        ("class C(Base):\n    size = default_size", ("Base", "default_size")),
    ],
)
def test_reads(source: str, reads: tuple[str, ...]) -> None:
    """Names used before the cell binds them are reads (builtins left out): they drive staleness."""
    assert analyze(source).reads == reads


@pytest.mark.parametrize(
    ("source", "mutates"),
    [
        ("rows.append(4)", ("rows",)),
        ("n = rows.pop()", ("rows",)),
        ("df.drop(columns='x', inplace=True)", ("df",)),
        ("df['total'] = df.qty * df.price", ("df",)),
        ("df.loc[0, 'qty'] = 3", ("df",)),
        ("cfg.seed = 3", ("cfg",)),
        ("stats.count += 1", ("stats",)),
        ("del cache['old']", ("cache",)),
        ("model.fit(X, y)", ("model",)),
        ("df.head()", ()),
        ("rows = []\nrows.append(1)", ()),
        ("random.shuffle(rows)", ()),
    ],
)
def test_mutates(source: str, mutates: tuple[str, ...]) -> None:
    """In-place changes of earlier cells' objects that the syntax shows are detected; others are not."""
    assert analyze(source).mutates == mutates


def test_deletes_names_from_earlier_cells() -> None:
    """A deleted name that the cell does not bind again is reported, so a restore deletes it too."""
    names = analyze("del scratch\nkeep = 1")
    assert names.deletes == ("scratch",)
    assert names.binds == ("keep",)


def test_syntax_error_is_raised() -> None:
    """Invalid Python is the user's SyntaxError, not a silent empty result."""
    with pytest.raises(SyntaxError):
        analyze("x = = 1")


@pytest.mark.parametrize(
    ("source", "binds", "reads"),
    [
        (
            "get_ipython().run_cell_magic('time', '', 'total = 0\\nfor i in r:\\n    total += i\\n')",
            ("i", "total"),
            ("r",),
        ),
        ("get_ipython().run_line_magic('time', 'y = f(x)')", ("y",), ("f", "x")),
        ("get_ipython().run_cell_magic('capture', 'out --no-stderr', 'q = 1\\n')", ("q", "out"), ()),
        ("get_ipython().run_line_magic('timeit', 'w = 1')", (), ()),  # timeit binds nothing in the notebook
        ("get_ipython().run_cell_magic('time', '', '!ls\\n')", (), ()),  # IPython syntax inside: not read
    ],
)
def test_code_run_by_time_and_capture_magics_counts_as_the_cells(
    source: str, binds: tuple[str, ...], reads: tuple[str, ...]
) -> None:
    """`%%time` over a loop binding `total`, `%time y = f()`, `%%capture out`: what they bind is the cell's."""
    names = analyze(source)
    assert names.binds == binds
    assert tuple(n for n in names.reads if n != "get_ipython") == reads
