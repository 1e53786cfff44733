"""What the benchmark scripts share: the machine record and writing a results file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def version(package: str) -> str | None:
    """An installed package's version (without importing it), or None."""
    try:
        from importlib.metadata import version as _version
        return _version(package)
    except Exception:
        return None


def cpu_model() -> str | None:
    """The processor's name ("model name" of /proc/cpuinfo, e.g. "AMD EPYC 7B13"), else what
    ``platform`` knows: figures from two machines must say which is which."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def machine() -> dict:
    """The CPUs this process may use, the processor, and the Python, torch and pycolmap versions,
    recorded beside every result."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"cpus": cpus, "cpu_model": cpu_model(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": version("torch"), "pycolmap": version("pycolmap")}


def write_result(name: str, result: dict, default=float, path: Path | None = None) -> Path:
    """Write ``result`` as benchmarks/results/<name>.json, or to ``path`` when given (``default``:
    json's fallback encoder). The folder is made if needed."""
    out = Path(path) if path is not None else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=default) + "\n")
    return out
