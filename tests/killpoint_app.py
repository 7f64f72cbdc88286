"""A run whose middle step has a side effect, for the kill-point harness (``tests/killpoints.py``).

Usage: python tests/killpoint_app.py STORE RUN_ID LEDGER
``order`` makes a fresh id (a uuid: a re-execution would make another), ``charge`` appends one line
``KEY ORDER AMOUNT`` to the ledger under its idempotency key (the fake payment API), ``receipt`` uses
the charge. The caller appends each order id it got back to ``LEDGER.returned``: a completed step that
ran again after returning would show there as a second id. On success it prints what it ended with
as JSON on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import uuid

import resumable


def main() -> None:
    store, run_id, ledger = sys.argv[1:4]
    pipe = resumable.Pipeline("killpoints", store=store)

    @pipe.step()
    def order() -> str:
        return str(uuid.uuid4())

    @pipe.step()
    def price(order_id: str) -> int:
        return 40 + len(order_id)

    @pipe.step()
    def charge(order_id: str, amount: int) -> dict[str, object]:
        key = resumable.idempotency_key()
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{key} {order_id} {amount}\n".encode())  # one write: a kill leaves a whole line or none
        finally:
            os.close(fd)
        return {"key": key, "order": order_id, "amount": amount}

    @pipe.step()
    def receipt(charged: dict[str, object]) -> str:
        return f"receipt for {charged['order']}"

    with pipe.run(run_id=run_id):
        order_id = order()
        with open(ledger + ".returned", "a") as returned:
            returned.write(order_id + "\n")
        charged = charge(order_id, price(order_id))
        print(json.dumps({"order": order_id, "charged": charged, "receipt": receipt(charged)}))


if __name__ == "__main__":
    main()
