"""``resumable demo``: a checkout that survives its kernel dying, against a fake shop on 127.0.0.1.

The demo writes the packaged notebook into a folder, serves the shop from this process, and
executes the notebook headless. The shop's first courier request hangs; the notebook's courier
step gives up after a short timeout and kills its own kernel (a simulated OOM kill). The executor
starts a new kernel, completed steps restore, and the courier is asked again with the same
idempotency key. The shop's ledger then says how often each effect really happened.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from resumable._demo.shop import SERVICES, ShopServer
from resumable._headless import ExecutionResult, PassReport, execute_notebook

NOTEBOOK = "checkout.ipynb"
ORDER = "order-42"
COURIER_TIMEOUT_S = 1.0
_EFFECT = {"charge": "card charged", "reserve": "stock reserved", "courier": "courier booked", "email": "email sent"}


def write_notebook(folder: Path) -> Path:
    """Copy the packaged demo notebook into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / NOTEBOOK
    target.write_bytes(resources.files("resumable._demo").joinpath(NOTEBOOK).read_bytes())
    return target


def _names(steps: tuple[str, ...]) -> str:
    return ", ".join(steps) if steps else "nothing"


def describe_pass(report: PassReport) -> str:
    """One line per kernel: what it executed, what it restored, how it ended."""
    parts = []
    if report.restored:
        parts.append(f"restored {_names(report.restored)}")
    parts.append(f"executed {_names(report.executed)}")
    if report.outcome == "kernel_died":
        where = f"step '{report.step}'" if report.step else f"cell {report.cell_index}"
        ending = f"the kernel died in {where}"
    elif report.outcome == "failed":
        ending = f"cell {report.cell_index} failed"
    else:
        ending = "every cell succeeded"
    return f"  kernel {report.number}: {'; '.join(parts)}; {ending}"


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def run_demo(folder: str | os.PathLike[str] = "resumable-demo", *, progress: bool = True) -> bool:
    """Write the demo notebook into ``folder``, run it against the fake shop, print what happened.

    Returns True when the notebook finished and every shop effect happened exactly once.
    """
    where = Path(folder)
    notebook = write_notebook(where)
    store = where / ".resumable" / "store.duckdb"
    with ShopServer(courier_timeouts=1, courier_delay_s=COURIER_TIMEOUT_S + 2.0) as shop:
        print(f"resumable demo: checkout of {ORDER} against a fake shop on {shop.url}", flush=True)
        print(f"  notebook: {_relative(notebook)}", flush=True)
        print("  the courier will not answer the first time, and the notebook then kills its kernel\n", flush=True)
        result = execute_notebook(
            notebook,
            new=True,
            params={"shop_url": shop.url, "order": ORDER, "courier_timeout_s": COURIER_TIMEOUT_S},
            store=store,
            progress=progress,
            raise_on_error=False,
        )
        effects = {service: shop.ledger.count(service, ORDER) for service in SERVICES}
        courier_requests = sum(1 for r in shop.ledger.requests if r["service"] == "courier")
    _report(result, effects, courier_requests, store)
    return result.ok and all(n == 1 for n in effects.values())


def _report(result: ExecutionResult, effects: dict[str, int], courier_requests: int, store: Path) -> None:
    restarts = f"{result.restarts} kernel restart{'s' if result.restarts != 1 else ''}"
    lines = ["", f"run {result.run_id} of pipeline '{result.pipeline}' ({restarts}):"]
    lines += [describe_pass(p) for p in result.passes]
    lines += ["", "what the shop did, from its ledger:"]
    lines += [f"  {_EFFECT[service]:<16}{n} time{'s' if n != 1 else ''}" for service, n in effects.items()]
    lines.append(f"  (the courier was asked {courier_requests} times with the same Idempotency-Key)")
    lines.append("")
    charged = effects["charge"]
    if result.ok and all(n == 1 for n in effects.values()):
        lines.append(
            f"The card was charged {'once' if charged == 1 else f'{charged} times'}, although the kernel died "
            f"in the middle of the checkout: completed steps were restored, not run again."
        )
    else:
        lines.append(f"The demo did not finish as expected: {result.error or 'an effect did not happen once'}")
    lines += [
        "",
        f"executed notebook: {_relative(result.output)}",
        f"see the run:       resumable show {result.run_id} --events --store {_relative(store)}",
    ]
    print("\n".join(lines), flush=True)
