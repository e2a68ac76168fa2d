"""Run-time choices shared by every layer: whether progress bars show, which torch device to use.

Light on purpose: torch is imported only inside :func:`default_device`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["default_device", "gpu_memory_peak_mb", "host_memory_peak_mb", "prepend_path", "progress_disabled",
           "reset_gpu_memory_peak"]

_PACKAGE_LOGGER = logging.getLogger("softref")


def progress_disabled(logger: logging.Logger | None = None) -> bool:
    """tqdm bars are off under CI (environment variable ``CI`` set) and when ``logger`` (default:
    the ``softref`` logger) hides INFO, so bars follow the log level as sentence-transformers'."""
    log = _PACKAGE_LOGGER if logger is None else logger
    return bool(os.environ.get("CI")) or not log.isEnabledFor(logging.INFO)


def default_device(device: Any = None) -> Any:
    """``device`` as a ``torch.device``; None or ``"auto"`` picks CUDA when present, else the CPU."""
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prepend_path(value: str | None, path: str) -> str:
    """A search path (``PYTHONPATH``-style, ``os.pathsep``-separated) with ``path`` first, once."""
    rest = [p for p in (value or "").split(os.pathsep) if p and p != path]
    return os.pathsep.join([path, *rest])


def _peak_rss_kb(pid: int | str) -> int:
    """A process's peak resident set size (``VmHWM`` of /proc/<pid>/status), 0 where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return found


def host_memory_peak_mb() -> float:
    """Peak host memory of this process and its live children (e.g. DataLoader workers), in MiB:
    the sum of their peak resident sets (Linux /proc; elsewhere this process's ``ru_maxrss``).
    Shared pages count once per process, so this is an upper bound of the machine's peak."""
    main = _peak_rss_kb(os.getpid())
    if main == 0:
        import resource
        import sys

        # ru_maxrss is KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
    return (main + sum(_peak_rss_kb(c) for c in _children(os.getpid()))) / 1024


def reset_gpu_memory_peak(device: Any) -> None:
    """Start a new peak of the CUDA memory statistics (no-op off CUDA)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_memory_peak_mb(device: Any) -> float | None:
    """Peak CUDA memory allocated by tensors since the last reset, in MiB; None off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / (1 << 20)
