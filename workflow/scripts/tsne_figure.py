"""Draw CUSA's Figure 4 for one table: t-SNE of test embeddings without and with USA."""
from pathlib import Path

from softref.figures.build import tsne_figure
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    inputs = snakemake.input
    tsne_figure(cfg, snakemake.wildcards.table, baseline=Path(inputs.baseline), other=Path(inputs.other),
                images=Path(inputs.images), texts=Path(inputs.texts), out=Path(snakemake.output[0]))
