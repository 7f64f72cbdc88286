"""Fingerprints of what a step read, and the one rule that says whether they changed.

A completed step restores only when its source and every input are unchanged. An input is a name
the step read (a notebook variable, a Python-API argument) or a file it declared. Its
:class:`Input` holds up to two fingerprints, and the input is unchanged when either agrees:

- ``origin``: where the value came from. For a name produced by a durable step, the digest of that
  step's checkpoint (a restored value is never hashed again); for a name bound by a plain cell,
  the digest of that cell's source chained with the inputs that cell read. A cell that makes a
  client, a connection or a timestamp makes it again in a new kernel with the same origin, so the
  re-made object does not count as a change.
- ``value``: for small plain values (numbers, strings, bytes, bools, None and lists, tuples, sets
  and dicts of them, at most :data:`SMALL_VALUE_CHARS` characters as ``repr``), the value itself.
  Two cells that bind equal values agree, and messages can show ``0.5 → 0.7``.

Everything else (a value of unknown origin and no small value, such as one bound by ``%run``) is
fingerprinted by its pickled bytes up to :data:`PICKLE_LIMIT_BYTES`; past that, or when it cannot be
pickled, by its type alone, and :attr:`Input.weak` says so (the front end tells the user once).

Pure: no store, no IPython.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import pickle
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resumable.errors import DependencyError

#: Longest ``repr`` of a value fingerprinted (and shown) by value.
SMALL_VALUE_CHARS = 1000
#: Values of unknown origin are hashed through pickle up to this many bytes.
PICKLE_LIMIT_BYTES = 16 * 1024 * 1024
_SHOWN_CHARS = 60
_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_CONTAINERS = (list, tuple, set, frozenset, dict)


@dataclass(frozen=True, slots=True)
class Input:
    """The fingerprints of one input; unchanged when either fingerprint agrees with the recorded one."""

    origin: str | None = None
    value: str | None = None
    shown: str | None = None  # the small value as messages show it
    weak: bool = False  # only the type could be fingerprinted: a change of content goes unseen

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.origin is not None:
            out["origin"] = self.origin
        if self.value is not None:
            out["value"] = self.value
        if self.shown is not None:
            out["shown"] = self.shown
        if self.weak:
            out["weak"] = True
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Input:
        return cls(raw.get("origin"), raw.get("value"), raw.get("shown"), bool(raw.get("weak", False)))

    def same_as(self, recorded: Input) -> bool:
        """Whether this input agrees with ``recorded`` by origin or by value."""
        if self.origin is not None and self.origin == recorded.origin:
            return True
        return self.value is not None and self.value == recorded.value


@dataclass(frozen=True, slots=True)
class InputChange:
    """One input that differs from the recorded one (``old`` None: not read before; ``new`` None: gone)."""

    name: str
    old: Input | None
    new: Input | None

    def describe(self) -> str:
        """``'threshold' changed (0.5 → 0.7)``, as the one-line messages say it."""
        label = f"file '{self.name[len(FILE_PREFIX) :]}'" if self.name.startswith(FILE_PREFIX) else f"'{self.name}'"
        if self.old is None:
            return f"{label} is read now"
        if self.new is None:
            return f"{label} is no longer read"
        if self.old.shown is not None and self.new.shown is not None:
            return f"{label} changed ({self.old.shown} → {self.new.shown})"
        return f"{label} changed"


FILE_PREFIX = "file:"  # inputs that are files declared with --depends-on / depends_on=


def encode(inputs: Mapping[str, Input]) -> dict[str, dict[str, Any]]:
    """The JSON form the store records."""
    return {name: value.to_json() for name, value in inputs.items()}


def decode(raw: Mapping[str, Any] | None) -> dict[str, Input]:
    """Back from the JSON form; a step recorded before inputs were tracked has none."""
    return {name: Input.from_json(value) for name, value in (raw or {}).items()}


def changes(recorded: Mapping[str, Input], current: Mapping[str, Input]) -> list[InputChange]:
    """The inputs that differ, in the order the step reads them now (then the ones it no longer reads)."""
    out = [
        InputChange(name, recorded.get(name), new)
        for name, new in current.items()
        if name not in recorded or not new.same_as(recorded[name])
    ]
    out += [InputChange(name, old, None) for name, old in recorded.items() if name not in current]
    return out


def describe(found: list[InputChange], limit: int = 3) -> str:
    """``'a' changed (1 → 2), 'b' changed`` for the first ``limit`` changes, then how many more."""
    text = ", ".join(change.describe() for change in found[:limit])
    if len(found) > limit:
        text += f" and {len(found) - limit} more"
    return text


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()[:32]


def _small_repr(value: object, budget: list[int], depth: int = 0) -> str | None:
    """A canonical repr of a small plain value, or None when the value is not one (or too big)."""
    kind = type(value)
    if kind in _SCALARS:
        text = repr(value)
        budget[0] -= len(text)
        return f"{kind.__name__}:{text}" if budget[0] >= 0 else None
    if kind not in _CONTAINERS or depth > 20:
        return None
    assert isinstance(value, (list, tuple, set, frozenset, dict))
    if len(value) > SMALL_VALUE_CHARS:
        return None
    pairs = value.items() if isinstance(value, dict) else ((item, None) for item in value)
    items: list[str] = []
    for key, item in pairs:
        k = _small_repr(key, budget, depth + 1)
        v = _small_repr(item, budget, depth + 1) if isinstance(value, dict) else ""
        if k is None or v is None:
            return None
        items.append(f"{k}={v}" if isinstance(value, dict) else k)
    if isinstance(value, (set, frozenset, dict)):
        items.sort()  # equal sets and dicts agree whatever their order
    return f"{kind.__name__}[{','.join(items)}]"


def is_small_plain(value: object) -> bool:
    """Whether ``value`` is fingerprinted by value (so identity says nothing about it)."""
    return type(value) in _SCALARS or (type(value) in _CONTAINERS and small_value(value) is not None)


def small_value(value: object) -> Input | None:
    """The value fingerprint of a small plain value, or None when ``value`` is not one."""
    canonical = _small_repr(value, [SMALL_VALUE_CHARS])
    if canonical is None:
        return None
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 1] + "…"
    return Input(value="v:" + _digest(canonical), shown=shown)


def of_checkpoint(digest: str, value: object = None) -> Input:
    """A name produced by a durable step: its checkpoint's digest (plus the small value, to show)."""
    small = small_value(value) if value is not None else None
    return Input(origin="ckpt:" + digest, value=small.value if small else None, shown=small.shown if small else None)


def of_cell(source: str, name: str, reads: Mapping[str, Input], value: object) -> Input:
    """A name bound by a plain cell: the cell's source chained with what it read (plus a small value)."""
    chained = [f"{n}={i.origin or i.value or ''}" for n, i in sorted(reads.items())]
    origin = "cell:" + _digest(source, name, *chained)
    small = small_value(value)
    return Input(origin=origin, value=small.value if small else None, shown=small.shown if small else None)


CHANGED_IN_PLACE = "mut:"  # the origin of a name a plain cell changed without binding it


def changed_in_place(before: Input, source: str) -> Input:
    """A name a plain cell changed in place (``rows.append(x)``): its origin chained with the cell."""
    return Input(origin=CHANGED_IN_PLACE + _digest(before.origin or before.value or "", source))


class _Capped(io.RawIOBase):
    """A sink that hashes what pickle writes and gives up past the limit."""

    def __init__(self, limit: int) -> None:
        self.hash = hashlib.sha256()
        self.left = limit

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data)
        self.left -= size
        if self.left < 0:
            raise OverflowError
        self.hash.update(data)
        return size


def of_unknown(value: object) -> Input:
    """A value of unknown origin: small value, else pickled bytes up to the limit, else its type (weak)."""
    small = small_value(value)
    if small is not None:
        return small
    sink = _Capped(PICKLE_LIMIT_BYTES)
    try:
        pickle.Pickler(sink, protocol=5).dump(value)
    except Exception:  # too big, or not picklable (a connection, a generator)
        kind = type(value)
        return Input(origin=f"type:{kind.__module__}.{kind.__qualname__}", weak=True)
    return Input(origin="pickle:" + sink.hash.hexdigest()[:32])


def of_argument(value: object, produced: Mapping[int, str]) -> Input:
    """A Python-API argument: by content up to the pickle limit, else the digest of the step that returned it.

    Content comes first because a returned value may have been changed in place before this call
    (``rows.append(x)`` between two steps), which its identity cannot show; only a value too large
    to hash is taken by the checkpoint it came from (so a 1 GB frame is never hashed).
    """
    found = of_unknown(value)
    digest = produced.get(id(value))
    if found.weak and digest is not None:
        return of_checkpoint(digest)
    return found


_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime) -> sha256


def of_file(step: str, declared: str) -> tuple[str, Input]:
    """A file declared with ``--depends-on``: its size, mtime and content digest (cached per mtime).

    Raises
    ------
    DependencyError
        The path does not exist, is a folder, or cannot be read; nothing ran.
    """
    path = Path(declared).expanduser()
    absolute = path if path.is_absolute() else Path.cwd() / path
    try:
        info = absolute.stat()
    except FileNotFoundError:
        raise DependencyError(step, declared, str(absolute), "does not exist") from None
    except OSError as exc:
        raise DependencyError(step, declared, str(absolute), f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DependencyError(step, declared, str(absolute), "is a folder; name the files inside it the step reads")
    key = (str(absolute), info.st_ino, info.st_size, info.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        try:
            with open(absolute, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise DependencyError(step, declared, str(absolute), f"cannot be read ({exc.strerror})") from None
        digest = _FILE_DIGESTS[key] = h.hexdigest()[:32]
    modified = datetime.datetime.fromtimestamp(info.st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    shown = f"{info.st_size} bytes, modified {modified}"
    return FILE_PREFIX + os.fspath(declared), Input(origin="file:" + digest, shown=shown)
