"""The person-input smoke config (configs/smoke/person-vit-384x128.yaml): it passes the preflight,
its ViT students build at 384 x 128 and 224 x 224 with the patch grids the comparison assumes, and
a Snakemake dry run plans the two trainings with the person field's switches (image_size 384x128,
augment reid, fixed tau 0.02) beside the square twin, each evaluated once on demo-person-test.

Cheap: a dry run and two tiny models, no training (the real run is the config's header command).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from softref.preflight import check_config_file
from test_presets import parse_jobs

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke" / "person-vit-384x128.yaml"
TABLE = "results/mmref/smoke-vit.csv"
# experiment: (student image_size as the train message shows it, patch grid (rows, columns))
TWINS = {"smoke-vit-384x128": ("384x128", (24, 8)), "smoke-vit-224": ("224x224", (14, 14))}


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """An empty run folder whose models/ is the checkout's, as the config's header command makes it."""
    (tmp_path / "models").symlink_to(REPO / "models", target_is_directory=True)
    return tmp_path


def test_smoke_config_passes_the_preflight(run_folder):
    cfg, problems = check_config_file(SMOKE, base=run_folder)
    assert problems == [] and cfg is not None
    assert sorted(cfg.experiments) == sorted(TWINS)
    assert set(cfg.benchmarks) == {"demo-person-test"}


def test_smoke_students_are_one_vit_at_two_sizes():
    from softref.models.student import Student

    raw = yaml.safe_load(SMOKE.read_text())
    architectures = set()
    for experiment, (size, grid) in TWINS.items():
        student_cfg = raw["students"][raw["experiments"][experiment]["student"]]
        assert student_cfg["pretrained"] is None  # random init: no hub weights offline
        architectures.add(student_cfg["architecture"])
        student = Student(student_cfg["architecture"], None, image_size=tuple(student_cfg["image_size"]))
        assert "x".join(map(str, student.preprocess_cfg["size"])) == size
        assert tuple(student.clip.visual.grid_size) == grid
    assert len(architectures) == 1  # the twins differ only in their input size


def test_smoke_dry_run_plans_both_sizes(run_folder):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "--cores", "2",
           "--directory", str(run_folder), TABLE, "--replace-workflow-config", "--configfile", str(SMOKE)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    jobs = parse_jobs(text)
    counts = Counter(job.rule for job in jobs)
    assert (counts["train"], counts["evaluate"], counts["table"]) == (2, 2, 1), text
    trains = {job.pairs("wildcards")["experiment"]: job for job in jobs if job.rule == "train"}
    assert sorted(trains) == sorted(TWINS), text
    for experiment, (size, _) in TWINS.items():
        switches = dict(item.split("=", 1) for item in trains[experiment].fields["switches"].split(", "))
        assert (switches["image_size"], switches["augment"], switches["tau_mode"], switches["tau"]) == (
            size, "reid", "fixed", "0.02"), switches
        assert (switches["method"], switches["epochs"]) == ("mmref", "1"), switches
    # One evaluate job per run, writing its eval/ folder (demo-person-test is the table's one benchmark).
    evaluations = {(j.pairs("wildcards")["experiment"], *j.files("output")) for j in jobs if j.rule == "evaluate"}
    seeds = {e: j.pairs("wildcards")["seed"] for e, j in trains.items()}
    assert evaluations == {(e, f"results/runs/{e}/seed-{seeds[e]}/eval") for e in TWINS}, text
