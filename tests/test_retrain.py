"""The retrain on train + val (experiments.<name>.retrain_on_trainval): the epoch count comes from
the selection run's checkpoint, training pools the train and val pairs, no selection is made (the
last epoch is published), and MMRef needs teacher references over the train + val identities."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from softref.checkpoints import CheckpointError, load_checkpoint
from softref.references.build import build_references
from softref.references.index import build_neighbour_index
from softref.train import retrain
from softref.train.data import load_pairs
from softref.train.trainer import VAL_COLUMNS, selected_epoch
from test_trainer import BATCH, STUDENT, experiment, make_benchmark, read_log, run
from test_trainer_mmref import experiment as mmref_experiment
from test_trainer_mmref import person  # noqa: F401 (the module fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_benchmark(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def selection(bench: dict, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("selection") / "run"
    return run(bench, out, cfg=experiment(epochs=3)), out


def _retrain(bench: dict, checkpoint: Path, out: Path, cfg=None, **kwargs):
    return retrain(cfg or experiment(epochs=3), STUDENT, checkpoint, bench["dataset_root"], bench["images_manifest"],
                   bench["texts_manifest"], bench["image_shards"], bench["text_shards"], out, **kwargs)


def test_retrain_trains_on_train_and_val_for_the_selected_epochs(bench: dict, selection, tmp_path: Path):
    result, _ = selection
    chosen = selected_epoch(result.checkpoint, "tiny-cusa")
    assert chosen == result.best_epoch and 1 <= chosen <= 3
    again = _retrain(bench, result.checkpoint, tmp_path / "trainval")
    assert again.completed and again.epochs_completed == chosen
    pairs = sum(len(load_pairs(bench["images_manifest"], bench["texts_manifest"], s)) for s in ("train", "val"))
    assert again.steps == chosen * math.ceil(pairs / BATCH)
    rows = read_log(again.train_log)
    assert len(rows) == chosen and all(row[c] == "" for row in rows for c in VAL_COLUMNS)
    # The published model is the last epoch's, and the run says what it trained on.
    published, last = load_checkpoint(again.checkpoint), load_checkpoint(again.last)
    assert published["epoch"] == chosen
    assert all(torch.equal(published["model"][k], last["model"][k]) for k in last["model"])
    assert published["config"]["experiment"]["epochs"] == chosen
    assert published["config"]["inputs"]["training"] == {"splits": ["train", "val"], "select": False}
    assert "training" not in load_checkpoint(result.checkpoint)["config"]["inputs"]


def test_the_selection_must_be_the_experiments_own(bench: dict, selection, tmp_path: Path):
    result, _ = selection
    with pytest.raises(CheckpointError, match="trained for experiment 'tiny-cusa', expected 'other'"):
        _retrain(bench, result.checkpoint, tmp_path / "x", cfg=experiment(name="other"))


def test_mmref_retrain_needs_references_of_the_train_and_val_identities(person: dict, tmp_path: Path):  # noqa: F811
    cfg = mmref_experiment()
    selection = run_mmref(person, tmp_path / "selection", cfg)
    with pytest.raises(ValueError, match="expected the .* training identities as rows"):
        retrain(cfg, STUDENT, selection.checkpoint, person["root"], person["images"], person["texts"], [], [],
                tmp_path / "wrong", references=person["references"], neighbours=person["neighbours"])
    refs = build_references(person["images"], person["texts"], person["image_shards"], person["text_shards"],
                            tmp_path / "trainval" / "img-teacher+txt-teacher.h5", split=["train", "val"])
    _, neighbours = build_neighbour_index(refs, refs.with_suffix(".faiss"), refs.with_suffix(".neighbours.parquet"), k=3)
    again = retrain(cfg, STUDENT, selection.checkpoint, person["root"], person["images"], person["texts"], [], [],
                    tmp_path / "trainval-run", references=refs, neighbours=neighbours)
    texts = pd.read_parquet(person["texts"])
    identities = sorted(set(texts.loc[texts["split"].isin(["train", "val"]), "identity"]))
    assert load_checkpoint(again.checkpoint)["mmref"]["identities"] == identities
    assert again.epochs_completed == selection.best_epoch


def run_mmref(person: dict, out: Path, cfg):
    from softref.train import train

    return train(cfg, STUDENT, person["root"], person["images"], person["texts"], [], [], out,
                 references=person["references"], neighbours=person["neighbours"])

