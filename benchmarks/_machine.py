"""Machine facts every benchmark prints beside its figures, so numbers can be compared honestly.

Use from a benchmark script (run as `python benchmarks/x.py` or `python -m benchmarks.x`):

    from benchmarks._machine import print_header   # or: from _machine import print_header
    print_header("lake commit cost")
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

KEY_PACKAGES: tuple[str, ...] = (
    "shironzi",
    "deltalake",
    "pyarrow",
    "polars",
    "duckdb",
    "sqlalchemy",
    "pyspark",
    "pysail",
    "xgboost",
    "mlflow",
    "fastapi",
    "dbt-core",
    "dbt-duckdb",
    "confluent-kafka",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1024 * 1024), 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape benchmark figures (missing ones left out)."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine_info() -> dict[str, Any]:
    """Hostname, platform, Python, CPU model, cores, memory (GiB) and key package versions."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": _usable_cores(),
        "memory_gib": _memory_gib(),
        "packages": package_versions(),
    }


def print_header(title: str, *, file: Any = None) -> dict[str, Any]:
    """Print a benchmark's title and the machine facts; returns the facts for JSON output."""
    out = file or sys.stdout
    info = machine_info()
    print(f"== {title} ==", file=out)
    print(f"host       {info['hostname']}  ({info['platform']})", file=out)
    print(f"python     {info['python']}", file=out)
    print(f"cpu        {info['cpu_model']}  cores={info['cores']} usable={info['usable_cores']}", file=out)
    print(f"memory     {info['memory_gib']} GiB", file=out)
    pkgs = "  ".join(f"{k}={v}" for k, v in info["packages"].items())
    print(f"packages   {pkgs}", file=out)
    print("", file=out, flush=True)
    return info


if __name__ == "__main__":
    print_header("machine")
