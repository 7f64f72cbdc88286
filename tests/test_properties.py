"""Property-based tests (issue 11 §7): every input ends in our error or a usage error, never a foreign traceback.

Each property is bounded (``max_examples``, no deadline: the store and shell are real, and the
machine may be loaded) and checks at the end that a completed step stored before is still there.
``RESUMABLE_HYPOTHESIS_EXAMPLES`` raises the number of examples for a longer campaign.
"""

from __future__ import annotations

import ast
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from ipython_shell import fresh_kernel, started_shell

import resumable
from resumable import _magic_lines, _params
from resumable._headless import params as headless_params
from resumable._store import forget_all, open_store
from resumable.cli import main
from resumable.errors import NotebookInputError, ResumableError

EXAMPLES = int(os.environ.get("RESUMABLE_HYPOTHESIS_EXAMPLES", "60"))
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

# Text that reaches the parsers' corners: quotes, escapes, dashes, separators, control characters.
TRICKY = st.lists(
    st.sampled_from([*"ab_-Z09 '\"\\,+=./\t\x00é", " --", " -p ", " --outputs ", " --new", " --run-id "]),
    max_size=12,
).map("".join)
WORDS = st.one_of(TRICKY, st.text(max_size=20))


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[Path]:
    """A store with one completed step; the test must leave it loadable."""
    store = tmp_path / "kept" / "store.duckdb"
    pipe = resumable.Pipeline("kept", store=store)
    with pipe.run(run_id="r1") as run:
        run.step("good", lambda: {"total": 42})
    yield store
    forget_all()
    assert resumable.load("r1", "good", store=store) == {"total": 42}


@BOUNDED
@given(name=st.one_of(WORDS, st.integers(), st.none(), st.binary(max_size=5)))
def test_names_and_run_ids_are_accepted_or_refused_by_us(kept: Path, name: Any) -> None:
    """A pipeline, step or run name is used or refused with StepDefinitionError; nothing else happens."""
    try:
        pipe = resumable.Pipeline(name, store=kept)
    except resumable.StepDefinitionError:
        pipe = resumable.Pipeline("kept", store=kept)
    try:
        with pipe.run(run_id=name) as run:
            run.step(name, lambda: 1)
    except (resumable.StepDefinitionError, resumable.PipelineMismatchError):
        pass


@BOUNDED
@given(line=WORDS, magic=st.sampled_from(["durable_step", "durable_run", "durable_panel"]))
def test_magic_lines_parse_or_raise_a_usage_error(line: str, magic: str) -> None:
    """Any line either parses or raises IPython's UsageError (never shlex's ValueError or argparse's exit)."""
    try:
        _magic_lines.parse(magic, line)
    except UsageError:
        pass


@pytest.fixture
def shell(kept: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(kept))
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


OURS = (UsageError, ResumableError)


@settings(BOUNDED, max_examples=max(10, EXAMPLES // 3))
@given(line=WORDS.filter(lambda s: s == "".join(s.splitlines())))  # one line, as a cell's first line is
def test_step_and_run_magics_end_in_our_errors(shell: Any, line: str) -> None:
    """Through a real shell, a %%durable_step or %durable_run line runs or fails with our error or UsageError."""
    result = shell.run_cell(f"%%durable_step {line}\nvalue = 1")
    error = result.error_before_exec or result.error_in_exec
    assert error is None or isinstance(error, OURS), repr(error)
    try:
        shell.run_line_magic("durable_run", line)
    except OURS:
        pass


LITERALS = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=4),
        st.complex_numbers(),
        st.just(...),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.integers(), st.text(max_size=4)), inner, max_size=3),
        st.frozensets(st.integers(), max_size=3),
        st.sets(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    ),
    max_leaves=8,
)


@BOUNDED
@given(text=WORDS)
def test_dash_p_values_are_collected_faithfully_or_refused(text: str) -> None:
    """-p NAME TEXT gives a value that the notebook and the store both get back exactly, or NotebookInputError."""
    try:
        collected = headless_params.collect([("x", text)])
    except NotebookInputError:
        return
    value = collected["x"]
    injected: dict[str, Any] = {}
    exec(compile(headless_params.source(collected), "<injected>", "exec"), {}, injected)  # our own injected source
    assert _params._same(injected["x"], value)
    assert _params._same(_params.decode(_params.encode(collected))["x"], value)


@BOUNDED
@given(value=LITERALS)
def test_parameters_round_trip_through_the_store_or_are_refused(kept: Path, value: Any) -> None:
    """A run's parameter comes back from the store equal and of the same types, or is refused (ParameterValueError)."""
    pipe = resumable.Pipeline("params", store=kept)
    run_of = pipe.run(params={"x": value})  # a new run each time
    try:
        with run_of:
            pass
    except resumable.ParameterValueError:
        assert _refusable(value)
        assert open_store(kept).get_run(run_of.run_id) is None
        return
    run = open_store(kept).get_run(run_of.run_id)
    assert run is not None
    assert _params._same(run.params["x"], value)


def _refusable(value: Any) -> bool:
    """Whether ``value``'s repr does not read back as itself (what the store must refuse)."""
    try:
        return not _params._same(ast.literal_eval(repr(value)), value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return True


COMMANDS = ["runs", "show", "export", "unlock", "invalidate", "execute", "--help", "--version", "gc"]
OPTIONS = ["--store", "--json", "--events", "-o", "--pipeline", "--limit", "-p", "--run-id", "--new", "-q"]
# A real command line cannot hold a NUL byte (execve refuses it), so none is drawn here.
ARG = st.one_of(st.sampled_from([*OPTIONS, "r1", "good", "nope", "x.json", "-1", ""]), WORDS).filter(
    lambda a: "\x00" not in a
)


@BOUNDED
@given(command=st.sampled_from(COMMANDS), args=st.lists(ARG, max_size=5))
def test_cli_argument_lists_end_in_a_documented_exit_code(kept: Path, command: str, args: list[str]) -> None:
    """Any argument list ends with an exit code of the documented set and a message, never a traceback."""
    if command in {"invalidate", "gc"} and "good" in args:
        args = [a for a in args if a != "good"]  # the user's own request to drop the kept step
    with tempfile.TemporaryDirectory() as cwd:
        runner = CliRunner()
        os.chdir(cwd)
        try:
            result = runner.invoke(main, [command, *args], env={"RESUMABLE_STORE": str(kept)})
        finally:
            os.chdir(kept.parent.parent)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in {0, 1, 2, 3, 4, 5, 6}, result.output
    assert "Traceback" not in result.output
