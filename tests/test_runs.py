"""Which run a front end joins: one precedence for the Python API, the magics and the headless executor."""

from __future__ import annotations

import pytest

import resumable
from resumable._runs import JoinedBy, choose_run
from resumable._store import open_store


def test_the_documented_precedence(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit run id > RESUMABLE_RUN_ID > new > the pipeline's latest run > a fresh run."""
    store = open_store(store_location)
    first = choose_run(store, "shop")
    assert (first.joined_by, first.existing, first.pipeline) == (JoinedBy.FIRST, None, "shop")
    store.open_run("a-older", "shop")
    store.open_run("b-latest", "shop")
    store.open_run("elsewhere", "other")
    latest = choose_run(store, "shop")
    assert (latest.joined_by, latest.run_id) == (JoinedBy.LATEST, "b-latest")
    fresh = choose_run(store, "shop", new=True)
    assert fresh.joined_by is JoinedBy.NEW
    assert fresh.run_id not in {"a-older", "b-latest"}
    assert fresh.existing is None
    monkeypatch.setenv("RESUMABLE_RUN_ID", "a-older")
    joined = choose_run(store, "shop", new=True)  # an executor restarting into its run: new gives way
    assert (joined.joined_by, joined.run_id) == (JoinedBy.ENVIRONMENT, "a-older")
    named = choose_run(store, "shop", "order-42", new=True)  # an explicit id wins over the environment
    assert (named.joined_by, named.run_id, named.existing) == (JoinedBy.RUN_ID, "order-42", None)


def test_an_unnamed_pipeline_keeps_an_existing_runs_name(store_location: str) -> None:
    """A notebook's first step without %durable_run joins its run under that run's pipeline."""
    store = open_store(store_location)
    store.open_run("r1", "shop")
    assert choose_run(store, None, "r1", default_pipeline="notebook").pipeline == "shop"
    assert choose_run(store, None, "r2", default_pipeline="notebook").pipeline == "notebook"
    assert choose_run(store, None).pipeline == "default"


def test_new_under_an_existing_explicit_id_is_refused(store_location: str) -> None:
    """Asking for a fresh run under an id that exists is an error naming the run and what to do."""
    store = open_store(store_location)
    store.open_run("order-42", "shop")
    with pytest.raises(resumable.RunExistsError) as excinfo:
        choose_run(store, "shop", "order-42", new=True)
    assert str(excinfo.value) == (
        "run 'order-42' of pipeline 'shop' already exists, so it cannot start as a new run. "
        "Resume it (leave out new=True / --new), or choose another run id."
    )
