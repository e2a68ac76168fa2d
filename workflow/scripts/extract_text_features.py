"""Extract one shard of text teacher features into HDF5."""
from pathlib import Path

from softref.features.extract import extract_text_features
from softref.teachers import load_teacher
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    w = snakemake.wildcards
    ds, feats = cfg.datasets[w.dataset], cfg.features
    extract_text_features(
        Path(snakemake.input.manifest),
        load_teacher(cfg.teachers[w.teacher]),
        Path(snakemake.output[0]),
        shard=int(w.shard),
        num_shards=ds.num_shards,
        batch_size=feats.text_batch_size,
        dtype=feats.dtype,
        splits=ds.feature_splits,
    )
