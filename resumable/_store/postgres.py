"""PostgresStore: the :class:`~resumable._store.base.Store` on a PostgreSQL server, for a shared run history.

It runs the same row modules as ``DuckDBStore`` (``runs``, ``steps``, ``checkpoints``,
``transitions``, ``schema``, ``lease``: one copy of the SQL, ``dialect.py`` for the differences)
on pooled psycopg 3 connections. What differs, and why:

- Every method is one transaction, committed before it returns: no group commit and no
  completion log. The server's COMMIT is durable when it returns, and a log on one host's disk
  could not be replayed by a worker on another host.
- Transactions run at READ COMMITTED. Every transaction that decides about a run (claiming it,
  starting, retrying or invalidating a step, unlocking) first locks the run's row
  (``SELECT ... FOR UPDATE`` in ``runs.check_owner``); creating a run and migrating the schema take
  an advisory lock on the name instead, since their row may not exist yet. So two processes racing
  for a run are serialized: exactly one takes it, the other then sees the winner as owner and gets
  ``RunOwnedError`` naming it. A step's completion or failure is a guarded ``UPDATE`` (still
  running under this owner), which PostgreSQL re-checks after waiting for a concurrent change, so
  a completion after a takeover is refused. SERIALIZABLE would add retry loops to every method
  for no guarantee these locks do not already give.
- Liveness across hosts is the lease (``lease.py``): an owner on this host is checked by its
  process, an owner on another host by its lease's expiry.
- Large checkpoints go to the payload location the URL names (``?payloads=/shared/folder``, or
  ``RESUMABLE_PAYLOADS``), written and fsynced before the completing transaction as in the DuckDB
  store; an fsspec URL there (``?payloads=s3://bucket/prefix``) puts them in an object store
  (``object_place.py``: a completed PUT before that transaction). Without one they are kept in
  the database, which every host can read.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool

from resumable import _config
from resumable._config import Durability
from resumable._owner import current_owner
from resumable._records import Blob, Owner, RunInfo
from resumable._states import StepState
from resumable._store import checkpoints, faults, lease, pg_query, places, process, runs, staging, steps
from resumable._store.base import (
    Begin,
    Compaction,
    Completion,
    GcReport,
    QueryResult,
    StepRequest,
)
from resumable._store.dialect import POSTGRES, Cursor, pyformat
from resumable._store.schema import check_version, migrate
from resumable._store.sql_store import SqlStore
from resumable.errors import (
    CheckpointNotFoundError,
    InvalidTransition,
    StepChangedError,
    StoreLockedError,
    StorePathError,
    StoreServerError,
)

SCHEMES = ("postgresql", "postgres")
# How many times an operation is tried again on a new session after its session was cut.
RETRIES = 3
T = TypeVar("T")
# Pools a forked child inherited: never closed there (closing would end the parent's sessions on
# the shared sockets), only kept from the garbage collector.
_INHERITED: list[psycopg_pool.ConnectionPool[Any]] = []


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """What a ``postgresql://`` URL names: where to connect, how to show it, and the payload location."""

    conninfo: str  # the URL psycopg connects with (``payloads`` taken out)
    location: str  # the URL without its password, as messages show it and ``open_store`` takes it again
    payloads: Path | None  # the folder large checkpoints go to; None: an object store, or the database
    payload_url: str | None = None  # the object store (an fsspec URL) large checkpoints go to


def parse_url(url: str) -> ServerConfig:
    """Split a store URL into what psycopg gets, what messages show and the payload location.

    A payload location with a scheme fsspec may know (``s3://bucket/prefix``) is an object store;
    a plain path or a ``file://`` URL is a folder.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    folder = next((v for k, v in query if k == "payloads"), None) or os.environ.get("RESUMABLE_PAYLOADS") or None
    kept = urlencode([(k, v) for k, v in query if k != "payloads"])
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, kept, ""))
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    shown = [(k, v) for k, v in query if k != "password"]  # the payload folder stays: reopening needs it
    location = urlunsplit(("postgresql", netloc, parts.path, urlencode(shown), ""))
    if folder and places.is_url(folder):
        return ServerConfig(conninfo, location, None, folder)
    return ServerConfig(conninfo, location, places.folder_of(folder) if folder else None)


def _payload_location(con: PgConnection, config: ServerConfig, read_only: bool, store: str) -> str | None:
    """Where the store's large checkpoints live: recorded in ``meta`` by the first process that named a place.

    Every process must use that one place. One that names none uses it (a worker started without
    ``RESUMABLE_PAYLOADS`` still finds the checkpoints others wrote, instead of calling them missing);
    one that names another is refused before anything is read or written, since its restores would
    miss every file and its own files would be missed by every other process.
    """
    named = config.payload_url.rstrip("/") if config.payload_url else None
    if config.payloads is not None:
        named = str(config.payloads)
    if named is not None and not read_only:
        con.execute(
            "INSERT INTO meta (key, value) VALUES ('payload_location', ?) ON CONFLICT (key) DO NOTHING", [named]
        )
    row = con.execute("SELECT value FROM meta WHERE key = 'payload_location'").fetchone()
    recorded = None if row is None else str(row[0])
    if named is not None and recorded is not None and named != recorded:
        raise StorePathError(
            store,
            f"keeps its large checkpoints in {recorded}, and this process names {named} "
            "(RESUMABLE_PAYLOADS or ?payloads=)",
            f"Nothing was read or written. Name {recorded} (a shared folder must be mounted at that path on every "
            "machine), or leave the setting out to use it",
        )
    return recorded if recorded is not None else named


def _payload_namespace(con: PgConnection, read_only: bool) -> str | None:
    """This store's own folder in a shared payload folder or bucket prefix: a random name kept in ``meta``.

    Several databases may be given the same payload location; each store writes and collects only
    under its own folder, so one store's gc or ``rm`` never takes another's payloads. None: a
    read-only open of a store that never had one (it wrote nothing there, and reads need none:
    rows hold names relative to the location).
    """
    if not read_only:
        con.execute(
            "INSERT INTO meta (key, value) VALUES ('payload_namespace', ?) ON CONFLICT (key) DO NOTHING",
            [secrets.token_hex(8)],
        )
    row = con.execute("SELECT value FROM meta WHERE key = 'payload_namespace'").fetchone()
    return None if row is None else str(row[0])


class PgConnection:
    """One open transaction on the server, as the row modules use it (``?`` placeholders, ``dialect``)."""

    dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, parameters: Any = None, /) -> Cursor:
        """Run one statement, its parameters bound into its text (``? IS NULL`` then needs no type).

        A statement carrying bytes (a checkpoint's) sends its parameters apart instead, the bytes in binary.
        """
        if parameters is None:
            return self._conn.execute(query)
        if any(isinstance(p, (bytes, bytearray, memoryview)) for p in parameters):
            return psycopg.Cursor(self._conn).execute(pyformat(query), parameters)  # type: ignore[arg-type]
        return self._conn.execute(pyformat(query), parameters)  # type: ignore[arg-type]


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database (and, for large checkpoints, a payload folder every worker sees).

    Front ends get one from :func:`resumable._store.open_store` with a ``postgresql://`` URL; the
    contract of every method is on :class:`~resumable._store.base.Store`, how it is kept here in
    the module docstring.

    Raises
    ------
    StoreServerError
        The server cannot be reached or refused the connection (the message is the server's).
    SchemaVersionError
        The database was written by a newer resumable; it is left untouched.
    """

    holds_unreplayed_log = False  # no completion logs: every completion is committed before it returns

    def __init__(self, url: str, *, read_only: bool = False, lock_timeout_s: float | None = None) -> None:
        config = parse_url(url)
        self.location = config.location
        self.read_only = read_only
        self.lock_timeout_s = _config.lock_timeout_s() if lock_timeout_s is None else lock_timeout_s
        self._conninfo = config.conninfo
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._pool_lock = threading.Lock()
        self._keeper: lease.LeaseKeeper | None = None
        self._claims: dict[str, int] = {}  # runs this process claimed, by how many nested claims
        self._claim_tokens: dict[str, int] = {}  # the fencing token of each claim
        self._in_flight: dict[tuple[str, str], int | None] = {}  # steps this process executes now: their tokens
        # Failed attempts written before the next transaction (run, step, owner, error, traceback, duration, token).
        self._failures: list[tuple[str, str, Owner, str, str | None, float, int | None]] = []
        named: places.SharedPlace | None = None  # an object store's URL is checked before it is recorded
        if config.payload_url is not None:
            from resumable._store.object_place import ObjectPlace  # fsspec: loaded only for a store that names one

            named = ObjectPlace(config.payload_url)
        with self._transaction() as con:
            if read_only:
                exists = con.execute(POSTGRES.exists_table, ["meta"]).fetchone()
                if not exists or not exists[0]:
                    raise CheckpointNotFoundError(self.location)
                check_version(con, self.location)
            else:
                migrate(con, self.location)
            location = _payload_location(con, config, read_only, self.location)
            namespace = _payload_namespace(con, read_only) if location is not None else None
        self.payload_dir: Path | None = None
        self.payload_url: str | None = None
        place: places.PayloadPlace
        shared: places.SharedPlace | None = None  # a folder or bucket other databases may be given too
        if location is not None and places.is_url(location):
            from resumable._store.object_place import ObjectPlace

            place = shared = named or ObjectPlace(location)
            self.payload_url = location
        elif location is not None:
            place = shared = places.FolderPlace(Path(location))
            self.payload_dir = Path(location)
        else:
            # Without a shared folder, a large output is spilled to a private folder and read back into the row.
            place = staging.SpillPlace(staging.staging_folder(), self.location)
        if shared is not None and namespace is not None:
            shared.use_namespace(namespace)
        self._payloads = checkpoints.Payloads(place, _config.signing_key())
        process.track(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    # ------------------------------------------------------------------ connections

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each pooled session: UTC timestamps, and a bounded wait for another transaction's locks."""
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(f"SET lock_timeout = {int(self.lock_timeout_s * 1000)}")

    def _connections(self) -> psycopg_pool.ConnectionPool[Any]:
        """The pool, opened on first use (again after a close or a fork); the first session tells why it fails."""
        with self._pool_lock:
            if self._pool is None:
                # One plain connection first: a pool retries a refused connection silently until its
                # timeout, where this raises the server's own reason at once.
                try:
                    psycopg.connect(self._conninfo, connect_timeout=max(2, int(self.lock_timeout_s))).close()
                except psycopg.Error as exc:
                    raise StoreServerError(self.location, _first_line(exc)) from exc
                self._pool = psycopg_pool.ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=4,
                    kwargs={"autocommit": True, "cursor_factory": psycopg.ClientCursor},
                    configure=self._configure,
                    check=psycopg_pool.ConnectionPool.check_connection,
                    open=False,
                    name="resumable",
                )
                self._pool.open(wait=True, timeout=max(2.0, self.lock_timeout_s))
            return self._pool

    @contextmanager
    def _transaction(self) -> Iterator[PgConnection]:
        """One transaction on a pooled session; the server's errors become the store's own."""
        try:
            if self._failures:
                self._flush_failures()
            with self._connections().connection(timeout=self.lock_timeout_s) as conn, conn.transaction():
                yield PgConnection(conn)
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreLockedError(self.location, None, self.lock_timeout_s) from exc
        except psycopg_pool.PoolTimeout as exc:
            raise StoreServerError(self.location, f"no connection within {self.lock_timeout_s:.0f} s") from exc
        except psycopg.Error as exc:
            raise StoreServerError(self.location, _first_line(exc)) from exc

    def _retrying(self, first: Callable[[PgConnection], T], again: Callable[[PgConnection], T] | None = None) -> T:
        """``first`` in one transaction; when its session is cut (a restart, a killed session), ``again`` in a new one.

        A transaction that failed because its session was cut may or may not have committed, so what
        runs on the retry (``again``, by default ``first``) must find out, or be harmless twice. The
        new session comes from the pool, which replaces broken sessions and reconnects by itself;
        waiting for it is bounded by ``RESUMABLE_LOCK_TIMEOUT``, and after ``RETRIES`` cut
        sessions in a row the last StoreServerError is raised.
        """
        step = first
        for attempt in range(RETRIES + 1):
            try:
                with self._transaction() as con:
                    return step(con)
            except StoreServerError as exc:
                if attempt == RETRIES or not _cut(exc.__cause__):
                    raise
                step = again or first
        raise AssertionError("unreachable")  # pragma: no cover

    def _flush_failures(self) -> None:
        """Write failed attempts that could not be written when they happened; keep them when that fails again."""
        failures, self._failures = self._failures, []
        try:
            with self._connections().connection(timeout=self.lock_timeout_s) as conn, conn.transaction():
                con = PgConnection(conn)
                for run_id, step, owner, error, tb, duration_s, token in failures:
                    steps.fail_if_running(con, run_id, step, owner, error, tb, duration_s, token)
        except BaseException:
            self._failures[:0] = failures
            raise

    def _lease(self) -> lease.LeaseKeeper:
        if self._keeper is None or self._keeper.owner.pid != os.getpid():
            transaction: Any = self._transaction
            self._keeper = lease.LeaseKeeper(transaction, current_owner(), _config.lease_s())
        return self._keeper

    def close(self) -> None:
        """Stop renewing the lease and close the pool's sessions (the next call opens a new pool)."""
        if self._keeper is not None:
            self._keeper.stop()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def shutdown(self) -> None:
        """At exit: the same as :meth:`close`."""
        self.close()

    def after_fork_in_child(self) -> None:
        """A forked child opens its own sessions; the parent's are left alone (never closed here)."""
        if self._pool is not None:
            _INHERITED.append(self._pool)
        self._pool = None
        self._pool_lock = threading.Lock()
        self._keeper = None
        self._claims.clear()
        self._claim_tokens.clear()
        self._in_flight.clear()
        self._failures = []

    # ------------------------------------------------------------------ runs

    def open_run(
        self, run_id: str, pipeline: str, params: dict[str, Any] | None = None, *, update_params: bool = False
    ) -> RunInfo:
        return self._retrying(lambda con: runs.open_run(con, run_id, pipeline, params, update_params))

    def claim_run(self, run_id: str, owner: Owner, durability: Durability = Durability.DURABLE) -> None:
        """Every completion is committed as it happens here, so ``durability`` changes nothing."""

        def claim(con: PgConnection) -> int:
            runs.check_owner(con, self.location, run_id, owner)
            _, token = runs.set_owner(con, run_id, owner)
            self._lease().claimed(con, token)
            return token

        self._claim_tokens[run_id] = self._retrying(claim)
        self._claims[run_id] = self._claims.get(run_id, 0) + 1

    def release_run(self, run_id: str, owner: Owner) -> None:
        claims = self._claims.get(run_id, 0) - 1
        if claims > 0:
            self._claims[run_id] = claims
            return
        self._claims.pop(run_id, None)
        token = self._claim_tokens.pop(run_id, None)
        self._retrying(lambda con: runs.clear_owner(con, run_id, owner, token))

    # ------------------------------------------------------------------ steps

    def begin_step(self, req: StepRequest) -> Begin:
        """Decided in one transaction; a start whose commit was cut off is begun again.

        The step is then found running under this process, becomes interrupted (an attempt whose
        end was never recorded) and starts once more.
        """
        abandoned = (req.run_id, req.step) not in self._in_flight
        claim = self._claim_tokens.get(req.run_id)

        def begin(con: PgConnection) -> Begin:
            decided = steps.begin(con, self.location, req, abandoned=abandoned, claim=claim)
            if decided.action == "execute":
                self._lease().claimed(con, decided.generation)
            return decided

        decided = self._retrying(begin)
        if decided.action == "execute":
            self._in_flight[(req.run_id, req.step)] = decided.generation
        return decided

    def complete_step(self, done: Completion) -> None:
        """Written in one transaction, under the attempt's fencing token.

        A commit whose answer was lost (the connection cut, the server restarted) has an unknown
        outcome: the retry first looks for this very completion (same owner, token and outputs,
        ``steps.completed_by``) and is done when it finds it, so a completion is never written twice
        nor lost. Any other commit that raised is read back before the error is believed.
        """
        done = self._payloads.bind(done)
        key = (done.run_id, done.step)
        token = self._in_flight.get(key)

        def again(con: PgConnection) -> None:
            if not steps.completed_by(con, done, token):
                steps.complete(con, done, token)

        try:
            self._retrying(lambda con: steps.complete(con, done, token), again)
        except BaseException as exc:
            status = self._read_back(done.run_id, done.step)
            if done.found_in(status) and not isinstance(exc, StepChangedError):
                self._in_flight.pop(key, None)
                if faults.interrupted(exc) or not isinstance(exc, Exception):
                    raise KeyboardInterrupt from exc
                return
            if isinstance(exc, StepChangedError):
                self._in_flight.pop(key, None)
            raise
        self._in_flight.pop(key, None)

    def fail_step(
        self, run_id: str, step: str, owner: Owner, error: str, traceback: str | None, duration_s: float
    ) -> None:
        """Record a failed attempt; one that cannot be written now is kept and written by the next transaction.

        PostgreSQL's text cannot hold a NUL character, which an exception's message may carry: it is
        written escaped (a backslash, then x00), or the failure could never be written and would stay kept forever.
        """
        error, traceback = _text(error), _text(traceback) if traceback is not None else None
        token = self._in_flight.get((run_id, step))
        try:
            self._retrying(
                lambda con: steps.fail(con, run_id, step, owner, error, traceback, duration_s, token),
                # after a cut commit: written unless it is there already (no longer running under this token)
                lambda con: steps.fail_if_running(con, run_id, step, owner, error, traceback, duration_s, token),
            )
        except (StepChangedError, InvalidTransition):
            self._in_flight.pop((run_id, step), None)
            raise
        except BaseException as exc:
            status = self._read_back(run_id, step)
            if status is None or status.state is StepState.RUNNING:
                self._failures.append((run_id, step, owner, error, traceback, duration_s, token))
            self._in_flight.pop((run_id, step), None)
            if faults.interrupted(exc) or not isinstance(exc, Exception):
                raise KeyboardInterrupt from exc
            return
        self._in_flight.pop((run_id, step), None)

    def retry_step(self, run_id: str, step: str, owner: Owner) -> int:
        claim = self._claim_tokens.get(run_id)

        def again(con: PgConnection) -> tuple[int, int]:  # after a cut commit: its own retry found, or tried again
            found = steps.retried_by(con, run_id, step, owner, claim)
            return found if found is not None else steps.retry(con, self.location, run_id, step, owner, claim)

        attempt, token = self._retrying(lambda con: steps.retry(con, self.location, run_id, step, owner, claim), again)
        self._in_flight[(run_id, step)] = token
        return attempt

    def fencing_token(self, run_id: str, step: str) -> int | None:
        return self._in_flight.get((run_id, step))

    def mark_effect(self, run_id: str, step: str, owner: Owner) -> None:
        """The fence before a side effect, under the attempt's fencing token (setting the mark twice is harmless)."""
        token = self._in_flight.get((run_id, step))
        self._retrying(lambda con: steps.mark_effect(con, run_id, step, owner, token))

    # ------------------------------------------------------------------ checkpoints

    def encode(self, name: str, value: object) -> Blob:
        """A large output lands in the payload location (fsynced, or PUT); without one, its bytes go into the row.

        Without one it passes through the private spill folder (``staging.SpillPlace``, checked on every use).
        """
        return self._payloads.encode(name, value)

    def gc(self) -> GcReport:
        """Rows first, in one transaction; then payloads (files, objects) no row points to."""
        with self._transaction() as con:
            removed = checkpoints.drop_superseded(con)
            referenced = checkpoints.referenced_files(con)
        if self.payload_dir is None and self.payload_url is None:
            return GcReport(removed, 0, 0)
        files, freed = self._payloads.remove_unreferenced(referenced)
        return GcReport(removed, files, freed)

    def compact(self, *, force: bool = False, freed_hint: int = 0) -> Compaction:
        """Nothing to do: the server reuses the space of deleted rows itself (autovacuum); see docs/scale.md."""
        with self._transaction() as con:
            row = con.execute("SELECT pg_database_size(current_database())").fetchone()
        size = int(row[0]) if row else 0
        return Compaction(
            False, size, size, 0.0,
            "a PostgreSQL server reuses the space of deleted rows itself (autovacuum)",
        )  # fmt: skip

    def query(self, sql: str) -> QueryResult:
        """On a session of its own, in a READ ONLY transaction over the documented views (``pg_query.py``)."""
        try:
            conn = psycopg.connect(
                self._conninfo, connect_timeout=max(2, int(self.lock_timeout_s)), cursor_factory=psycopg.ClientCursor
            )
        except psycopg.Error as exc:
            raise StoreServerError(self.location, _first_line(exc)) from exc
        try:
            return pg_query.run(conn, PgConnection(conn), sql)
        except psycopg.Error as exc:  # defining the views, not the user's query: the server's fault
            raise StoreServerError(self.location, _first_line(exc)) from exc


def _cut(exc: BaseException | None) -> bool:
    """Whether a server error means the session was lost (its last transaction's outcome unknown).

    A dropped connection has no SQLSTATE; a server shutting down or an administrator ending the
    session says so in class 57P, a failed connection in class 08. A refused lock is not one.
    """
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, psycopg.errors.LockNotAvailable):
        return False
    state = exc.sqlstate
    return state is None or state.startswith(("08", "57P"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _text(value: str) -> str:
    """``value`` as PostgreSQL's text can hold it (a NUL character escaped)."""
    return value.replace("\x00", "\\x00")
