"""Build one table (long CSV + wide Markdown) from its evaluation JSONs; its kind picks the layout."""
from pathlib import Path

from softref.tables import build_config_table
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    build_config_table(cfg, snakemake.wildcards.table, Path(snakemake.output.csv), Path(snakemake.output.md))
