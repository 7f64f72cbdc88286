"""Reading and writing notebooks for headless runs: atomic writes, error banners, error previews."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from resumable.errors import NotebookInputError

ERROR_TAG = "resumable-error"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def preview(source: str, cell_index: int) -> str:
    """The first and last five lines of a cell, as nbclient shows a failing cell."""
    lines = source.splitlines()
    if len(lines) > 10:
        lines = [*lines[:5], "...", *lines[-5:]]
    body = "\n".join(f"    {line}" for line in lines)
    return f"  cell {cell_index}:\n{body}"


def read_notebook(path: Path) -> Any:
    if not path.is_file():
        fix = "Pass the path of an .ipynb file."
        raise NotebookInputError("notebook", str(path), "does not exist or is not a file", fix)
    import nbformat  # after the check: importing it takes most of a second

    try:
        return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # nbformat raises json, validation and OS errors alike
        problem = f"cannot be read as a Jupyter notebook ({type(exc).__name__}: {exc})"
        raise NotebookInputError("notebook", str(path), problem) from None


def write_notebook(nb: Any, path: Path, like: Path) -> None:
    """Temp file, then rename: a crash never leaves half a notebook behind. Readable as ``like`` is."""
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)  # type: ignore[no-untyped-call]
        Path(tmp).chmod(like.stat().st_mode & 0o777)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_output(cell: Any) -> tuple[str, str, str] | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            tb = strip_ansi("\n".join(output.get("traceback", [])))
            return output.get("ename", "Error"), strip_ansi(output.get("evalue", "")), tb
    return None


def mark_error(nb: Any, cell_index: int | None, headline: str, resume: str) -> None:
    """Papermill's banner-and-anchor cells: a banner at the top links to a marker above the failing cell."""
    import nbformat

    anchor = '<span id="resumable-error-cell"></span>'
    if cell_index is not None:
        marker = nbformat.v4.new_markdown_cell(  # type: ignore[no-untyped-call]
            f'{anchor}<span style="color:red; font-size:1.5em;">resumable stopped here:</span> {headline}',
            metadata={"tags": [ERROR_TAG]},
        )
        nb.cells.insert(cell_index, marker)
    link = '<a href="#resumable-error-cell">below</a>' if cell_index is not None else "in this notebook"
    banner = nbformat.v4.new_markdown_cell(  # type: ignore[no-untyped-call]
        f'<span style="color:red; font-size:1.5em;">resumable execute did not finish</span> '
        f"(the error is marked {link}).\n\n{headline}\n\nCompleted steps are checkpointed. Resume the run with:\n\n"
        f"```\n{resume}\n```",
        metadata={"tags": [ERROR_TAG]},
    )
    nb.cells.insert(0, banner)
