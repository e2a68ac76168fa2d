"""Dataset manifests, the adapters that write them, and the synthetic demo benchmark."""

from softref.data.adapters import FORMATS, PrepareResult, prepare
from softref.data.manifest import (
    IMAGE_COLUMNS,
    PAIR_COLUMNS,
    POSITIVE_COLUMNS,
    TEXT_COLUMNS,
    ManifestError,
    file_sha256,
    read_images,
    read_pairs,
    read_positives,
    read_texts,
    shard_rows,
    validate_pair,
    write_manifest,
    write_pairs,
    write_positives,
)
from softref.data.synthetic import synthesize_demo

__all__ = [
    "FORMATS",
    "IMAGE_COLUMNS",
    "PAIR_COLUMNS",
    "POSITIVE_COLUMNS",
    "TEXT_COLUMNS",
    "ManifestError",
    "PrepareResult",
    "file_sha256",
    "prepare",
    "read_images",
    "read_pairs",
    "read_positives",
    "read_texts",
    "shard_rows",
    "synthesize_demo",
    "validate_pair",
    "write_manifest",
    "write_pairs",
    "write_positives",
]
