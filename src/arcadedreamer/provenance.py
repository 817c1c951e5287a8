"""Where a result came from: the code's commit, the machine and the library versions.

Why: the same recipe gives bit-identical numbers only on the same CPU type with the same
versions (docs/reproducibility.md); a figure that does not say where it was made cannot be
compared with another. MLflow runs and the files under results/ carry these.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

# what `git status` looks at: the whole checkout but a run's settings files
CODE_PATHSPECS = (":(top)", ":(top,exclude)params.yaml", ":(top,exclude)dvc.lock")


def git_state(cwd: str | Path | None = None) -> dict[str, object]:
    """{"commit": the HEAD commit or "unknown", "dirty": whether tracked files differ from it (None
    when unknown)} of the checkout at `cwd`, by default the one this package's code runs from.
    A run's settings (params.yaml, and dvc.lock that records them) are left out: a DVC experiment
    writes its `-S` values there, and every run logs them on its own."""
    cwd = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHSPECS)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


@functools.lru_cache(maxsize=1)
def _first_cpu() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (Linux), else {}."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # every processor repeats them
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return {}
    return fields


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    return _first_cpu().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_id() -> str | None:
    """The CPU's family, model and stepping (Linux /proc/cpuinfo), else None. Hosts sold under
    one model name ("AMD EPYC") differ here, and so do their numbers."""
    fields = _first_cpu()
    if not {"cpu family", "model", "stepping"} <= fields.keys():
        return None
    return f"family {fields['cpu family']} model {fields['model']} stepping {fields['stepping']}"


def machine() -> dict[str, object]:
    """The CPU (its name, family and model, the kernels torch picked for it), its cores, torch's
    threads, and the GPU when one is used."""
    import torch

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "os": f"{platform.system()} {platform.release()}",
    }
    if cpu_id():
        info["cpu_id"] = cpu_id()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    """The versions that decide the numbers: Python, torch, numpy, ale-py, gymnasium, the package."""
    import ale_py
    import gymnasium
    import numpy
    import torch

    import arcadedreamer

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ale_py": ale_py.__version__,
        "gymnasium": gymnasium.__version__,
        "arcadedreamer": arcadedreamer.__version__,
    }
