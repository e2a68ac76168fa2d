"""Train one run (experiment, seed) again on train + val for the epochs it selected on val.

With one GPU or none it trains in this process; with more (resource ``gpu``), under torchrun on the
effective config written beside the run (``python -m softref.train --retrain``).
"""
from pathlib import Path

from softref.train import retrain
from softref.train.launch import launch_torchrun
from softref.workflow import rule_context, write_config

with rule_context(snakemake) as cfg:
    name, seed = snakemake.wildcards.experiment, int(snakemake.wildcards.seed)
    ex = cfg.experiments[name].with_seed(seed)
    inputs = snakemake.input
    out_dir = Path(snakemake.output.checkpoint).parent
    gpus = int(snakemake.resources.get("gpu", 0) or 0)
    if gpus > 1:
        config_path = write_config(snakemake.config, out_dir / "config.yaml")
        launch_torchrun(config_path, name, gpus, seed=seed, results=out_dir.parents[3], retrain=True)
    else:
        retrain(
            ex,
            cfg.students[ex.student],
            Path(inputs.selection),
            Path(cfg.datasets[ex.dataset].root),
            Path(inputs.images),
            Path(inputs.texts),
            [Path(p) for p in inputs.get("image_shards", [])],
            [Path(p) for p in inputs.get("text_shards", [])],
            out_dir,
            references=Path(inputs.references) if inputs.get("references") else None,
            neighbours=Path(inputs.neighbours) if inputs.get("neighbours") else None,
        )
