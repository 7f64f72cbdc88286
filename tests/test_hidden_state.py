"""A resumed notebook computes what an uninterrupted one would have (issue 10 §1b).

Each test runs a small notebook twice in a real IPython shell: once uninterrupted, and once
"killed" after a cell and resumed by a new kernel running every cell again (completed steps
restore). The variables and everything the cells print must be the same. "A new kernel" is a
fresh namespace and fresh magics, and also what a new process resets: the global random
generators, matplotlib's rcParams and pandas' options.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from ipython_shell import fresh_kernel, started_shell

import resumable
from resumable._fingerprint import fingerprint
from resumable._store import open_store

RESTORED = re.compile(r"^↺ restored step '\w+' from checkpoint of [\d:\- ]+\n", re.MULTILINE)
JOINED = re.compile(r"^resumable: (started|resumed) run .*\n", re.MULTILINE)


def new_kernel(ip: Any) -> None:
    """A kernel restart: resumable's state, the namespace, and the process-wide state a new process starts with."""
    fresh_kernel(ip)
    mpl.rcdefaults()
    with warnings.catch_warnings():  # resetting "all" touches deprecated options too
        warnings.simplefilter("ignore")
        pd.reset_option("all")
    random.seed()
    np.random.seed()


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.chdir(tmp_path)
    ip = started_shell()
    yield ip
    new_kernel(ip)


def run(ip: Any, cells: list[str], capsys: pytest.CaptureFixture[str], run_id: str) -> list[str]:
    """Run the cells in run ``run_id`` as a notebook does; each cell's printed text, without resumable's lines."""
    import os

    os.environ["RESUMABLE_RUN_ID"] = run_id  # the fixture's monkeypatch restores the environment
    shown = []
    capsys.readouterr()
    for cell in cells:
        result = ip.run_cell(cell)
        captured = capsys.readouterr()
        assert result.success, (cell, result.error_in_exec, captured)
        shown.append(RESTORED.sub("", JOINED.sub("", captured.out)))
    return shown


def compare(ip: Any, cells: list[str], capsys: pytest.CaptureFixture[str], names: list[str]) -> None:
    """Uninterrupted, then killed after each step cell and resumed: the same variables and printed text."""
    new_kernel(ip)
    plain = run(ip, cells, capsys, "plain")
    expected = {n: repr_of(ip.user_ns[n]) for n in names}
    for kill_after, cell in enumerate(cells):
        if not cell.startswith("%%durable_step"):
            continue
        run_id = f"killed-after-{kill_after}"
        new_kernel(ip)
        run(ip, cells[: kill_after + 1], capsys, run_id)
        new_kernel(ip)
        resumed = run(ip, cells, capsys, run_id)
        assert resumed == plain, f"killed after cell {kill_after}"
        assert {n: repr_of(ip.user_ns[n]) for n in names} == expected, f"killed after cell {kill_after}"


def repr_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array({value.tolist()})"
    return repr(value)


STEP = "%%durable_step {}\n"


def test_a_generator_advanced_by_method_calls_continues_where_it_was(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rng = np.random.default_rng(0)` in one step, `rng.normal()` in later ones: no draw is repeated."""
    cells = [
        "import numpy as np",
        STEP.format("make") + "rng = np.random.default_rng(0)",
        STEP.format("first") + "a = rng.normal()\nprint(a)",
        STEP.format("second") + "b = rng.normal()\nprint(b)",
        "print(a != b, rng.normal())",
    ]
    compare(shell, cells, capsys, ["a", "b"])


def test_figure_parts_drawn_on_in_later_steps_stay_one_figure(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`ax[0].plot(...)` and `fig.colorbar(...)` on a figure made in another step: the figure has them all."""
    cells = [
        "from matplotlib.figure import Figure",
        STEP.format("make") + "fig = Figure()\nax = fig.subplots(1, 2)",
        STEP.format("line") + "ax[0].plot([1, 2, 3]);",
        STEP.format("image") + "im = ax[1].imshow([[1, 2], [3, 4]])\nfig.colorbar(im, ax=ax[1]);",
        "print(len(fig.axes), [len(a.lines) for a in fig.axes], [len(a.images) for a in fig.axes])\n"
        "print(ax[0] is fig.axes[0], ax[1] is fig.axes[1], im.axes is ax[1])",
    ]
    compare(shell, cells, capsys, [])


def test_np_add_at_and_a_helper_appending_are_kept(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`np.add.at(counts, ...)`, `items.append(...)` in a helper and in a notebook class's method: kept."""
    cells = [
        "import numpy as np\ndef record(v):\n    items.append(v)\nclass Log:\n    def add(self, v):\n"
        "        entries.append(v)\nlog = Log()\nentries = []",
        STEP.format("make") + "counts = np.zeros(4, dtype=int)\nitems = []",
        STEP.format("count") + "np.add.at(counts, [0, 1, 1], 1)\nrecord('one')\nlog.add(1)",
        STEP.format("again") + "np.add.at(counts, [3], 5)\nrecord('two')\nlog.add(2)",
        "print(counts.tolist(), items, entries)",
    ]
    compare(shell, cells, capsys, ["counts", "items", "entries"])


def test_a_generator_object_is_named_in_a_warning(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A generator cannot be pickled: a step advancing one says so, naming it and what to do."""
    new_kernel(shell)
    run(shell, ["squares = (i * i for i in range(5))"], capsys, "gen")
    result = shell.run_cell(STEP.format("first") + "first = next(squares)")
    assert result.success
    err = capsys.readouterr().err
    assert err == (
        "resumable: step 'first' reads 'squares' (generator), which cannot be pickled (TypeError: cannot pickle "
        "'generator' object); a change the step makes to it in place is not seen: it cannot be checkpointed either, "
        "so after a restore it is as the cell that made it left it. Make and use it within one step, or keep what "
        "it yields in a list.\n"
    )


def test_global_random_states_continue_after_a_restore(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`np.random.seed(1)` and `random.seed(2)` in one step, draws in later ones: the same numbers."""
    cells = [
        "import random\nimport numpy as np",
        STEP.format("seed") + "np.random.seed(1)\nrandom.seed(2)",
        STEP.format("draw") + "a = np.random.rand()\nb = random.random()",
        "print(np.random.rand(), random.random())",
        STEP.format("more") + "c = np.random.randint(100, size=3)\nd = random.sample(range(100), 3)",
        "print(a, b, c, d, np.random.rand(), random.random())",
    ]
    compare(shell, cells, capsys, ["a", "b", "c", "d"])


def test_settings_made_in_a_restored_step_are_made_again(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`plt.style.use`, `mpl.rc`, `rcParams[...]` and `pd.set_option` in a step hold after a restore."""
    cells = [
        "import matplotlib as mpl\nimport matplotlib.style\nimport pandas as pd",
        STEP.format("setup") + "mpl.style.use('ggplot')\nmpl.rc('lines', linewidth=3)\n"
        "mpl.rcParams['figure.dpi'] = 123\npd.set_option('display.max_rows', 7)\nready = True",
        "print(mpl.rcParams['axes.facecolor'], mpl.rcParams['lines.linewidth'], mpl.rcParams['figure.dpi'])\n"
        "print(pd.get_option('display.max_rows'))\nprint(pd.DataFrame({'a': range(20)}))",
    ]
    compare(shell, cells, capsys, [])


def test_a_view_written_through_changes_its_base_after_a_restore(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`x_sub = x[:2, :2]` then `x_sub[0, 0] = 99`: `x` sees it, and the two still share memory."""
    cells = [
        "import numpy as np",
        STEP.format("make") + "x = np.arange(16).reshape(4, 4)",
        STEP.format("view") + "x_sub = x[:2, :2]",
        STEP.format("write") + "x_sub[0, 0] = 99",
        "x_sub[1, 1] = -1\nprint(x.tolist(), np.shares_memory(x, x_sub))",
    ]
    compare(shell, cells, capsys, ["x", "x_sub"])


def test_names_sharing_one_object_are_restored_sharing_it(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`a = []; b = a` in one step, `b.append(...)` later: `a` sees it and `a is b` after a restore."""
    cells = [
        STEP.format("make") + "a = [1]\nb = a\nconfig = {'rows': a}",
        STEP.format("grow") + "b.append(2)",
        "b.append(3)\nprint(a, b, config, a is b, config['rows'] is a)",
    ]
    compare(shell, cells, capsys, ["a", "b", "config"])


def test_a_restored_class_sees_the_notebook(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A class defined in a step whose methods look up notebook globals (with eval): no NameError after a restore."""
    cells = [
        STEP.format("helpers") + "class Show:\n    def __call__(self, name):\n        return eval(name)\n"
        "    @property\n    def unit(self):\n        return unit\n    @staticmethod\n    def twice(v):\n"
        "        return scale * v\nshow = Show()",
        "value = 41\nunit = 'kg'\nscale = 2",
        STEP.format("use") + "shown = show('value + 1')",
        "print(shown, show('value'), show.unit, Show.twice(4), Show().unit)",
    ]
    compare(shell, cells, capsys, ["shown"])


def test_names_bound_inside_time_magics_are_restored(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`%%time` over a loop binding `total`, `%time y = f()`: both are outputs and come back."""
    cells = [
        "def f():\n    return 21",
        STEP.format("loop") + "%%time\ntotal = 0\nfor i in range(5):\n    total += i",
        STEP.format("call") + "%time y = f()\nz = y * 2",
        "print(total, y, z)",
    ]
    new_kernel(shell)
    run(shell, cells, capsys, "timed")
    new_kernel(shell)
    resumed = run(shell, cells, capsys, "timed")
    assert resumed[-1] == "10 21 42\n"


def test_a_retry_does_not_shift_the_notebooks_random_sequence(
    shell: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The backoff jitter draws from its own generator: a retried step draws what an unretried one would."""
    new_kernel(shell)
    cells = [
        "import random, pathlib\nrandom.seed(5)",
        STEP.format("flaky --retries 1 --backoff 0.001") + "if not pathlib.Path('tried').exists():\n"
        "    pathlib.Path('tried').touch()\n    raise ConnectionError('reset by peer')\nv = random.random()",
    ]
    run(shell, cells, capsys, "retried")
    assert shell.user_ns["v"] == random.Random(5).random()


def test_the_inplace_check_can_be_turned_off_for_a_step(
    shell: Any, capsys: pytest.CaptureFixture[str], store_path: Path
) -> None:
    """`--no-inplace-check` (and `--outputs a,b`, exactly these): a change in place the syntax hides is not stored."""
    new_kernel(shell)
    cells = [
        "import numpy as np",
        STEP.format("make") + "counts = np.zeros(3, dtype=int)",
        STEP.format("quiet --no-inplace-check") + "np.add.at(counts, [0], 1)",
        STEP.format("seen") + "np.add.at(counts, [1], 1)",
        STEP.format("exact --outputs n") + "np.add.at(counts, [2], 1)\nn = 1",  # exactly these: nothing added
    ]
    run(shell, cells, capsys, "off")
    store = open_store(store_path)
    assert store.get_step("off", "quiet").outputs == ()  # type: ignore[union-attr]
    assert store.get_step("off", "seen").outputs == ("counts",)  # type: ignore[union-attr]
    assert store.get_step("off", "exact").outputs == ("n",)  # type: ignore[union-attr]


def test_outputs_stored_together_load_one_by_one(
    shell: Any, capsys: pytest.CaptureFixture[str], store_path: Path
) -> None:
    """`resumable.load` returns a variable stored with others sharing its memory; pseudo-outputs are not listed."""
    new_kernel(shell)
    run(shell, [STEP.format("make") + "a = [1]\nb = a\nn = 3"], capsys, "load")
    assert resumable.load("load", "make", "b", store=store_path) == [1]
    assert open_store(store_path).get_step("load", "make").outputs == ("a", "b", "n")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "change",
    [
        "values[-1] = 1.5",  # the last row: always read
        "values[:] = 2.0",  # every value
        "values.sort()",
        "frame.loc[3, 'note'] = 'changed'",  # an arrow string column
        "frame['extra'] = 1",  # the structure
        "frame.loc[10, 'amount'] = -1.0",  # a small column: every row read
    ],
)
def test_fingerprints_see_changes_made_in_place(change: str) -> None:
    """A fingerprint taken after a change differs from the one before, for arrays and frames large and small."""
    rng = np.random.default_rng(0)
    namespace = {
        "values": rng.random(12_000_000),  # 96 MB: its rows are sampled
        "frame": pd.DataFrame({"amount": rng.random(1000), "note": [f"n{i}" for i in range(1000)]}),
    }
    before = {n: fingerprint(v).digest for n, v in namespace.items()}
    assert before == {n: fingerprint(v).digest for n, v in namespace.items()}  # unchanged: the same
    exec(change, {}, namespace)
    after = {n: fingerprint(v).digest for n, v in namespace.items()}
    assert [n for n in namespace if before[n] != after[n]] == re.findall(r"^\w+", change)


def test_a_variable_sharing_an_output_that_cannot_be_pickled_is_left_out(
    shell: Any, capsys: pytest.CaptureFixture[str], store_path: Path
) -> None:
    """A dict holding a step's list and a lock shares memory with it but cannot be stored: the step still completes."""
    new_kernel(shell)
    cells = [
        "import threading\nbox = {'lock': threading.Lock()}",
        STEP.format("make") + "rows = []",
        "box['rows'] = rows",
        STEP.format("grow") + "rows.append(1)",
    ]
    run(shell, cells, capsys, "refused")
    assert open_store(store_path).get_step("refused", "grow").outputs == ("rows",)  # type: ignore[union-attr]


def test_a_plain_cell_between_two_readers_does_not_hide_a_change_back(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain cell changes `cfg` in place after a step read it; the next step changes it back through a
    helper. The change back must be stored: the fingerprint the first reader took is stale by then."""
    cells = [
        "def set_debug(c, v):\n    c['debug'] = v",
        STEP.format("make") + "cfg = {'debug': False}",
        STEP.format("size") + "n = len(cfg)",
        "cfg['debug'] = True",
        STEP.format("reset") + "set_debug(cfg, False)\nm = 1",
        "print(cfg)",
    ]
    compare(shell, cells, capsys, ["cfg", "n", "m"])


def test_a_step_between_two_readers_does_not_hide_a_change_back(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A step changes `cfg` in place (visibly: it is stored) after another step read it; the next step
    changes it back through a helper. The change back must be stored: the fingerprint the first reader
    took is stale by then."""
    cells = [
        "def set_debug(c, v):\n    c['debug'] = v",
        STEP.format("make") + "cfg = {'debug': False}",
        STEP.format("size") + "n = len(cfg)",
        STEP.format("debug") + "cfg['debug'] = True",
        STEP.format("reset") + "set_debug(cfg, False)\nm = 1",
        "print(cfg)",
    ]
    compare(shell, cells, capsys, ["cfg", "n", "m"])


def test_a_secret_changed_in_place_or_sharing_an_output_is_not_stored(shell: Any, store_path: Path) -> None:
    """Variables a step stores beyond what it bound (changed through a helper, sharing an output's memory)
    are left out when they look like secrets, and the user is told, as for bound ones."""
    from resumable.errors import SecretNotStoredWarning

    shell.run_cell("def refresh(c):\n    c['token'] = 'new-token'")
    shell.run_cell("credentials = {'token': 'old'}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecretNotStoredWarning)
        assert shell.run_cell("%%durable_step renew\nrefresh(credentials)\nrenewed = True").success
        assert shell.run_cell("rows = [1, 2]\napi_secrets = {'pw': 'x', 'rows': rows}").success
        assert shell.run_cell("%%durable_step grow\nrows.append(3)\ntotal = sum(rows)").success
    told = [str(w.message) for w in caught if isinstance(w.message, SecretNotStoredWarning)]
    assert any("'credentials'" in t for t in told), told
    assert any("'api_secrets'" in t for t in told), told
    store = open_store(store_path)
    run_id = store.latest_run("default").run_id  # type: ignore[union-attr]
    stored = {step: {r.name for r in store.checkpoint_refs(run_id, step)} for step in ("renew", "grow")}
    assert "credentials" not in stored["renew"] and "renewed" in stored["renew"]
    assert "api_secrets" not in stored["grow"] and {"rows", "total"} <= stored["grow"]
