"""Names, run ids and idempotency keys: pure functions of their inputs."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import PurePath

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
NAME_RULE = "1 to 128 letters, digits, '_', '-' or '.', not starting with '-' or '.'"


def is_valid_name(name: object) -> bool:
    """Whether ``name`` may name a pipeline, a run or a step."""
    return isinstance(name, str) and _NAME.match(name) is not None


DEFAULT_PIPELINE = "default"
EXECUTED_SUFFIX = ".resumable.ipynb"  # the executed copy a headless run writes beside the notebook


def notebook_pipeline(filename: str) -> str | None:
    """The pipeline named after a notebook file, or None when nothing usable is left of its name.

    The one rule both front ends use (the magics from the name the front end reports, a headless
    run from the path it was given): the file's stem, made valid. ``sales.v2.ipynb`` is ``sales.v2``;
    the executed copy ``sales.resumable.ipynb`` belongs to the notebook it was made from, ``sales``.
    """
    name = PurePath(filename).name
    stem = name[: -len(EXECUTED_SUFFIX)] if name.endswith(EXECUTED_SUFFIX) else PurePath(name).stem
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("-.")[:128]
    return cleaned if is_valid_name(cleaned) else None


def new_run_id() -> str:
    """A fresh run id that sorts by creation time: ``20261125-004350-a1b2c3``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def idempotency_key(pipeline: str, run_id: str, step: str, scope: str | None, generation: int = 1) -> str:
    """A token stable across retries, crashes and edits of the step, distinct between runs and steps.

    A deliberate rerun of a completed effect step asks for the next ``generation``: a new token. The
    first generation's token is the one earlier versions gave, so upgrading changes no key.
    """
    parts = (pipeline, run_id, step, scope or "") + ((f"generation {generation}",) if generation > 1 else ())
    material = "\x00".join(parts)
    return "rsm_" + hashlib.sha256(material.encode()).hexdigest()[:40]


def source_digest(source: str) -> str:
    """The digest that tells an edited cell from an unchanged one."""
    return hashlib.sha256(source.encode()).hexdigest()[:32]


def is_pseudo_output(name: str) -> bool:
    """Whether a stored name is one a notebook step keeps beside its variables (``<state>``, ``<shared>``).

    No variable can be named so; the store keeps them with the step's outputs, and everything a
    user sees (``load``, ``show``, the completion read-back) leaves them out.
    """
    return name.startswith("<")
