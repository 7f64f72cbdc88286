"""``resumable.connect()``: read-only SQL over a store's documented views, from Python.

A small wrapper rather than a DuckDB connection: a connection held open would hold the store's
file and keep every other process out of it. Each :meth:`StoreReader.sql` call takes the file,
runs one query on a read-only connection with external access switched off, and lets go again
(``resumable/_store/views.py``), so a notebook can keep a reader around while pipelines run. On a
PostgreSQL store each call is a session of its own with a read-only transaction
(``resumable/_store/pg_query.py``), with the same views.
"""

from __future__ import annotations

import os
from types import TracebackType

from resumable._store import VIEW_NAMES, QueryResult, Store, open_store
from resumable.errors import front_end


class StoreReader:
    """Read-only queries over one store; get one with :func:`connect`.

    Attributes
    ----------
    views
        The names of the views a query can read (their columns are in docs/sql.md).
    """

    views = VIEW_NAMES

    def __init__(self, store: Store) -> None:
        self._location = store.location

    def __repr__(self) -> str:
        return f"StoreReader({self._location!r})"

    @property
    def location(self) -> str:
        """The store this reader queries."""
        return self._location

    def sql(self, query: str) -> QueryResult:
        """Run one query; ``.rows``, ``.columns``, ``.to_dicts()`` and ``.df()`` give the result.

        Raises
        ------
        QueryError
            The query failed, or was refused because it reaches outside the store (files,
            databases, extensions) or tries to change it; nothing was changed.
        """
        # The process's store as it is now: if this process has since opened it for writing, the
        # query takes turns with that handle (DuckDB refuses two differently opened handles).
        return open_store(self._location, read_only=True).query(query)

    def close(self) -> None:
        """Nothing to release (the file is held only during a query); here for ``with`` blocks."""

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@front_end("python")
def connect(store: str | os.PathLike[str] | None = None) -> StoreReader:
    """Read-only SQL access to a store's runs, steps, attempts, events, checkpoints, inputs and parameters.

    Parameters
    ----------
    store
        The store file or ``postgresql://`` URL (default: ``RESUMABLE_STORE``, else
        ``.resumable/store.duckdb``). It must exist; it is opened read-only and never changed.

    Returns
    -------
    StoreReader
        Call ``.sql("SELECT ...")`` on it.

    Raises
    ------
    CheckpointNotFoundError
        There is no store at that location; nothing was created.

    Examples
    --------
    >>> db = resumable.connect("shop.duckdb")  # doctest: +SKIP
    >>> db.sql("SELECT state, count(*) AS n FROM runs GROUP BY state").df()  # doctest: +SKIP
    """
    return StoreReader(open_store(store, read_only=True))
