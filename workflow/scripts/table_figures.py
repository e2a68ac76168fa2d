"""Draw a table's numbers and its experiments' training curves; render its Markdown as HTML."""
from pathlib import Path

from softref import paths
from softref.figures.build import table_figures
from softref.workflow import rule_context

with rule_context(snakemake, torch_threads=False) as cfg:
    table = snakemake.wildcards.table
    logs = {e: [Path(paths.TRAIN_LOG.format(experiment=e, seed=s)) for s in cfg.experiments[e].run_seeds]
            for e in cfg.tables[table].experiments}
    out = snakemake.output
    table_figures(cfg, table, csv=Path(snakemake.input.csv), md=Path(snakemake.input.md), logs=logs,
                  values=Path(out.values), curves=Path(out.curves), html=Path(out.html))
