"""The CUSA trainer on a tiny synthetic benchmark: outputs, resume, NaN stop, input checks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from softref.config import ExperimentConfig, StudentConfig
from softref.data.adapters import prepare
from softref.data.manifest import file_sha256
from softref.data.synthetic import synthesize_demo
from softref.features import FeatureStore, ShardError, ShardWriter
from softref.train import NonFiniteLossError, train
from softref.train.data import EpochBatchSampler, load_pairs
from softref.train.trainer import (
    LOG_COLUMNS,
    MEASURED_COLUMNS,
    cosine_schedule,
    make_optimizer,
    mean_direction_norm,
    parameter_groups,
    warn_if_collapsed,
)

BATCH = 4
STUDENT = StudentConfig(name="tiny", architecture="softref-tiny")


# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


def write_random_shards(out: Path, manifest: Path, ids: list[str], modality: str, teacher: str, dim: int,
                        num_shards: int = 2, seed: int = 0) -> list[Path]:
    """Shards of random teacher features for every id of a manifest, as extraction lays them out."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((len(ids), dim)).astype(np.float32)
    paths = []
    for shard, rows in enumerate(np.array_split(np.arange(len(ids)), num_shards)):
        attrs = {
            "teacher": teacher, "weights_sha256": "0" * 64, "preprocess": "random", "normalized": False,
            "manifest_sha256": file_sha256(manifest), "shard": shard, "num_shards": num_shards,
            "modality": modality,
        }
        path = out / f"{modality}-{shard}.h5"
        with ShardWriter(path, num_rows=len(rows), dim=dim, attrs=attrs) as writer:
            writer.write(0, [ids[i] for i in rows], features[rows])
        paths.append(path)
    return paths


def make_benchmark(root: Path) -> dict:
    """A tiny demo benchmark (8 train images x 2 captions), its manifests and random teacher shards."""
    demo = synthesize_demo(root / "raw", num_identities=6, images_per_identity=2, captions_per_image=2,
                           image_size=32, person_size=(32, 16), sts_pairs=0)
    manifests = root / "manifests"
    prepare("karpathy", demo["coco_root"], manifests, annotations=str(demo["coco_annotations"]))
    images, texts = manifests / "images.parquet", manifests / "texts.parquet"
    image_ids = pd.read_parquet(images)["image_id"].tolist()
    text_ids = pd.read_parquet(texts)["text_id"].tolist()
    return {
        "dataset_root": demo["coco_root"],
        "images_manifest": images,
        "texts_manifest": texts,
        "image_shards": write_random_shards(root / "features" / "img", images, image_ids, "images", "img-teacher", 24),
        "text_shards": write_random_shards(root / "features" / "txt", texts, text_ids, "texts", "txt-teacher", 12, seed=1),
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_benchmark(tmp_path_factory.mktemp("bench"))


def experiment(**overrides) -> ExperimentConfig:
    values = dict(name="tiny-cusa", dataset="demo", student="tiny", method="cusa", image_teacher="img-teacher",
                  text_teacher="txt-teacher", epochs=2, batch_size=BATCH, lr=1e-4, min_lr=1e-5, seed=23)
    values.update(overrides)
    return ExperimentConfig(**values)


def run(bench: dict, out: Path, cfg: ExperimentConfig | None = None, **kwargs):
    return train(cfg or experiment(), STUDENT, bench["dataset_root"], bench["images_manifest"],
                 bench["texts_manifest"], bench["image_shards"], bench["text_shards"], out, **kwargs)


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def steps_per_epoch(bench: dict) -> int:
    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    return math.ceil(len(pairs) / BATCH)


@pytest.fixture(scope="module")
def uninterrupted(bench: dict, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run") / "full"
    return run(bench, out), out


def test_two_epochs_write_checkpoint_and_log(uninterrupted, bench: dict) -> None:
    result, out = uninterrupted
    assert result.completed and result.epochs_completed == 2
    assert result.steps == 2 * steps_per_epoch(bench)
    assert result.checkpoint == out / "checkpoint.pt" and result.checkpoint.is_file()
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    # The selected model is on disk once: checkpoint.pt is a hard link to best.pt (this file system has them).
    assert (out / "checkpoint.pt").samefile(out / "best.pt") and (out / "best.pt").stat().st_nlink == 2
    rows = read_log(out / "train_log.csv")
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        six = [float(row[f"val_{d}_R@{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10)]
        assert float(row["val_rsum"]) == pytest.approx(sum(six))
        for term in ("total", "itr", "csa", "usa"):
            assert math.isfinite(float(row[f"loss_{term}"]))
        # The training-cost record (the appendix's Table 13): steps only, then the whole epoch.
        assert 0 < float(row["train_seconds"]) <= float(row["seconds"])
        assert float(row["host_peak_mb"]) > 50 and row["gpu_peak_mb"] == ""  # a CPU run: no CUDA peak
    assert float(rows[0]["lr"]) == pytest.approx(1e-4)
    best = max(rows, key=lambda r: float(r["val_rsum"]))
    assert result.best_val_rsum == pytest.approx(float(best["val_rsum"]))


def test_checkpoints_load_with_weights_only(uninterrupted) -> None:
    _, out = uninterrupted
    selected = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "config", "epoch", "step", "val", "softref_version"} <= set(selected)
    assert selected["config"]["student"]["architecture"] == "softref-tiny"
    assert selected["config"]["experiment"]["method"] == "cusa"
    last = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "step", "rng", "config", "best_val_rsum", "log"} <= set(last)
    assert last["epoch"] == 2 and isinstance(last["rng"]["torch"], torch.Tensor)
    assert isinstance(last["rng"]["numpy"]["keys"], list)


def test_resume_reaches_the_same_weights_and_log(uninterrupted, bench: dict, tmp_path: Path) -> None:
    full_result, full = uninterrupted
    out = tmp_path / "resumed"
    # Interrupted inside epoch 2: that partial epoch must be dropped and redone.
    stopped = run(bench, out, max_steps=steps_per_epoch(bench) + 1)
    assert not stopped.completed and stopped.checkpoint is None and stopped.epochs_completed == 1
    assert not (out / "checkpoint.pt").exists()
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1

    resumed = run(bench, out)
    assert resumed.completed and resumed.steps == full_result.steps
    for name in ("checkpoint.pt", "last.pt"):
        a = torch.load(full / name, weights_only=True)["model"]
        b = torch.load(out / name, weights_only=True)["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    opt_a = torch.load(full / "last.pt", weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(out / "last.pt", weights_only=True)["optimizer"]["state"]
    for index in opt_a:
        for key in opt_a[index]:
            assert torch.equal(opt_a[index][key], opt_b[index][key])
    log_a, log_b = read_log(full / "train_log.csv"), read_log(out / "train_log.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in MEASURED_COLUMNS} for r in rows]  # noqa: E731
    assert strip(log_a) == strip(log_b)

    # A finished run called again trains no more; it republishes a removed checkpoint.pt.
    (out / "checkpoint.pt").unlink()
    again = run(bench, out)
    assert again.completed and again.steps == full_result.steps
    assert (out / "checkpoint.pt").read_bytes() == (out / "best.pt").read_bytes()


def test_dataloader_workers_do_not_change_the_result(uninterrupted, bench: dict, tmp_path: Path) -> None:
    _, full = uninterrupted
    # The teacher fetch then runs in the worker processes (each reopens the HDF5 files).
    result = run(bench, tmp_path / "workers", cfg=experiment(num_workers=2))
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(result.last, weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert float(read_log(result.train_log)[0]["fetch_seconds"]) > 0


def test_another_config_starts_over_and_keeps_the_old_state(bench: dict, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "changed"
    first = run(bench, out, cfg=experiment(epochs=1))
    old_last = first.last.read_bytes()
    with caplog.at_level("WARNING", logger="softref.train.trainer"):
        again = run(bench, out, cfg=experiment(epochs=1, lr=1e-3))
    assert "experiment.lr: 0.0001 -> 0.001" in caplog.text and "starts over" in caplog.text
    (moved,) = (out / "superseded").iterdir()
    assert (moved / "last.pt").read_bytes() == old_last and (moved / "checkpoint.pt").is_file()
    assert again.completed and again.epochs_completed == 1
    resumed = torch.load(again.last, weights_only=True)
    assert resumed["config"]["experiment"]["lr"] == 1e-3


def test_non_finite_teacher_feature_stops_with_epoch_step_and_term(bench: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    per_epoch = steps_per_epoch(bench)
    original = FeatureStore.get_rows  # what the trainer's collator reads by
    calls = {"images": 0}

    def get_rows(self, rows, dtype=np.float32):
        values = original(self, rows, dtype)
        if self.attrs["modality"] == "images":
            calls["images"] += 1
            if calls["images"] > per_epoch:  # the first batch of epoch 2
                values = values.copy()
                values[0, 0] = np.inf
        return values

    monkeypatch.setattr(FeatureStore, "get_rows", get_rows)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=rf"epoch 2, step {per_epoch + 1} .*'csa'"):
        run(bench, out)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert not (out / "checkpoint.pt").exists()
    assert len(read_log(out / "train_log.csv")) == 1


def test_exploding_learning_rate_stops_in_the_first_epoch(bench: dict, tmp_path: Path) -> None:
    out = tmp_path / "explode"
    cfg = experiment(method="base", lr=1e30, min_lr=1e30, epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+ .*'itr'"):
        run(bench, out, cfg=cfg)
    assert not (out / "last.pt").exists() and not (out / "checkpoint.pt").exists()


def test_base_needs_no_teacher(bench: dict, tmp_path: Path) -> None:
    cfg = experiment(method="base", image_teacher=None, text_teacher=None, epochs=1)
    result = train(cfg, STUDENT, bench["dataset_root"], bench["images_manifest"], bench["texts_manifest"],
                   [tmp_path / "absent-images-0.h5"], [], tmp_path / "base")
    assert result.completed
    row = read_log(result.train_log)[0]
    assert row["loss_csa"] == "" and row["loss_usa"] == "" and row["loss_itr"] != ""


def test_missing_teacher_shards_are_an_error(bench: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image teacher's feature shards"):
        train(experiment(), STUDENT, bench["dataset_root"], bench["images_manifest"], bench["texts_manifest"],
              [], bench["text_shards"], tmp_path / "a")
    with pytest.raises(ValueError, match="needs text_teacher"):
        run(bench, tmp_path / "b", cfg=experiment(text_teacher=None))
    with pytest.raises(FileNotFoundError, match="missing"):
        train(experiment(), STUDENT, bench["dataset_root"], bench["images_manifest"], bench["texts_manifest"],
              bench["image_shards"][:1] + [tmp_path / "images-1.h5"], bench["text_shards"], tmp_path / "c")


def test_shards_of_another_manifest_are_refused(bench: dict, tmp_path: Path) -> None:
    # Text shards given as image shards: their manifest_sha256 is the texts manifest's.
    with pytest.raises(ShardError, match="manifest_sha256|teacher|modality"):
        train(experiment(), STUDENT, bench["dataset_root"], bench["images_manifest"], bench["texts_manifest"],
              bench["text_shards"], bench["text_shards"], tmp_path / "x")
    ids = pd.read_parquet(bench["images_manifest"])["image_id"].tolist()
    other = write_random_shards(tmp_path / "other", bench["texts_manifest"], ids, "images", "img-teacher", 24)
    with pytest.raises(ShardError, match="manifest_sha256"):
        train(experiment(), STUDENT, bench["dataset_root"], bench["images_manifest"], bench["texts_manifest"],
              other, bench["text_shards"], tmp_path / "y")


def test_epoch_order_is_seeded_by_seed_plus_epoch() -> None:
    sampler = EpochBatchSampler(10, 4, seed=23)
    sampler.set_epoch(1)
    first = sampler.batches()
    sampler.set_epoch(2)
    second = sampler.batches()
    sampler.set_epoch(1)
    assert sampler.batches() == first != second
    assert sorted(i for b in first for i in b) == list(range(10))
    assert [len(b) for b in first] == [4, 4, 2]


def test_schedule_and_parameter_groups() -> None:
    lrs = cosine_schedule(1e-5, 1e-6, 4)
    assert lrs[0] == pytest.approx(1e-5) and np.all(np.diff(lrs) < 0) and lrs[-1] > 1e-6
    from softref.models.student import Student

    student = Student("softref-tiny")
    decay, no_decay = parameter_groups(student, 1e-4)
    names = {id(p): n for n, p in student.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"tau", "tau_c", "tau_image", "tau_text"} <= no_decay_names
    assert all(n.endswith("bias") or student.get_parameter(n).ndim < 2 for n in no_decay_names)
    assert "clip.logit_scale" not in no_decay_names  # frozen: not optimised


def test_collapsed_embeddings_are_reported(caplog) -> None:
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 16, generator=generator)
    assert mean_direction_norm(spread) < 0.3
    one_way = torch.randn(1, 16, generator=generator) + 1e-3 * torch.randn(200, 16, generator=generator)
    assert mean_direction_norm(one_way) > 0.999
    with caplog.at_level("WARNING", logger="softref.train.trainer"):
        assert not warn_if_collapsed(spread, one_way, "val 1")
        assert not caplog.records
        assert warn_if_collapsed(one_way, 3.0 * one_way, "val 2")
    assert "val 2: the student's embeddings have collapsed" in caplog.text
    assert "lower learning rate" in caplog.text


def test_the_fused_optimizer_makes_the_default_update() -> None:
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(50, 8)) for _ in range(2)]
    with torch.no_grad():
        weights[1].copy_(weights[0])
    default = torch.optim.AdamW([weights[0]], lr=1e-2, weight_decay=1e-2)
    fused = make_optimizer([{"params": [weights[1]], "weight_decay": 1e-2}], 1e-2, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grad = torch.randn(50, 8)
        for weight, optimizer in zip(weights, (default, fused)):
            weight.grad = grad.clone()
            optimizer.step()
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights[0].detach(), torch.zeros(50, 8))


def test_batch_positives_cover_every_caption_of_an_image(bench: dict) -> None:
    from softref.models.student import Student
    from softref.train.data import BatchCollator, TrainPairs

    student = Student("softref-tiny")
    pairs = load_pairs(bench["images_manifest"], bench["texts_manifest"], "train")
    dataset = TrainPairs(pairs, bench["dataset_root"], student.transform)
    with FeatureStore(bench["image_shards"]) as images, FeatureStore(bench["text_shards"]) as texts:
        batch = BatchCollator(student.tokenizer, images, texts)([dataset[i] for i in range(6)])
        expected_image = torch.from_numpy(images.get(list(batch.image_ids)))
        # Built with the pairs (as the trainer builds it), the collator reads the rows it found once.
        by_pair = BatchCollator(student.tokenizer, images, texts, pairs=dataset)
        assert by_pair.teacher_rows is not None and len(by_pair.teacher_rows[1]) == len(dataset)
        again = by_pair([dataset[i] for i in (5, 0, 3)])
        assert torch.equal(again.teacher_image, batch.teacher_image[[5, 0, 3]])
        assert torch.equal(again.teacher_text, batch.teacher_text[[5, 0, 3]])
        # Items that name another pair than their own: another image, another caption of the same
        # image, or no pair at all.
        first, second = dataset[0], dataset[1]
        other_image = next(k for k in range(len(dataset)) if dataset.image_index[k] != first[4])
        same_image = next(k for k in range(1, len(dataset)) if dataset.image_index[k] == first[4])
        for k, wrong in ((1, other_image), (0, same_image), (1, len(dataset)), (1, -1)):
            items = [first, second]
            items[k] = items[k][:-1] + (wrong,)
            with pytest.raises(ValueError, match=rf"item {k} of the batch \(text_id {items[k][3]!r}.* says it is pair "
                                                 rf"{wrong}, which is not that pair"):
                by_pair(items)
        # Teacher rows are found before any batch: a caption without text features stops here.
        with pytest.raises(KeyError, match=rf"id {dataset.text_ids[0]!r} not in the images features"):
            BatchCollator(student.tokenizer, images, images, pairs=dataset)
    positives = batch.positives()
    for i in range(6):
        for j in range(6):
            assert bool(positives[i, j]) == (batch.image_ids[i] == batch.image_ids[j])
    assert positives.sum() > 6  # two captions of one image share a batch here
    assert torch.equal(batch.teacher_image, expected_image)
    assert batch.tokens.shape[0] == 6 and batch.images.shape[0] == 6
    # The collator keeps the stored float16; Batch.to casts on the device, to the same values.
    assert batch.teacher_image.dtype == batch.teacher_text.dtype == torch.float16
    moved = batch.to(torch.device("cpu"))
    assert moved.teacher_image.dtype == moved.teacher_text.dtype == torch.float32
    assert torch.equal(moved.teacher_image, expected_image) and moved.teacher_image.dtype == expected_image.dtype


@pytest.mark.parametrize("overrides", [{}, {"public_code_weighting": True, "teacher_tau": 0.5, "alpha": 0.3}])
def test_training_calls_the_public_objective(bench: dict, tmp_path: Path, monkeypatch, overrides) -> None:
    """The trained path goes through softref.losses.cusa_objective with the experiment's weights: every
    step calls it, and the logged epoch means are the means of what it returned."""
    import softref.losses
    import softref.train.methods.cusa as family

    calls: list[dict] = []

    def recording(out, teacher_image, teacher_text, positives, method, **weights):
        terms = softref.losses.cusa_objective(out, teacher_image, teacher_text, positives, method, **weights)
        calls.append({"weights": weights, "method": method, **{k: float(v.detach()) for k, v in terms.items()}})
        return terms

    monkeypatch.setattr(family, "cusa_objective", recording)
    cfg = experiment(epochs=1, **overrides)
    result = run(bench, tmp_path / "run", cfg)
    assert len(calls) == result.steps == steps_per_epoch(bench)
    expected = {"alpha": cfg.alpha, "beta": cfg.beta, "teacher_tau": cfg.teacher_tau,
                "public_code_weighting": cfg.public_code_weighting}
    assert all(c["weights"] == expected and c["method"] == "cusa" for c in calls)
    row = read_log(tmp_path / "run" / "train_log.csv")[0]
    for term in ("total", "itr", "csa", "usa"):
        assert float(row[f"loss_{term}"]) == pytest.approx(np.mean([c[term] for c in calls]), rel=1e-6, abs=1e-9)


def test_student_captions_are_cleaned_the_same_at_training_and_evaluation(bench: dict, tmp_path: Path) -> None:
    """student_pre_caption (the public code's cleaning of every caption the student sees) is recorded in
    the checkpoint: the evaluation's tokens of a caption are the training batch's tokens."""
    from softref.data.captions import pre_caption
    from softref.evaluate.encode import encode_texts
    from softref.models.student import Student, load_student
    from softref.train.data import BatchCollator

    result = run(bench, tmp_path / "run", experiment(epochs=1, student_pre_caption=True))
    model, ckpt = load_student(result.checkpoint)
    assert ckpt["config"]["experiment"]["student_pre_caption"] is True and model.pre_caption
    caption = "A Person, wearing a RED hat!  (and blue-green shoes)"
    trained = Student(STUDENT.architecture, pre_caption=True)  # as the trainer builds it
    pixels = torch.zeros(3, 32, 32)
    batch = BatchCollator(trained.tokenize)([(pixels, caption, "i", "t", 0, "", 0)])
    assert torch.equal(model.tokenize([caption]), batch.tokens)
    assert torch.equal(batch.tokens, model.tokenizer([pre_caption(caption)]))
    assert not torch.equal(batch.tokens, model.tokenizer([caption]))
    same = encode_texts(model, [caption, pre_caption(caption)])
    assert torch.equal(same[0], same[1])
    # Switched off, the student reads captions as annotated, at training and at evaluation.
    raw = run(bench, tmp_path / "raw", experiment(epochs=1, student_pre_caption=False))
    raw_model, _ = load_student(raw.checkpoint)
    assert not raw_model.pre_caption and torch.equal(raw_model.tokenize([caption]), model.tokenizer([caption]))


def test_online_teachers_train_as_their_shards(tmp_path: Path) -> None:
    """teacher_features online (the teachers run on every batch) trains exactly as the same teachers'
    shards do: the oracle teacher, which is deterministic, gives bit-identical runs on the CPU; a
    mixed setting (image from shards, text online) too."""
    from softref.config import TeacherSpec
    from softref.features.extract import extract_image_features, extract_text_features
    from softref.teachers import load_teacher

    demo = synthesize_demo(tmp_path / "raw", num_identities=6, images_per_identity=2, captions_per_image=2,
                           image_size=32, person_size=(32, 16), sts_pairs=0)
    manifests = tmp_path / "manifests"
    prepare("karpathy", demo["coco_root"], manifests, annotations=str(demo["coco_annotations"]))
    specs = {f"oracle-{m}": TeacherSpec(name=f"oracle-{m}", kind="oracle-attributes", modality=m,
                                        weights=str(demo["oracle_attributes"])) for m in ("image", "text")}
    extract_image_features(manifests / "images.parquet", demo["coco_root"], load_teacher(specs["oracle-image"]),
                           tmp_path / "img" / "images-0.h5", shard=0, num_shards=1, num_workers=0, dtype="float32")
    extract_text_features(manifests / "texts.parquet", load_teacher(specs["oracle-text"]), tmp_path / "txt" / "texts-0.h5",
                          shard=0, num_shards=1, dtype="float32")
    cfg = experiment(epochs=1, image_teacher="oracle-image", text_teacher="oracle-text")
    common = (STUDENT, demo["coco_root"], manifests / "images.parquet", manifests / "texts.parquet")
    shards = train(cfg, *common, [tmp_path / "img" / "images-0.h5"], [tmp_path / "txt" / "texts-0.h5"],
                   tmp_path / "shards")
    from dataclasses import replace

    from softref.config import TeacherFeaturesConfig

    runs = {}
    for name, sources in (("online", ("online", "online")), ("mixed", ("shards", "online"))):
        online = replace(cfg, teacher_features=TeacherFeaturesConfig(*sources))
        image_shards = [tmp_path / "img" / "images-0.h5"] if sources[0] == "shards" else []
        runs[name] = train(online, *common, image_shards, [], tmp_path / name, teachers=specs)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in MEASURED_COLUMNS} for r in rows]  # noqa: E731
    expected = strip(read_log(shards.train_log))
    for name, result in runs.items():
        assert strip(read_log(result.train_log)) == expected, name
        a = torch.load(shards.checkpoint, weights_only=True)["model"]
        b = torch.load(result.checkpoint, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    facts = torch.load(runs["online"].checkpoint, weights_only=True)["config"]["inputs"]
    assert facts["image_teacher"]["online"] and facts["text_teacher"]["online"]
    with pytest.raises(ValueError, match=r"computes its image teacher's features online, but teacher 'oracle-image' "
                                         r"is not among the run's teachers"):
        train(replace(cfg, teacher_features=TeacherFeaturesConfig("online", "online")), *common, [], [],
              tmp_path / "no-specs")


# ---------------------------------------------------------------------------------------------
# val_max_images: each epoch validates on the first val images, the selected model on all of them
# ---------------------------------------------------------------------------------------------
VAL_KEYS = tuple(f"val_{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)) + ("val_rsum",)


def _val_row(metrics: dict) -> dict:
    """image_text_metrics' / evaluate_image_text's numbers under the trainer's val keys."""
    row = {f"val_{d}_R@{k}": metrics[d][f"R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)}
    row["val_rsum"] = metrics["rsum"]
    return row


def test_val_subset_keeps_the_first_images_and_only_their_captions(bench: dict) -> None:
    from softref.evaluate.retrieval import SplitItems, split_items

    items = SplitItems(split="val", image_ids=("a", "b", "c"), image_paths=("pa", "pb", "pc"),
                       text_ids=("t0", "t1", "t2", "t3", "t4"), captions=("c0", "c1", "c2", "c3", "c4"),
                       text_image_ids=("c", "a", "b", "a", "c"), image_identities=("x", "y", "x"),
                       text_identities=("x", "x", "y", "x", "x"))
    sub = items.first_images(2)
    assert (sub.image_ids, sub.image_paths, sub.image_identities) == (("a", "b"), ("pa", "pb"), ("x", "y"))
    # The captions of a and b only, in their manifest order (t0 and t4 annotate c).
    assert sub.text_ids == ("t1", "t2", "t3") and sub.captions == ("c1", "c2", "c3")
    assert sub.text_image_ids == ("a", "b", "a") and sub.text_identities == ("x", "y", "x")
    assert sub.relevant().tolist() == [[True, False, True], [False, True, False]]
    assert sub.identity_relevant().tolist() == [[True, False, True], [False, True, False]]
    assert items.first_images(3) is items and items.first_images(100) is items
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"integer >= 1, found"):
            items.first_images(bad)
    # A manifest split: its first image (image_id order) and that image's captions.
    val = split_items(bench["images_manifest"], bench["texts_manifest"], "val")
    one = val.first_images(1)
    assert val.num_images > 1 and one.image_ids == val.image_ids[:1]
    assert one.text_ids == tuple(t for t, i in zip(val.text_ids, val.text_image_ids) if i == val.image_ids[0])
    assert 0 < one.num_texts < val.num_texts


def test_val_max_images_must_be_a_positive_integer(bench: dict, tmp_path: Path) -> None:
    from softref.config import ConfigError, validate_raw

    for bad in (0, 2.5, "all", True):
        raw = {"experiments": {"e": {"dataset": "d", "student": "s", "val_max_images": bad}}}
        with pytest.raises(ConfigError, match="experiments.e.val_max_images"):
            validate_raw(raw)
    raw = {"experiments": {"e": {"dataset": "d", "student": "s"}}}
    assert validate_raw(raw)["experiments"]["e"]["val_max_images"] is None
    with pytest.raises(ValueError, match=r"'tiny-cusa': val_max_images: expected an integer >= 1 .* found 0"):
        run(bench, tmp_path / "zero", cfg=experiment(val_max_images=0))


def test_val_max_images_selects_on_the_subset_and_records_the_whole_split(
        bench: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from softref.evaluate.retrieval import encode_split, evaluate_image_text, image_text_metrics, split_items
    from softref.models.student import load_student
    from softref.train import trainer

    out, cfg = tmp_path / "subset", experiment(val_max_images=1)
    with caplog.at_level("INFO", logger="softref.train.trainer"):
        result = run(bench, out, cfg=cfg)
    rows = read_log(result.train_log)
    assert list(rows[0]) == list(LOG_COLUMNS) and len(rows) == 2
    # The selection: the first epoch of the best subset RSUM.
    rsums = [float(r["val_rsum"]) for r in rows]
    assert result.best_epoch == 1 + int(np.argmax(rsums)) and result.best_val_rsum == max(rsums)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["epoch"] == result.best_epoch
    assert ckpt["val"] == {k: float(rows[result.best_epoch - 1][k]) for k in VAL_KEYS}
    # The logged numbers are the subset's: the selected model on the first val image and its captions.
    val = split_items(bench["images_manifest"], bench["texts_manifest"], "val")
    model, _ = load_student(result.checkpoint)
    subset = val.first_images(1)
    image_emb, text_emb = encode_split(model, subset, bench["dataset_root"], batch_size=BATCH)
    assert ckpt["val"] == _val_row(image_text_metrics(image_emb, text_emb, subset.relevant()))
    # val_full: an evaluation of the selected checkpoint on the whole val split.
    whole = evaluate_image_text(result.checkpoint, bench["dataset_root"], bench["images_manifest"],
                                bench["texts_manifest"], "val", batch_size=BATCH, device="cpu")
    assert ckpt["val_full"] == {**_val_row(whole), "num_images": val.num_images, "num_texts": val.num_texts}
    assert (whole["num_images"], whole["num_texts"]) == (val.num_images, val.num_texts) == (2, 4)
    assert f"on the whole val split (2 images, 4 captions): RSUM {whole['rsum']:.2f}" in caplog.text
    assert torch.load(out / "best.pt", weights_only=True)["val_full"] == ckpt["val_full"]
    # Computed once: a finished run called again keeps the record and validates nothing.
    def no_validation(*args, **kwargs):
        raise AssertionError("a finished run validated again")

    monkeypatch.setattr(trainer, "_val_metrics", no_validation)
    (out / "checkpoint.pt").unlink()
    again = run(bench, out, cfg=cfg)
    assert again.completed and again.steps == result.steps
    assert torch.load(again.checkpoint, weights_only=True)["val_full"] == ckpt["val_full"]


def test_val_max_images_null_validates_on_the_whole_split_as_before(uninterrupted, bench: dict,
                                                                    tmp_path: Path) -> None:
    from softref.checkpoints import save_checkpoint
    from softref.evaluate.retrieval import evaluate_image_text

    result, full = uninterrupted  # val_max_images: null, the default
    selected = torch.load(full / "checkpoint.pt", weights_only=True)
    assert selected["config"]["experiment"]["val_max_images"] is None and "val_full" not in selected
    rows = read_log(full / "train_log.csv")
    whole = evaluate_image_text(result.checkpoint, bench["dataset_root"], bench["images_manifest"],
                                bench["texts_manifest"], "val", batch_size=BATCH, device="cpu")
    assert {k: float(rows[selected["epoch"] - 1][k]) for k in VAL_KEYS} == _val_row(whole) == selected["val"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in MEASURED_COLUMNS} for r in rows]  # noqa: E731

    # A subset at least as large as the split is the same validation: the same log and models; its
    # val_full is the selected epoch's own val.
    covering = run(bench, tmp_path / "covering", cfg=experiment(val_max_images=100))
    assert strip(read_log(covering.train_log)) == strip(rows)
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(covering.checkpoint, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["val_full"] == {**b["val"], "num_images": 2, "num_texts": 4}

    # A resume state written before the key existed (no val_max_images) resumes under null.
    out = tmp_path / "before-the-key"
    run(bench, out, max_steps=steps_per_epoch(bench))
    state = torch.load(out / "last.pt", weights_only=True)
    del state["config"]["experiment"]["val_max_images"]
    save_checkpoint(state, out / "last.pt")
    resumed = run(bench, out)
    assert not (out / "superseded").exists() and resumed.completed
    assert strip(read_log(resumed.train_log)) == strip(rows)
