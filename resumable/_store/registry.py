"""``open_store``: the one way front ends get a store, one per location and process.

It picks the implementation from the location: a ``postgresql://`` URL is a server store
(``postgres.py``, imported only then: psycopg is an extra), any other URL is refused rather than
taken for a file name, and everything else is a DuckDB file.
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import urlsplit

from resumable import _config
from resumable._store import places, process
from resumable._store.base import Store
from resumable._store.duckdb import DuckDBStore
from resumable.errors import ArgumentTypeError, CheckpointNotFoundError, StorePathError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BY_LOCATION: dict[str, Store] = {}
_LOCK = threading.Lock()


def open_store(
    location: str | os.PathLike[str] | None = None, *, must_exist: bool = False, read_only: bool = False
) -> Store:
    """The process-wide store at ``location`` (argument > ``RESUMABLE_STORE`` > the default), opened once.

    Parameters
    ----------
    location
        A file path (relative paths are resolved against the working folder now), or a
        ``postgresql://`` URL (a server store; see docs/scale.md).
    must_exist
        Refuse to create a store that is not there yet (what read-only commands want).
    read_only
        For commands that only read: open the file read-only (it must exist), so the command
        cannot change it. A store this process already opened for writing is returned as it is.

    Raises
    ------
    CheckpointNotFoundError
        With ``must_exist``, when there is no store at the location; nothing was created.
    StorePathError
        The location cannot hold a store (a folder, not writable, not a DuckDB file, a URL of
        another kind, or psycopg is not installed for a ``postgresql://`` URL).
    SchemaVersionError
        The store was written by a newer resumable; it is left untouched.
    """
    if location is not None and not isinstance(location, (str, os.PathLike)):
        raise ArgumentTypeError("store", location, "a file path (str or os.PathLike) or a store")
    chosen = os.fspath(location) if location is not None else os.environ.get("RESUMABLE_STORE")
    if not isinstance(chosen, (str, type(None))):  # a PathLike of bytes
        raise ArgumentTypeError("store", location, "a file path (str or os.PathLike) or a store")
    if location is not None and not chosen:
        raise StorePathError(
            "", "is empty", "Name a file, e.g. '.resumable/store.duckdb', or pass None for the default."
        )
    if chosen and "\x00" in chosen:
        shown = chosen.replace("\x00", "\\x00")
        raise StorePathError(shown, "contains a NUL byte, which no file name can hold", "Choose another path.")
    if chosen and _URL.match(chosen):
        return _open_server(chosen, read_only=read_only)
    path = _config.store_path(chosen or None)
    key = str(path)
    payloads = os.environ.get("RESUMABLE_PAYLOADS")
    if payloads and places.is_url(payloads):
        # A file store keeps its payloads beside its file (one machine needs no bucket); taking the
        # variable's bucket silently for a folder would put a user's checkpoints where they did not look.
        raise StorePathError(
            key,
            f"is a DuckDB file, whose large checkpoints stay in the folder beside it, but RESUMABLE_PAYLOADS names "
            f"an object store ('{payloads}'), which only a PostgreSQL store uses",
            "Unset RESUMABLE_PAYLOADS to use this file, or use a postgresql:// store with ?payloads=<URL> "
            "(docs/scale.md).",
        )
    with _LOCK:
        store = _BY_LOCATION.get(key)
        if store is not None and not read_only and getattr(store, "read_only", False):
            _BY_LOCATION.pop(key).close()  # opened for reading before; a writer needs the file writable
            store = None
        if store is None:
            if (must_exist or read_only) and not path.exists():
                raise CheckpointNotFoundError(key)
            store = DuckDBStore(path, read_only=read_only)
            if store.holds_unreplayed_log:
                # A dead process logged steps that returned (a resume restores them) and the file
                # does not hold them yet: shown read-only they would read as interrupted, so they are
                # put into the store first, the one write a read command makes (docs/durability.md).
                store.close()
                store = DuckDBStore(path)
            _BY_LOCATION[key] = store
        return store


def _open_server(url: str, *, read_only: bool) -> Store:
    """The process-wide server store at ``url``, keyed by the URL without its password."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"  # never a password
    if parts.scheme not in ("postgresql", "postgres"):
        raise StorePathError(
            shown,
            f"is a {parts.scheme}:// URL, and resumable keeps stores in files or on a PostgreSQL server only",
            "Use a file path or a postgresql:// URL.",
        )
    try:
        from resumable._store.postgres import PostgresStore, parse_url
    except ImportError as exc:
        raise StorePathError(
            shown,
            f"names a PostgreSQL server, and psycopg is not installed ({exc})",
            "Install it with: pip install 'resumable[postgres]'",
        ) from None
    key = parse_url(url).location
    with _LOCK:
        store = _BY_LOCATION.get(key)
        if store is not None and not read_only and getattr(store, "read_only", False):
            _BY_LOCATION.pop(key).close()
            store = None
        if store is None:
            store = PostgresStore(url, read_only=read_only)
            _BY_LOCATION[key] = store
        return store


def forget_all() -> None:
    """Close every store of this process and forget them, so the next ``open_store`` opens afresh (tests)."""
    process.close_all()
    with _LOCK:
        _BY_LOCATION.clear()
