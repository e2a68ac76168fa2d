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


def test_unknown_experiment_is_a_clear_error_before_torch_is_imported(workdir):
    """The CLI checks its config before the trainer's imports (torch, open_clip: seconds)."""
    code = ("import runpy, sys\n"
            "sys.argv = ['softref.train', '--experiment', 'nope']\n"
            "try:\n    runpy.run_module('softref.train', run_name='__main__')\n"
            "except SystemExit as stop:\n    print('exit', stop.code, 'torch' in sys.modules)\n")
    proc = run(workdir, "-c", code)
    assert proc.stdout.split() == ["exit", "2", "False"], proc.stdout + proc.stderr
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
    out = workdir / "results/runs/base/seed-23"
    assert (out / "checkpoint.pt").is_file()
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1]


def test_train_rule_runs_torchrun_when_granted_several_gpus(workdir):
    """The DAG's train job with an experiment of `gpus: 2`: the rule writes the effective config and
    launches two processes (gloo on this CPU-only machine), which write one checkpoint."""
    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["demo"] = {}
    config["experiments"] = {
        "twoproc": {"dataset": "demo-coco", "student": "tiny", "method": "base", "epochs": 1, "batch_size": 8,
                    "lr": 1e-3, "gpus": 2}
    }
    path = workdir / "twoproc.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run(workdir, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "results/runs/twoproc/seed-23/checkpoint.pt", "--replace-workflow-config",
               "--configfile", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = workdir / "results/runs/twoproc/seed-23"
    assert (out / "checkpoint.pt").is_file()
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["experiments"]["twoproc"]["gpus"] == 2
    log_text = (workdir / "logs/train/twoproc/seed-23.log").read_text()
    assert "torch.distributed.run" in log_text and "--nproc_per_node=2" in log_text
    assert "process 1 of 2" in log_text  # the second process joined


def test_retrain_runs_the_selected_epochs_on_train_and_val(workdir):
    """--retrain does what the retrain rule does: the finished run's selected epoch count, on train + val."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["experiments"] = {"redo": {**config["experiments"]["base"], "epochs": 2, "retrain_on_trainval": True}}
    (workdir / "retrain.yaml").write_text(yaml.safe_dump(config))
    for extra in ([], ["--retrain"]):
        proc = run(workdir, "-m", "softref.train", "--config", "retrain.yaml", "--experiment", "redo", *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    selection = pd.read_csv(workdir / "results/runs/redo/seed-23/train_log.csv")
    best = int(selection.loc[selection["val_rsum"].idxmax(), "epoch"])
    log = pd.read_csv(workdir / "results/runs/redo/seed-23/trainval/train_log.csv")
    assert list(log["epoch"]) == list(range(1, best + 1)) and log["val_rsum"].isna().all()
    assert (workdir / "results/runs/redo/seed-23/trainval/checkpoint.pt").is_file()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python with every dependency of softref but not softref itself, as an environment built from
    envs/softref.yaml under ``--sdm conda`` is: a venv whose only path entry is this venv's
    site-packages (a path line in a .pth file; the .pth files in that folder, among them the
    editable install of softref, are not read)."""
    root = tmp_path_factory.mktemp("bare-env")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (next(root.glob("lib/python*/site-packages")) / "dependencies.pth").write_text(site + "\n")
    return root / "bin" / "python"


def test_package_launch_runs_where_softref_is_not_installed(workdir, bare_python, monkeypatch):
    """softref.train.launch gives the torchrun children the running package on PYTHONPATH: they train
    even with a Python that cannot import softref by itself."""
    from softref.train.launch import launch_torchrun, package_environment, package_root

    clean = {k: v for k, v in package_environment().items() if k != "PYTHONPATH"}
    alone = subprocess.run([str(bare_python), "-c", "import softref"], cwd=workdir, env=clean, capture_output=True,
                           text=True, timeout=120)
    assert alone.returncode != 0 and "No module named 'softref'" in alone.stderr
    found = subprocess.run([str(bare_python), "-c", "import softref; print(softref.__file__)"], cwd=workdir,
                           env=package_environment(clean), capture_output=True, text=True, timeout=120)
    assert found.stdout.strip() == str(package_root() / "softref" / "__init__.py")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["experiments"]["bare"] = {**config["experiments"]["base"], "gpus": 2}
    path = workdir / "bare.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    launch_torchrun(path, "bare", 2, python=str(bare_python))
    assert (workdir / "results/runs/bare/seed-23/checkpoint.pt").is_file()
    with pytest.raises(RuntimeError, match=r"experiment 'nope': torchrun with 2 processes exited with"):
        launch_torchrun(path, "nope", 2, python=str(bare_python))
