"""The mission's checkout on the Python API, run by tests in-process and as a killable subprocess.

Usage: python tests/checkout_app.py STORE RUN_ID ORDER SHOP_URL [PAUSE_S]
Each step calls the fake shop with its idempotency key, then pauses: the pause widens the window
between a side effect and its checkpoint, where a crash must not cause a second effect.
"""

from __future__ import annotations

import sys
import time

import resumable
from resumable._demo.shop import call


def build(store: str, shop_url: str, pause_s: float = 0.0, courier_timeout_s: float = 2.0) -> resumable.Pipeline:
    """The four-step checkout pipeline bound to one store and one shop."""
    pipe = resumable.Pipeline("checkout", store=store)

    def effect(service: str, order: str, timeout: float = 2.0) -> dict[str, object]:
        result = call(shop_url, service, order, resumable.idempotency_key(), timeout=timeout)
        time.sleep(pause_s)
        return result

    @pipe.step(retries=2, backoff=0.05)
    def charge(order: str) -> dict[str, object]:
        return effect("charge", order)

    @pipe.step(retries=2, backoff=0.05)
    def reserve(order: str) -> dict[str, object]:
        return effect("reserve", order)

    @pipe.step(retries=3, backoff=0.05)
    def courier(order: str) -> dict[str, object]:
        return effect("courier", order, timeout=courier_timeout_s)

    @pipe.step(retries=2, backoff=0.05)
    def email(order: str) -> dict[str, object]:
        return effect("email", order)

    pipe.checkout = lambda order: [charge(order), reserve(order), courier(order), email(order)]  # type: ignore[attr-defined]
    return pipe


def main() -> None:
    store, run_id, order, shop_url = sys.argv[1:5]
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    pipe = build(store, shop_url, pause)
    with pipe.run(run_id=run_id):
        print("ready", flush=True)  # the crash tests time their kill from here
        pipe.checkout(order)  # type: ignore[attr-defined]
    print("done", flush=True)


if __name__ == "__main__":
    main()
