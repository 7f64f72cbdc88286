"""The first hour's rough edges of the notebook magics, each met as a new user would (issue 12 §8).

Every test runs cells in a real IPython shell against a real store and asserts the whole message
the user reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from ipython_shell import fresh_kernel, started_shell, step

from resumable._store import open_store


@pytest.fixture
def shell(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RESUMABLE_STORE", str(store_path))
    monkeypatch.setenv("RESUMABLE_RUN_ID", "r1")
    ip = started_shell()
    yield ip
    fresh_kernel(ip)


@pytest.mark.parametrize(
    ("magic", "line", "message"),
    [
        (
            "durable_step",
            "my step",
            "%%durable_step my step: a step name cannot contain spaces. "
            "Join the words, for example '%%durable_step my_step'.",
        ),
        (
            "durable_step",
            "load the  data --retries 2",
            "%%durable_step load the  data --retries 2: a step name cannot contain spaces. "
            "Join the words, for example '%%durable_step load_the_data --retries 2'.",
        ),
        (
            "durable_run",
            "my pipeline",
            "%durable_run my pipeline: a pipeline name cannot contain spaces. "
            "Join the words, for example '%durable_run my_pipeline'.",
        ),
    ],
)
def test_a_name_with_spaces_is_told_to_join_its_words(
    shell: Any, store_path: Path, magic: str, line: str, message: str
) -> None:
    """``%%durable_step my step`` names the mistake and the fix, not argparse's 'unrecognized arguments'."""
    cell = f"%%{magic} {line}\nv = 1" if magic == "durable_step" else f"%{magic} {line}"
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == message
    assert "v" not in shell.user_ns
    assert not store_path.exists() or open_store(store_path).list_steps("r1") == []


def test_an_extra_word_after_the_options_is_still_argparse_s_message(shell: Any) -> None:
    """Only words before the first option read as a name: a stray word later is just unrecognized."""
    result = step(shell, "s --retries 2 extra", "v = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec) == "unrecognized arguments: extra"
