"""The machine facts that go with a wall time (benchmarks and demos print them beside their numbers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["hardware_info"]


def hardware_info() -> dict[str, Any]:
    """CPU model, cores, load average, torch version and threads: the facts that go with wall times."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
