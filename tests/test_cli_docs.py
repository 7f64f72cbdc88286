"""docs/cli.md documents every command as its --help says, and every --help lists its exit codes.

After changing a command, regenerate the help blocks of docs/cli.md with:
``python tests/test_cli_docs.py`` (prose outside the blocks is kept).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from resumable.cli import EXIT_CODES, main

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
BLOCK = re.compile(r"(<!-- help:(?: (?P<name>[a-z-]+))? -->\n```text\n)(?P<body>.*?)(```)", re.DOTALL)


def help_text(command: str | None) -> str:
    """What ``resumable [COMMAND] --help`` prints in an 80-column terminal."""
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main, args, prog_name="resumable", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def documented() -> dict[str, str]:
    return {m["name"] or "": m["body"] for m in BLOCK.finditer(DOCS.read_text())}


def regenerate() -> None:
    """Rewrite every help block of docs/cli.md from the commands as they are."""
    text = BLOCK.sub(lambda m: m.group(1) + help_text(m["name"]) + m.group(4), DOCS.read_text())
    DOCS.write_text(text)


def test_every_command_is_documented_as_its_help_says() -> None:
    """docs/cli.md has one help block per command, each identical to what --help prints."""
    blocks = documented()
    assert sorted(blocks) == sorted(["", *main.commands]), "a command is missing from docs/cli.md, or one is extra"
    for name, body in blocks.items():
        assert body == help_text(name or None), (
            f"docs/cli.md is out of date for 'resumable {name}'; run: python tests/test_cli_docs.py"
        )


def test_the_docs_exit_code_table_is_the_one_table() -> None:
    """docs/cli.md's table has every code, each with the meaning the commands' --help gives it."""
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", DOCS.read_text(), flags=re.MULTILINE))
    assert sorted(map(int, rows)) == sorted(EXIT_CODES)
    for code, meaning in rows.items():
        assert meaning.startswith(EXIT_CODES[int(code)]), code


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_help_lists_its_exit_codes(command: str) -> None:
    """Each command's --help ends with the exit codes it can return, worded as the one table has them."""
    text = help_text(command)
    listed = text.split("Exit codes:\n", 1)[1].splitlines()
    assert listed and {0, 2} <= {int(line.split()[0]) for line in listed}
    for line in listed:
        code, meaning = line.split(maxsplit=1)
        assert EXIT_CODES[int(code)] == meaning


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
