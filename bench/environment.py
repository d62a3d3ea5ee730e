"""What a result was measured with: library versions and the machine."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("robustbench-lite", "torch", "torchvision", "numpy")
# optional libraries by import name: their versions are recorded when a run imported them
OPTIONAL = {"pyautoattack": "pyautoattack", "imagecorruptions": "imagecorruptions-imaug",
            "torchattacks": "torchattacks", "cv2": "opencv-python", "skimage": "scikit-image",
            "timm": "timm", "robustbench": "robustbench", "submitit": "submitit", "ray": "ray"}


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


def gpu_model() -> str | None:
    """The CUDA device's name, when torch is loaded and sees one."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name()


def optional_versions() -> dict[str, str]:
    """{distribution: version} of the optional libraries this process has imported."""
    found = {}
    for module, dist in OPTIONAL.items():
        if module in sys.modules:
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                found[dist] = "unknown"
    return found


def git_state(folder: Path | None = None) -> dict[str, object] | None:
    """{"commit", "dirty"} of the checkout this package runs from; None outside a git checkout."""
    folder = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance() -> dict[str, object]:
    """What a run's sidecar records about where it ran."""
    return {"versions": {**versions(), **optional_versions()}, "cpu": cpu_model(),
            "gpu": gpu_model(), "platform": platform.platform(), "git": git_state()}
