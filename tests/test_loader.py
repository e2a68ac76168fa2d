"""The training loader: the same batches with DataLoader workers as without, persistent workers,
the pairs held in numpy arrays, the MMRef collator's identity rows."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from softref.features import FeatureStore
from softref.train.data import EpochBatchSampler, load_pairs
from test_trainer import make_benchmark

# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_benchmark(tmp_path_factory.mktemp("bench"))


class _PidCollator:
    """The real collator, and the pid of the process that ran it (a DataLoader worker or this one)."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, items):
        return self.collator(items), os.getpid()


def _loader_epochs(bench: dict, num_workers: int, epochs: int = 2) -> tuple[list, list[set[int]]]:
    from softref.models.student import Student
    from softref.train.data import BatchCollator, TrainPairs, make_loader

    student = Student("softref-tiny")
    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    dataset = TrainPairs(pairs, bench["dataset_root"], student.transform)
    sampler = EpochBatchSampler(len(dataset), 3, seed=5)
    batches, pids = [], []
    with FeatureStore(bench["image_shards"]) as images, FeatureStore(bench["text_shards"]) as texts:
        loader = make_loader(dataset, sampler, _PidCollator(BatchCollator(student.tokenizer, images, texts, pairs=dataset)),
                             num_workers=num_workers)
        for epoch in range(1, epochs + 1):
            sampler.set_epoch(epoch)
            got = list(loader)
            batches += [batch for batch, _ in got]
            pids.append({pid for _, pid in got})
        del loader
    return batches, pids


def test_loader_with_workers_yields_the_same_batches(bench: dict) -> None:
    """Bit for bit, in order, over two epochs; the workers persist from one epoch to the next."""
    alone, alone_pids = _loader_epochs(bench, num_workers=0)
    workers, worker_pids = _loader_epochs(bench, num_workers=2)
    assert len(alone) == len(workers) >= 4
    for a, b in zip(alone, workers):
        assert a.text_ids == b.text_ids and a.image_ids == b.image_ids
        for name in ("images", "tokens", "image_index", "teacher_image", "teacher_text"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
        assert a.teacher_image.dtype == torch.float16  # the stored dtype; Batch.to casts
    assert alone[0].text_ids != alone[len(alone) // 2].text_ids  # epoch 2 is another permutation
    assert alone_pids == [{os.getpid()}] * 2
    assert os.getpid() not in worker_pids[0] and worker_pids[0] == worker_pids[1]  # persistent workers


def test_train_pairs_hold_arrays_not_python_lists(bench: dict) -> None:
    from softref.data.strings import PackedStrings
    from softref.train.data import TrainPairs

    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    dataset = TrainPairs(pairs, bench["dataset_root"], lambda image: torch.zeros(1))
    for name in ("text_ids", "image_ids", "captions", "paths", "identities"):
        assert isinstance(getattr(dataset, name), PackedStrings), name
    assert isinstance(dataset.image_index, np.ndarray) and dataset.image_index.dtype == np.int64
    for i in range(len(dataset)):
        _, caption, image_id, text_id, image_index, identity, index = dataset[i]
        row = pairs.iloc[i]
        assert (caption, image_id, text_id, identity) == (row["caption"], row["image_id"], row["text_id"], row["identity"])
        assert image_index == row["image_index"] and type(image_index) is int
        assert index == i and type(index) is int


def test_collator_identity_rows(bench: dict) -> None:
    from softref.train.data import BatchCollator, TrainPairs

    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    dataset = TrainPairs(pairs, bench["dataset_root"], lambda image: torch.zeros(1))
    names = sorted(set(pairs["identity"]))
    rows = {name: len(names) - 1 - k for k, name in enumerate(names)}
    collator = BatchCollator(lambda captions: torch.zeros(len(captions), 2, dtype=torch.long), identity_rows=rows)
    items = [dataset[i] for i in range(len(dataset))][::-1]
    batch = collator(items)
    assert batch.identity_index.tolist() == [rows[item[5]] for item in items]
    del rows[items[0][5]]
    with pytest.raises(KeyError, match=rf"identity {items[0][5]!r} has no row in the reference bank"):
        BatchCollator(collator.tokenizer, identity_rows=rows)(items)
