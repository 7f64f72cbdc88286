"""A sweep's parameter sets: lists and grids expand as documented, run ids are stable, bad files say what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resumable._sweep import spec
from resumable.errors import NotebookInputError, SweepFileError


def test_a_grid_expands_to_every_combination_the_last_name_varying_fastest_then_the_listed_runs(
    tmp_path: Path,
) -> None:
    """grid: {lr: [..], depth: [..]} plus runs: gives 2 x 2 + 1 runs, in the order a user reads them."""
    file = tmp_path / "params.yaml"
    file.write_text("grid:\n  lr: [0.1, 0.01]\n  depth: [3, 5]\nruns:\n  - {lr: 1.0, depth: 1}\n")
    assert spec.load(file) == (
        {"lr": 0.1, "depth": 3},
        {"lr": 0.1, "depth": 5},
        {"lr": 0.01, "depth": 3},
        {"lr": 0.01, "depth": 5},
        {"lr": 1.0, "depth": 1},
    )
    assert spec.load([{"a": 1}, {"a": "x", "b": [1, 2]}]) == ({"a": 1}, {"a": "x", "b": [1, 2]})


def test_run_ids_are_stable_per_parameter_set_and_differ_by_value_type_and_pipeline() -> None:
    """The same set (in any name order) is the same run; 1, 1.0 and True are three runs; so is another pipeline."""
    one = spec.run_id_for("train", {"lr": 1, "depth": 3})
    assert one == spec.run_id_for("train", {"depth": 3, "lr": 1})
    assert one.startswith("train-") and len(one) == len("train-") + 16
    others = {spec.run_id_for("train", {"lr": v, "depth": 3}) for v in (1.0, True)} | {
        spec.run_id_for("other", {"lr": 1, "depth": 3})
    }
    assert one not in others and len(others) == 3


BAD = [
    ("", "sweep file '{f}' holds nothing, not a list of parameter sets or a grid. Write a list of parameter sets "
     "or a grid, for example:\n  grid:\n    lr: [0.1, 0.01]\n    depth: [3, 5]\nor a list:\n  - {{lr: 0.1, depth: 3}}"),
    ("- {lr: 1}\n- 3\n", "sweep file '{f}' (entry 2) is 3 (int), not a mapping of parameter names to values. "
     "Write each entry as {{name: value, ...}}."),
    ("grid:\n  lr: 0.1\n", "sweep file '{f}' (grid 'lr') is 0.1, not a list of values. "
     "Write the values as a list, for example [0.1]."),
    ("grid:\n  lr: []\n", "sweep file '{f}' (grid 'lr') is an empty list, not a list of values. "
     "Write the values as a list, for example [[]]."),
    ("grid: {lr: [1]}\nrun: [{lr: 2}]\n", "sweep file '{f}' has the key 'run'; a sweep mapping has only 'grid' "
     "and 'runs'. Put a list of parameter sets under 'runs', or the values to combine under 'grid', for example:\n"
     "  grid:\n    lr: [0.1, 0.01]\n    depth: [3, 5]\nor a list:\n  - {{lr: 0.1, depth: 3}}"),
    ("- {lr: 1}\n- {lr: 1}\n", "sweep file '{f}' (entry 2) repeats the parameter set of entry 1, which would be "
     "the same run. Remove one of them."),
    ("- {learning rate: 1}\n", "sweep file '{f}' (entry 1) parameter name 'learning rate' is not a Python "
     "variable name. Use a Python variable name."),
    ("- {day: 2024-01-31}\n", "sweep file '{f}' (entry 1) parameter 'day' = datetime.date(2024, 1, 31) (date) "
     "cannot be written into the notebook as a Python literal (its repr is not a Python literal (ValueError)). "
     "Use strings, numbers, booleans, None, and lists, tuples, sets or dicts of them."),
    ("lr: [1, 2\n", None),  # not YAML: the parser's own words follow, checked by prefix below
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_a_bad_sweep_file_names_the_file_the_entry_and_what_to_do(
    tmp_path: Path, text: str, expected: str | None
) -> None:
    """Each mistake is refused before any run starts, with one whole message (a usage error on the command line)."""
    file = tmp_path / "params.yaml"
    file.write_text(text)
    with pytest.raises(SweepFileError) as excinfo:
        spec.load(file)
    assert isinstance(excinfo.value, NotebookInputError)
    if expected is None:
        assert str(excinfo.value).startswith(f"sweep file '{file}' is not valid YAML (while parsing a flow sequence")
    else:
        assert str(excinfo.value) == expected.format(f=file)


def test_a_missing_file_and_bad_python_sets_are_named() -> None:
    """A file that cannot be read, and sets given in Python, get the same kind of message."""
    with pytest.raises(SweepFileError) as excinfo:
        spec.load(Path("no-such-params.yaml"))
    assert str(excinfo.value) == (
        "sweep file 'no-such-params.yaml' cannot be read (No such file or directory). "
        "Pass a YAML file of parameter sets with --sweep."
    )
    with pytest.raises(SweepFileError) as excinfo:
        spec.load([])
    assert str(excinfo.value) == (
        "sweep parameters holds no parameter set. Give at least one, for example:\n"
        "  grid:\n    lr: [0.1, 0.01]\n    depth: [3, 5]\nor a list:\n  - {lr: 0.1, depth: 3}"
    )


def test_run_ids_do_not_depend_on_set_or_mapping_order(tmp_path: Path) -> None:
    """A set (hash-ordered per process) or a nested mapping in another order is the same parameter set, the same run."""
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("- {tags: !!set {alpha, beta, gamma, delta}, cfg: {a: 1, b: 2}}\n")
    script = "import sys; from resumable._sweep import spec; print(spec.run_id_for('p', spec.load(sys.argv[1])[0]))"
    ids = {
        subprocess.run(
            [sys.executable, "-c", script, str(sweep_file)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in (1, 2, 3, 4)
    }
    assert len(ids) == 1, ids
    assert spec.run_id_for("p", {"cfg": {"a": 1, "b": 2}}) == spec.run_id_for("p", {"cfg": {"b": 2, "a": 1}})
    nested = [spec.run_id_for("p", {"cfg": {"a": v}}) for v in (1, 1.0, True, "1", [1], (1,), {1})]
    assert len(set(nested)) == len(nested)
