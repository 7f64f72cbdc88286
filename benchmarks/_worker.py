"""Entry point of a benchmark subprocess: ``python -m benchmarks._worker MODULE FUNC JSON_ARGS``."""

from __future__ import annotations

import importlib
import json
import sys

from benchmarks._util import RESULT_PREFIX


def main() -> None:
    module, func, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    fn = getattr(importlib.import_module(f"benchmarks.{module}"), func)
    result = fn(**json.loads(raw))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
