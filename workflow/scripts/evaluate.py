"""Evaluate one trained student (a run) on every benchmark its tables show, and write the run's
``eval/`` folder: a JSON of metrics per benchmark. The student is loaded once and each split
encoded once (:class:`~softref.evaluate.benchmarks.EvaluationSession`); the folder appears whole
when every benchmark is done, or not at all."""
from pathlib import Path

from softref import paths
from softref.evaluate.benchmarks import EvaluationSession, evaluate_benchmark
from softref.evaluate.retrieval import write_json
from softref.files import atomic_path
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    ex = cfg.experiments[snakemake.wildcards.experiment]
    names = list(snakemake.params.evaluation["benchmarks"])
    checkpoint = Path(snakemake.input.checkpoint)
    session = EvaluationSession(checkpoint)
    train_log = Path(snakemake.input.train_log) if snakemake.input.get("train_log") else None
    with atomic_path(Path(snakemake.output[0])) as folder:
        folder.mkdir()
        for name in names:
            bm = cfg.benchmarks[name]
            root = Path(cfg.datasets[bm.dataset].root)
            manifest = {kind: paths.manifest(bm.dataset, kind) for kind in ("images", "texts", "positives", "pairs")}
            result = evaluate_benchmark(
                checkpoint,
                protocol=bm.protocol,
                dataset_root=root,
                images_manifest=manifest["images"],
                texts_manifest=manifest["texts"],
                split=bm.split,
                benchmark=bm.name,
                dataset=bm.dataset,
                paper_dataset=bm.paper_dataset,
                options=dict(bm.options),
                refine=bm.refine if ex.refines() and bm.protocol == "person" else None,
                positives=manifest["positives"],
                pairs=manifest["pairs"],
                train_log=train_log if bm.protocol == "training-cost" else None,
                batch_size=cfg.evaluation.batch_size,
                num_workers=cfg.evaluation.num_workers,
                uni_features=ex.uni_features,
                session=session,
            )
            write_json({"experiment": snakemake.wildcards.experiment, **result}, folder / f"{name}.json")
