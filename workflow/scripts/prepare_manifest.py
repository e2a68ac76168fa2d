"""Turn one dataset's raw annotations into images.parquet and texts.parquet."""
from pathlib import Path

from softref.data.adapters import prepare
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    ds = cfg.datasets[snakemake.wildcards.dataset]
    prepare(
        ds.format,
        Path(ds.root),
        Path(snakemake.output.images).parent,
        annotations=ds.annotations,
        skip_missing=ds.skip_missing,
        **ds.options,
    )
