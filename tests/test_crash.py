"""Crash tests: SIGKILL the checkout at random instants, resume, and count the shop's effects."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pg_server
import pytest

import resumable
from resumable._demo.shop import ShopServer

APP = Path(__file__).with_name("checkout_app.py")
# Each campaign's kill instants are stratified (one random instant in each of ``trials`` equal slices of
# the checkout's span), so 24 trials cover its four steps as evenly as more purely random ones would.
TRIALS = int(os.environ.get("RESUMABLE_CRASH_TRIALS", "24"))
PG_TRIALS = int(os.environ.get("RESUMABLE_PG_CRASH_TRIALS", "24"))


def _start(store: str | Path, run_id: str, url: str, pause_s: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(APP.parent.parent)}
    return subprocess.Popen(
        [sys.executable, str(APP), str(store), run_id, run_id, url, str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _trial(
    index: int, tmp: Path, url: str, delay_s: float, pause_s: float, server: str | None = None
) -> tuple[str, bool]:
    """Kill one checkout ``delay_s`` after it is ready, then resume until it completes.

    Returns the run id and whether the kill landed before the checkout had finished.
    """
    run_id = f"order-{index}"
    store = server or tmp / f"trial-{index}" / "store.duckdb"  # a server store holds every trial's run
    victim = _start(store, run_id, url, pause_s)
    assert victim.stdout is not None
    ready = victim.stdout.readline()
    assert ready.strip() == b"ready", victim.communicate(timeout=30)
    time.sleep(delay_s)  # the random instant of the crash
    victim.send_signal(signal.SIGKILL)
    out, _ = victim.communicate(timeout=30)
    killed_mid_run = b"done" not in out
    resumes = 0
    while True:
        resumes += 1
        assert resumes <= 5, f"{run_id} did not complete after 5 resumes"
        proc = _start(store, run_id, url, pause_s)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            assert b"done" in out
            return run_id, killed_mid_run
        assert proc.returncode != 0, err.decode()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pause_s", "trials"),
    [
        # Slow steps: each completion is committed before the step returns; the pause after each
        # effect is the window between a side effect and its checkpoint.
        (0.05, TRIALS),
        # Quick steps: completions are logged before they return and committed in groups, so kills
        # land around group commits and replays of the dead process's completion log.
        (0.0, max(TRIALS // 2, 1)),
    ],
)
def test_sigkill_at_random_instants_never_repeats_an_effect(tmp_path: Path, pause_s: float, trials: int) -> None:
    """Every order ends completed with each effect exactly once, whatever instant the process died."""
    _campaign(tmp_path, pause_s, trials, None)


@pytest.mark.slow
def test_sigkill_at_random_instants_on_a_server_store_never_repeats_an_effect(
    tmp_path: Path, pg_cluster: pg_server.Cluster | str
) -> None:
    """The same campaign on a PostgreSQL store (RESUMABLE_PG_CRASH_TRIALS trials, 24 by default)."""
    if not isinstance(pg_cluster, pg_server.Cluster):
        pytest.skip(f"PostgreSQL half skipped: {pg_cluster}")
    _campaign(tmp_path, 0.05, PG_TRIALS, pg_cluster.new_database())


def _campaign(tmp_path: Path, pause_s: float, trials: int, server: str | None) -> None:
    """Kill ``trials`` checkouts at random instants, resume each, and count every effect.

    The checkout takes about 4 x (pause + 8 ms) after it is ready: that span is cut into ``trials``
    equal slices and each trial's kill lands at a random instant of its own slice (stratified), so
    no part of the span, no step, goes without kills by chance.
    """
    rng = random.Random(int(os.environ.get("RESUMABLE_CRASH_SEED", "1125")) + int(pause_s * 1000))
    span = 4 * (pause_s + 0.008)
    delays = [(i + rng.random()) * span / trials for i in range(trials)]
    rng.shuffle(delays)  # the three trials running at a time are not all early, or all late, ones
    with ShopServer() as shop, ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda i: _trial(i, tmp_path, shop.url, delays[i], pause_s, server), range(trials)))
        interrupted = sum(1 for _, mid_run in results if mid_run)
        assert interrupted >= trials // 3, f"only {interrupted} of {trials} kills landed mid-run"
        for run_id, _ in results:
            for service in ("charge", "reserve", "courier", "email"):
                assert shop.ledger.count(service, run_id) == 1, (run_id, service)
            store = resumable.Pipeline(
                "checkout", store=server or tmp_path / f"trial-{run_id.split('-')[1]}" / "store.duckdb"
            ).store
            states = {s.step: s.state for s in store.list_steps(run_id)}
            assert states == dict.fromkeys(("charge", "reserve", "courier", "email"), resumable.StepState.COMPLETED)
        # With a pause after each effect, some kills must have landed after an effect and before its
        # checkpoint: the shop then saw the same key twice and replayed its first answer instead of
        # acting again. Quick steps have no such pause (the window is microseconds wide), so there
        # the campaign is about group commits and log replays, and a replay is not required.
        replays = len(shop.ledger.requests) - len(shop.ledger.effects)
        assert replays >= 1 or pause_s == 0, "no trial hit the window between an effect and its checkpoint"
