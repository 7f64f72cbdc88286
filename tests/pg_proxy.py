"""A TCP relay between a client and the PostgreSQL server that can lose a COMMIT's answer, for the cut tests.

Armed, it passes the next ``COMMIT`` on to the server, lets the server commit, and closes the
client's connection instead of relaying the answer: the client sees its session cut and cannot
tell whether the transaction committed, exactly as when a network drops the acknowledgement.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress


class Relay:
    """Listens on a free port of 127.0.0.1 and relays every connection to ``port``."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.armed = threading.Event()
        self.cut = threading.Event()  # a COMMIT's answer was dropped
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            committing = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, committing), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, committing), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, committing: threading.Event) -> None:
        with suppress(OSError):
            while data := client.recv(65536):
                if self.armed.is_set() and b"COMMIT" in data:
                    self.armed.clear()
                    committing.set()
                server.sendall(data)
        with suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _downstream(self, server: socket.socket, client: socket.socket, committing: threading.Event) -> None:
        with suppress(OSError):
            while data := server.recv(65536):
                if committing.is_set():  # the server's answer to COMMIT: dropped, and the client cut off
                    self.cut.set()
                    break
                client.sendall(data)
        for sock in (client, server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
