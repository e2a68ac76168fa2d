"""Launch one experiment's training on N processes with torchrun, from the package itself.

The ``train`` rule calls :func:`launch_torchrun` when its job was granted more than one GPU.
The children run ``python -m softref.train`` on the run's effective config. They must import
the same softref as the parent, also where softref is not installed (``--sdm conda`` builds an
environment of the dependencies only): :func:`package_environment` puts the folder that holds
the running package first on ``PYTHONPATH``. Arguments go as a list, never through a shell.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import softref
from softref.runtime import prepend_path

__all__ = ["launch_torchrun", "package_environment", "run_train_rule", "torchrun_command"]

logger = logging.getLogger(__name__)


def package_root() -> Path:
    """The folder holding the ``softref`` package that is running (``src`` of a checkout)."""
    return Path(softref.__file__).resolve().parents[1]


def package_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with :func:`package_root` first on ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = prepend_path(env.get("PYTHONPATH"), str(package_root()))
    return env


def torchrun_command(config: Path, experiment: str, processes: int, *, seed: int | None = None,
                     results: Path = Path("results"), python: str | None = None, retrain: bool = False) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m softref.train ...`` as a list
    (``--retrain`` appended for the retrain on train + val)."""
    if processes < 2:
        raise ValueError(f"torchrun_command: expected 2 or more processes, found {processes}")
    return [
        python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "softref.train", "--config", str(config), "--experiment", experiment, "--results", str(results),
    ] + ([] if seed is None else ["--seed", str(seed)]) + (["--retrain"] if retrain else [])


def launch_torchrun(config: Path, experiment: str, processes: int, *, seed: int | None = None,
                    results: Path = Path("results"), python: str | None = None, retrain: bool = False) -> None:
    """Run the experiment's training on ``processes`` processes and wait; an error if any fails.

    Their output goes to this process's stderr (the rule's log).
    """
    command = torchrun_command(config, experiment, processes, seed=seed, results=results, python=python,
                               retrain=retrain)
    logger.info("running: %s", " ".join(command))
    sys.stderr.flush()
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env=package_environment(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"experiment {experiment!r}: torchrun with {processes} processes exited with "
                           f"{done.returncode}; the rule's log holds every process's output")


def run_train_rule(smk: Any, cfg: Any, *, retrain: bool = False) -> None:
    """The job of rule ``train`` (or ``retrain``): one run (experiment, seed) of the typed config ``cfg``.

    With one GPU or none it trains in this process; when the profile grants more (resource ``gpu``),
    the effective config is written beside the run and the same training runs under torchrun, one
    process per GPU. A retrain trains again on train + val for the epochs its selection run
    (``input.selection``) chose; both read the same inputs, teachers included (an online-teacher
    experiment retrains with its teachers online too).
    """
    from softref.train.trainer import retrain as retrain_run
    from softref.train.trainer import train
    from softref.workflow import write_config

    name, seed = smk.wildcards.experiment, int(smk.wildcards.seed)
    ex = cfg.experiments[name].with_seed(seed)
    inputs = smk.input
    out_dir = Path(smk.output.checkpoint).parent
    gpus = int(smk.resources.get("gpu", 0) or 0)
    if gpus > 1:
        config_path = write_config(smk.config, out_dir / "config.yaml")
        # results/runs/{experiment}/seed-{seed}[/trainval]: the results folder is 3 (4) levels up.
        launch_torchrun(config_path, name, gpus, seed=seed, results=out_dir.parents[3 if retrain else 2],
                        retrain=retrain)
        return
    data = (Path(cfg.datasets[ex.dataset].root), Path(inputs.images), Path(inputs.texts),
            [Path(p) for p in inputs.get("image_shards", [])], [Path(p) for p in inputs.get("text_shards", [])],
            out_dir)
    options = {
        "references": Path(inputs.references) if inputs.get("references") else None,
        "neighbours": Path(inputs.neighbours) if inputs.get("neighbours") else None,
        "teachers": cfg.teachers,
    }
    if retrain:
        retrain_run(ex, cfg.students[ex.student], Path(inputs.selection), *data, **options)
    else:
        train(ex, cfg.students[ex.student], *data, **options)
