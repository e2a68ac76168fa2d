"""The names softref knows, each defined once: methods, their loss terms, protocols, table kinds.

This module imports nothing, so the config check, the Snakemake rules (at parse time), the
schema test and the code all read the same lists without loading torch. Adding a method, a
protocol or a table kind starts here; the schema's enums are checked against these tuples by
``tests/test_single_sources.py``.
"""

from __future__ import annotations

__all__ = [
    "AUGMENTATIONS",
    "CUSA_TERMS",
    "METHODS",
    "METHOD_FAMILIES",
    "PROTOCOLS",
    "PROTOCOL_OPTIONS",
    "RETRAIN_SPLITS",
    "SPLITS",
    "TEACHER_FEATURE_SOURCES",
    "TABLE_KINDS",
    "TABLE_PROTOCOLS",
    "TAU_MODES",
]

#: Training objectives of the CUSA ablation (paper Table 5): which terms enter each total.
CUSA_TERMS: dict[str, tuple[str, ...]] = {
    "base": ("itr",),
    "csa": ("itr", "csa"),
    "usa": ("itr", "usa"),
    "cusa": ("itr", "csa", "usa"),
}

#: Each method and the family (a module under softref.train.methods) that trains it.
METHOD_FAMILIES: dict[str, str] = {**{m: "cusa" for m in CUSA_TERMS}, "mmref": "mmref"}

#: Every training method an experiment may name.
METHODS: tuple[str, ...] = tuple(METHOD_FAMILIES)

#: Evaluation protocols (softref.evaluate.benchmarks) and the option keys each accepts.
PROTOCOL_OPTIONS: dict[str, tuple[str, ...]] = {
    "image-text": (),
    "eccv": ("relevance", "eccv_dir"),
    "image-retrieval": ("mode",),
    "sts": (),
    "person": (),
    "zero-shot": ("k",),
    "training-cost": (),
}
PROTOCOLS: tuple[str, ...] = tuple(PROTOCOL_OPTIONS)

#: Where a CUSA run's teacher features come from, per modality: HDF5 shards or the teacher run online.
TEACHER_FEATURE_SOURCES: tuple[str, ...] = ("shards", "online")

#: Training-image augmentations of the student (softref.train.augment): none (the public CUSA
#: code's choice) or reid (IRRA's: flip, pad and random crop, random erasing).
AUGMENTATIONS: tuple[str, ...] = ("none", "reid")

#: How the contrastive temperature behaves: learned (clamped to its range) or fixed (IRRA's 0.02).
TAU_MODES: tuple[str, ...] = ("learned", "fixed")

#: Manifest splits.
SPLITS: tuple[str, ...] = ("train", "val", "test", "query", "gallery")

#: The splits a retrain on train + val trains on (``experiments.<name>.retrain_on_trainval``) and its
#: teacher references cover.
RETRAIN_SPLITS: tuple[str, ...] = ("train", "val")

#: Table kinds (softref.tables.kinds) and the evaluation protocols each reads.
TABLE_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "retrieval": ("image-text",),
    "eccv": ("eccv",),
    "image-retrieval": ("image-retrieval",),
    "sts": ("sts",),
    "ablation": ("image-text", "eccv", "image-retrieval", "sts"),
    "person": ("person",),
    "zero-shot": ("zero-shot",),
    "mmref-ablation": ("person",),
    "resources": ("training-cost",),
    "cross-domain": ("person",),
}
TABLE_KINDS: tuple[str, ...] = tuple(TABLE_PROTOCOLS)
