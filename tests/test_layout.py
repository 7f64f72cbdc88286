"""The public surface and the one-way import direction stay as designed."""

from __future__ import annotations

import ast
from pathlib import Path

import resumable

PACKAGE = Path(resumable.__file__).parent

# Lower layers never import higher ones; front ends never import each other (except those allowed below).
LAYERS: list[set[str]] = [
    {
        "errors",
        "_records",
        "_states",
        "_keys",
        "_config",
        "_cellast",
        "_units",
        "_tracebacks",
        "_magic_lines",
        "_secrets",
        "_params",
    },
    {"_codec", "_owner", "_inputs", "_why", "_fingerprint", "_aliases"},
    {"_store"},
    {"_context", "_kernel_run", "_runs", "_table", "_engine", "_capture", "_query", "_step_report"},
    {"pipeline"},
    {"_magics", "_panel", "_headless", "_sweep", "cli", "_demo"},
    {"__init__", "__main__"},
]
FRONT_ENDS = {"_magics", "_panel", "_headless", "_sweep", "cli"}
# A sweep runs headless executions, and the command line fronts both.
ALLOWED_FRONT_END_IMPORTS = {("cli", "_headless"), ("cli", "_sweep"), ("_sweep", "_headless")}
ONLY_IMPORTED_BY = {
    "IPython.core.magic": "_magics",
    "ipywidgets": "_panel",
    "nbclient": "_headless",
    "click": "cli",
    "duckdb": "_store",
    "psycopg": "_store",
    "psycopg_pool": "_store",
    "fsspec": "_store",
    "s3fs": "_store",
    "dask": "_sweep",
    "distributed": "_sweep",
}


def _top_level_modules() -> set[str]:
    """The package's modules and subpackages, by the name the rules above use."""
    found = {p.stem for p in PACKAGE.glob("*.py")}
    return found | {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_the_rules_name_real_modules_and_every_module_has_a_layer() -> None:
    """A rule about a module that does not exist checks nothing, and an unlisted module escapes every rule."""
    modules = _top_level_modules()
    named = set().union(*LAYERS) | FRONT_ENDS | set(ONLY_IMPORTED_BY.values())
    assert sorted(named - modules) == []
    assert sorted(modules - set().union(*LAYERS)) == []


def _layer(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return len(LAYERS)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "resumable":  # from resumable import _engine
                found |= {f"resumable.{a.name}" for a in node.names}
    return found


def test_imports_point_one_way() -> None:
    """No module imports a layer above it, and no front end imports another."""
    problems = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for name in _imports(path):
            if name.startswith("resumable."):
                target = name.removeprefix("resumable.")
                if _layer(target) > _layer(own) and own.split(".")[0] != target.split(".")[0]:
                    problems.append(f"{own} imports higher layer {target}")
                src, dst = own.split(".")[0], target.split(".")[0]
                crossing = src in FRONT_ENDS and dst in FRONT_ENDS and src != dst
                if crossing and (src, dst) not in ALLOWED_FRONT_END_IMPORTS:
                    problems.append(f"front end {own} imports front end {target}")
            for lib, owner in ONLY_IMPORTED_BY.items():
                if (name == lib or name.startswith(lib + ".")) and own.split(".")[0] != owner:
                    problems.append(f"{own} imports {lib}, which only {owner} may")
    assert problems == []


def test_all_exports_exist_and_nothing_private_leaks() -> None:
    """Everything in __all__ is importable from resumable and public names are listed."""
    for name in resumable.__all__:
        assert hasattr(resumable, name), name
    assert sorted(resumable.__all__) == sorted(set(resumable.__all__))
    assert all(not name.startswith("_") for name in resumable.__all__)


def test_every_error_derives_from_resumable_error() -> None:
    """`except resumable.ResumableError` catches every error we raise."""
    from resumable import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.ResumableError) for c in classes)


def test_the_suites_longest_first_order_names_tests_that_exist() -> None:
    """A renamed long test drops out of conftest's LONGEST_FIRST silently and starts late again: its names exist."""
    from conftest import LONGEST_FIRST

    tests = Path(__file__).parent
    missing = []
    for name in LONGEST_FIRST:
        module, function = name.split("::")
        path = tests / module
        if not path.exists() or function not in {
            node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
        }:
            missing.append(name)
    assert missing == []
