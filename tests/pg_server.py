"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, 127.0.0.1 on a free port.

``start()`` returns a running :class:`Cluster`, or the reason it cannot (no binaries, initdb or
the server failing); the fixture then skips the PostgreSQL half with that reason. initdb refuses
to run as root, so as root the cluster is made and run by the ``postgres`` user (Debian's
package creates it) through ``runuser``; its folder is created in the system's temp folder, which
that user can reach. Trust authentication on 127.0.0.1 only; fsync off (a test cluster: the
client's crashes are what the tests kill, not the server's machine).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

USER = "resumable"  # the cluster's superuser, the role every test connects as
PORT_ATTEMPTS = 5  # starts on a fresh port after another process took the one picked


def _binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster; ``url(db)`` names one of its databases, ``new_database()`` makes a fresh one."""

    folder: Path
    port: int
    bin: Path
    run_as: list[str]
    _numbers: count[int] = field(default_factory=lambda: count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database (one per test: nothing leaks between tests); returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def restart(self) -> None:
        """``pg_ctl restart`` (fast): every session is cut, the server comes back on the same port."""
        done = self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.folder / "server.log"), timeout=90)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {done.stderr or done.stdout}")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Cluster | str:
    """Start a cluster; returns it, or why it could not start."""
    binaries = _binaries()
    if binaries is None:
        return "PostgreSQL's initdb and pg_ctl were not found (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'resumable[postgres]')"
    folder = Path(tempfile.mkdtemp(prefix="resumable-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    init = subprocess.run(
        [*run_as, str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}"
    log = folder / "server.log"
    for _ in range(PORT_ATTEMPTS):
        # A free port now may be taken by another process before the server binds it: then another port.
        cluster = Cluster(folder, _free_port(), binaries, run_as)
        options = (
            f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        logged = log.stat().st_size if log.exists() else 0
        started = cluster.pg_ctl("-l", str(log), "-o", options, "-w", "-t", "60", "start", timeout=90)
        if started.returncode == 0:
            return cluster
        said = log.read_bytes()[logged:].decode(errors="replace") if log.exists() else ""
        if "Address already in use" not in said:
            break
    shutil.rmtree(folder, ignore_errors=True)
    return f"the server did not start: {(started.stderr or started.stdout).strip()[-200:]} {said[-300:]}"
