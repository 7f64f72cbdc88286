"""An ordinary data-science notebook, every cell a durable step, against the same notebook on nbclient.

The fixture (:func:`cells`): one setup cell (imports) and 40 cells of the kind a data scientist
writes: build a customer frame, clean it and engineer features (new columns, ``inplace`` changes,
``merge``, ``pivot_table``, ``get_dummies``, ``resample``), fit a logistic regression, a random
forest and a ridge regression with scikit-learn, evaluate them, and draw a dozen matplotlib plots
(some kept in variables, ``fig, ax = plt.subplots()``). Tables are shown as the cell's result, as
in a notebook. The data are generated from a seeded generator, so no download is needed.

Three ways, taking turns in each repetition (medians compared):

- plain: nbclient runs the notebook without ``%load_ext resumable`` and without the magic lines;
- first run: ``resumable execute`` of a new run (every step executes and is checkpointed);
  target: at most 1.15 x plain;
- rerun: ``resumable execute`` of that run again (every step restores); target: at most 0.3 x plain.

Every way reads the notebook, runs it on a fresh kernel and writes the executed copy. A full run
uses 100,000 rows; ``--quick`` 3,000 rows and fewer trees.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import Result, Skipped
from benchmarks._util import Config, bytecode_cache, run_worker

CONCERN = "datascience"
FIRST_RUN_TARGET = "<= 1.15"
RERUN_TARGET = "<= 0.3"
SMOKE_STEPS = 6  # step cells of the suite's smoke run: they use numpy and pandas only

SETUP = """\
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_absolute_error, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

ROWS = {rows}
TREES = {trees}"""
# The smoke run's setup: only what its first SMOKE_STEPS step cells use. Importing scikit-learn and
# matplotlib in each of its three kernels took most of its time, and it checks that the concern runs.
SMOKE_SETUP = """\
import numpy as np
import pandas as pd

ROWS = {rows}
TREES = {trees}"""

# (step name, code): 40 cells.
STEPS: list[tuple[str, str]] = [
    ("load", """\
rng = np.random.default_rng(0)
raw = pd.DataFrame({
    "customer_id": np.arange(ROWS),
    "signup": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, ROWS), unit="D"),
    "region": rng.choice(["north", "south", "east", "west"], ROWS),
    "plan": rng.choice(["basic", "plus", "pro"], ROWS, p=[0.6, 0.3, 0.1]),
    "age": rng.integers(18, 80, ROWS),
    "income": rng.lognormal(10.5, 0.5, ROWS).round(2),
    "visits": rng.poisson(12, ROWS),
    "spend": rng.gamma(2.0, 50.0, ROWS).round(2),
})
raw.head()"""),
    ("describe", "raw.describe()"),
    ("missing", """\
raw.loc[rng.random(ROWS) < 0.02, "income"] = np.nan
raw.loc[rng.random(ROWS) < 0.01, "visits"] = -1
raw.isna().sum()"""),
    ("clean", """\
df = raw.dropna(subset=["income"]).copy()
df = df[df["visits"] >= 0]
df["income"] = df["income"].clip(upper=df["income"].quantile(0.99))
len(df)"""),
    ("dates", """\
df["tenure_days"] = (pd.Timestamp("2024-06-01") - df["signup"]).dt.days
df["signup_month"] = df["signup"].dt.month"""),
    ("ratios", """\
df["spend_per_visit"] = df["spend"] / (df["visits"] + 1)
df["log_income"] = np.log(df["income"])"""),
    ("age_bands", """\
df["age_band"] = pd.cut(df["age"], [17, 25, 35, 50, 65, 80], labels=["18-25", "26-35", "36-50", "51-65", "66+"])
df["age_band"].value_counts()"""),
    ("region_stats", """\
region_stats = df.groupby("region").agg(mean_spend=("spend", "mean"), customers=("customer_id", "count"),
                                        mean_income=("income", "mean"))
region_stats"""),
    ("plan_pivot", """\
pivot = df.pivot_table(index="region", columns="plan", values="spend", aggfunc="mean")
pivot.round(1)"""),
    ("merge_region", """\
df = df.merge(region_stats[["mean_spend"]].rename(columns={"mean_spend": "region_spend"}),
              left_on="region", right_index=True)
df["spend_vs_region"] = df["spend"] / df["region_spend"]"""),
    ("label", """\
z = (-1.5 + 0.8 * (df["plan"] == "basic") - 0.004 * df["tenure_days"] / 10 + 0.02 * (df["age"] < 30)
     - 0.3 * np.log1p(df["visits"]) + 0.5 * (df["spend_vs_region"] < 0.5))
df["churn"] = (rng.random(len(df)) < 1 / (1 + np.exp(-z))).astype(int)
df["churn"].mean()"""),
    ("churn_by_plan", "df.groupby(\"plan\")[\"churn\"].mean().round(3)"),
    ("income_hist", """\
fig, ax = plt.subplots(figsize=(6, 3))
df["income"].hist(bins=50, ax=ax)
ax.set_title("income")"""),
    ("age_spend_scatter", """\
plt.figure(figsize=(5, 4))
sample = df.sample(2000, random_state=0) if len(df) > 2000 else df
plt.scatter(sample["age"], sample["spend"], s=3, c=sample["churn"], cmap="coolwarm")
plt.xlabel("age")
plt.ylabel("spend")
plt.show()"""),
    ("region_bar", "region_stats[\"mean_spend\"].plot.bar(title=\"mean spend by region\");"),
    ("one_hot", """\
X_cat = pd.get_dummies(df[["region", "plan", "age_band"]], drop_first=True).astype(float)
X_cat.shape"""),
    ("numeric", """\
num_cols = ["age", "income", "log_income", "visits", "spend", "tenure_days", "spend_per_visit", "spend_vs_region"]
X_num = df[num_cols].astype(float)"""),
    ("features", """\
X = pd.concat([X_num, X_cat], axis=1)
y = df["churn"].to_numpy()
X.shape"""),
    ("split", """\
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
len(X_train), len(X_test)"""),
    ("scale", """\
scaler = StandardScaler().fit(X_train[num_cols])
X_train_s = X_train.copy()
X_test_s = X_test.copy()
X_train_s[num_cols] = scaler.transform(X_train[num_cols])
X_test_s[num_cols] = scaler.transform(X_test[num_cols])"""),
    ("logreg", "logreg = LogisticRegression(max_iter=1000).fit(X_train_s, y_train)"),
    ("logreg_eval", """\
p_lr = logreg.predict_proba(X_test_s)[:, 1]
auc_lr = roc_auc_score(y_test, p_lr)
print(f"logistic regression: AUC {auc_lr:.3f}, accuracy {accuracy_score(y_test, p_lr > 0.5):.3f}")"""),
    ("coef_plot", """\
coefs = pd.Series(logreg.coef_[0], index=X_train_s.columns).sort_values()
coefs.plot.barh(figsize=(6, 5), title="logistic regression coefficients");"""),
    ("forest", """\
forest = RandomForestClassifier(n_estimators=TREES, max_depth=10, min_samples_leaf=20, random_state=0)
forest.fit(X_train, y_train)"""),
    ("forest_eval", """\
p_rf = forest.predict_proba(X_test)[:, 1]
auc_rf = roc_auc_score(y_test, p_rf)
print(f"random forest: AUC {auc_rf:.3f}, accuracy {accuracy_score(y_test, p_rf > 0.5):.3f}")"""),
    ("importances", """\
importances = pd.Series(forest.feature_importances_, index=X.columns).sort_values(ascending=False)
importances.head(10)"""),
    ("importance_plot", "importances.head(15).plot.bar(figsize=(7, 3), title=\"feature importances\");"),
    ("ridge", """\
spend_train = df.loc[X_train.index, "income"]
spend_test = df.loc[X_test.index, "income"]
cols = [c for c in X_train_s.columns if c not in ("income", "log_income")]
ridge = Ridge(alpha=1.0).fit(X_train_s[cols], spend_train)
mae = mean_absolute_error(spend_test, ridge.predict(X_test_s[cols]))
print(f"ridge: MAE {mae:,.0f}")"""),
    ("residuals", """\
resid = spend_test - ridge.predict(X_test_s[cols])
fig2, ax2 = plt.subplots(figsize=(6, 3))
ax2.hist(resid, bins=60)
ax2.set_title("ridge residuals");"""),
    ("segments", """\
df["segment"] = pd.qcut(df["spend"], 4, labels=["low", "mid", "high", "top"])
df["segment"].value_counts()"""),
    ("segment_table", """\
seg = df.groupby(["segment", "region"], observed=True)["churn"].mean().unstack()
seg.round(3)"""),
    ("segment_heatmap", """\
plt.figure(figsize=(5, 3))
plt.imshow(seg.to_numpy(), cmap="viridis")
plt.colorbar()
plt.xticks(range(len(seg.columns)), seg.columns)
plt.yticks(range(len(seg.index)), seg.index)
plt.show()"""),
    ("monthly", """\
monthly = df.set_index("signup").resample("MS")["spend"].sum()
monthly.tail()"""),
    ("rolling", "monthly_roll = monthly.rolling(3).mean()"),
    ("monthly_plot", """\
ax3 = monthly.plot(figsize=(7, 3), label="monthly")
monthly_roll.plot(ax=ax3, label="3-month mean")
ax3.legend();"""),
    ("scores", "df[\"score\"] = forest.predict_proba(X)[:, 1]"),
    ("top_risk", """\
top = df.nlargest(100, "score")[["customer_id", "plan", "region", "score"]]
top.head(10)"""),
    ("calibration", """\
calib = df.groupby(pd.cut(df["score"], 10), observed=True)["churn"].mean()
calib"""),
    ("calibration_plot", "calib.reset_index(drop=True).plot(figsize=(5, 3), marker=\"o\", title=\"churn by decile\");"),
    ("summary", """\
summary = {"rows": len(df), "auc_logreg": round(auc_lr, 3), "auc_forest": round(auc_rf, 3), "ridge_mae": round(mae)}
print(summary)"""),
]  # fmt: skip


def cells(rows: int, trees: int, magic: bool, steps: int = len(STEPS)) -> list[str]:
    """The notebook's code cells: setup, then the first ``steps`` step cells (with their magic line when ``magic``).

    A notebook of the smoke run's first steps imports only numpy and pandas (:data:`SMOKE_SETUP`).
    """
    setup = (SMOKE_SETUP if steps <= SMOKE_STEPS else SETUP).format(rows=rows, trees=trees)
    first = f"%load_ext resumable\n{setup}" if magic else setup
    return [first] + [f"%%durable_step {name}\n{code}" if magic else code for name, code in STEPS[:steps]]


def write(path: Path, rows: int, trees: int, magic: bool, steps: int = len(STEPS)) -> None:
    """Write the fixture notebook."""
    import nbformat

    doc = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells(rows, trees, magic, steps)])
    doc.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(doc, str(path))  # type: ignore[no-untyped-call]


def measure(
    folder: str, rows: int, trees: int, reps: int, warm_up: bool = True, steps: int = len(STEPS)
) -> dict[str, Any]:
    """Median seconds of the plain nbclient run, the first run and the rerun with resumable."""
    import resumable
    from benchmarks.headless import nbclient_run

    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    plain, magic, out = base / "plain.ipynb", base / "ds.ipynb", base / "out.ipynb"
    write(plain, rows, trees, magic=False, steps=steps)
    write(magic, rows, trees, magic=True, steps=steps)
    root = str(Path(__file__).resolve().parent.parent)  # the kernels import the checkout measured
    execute = resumable.execute_notebook  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"plain": [], "first": [], "rerun": []}
    if warm_up:
        nbclient_run(plain, out, dict(os.environ), root)  # warm-up: imports and disk caches
    for rep in range(reps):
        store = str(base / f"s{rep}" / "store.duckdb")
        times["plain"].append(nbclient_run(plain, out, dict(os.environ), root))
        for key in ("first", "rerun"):
            t0 = time.perf_counter()
            result = execute(str(magic), str(out), run_id="ds", store=store, progress=False, cwd=root)
            times[key].append(time.perf_counter() - t0)
            done = result.steps_executed if key == "first" else result.steps_restored
            assert len(done) == steps, f"{key}: {len(done)} of {steps} steps"
    return {key: statistics.median(v) for key, v in times.items()} | {"reps": reps, "rows": rows, "steps": steps}


def run(cfg: Config) -> list[Result | Skipped]:
    """Target 7: the first run and the full rerun of the data-science notebook against plain nbclient."""
    import resumable

    if not hasattr(resumable, "execute_notebook"):
        return [Skipped(CONCERN, "all", "resumable execute (resumable.execute_notebook) is not in this checkout yet")]
    rows, trees = (500, 2) if cfg.smoke else (3_000, 10) if cfg.quick else (100_000, 40)
    reps = 1 if cfg.smoke else cfg.reps
    with tempfile.TemporaryDirectory(prefix="rsm-bench-") as tmp, bytecode_cache() as env:
        try:
            # A smoke run only checks that the concern runs: no warm-up run, the first step cells
            # (loading, describing and cleaning the frame).
            job = {"folder": tmp, "rows": rows, "trees": trees, "reps": reps, "warm_up": not cfg.smoke,
                   "steps": SMOKE_STEPS if cfg.smoke else len(STEPS)}  # fmt: skip
            m = run_worker(CONCERN, "measure", job, env=env)
        except Exception as exc:
            return [Skipped(CONCERN, "all", str(exc).strip().splitlines()[-1])]
    what = f"{m['steps']} data-science step cells, {rows:,} rows"
    note = f"medians of {m['reps']}"
    return [
        Result(CONCERN, f"first run with resumable execute ({what})", m["first"], "s", "plain nbclient run",
               m["plain"], FIRST_RUN_TARGET, note),
        Result(CONCERN, f"rerun, every step restored ({what})", m["rerun"], "s", "plain nbclient run",
               m["plain"], RERUN_TARGET, note),
    ]  # fmt: skip
