"""``import resumable`` stays light: front ends load their dependencies when first used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("nbclient", "nbformat", "ipywidgets", "IPython", "tqdm", "rich", "click", "pandas", "asyncio", "psutil")


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return list(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import resumable",
        "from resumable import Pipeline, StepFailed, StepState",
    ],
)
def test_import_loads_no_front_end_dependency(code: str) -> None:
    """Importing the package, or the names a pipeline script uses, pulls in no notebook, CLI or DataFrame library."""
    assert _imported_after(code) == []


def test_lazily_exported_names_resolve() -> None:
    """Every name in ``__all__`` resolves on first use, to the object its defining module holds."""
    import resumable
    from resumable import errors, pipeline

    for name in resumable.__all__:
        assert getattr(resumable, name) is not None, name
    assert resumable.StepFailed is errors.StepFailed
    assert resumable.Pipeline is pipeline.Pipeline
    assert set(resumable.__all__) <= set(dir(resumable))
    with pytest.raises(AttributeError, match="module 'resumable' has no attribute 'no_such_name'"):
        resumable.no_such_name  # noqa: B018
