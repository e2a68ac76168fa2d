"""Evaluate one trained student on one benchmark and write its metrics as JSON."""
from pathlib import Path

from softref.evaluate.retrieval import evaluate_image_text, write_json
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    bm = cfg.benchmarks[snakemake.wildcards.benchmark]
    result = evaluate_image_text(
        Path(snakemake.input.checkpoint),
        Path(cfg.datasets[bm.dataset].root),
        Path(snakemake.input.images),
        Path(snakemake.input.texts),
        bm.split,
        benchmark=bm.name,
    )
    write_json({"experiment": snakemake.wildcards.experiment, "dataset": bm.dataset, **result}, Path(snakemake.output[0]))
