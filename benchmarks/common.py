"""Helpers shared by the benchmarks: timing, machine description, tiny real datasets."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"
    )


def rate(fn, units: int, min_seconds: float = 3.0) -> float:
    """Units per second of `fn` (which processes `units` per call), after one warm-up call."""
    fn()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds:
        fn()
        count += units
    return count / (time.perf_counter() - start)
