"""What a result was measured with: library versions and the machine."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

LIBRARIES = ("robustbench-lite", "torch", "torchvision", "numpy")


def versions() -> dict[str, str]:
    """{library: version} of `LIBRARIES` ('none' when not installed) and Python."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "none"
    return {**found, "python": platform.python_version()}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
