"""Kill-and-compare trials: does a killed and resumed notebook end as an uninterrupted one would?

For a notebook of :mod:`trial_notebooks` in one form (``mixed``: plain cells and steps; ``steps``:
every code cell a step), a trial

1. runs the plain form (no resumable) once with nbclient: the reference;
2. runs the durable form with ``resumable execute`` while the kernel SIGKILLs itself at one cell,
   before or after it runs (an IPython startup file in the trial's own IPYTHONDIR installs the
   hook, so the notebook is the same one a user runs); execute starts a new kernel and resumes;
3. compares the final variables (the last cell dumps them, :mod:`trial_summary`) and every cell's
   outputs with the reference, and reads the re-runs and their reasons from ``resumable show``;
4. runs the notebook once more on the same run (a new kernel, no kill): every step must restore,
   none may run again, and the results must still be the reference's.

As a script, ``python tests/notebook_trials.py --trials 20`` runs a campaign and prints counts;
the exit status is 1 when a trial outside a known hidden-state window differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from trial_notebooks import MODES, NOTEBOOKS, PLAIN, TrialNotebook

HERE = Path(__file__).parent
RUN_ID = "trial"
DUMP = "final.json"
BEFORE, AFTER = "before", "after"

KILLER = '''\
"""Installed by the notebook trials: SIGKILL this kernel once, at one cell."""
import hashlib, os, signal
from pathlib import Path


def _install_trial_killer():
    at = os.environ.get("TRIAL_KILL_CELL")
    if not at:
        return
    phase = os.environ.get("TRIAL_KILL_PHASE", "before")
    marker = Path(os.environ["TRIAL_KILL_MARKER"])

    def kill(raw):
        if marker.exists() or hashlib.sha256((raw or "").encode()).hexdigest()[:16] != at:
            return
        marker.write_text(phase)
        os.kill(os.getpid(), signal.SIGKILL)

    ip = get_ipython()
    if phase == "before":
        ip.events.register("pre_run_cell", lambda info: kill(info.raw_cell))
    else:
        ip.events.register("post_run_cell", lambda result: kill(result.info.raw_cell))


_install_trial_killer()
'''


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where the kernel dies: before or after the cell at ``index`` (the dump cell is the last index)."""

    index: int
    phase: str

    def completed(self) -> int:
        """How many cells had finished when the kernel died."""
        return self.index + (1 if self.phase == AFTER else 0)

    def label(self, nb: TrialNotebook) -> str:
        name = nb.cells[self.index].name if self.index < len(nb.cells) else "dump"
        return f"{self.phase} {name}"


def cell_sources(nb: TrialNotebook, mode: str) -> list[str]:
    """The notebook's code cells in one form, the dump cell last."""
    out = []
    for cell in nb.cells:
        if mode == PLAIN and cell.name == "resumable":
            out.append("")  # kept empty so that cell indices agree between the forms
        elif nb.is_step(cell, mode):
            out.append(f"%%durable_step {cell.name}\n{cell.source}")
        else:
            out.append(cell.source)
    volatile = tuple(sorted(nb.volatile))
    out.append(f"import trial_summary\ntrial_summary.dump(globals(), {DUMP!r}, volatile={volatile!r})")
    return out


def write(nb: TrialNotebook, mode: str, folder: Path) -> Path:
    """The notebook file of one form, with the summary module beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "trial_summary.py", folder / "trial_summary.py")
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell, source in zip([*nb.cells, None], cell_sources(nb, mode), strict=True):
        tags = list(cell.tags) if cell is not None else []
        book.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags} if tags else {}))
    path = folder / f"{nb.name}.ipynb"
    nbformat.write(book, path)
    return path


def kill_points(nb: TrialNotebook) -> list[KillPoint]:
    """Every place a kill can land after resumable is loaded, up to after the dump cell."""
    first = nb.index("resumable") + 1
    return [KillPoint(i, phase) for i in range(first, len(nb.cells) + 1) for phase in (BEFORE, AFTER)]


def expected_kinds(nb: TrialNotebook, mode: str, point: KillPoint | None) -> list[str]:
    """The hidden-state kinds whose window the kill lands in (None: a full rerun of a finished run)."""
    done = len(nb.cells) + 1 if point is None else point.completed()
    kinds = []
    for hidden in nb.hidden:
        if mode not in hidden.modes:
            continue
        until = len(nb.cells) + 2 if hidden.until is None else nb.index(hidden.until) + 1
        if nb.index(hidden.after) + 1 <= done < until:
            kinds.append(hidden.kind)
    return kinds


def rerun_may_differ(trial: Trial) -> bool:
    """Whether a known kind of hidden state also makes a full rerun of this trial's notebook execute a step."""
    nb = NOTEBOOKS[trial.notebook]
    return any(h.reruns and trial.mode in h.modes for h in nb.hidden)


# ---------------------------------------------------------------------- outputs


_ADDRESS = re.compile(r"0x[0-9a-f]+")
_OURS = ("↺ ", "↻ ", "resumable: ", "CPU times:", "Wall time:")  # resumable's own lines, and %time's clock


def _text(lines: str) -> str:
    return "".join(line for line in lines.splitlines(keepends=True) if not line.startswith(_OURS))


def cell_outputs(cell: Any) -> dict[str, Any]:
    """A cell's outputs as a user compares them: text without resumable's lines, images by digest."""
    streams = {"stdout": "", "stderr": ""}
    shown = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            streams[out["name"]] += out["text"]
        elif out["output_type"] == "error":
            shown.append(["error", out["ename"], out["evalue"]])
        else:
            data = out.get("data", {})
            item = {"text": _ADDRESS.sub("0x?", data.get("text/plain", ""))}
            if "image/png" in data:
                item["png"] = hashlib.sha256(data["image/png"].encode()).hexdigest()[:16]
            shown.append(item)
    return {"stdout": _text(streams["stdout"]), "stderr": _text(streams["stderr"]), "shown": shown}


def notebook_outputs(path: Path, nb: TrialNotebook) -> list[dict[str, Any]]:
    """Each cell's outputs, in the order of the trial notebook (a runner's injected cell left out)."""
    book = nbformat.read(path, as_version=4)
    cells = [c for c in book.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    skip = nb.index("resumable")
    return [cell_outputs(c) if i != skip else {} for i, c in enumerate(cells)]


def differences(ref: dict[str, Any], got: dict[str, Any]) -> list[str]:
    return sorted(k for k in ref.keys() | got.keys() if ref.get(k) != got.get(k))


def output_differences(nb: TrialNotebook, ref: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    names = [c.name for c in nb.cells] + ["dump"]
    return [names[i] for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a != b]


# ---------------------------------------------------------------------- runs


@dataclass(frozen=True, slots=True)
class Reference:
    """The uninterrupted plain run of a notebook."""

    variables: dict[str, Any]
    outputs: list[dict[str, Any]]
    seconds: float


def env_without_resumable() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "TRIAL_", "JPY_"))}


def plain_run(nb: TrialNotebook, folder: Path) -> Reference:
    """The notebook without resumable, run once by nbclient in a kernel of its own."""
    path = write(nb, PLAIN, folder)
    started = time.monotonic()
    code = (  # the kernel on Unix sockets, as in kernel_sockets.py
        "import sys, nbformat\nfrom nbclient import NotebookClient\nfrom traitlets.config import Config\n"
        "config = Config()\nconfig.KernelManager.transport = 'ipc'\nconfig.KernelManager.ip = sys.argv[3]\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, kernel_name='python3', timeout=120, resources={'metadata': {'path': sys.argv[2]}},"
        " config=config).execute()\nnbformat.write(nb, sys.argv[1])"
    )
    sockets = tempfile.mkdtemp(prefix="rk-")
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path), str(folder), os.path.join(sockets, "kernel")],
            env=env_without_resumable(), capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"the plain run of {nb.name} failed:\n{done.stderr[-3000:]}")
    variables = json.loads((folder / DUMP).read_text())
    return Reference(variables, notebook_outputs(path, nb), time.monotonic() - started)


@dataclass
class Trial:
    """What one kill-and-resume trial saw."""

    notebook: str
    mode: str
    point: str
    expected: list[str]
    cells: int = 0
    steps: int = 0
    restarts: int = 0
    restored: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    reruns: list[tuple[str, str]] = field(default_factory=list)  # (step, reason) from the event log
    variables_differ: list[str] = field(default_factory=list)
    outputs_differ: list[str] = field(default_factory=list)
    error: str = ""
    rerun_executed: list[str] = field(default_factory=list)  # the full rerun afterwards: must stay empty
    rerun_reruns: list[tuple[str, str]] = field(default_factory=list)
    rerun_differs: list[str] = field(default_factory=list)
    rerun_done: bool = False
    seconds: float = 0.0

    @property
    def matched(self) -> bool:
        return not (self.error or self.variables_differ or self.outputs_differ)

    @property
    def rerun_clean(self) -> bool:
        failed = any(d.startswith("failed:") for d in self.rerun_differs)
        return not (self.rerun_executed or self.rerun_reruns or failed)

    def line(self) -> str:
        verdict = "same as plain" if self.matched else "DIFFERS"
        if not self.matched:
            error = f", {self.error.strip().splitlines()[0]}" if self.error else ""
            verdict += f" (variables {self.variables_differ}, outputs {self.outputs_differ}{error})"
        if self.expected:
            verdict += f" [expected: {'; '.join(self.expected)}]"
        reruns = ", ".join(f"{s}: {r}" for s, r in self.reruns) or "none"
        again = "every step restored" if self.rerun_clean else f"executed {self.rerun_executed} {self.rerun_reruns}"
        if not self.rerun_done:
            again = "not run"
        elif self.rerun_differs:
            again += f", differs from plain: {self.rerun_differs}"
        return (
            f"{self.notebook}/{self.mode} kill {self.point}: {self.cells} cells, {self.steps} steps, "
            f"{len(self.restored)} restored, {len(self.executed)} executed after {self.restarts} restart(s), "
            f"re-runs: {reruns}; {verdict}; full rerun: {again}; {self.seconds:.1f} s"
        )


def _execute(path: Path, folder: Path, env: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    argv = [sys.executable, "-m", "resumable", "execute", path.name, "--run-id", RUN_ID, "--max-restarts", "2",
            "--quiet", "--json", "--store", str(folder / "store.duckdb")]  # fmt: skip
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=240, check=False)
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None, done.stderr[-2000:]
    error = "" if done.returncode == 0 else (summary.get("error") or done.stderr)[-600:]
    return summary, error


def _reruns(folder: Path, since: int = 0) -> tuple[list[tuple[str, str]], int]:
    """(step, reason) of every completed step sent back to pending, from ``resumable show --events --json``."""
    argv = [sys.executable, "-m", "resumable", "show", RUN_ID, "--events", "--json",
            "--store", str(folder / "store.duckdb")]  # fmt: skip
    done = subprocess.run(argv, env=env_without_resumable(), capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return [("?", f"resumable show failed: {done.stderr.strip()[-300:]}")], since
    events = json.loads(done.stdout)["events"]
    found = [
        (e["step"], e["detail"] or "") for e in events[since:] if e["from"] == "completed" and e["to"] == "pending"
    ]
    return found, len(events)


def run_trial(
    nb: TrialNotebook, mode: str, point: KillPoint, folder: Path, ref: Reference | Future[Reference], rerun: bool = True
) -> Trial:
    """Kill the kernel at ``point``, let ``resumable execute`` resume, compare; then (``rerun``) run once more.

    ``ref`` may still be running (a future): it is waited for only when the killed run is compared with it.
    """
    started = time.monotonic()
    trial = Trial(nb.name, mode, point.label(nb), expected_kinds(nb, mode, point))
    path = write(nb, mode, folder)
    trial.cells = len(nb.cells) + 1
    trial.steps = sum(1 for c in nb.cells if nb.is_step(c, mode))
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-trial-killer.py").write_text(KILLER)
    env = env_without_resumable()
    env["IPYTHONDIR"] = str(folder / "ipython")
    sources = cell_sources(nb, mode)
    kill_env = {
        **env,
        "TRIAL_KILL_CELL": hashlib.sha256(sources[point.index].encode()).hexdigest()[:16],
        "TRIAL_KILL_PHASE": point.phase,
        "TRIAL_KILL_MARKER": str(folder / "killed"),
    }
    summary, trial.error = _execute(path, folder, kill_env)
    if summary is not None:
        trial.restarts = summary.get("restarts", 0)
        trial.restored = list(summary.get("steps_restored", []))
        trial.executed = list(summary.get("steps_executed", []))
    if not (folder / "killed").exists():
        trial.error = trial.error or "the kernel was never killed"
    output = folder / f"{nb.name}.resumable.ipynb"
    trial.reruns, seen = _reruns(folder)
    if isinstance(ref, Future):
        ref = ref.result()
    if not trial.error and (folder / DUMP).exists():
        trial.variables_differ = differences(ref.variables, json.loads((folder / DUMP).read_text()))
        trial.outputs_differ = output_differences(nb, ref.outputs, notebook_outputs(output, nb))
        (folder / DUMP).unlink()
    if rerun and not trial.error:
        trial.rerun_done = True
        again, error = _execute(path, folder, env)
        trial.rerun_reruns, _ = _reruns(folder, seen)
        if again is None or error:
            trial.rerun_differs = [f"failed: {error}"]
        else:
            trial.rerun_executed = list(again.get("steps_executed", []))
            trial.rerun_differs = differences(ref.variables, json.loads((folder / DUMP).read_text()))
            trial.rerun_differs += output_differences(nb, ref.outputs, notebook_outputs(output, nb))
    trial.seconds = time.monotonic() - started
    return trial


# ---------------------------------------------------------------------- campaigns


def plan(
    trials: int, seed: int, notebooks: list[str], modes: list[str], clean_only: bool
) -> list[tuple[str, str, KillPoint]]:
    """``trials`` kill points per notebook and form, drawn with ``seed``; optionally only outside hidden windows."""
    rng = random.Random(seed)
    chosen = []
    for name in notebooks:
        nb = NOTEBOOKS[name]
        for mode in modes:
            points = [p for p in kill_points(nb) if not (clean_only and expected_kinds(nb, mode, p))]
            picked = points if trials <= 0 else rng.sample(points, min(trials, len(points)))
            chosen += [(name, mode, p) for p in picked]
    return chosen


def campaign(
    chosen: list[tuple[str, str, KillPoint]], root: Path, workers: int = 2, echo: bool = False, rerun: bool = True
) -> list[Trial]:
    """Run the planned trials, ``workers`` at a time, and the plain references (once per notebook) beside them.

    A reference is only compared with, so it runs in a pool of its own while the first trials' killed runs
    go ahead: they wait for it only when they compare. (First, then the trials, the references alone
    kept the trials waiting for their length: a kernel's start and a notebook's run each.)
    """
    names = sorted({c[0] for c in chosen})

    def one(numbered: tuple[int, tuple[str, str, KillPoint]]) -> Trial:
        i, (name, mode, point) = numbered
        trial = run_trial(NOTEBOOKS[name], mode, point, root / f"trial-{i}-{name}-{mode}", refs[name], rerun)
        if echo:
            print(trial.line(), flush=True)
        return trial

    with ThreadPoolExecutor(max(min(len(names), workers), 1)) as plain, ThreadPoolExecutor(workers) as pool:
        refs = {name: plain.submit(plain_run, NOTEBOOKS[name], root / f"plain-{name}") for name in names}
        return list(pool.map(one, enumerate(chosen)))


def report(found: list[Trial]) -> str:
    """Counts per notebook and form: cells, restores, re-runs and their reasons, trials equal to plain."""
    lines = []
    for key in sorted({(t.notebook, t.mode) for t in found}):
        group = [t for t in found if (t.notebook, t.mode) == key]
        clean = [t for t in group if not t.expected]
        reasons = Counter(reason for t in group for _, reason in t.reruns)
        restored = sum(len(t.restored) for t in group)
        lines.append(
            f"{key[0]}/{key[1]}: {len(group)} trials, {group[0].cells} cells ({group[0].steps} steps); "
            f"{restored} restores, {sum(len(t.restored) for t in group if t.matched)} of them in trials that "
            f"matched the plain run; re-executed {sum(len(t.executed) for t in group)} steps; "
            f"re-runs {sum(reasons.values())} ({', '.join(f'{r}: {n}' for r, n in reasons.items()) or 'none'}); "
            f"equal to plain: {sum(t.matched for t in clean)}/{len(clean)} outside hidden-state windows, "
            f"{sum(t.matched for t in group if t.expected)}/{len(group) - len(clean)} inside; "
            f"full reruns with every step restored: {sum(t.rerun_clean for t in group if t.rerun_done)}/"
            f"{sum(t.rerun_done for t in group)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="kill points per notebook and form (0: every one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--notebook", action="append", choices=sorted(NOTEBOOKS), help="default: all")
    parser.add_argument("--mode", action="append", choices=MODES, help="default: mixed and steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phase", choices=(BEFORE, AFTER), help="only kills at this phase")
    parser.add_argument("--clean-only", action="store_true", help="only kill points outside hidden-state windows")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    chosen = plan(args.trials, args.seed, args.notebook or sorted(NOTEBOOKS), args.mode or list(MODES), args.clean_only)
    chosen = [c for c in chosen if args.phase is None or c[2].phase == args.phase]
    root = args.keep or Path(tempfile.mkdtemp(prefix="notebook-trials-"))
    found = campaign(chosen, root, args.workers, echo=True)
    print(report(found))
    bad = [t for t in found if (not t.matched and not t.expected) or not (t.rerun_clean or rerun_may_differ(t))]
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
