"""Teacher feature shards: HDF5 writer and reader, FeatureStore, validation, extraction.

Importing this package loads h5py and numpy only; the extraction functions (torch, PIL) are
imported on first use.
"""

from __future__ import annotations

from typing import Any

from softref.features.shards import ShardError, ShardWriter, read_shard_attrs
from softref.features.store import FeatureStore
from softref.features.validate import ShardReport, ValidationReport, validate_shards

__all__ = [
    "FeatureStore",
    "ShardError",
    "ShardReport",
    "ShardWriter",
    "ValidationReport",
    "extract_image_features",
    "extract_text_features",
    "read_shard_attrs",
    "validate_shards",
]


def __getattr__(name: str) -> Any:
    # torch is heavy: readers of shards (training workers, the CLI) need not import it.
    if name in ("extract_image_features", "extract_text_features"):
        from softref.features import extract

        return getattr(extract, name)
    raise AttributeError(f"module 'softref.features' has no attribute {name!r}")
