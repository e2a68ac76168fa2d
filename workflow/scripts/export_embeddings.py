"""Encode one split of a dataset with a trained student and keep the embeddings for the figures."""
from pathlib import Path

from softref.figures.embeddings import write_embeddings
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    dataset = snakemake.wildcards.dataset
    write_embeddings(
        Path(snakemake.input.checkpoint),
        dataset_root=Path(cfg.datasets[dataset].root),
        images_manifest=Path(snakemake.input.images),
        texts_manifest=Path(snakemake.input.texts),
        split=snakemake.wildcards.split,
        dataset=dataset,
        out=Path(snakemake.output[0]),
        batch_size=cfg.evaluation.batch_size,
        num_workers=cfg.evaluation.num_workers,
    )
