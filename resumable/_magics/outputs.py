"""A step cell's outputs: ``--outputs``/``--exclude``, the values to store, and the source digest."""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError

from resumable import _cellast, _keys
from resumable._magics.functions import NotebookFunction
from resumable._secrets import looks_secret
from resumable.errors import SecretNotStoredWarning, StepDefinitionError


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What ``--outputs`` and ``--exclude`` say about a step's outputs."""

    exact: tuple[str, ...] | None  # ``--outputs a,b``: exactly these
    added: tuple[str, ...]  # ``--outputs +a,+b``: these besides the detected ones
    excluded: tuple[str, ...]


def _names(option: str, raw: list[str] | None, *, allow_plus: bool) -> list[str]:
    """Split each ``a,b`` (or ``+a,+b``) the option was given into identifiers; anything else is a UsageError.

    The option may be given several times: ``--exclude a --exclude b`` is ``--exclude a,b``.
    """
    if raw is None:
        return []
    names = [part.strip() for given in raw for part in given.split(",") if part.strip()]
    for name in names:
        bare = name[1:] if allow_plus and name.startswith("+") else name
        if not bare.isidentifier():
            msg = f"{option} takes variable names separated by commas (e.g. '{option} model,scores'), not {name!r}."
            raise UsageError(msg)
    return names


def parse_output_spec(outputs: list[str] | None, exclude: list[str] | None) -> OutputSpec:
    """Read ``--outputs`` and ``--exclude``, each as often as it was given."""
    listed = _names("--outputs", outputs, allow_plus=True)
    plus = [n for n in listed if n.startswith("+")]
    if plus and len(plus) != len(listed):
        msg = (
            "--outputs either lists the outputs exactly ('--outputs a,b') or adds to the detected ones "
            "('--outputs +a,+b'); do not mix the two forms."
        )
        raise UsageError(msg)
    excluded = tuple(_names("--exclude", exclude, allow_plus=False))
    if plus:
        return OutputSpec(None, tuple(n[1:] for n in plus), excluded)
    return OutputSpec(tuple(listed) if outputs is not None else None, (), excluded)


def collect_outputs(
    step: str, names: _cellast.CellNames, spec: OutputSpec, namespace: dict[str, Any]
) -> dict[str, Any]:
    """The values to store after the cell ran, each under its own name.

    Detected names the cell did not end up binding (a branch not taken) are skipped; a name given
    with ``--outputs`` must exist. A detected name that looks like a secret (``_secrets``) is left
    out unless ``--outputs`` names it, and the user is told once. Modules a cell merely used
    (``sys.path.append``) are not stored.
    """
    explicit = spec.exact if spec.exact is not None else spec.added
    if spec.exact is not None:
        chosen = list(spec.exact)
    else:
        chosen = list(dict.fromkeys([*names.binds, *names.mutates, *spec.added]))
    outputs: dict[str, Any] = {}
    secrets: list[str] = []
    for name in chosen:
        if name in spec.excluded:
            continue
        if name not in namespace:
            if name in explicit:
                expected = f"no variable '{name}' exists after the cell ran: bind it in the cell or leave it out"
                raise StepDefinitionError("--outputs", name, expected, step)
            continue
        value = namespace[name]
        if name not in names.binds and name not in explicit and isinstance(value, types.ModuleType):
            continue
        if name not in explicit and looks_secret(name):
            secrets.append(name)
            continue
        outputs[name] = NotebookFunction.wrap(value, namespace)
    if secrets:
        _tell_once(step, tuple(secrets))
    return outputs


def withhold_secrets(step: str, spec: OutputSpec, names: list[str]) -> set[str]:
    """The secret-looking ones among ``names`` a step would store beyond what it bound.

    Those are variables it changed in place or that share memory with an output. Unless
    ``--outputs`` names them they are left out like bound ones, and the user is told once.
    """
    explicit = spec.exact if spec.exact is not None else spec.added
    withheld = {n for n in names if n not in explicit and looks_secret(n)}
    if withheld:
        _tell_once(step, tuple(sorted(withheld)))
    return withheld


_told: set[tuple[str, tuple[str, ...]]] = set()


def _tell_once(step: str, names: tuple[str, ...]) -> None:
    """Warn about left-out secrets once per step and set of names in this process, not on every attempt."""
    if (step, names) in _told:
        return
    _told.add((step, names))
    warnings.warn(SecretNotStoredWarning(step, names), stacklevel=4)


def normalized(source: str) -> str:
    """The cell as compared for edits: trailing spaces and surrounding blank lines do not count."""
    return "\n".join(line.rstrip() for line in source.strip("\n").splitlines()).strip("\n")


def source_digest(body: str, spec: OutputSpec) -> str:
    """Digest of what decides a step's result: its code and which variables it stores.

    Retry, backoff and timeout options are left out: changing them does not change the result.
    """
    parts = [normalized(body), f"outputs={spec.exact}", f"added={sorted(spec.added)}"]
    parts.append(f"excluded={sorted(spec.excluded)}")
    return _keys.source_digest("\x00".join(parts))
