"""`python -m softref.train`: one experiment outside Snakemake, in one process and under torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from softref.data.adapters import prepare
from softref.data.synthetic import synthesize_demo


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A run folder laid out as the DAG leaves it: the demo data and its manifests."""
    root = tmp_path_factory.mktemp("train-cli")
    synthesize_demo(root / "resources/demo", num_identities=10, images_per_identity=2, captions_per_image=2, sts_pairs=4)
    prepare("karpathy", root / "resources/demo/coco", root / "results/data/demo-coco")
    config = {
        "datasets": {"demo-coco": {"format": "karpathy", "root": "resources/demo/coco"}},
        "students": {"tiny": {"architecture": "softref-tiny"}},
        "experiments": {
            "base": {"dataset": "demo-coco", "student": "tiny", "method": "base", "epochs": 1, "batch_size": 8, "lr": 1e-3}
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_unknown_experiment_is_a_clear_error(workdir):
    proc = run(workdir, "-m", "softref.train", "--experiment", "nope")
    assert proc.returncode == 2
    assert "no experiment 'nope'" in proc.stderr and "['base']" in proc.stderr


def test_torchrun_two_processes_train_and_write_once(workdir):
    proc = run(
        workdir,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "softref.train",
        "--experiment",
        "base",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = workdir / "results/runs/base"
    assert (out / "checkpoint.pt").is_file()
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1]


def test_train_rule_runs_torchrun_when_granted_several_gpus(workdir):
    """The DAG's train job with an experiment of `gpus: 2`: the rule writes the effective config and
    launches two processes (gloo on this CPU-only machine), which write one checkpoint."""
    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["demo"] = {"enabled": False}
    config["experiments"] = {
        "twoproc": {"dataset": "demo-coco", "student": "tiny", "method": "base", "epochs": 1, "batch_size": 8,
                    "lr": 1e-3, "gpus": 2}
    }
    path = workdir / "twoproc.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run(workdir, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "results/runs/twoproc/checkpoint.pt", "--replace-workflow-config",
               "--configfile", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = workdir / "results/runs/twoproc"
    assert (out / "checkpoint.pt").is_file()
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["experiments"]["twoproc"]["gpus"] == 2
    log_text = (workdir / "logs/train/twoproc.log").read_text()
    assert "torch.distributed.run" in log_text and "--nproc_per_node=2" in log_text
    assert "process 1 of 2" in log_text  # the second process joined
