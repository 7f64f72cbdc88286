"""An S3-compatible server for the tests: moto's, started as a real subprocess on 127.0.0.1.

``start()`` returns a running :class:`S3Server`, or the reason it cannot (moto's server or s3fs
missing, the server not answering within its bound); the fixture then skips the object-store
tests with that reason. Clients reach it the way a user reaches a bucket: through the usual
AWS_* environment variables (``env()``), which subprocesses inherit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

START_TIMEOUT_S = 30.0


# What the server logs once it listens, the port it was given by the system included (a whole line).
LISTENING = re.compile(r"^ \* Running on (http://127\.0\.0\.1:\d+)\n", re.MULTILINE)


@dataclass
class S3Server:
    """A running server; ``new_bucket()`` makes a fresh bucket and returns its name."""

    process: subprocess.Popen[bytes]
    endpoint: str
    folder: Path  # its log
    _numbers: count[int] = field(default_factory=lambda: count(1))

    def env(self) -> dict[str, str]:
        """What a client needs: the endpoint and credentials (moto takes any), one attempt per request."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self) -> object:
        """An s3fs client of our own, to look at and tamper with the bucket behind the store's back."""
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True)

    def new_bucket(self) -> str:
        name = f"b{os.getpid()}-{next(self._numbers)}"
        self.filesystem().mkdir(name)  # type: ignore[attr-defined]
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> S3Server | str:
    """Start moto's server on a port of its own and wait (bounded) until it answers; or say why not."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        return f"moto's server or s3fs is not installed ({exc}; pip install 'resumable[test]')"
    # Port 0: the server binds a port the system gives it and logs it. A port picked here and let go of
    # could be taken by another process (another worker's server, say) before the server binds it.
    folder = Path(tempfile.mkdtemp(prefix="resumable-s3-"))
    log = folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text(errors="replace")[-300:]
            shutil.rmtree(folder, ignore_errors=True)
            return f"moto's server exited at start with code {process.returncode}: {said}"
        found = LISTENING.search(log.read_text(errors="replace"))
        if found is not None:
            try:
                with urllib.request.urlopen(f"{found[1]}/moto-api/", timeout=2):
                    return S3Server(process, found[1], folder)
            except OSError:
                pass
        time.sleep(0.1)  # polling a server that is starting: nothing to wait on but its log and its port
    process.kill()
    process.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)
    return f"moto's server did not answer within {START_TIMEOUT_S:.0f} s"
