"""Draw one experiment's training curves (every seed) from its train logs."""
from pathlib import Path

from softref.figures.build import run_curves_figure
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    run_curves_figure(cfg, snakemake.wildcards.experiment, [Path(p) for p in snakemake.input],
                      Path(snakemake.output[0]))
