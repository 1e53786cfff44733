"""What the benchmark scripts share: the machine record and writing a results file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def machine() -> dict:
    """The CPU count, processor and Python version, recorded beside every result."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}


def write_result(name: str, result: dict, default=float) -> Path:
    """Write ``result`` as benchmarks/results/<name>.json (``default``: json's fallback encoder)."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2, default=default) + "\n")
    return out
