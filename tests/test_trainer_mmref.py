"""The trainer with method mmref on a tiny person-format benchmark: P x K batches with neighbour
identities, every MMRef term logged and finite, the reference bank in the checkpoint, resume,
soft targets, and clear errors on missing or mismatched teacher references."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import torch

from softref.config import ExperimentConfig, MMRefConfig, StudentConfig
from softref.data.adapters import prepare
from softref.data.synthetic import synthesize_demo
from softref.references.build import build_references
from softref.references.index import build_neighbour_index
from softref.train import train
from softref.checkpoints import load_checkpoint
from test_trainer import write_random_shards

STUDENT = StudentConfig(name="tiny", architecture="softref-tiny")


# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def person(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 identities (CUHK-PEDES layout), random teacher shards, their references and neighbours."""
    root = tmp_path_factory.mktemp("person")
    demo = synthesize_demo(root / "raw", num_identities=12, images_per_identity=2, captions_per_image=1,
                           image_size=32, person_size=(32, 16), sts_pairs=0)
    manifests = root / "manifests"
    prepare("cuhk-pedes", demo["person_root"], manifests, annotations=str(demo["person_annotations"]))
    images, texts = manifests / "images.parquet", manifests / "texts.parquet"
    image_shards = write_random_shards(root / "img", images, pd.read_parquet(images)["image_id"].tolist(),
                                       "images", "img-teacher", 16)
    text_shards = write_random_shards(root / "txt", texts, pd.read_parquet(texts)["text_id"].tolist(),
                                      "texts", "txt-teacher", 8, seed=1)
    refs = build_references(images, texts, image_shards, text_shards, root / "refs" / "img-teacher+txt-teacher.h5")
    _, neighbours = build_neighbour_index(refs, refs.with_suffix(".faiss"), refs.with_suffix(".neighbours.parquet"), k=3)
    return {"root": demo["person_root"], "images": images, "texts": texts, "references": refs, "neighbours": neighbours,
            "image_shards": image_shards, "text_shards": text_shards}


def experiment(**mmref) -> ExperimentConfig:
    return ExperimentConfig(
        name="tiny-mmref", dataset="demo", student="tiny", method="mmref", image_teacher="img-teacher",
        text_teacher="txt-teacher", epochs=2, batch_size=8, lr=1e-3, min_lr=1e-4, seed=23,
        mmref=MMRefConfig(samples_per_identity=2, neighbours_per_anchor=1, **mmref),
    )


def run(person: dict, out: Path, cfg: ExperimentConfig, **kwargs):
    kwargs.setdefault("references", person["references"])
    kwargs.setdefault("neighbours", person["neighbours"])
    return train(cfg, STUDENT, person["root"], person["images"], person["texts"], [], [], out, **kwargs)


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_mmref_trains_logs_every_term_and_saves_the_bank(person: dict, tmp_path: Path) -> None:
    result = run(person, tmp_path / "run", experiment())
    assert result.completed and result.checkpoint is not None
    rows = read_log(result.train_log)
    assert len(rows) == 2
    for row in rows:
        for term in ("total", "id", "fuse", "guide", "recon"):
            assert row[f"loss_{term}"] != "" and float(row[f"loss_{term}"]) == float(row[f"loss_{term}"])
        assert row["loss_csa"] == row["loss_usa"] == row["loss_itr"] == ""
    ckpt = load_checkpoint(result.checkpoint, map_location="cpu", required=("model", "mmref_head", "mmref"))
    identities = ckpt["mmref"]["identities"]
    train_ids = sorted(set(pd.read_parquet(person["texts"]).query("split == 'train'")["identity"]))
    assert identities == train_ids
    assert ckpt["mmref_head"]["bank"].shape == (len(train_ids), 64)


def test_mmref_resume_matches_uninterrupted(person: dict, tmp_path: Path) -> None:
    full = run(person, tmp_path / "full", experiment())
    stopped = run(person, tmp_path / "cut", experiment(), max_steps=1)
    assert not stopped.completed
    resumed = run(person, tmp_path / "cut", experiment())
    assert resumed.completed
    a = load_checkpoint(full.last, map_location="cpu")
    b = load_checkpoint(resumed.last, map_location="cpu")
    for key in a["mmref_head"]:
        torch.testing.assert_close(a["mmref_head"][key], b["mmref_head"][key])


def test_switches_change_the_terms(person: dict, tmp_path: Path) -> None:
    base = experiment(global_fusion=False, local_reconstruction=False, reference_guidance=False)
    base = ExperimentConfig(**{**base.__dict__, "mmref": MMRefConfig(
        samples_per_identity=2, neighbours_per_anchor=0, global_fusion=False, local_reconstruction=False,
        reference_guidance=False)})
    result = run(person, tmp_path / "base", base, references=None, neighbours=None)
    row = read_log(result.train_log)[0]
    assert row["loss_id"] != "" and row["loss_fuse"] == row["loss_guide"] == row["loss_recon"] == ""
    soft = run(person, tmp_path / "soft", experiment(soft_targets=True))
    assert read_log(soft.train_log)[0]["loss_fuse"] != ""


def test_missing_or_foreign_references_are_refused(person: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="teacher references"):
        run(person, tmp_path / "a", experiment(), references=None)
    with pytest.raises(FileNotFoundError, match="neighbours"):
        run(person, tmp_path / "b", experiment(), neighbours=tmp_path / "absent.parquet")
    other = ExperimentConfig(**{**experiment().__dict__, "image_teacher": "another-teacher"})
    with pytest.raises(ValueError, match="image_teacher"):
        run(person, tmp_path / "c", other)
