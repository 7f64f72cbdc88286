"""The arguments of ``%durable_run``, ``%%durable_step`` and ``%durable_panel``, defined once.

The magics decorate themselves from these definitions (so ``%durable_step?`` shows them) and
parse their lines with :func:`parse`; a headless run reads step and pipeline names from a
notebook's magic lines with the same function. One parser, so the two can never disagree about a
flag. An option that takes a list (``--exclude``, ``--outputs``, ``--retry-on``) may be given
several times and its values add up, comma-separated or not; an option that takes one value
(``--retries``, ``--run-id``) given twice is refused, never decided silently by the last one.
IPython's argument machinery (``IPython.core.magic_arguments``, which does not load the
magics themselves) is imported on first use, never when this module is imported.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a magic, as ``argparse.add_argument`` takes it."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


class _Repeated(Exception):  # private: parse() turns it into a UsageError
    """A single-valued option given a second time; ``parse`` words the error with the whole line."""

    def __init__(self, option: str, values: list[Any]) -> None:
        self.option = option
        self.values = values
        super().__init__(option, values)


class _Once(argparse.Action):
    """Store the option's value, refusing a second one: with ``store``, the last of two would win silently."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        seen: dict[str, Any] = namespace.__dict__.setdefault(_SEEN, {})
        if self.dest in seen:
            raise _Repeated(self.option_strings[0], [seen[self.dest], values])
        seen[self.dest] = values
        setattr(namespace, self.dest, values)


_SEEN = "_once_seen"  # where _Once remembers the options it stored; removed by parse()


def _once(*flags: str, **options: Any) -> Arg:
    """A single-valued option: given twice it is refused."""
    return Arg(flags, {"action": _Once, **options})


def _listed(*flags: str, **options: Any) -> Arg:
    """A comma-separated list that may be given several times; the values add up (None when never given)."""
    return Arg(flags, {"action": "append", "default": None, **options})


ARGUMENTS: dict[str, tuple[Arg, ...]] = {
    "durable_run": (
        _arg("pipeline", nargs="?", help="The pipeline's name, e.g. 'checkout'."),
        _arg("--new", action="store_true", help="Start a fresh run instead of resuming the latest one."),
        _once("--run-id", default=None, help="Join (or start) the run with this id, e.g. 'order-42'."),
        _once(
            "--fork",
            default=None,
            metavar="RUN",
            help="Start a new run from RUN: its steps before --from STEP restore from RUN's checkpoints.",
        ),
        _once(
            "--from", dest="from_step", default=None, metavar="STEP", help="With --fork: the first step that executes."
        ),
    ),
    "durable_step": (
        _arg("name", nargs="?", help="The step's name, unique within the run, e.g. 'load_data'."),
        _once("--retries", type=int, default=0, help="Attempts after the first when the cell raises."),
        _once(
            "--backoff", type=float, default=1.0, help="First delay between attempts in seconds; doubles, with jitter."
        ),
        _listed(
            "--retry-on",
            help="Exception classes worth another attempt, comma-separated or repeated (default: all).",
        ),
        _once("--timeout", type=float, default=None, help="Seconds one attempt may take before StepTimeout."),
        _listed(
            "--outputs",
            help="Variables to store: 'a,b' stores exactly these, '+a,+b' adds them to the detected ones (repeatable).",
        ),
        _listed("--exclude", help="Variables not to store (connections, generators), comma-separated or repeated."),
        _arg(
            "--force",
            action="store_true",
            help="Execute even when a checkpoint could be restored (not an effect step).",
        ),
        _arg(
            "--effect",
            action="store_true",
            help="The step has side effects: once completed it never runs again unless asked with --rerun.",
        ),
        _arg(
            "--rerun",
            action="store_true",
            help="Run a completed step again, even an effect step (with a new idempotency key), once.",
        ),
        _arg(
            "--depends-on",
            action="append",
            default=[],
            metavar="PATH",
            help="A file the step reads; a change of its content makes the step run again (repeatable).",
        ),
        _arg(
            "--no-inplace-check",
            action="store_true",
            help="Do not fingerprint what the step reads to find objects it changes in place (saves the time).",
        ),
    ),
    "durable_panel": (
        _arg("run_id", nargs="?", default=None, help="The run to show (default: the kernel's current run)."),
    ),
}

_parsers: dict[str, Any] = {}


def arguments(magic: str) -> Callable[[F], F]:
    """Decorate the magic method ``magic`` with its arguments, for IPython's help (``%durable_step?``)."""
    from IPython.core.magic_arguments import argument, magic_arguments

    def decorate(fn: F) -> F:
        for arg in reversed(ARGUMENTS[magic]):  # decorators apply bottom-up; IPython reverses them again
            fn = argument(*arg.flags, **arg.options)(fn)
        return magic_arguments()(fn)  # type: ignore[no-any-return]

    return decorate


def parse(magic: str, line: str) -> argparse.Namespace:
    """The arguments of one magic line; raises IPython's ``UsageError`` naming what is wrong."""
    from IPython.core.error import UsageError

    parser = _parsers.get(magic)
    if parser is None:
        from IPython.core.magic_arguments import MagicArgumentParser

        parser = MagicArgumentParser(prog=magic)
        for arg in ARGUMENTS[magic]:
            parser.add_argument(*arg.flags, **arg.options)
        _parsers[magic] = parser
    prefix = "%%" if magic == "durable_step" else "%"
    try:
        args: argparse.Namespace = parser.parse_argstring(line)
    except _Repeated as exc:
        raise UsageError(_repeated_text(f"{prefix}{magic} {line.strip()}", exc)) from None
    except ValueError as exc:  # shlex: "No closing quotation", "No escaped character"
        raise UsageError(
            f"{prefix}{magic} {line.strip()}: the line cannot be split into arguments ({exc}). Close the quote, "
            f"or leave quotes out: names and options need none."
        ) from None
    except UsageError:
        spaced = _name_with_spaces(magic, line)
        if spaced is None:
            raise
        kind, words, rest = spaced
        fixed = " ".join(["_".join(words), *rest])
        raise UsageError(
            f"{prefix}{magic} {line.strip()}: a {kind} name cannot contain spaces. "
            f"Join the words, for example '{prefix}{magic} {fixed}'."
        ) from None
    vars(args).pop(_SEEN, None)
    return args


def _repeated_text(line: str, exc: _Repeated) -> str:
    """What was wrong (which option, which values), that nothing happened, and the line's fix."""
    first, second = (f"{v:g}" if isinstance(v, float) else str(v) for v in exc.values)
    given = f"twice ({first} and {second})" if first != second else f"twice (both {first})"
    return (
        f"{line}: {exc.option} was given {given}, but it takes one value; resumable does not pick one for you. "
        f"The line was refused before anything ran: nothing was started or stored, and completed steps and their "
        f"checkpoints are intact. Give {exc.option} once, for example '{exc.option} {second}'."
    )


_NAMED = {"durable_step": "step", "durable_run": "pipeline"}  # the magics whose first word is a name


def _name_with_spaces(magic: str, line: str) -> tuple[str, list[str], list[str]] | None:
    """``('step', ['my', 'step'], ['--retries', '2'])`` when several words come before any option.

    argparse would call the second word an "unrecognized argument", which does not say that the
    user meant one name.
    """
    kind = _NAMED.get(magic)
    if kind is None:
        return None
    tokens = line.split()
    words = [t for t in itertools.takewhile(lambda t: not t.startswith("-"), tokens)]
    return (kind, words, tokens[len(words) :]) if len(words) > 1 else None
