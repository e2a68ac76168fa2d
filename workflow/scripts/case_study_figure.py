"""Draw CUSA's Figure 5 for one table: the case study of the baseline against the compared method."""
from pathlib import Path

from softref.figures.build import case_study_figure
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    inputs = snakemake.input
    case_study_figure(cfg, snakemake.wildcards.table, baseline=Path(inputs.baseline), other=Path(inputs.other),
                      images=Path(inputs.images), texts=Path(inputs.texts), out=Path(snakemake.output[0]))
