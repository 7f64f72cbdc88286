"""Writing small test notebooks (shared by the headless tests)."""

from __future__ import annotations

from pathlib import Path

import nbformat


def write_nb(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    """A notebook of code cells; a (source, tags) tuple tags its cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nbformat.write(nb, path)
    return path
