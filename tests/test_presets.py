"""The paper presets under configs/: each validates against the schema, and a Snakemake dry run
on placeholder data (fixture roots, empty weight files) plans the expected jobs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from softref.config import read_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = REPO / "configs"

# preset -> (target, expected job counts of its dry run)
PRESETS = {
    "cusa-coco": ("results/table1.csv", {
        "prepare_manifest": 1, "extract_image_features": 16, "extract_text_features": 16,
        "train": 2, "evaluate": 2, "table1": 1,
    }),
    "cusa-flickr": ("results/table1.csv", {
        "prepare_manifest": 1, "extract_image_features": 4, "extract_text_features": 4,
        "train": 2, "evaluate": 2, "table1": 1,
    }),
    "mmref-cuhk-pedes": ("features", {
        "prepare_manifest": 1, "extract_image_features": 4, "extract_text_features": 4, "features": 1,
    }),
    "mmref-icfg-pedes": ("features", {
        "prepare_manifest": 1, "extract_image_features": 4, "extract_text_features": 4, "features": 1,
    }),
    "mmref-rstpreid": ("features", {
        "prepare_manifest": 1, "extract_image_features": 2, "extract_text_features": 2, "features": 1,
    }),
}


def test_every_preset_is_listed():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates(name):
    cfg = read_config(CONFIGS / f"{name}.yaml")
    assert cfg.demo.enabled is False
    assert all(not ds.root.startswith("resources/demo") for ds in cfg.datasets.values())
    if name.startswith("cusa"):
        (ex,) = [e for e in cfg.experiments.values() if e.method == "cusa"]
        assert (ex.lr, ex.min_lr, ex.weight_decay, ex.batch_size, ex.alpha, ex.beta, ex.seed) == (
            1e-5, 1e-6, 1e-4, 128, 0.1, 0.5, 23
        )
        assert ex.epochs == (30 if name == "cusa-coco" else 40)
        assert cfg.teachers[ex.image_teacher].output == "features"
        assert {b.paper_dataset for b in cfg.benchmarks.values()} == {
            "coco-5k" if name == "cusa-coco" else "flickr30k-1k"
        }
        assert {s.paper_model for s in cfg.students.values()} == {"CLIP-ViT-B/32"}


def _placeholder_root(fmt: str, annotations: str, dest: Path) -> Path:
    """A dataset root holding the annotation file the preset names (a fixture where one exists)."""
    sources = {"karpathy": {"dataset_coco.json": FIXTURES / "karpathy" / "coco",
                            "dataset_flickr30k.json": FIXTURES / "karpathy" / "flickr30k"},
               "cuhk-pedes": {"reid_raw.json": FIXTURES / "cuhk-pedes"}}
    source = sources.get(fmt, {}).get(annotations)
    if source is not None:
        return Path(shutil.copytree(source, dest))
    dest.mkdir(parents=True)
    field = "img_path" if fmt == "rstpreid" else "file_path"
    records = [{"id": 1, field: "train/0001/a.jpg", "captions": ["a person"], "split": "train"}]
    (dest / annotations).write_text(json.dumps(records))
    return dest


def _localise(cfg: dict, tmp_path: Path) -> dict:
    """The preset with its dataset roots and weight paths moved into ``tmp_path``."""
    for name, ds in cfg["datasets"].items():
        ds["root"] = str(_placeholder_root(ds["format"], ds["annotations"], tmp_path / "data" / name))
    weights = tmp_path / "weights"
    weights.mkdir()
    for name, teacher in cfg["teachers"].items():
        path = weights / name
        path.write_bytes(b"")  # a dry run only needs the file to exist
        teacher["weights"] = str(path)
    for name, student in cfg.get("students", {}).items():
        if student.get("pretrained"):
            path = weights / f"student-{name}.pt"
            path.write_bytes(b"")
            student["pretrained"] = str(path)
    return cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_dry_run(tmp_path, name):
    target, expected = PRESETS[name]
    cfg = _localise(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), tmp_path)
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = tmp_path / "run"  # no config.yaml here: the preset alone is the config
    run_dir.mkdir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
           "--directory", str(run_dir), target, "--configfile", str(config_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)\s*$", text, flags=re.M)}
    counts.pop("total", None)
    assert counts == expected, text
