"""IRRA's training-image augmentation (augment: reid): what it does to the pixels, its seeding per
(epoch, item), and that it reaches the student's training images only (never the teacher features,
validation or evaluation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softref.checkpoints import load_checkpoint
from softref.models.student import Student, load_student
from softref.train.augment import AugmentedPairs, EpochTaggedBatches, ReidAugment, augmentation, item_generator
from softref.train.data import BatchCollator, EpochBatchSampler, TrainPairs, load_pairs, make_loader
from test_trainer import STUDENT, experiment, make_benchmark, read_log, run

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_benchmark(tmp_path_factory.mktemp("bench"))


def _pixels(height: int = 48, width: int = 16) -> torch.Tensor:
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(0))


def _shifted(src: torch.Tensor, dy: int, dx: int, fill: torch.Tensor) -> torch.Tensor:
    """``src`` moved so that out[y, x] = src[y + dy, x + dx], ``fill`` where that is outside."""
    _, h, w = src.shape
    out = fill.view(3, 1, 1).expand(3, h, w).clone()
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    out[:, ys, xs] = src[:, max(0, dy):min(h, h + dy), max(0, dx):min(w, w + dx)]
    return out


def test_flip_and_pad_crop_shift_the_image_over_black():
    """Without erasing, each output is the (maybe flipped) image shifted by at most 10 pixels, the
    uncovered border black, as IRRA pads the PIL image with zeros before normalising."""
    x = _pixels()
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)])
    augment = ReidAugment(MEAN, STD, erase_p=0.0)
    seen = set()
    for index in range(30):
        out = augment(x, item_generator(23, 1, index))
        found = [(flip, dy, dx) for flip in (False, True) for dy in range(-10, 11) for dx in range(-10, 11)
                 if torch.equal(out, _shifted(x.flip(-1) if flip else x, dy, dx, black))]
        assert len(found) == 1, index
        seen.add(found[0])
    assert {flip for flip, _, _ in seen} == {False, True} and len(seen) > 20


def test_erasing_fills_one_box_with_the_mean_values():
    x = _pixels()
    augment = ReidAugment(MEAN, STD, flip_p=0.0, pad=0, erase_p=1.0)
    shares = []
    for index in range(20):
        out = augment(x, item_generator(23, 1, index))
        changed = (out != x).any(0)
        if not changed.any():
            continue  # ten tries found no box inside the image: nothing erased, as torchvision
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = out[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.equal(box, torch.tensor(MEAN).view(3, 1, 1).expand_as(box)), index
        shares.append(box[0].numel() / changed.numel())
    assert len(shares) >= 15 and all(0.01 <= s <= 0.45 for s in shares), shares


def test_each_item_and_epoch_has_its_own_draws():
    x = _pixels()
    augment = augmentation("reid", {"mean": MEAN, "std": STD})
    one = augment(x, item_generator(23, 1, 5))
    assert torch.equal(one, augment(x, item_generator(23, 1, 5)))
    assert not torch.equal(one, augment(x, item_generator(23, 2, 5)))
    assert not torch.equal(one, augment(x, item_generator(23, 1, 6)))
    assert augmentation("none", {}) is None
    with pytest.raises(ValueError, match=r"augment: expected one of \['none', 'reid'\], found 'strong'"):
        augmentation("strong", {"mean": MEAN, "std": STD})


def test_loader_workers_give_the_same_augmented_batches(bench: dict):
    torch.manual_seed(0)
    student = Student("softref-tiny")
    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    plain = TrainPairs(pairs, bench["dataset_root"], student.transform)
    augmented = AugmentedPairs(plain, augmentation("reid", student.preprocess_cfg), seed=23)
    augmented.set_epoch(3)
    batches = {}
    for workers in (0, 2):
        sampler = EpochBatchSampler(len(plain), 4, seed=23)
        sampler.set_epoch(3)
        batches[workers] = list(make_loader(augmented, sampler, BatchCollator(student.tokenize), num_workers=workers))
    assert len(batches[0]) == len(batches[2]) > 1
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a.images, b.images) and a.text_ids == b.text_ids
    # Only the pixels change: captions, ids and identities are the plain dataset's.
    item, base = augmented[0], plain[0]
    assert item[1:] == base[1:] and item[0].shape == base[0].shape and not torch.equal(item[0], base[0])


def test_training_with_reid_is_deterministic_and_evaluation_is_plain(bench: dict, tmp_path: Path):
    cfg = experiment(epochs=1, augment="reid")
    with_aug = run(bench, tmp_path / "reid", cfg=cfg)
    with_workers = run(bench, tmp_path / "reid-workers", cfg=experiment(epochs=1, augment="reid", num_workers=2))
    without = run(bench, tmp_path / "none", cfg=experiment(epochs=1))
    weights = {name: load_checkpoint(r.last)["model"] for name, r in
               (("reid", with_aug), ("workers", with_workers), ("none", without))}
    assert all(torch.equal(weights["reid"][k], weights["workers"][k]) for k in weights["reid"])
    assert not all(torch.equal(weights["reid"][k], weights["none"][k]) for k in weights["reid"])
    # Validation ran on the plain images, and the checkpoint rebuilds the plain evaluation transform.
    assert read_log(with_aug.train_log)[0]["val_rsum"] != ""
    loaded, ckpt = load_student(with_aug.checkpoint)
    assert ckpt["config"]["experiment"]["augment"] == "reid"
    assert repr(loaded.transform) == repr(Student(STUDENT.architecture).transform)


def test_persistent_workers_see_each_epoch(bench: dict):
    """Workers persist across epochs, so the epoch must reach them with the indices: epoch 2 of a
    loader with workers is epoch 2 of one without, and differs from its epoch 1."""
    torch.manual_seed(0)
    student = Student("softref-tiny")
    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    plain = TrainPairs(pairs, bench["dataset_root"], student.transform)
    epochs = {}
    for workers in (0, 1):
        augmented = AugmentedPairs(plain, augmentation("reid", student.preprocess_cfg), seed=23)
        base = EpochBatchSampler(len(plain), 4, seed=23)
        loader = make_loader(augmented, EpochTaggedBatches(base, augmented), BatchCollator(student.tokenize),
                             num_workers=workers)
        for epoch in (1, 2):
            base.set_epoch(epoch)
            augmented.set_epoch(epoch)
            epochs[workers, epoch] = [b.images for b in loader]
    for epoch in (1, 2):
        assert all(torch.equal(a, b) for a, b in zip(epochs[0, epoch], epochs[1, epoch]))
    # The same items in both epochs would still differ by their augmentation: the epochs' pixels differ.
    assert not all(torch.equal(a, b) for a, b in zip(epochs[1, 1], epochs[1, 2]))
