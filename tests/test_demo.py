"""`resumable demo` end to end, as a new user runs it: one command, a crash, a resumed checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.timeout(120)


def test_demo_survives_the_crash_and_charges_the_card_once(tmp_path: Path) -> None:
    """`python -m resumable demo FOLDER` exits 0 and reports a dead kernel, restored steps and one charge."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    done = subprocess.run(
        [sys.executable, "-m", "resumable", "demo", "shop-demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "kernel 1: executed charge, reserve; the kernel died in step 'courier'" in out
    assert "kernel 2: restored charge, reserve; executed courier, email; every cell succeeded" in out
    for effect in ("card charged", "stock reserved", "courier booked", "email sent"):
        assert f"{effect:<16}1 time\n" in out
    assert "the courier was asked 2 times with the same Idempotency-Key" in out
    assert "The card was charged once" in out
    assert "executed notebook: shop-demo/checkout.resumable.ipynb" in out
    assert "simulating an OOM kill" not in done.stderr  # the kernel's own output goes to the notebook

    executed = nbformat.read(tmp_path / "shop-demo" / "checkout.resumable.ipynb", as_version=4)
    charge = next(c for c in executed.cells if c.source.startswith("%%durable_step charge"))
    text = "".join(o.get("text", "") for o in charge.outputs)
    assert "restored step 'charge'" in text
    assert "charged the card for order-42: charge-1" in text  # the first kernel's output, restored
    assert executed.metadata["resumable"]["restarts"] == 1
    assert (tmp_path / "shop-demo" / ".resumable" / "store.duckdb").exists()
