"""Build the per-identity teacher references of one (dataset, image teacher + text teacher), over the
split(s) the rule's params name (the config's references.split, or train + val for a retrain)."""
from pathlib import Path

from softref.references import build_references
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    inputs = snakemake.input
    build_references(
        Path(inputs.images),
        Path(inputs.texts),
        [Path(p) for p in inputs.image_shards],
        [Path(p) for p in inputs.text_shards],
        Path(snakemake.output[0]),
        split=snakemake.params.references["split"],
        on_missing=snakemake.params.references["on_missing"],
    )
