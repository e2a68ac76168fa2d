"""Benchmark runner: a trained student on one benchmark, under any protocol, to the evaluation JSON.

:func:`evaluate_benchmark` loads a selected-model checkpoint, encodes what the protocol needs
with the right head and hands the embeddings to :mod:`softref.evaluate.protocols`:

=============== ========== ===================================================================
protocol        head       what is encoded and scored
=============== ========== ===================================================================
image-text      cross      images and captions of ``split``; R@1/5/10 both ways, RSUM (Table 1)
eccv            cross      images and captions of ``split``; mAP@R, R-P, R@1 both ways (Table 2)
image-retrieval uni [1]    images of ``split`` (leave-one-out) or of ``query`` / ``gallery``
sts             uni [1]    ``sentence1`` / ``sentence2`` of ``pairs.parquet`` rows of ``split``
person          cross      captions of ``split`` query its images; optional refined variant
zero-shot       cross      images and class-mean captions of ``split``; AP@k and top-1
training-cost   -          the run's ``train_log.csv``: time per epoch, peak host / GPU memory
=============== ========== ===================================================================

[1] For students trained with USA (usa, cusa); the others never train a uni-modal projector,
so they are scored with the open_clip encoder's own output, as the public code does, or with
the cross-modal head (``uni_features``, :func:`unimodal_head`). The JSON names the head used.

Options (``BenchmarkConfig.options``), checked strictly (an unknown key is an error):

- eccv: ``relevance``: ``"eccv"`` (default; ECCV Caption's ground truth through the
  ``eccv_caption`` package) or ``"identity"`` (every image and caption of one manifest
  identity is relevant); ``eccv_dir``: a folder with ECCV Caption's annotation files,
  relative to the dataset root unless absolute (default: the installed package's ``data/``,
  the same default as the ``eccv`` adapter's option of that name).
- image-retrieval: ``mode``: ``"leave-one-out"`` (default) or ``"query-gallery"``.
- zero-shot: ``k``: the AP@k cut-off (default 50). The table's ``AP@k`` is Reed et al.'s: the
  share of the top k images that are of the query's class (precision at k), averaged over the
  classes; the average precision over the top k is kept in the JSON as
  ``t2i_average_precision_at_k``.

The result is the evaluation JSON of every protocol: the common keys (benchmark, protocol,
split, dataset, paper_dataset, experiment, seed, label, student, method, checkpoint,
checkpoint_sha256, selected_epoch), ``metrics`` rows (dataset, direction, metric, value,
variant, and ``ci_low`` / ``ci_high``: a 95 % bootstrap interval over the queries), the
``bootstrap`` record (resamples, seed, level, method, query_sets; see
:mod:`softref.evaluate.intervals`; None for training-cost, which has no queries) and the
protocol's counts. The eccv protocol adds an ``avg`` row (direction ``both``): the mean of its
six numbers, with its interval.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from softref.data.manifest import read_images, read_pairs, read_positives, read_texts
from softref.evaluate.encode import encode_images, encode_texts
from softref.evaluate.intervals import RESAMPLES, SEED, Bootstrap, attach_intervals, check_intervals
from softref.evaluate.metrics import first_relevant_ranks_both_ways, recall_from_ranks
from softref.evaluate.protocols import (
    ECCV_TOP_K,
    eccv_caption_per_query,
    eccv_scores_per_query,
    identity_relevance,
    leave_one_out_hits,
    metric_row,
    person_scores,
    query_gallery_hits,
    refine_parameters,
    sts_table,
    zero_shot_scores_per_query,
)
from softref.evaluate.retrieval import KS, encode_split, split_items
from softref.files import file_sha256
from softref.checkpoints import load_checkpoint
from softref.models.student import load_student
from softref.names import PROTOCOL_OPTIONS, PROTOCOLS
from softref.runtime import default_device

__all__ = ["PROTOCOLS", "PROTOCOL_OPTIONS", "EvaluationSession", "evaluate_benchmark"]

logger = logging.getLogger(__name__)

ECCV_RELEVANCE = ("eccv", "identity")
RETRIEVAL_MODES = ("leave-one-out", "query-gallery")
ECCV_METRICS = ("mAP@R", "R-P", "R@1")


# ---------------------------------------------------------------------------------------------
# Common parts of the JSON
# ---------------------------------------------------------------------------------------------


def _common_keys(
    ckpt: Mapping[str, Any], checkpoint: Path, sha256: str, *, benchmark: str, protocol: str, split: str,
    dataset: str, paper_dataset: str | None,
) -> dict[str, Any]:
    config = ckpt.get("config")
    config = config if isinstance(config, Mapping) else {}
    experiment = config.get("experiment") or {}
    student = config.get("student") or {}
    method = experiment.get("method")
    return {
        "benchmark": benchmark,
        "protocol": protocol,
        "split": split,
        "dataset": dataset,
        "paper_dataset": paper_dataset,
        "experiment": experiment.get("name"),
        "seed": experiment.get("seed"),
        "label": experiment.get("label") or method,
        "student": student.get("name"),
        "method": method,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256,
        "selected_epoch": int(ckpt.get("epoch", -1)),
    }


def _check_options(protocol: str, options: Mapping[str, Any] | None, benchmark: str) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(PROTOCOL_OPTIONS[protocol]))
    if unknown:
        raise ValueError(
            f"benchmark {benchmark!r} (protocol {protocol!r}): unknown option(s) {unknown}; "
            f"expected some of {sorted(PROTOCOL_OPTIONS[protocol]) or 'none'}"
        )
    return options


def _choice(options: Mapping[str, Any], key: str, allowed: Sequence[str], default: str, benchmark: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise ValueError(f"benchmark {benchmark!r}: option {key!r} must be one of {list(allowed)}, found {value!r}")
    return str(value)


def _identities(manifest: pd.DataFrame, id_column: str, ids: Sequence[str]) -> list[str]:
    by_id = dict(zip(manifest[id_column], manifest["identity"]))
    return [by_id[i] for i in ids]


def _split_rows(frame: pd.DataFrame, split: str, path: Path, what: str) -> pd.DataFrame:
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ValueError(f"{path}: no {what} with split {split!r}; splits found: {sorted(frame['split'].unique())}")
    return rows


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------


def _encoded_split(model: torch.nn.Module, ctx: dict[str, Any]) -> tuple[Any, Tensor, Tensor]:
    """The split's items and cross-modal embeddings, encoded once per :class:`EvaluationSession`
    (image-text and eccv, person and zero-shot read the same split: the same tensors, so the
    same numbers as encoding it for each)."""
    key = (str(ctx["images_manifest"]), str(ctx["texts_manifest"]), ctx["split"], str(ctx["dataset_root"]),
           ctx["batch_size"])
    cache = ctx["encoded"]
    if key not in cache:
        items = split_items(ctx["images_manifest"], ctx["texts_manifest"], ctx["split"])
        image_emb, text_emb = encode_split(
            model, items, ctx["dataset_root"], batch_size=ctx["batch_size"], device=ctx["device"],
            num_workers=ctx["num_workers"], head="cross", desc=ctx["split"],
        )
        cache[key] = (items, image_emb, text_emb)
    return cache[key]


def _split_labels(items: Any, ctx: dict[str, Any]) -> tuple[list[str], list[str]]:
    images = read_images(ctx["images_manifest"])
    texts = read_texts(ctx["texts_manifest"])
    return _identities(images, "image_id", items.image_ids), _identities(texts, "text_id", items.text_ids)


def _eccv_rows(ctx: Mapping[str, Any], scores: Mapping[str, Mapping[str, float]],
               per_query: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """The six ECCV rows and their ``avg`` (the mean of the six, the ablation table's number),
    with intervals: images and captions are the query sets; the avg is recomputed per resample."""
    dataset = ctx["row_dataset"]
    cells = [(direction, name) for direction in ("i2t", "t2i") for name in ECCV_METRICS]
    rows = [metric_row(dataset, d, m, scores[d][m]) for d, m in cells]
    rows.append(metric_row(dataset, "both", "avg", sum(scores[d][m] for d, m in cells) / len(cells)))
    boot = ctx["bootstrap"]
    replicates = {"i2t": boot.means("images", per_query["i2t"]), "t2i": boot.means("captions", per_query["t2i"])}
    stats = {(dataset, d, m, ""): replicates[d][m] for d, m in cells}
    stats[(dataset, "both", "avg", "")] = sum(replicates[d][m] for d, m in cells) / len(cells)
    return attach_intervals(rows, stats)


def _run_eccv(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    options, benchmark = ctx["options"], ctx["benchmark"]
    relevance = _choice(options, "relevance", ECCV_RELEVANCE, "eccv", benchmark)
    if relevance == "identity" and "eccv_dir" in options:
        raise ValueError(f"benchmark {benchmark!r}: option 'eccv_dir' applies to relevance 'eccv' only")
    items, image_emb, text_emb = _encoded_split(model, ctx)
    out: dict[str, Any] = {"relevance": relevance, "num_images": items.num_images, "num_texts": items.num_texts}
    image_emb, text_emb = image_emb.to(ctx["device"]), text_emb.to(ctx["device"])
    if relevance == "identity":
        image_labels, text_labels = _split_labels(items, ctx)
        found = eccv_scores_per_query(image_emb, text_emb, identity_relevance(image_labels, text_labels))
        scores = {d: found[d].means for d in found}
        per_query = {d: found[d].per_query for d in found}
        out["num_queries"] = {"i2t": items.num_images, "t2i": items.num_texts}
    else:
        data_dir = options.get("eccv_dir")
        if data_dir is not None:
            data_dir = Path(data_dir) if Path(data_dir).is_absolute() else ctx["dataset_root"] / data_dir
        # The package's numbers, and softref's per-query values on its relevance (checked to agree).
        scores, per_query = eccv_caption_per_query(
            image_emb, text_emb, items.image_ids, items.text_ids, data_dir, top_k=ECCV_TOP_K
        )
        out["num_queries"] = {d: int(per_query[d]["R@1"].size) for d in ("i2t", "t2i")}
        out["eccv_dir"] = str(data_dir) if data_dir is not None else None
        if data_dir is not None:
            # The ground truth is the folder's: its extra positives are the pairs it adds to the original ones.
            out["num_extra_positives"] = _eccv_extra_pairs(data_dir)
        elif ctx["positives"] is not None:
            # The package holds the ground truth; the manifest's extra positives are counted for the record.
            positives = read_positives(ctx["positives"])
            inside = positives["text_id"].isin(set(items.text_ids)) & positives["image_id"].isin(set(items.image_ids))
            out["num_extra_positives"] = int(inside.sum())
    out["metrics"] = _eccv_rows(ctx, scores, per_query)
    return out


def _eccv_extra_pairs(data_dir: Path) -> int:
    """(caption, image) pairs of ``data_dir``'s eccv_caption_to_image.json that its
    original_caption_to_image.json does not hold: the extra positives of an ECCV-format folder."""

    def pairs(name: str) -> set[tuple[str, int]]:
        path = Path(data_dir) / name
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: expected ECCV Caption's caption -> images JSON ({exc})") from None
        return {(str(c), int(i)) for c, images in mapping.items() for i in (images if isinstance(images, list) else [images])}

    return len(pairs("eccv_caption_to_image.json") - pairs("original_caption_to_image.json"))


UNI_FEATURES = ("encoder", "head")


def unimodal_head(ckpt: Mapping[str, Any], uni_features: str = "encoder") -> str:
    """The features the uni-modal benchmarks (Tables 3 and 4) read.

    Students trained with USA (usa, cusa): ``uni``, the uni-modal head USA trains (the public
    code's uni projector). The others (base, csa, mmref) never train a uni-modal projector:
    ``uni_features="encoder"`` reads the open_clip encoder's own output, as the public code does
    (it has no uni projector there); ``"head"`` reads the cross-modal head's output.
    """
    if uni_features not in UNI_FEATURES:
        raise ValueError(f"uni_features: expected one of {list(UNI_FEATURES)}, found {uni_features!r}")
    config = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
    method = (config.get("experiment") or {}).get("method")
    if method in ("usa", "cusa"):
        return "uni"
    return "encoder" if uni_features == "encoder" else "cross"


def _run_image_retrieval(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    mode = _choice(ctx["options"], "mode", RETRIEVAL_MODES, "leave-one-out", ctx["benchmark"])
    path = ctx["images_manifest"]
    images = read_images(path)
    head = unimodal_head(ckpt, ctx["uni_features"])
    encode = dict(head=head, batch_size=ctx["batch_size"], device=ctx["device"], num_workers=ctx["num_workers"])
    if mode == "leave-one-out":
        rows = _split_rows(images, ctx["split"], path, "image")
        emb = encode_images(model, ctx["dataset_root"], rows["path"].tolist(), desc=f"{ctx['split']} images",
                             **encode)
        hits = leave_one_out_hits(emb.to(ctx["device"]), rows["identity"].tolist())
        queries = "images"
        out = {"mode": mode, "num_images": len(rows), "num_classes": int(rows["identity"].nunique())}
    else:
        query = _split_rows(images, "query", path, "image")
        gallery = _split_rows(images, "gallery", path, "image")
        query_emb = encode_images(model, ctx["dataset_root"], query["path"].tolist(), desc="query images", **encode)
        gallery_emb = encode_images(model, ctx["dataset_root"], gallery["path"].tolist(), desc="gallery images",
                                     **encode)
        hits = query_gallery_hits(query_emb.to(ctx["device"]), query["identity"].tolist(),
                                  gallery_emb.to(ctx["device"]), gallery["identity"].tolist())
        queries = "queries"
        out = {"mode": mode, "splits": ["query", "gallery"], "num_queries": len(query), "num_gallery": len(gallery),
               "num_classes": int(pd.concat([query["identity"], gallery["identity"]]).nunique())}
    out["head"] = head
    # leave_one_out_r1 / query_gallery_r1: the hits' share.
    row = metric_row(ctx["row_dataset"], "i2i", "R@1", 100.0 * int(hits.sum()) / hits.size)
    replicates = ctx["bootstrap"].means(queries, {"R@1": 100.0 * hits})
    out["metrics"] = attach_intervals([row], {(row["dataset"], "i2i", "R@1", ""): replicates["R@1"]})
    return out


def _run_sts(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    path = ctx["pairs"] if ctx["pairs"] is not None else ctx["images_manifest"].parent / "pairs.parquet"
    pairs = _split_rows(read_pairs(path), ctx["split"], path, "sentence pair").reset_index(drop=True)
    # Each distinct sentence is encoded once, however many pairs share it.
    sentences = list(dict.fromkeys(pairs["sentence1"].tolist() + pairs["sentence2"].tolist()))
    position = {s: i for i, s in enumerate(sentences)}
    head = unimodal_head(ckpt, ctx["uni_features"])
    emb = encode_texts(model, sentences, head=head, batch_size=ctx["batch_size"], device=ctx["device"],
                        desc=f"{ctx['split']} sentences")
    emb1 = emb[torch.as_tensor([position[s] for s in pairs["sentence1"]])]
    emb2 = emb[torch.as_tensor([position[s] for s in pairs["sentence2"]])]
    return {
        "head": head,
        "pairs": str(path),
        "num_pairs": len(pairs),
        "pairs_per_task": {str(k): int(v) for k, v in pairs["task"].value_counts().sort_index().items()},
        "metrics": sts_table(pairs, emb1, emb2, bootstrap=ctx["bootstrap"]),
    }


def bank_was_trained(ckpt: Mapping[str, Any]) -> bool:
    """Whether an mmref checkpoint's reference bank learned anything: Global Fusion or Local
    Reconstruction train it; with both off (reference guidance alone reads ``sg(R)``) it stays at
    its random initialisation. Checkpoints without MMRef's record count as trained."""
    record = ckpt.get("mmref")
    config = record.get("config") if isinstance(record, Mapping) else None
    if not isinstance(config, Mapping):
        return True
    return bool(config.get("global_fusion", True) or config.get("local_reconstruction", True))


def _reference_bank(ckpt: Mapping[str, Any], ctx: Mapping[str, Any], dim: int) -> Tensor:
    """The student's trained reference bank for refinement; an error naming the benchmark and the
    checkpoint when the benchmark asks for refinement and the student has none to give."""
    checkpoint, benchmark = ctx["checkpoint"], ctx["benchmark"]
    head = ckpt.get("mmref_head")
    asked = f"benchmark {benchmark!r} is asked for the refined variant (the experiment has mmref.refine)"
    if not isinstance(head, Mapping) or "bank" not in head:
        raise ValueError(f"{asked}, but {checkpoint} has no reference bank (mmref_head['bank']): only mmref "
                         f"students have one; evaluate this experiment on a benchmark without refine")
    if not bank_was_trained(ckpt):
        raise ValueError(f"{asked}, but the reference bank of {checkpoint} was never trained (its experiment "
                         f"turns off both mmref.global_fusion and mmref.local_reconstruction); evaluate it on a "
                         f"benchmark without refine")
    bank = head["bank"]
    if not isinstance(bank, Tensor) or bank.ndim != 2 or bank.shape[1] != dim or bank.shape[0] == 0:
        found = tuple(bank.shape) if isinstance(bank, Tensor) else type(bank).__name__
        raise ValueError(f"{checkpoint}: mmref_head['bank'] must be a (M, {dim}) tensor, found {found}")
    return bank.float()


def _image_text_ranks(image_emb: Tensor, text_emb: Tensor, relevant: np.ndarray
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`~softref.evaluate.retrieval.image_text_metrics`'s numbers (the same floats) and the
    first relevant item's rank of every image (i2t) and caption (t2i), from one ranking pass."""
    scores = image_emb.float() @ text_emb.float().T
    relevant_t = torch.as_tensor(np.asarray(relevant, dtype=bool))
    ranks = dict(zip(("i2t", "t2i"), first_relevant_ranks_both_ways(scores, relevant_t)))
    found: dict[str, Any] = {d: {f"R@{k}": v for k, v in recall_from_ranks(ranks[d], KS).items()}
                             for d in ("i2t", "t2i")}
    found["rsum"] = float(sum(found["i2t"].values()) + sum(found["t2i"].values()))
    return found, ranks


def _run_image_text(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    items, image_emb, text_emb = _encoded_split(model, ctx)
    found, ranks = _image_text_ranks(image_emb.to(ctx["device"]), text_emb.to(ctx["device"]), items.relevant())
    dataset = ctx["row_dataset"]
    rows = [metric_row(dataset, d, f"R@{k}", found[d][f"R@{k}"]) for d in ("i2t", "t2i") for k in KS]
    rows.append(metric_row(dataset, "both", "RSUM", found["rsum"]))
    boot = ctx["bootstrap"]
    replicates = {d: boot.means(name, {f"R@{k}": 100.0 * (ranks[d] < k) for k in KS})
                  for d, name in (("i2t", "images"), ("t2i", "captions"))}
    stats = {(dataset, d, f"R@{k}", ""): replicates[d][f"R@{k}"] for d in ("i2t", "t2i") for k in KS}
    stats[(dataset, "both", "RSUM", "")] = sum(replicates[d][f"R@{k}"] for d in ("i2t", "t2i") for k in KS)
    # Table 1's top-level keys (i2t, t2i, rsum) beside the metric rows every protocol has.
    return {"num_images": items.num_images, "num_texts": items.num_texts, **found,
            "metrics": attach_intervals(rows, stats)}


def _run_person(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    items, image_emb, text_emb = _encoded_split(model, ctx)
    image_labels, text_labels = _split_labels(items, ctx)
    refine = ctx["refine"]
    bank = None if refine is None else _reference_bank(ckpt, ctx, int(image_emb.shape[1]))
    device = ctx["device"]
    rows = person_scores(
        text_emb.to(device), text_labels, image_emb.to(device), image_labels,
        references=None if bank is None else bank.to(device), refine=refine, dataset=ctx["row_dataset"],
        bootstrap=ctx["bootstrap"],
    )
    return {
        "num_queries": items.num_texts,
        "num_gallery": items.num_images,
        "num_identities": len(set(image_labels)),
        "num_references": None if bank is None else int(bank.shape[0]),
        "refine": None if refine is None else refine_parameters(refine),
        "metrics": rows,
    }
def _run_zero_shot(model: torch.nn.Module, ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    k = ctx["options"].get("k", 50)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"benchmark {ctx['benchmark']!r}: option 'k' must be a positive integer, found {k!r}")
    items, image_emb, text_emb = _encoded_split(model, ctx)
    image_labels, text_labels = _split_labels(items, ctx)
    device = ctx["device"]
    scores, per_query = zero_shot_scores_per_query(image_emb.to(device), image_labels, text_emb.to(device),
                                                   text_labels, k=k)
    dataset = ctx["row_dataset"]
    rows = [metric_row(dataset, "t2i", f"AP@{k}", scores["t2i"][f"P@{k}"]),
            metric_row(dataset, "i2t", "top-1", scores["i2t"]["top-1"])]
    # Classes query the images (t2i), images the classes (i2t): two query sets.
    classes = ctx["bootstrap"].means("classes", {"P": per_query["t2i"][f"P@{k}"]})
    images = ctx["bootstrap"].means("images", {"top-1": per_query["i2t"]["top-1"]})
    stats = {(dataset, "t2i", f"AP@{k}", ""): classes["P"], (dataset, "i2t", "top-1", ""): images["top-1"]}
    return {
        "k": k,
        "num_images": items.num_images,
        "num_texts": items.num_texts,
        "num_classes": len(set(text_labels)),
        # Reed et al. (2016) report "AP@50" as the share of the top 50 images of the query's class,
        # i.e. precision at 50; the table follows them. The average precision over the top k is
        # kept beside it for anyone who wants the textbook measure.
        "t2i_average_precision_at_k": scores["t2i"][f"AP@{k}"],
        "metrics": attach_intervals(rows, stats),
    }


#: train_log.csv columns a training-cost evaluation reads.
_COST_COLUMNS = ("epoch", "train_seconds", "host_peak_mb", "gpu_peak_mb")


def _cost_value(row: Mapping[str, str], column: str, path: Path, line: int) -> float | None:
    text = row.get(column, "")
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: column {column!r}: expected a number, found {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{path}, line {line}: column {column!r}: expected a finite number >= 0, found {text!r}")
    return value


def _run_training_cost(ckpt: Mapping[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The appendix's Table 13 for one experiment: mean time per training epoch (its optimizer steps,
    validation excluded; minutes), peak host memory (GB) and, on CUDA, peak GPU memory (MB)."""
    path = ctx["train_log"]
    if not path.is_file():
        raise FileNotFoundError(f"benchmark {ctx['benchmark']!r} (training-cost): train log not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in _COST_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: expected epoch rows with columns {list(_COST_COLUMNS)}; "
                         f"found {len(rows)} row(s), missing columns {missing}")
    seconds = [_cost_value(r, "train_seconds", path, i + 2) for i, r in enumerate(rows)]
    host = [_cost_value(r, "host_peak_mb", path, i + 2) for i, r in enumerate(rows)]
    gpu = [v for v in (_cost_value(r, "gpu_peak_mb", path, i + 2) for i, r in enumerate(rows)) if v is not None]
    if any(v is None for v in seconds + host):
        raise ValueError(f"{path}: every epoch row needs train_seconds and host_peak_mb")
    metrics = [metric_row(ctx["row_dataset"], "train", "time per epoch (min)", sum(seconds) / len(seconds) / 60.0),
               metric_row(ctx["row_dataset"], "train", "host memory (GB)", max(host) / 1024.0)]
    if gpu:
        metrics.append(metric_row(ctx["row_dataset"], "train", "GPU memory (MB)", max(gpu)))
    config = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
    experiment = config.get("experiment") or {}
    sources = experiment.get("teacher_features") or {"image": "shards", "text": "shards"}
    return {"train_log": str(path), "num_epochs": len(rows), "machine": ckpt.get("machine"),
            "teacher_features": {"image": sources.get("image"), "text": sources.get("text")}, "metrics": metrics}


_RUNNERS = {
    "image-text": _run_image_text,
    "eccv": _run_eccv,
    "image-retrieval": _run_image_retrieval,
    "sts": _run_sts,
    "person": _run_person,
    "zero-shot": _run_zero_shot,
}


class EvaluationSession:
    """One checkpoint evaluated on several benchmarks (one evaluate job per run): the student is
    loaded once, on first need, and each split is encoded once however many benchmarks score it.
    Pass it to :func:`evaluate_benchmark` as ``session``; the numbers equal those of separate
    calls (the same model encodes the same inputs)."""

    def __init__(self, checkpoint: Path, device: str | torch.device | None = None) -> None:
        self.checkpoint = Path(checkpoint)
        self.device = default_device(device)
        self.encoded: dict[tuple[Any, ...], tuple[Any, Tensor, Tensor]] = {}
        self._model: torch.nn.Module | None = None
        self._ckpt: Mapping[str, Any] | None = None
        self._sha256: str | None = None

    def student(self) -> tuple[torch.nn.Module, Mapping[str, Any]]:
        """The checkpoint's student (eval mode, on ``device``) and its checkpoint dict."""
        if self._model is None:
            self._model, self._ckpt = load_student(self.checkpoint, self.device)
        return self._model, self._ckpt

    def sha256(self) -> str:
        """The checkpoint file's sha256 (every evaluation JSON records it), hashed once."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint)
        return self._sha256

    def record(self) -> Mapping[str, Any]:
        """The checkpoint dict alone (training-cost needs no model); the student's once loaded."""
        if self._ckpt is None:
            self._ckpt = load_checkpoint(self.checkpoint, map_location="cpu", required=("config",))
        return self._ckpt


def evaluate_benchmark(
    checkpoint: Path,
    *,
    protocol: str,
    dataset_root: Path,
    images_manifest: Path,
    texts_manifest: Path,
    split: str,
    benchmark: str,
    dataset: str,
    paper_dataset: str | None,
    options: Mapping[str, Any],
    refine: object | None = None,
    positives: Path | None = None,
    pairs: Path | None = None,
    train_log: Path | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    uni_features: str = "encoder",
    bootstrap_resamples: int = RESAMPLES,
    bootstrap_seed: int = SEED,
    session: EvaluationSession | None = None,
) -> dict[str, Any]:
    """Evaluate a trained student on one benchmark; returns the evaluation JSON (module docstring).

    Args:
        checkpoint: a selected-model ``checkpoint.pt`` (loaded with ``weights_only=True``).
        protocol: one of :data:`PROTOCOLS`.
        dataset_root: the root the manifest image paths are relative to.
        images_manifest, texts_manifest: the dataset's manifests (the texts manifest may be
            empty for image-retrieval and sts).
        split: the manifest split evaluated (ignored by image-retrieval's query-gallery mode,
            which reads the ``query`` and ``gallery`` splits).
        benchmark, dataset, paper_dataset: written into the JSON; the metric rows' ``dataset``
            is ``paper_dataset`` when set, else ``benchmark`` (sts rows name their task).
        options: the protocol's options (module docstring).
        refine: person only: an object with ``k``, ``tau``, ``top_k``, ``lam`` (RefineConfig);
            adds the ``refined`` variant when the checkpoint carries ``mmref_head['bank']``.
        positives: eccv only: the dataset's ``positives.parquet``, counted into the JSON.
        pairs: sts only: the ``pairs.parquet`` (default: beside ``images_manifest``).
        train_log: training-cost only: the run's ``train_log.csv`` (default: beside the checkpoint).
        batch_size, num_workers: encoding batch size and image-reading workers.
        uni_features: image-retrieval and sts: what students trained without USA are scored
            with (:func:`unimodal_head`); the JSON names the head used.
        device: None picks CUDA when available, else the CPU.
        bootstrap_resamples, bootstrap_seed: the bootstrap over queries that gives every metric
            row its ``ci_low`` / ``ci_high`` (:mod:`softref.evaluate.intervals`; recorded in the
            JSON's ``bootstrap``; training-cost has no queries and no intervals).
        session: an :class:`EvaluationSession` of ``checkpoint`` shared by the run's benchmarks
            (its device is used; ``device``, when given, must be the same); None loads the
            student here.

    Raises:
        ValueError: unknown protocol or option, an empty split, and the protocols' own checks.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"benchmark {benchmark!r}: unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    checkpoint = Path(checkpoint)
    if session is None:
        session = EvaluationSession(checkpoint, device)
    elif session.checkpoint != checkpoint or (device is not None and default_device(device) != session.device):
        raise ValueError(f"benchmark {benchmark!r}: the session evaluates {session.checkpoint} on "
                         f"{session.device}; found checkpoint {checkpoint}, device {device!r}")
    ctx = {
        "checkpoint": checkpoint, "benchmark": benchmark, "dataset_root": Path(dataset_root),
        "images_manifest": Path(images_manifest), "texts_manifest": Path(texts_manifest), "split": split,
        "options": _check_options(protocol, options, benchmark), "refine": refine,
        "positives": None if positives is None else Path(positives), "pairs": None if pairs is None else Path(pairs),
        "train_log": checkpoint.parent / "train_log.csv" if train_log is None else Path(train_log),
        "batch_size": int(batch_size), "device": session.device, "num_workers": int(num_workers),
        "row_dataset": paper_dataset if paper_dataset else benchmark, "uni_features": uni_features,
        "bootstrap": Bootstrap(bootstrap_resamples, bootstrap_seed), "encoded": session.encoded,
    }
    logger.info("evaluating %s on %s (%s, split %r)", checkpoint, benchmark, protocol, split)
    if protocol == "training-cost":  # the run's own record: no model to load
        ckpt = session.record()
        found = _run_training_cost(ckpt, ctx)
    else:
        model, ckpt = session.student()
        found = _RUNNERS[protocol](model, ckpt, ctx)
        check_intervals(found["metrics"], f"benchmark {benchmark!r} ({protocol})")
    result = _common_keys(ckpt, checkpoint, session.sha256(), benchmark=benchmark, protocol=protocol, split=split,
                          dataset=dataset, paper_dataset=paper_dataset)
    result.update(found)
    result["bootstrap"] = None if protocol == "training-cost" else ctx["bootstrap"].record()
    _log_rows(benchmark, result["metrics"])
    return result


def _log_rows(benchmark: str, rows: Sequence[Mapping[str, Any]]) -> None:
    for row in rows:
        interval = f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]" if "ci_low" in row else ""
        logger.info("%s: %s %s %s%s = %.2f%s", benchmark, row["dataset"], row["direction"], row["metric"],
                    f" ({row['variant']})" if row["variant"] else "", row["value"], interval)
