"""Draw the run's benchmarks/ timings per rule and list every job's time and memory as HTML."""
from pathlib import Path

from softref.figures.build import timings_figures
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    timings_figures(cfg, Path("benchmarks"), figure=Path(snakemake.output.figure), html=Path(snakemake.output.html))
