"""A fake shop (payments, stock, courier, email) served over HTTP on 127.0.0.1.

It honours ``Idempotency-Key`` the way real payment APIs do: a request whose key was seen before
returns the first response and causes no new effect. Every effect is written to a ledger, so
tests and the demo can count how often a card was really charged.

Run it alone with ``python -m resumable._demo.shop --port 8765``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERVICES = ("charge", "reserve", "courier", "email")


@dataclass
class Ledger:
    """Every effect the shop performed, and every request it answered."""

    effects: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, service: str, order: str | None = None) -> int:
        """How many times an effect really happened."""
        with self.lock:
            return sum(1 for e in self.effects if e["service"] == service and (order is None or e["order"] == order))


class Shop:
    """The shop's behaviour, independent of HTTP (the handler below only translates)."""

    def __init__(self, courier_timeouts: int = 0, courier_delay_s: float = 5.0) -> None:
        self.ledger = Ledger()
        self.courier_timeouts = courier_timeouts
        self.courier_delay_s = courier_delay_s
        self._courier_calls = 0

    def handle(self, service: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Perform ``service`` once per idempotency key; return (HTTP status, JSON body)."""
        if service not in SERVICES:
            return 404, {"error": f"no service {service!r}"}
        if not key:
            return 400, {"error": "Idempotency-Key header is required"}
        with self.ledger.lock:
            self.ledger.requests.append({"service": service, "key": key, "order": body.get("order")})
            previous = self.ledger.responses.get((service, key))
            if previous is not None:
                return 200, {**previous, "replayed": True}
            slow = False
            if service == "courier":
                self._courier_calls += 1
                slow = self._courier_calls <= self.courier_timeouts
        if slow:
            # The client gives up first; the courier never books this request.
            time.sleep(self.courier_delay_s)
            return 504, {"error": "courier timed out"}
        with self.ledger.lock:
            previous = self.ledger.responses.get((service, key))
            if previous is not None:
                return 200, {**previous, "replayed": True}
            effect = {"service": service, "key": key, "order": body.get("order"), "n": len(self.ledger.effects) + 1}
            self.ledger.effects.append(effect)
            response = {"id": f"{service}-{effect['n']}", "order": body.get("order"), "replayed": False}
            self.ledger.responses[(service, key)] = response
            return 200, response


class _Handler(BaseHTTPRequestHandler):
    shop: Shop

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if len(raw) == length else None
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not body.get("order"):
            # A client killed half-way through sending leaves a truncated body: refuse it, as a
            # real API would, rather than act on it (and remember its key for nothing).
            status, payload = 400, {"error": "the body must be a JSON object with an 'order'"}
        else:
            status, payload = self.shop.handle(self.path.strip("/"), self.headers.get("Idempotency-Key", ""), body)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def do_GET(self) -> None:
        if self.path.strip("/") != "ledger":
            self.send_error(404)
            return
        with self.shop.ledger.lock:
            data = json.dumps({"effects": self.shop.ledger.effects, "requests": self.shop.ledger.requests}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ShopServer:
    """The shop on a free port of 127.0.0.1, served from a thread; use as a context manager."""

    def __init__(self, courier_timeouts: int = 0, courier_delay_s: float = 5.0, port: int = 0) -> None:
        self.shop = Shop(courier_timeouts, courier_delay_s)
        handler = type("Handler", (_Handler,), {"shop": self.shop})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-shop", daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8765``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def ledger(self) -> Ledger:
        """What the shop did."""
        return self.shop.ledger

    def __enter__(self) -> ShopServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class ShopError(Exception):
    """The shop answered with an error, or did not answer in time."""


def call(base_url: str, service: str, order: str, key: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
    """POST one request to the shop with an Idempotency-Key; raise ShopError on failure or timeout."""
    request = urllib.request.Request(
        f"{base_url}/{service}",
        data=json.dumps({"order": order, **fields}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        raise ShopError(f"{service} failed with HTTP {exc.code}") from None
    except (TimeoutError, urllib.error.URLError) as exc:
        raise ShopError(f"{service} did not answer within {timeout:g} s ({exc})") from None


def main() -> None:
    """Serve the shop until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--courier-timeouts", type=int, default=0)
    args = parser.parse_args()
    with ShopServer(args.courier_timeouts, port=args.port) as server:
        print(f"fake shop on {server.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
