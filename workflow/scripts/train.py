"""Train one experiment's student (resumes from last.pt when a previous job was killed)."""
from pathlib import Path

from softref.train.trainer import train
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    ex = cfg.experiments[snakemake.wildcards.experiment]
    train(
        ex,
        cfg.students[ex.student],
        Path(cfg.datasets[ex.dataset].root),
        Path(snakemake.input.images),
        Path(snakemake.input.texts),
        [Path(p) for p in snakemake.input.get("image_shards", [])],
        [Path(p) for p in snakemake.input.get("text_shards", [])],
        Path(snakemake.output.checkpoint).parent,
    )
