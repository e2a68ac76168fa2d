"""Run-time choices shared by every layer: whether progress bars show, which torch device to use.

Light on purpose: torch is imported only inside :func:`default_device`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["default_device", "prepend_path", "progress_disabled"]

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
