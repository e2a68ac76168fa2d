"""Draw MMRef's refinement gallery for one table: a query's top-10 before and after refinement."""
from pathlib import Path

from softref.figures.build import refinement_figure
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    inputs = snakemake.input
    refinement_figure(cfg, snakemake.wildcards.table, embeddings=Path(inputs.embeddings), images=Path(inputs.images),
                      texts=Path(inputs.texts), out=Path(snakemake.output[0]))
