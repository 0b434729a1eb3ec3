"""The machine facts that go with a wall time: benchmarks, demos and reproductions record them
beside their numbers (one copy, so every JSON names the same fields)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "machine_line"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str | None = None) -> dict[str, Any]:
    """CPU model, usable cores, load average, versions, torch threads and the GPU when one is used.

    Args:
        device: the device the timed work ran on (``cpu``, ``cuda``, ``cuda:1``, ``auto``); with a
            CUDA device the GPU's name and count are added.

    Returns:
        ``host``, ``cpu``, ``cores`` (this process's CPU affinity), ``load_avg`` (1 / 5 / 15 min),
        ``python``, ``torch``, ``torch_threads``, ``numpy``, ``faiss``, ``cuda`` (available) and,
        for a CUDA device, ``gpu`` and ``gpu_count``.
    """
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": _version("numpy"),
        "faiss": _version("faiss-cpu") or _version("faiss-gpu") or _version("faiss"),
        "cuda": torch.cuda.is_available(),
    }
    if device is not None and str(device) != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line for a log or a table caption: ``machine: <cpu>, 2 cores, load 1.3; torch 2.14.1, faiss 1.8``."""
    info = info if info is not None else machine_info()
    load = f"load {info['load_avg'][0]:.1f}" if info.get("load_avg") else "load unknown"
    gpu = f", GPU {info['gpu']} x{info['gpu_count']}" if info.get("gpu") else ""
    faiss = f", faiss {info['faiss']}" if info.get("faiss") else ""
    return f"machine: {info['host']} {info['cpu']}, {info['cores']} cores{gpu}, {load}; torch {info['torch']}{faiss}"
