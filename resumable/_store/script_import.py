"""DuckDB imported as a script imports it, in a kernel of ``resumable execute``.

DuckDB decides when it is first imported whether it runs in Jupyter (``__main__`` has no
``__file__`` and IPython's kernel is loaded); if so, every later ``duckdb.connect`` imports
ipywidgets for a progress-bar widget: 60-90 ms of a headless kernel's first store open, measured,
for a bar this package switches off on every connection it makes and that nobody watches in a
headless run. In a kernel started by ``resumable execute`` (``RESUMABLE_STEP_REPORTS`` set) and only
there, DuckDB is imported with ``__main__.__file__`` set for the length of the import, then removed.
An interactive kernel, or one that imported DuckDB before ``resumable``, is left as it is.
Imported by ``resumable._store`` before any of its modules imports DuckDB.
"""

from __future__ import annotations

import os
import sys

HEADLESS_ENV = "RESUMABLE_STEP_REPORTS"  # resumable._step_report.ENV (a higher layer; a test checks they match)
MAIN_FILE = "<resumable execute>"


def import_duckdb() -> None:
    """Import DuckDB now, as a script, when this is a kernel of ``resumable execute`` that has not yet."""
    if "duckdb" in sys.modules or not os.environ.get(HEADLESS_ENV) or "ipykernel" not in sys.modules:
        return
    main = sys.modules.get("__main__")
    if main is None or hasattr(main, "__file__"):
        return
    main.__file__ = MAIN_FILE  # the kernel's __main__ is the user's namespace: only for the import
    try:
        import duckdb  # noqa: F401
    finally:
        if getattr(main, "__file__", None) == MAIN_FILE:
            del main.__file__


import_duckdb()
