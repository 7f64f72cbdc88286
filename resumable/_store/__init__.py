"""Storage: the seam (``base``), ``open_store`` to get one, and the DuckDB implementation.

Front ends import from here only: the records, :class:`Store` and :func:`open_store`.
"""

from resumable._store import script_import  # noqa: F401  first: it may import DuckDB, before anything below

# isort: split
from resumable._store.base import (
    Begin,
    CheckpointRef,
    Compaction,
    Completion,
    EncodeError,
    GcReport,
    PayloadsAt,
    QueryResult,
    Refused,
    Removal,
    RunFilter,
    StepRequest,
    Store,
    WriteFault,
)
from resumable._store.process import close_all, stop_at_exit
from resumable._store.registry import forget_all, open_store
from resumable._store.views import VIEW_NAMES
from resumable._why import Held, Why

__all__ = [
    "VIEW_NAMES",
    "Begin",
    "CheckpointRef",
    "Compaction",
    "Completion",
    "EncodeError",
    "GcReport",
    "Held",
    "PayloadsAt",
    "QueryResult",
    "Refused",
    "Removal",
    "RunFilter",
    "StepRequest",
    "Store",
    "Why",
    "WriteFault",
    "close_all",
    "forget_all",
    "open_store",
    "stop_at_exit",
]
