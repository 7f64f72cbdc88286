"""Storage: the seam (``base``), the schema and the DuckDB implementation."""

from resumable._store.base import Begin, CheckpointRef, GcReport, StepRequest, Store
from resumable._store.duckdb import DuckDBStore, open_store

__all__ = ["Begin", "CheckpointRef", "DuckDBStore", "GcReport", "StepRequest", "Store", "open_store"]
