"""Train one experiment of a config outside Snakemake, e.g. on several GPUs under torchrun.

    torchrun --standalone --nproc_per_node 4 -m softref.train --config configs/cusa-coco-vitb32.yaml \\
        --experiment cusa-coco-vitb32-cusa

It reads the artifacts the DAG made (``results/data/{dataset}/*.parquet`` and the teachers'
``results/features/{dataset}/{teacher}/*.h5``) and writes ``results/runs/{experiment}/seed-{seed}/`` as the
``train`` rule does, so a Snakemake run afterwards finds the checkpoint and goes on from there.
With ``--retrain`` it does what the ``retrain`` rule does: train again on train + val for the
epochs the experiment's finished run selected, into ``results/runs/{experiment}/trainval/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from softref.config import ConfigError, read_config


def _error(err: Exception) -> int:
    print(f"softref.train: error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softref.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml", help="config YAML (default: config.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name (a key of experiments)")
    parser.add_argument("--seed", type=int, default=None,
                        help="which of the experiment's seeds to train (default: its first, or its only one)")
    parser.add_argument("--results", default="results", help="the DAG's results folder (default: results)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    parser.add_argument("--retrain", action="store_true",
                        help="retrain on train + val for the epochs the finished run selected (rule retrain)")
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")

    from softref.train.inputs import run_inputs

    # The config and the experiment first: their errors come before the trainer's imports (torch,
    # open_clip), which take seconds.
    try:
        cfg = read_config(args.config)
        if args.experiment not in cfg.experiments:
            raise ConfigError(f"{args.config}: no experiment {args.experiment!r}; defined: {sorted(cfg.experiments)}")
        seed = cfg.experiments[args.experiment].run_seeds[0] if args.seed is None else args.seed
        ex = cfg.experiments[args.experiment].with_seed(seed)
        paths = run_inputs(cfg, args.experiment, seed, Path(args.results), retrain=args.retrain)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        return _error(err)

    from softref.train.trainer import retrain, train

    # A retrain takes the selection run's checkpoint first, then what train takes.
    run, first = (retrain, (paths.selection,)) if args.retrain else (train, ())
    try:
        result = run(
            ex,
            cfg.students[ex.student],
            *first,
            paths.dataset_root,
            paths.images_manifest,
            paths.texts_manifest,
            paths.image_shards,
            paths.text_shards,
            paths.out_dir,
            references=paths.references,
            neighbours=paths.neighbours,
            device=args.device,
            teachers=cfg.teachers,
        )
    except (ConfigError, FileNotFoundError, ValueError) as err:
        return _error(err)
    logging.getLogger("softref").info("done: %s", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
