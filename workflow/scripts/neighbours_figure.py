"""Draw identities and their nearest identities by the teacher references (MMRef's neighbours)."""
from pathlib import Path

from softref.figures.build import neighbours_figure
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    neighbours_figure(cfg, snakemake.wildcards.table, neighbours=Path(snakemake.input.neighbours),
                      images=Path(snakemake.input.images), out=Path(snakemake.output[0]))
