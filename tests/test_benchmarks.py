"""evaluate_benchmark end to end: every protocol on tiny demo data with an untrained tiny student."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from softref.data.adapters import prepare
from softref.data.common import frame
from softref.data.manifest import IMAGE_COLUMNS, TEXT_COLUMNS, file_sha256, write_manifest, write_pairs
from softref.data.synthetic import synthesize_demo
from softref.evaluate.benchmarks import PROTOCOLS, EvaluationSession, evaluate_benchmark
from softref.evaluate.intervals import Bootstrap
from softref.evaluate.protocols import (
    eccv_scores,
    identity_relevance,
    leave_one_out_r1,
    person_scores,
    sts_table,
    zero_shot_scores,
)
from softref.evaluate.retrieval import encode_split, image_text_metrics, split_items, write_json
from softref.models.student import load_student
from softref.models.student import Student
from softref.checkpoints import save_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
COMMON = {"benchmark", "protocol", "split", "dataset", "paper_dataset", "experiment", "label", "student", "method",
          "checkpoint", "checkpoint_sha256", "selected_epoch", "metrics"}
ROW_KEYS = {"dataset", "direction", "metric", "value", "variant"}
CI_KEYS = {"ci_low", "ci_high"}
PERSON_METRICS = ["R@1", "R@5", "R@10", "mAP", "mINP"]


@dataclass(frozen=True)
class Refine:
    k: int = 2
    tau: float = 0.1
    top_k: int = 4
    lam: float = 0.5


# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


def _write_images(rows: list[tuple[str, str, str, str]], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(frame(rows, IMAGE_COLUMNS), out / "images.parquet", "images")
    write_manifest(frame([], TEXT_COLUMNS), out / "texts.parquet", "texts")
    return out / "images.parquet", out / "texts.parquet"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny demo data in every layout the protocols read, and two untrained tiny-student checkpoints."""
    root = tmp_path_factory.mktemp("bench")
    demo = synthesize_demo(root / "raw", num_identities=15, images_per_identity=2, captions_per_image=2,
                           image_size=32, person_size=(32, 16), sts_pairs=0)
    prepare("karpathy", demo["coco_root"], root / "coco", annotations=str(demo["coco_annotations"]))
    prepare("cuhk-pedes", demo["person_root"], root / "person")
    eccv_root = Path(shutil.copytree(FIXTURES / "eccv", root / "eccv-raw"))
    prepare("eccv", eccv_root, root / "eccv", eccv_dir="eccv_caption_data")

    retrieval = demo["retrieval_root"]
    files = sorted(p.relative_to(retrieval).as_posix() for p in retrieval.rglob("*.png"))
    loo = [(f, f, f.split("/")[1], f.split("/")[0]) for f in files]
    # In-Shop-like: the first image of each val/test class queries, the second is in the gallery.
    qg = [(f, f, f.split("/")[1], "query" if f.endswith("/0.png") else "gallery")
          for f in files if not f.startswith("train/")]
    sts_dir = root / "sts"
    _write_images([], sts_dir)
    tasks = ["STS12/MSRpar"] * 4 + ["STS13/FNWN"] * 4 + ["demo"] * 5 + ["other"] * 3
    rng = np.random.default_rng(0)
    words = ["red hat", "blue bag", "green shoes", "a star", "a circle", "white top", "black umbrella"]
    pairs = pd.DataFrame({
        "pair_id": [f"p{i:02d}" for i in range(len(tasks))],
        "sentence1": [f"a figure with a {words[i % 7]}" for i in range(len(tasks))],
        "sentence2": [f"someone with {words[(i * 3 + 1) % 7]}" for i in range(len(tasks))],
        "score": rng.uniform(0, 5, size=len(tasks)).round(2),
        "task": tasks,
        "split": ["test"] * (len(tasks) - 3) + ["train"] * 3,
    })
    write_pairs(pairs, sts_dir / "pairs.parquet")

    torch.manual_seed(0)
    state = Student("softref-tiny").state_dict()
    config = {"experiment": {"name": "tiny-mmref", "method": "mmref", "label": "MMRef (tiny)"},
              "student": {"name": "tiny", "architecture": "softref-tiny"}}
    plain = root / "run" / "checkpoint.pt"
    save_checkpoint({"model": state, "config": config, "epoch": 2}, plain)
    banked = root / "run-bank" / "checkpoint.pt"
    bank = torch.nn.functional.normalize(torch.randn(5, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    save_checkpoint({"model": state, "config": {**config, "experiment": {"name": "tiny-base", "method": "base"}},
                     "epoch": 1, "mmref_head": {"bank": bank}, "mmref": {"identities": list("abcde"), "config": {}}},
                    banked)
    return {
        "root": root, "demo": demo, "plain": plain, "banked": banked, "bank": bank, "eccv_root": eccv_root,
        "loo": _write_images(loo, root / "retrieval"), "qg": _write_images(qg, root / "inshop"),
        "sts": _write_images([], sts_dir), "pairs": pairs,
    }


def run(checkpoint: Path, protocol: str, dataset_root: Path, manifests: Path | tuple[Path, Path], *,
        split: str = "test", benchmark: str = "bench", paper_dataset: str | None = None, options=None,
        **kw) -> dict:
    images, texts = (manifests / "images.parquet", manifests / "texts.parquet") if isinstance(manifests, Path) \
        else manifests
    result = evaluate_benchmark(checkpoint, protocol=protocol, dataset_root=dataset_root, images_manifest=images,
                                texts_manifest=texts, split=split, benchmark=benchmark, dataset="demo",
                                paper_dataset=paper_dataset, options=options or {}, batch_size=5, device="cpu", **kw)
    assert COMMON <= set(result)
    assert result["protocol"] == protocol and result["benchmark"] == benchmark and result["dataset"] == "demo"
    assert result["checkpoint"] == str(checkpoint) and result["checkpoint_sha256"] == file_sha256(checkpoint)
    if protocol == "training-cost":  # no queries: no interval
        assert all(set(row) == ROW_KEYS for row in result["metrics"]) and result["bootstrap"] is None
        return result
    # Every other protocol's rows carry a bootstrap interval over queries that holds the value.
    assert all(set(row) == ROW_KEYS | CI_KEYS for row in result["metrics"])
    assert all(row["ci_low"] <= row["value"] <= row["ci_high"] for row in result["metrics"])
    record = result["bootstrap"]
    assert set(record) == {"resamples", "seed", "level", "method", "query_sets"}
    assert (record["level"], record["method"]) == (0.95, "percentile")
    assert record["resamples"] == kw.get("bootstrap_resamples", 1000) and record["seed"] == kw.get("bootstrap_seed", 0)
    assert record["query_sets"] and all(isinstance(n, int) and n > 0 for n in record["query_sets"].values())
    return result


def encoded(checkpoint: Path, root: Path, manifests: Path, split: str = "test", head: str = "cross"):
    model, _ = load_student(checkpoint)
    items = split_items(manifests / "images.parquet", manifests / "texts.parquet", split)
    image_emb, text_emb = encode_split(model, items, root, batch_size=7, head=head)
    return items, image_emb, text_emb


def identities(manifests: Path, items) -> tuple[list[str], list[str]]:
    images = pd.read_parquet(manifests / "images.parquet").set_index("image_id")["identity"]
    texts = pd.read_parquet(manifests / "texts.parquet").set_index("text_id")["identity"]
    return [images[i] for i in items.image_ids], [texts[t] for t in items.text_ids]


def values(result: dict, variant: str = "") -> dict[tuple[str, str, str], float]:
    rows = [r for r in result["metrics"] if r["variant"] == variant]
    return {(r["dataset"], r["direction"], r["metric"]): r["value"] for r in rows}


def test_image_text(bench: dict, tmp_path: Path) -> None:
    result = run(bench["plain"], "image-text", bench["demo"]["coco_root"], bench["root"] / "coco",
                 benchmark="demo-coco-test", paper_dataset="MSCOCO-5K")
    assert result["label"] == "MMRef (tiny)" and result["method"] == "mmref" and result["experiment"] == "tiny-mmref"
    assert result["student"] == "tiny" and result["selected_epoch"] == 2 and result["paper_dataset"] == "MSCOCO-5K"
    got = values(result)
    assert len(got) == 7 and {d for d, _, _ in got} == {"MSCOCO-5K"}
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            assert got[("MSCOCO-5K", direction, f"R@{k}")] == result[direction][f"R@{k}"]
    assert got[("MSCOCO-5K", "both", "RSUM")] == pytest.approx(result["rsum"])
    assert result["bootstrap"]["query_sets"] == {"images": result["num_images"], "captions": result["num_texts"]}
    again = run(bench["plain"], "image-text", bench["demo"]["coco_root"], bench["root"] / "coco",
                benchmark="demo-coco-test", paper_dataset="MSCOCO-5K")
    assert again["metrics"] == result["metrics"]  # same seed, same intervals
    other = run(bench["plain"], "image-text", bench["demo"]["coco_root"], bench["root"] / "coco",
                benchmark="demo-coco-test", paper_dataset="MSCOCO-5K", bootstrap_seed=1, bootstrap_resamples=300)
    assert [r["value"] for r in other["metrics"]] == [r["value"] for r in result["metrics"]]
    assert [(r["ci_low"], r["ci_high"]) for r in other["metrics"]] != [(r["ci_low"], r["ci_high"])
                                                                       for r in result["metrics"]]
    path = tmp_path / "eval" / "demo-coco-test.json"
    write_json(result, path)
    assert json.loads(path.read_text()) == result


def test_eccv_identity_relevance(bench: dict) -> None:
    manifests = bench["root"] / "person"
    result = run(bench["plain"], "eccv", bench["demo"]["person_root"], manifests, options={"relevance": "identity"})
    items, image_emb, text_emb = encoded(bench["plain"], bench["demo"]["person_root"], manifests)
    expected = eccv_scores(image_emb, text_emb, identity_relevance(*identities(manifests, items)))
    cells = {("bench", d, m): expected[d][m] for d in ("i2t", "t2i") for m in ("mAP@R", "R-P", "R@1")}
    # The eccv JSON adds the ablation table's avg: the mean of the six numbers.
    assert values(result) == pytest.approx({**cells, ("bench", "both", "avg"): sum(cells.values()) / 6})
    assert result["bootstrap"]["query_sets"] == {"images": 6, "captions": 12}
    assert result["relevance"] == "identity" and result["num_images"] == items.num_images == 6
    assert result["num_queries"] == {"i2t": 6, "t2i": 12}
    json.dumps(result, allow_nan=False)


def test_eccv_caption_relevance(bench: dict) -> None:
    manifests = bench["root"] / "eccv"
    result = run(bench["banked"], "eccv", bench["eccv_root"], manifests, paper_dataset="ECCV Caption",
                 options={"relevance": "eccv", "eccv_dir": "eccv_caption_data"},
                 positives=manifests / "positives.parquet")
    assert result["label"] == "base"  # no label in that experiment config: the method
    assert (result["num_images"], result["num_texts"]) == (3, 6)
    assert result["num_queries"] == {"i2t": 2, "t2i": 2} and result["num_extra_positives"] == 2
    assert result["eccv_dir"] == str(bench["eccv_root"] / "eccv_caption_data")
    got = values(result)
    assert sorted(got) == sorted([("ECCV Caption", d, m) for d in ("i2t", "t2i") for m in ("mAP@R", "R-P", "R@1")]
                                 + [("ECCV Caption", "both", "avg")])
    assert all(0.0 <= v <= 100.0 for v in got.values())
    assert got[("ECCV Caption", "both", "avg")] == pytest.approx(
        sum(v for (_, d, _), v in got.items() if d != "both") / 6)
    # The intervals come from softref's per-query values on the package's ground truth: its queries.
    assert result["bootstrap"]["query_sets"] == {"images": 2, "captions": 2}


# Students trained without USA never train a uni-modal projector: by default (uni_features encoder,
# the public code's choice) the uni-modal benchmarks read the open_clip encoder's own output; with
# uni_features head, the cross-modal head's. "banked" is a base checkpoint, "plain" an mmref one.
UNI_CASES = [("banked", "encoder", "encoder"), ("plain", "encoder", "encoder"), ("plain", "head", "cross")]


@pytest.mark.parametrize(("checkpoint", "uni_features", "head"), UNI_CASES)
def test_image_retrieval_leave_one_out(bench: dict, checkpoint: str, uni_features: str, head: str) -> None:
    images, _ = bench["loo"]
    result = run(bench[checkpoint], "image-retrieval", bench["demo"]["retrieval_root"], bench["loo"],
                 options={"mode": "leave-one-out"}, paper_dataset="CUB", uni_features=uni_features)
    assert result["mode"] == "leave-one-out" and (result["num_images"], result["num_classes"]) == (6, 3)
    model, _ = load_student(bench[checkpoint])
    frame_ = pd.read_parquet(images)
    test = frame_[frame_["split"] == "test"]
    from PIL import Image

    pixels = torch.stack([model.transform(Image.open(bench["demo"]["retrieval_root"] / p).convert("RGB"))
                          for p in test["path"]])
    assert result["head"] == head  # trained without USA: its uni-modal projectors were never trained
    with torch.no_grad():
        emb = model.encode_image(pixels, head=head)
    assert values(result) == {("CUB", "i2i", "R@1"): pytest.approx(leave_one_out_r1(emb, test["identity"].tolist()))}
    assert result["bootstrap"]["query_sets"] == {"images": 6}


def test_image_retrieval_query_gallery(bench: dict) -> None:
    result = run(bench["plain"], "image-retrieval", bench["demo"]["retrieval_root"], bench["qg"], split="ignored",
                 options={"mode": "query-gallery"})
    assert result["mode"] == "query-gallery" and (result["num_queries"], result["num_gallery"]) == (6, 6)
    assert list(values(result)) == [("bench", "i2i", "R@1")]
    assert result["bootstrap"]["query_sets"] == {"queries": 6}


@pytest.mark.parametrize(("checkpoint", "uni_features", "head"), UNI_CASES)
def test_sts(bench: dict, checkpoint: str, uni_features: str, head: str) -> None:
    images, texts = bench["sts"]
    result = run(bench[checkpoint], "sts", bench["root"], bench["sts"], pairs=images.parent / "pairs.parquet",
                 uni_features=uni_features)
    assert result["num_pairs"] == 13 and result["pairs_per_task"] == {"STS12/MSRpar": 4, "STS13/FNWN": 4, "demo": 5}
    assert [r["dataset"] for r in result["metrics"]] == ["sts12", "sts13", "demo", "avg"]
    model, _ = load_student(bench[checkpoint])
    test = bench["pairs"][bench["pairs"]["split"] == "test"].sort_values("pair_id").reset_index(drop=True)
    assert result["head"] == head
    with torch.no_grad():
        emb1 = model.encode_text(model.tokenizer(test["sentence1"].tolist()), head=head)
        emb2 = model.encode_text(model.tokenizer(test["sentence2"].tolist()), head=head)
    expected = sts_table(test, emb1, emb2)
    assert [r["value"] for r in result["metrics"]] == pytest.approx([r["value"] for r in expected], abs=1e-4)
    assert result["bootstrap"]["query_sets"] == {"sts12 pairs": 4, "sts13 pairs": 4, "demo pairs": 5}
    # pairs.parquet is found beside the images manifest by default.
    assert run(bench[checkpoint], "sts", bench["root"], bench["sts"], uni_features=uni_features)["metrics"] \
        == result["metrics"]


def test_person_refinement_without_bank_is_an_error(bench: dict) -> None:
    """Refinement asked for and impossible (a student with no reference bank) stops with an error that
    names the benchmark and the checkpoint; without refinement the plain ranking is scored."""
    manifests = bench["root"] / "person"
    with pytest.raises(ValueError, match=r"benchmark 'bench' .*refined variant.* has no reference bank") as err:
        run(bench["plain"], "person", bench["demo"]["person_root"], manifests, refine=Refine(),
            paper_dataset="CUHK-PEDES")
    assert str(bench["plain"]) in str(err.value)
    result = run(bench["plain"], "person", bench["demo"]["person_root"], manifests, paper_dataset="CUHK-PEDES")
    assert {r["variant"] for r in result["metrics"]} == {""}
    assert [m for _, _, m in values(result)] == PERSON_METRICS
    assert result["num_references"] is None and result["refine"] is None
    items, image_emb, text_emb = encoded(bench["plain"], bench["demo"]["person_root"], manifests)
    image_labels, text_labels = identities(manifests, items)
    expected = person_scores(text_emb, text_labels, image_emb, image_labels, dataset="CUHK-PEDES",
                             bootstrap=Bootstrap())
    assert result["metrics"] == expected
    assert result["bootstrap"]["query_sets"] == {"captions": 12}
    assert (result["num_queries"], result["num_gallery"], result["num_identities"]) == (12, 6, 3)


def test_person_with_bank_adds_the_refined_variant(bench: dict) -> None:
    manifests = bench["root"] / "person"
    root = bench["demo"]["person_root"]
    result = run(bench["banked"], "person", root, manifests, refine=Refine())
    assert result["num_references"] == 5 and result["refine"] == {"k": 2, "tau": 0.1, "top_k": 4, "lam": 0.5}
    assert [r["variant"] for r in result["metrics"]] == [""] * 5 + ["refined"] * 5
    items, image_emb, text_emb = encoded(bench["banked"], root, manifests)
    image_labels, text_labels = identities(manifests, items)
    expected = person_scores(text_emb, text_labels, image_emb, image_labels, references=bench["bank"],
                             refine=Refine(), dataset="bench", bootstrap=Bootstrap())
    assert result["metrics"] == expected
    zero = run(bench["banked"], "person", root, manifests, refine=Refine(lam=0.0))
    assert values(zero, "refined") == values(zero, "") == values(result, "")
    # One resample of the captions for both rankings: equal rankings, equal intervals.
    plain = [(r["ci_low"], r["ci_high"]) for r in zero["metrics"] if r["variant"] == ""]
    assert [(r["ci_low"], r["ci_high"]) for r in zero["metrics"] if r["variant"] == "refined"] == plain
    no_refine = run(bench["banked"], "person", root, manifests)
    assert {r["variant"] for r in no_refine["metrics"]} == {""}


def test_zero_shot(bench: dict) -> None:
    manifests = bench["root"] / "person"
    root = bench["demo"]["person_root"]
    result = run(bench["plain"], "zero-shot", root, manifests, options={"k": 3}, paper_dataset="CUB")
    assert list(values(result)) == [("CUB", "t2i", "AP@3"), ("CUB", "i2t", "top-1")]
    assert (result["k"], result["num_images"], result["num_texts"], result["num_classes"]) == (3, 6, 12, 3)
    items, image_emb, text_emb = encoded(bench["plain"], root, manifests)
    image_labels, text_labels = identities(manifests, items)
    expected = zero_shot_scores(image_emb, image_labels, text_emb, text_labels, k=3)
    assert values(result)[("CUB", "t2i", "AP@3")] == pytest.approx(expected["t2i"]["P@3"])  # Reed et al.'s AP@k
    assert values(result)[("CUB", "i2t", "top-1")] == pytest.approx(expected["i2t"]["top-1"])
    assert result["t2i_average_precision_at_k"] == pytest.approx(expected["t2i"]["AP@3"])
    assert result["bootstrap"]["query_sets"] == {"classes": 3, "images": 6}
    default = run(bench["plain"], "zero-shot", root, manifests)
    assert [m for _, _, m in values(default)] == ["AP@50", "top-1"]


def test_one_session_loads_once_encodes_each_split_once_and_changes_no_number(bench: dict, monkeypatch) -> None:
    """The evaluate job's way: one EvaluationSession for the run's benchmarks. The student is loaded
    once, a split that several protocols score is encoded once, and every JSON equals the one a
    separate call writes."""
    import softref.evaluate.benchmarks as benchmarks

    root, manifests = bench["demo"]["person_root"], bench["root"] / "person"
    calls = {"load": 0, "encode": 0}
    real_load, real_encode = benchmarks.load_student, benchmarks.encode_split

    def load(*args, **kwargs):
        calls["load"] += 1
        return real_load(*args, **kwargs)

    def encode(*args, **kwargs):
        calls["encode"] += 1
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(benchmarks, "load_student", load)
    monkeypatch.setattr(benchmarks, "encode_split", encode)
    asked = [("person", {}), ("zero-shot", {"options": {"k": 3}}), ("eccv", {"options": {"relevance": "identity"}})]
    session = EvaluationSession(bench["banked"], "cpu")
    shared = [run(bench["banked"], protocol, root, manifests, session=session, **kw) for protocol, kw in asked]
    assert calls == {"load": 1, "encode": 1}
    alone = [run(bench["banked"], protocol, root, manifests, **kw) for protocol, kw in asked]
    assert calls == {"load": 4, "encode": 4}
    assert shared == alone
    # Another split is encoded afresh; a session of another checkpoint (or a device beside it) is refused.
    run(bench["banked"], "person", root, manifests, split="train", session=session)
    assert calls == {"load": 4, "encode": 5}
    with pytest.raises(ValueError, match=r"the session evaluates .*run-bank.*checkpoint.pt on cpu; found checkpoint"):
        evaluate_benchmark(bench["plain"], protocol="person", dataset_root=root, images_manifest=manifests / "images.parquet",
                           texts_manifest=manifests / "texts.parquet", split="test", benchmark="b", dataset="demo",
                           paper_dataset=None, options={}, session=session)


def test_every_protocol_is_covered() -> None:
    assert set(PROTOCOLS) == {"image-text", "eccv", "image-retrieval", "sts", "person", "zero-shot", "training-cost"}


@pytest.mark.parametrize(
    ("protocol", "options", "pattern"),
    [
        ("nosuch", {}, r"unknown protocol 'nosuch'; known: \['image-text', 'eccv'"),
        ("person", {"k": 3}, r"unknown option\(s\) \['k'\]; expected some of none"),
        ("image-retrieval", {"mode": "both"}, r"option 'mode' must be one of \['leave-one-out', 'query-gallery'\]"),
        ("eccv", {"relevance": "all"}, r"option 'relevance' must be one of \['eccv', 'identity'\], found 'all'"),
        ("zero-shot", {"k": "50"}, r"option 'k' must be a positive integer"),
    ],
)
def test_bad_protocol_or_options(bench: dict, protocol: str, options: dict, pattern: str) -> None:
    manifests = bench["root"] / "person"
    with pytest.raises(ValueError, match=pattern):
        evaluate_benchmark(bench["plain"], protocol=protocol, dataset_root=bench["demo"]["person_root"],
                           images_manifest=manifests / "images.parquet", texts_manifest=manifests / "texts.parquet",
                           split="test", benchmark="bench", dataset="demo", paper_dataset=None, options=options,
                           device="cpu")


def test_eccv_relevance_on_non_coco_ids_is_a_clear_error(bench: dict) -> None:
    manifests = bench["root"] / "person"
    with pytest.raises(ValueError, match=r"image_ids\[0\] is .*integer COCO ids"):
        run(bench["plain"], "eccv", bench["demo"]["person_root"], manifests, options={"relevance": "eccv"})


def test_empty_split_is_an_error(bench: dict) -> None:
    with pytest.raises(ValueError, match=r"no image with split 'query'; splits found: \['test', 'train', 'val'\]"):
        run(bench["plain"], "image-retrieval", bench["demo"]["retrieval_root"], bench["loo"], split="query")


@pytest.mark.parametrize(("method", "head"), [("usa", "uni"), ("cusa", "uni"), ("base", "cross"), ("csa", "cross"),
                                              ("mmref", "cross")])
def test_unimodal_benchmarks_read_the_head_usa_trained(method: str, head: str) -> None:
    from softref.evaluate.benchmarks import unimodal_head

    assert unimodal_head({"config": {"experiment": {"method": method}}}, "head") == head
    # The public code's choice (the default): no uni projector without USA, the encoder's output.
    encoder = "uni" if method in ("usa", "cusa") else "encoder"
    assert unimodal_head({"config": {"experiment": {"method": method}}}) == encoder
    with pytest.raises(ValueError, match=r"uni_features: expected one of \['encoder', 'head'\], found 'raw'"):
        unimodal_head({"config": {"experiment": {"method": method}}}, "raw")


def test_an_untrained_bank_gives_no_refined_variant() -> None:
    from softref.evaluate.benchmarks import bank_was_trained

    off = {"global_fusion": False, "local_reconstruction": False, "reference_guidance": True}
    assert not bank_was_trained({"mmref": {"identities": [], "config": off}})
    assert bank_was_trained({"mmref": {"identities": [], "config": {**off, "local_reconstruction": True}}})
    assert bank_was_trained({"mmref": {"identities": [], "config": {}}})  # defaults: both on
    assert bank_was_trained({})


def test_training_cost_reads_the_train_log(bench: dict, tmp_path: Path) -> None:
    """The appendix's Table 13 protocol: mean time per training epoch, peak host and GPU memory."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"experiment": {"name": "c", "method": "cusa", "teacher_features": {"image": "online", "text": "shards"}},
              "student": {"name": "tiny", "architecture": "softref-tiny"}}
    machine = {"device": "cpu", "device_name": "x", "processes": 1, "threads": 2, "cpus": 2}
    save_checkpoint({"model": {}, "config": config, "epoch": 2, "machine": machine}, run_dir / "checkpoint.pt")
    log = "epoch,train_seconds,host_peak_mb,gpu_peak_mb,seconds\n1,60.0,1024.0,,70\n2,120.0,2048.0,,130\n"
    (run_dir / "train_log.csv").write_text(log)
    result = run(run_dir / "checkpoint.pt", "training-cost", bench["root"], bench["root"] / "coco",
                 benchmark="cost")
    assert values(result) == {("cost", "train", "time per epoch (min)"): pytest.approx(1.5),
                              ("cost", "train", "host memory (GB)"): pytest.approx(2.0)}
    assert result["teacher_features"] == {"image": "online", "text": "shards"} and result["machine"] == machine
    assert result["num_epochs"] == 2
    (run_dir / "train_log.csv").write_text(log.replace("2048.0", "nan"))
    with pytest.raises(ValueError, match=r"train_log\.csv, line 3: column 'host_peak_mb': expected a finite number"):
        run(run_dir / "checkpoint.pt", "training-cost", bench["root"], bench["root"] / "coco", benchmark="cost")
    (run_dir / "train_log.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"benchmark 'cost' \(training-cost\): train log not found"):
        run(run_dir / "checkpoint.pt", "training-cost", bench["root"], bench["root"] / "coco", benchmark="cost")


def test_image_text_ranks_give_image_text_metrics_bit_for_bit() -> None:
    """The image-text runner ranks once for the numbers and the per-query ranks; its numbers are
    the trainer's validation function's, to the last bit (tied scores included)."""
    from softref.evaluate.benchmarks import _image_text_ranks

    rng = np.random.default_rng(3)
    images = torch.from_numpy(np.round(rng.standard_normal((9, 4)), 0)).float()
    images[5:] = images[:4]  # tied images
    owner = np.repeat(np.arange(9), 3)
    texts = images[owner] + torch.from_numpy(np.round(rng.standard_normal((27, 4)), 0)).float()
    relevant = owner[None, :] == np.arange(9)[:, None]
    found, ranks = _image_text_ranks(images, texts, relevant)
    assert found == image_text_metrics(images, texts, relevant)
    assert ranks["i2t"].shape == (9,) and ranks["t2i"].shape == (27,)
