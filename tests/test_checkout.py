"""The mission's checkout against the fake shop: every effect exactly once, even with retries."""

from __future__ import annotations

from checkout_app import build

import resumable
from resumable._demo.shop import ShopServer


def test_courier_times_out_twice_then_succeeds_and_each_effect_happens_once(store_location: str) -> None:
    """The courier step is retried past two timeouts; the card is charged once and the run completes."""
    with ShopServer(courier_timeouts=2, courier_delay_s=1.0) as shop:
        pipe = build(store_location, shop.url, courier_timeout_s=0.3)
        with pipe.run(run_id="order-42") as run:
            receipts = pipe.checkout("order-42")  # type: ignore[attr-defined]
        assert receipts[0]["id"].startswith("charge-")
        for service in ("charge", "reserve", "courier", "email"):
            assert shop.ledger.count(service, "order-42") == 1, service
        courier = run.status("courier")
        assert courier.state is resumable.StepState.COMPLETED
        assert courier.attempts == 3
        assert {s.state for s in run.steps()} == {resumable.StepState.COMPLETED}

        # Running the same order again restores every step: the shop sees no new request.
        requests_before = len(shop.ledger.requests)
        with pipe.run(run_id="order-42"):
            again = pipe.checkout("order-42")  # type: ignore[attr-defined]
        assert again == receipts
        assert len(shop.ledger.requests) == requests_before


def test_a_new_run_charges_again_with_a_different_key(store_location: str) -> None:
    """Idempotency keys differ between runs: a second order is a second charge."""
    with ShopServer() as shop:
        pipe = build(store_location, shop.url)
        with pipe.run(run_id="order-1"):
            pipe.checkout("order-1")  # type: ignore[attr-defined]
        with pipe.run(run_id="order-2"):
            pipe.checkout("order-2")  # type: ignore[attr-defined]
        assert shop.ledger.count("charge") == 2
        keys = {r["key"] for r in shop.ledger.requests if r["service"] == "charge"}
        assert len(keys) == 2


def test_shop_refuses_a_request_cut_off_mid_body() -> None:
    """A client killed while sending leaves a truncated body: no effect, and its key stays unused."""
    import socket
    import urllib.parse

    from resumable._demo.shop import call

    with ShopServer() as shop:
        url = urllib.parse.urlsplit(shop.url)
        body = b'{"order": "order-9"}'
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(
                b"POST /charge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: k-9\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            sock.shutdown(socket.SHUT_WR)
            assert b" 400 " in sock.recv(1024).split(b"\r\n")[0] + b" "
        assert shop.ledger.count("charge") == 0
        assert call(shop.url, "charge", "order-9", "k-9")["replayed"] is False
        assert shop.ledger.count("charge", "order-9") == 1
