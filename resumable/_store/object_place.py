"""Large payloads in an object store, named by an fsspec URL (``s3://bucket/prefix``).

Imported only when a store's payload location is such a URL, so ``fsspec`` (and the backend it
loads, ``s3fs`` for ``s3://``) costs nothing otherwise. Credentials and endpoints come from the
backend's usual configuration (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``~/.aws``),
or fsspec's own (``FSSPEC_S3_ENDPOINT_URL``...).

Writing. The payload is serialized into a private staging folder on this machine (not fsynced: the
local copy is only on its way), then put under its final key, and only then does ``write`` return
and the step's completing transaction record the key. S3, Google Cloud Storage and Azure Blob
Storage make a PUT (also a multipart upload, at its completion) visible whole or not at all, and
durable when it is acknowledged: on those the object is written directly under its final key, and
a writer killed mid-PUT leaves nothing, or an incomplete multipart upload that is never visible
(a bucket lifecycle rule aborting incomplete uploads reclaims it). On any other backend the
object is written under a temporary key and then moved to its final key.

Every key is new: the digest followed by a random token (``ab/abcd....3f2a9c1e.bin``), under the
store's own folder in the prefix (``namespace``: a random name the store keeps in its ``meta``
table). Two stores given the same URL (one ``RESUMABLE_PAYLOADS`` for every database) thus never
list, nor collect, each other's objects: gc removes only under its own store's folder. Objects
are never overwritten nor shared between rows, unlike the folder's files (one file per content).
So a removal (``gc``, ``resumable rm``) can never race a writer putting the same bytes under the
same name, which an object store, with no rename and no inode to compare, could not detect.
The price: identical large outputs of different steps are stored once each.

Reading downloads the object into the staging folder, maps it, and removes the local copy; the
digest (and signature) is checked before anything is unpickled, as for a file. A missing object
is a failed digest check; a store that cannot be reached is :class:`~resumable.errors.ObjectStoreError`.

The staging folder (``resumable-spill-UID`` under ``TMPDIR``, ``staging.py``) holds bytes that are
about to be unpickled, so it must be this user's alone: it is checked before every use, not only
when it is created. A staging folder that is not private, cannot be written, or whose disk is full,
is :class:`~resumable.errors.StagingFolderError`: this machine's problem, never blamed on the bucket.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from resumable import _codec
from resumable._records import Blob
from resumable._store import faults
from resumable._store.base import WriteFault
from resumable._store.places import WRITE_GRACE_S, Unreferenced
from resumable._store.staging import LOCAL_ONLY, first_line, private_folder, stage, staging_folder, unusable
from resumable.errors import ObjectStoreError, StorePathError

# Backends whose PUT is atomic (visible whole or not at all) and durable once acknowledged.
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


class ObjectPlace:
    """Payloads as objects under an fsspec URL; see the module docstring for what is promised."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            import fsspec
            from fsspec.core import split_protocol
        except ImportError:
            raise StorePathError(
                url,
                "names an object store for large checkpoints, which needs the fsspec package",
                "Install it with: pip install 'resumable[objectstore]'",
            ) from None
        self.protocol = split_protocol(self.url)[0] or "file"
        try:
            fsspec.get_filesystem_class(self.protocol)
        except (ImportError, ValueError) as exc:
            raise StorePathError(
                url,
                f"names an object store fsspec cannot open ({first_line(exc)})",
                "Install the package for that scheme (for s3://: pip install 'resumable[objectstore]') or fix the URL",
            ) from None
        self.staging = staging_folder()
        self._fs: Any = None
        self._root = ""
        self._pid = -1
        # The store's folder under the prefix (``use_namespace``); until it is known nothing is written or collected.
        self.namespace: str | None = None

    @property
    def where(self) -> str:
        return self.url

    def use_namespace(self, namespace: str) -> None:
        """The store's own folder under the prefix: new objects go there, and gc lists only there."""
        self.namespace = namespace

    def _filesystem(self) -> tuple[Any, str]:
        """The fsspec file system and the root path in it; a new one in a forked child (its event loop)."""
        if self._fs is None or self._pid != os.getpid():
            from fsspec.core import url_to_fs

            self._fs, self._root = url_to_fs(self.url, skip_instance_cache=True)
            self._root = self._root.rstrip("/")
            self._pid = os.getpid()
        return self._fs, self._root

    # ------------------------------------------------------------------ writing

    def write(self, name: str, value: object) -> Blob:
        """Stage locally, put under a new key, and return only once the object store acknowledged it."""
        blob = stage(self.staging, self.url, name, value, spill=False)  # this machine's disk: the fix is TMPDIR
        if blob.file is None:
            return blob  # small: it goes into the row
        local = self.staging / blob.file
        assert self.namespace is not None, "the store names its folder under the prefix when it opens"
        relative = f"{self.namespace}/{blob.digest[:2]}/{blob.digest}.{secrets.token_hex(8)}.bin"
        try:
            fs, root = self._filesystem()
            key = f"{root}/{relative}"
            if self.protocol in ATOMIC_PUT:
                fs.put_file(str(local), key)
            else:
                temporary = f"{root}/{self.namespace}/staging/{_codec.part_prefix()}{secrets.token_hex(8)}.part"
                fs.put_file(str(local), temporary)
                fs.mv(temporary, key)
        except Exception as exc:
            raise WriteFault(faults.OBJECT_STORE, self.url, first_line(exc), blob.size) from exc
        finally:
            local.unlink(missing_ok=True)
        return Blob(blob.name, blob.codec, blob.digest, blob.size, None, relative, None)

    # ------------------------------------------------------------------ reading

    def misplaced(self, relative: str) -> str | None:
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts or "://" in relative or not path.parts:
            return f"points to an object outside the store's payload location ({relative!r})"
        return None

    @contextmanager
    def fetch(self, relative: str) -> Iterator[Path]:
        tmp = private_folder(self.staging, self.url, loading=True)
        local = tmp / f"{_codec.part_prefix()}{secrets.token_hex(8)}.get"
        try:
            try:
                os.close(os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private before a byte arrives
            except OSError as exc:
                raise unusable(tmp, exc, self.url, loading=True) from exc
            try:
                fs, root = self._filesystem()
                fs.get_file(f"{root}/{relative}", str(local))
            except FileNotFoundError:
                raise _codec.DigestMismatch(f"its payload object {relative} is missing from {self.url}") from None
            except Exception as exc:
                disk = _local_failure(exc, local)
                if disk is None:
                    raise ObjectStoreError(self.url, first_line(exc)) from exc
                local.unlink(missing_ok=True)  # before measuring what is free
                raise unusable(tmp, disk, self.url, loading=True, needed=self._size_of(relative)) from exc
            yield local  # decode maps it: the mapping outlives the file removed below
        finally:
            local.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the staging folder (staging.py)

    def _size_of(self, relative: str) -> int | None:
        """The object's size, for a message: unknown when even that cannot be asked."""
        try:
            fs, root = self._filesystem()
            return int(fs.info(f"{root}/{relative}").get("size") or 0) or None
        except Exception:
            return None

    # ------------------------------------------------------------------ removing

    def _listing(self) -> dict[str, tuple[int, float]]:
        """Every payload object of this store by its relative key: (size, last-modified as a Unix time).

        Only under the store's own folder: the prefix may hold other stores' objects, which no row
        of this store references and which its gc must never take.
        """
        if self.namespace is None:
            return {}
        try:
            fs, root = self._filesystem()
            fs.invalidate_cache()
            found = fs.find(f"{root}/{self.namespace}", detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise ObjectStoreError(self.url, first_line(exc)) from exc
        listing = {}
        for key, info in found.items():
            # Only what lies under the prefix: a backend that lists by plain prefix also names
            # ``runs2/...`` for ``runs``, objects no row of ours could ever reference.
            if info.get("type") == "directory" or not key.startswith(f"{root}/{self.namespace}/"):
                continue
            listing[key[len(root) + 1 :]] = (int(info.get("size") or 0), _modified(info))
        return listing

    def remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        """Objects no row points to whose last change is older than the write grace.

        The object store's last-modified time is compared with this machine's clock: keep the two
        within minutes of each other (NTP), or a clock running an hour ahead could take a young
        object whose row is about to be committed.

        A killed write leaves no partial object to take sooner (see the module docstring); the
        staging folder's leftovers of writers that are gone are removed too.
        """
        self._clean_staging()
        fs, root = self._filesystem()
        now = time.time()
        removed = freed = 0
        for relative, (size, modified) in self._listing().items():
            if relative in referenced or now - modified < WRITE_GRACE_S:
                continue
            try:
                fs.rm_file(f"{root}/{relative}")
            except FileNotFoundError:
                continue
            except Exception as exc:
                raise ObjectStoreError(self.url, first_line(exc)) from exc
            removed += 1
            freed += size
        return removed, freed

    def _clean_staging(self) -> None:
        tmp = self.staging / "tmp"
        if not tmp.is_dir():
            return
        for file in tmp.iterdir():
            if file.suffix in (".part", ".get") and _codec.part_writer_alive(file.name) is False:
                file.unlink(missing_ok=True)

    def recover(self, referenced: set[str]) -> None:
        """Nothing to repair: objects are removed in one call each, never moved aside."""

    def unreferenced(self, gone: Sequence[str], written: dict[str, datetime]) -> list[Unreferenced]:
        """All of them: no other writer ever puts an object under a key a row already named.

        Called inside the deleting transaction: a store that cannot be asked rolls the deletion back.
        """
        files = []
        try:
            fs, root = self._filesystem()
            fs.invalidate_cache()
            for relative in gone:
                try:
                    info = fs.info(f"{root}/{relative}")
                except FileNotFoundError:
                    continue
                files.append((relative, 0, int(info.get("size") or 0)))
        except Exception as exc:
            raise ObjectStoreError(self.url, first_line(exc)) from exc
        return files

    def remove(self, files: Sequence[Unreferenced]) -> tuple[int, int]:
        """Best effort, after the rows are gone: an object that cannot be removed now is gc's later."""
        fs, root = self._filesystem()
        removed = freed = 0
        for relative, _, size in files:
            try:
                fs.rm_file(f"{root}/{relative}")
            except Exception:  # noqa: S112 - left for gc, which reports a store it cannot reach
                continue
            removed += 1
            freed += size
        return removed, freed


def _local_failure(exc: BaseException, local: Path) -> OSError | None:
    """The local disk's error behind a failed download, or None when the object store failed.

    A full disk, a file size limit or a read-only file system can only be the local side's; any
    other error counts as local only when it names the local file (a bucket's refusal is also a
    ``PermissionError``, but it never names a path of this machine).
    """
    current: BaseException | None = exc
    seen = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (
            current.errno in LOCAL_ONLY or (current.filename is not None and str(current.filename) == str(local))
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def _modified(info: dict[str, Any]) -> float:
    """An object's last-modified time as a Unix time; unknown counts as now (kept by the grace)."""
    for field in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()
