"""Which names a notebook cell binds, reads, changes in place and deletes, from its syntax tree.

The magics store a cell's *outputs* (what it leaves bound at top level) and record its *reads*
(names it uses before binding them, so it depends on earlier cells). Both come from reading the
cell, never from running it, so they are known before the body executes.

Top level means module scope: the bodies of ``if``, ``for``, ``while``, ``try``, ``with`` and
``match`` count, function and class bodies do not (their free names count as reads). The rules:

- binds: ``=`` in every form (tuple and starred unpacking), ``+=`` and friends, annotated
  assignment with a value, ``for`` and ``with ... as`` targets, ``:=`` (also inside
  comprehensions), ``import``, ``def``, ``class``, ``match`` captures, and names a function declares
  ``global`` and assigns. ``del name`` unbinds; binding it again later binds it again.
- magics that run code in the notebook's namespace: the code of ``%time`` and ``%%time`` and
  ``%%capture`` (and the variable ``%%capture`` binds) counts as the cell's own.
- mutates: a name the cell did not bind first and changes in place, seen in the syntax: an
  attribute or item assigned or deleted (``df["x"] = 1``, ``cfg.seed += 1``, ``del d[k]``), a
  call with ``inplace=True`` on it (``df.drop(columns="x", inplace=True)``), or a call of one of
  :data:`MUTATING_METHODS` on it (``rows.append(r)``, ``model.fit(X, y)``). What the syntax cannot
  show (``random.shuffle(rows)``) the user names with ``--outputs +rows``.

Pure: no IPython, no store. Cells with IPython syntax (``!ls``, ``%time``) must be transformed to
Python first (``shell.transform_cell``).
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

#: Methods that change their object in place, common enough in notebooks to detect by name:
#: list, dict, set, bytearray, numpy arrays, and estimator-style ``fit``.
MUTATING_METHODS = frozenset(
    {
        "append", "extend", "insert", "remove", "pop", "popitem", "clear", "update", "setdefault",
        "add", "discard", "difference_update", "intersection_update", "symmetric_difference_update",
        "sort", "reverse", "fill", "resize", "put", "itemset",
        "fit", "partial_fit", "fit_transform", "fit_predict", "load_state_dict",
    }
)  # fmt: skip

_BUILTINS = frozenset(dir(builtins))
_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
_Comprehension = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp


@dataclass(frozen=True, slots=True)
class CellNames:
    """What a cell does to the notebook's namespace, each in first-seen order."""

    binds: tuple[str, ...]  # left bound at top level when the cell finishes
    reads: tuple[str, ...]  # used before the cell binds them: they come from earlier cells
    mutates: tuple[str, ...]  # read from earlier cells and visibly changed in place
    deletes: tuple[str, ...]  # deleted and not bound again


def analyze(source: str) -> CellNames:
    """Read a cell's names from its syntax tree.

    Parameters
    ----------
    source
        Python source (IPython syntax already transformed away).

    Returns
    -------
    CellNames
        Builtins are left out of ``reads`` unless the cell shadows them.

    Raises
    ------
    SyntaxError
        When ``source`` is not valid Python.
    """
    walker = _TopLevel()
    for stmt in ast.parse(source).body:
        walker.statement(stmt)
    reads = [n for n in walker.reads if n not in _BUILTINS]
    return CellNames(
        tuple(n for n in walker.bound if n not in walker.deleted),
        tuple(reads),
        tuple(walker.mutated),
        tuple(n for n in walker.deleted if n not in walker.bound),
    )


def base_name(node: ast.expr) -> str | None:
    """The variable at the root of ``a.b[c].d``, or None (``f().x``)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _TopLevel:
    """Walks module-scope statements in execution order."""

    def __init__(self) -> None:
        self.bound: dict[str, None] = {}  # ordered sets
        self.reads: dict[str, None] = {}
        self.mutated: dict[str, None] = {}
        self.deleted: dict[str, None] = {}

    # ------------------------------------------------------------------ recording

    def bind(self, name: str) -> None:
        self.bound.pop(name, None)  # re-binding after a del moves it to the end, as Python would
        self.bound[name] = None
        self.deleted.pop(name, None)

    def read(self, name: str) -> None:
        if name not in self.bound:
            self.reads[name] = None

    def mutate(self, node: ast.expr) -> None:
        name = base_name(node)
        if name is not None and name not in self.bound:
            self.mutated[name] = None
            self.reads[name] = None

    # ------------------------------------------------------------------ statements

    def statement(self, stmt: ast.stmt) -> None:  # noqa: PLR0912 - one branch per statement kind
        if isinstance(stmt, ast.Assign):
            self.expr(stmt.value)
            for target in stmt.targets:
                self.target(target)
        elif isinstance(stmt, ast.AugAssign):
            self.load_target(stmt.target)
            self.expr(stmt.value)
            self.target(stmt.target)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.expr(stmt.value)
                self.target(stmt.target)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.expr(stmt.iter)
            self.target(stmt.target)
            self.block(stmt.body)
            self.block(stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.block(stmt.body)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name != "*":
                    self.bind(alias.asname or alias.name.split(".")[0])
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.definition(stmt)
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                self.delete(target)
        elif isinstance(stmt, (ast.If, ast.While)):
            self.expr(stmt.test)
            self.block(stmt.body)
            self.block(stmt.orelse)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.try_statement(stmt)
        elif isinstance(stmt, ast.Match):
            self.expr(stmt.subject)
            for case in stmt.cases:
                self.pattern(case.pattern)
                if case.guard is not None:
                    self.expr(case.guard)
                self.block(case.body)
        elif isinstance(stmt, ast.Expr):
            self.expr(stmt.value)
        else:  # return, raise, assert, global, pass, ...: only their expressions matter
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def try_statement(self, stmt: ast.stmt) -> None:
        self.block(stmt.body)  # type: ignore[attr-defined]
        for handler in stmt.handlers:  # type: ignore[attr-defined]
            if handler.type is not None:
                self.expr(handler.type)
            self.block(handler.body)
            if handler.name:  # Python deletes the ``as`` name when the handler ends
                self.bound.pop(handler.name, None)
        self.block(stmt.orelse)  # type: ignore[attr-defined]
        self.block(stmt.finalbody)  # type: ignore[attr-defined]

    def definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *(k.value for k in node.keywords)]:
                self.expr(base)
        else:
            self.arguments(node.args)
            if node.returns is not None:
                self.expr(node.returns)
        free, global_binds = _free_names(node)
        for name in free:
            self.read(name)
        self.bind(node.name)
        for name in global_binds:
            self.bind(name)

    def arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.expr(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.expr(arg.annotation)

    def pattern(self, pattern: ast.pattern) -> None:
        """Bind a ``match`` pattern's captures in source order (``**rest`` comes last)."""
        for child in ast.iter_child_nodes(pattern):
            if isinstance(child, ast.pattern):
                self.pattern(child)
            elif isinstance(child, ast.expr):
                self.expr(child)
        name = getattr(pattern, "name", None) or getattr(pattern, "rest", None)
        if isinstance(name, str):
            self.bind(name)

    # ------------------------------------------------------------------ targets

    def target(self, target: ast.expr) -> None:
        """Bind a store target; an attribute or item target changes its base in place."""
        if isinstance(target, ast.Name):
            self.bind(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.target(element)
        elif isinstance(target, ast.Starred):
            self.target(target.value)
        else:  # Attribute or Subscript
            self.load_target(target)
            self.mutate(target)

    def load_target(self, target: ast.expr) -> None:
        """What evaluating a target reads (``x`` in ``x += 1``, ``d`` and ``k`` in ``d[k] = v``)."""
        if isinstance(target, ast.Name):
            self.read(target.id)
        elif isinstance(target, ast.Attribute):
            self.expr(target.value)
        elif isinstance(target, ast.Subscript):
            self.expr(target.value)
            self.expr(target.slice)

    def delete(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.read(target.id)
            self.bound.pop(target.id, None)
            self.deleted[target.id] = None
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.delete(element)
        else:
            self.load_target(target)
            self.mutate(target)

    def magic_code(self, source: str, binds: tuple[str, ...]) -> None:
        """The code a ``%time``/``%%time``/``%%capture`` magic runs in the notebook's namespace, as if inline."""
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython syntax inside the magic's code: what Python can read is all we see
            return
        self.block(tree.body)
        for name in binds:
            self.bind(name)

    # ------------------------------------------------------------------ expressions

    def expr(self, node: ast.expr) -> None:  # noqa: PLR0912 - one branch per expression kind
        """Record reads, walrus binds and in-place changes of an expression, in evaluation order."""
        if isinstance(node, ast.Name):
            self.read(node.id)
        elif isinstance(node, ast.NamedExpr):
            self.expr(node.value)
            self.bind(node.target.id)
        elif isinstance(node, ast.Lambda):
            self.arguments(node.args)
            for name in _free_names(node)[0]:
                self.read(name)
        elif isinstance(node, _Comprehension):
            self.comprehension(node)
        elif isinstance(node, ast.Call):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)
                elif isinstance(child, ast.keyword):
                    self.expr(child.value)
            if _mutates_receiver(node):
                self.mutate(node.func.value)  # type: ignore[attr-defined]
            code = _magic_code(node)
            if code is not None:
                self.magic_code(*code)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        """The first iterable runs at top level; the rest sees the loop variables, which stay local."""
        generators = node.generators
        self.expr(generators[0].iter)
        local = {
            n.id for c in ast.walk(node) if isinstance(c, ast.comprehension)
            for n in ast.walk(c.target) if isinstance(n, ast.Name)
        }  # fmt: skip
        parts: list[ast.AST] = [*(i for g in generators for i in g.ifs), *(g.iter for g in generators[1:])]
        parts += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        nested: list[_Scope] = []
        for part in parts:
            for sub in _walk_scope(part, nested):
                if isinstance(sub, ast.NamedExpr):  # := inside a comprehension binds at top level
                    self.bind(sub.target.id)
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in local:
                    self.read(sub.id)
        for scope in nested:
            for name in _free_names(scope)[0]:
                if name not in local:
                    self.read(name)


def _magic_code(call: ast.Call) -> tuple[str, tuple[str, ...]] | None:
    """``get_ipython().run_cell_magic('time', '', code)`` (what ``%%time`` becomes): the code and any bound name.

    Only the magics that run their code in the notebook's namespace count: ``%time``, ``%%time``
    and ``%%capture`` (whose line names a variable it binds); ``%timeit`` runs the code in a
    function of its own and binds nothing.
    """
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("run_cell_magic", "run_line_magic")):
        return None
    if not (isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name)):
        return None
    if func.value.func.id != "get_ipython" or call.keywords:
        return None
    args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in call.args]
    if func.attr == "run_line_magic" and len(args) == 2 and args[0] == "time" and args[1] is not None:
        return args[1], ()
    if func.attr == "run_cell_magic" and len(args) == 3 and args[0] in ("time", "capture") and args[2] is not None:
        bound: tuple[str, ...] = ()
        if args[0] == "capture" and args[1] is not None:
            bound = tuple(t for t in args[1].split() if not t.startswith("-") and t.isidentifier())[:1]
        return args[2], bound
    return None


def _mutates_receiver(call: ast.Call) -> bool:
    if not isinstance(call.func, ast.Attribute):
        return False
    if call.func.attr in MUTATING_METHODS:
        return True
    return any(
        k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def _free_names(scope: _Scope) -> tuple[list[str], list[str]]:  # noqa: PLR0912 - one branch per binding kind
    """Names a scope reads from module scope, and names it binds there.

    The second list holds names a function declares ``global`` and assigns: they are bound at top
    level once the function runs.
    """
    body: list[ast.AST] = [scope.body] if isinstance(scope, ast.Lambda) else list(scope.body)
    local: set[str] = set()
    if not isinstance(scope, ast.ClassDef):
        args = scope.args
        local |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
    declared_global: set[str] = set()
    loads: dict[str, None] = {}
    nested: list[_Scope] = []
    for root in body:
        for node in _walk_scope(root, nested):
            if isinstance(node, ast.Global):
                declared_global.update(node.names)
            elif isinstance(node, ast.Nonlocal):
                local.update(node.names)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                loads[node.target.id] = None
                local.add(node.target.id)
            elif isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    loads[node.id] = None
                else:
                    local.add(node.id)
            elif isinstance(node, ast.alias) and node.name != "*":
                local.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
                local.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                local.add(node.rest)
    for child in nested:
        local.add(getattr(child, "name", ""))
        loads.update(dict.fromkeys(_free_names(child)[0]))
    assigned_globals = [n for n in declared_global if n in local]
    free = [n for n in loads if n not in local or n in declared_global]
    return free, sorted(assigned_globals)


def _walk_scope(root: ast.AST, nested: list[_Scope]) -> list[ast.AST]:
    """Every node of one scope under ``root``.

    Nested function, lambda and class bodies are collected into ``nested``, not entered (their
    decorators, defaults and bases belong to this scope).
    """
    out: list[ast.AST] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            nested.append(node)
            if isinstance(node, ast.ClassDef):
                stack.extend([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
            else:
                args = node.args
                stack.extend([*args.defaults, *(d for d in args.kw_defaults if d is not None)])
                if not isinstance(node, ast.Lambda):
                    stack.extend(node.decorator_list)
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out
