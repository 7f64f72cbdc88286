"""Four data-science notebooks of the kind people write, for the kill-and-compare trials.

Each notebook is a list of cells. A cell with a ``step`` name is a ``%%durable_step`` cell in the
*mixed* form of the notebook (plain cells mixed with steps, as a user annotates the costly parts);
in the *steps* form every code cell is a step except the cells marked ``plain`` (the parameters
cell, the cell that loads resumable, and setup that cannot be checkpointed, like a database
connection). The *plain* form has no resumable at all: it is the uninterrupted run the others are
compared with.

``hidden`` lists the kinds of hidden state a notebook holds (issue 10, 1b): a kill after cell
``after`` has completed and before cell ``until`` has completed leaves a resumed run that differs
from an uninterrupted one, until resumable preserves or detects that kind. The trials use these
windows to expect (xfail) exactly those cases; every other kill must give the plain run's results.
When resumable preserves or detects a kind, its strict xfail in test_notebook_trials.py passes and
so fails: delete the kind's ``Hidden`` entry here, and the trials then hold it to the plain run.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAIN, MIXED, STEPS = "plain", "mixed", "steps"
MODES = (MIXED, STEPS)


@dataclass(frozen=True, slots=True)
class Cell:
    """One code cell: its source, its step name in the mixed form, and whether it always stays plain."""

    name: str
    source: str
    step: bool = False  # a step in the mixed form (every cell not ``plain`` is a step in the steps form)
    plain: bool = False  # never a step: parameters, the resumable setup, a connection
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hidden:
    """A kind of hidden state: lost when cell ``after`` is restored and cell ``until`` then executes."""

    kind: str
    after: str  # the cell whose restore loses the state
    until: str | None  # the last cell whose result depends on it (None: a final variable holds it)
    modes: tuple[str, ...] = MODES
    reruns: bool = False  # also makes a full rerun of the finished run execute a step again


@dataclass(frozen=True, slots=True)
class TrialNotebook:
    """A notebook, the names that differ between any two kernels, and its known hidden state."""

    name: str
    cells: tuple[Cell, ...]
    volatile: frozenset[str] = frozenset()  # a timestamp, a connection: never compared
    hidden: tuple[Hidden, ...] = ()

    def index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.cells) if c.name == name)

    def is_step(self, cell: Cell, mode: str) -> bool:
        return mode != PLAIN and not cell.plain and (cell.step or mode == STEPS)


def parameters(source: str) -> Cell:
    return Cell("parameters", "# Parameters\n" + source, plain=True, tags=("parameters",))


def setup(pipeline: str) -> Cell:
    return Cell("resumable", f"%load_ext resumable\n%durable_run {pipeline}", plain=True)


SALES = TrialNotebook(
    "sales",
    (
        parameters('region = "north"\nn_days = 42\nseed = 7\nunit_price = 2.5'),
        setup("sales"),
        Cell(
            "imports",
            "import sqlite3\nfrom datetime import datetime\n\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
            'import pandas as pd\n\nconn = sqlite3.connect(":memory:")  # a connection: never checkpointed\n'
            "started = datetime.now()",
            plain=True,
        ),
        Cell(
            "load",
            "rng = np.random.default_rng(seed)\n"
            'days = pd.date_range("2024-01-01", periods=n_days, freq="D")\n'
            "sales = pd.DataFrame({\n"
            '    "day": np.repeat(days, 3),\n'
            '    "store": ["a", "b", "c"] * n_days,\n'
            '    "units": rng.poisson(20, 3 * n_days),\n'
            "})\n"
            'print(f"{len(sales)} rows for {region}")',
            step=True,
        ),
        Cell(
            "clean",
            'sales["revenue"] = sales["units"] * unit_price\n'
            'sales.loc[sales["units"] < 14, "revenue"] = 0.0\n'
            'sales["weekday"] = sales["day"].dt.day_name()\n'
            "sales.head()",
            step=True,
        ),
        Cell(
            "helpers",
            'def weekly(frame, column="revenue"):\n'
            '    """Totals per ISO week."""\n'
            '    return frame.groupby(frame["day"].dt.isocalendar().week)[column].sum()',
        ),
        Cell(
            "summary",
            "summary = weekly(sales)\nbest_week = int(summary.idxmax())\n"
            'print("best week", best_week, "revenue", round(float(summary.max()), 2))',
            step=True,
        ),
        Cell(
            "plot",
            "fig, ax = plt.subplots(figsize=(5, 3))\n"
            'summary.plot(kind="bar", ax=ax, title=f"Weekly revenue, {region}")\n'
            'fig.savefig("weekly.png", dpi=50)',
            step=True,
        ),
        Cell("alerts_list", "alerts = []"),
        Cell(
            "alerts",
            'daily = sales.groupby("day")["revenue"].sum()\n'
            "for day, revenue in daily.items():\n"
            "    if revenue > daily.mean() * 1.25:\n"
            '        alerts.append(day.strftime("%m-%d"))\n'
            'print(len(alerts), "alert days since", started.year > 2000)',
            step=True,
        ),
        Cell(
            "db",
            'sales.assign(day=sales["day"].astype(str)).to_sql("sales", conn, index=False)\n'
            'per_store = pd.read_sql("select store, sum(revenue) as revenue from sales group by store", conn)\n'
            "per_store",
            plain=True,
        ),
    ),
    volatile=frozenset({"conn", "started"}),
)

CHURN = TrialNotebook(
    "churn",
    (
        parameters("seed = 3\nC = 0.5\ntest_size = 0.25"),
        setup("churn"),
        Cell(
            "imports",
            "import matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd\n"
            "from sklearn.datasets import make_classification\n"
            "from sklearn.ensemble import RandomForestClassifier\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from sklearn.metrics import roc_auc_score, roc_curve\n"
            "from sklearn.model_selection import train_test_split\n"
            "from sklearn.preprocessing import StandardScaler",
        ),
        Cell(
            "data",
            "X, y = make_classification(n_samples=300, n_features=6, n_informative=3, random_state=seed)\n"
            'features = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])\n'
            'features["churned"] = y\n'
            'features.describe().loc[["mean", "std"]].round(2)',
            step=True,
        ),
        Cell(
            "split",
            "X_train, X_test, y_train, y_test = train_test_split(\n"
            '    features.drop(columns="churned"), features["churned"], test_size=test_size, random_state=seed\n'
            ")\n"
            "scaler = StandardScaler()\n"
            "scaler.fit(X_train)",
            step=True,
        ),
        Cell("forest_init", "forest = RandomForestClassifier(n_estimators=20, random_state=seed)"),
        Cell("forest_fit", "forest.fit(X_train, y_train)", step=True),
        Cell(
            "train",
            "model = LogisticRegression(C=C, max_iter=500)\nmodel.fit(scaler.transform(X_train), y_train)",
            step=True,
        ),
        Cell("scores_list", "scores = []"),
        Cell(
            "grid",
            "for c in [0.01, 0.1, 1.0]:\n"
            "    candidate = LogisticRegression(C=c, max_iter=500).fit(scaler.transform(X_train), y_train)\n"
            "    scores.append((c, round(candidate.score(scaler.transform(X_test), y_test), 4)))\n"
            "scores",
            step=True,
        ),
        Cell(
            "evaluate",
            "proba = model.predict_proba(scaler.transform(X_test))[:, 1]\n"
            "auc = roc_auc_score(y_test, proba)\n"
            "fpr, tpr, thresholds = roc_curve(y_test, proba)\n"
            'print(f"AUC {auc:.3f}, forest accuracy {forest.score(X_test, y_test):.3f}")',
            step=True,
        ),
        Cell(
            "roc",
            "fig, ax = plt.subplots(figsize=(3, 3))\n"
            'ax.plot(fpr, tpr, label=f"C={C}")\n'
            'ax.plot([0, 1], [0, 1], linestyle="--")\n'
            "ax.legend()\nplt.show()",
            step=True,
        ),
    ),
)

SENSORS = TrialNotebook(
    "sensors",
    (
        parameters("seed = 11\nk = 3"),
        setup("sensors"),
        Cell(
            "imports",
            "import matplotlib.pyplot as plt\nimport numpy as np\nfrom sklearn.cluster import KMeans\n\n"
            "rng = np.random.default_rng(seed)  # seeded once, drawn from by later cells",
        ),
        Cell(
            "readings",
            "gen = np.random.default_rng(seed + 1)\n"
            "centers = np.array([[0, 0], [4, 4], [0, 5]])\n"
            "readings = np.concatenate([c + gen.normal(size=(60, 2)) for c in centers])\n"
            'print("readings", readings.shape, round(float(readings.mean()), 4))',
            step=True,
        ),
        Cell(
            "cluster",
            "km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(readings)\n"
            "labels = km.labels_\ncounts = np.zeros(k, dtype=int)",
            step=True,
        ),
        Cell("count", "np.add.at(counts, labels, 1)\nprint(sorted(counts.tolist()))", step=True),
        Cell("canvas", "fig, axes = plt.subplots(1, 2, figsize=(6, 3))\nplt.close(fig)", step=True),
        Cell(
            "draw",
            "axes[0].scatter(readings[:, 0], readings[:, 1], c=labels, s=5)\n"
            "axes[1].bar(range(k), counts)\n"
            'axes[1].set_title("cluster sizes")\nfig',
            step=True,
        ),
        Cell(
            "bootstrap",
            "boot = np.array([rng.choice(readings[:, 0], len(readings)).mean() for _ in range(30)])",
            step=True,
        ),
        Cell(
            "interval",
            'low, high = np.percentile(boot, [5, 95]) + rng.normal(0, 0.01, 2)\nprint(f"{low:.3f} {high:.3f}")',
            step=True,
        ),
    ),
    hidden=(
        Hidden("an array changed in place by a ufunc method (np.add.at)", after="count", until=None),
        Hidden("figure parts drawn on in another cell (axes[0].scatter)", after="draw", until=None),
        Hidden("a generator advanced by method calls (rng.choice)", after="bootstrap", until=None),
    ),
)  # fmt: skip

EXPERIMENT = TrialNotebook(
    "experiment",
    (
        parameters("n = 400\neffect = 0.3"),
        setup("experiment"),
        Cell("imports", "import random\n\nimport matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd"),
        Cell(
            "settings",
            'np.random.seed(1)\nrandom.seed(1)\nplt.style.use("ggplot")\npd.set_option("display.max_rows", 6)',
        ),
        Cell("control", "control = np.random.normal(0, 1, n)", step=True),
        Cell("treated", "treatment = np.random.normal(effect, 1, n)\nbucket = random.randint(0, 99)", step=True),
        Cell("peek", "head = control[:5]\nhead[0] = 99.0", step=True),
        Cell(
            "report_class",
            "class Report:\n"
            "    def line(self, name):\n"
            '        return f"{name}: {eval(name).mean():.3f}"',
        ),
        Cell("diff", "%time diff = treatment.mean() - control.mean()\nprint(Report().line('treatment'))", step=True),
        Cell(
            "table",
            'frame = pd.DataFrame({"group": ["control"] * n + ["treated"] * n, '
            '"value": np.concatenate([control, treatment])})\n'
            "frame",
            step=True,
        ),
        Cell(
            "hist",
            "fig, ax = plt.subplots(figsize=(4, 3))\n"
            'ax.hist([control, treatment], bins=15)\nax.set_title(f"difference {diff:.3f}")\nplt.show()',
            step=True,
        ),
    ),
    hidden=(
        Hidden("a global seed (np.random.seed, random.seed) set in a restored step", after="settings",
               until="treated", modes=(STEPS,)),
        Hidden("settings made in a restored step (plt.style.use, pd.set_option)", after="settings", until="hist",
               modes=(STEPS,)),
        Hidden("the global random state advanced by a restored step (np.random.normal)", after="control",
               until="treated"),
        Hidden("aliasing: a view written through to another step's output (head = control[:5])", after="peek",
               until=None),
        Hidden("a class whose methods look up notebook globals (eval)", after="report_class", until="diff",
               modes=(STEPS,)),
        Hidden("a name bound inside a line magic in a step (%time diff = ...)", after="diff", until=None,
               reruns=True),
    ),
)  # fmt: skip

NOTEBOOKS = {nb.name: nb for nb in (SALES, CHURN, SENSORS, EXPERIMENT)}
