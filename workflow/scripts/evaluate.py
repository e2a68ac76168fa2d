"""Evaluate one trained student on one benchmark (its protocol) and write its metrics as JSON."""
from pathlib import Path

from softref.evaluate.benchmarks import evaluate_benchmark
from softref.evaluate.retrieval import write_json
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    bm = cfg.benchmarks[snakemake.wildcards.benchmark]
    ex = cfg.experiments[snakemake.wildcards.experiment]
    result = evaluate_benchmark(
        Path(snakemake.input.checkpoint),
        protocol=bm.protocol,
        dataset_root=Path(cfg.datasets[bm.dataset].root),
        images_manifest=Path(snakemake.input.images),
        texts_manifest=Path(snakemake.input.texts),
        split=bm.split,
        benchmark=bm.name,
        dataset=bm.dataset,
        paper_dataset=bm.paper_dataset,
        options=dict(bm.options),
        refine=bm.refine if ex.refines() and bm.protocol == "person" else None,
        positives=Path(snakemake.input.positives),
        pairs=Path(snakemake.input.pairs),
        train_log=Path(snakemake.input.train_log) if snakemake.input.get("train_log") else None,
        batch_size=cfg.evaluation.batch_size,
        num_workers=cfg.evaluation.num_workers,
        uni_features=ex.uni_features,
    )
    write_json({"experiment": snakemake.wildcards.experiment, **result}, Path(snakemake.output[0]))
