"""Where the store lives, which run to join and which signing key to use.

Precedence everywhere: explicit argument > ``RESUMABLE_*`` environment variable > default.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from resumable.errors import OptionError, SigningKeyError

DEFAULT_STORE = Path(".resumable") / "store.duckdb"
SERVER_SCHEMES = ("postgresql://", "postgres://")  # a store on a server, not a file (docs/scale.md)
DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_LEASE_S = 60.0


def store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store file to use, resolved against the current working directory."""
    if explicit is not None:
        chosen = Path(explicit)
    elif os.environ.get("RESUMABLE_STORE"):
        chosen = Path(os.environ["RESUMABLE_STORE"])
    else:
        chosen = DEFAULT_STORE
    return chosen.expanduser().absolute()


def store_location(explicit: str | os.PathLike[str] | None = None) -> Path | str:
    """The store to use, as ``open_store`` takes it: a server URL as given, else the file's absolute path."""
    chosen = os.fspath(explicit) if explicit is not None else os.environ.get("RESUMABLE_STORE")
    if isinstance(chosen, str) and chosen.startswith(SERVER_SCHEMES):
        return chosen
    return store_path(explicit)


def env_run_id() -> str | None:
    """The run id a headless executor asked this process to join."""
    return os.environ.get("RESUMABLE_RUN_ID") or None


class Durability(str, Enum):
    """What a returned step's completion survives (docs/durability.md says each in one sentence)."""

    DURABLE = "durable"  # the death of its process at once, a power cut within the group-commit window
    DEFERRED = "deferred"  # quick steps of the last window may run again after a crash (explicit choice)


def durability(explicit: str | Durability | None = None) -> Durability:
    """The durability mode: argument > ``RESUMABLE_DURABILITY`` > ``durable``."""
    raw = explicit if explicit is not None else (os.environ.get("RESUMABLE_DURABILITY") or Durability.DURABLE)
    try:
        return Durability(raw)
    except ValueError:
        where = "durability" if explicit is not None else "RESUMABLE_DURABILITY"
        raise OptionError(where, raw, "expected 'durable' (the default) or 'deferred'") from None


def lock_timeout_s() -> float:
    """How long to wait for another process to release the store's file."""
    raw = os.environ.get("RESUMABLE_LOCK_TIMEOUT")
    return float(raw) if raw else DEFAULT_LOCK_TIMEOUT_S


def lease_s() -> float:
    """How long a process's ownership lasts unless it renews it (it renews at a third of this)."""
    raw = os.environ.get("RESUMABLE_LEASE_S")
    try:
        value = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        return DEFAULT_LEASE_S
    return value if 0 < value < float("inf") else DEFAULT_LEASE_S


def signing_key() -> bytes | None:
    """The key that signs checkpoints, kept outside the store (env var or a file it names).

    A key file that is named but cannot be read raises :class:`SigningKeyError`: silently
    running without the key would write unsigned checkpoints the signed store later refuses.
    """
    key = os.environ.get("RESUMABLE_SIGNING_KEY")
    if key:
        return key.encode()
    key_file = os.environ.get("RESUMABLE_SIGNING_KEY_FILE")
    if not key_file:
        return None
    try:
        content = Path(key_file).expanduser().read_bytes().strip()
    except FileNotFoundError:
        raise SigningKeyError(key_file, "does not exist") from None
    except IsADirectoryError:
        raise SigningKeyError(key_file, "is a folder, not a file") from None
    except OSError as exc:
        raise SigningKeyError(key_file, f"cannot be read ({exc.strerror or exc})") from None
    if not content:  # an empty key would sign with a key anyone knows
        raise SigningKeyError(key_file, "is empty")
    return content
