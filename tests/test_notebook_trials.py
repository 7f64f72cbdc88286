"""Real data-science notebooks killed at a cell and resumed end as an uninterrupted run of them would.

The notebooks are in trial_notebooks.py, the harness in notebook_trials.py (also a script with a
trial count). Real kernels throughout: the plain run by nbclient, the durable one by
``resumable execute`` in a subprocess whose kernel SIGKILLs itself at the chosen cell.

By default a few trials run (each notebook form once, and one kill per known kind of hidden state);
``RESUMABLE_NOTEBOOK_TRIALS=N`` adds a campaign of N random kills per notebook and form, whose
counts are printed (``pytest -s``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from notebook_trials import AFTER, KillPoint, Trial, campaign, expected_kinds, plan, report, rerun_may_differ
from trial_notebooks import MIXED, NOTEBOOKS, STEPS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TRIALS = int(os.environ.get("RESUMABLE_NOTEBOOK_TRIALS", "0"))
SEED = int(os.environ.get("RESUMABLE_NOTEBOOK_TRIALS_SEED", "1"))


def test_killed_notebooks_resume_to_the_plain_runs_results_and_a_rerun_restores_everything(tmp_path: Path) -> None:
    """Each clean notebook (one mixed, one all steps) killed at a random cell: same variables and outputs as
    a plain nbclient run; then run again on the same run: every step restores, none runs again."""
    # Each notebook once and each form once (the suite's time budget); the campaign below draws more.
    chosen = plan(1, SEED, ["sales"], [MIXED], clean_only=True) + plan(1, SEED, ["churn"], [STEPS], clean_only=True)
    found = campaign(chosen, tmp_path, workers=2)
    print("\n" + "\n".join(t.line() for t in found) + "\n" + report(found))
    for trial in found:
        assert trial.restarts == 1, trial.line()
        assert trial.matched, trial.line()
        assert trial.rerun_clean and not trial.rerun_differs, trial.line()


def hidden_points() -> dict[tuple[str, str, KillPoint], list[str]]:
    """One kill per kind of hidden state, just after the cell that holds it completes: the kinds expected there."""
    points: dict[tuple[str, str, KillPoint], list[str]] = {}
    for nb in NOTEBOOKS.values():
        for hidden in nb.hidden:
            mode = hidden.modes[0]
            point = KillPoint(nb.index(hidden.after), AFTER)
            points[(nb.name, mode, point)] = expected_kinds(nb, mode, point)
    return points


@pytest.fixture(scope="module")
def hidden_trials(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, KillPoint], Trial]:
    """The trials of every hidden-state kill point, run two at a time on first use (no rerun afterwards)."""
    chosen = list(hidden_points())
    found = campaign(chosen, tmp_path_factory.mktemp("hidden"), workers=2, rerun=False)
    print("\n" + "\n".join(t.line() for t in found))
    return dict(zip(chosen, found, strict=True))


@pytest.mark.parametrize(
    ("name", "mode", "point"),
    [
        pytest.param(
            *key, id=f"{key[0]}-{key[1]}-{key[2].label(NOTEBOOKS[key[0]]).replace(' ', '-')}",
        )
        for key in hidden_points()
    ],
)  # fmt: skip
def test_a_kill_after_a_cell_with_hidden_state_resumes_to_the_plain_runs_results(
    name: str, mode: str, point: KillPoint, hidden_trials: dict[tuple[str, str, KillPoint], Trial]
) -> None:
    """Killed just after the cell that holds a kind of hidden state (trial_notebooks.py names the kinds):
    the resumed run's variables and outputs are the plain run's."""
    trial = hidden_trials[(name, mode, point)]
    assert trial.restarts == 1, trial.line()
    assert trial.matched, trial.line()


@pytest.mark.skipif(TRIALS <= 0, reason="a campaign: set RESUMABLE_NOTEBOOK_TRIALS=N kills per notebook and form")
def test_a_campaign_of_random_kills_differs_only_inside_known_hidden_state_windows(tmp_path: Path) -> None:
    """N random kills per notebook and form: outside the known windows every trial ends as the plain run;
    in every trial a full rerun afterwards restores every step and runs none again."""
    found = campaign(plan(TRIALS, SEED, sorted(NOTEBOOKS), [MIXED, STEPS], clean_only=False), tmp_path, echo=True)
    print(report(found))
    assert [t.line() for t in found if not t.matched and not t.expected] == []
    assert [t.line() for t in found if not (t.rerun_clean or rerun_may_differ(t))] == []
