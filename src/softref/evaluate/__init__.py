"""Evaluation: retrieval metrics and benchmark runners.

``softref.evaluate.metrics`` holds the metric functions; ``softref.evaluate.retrieval`` the
image-text protocol (``evaluate_image_text``, ``write_json``), imported on first use so that
importing the metrics stays light.
"""

from __future__ import annotations

from typing import Any

from softref.evaluate.metrics import cmc_map_minp, map_at_r, r_precision, recall_at_k

__all__ = ["recall_at_k", "map_at_r", "r_precision", "cmc_map_minp", "evaluate_image_text", "write_json"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate_image_text", "write_json"):
        from softref.evaluate import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module 'softref.evaluate' has no attribute {name!r}")
