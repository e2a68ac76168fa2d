"""The CUSA trainer: one experiment, one process or torchrun/DDP, resumable at epoch boundaries.

:func:`train` reads top to bottom in banner-marked steps: data, model, loss, schedule, resume,
loop. It writes, in ``out_dir`` (on rank 0 only):

``checkpoint.pt``
    the selected model (best validation RSUM; the val split, never test), written once the
    last epoch is done.
``train_log.csv``
    one row per epoch (:data:`LOG_COLUMNS`), rewritten atomically after every epoch.
``last.pt``
    the resume state after every epoch (atomic). A rerun with the same configuration continues
    from the next epoch; on CPU it reaches exactly the weights and log of an uninterrupted run.
``best.pt``
    the best model so far; copied to ``checkpoint.pt`` once the last epoch is done and kept,
    so that a rerun of a finished run (e.g. after Snakemake removed its outputs) republishes
    ``checkpoint.pt`` without training again.

Batch size: ``ExperimentConfig.batch_size`` is the global batch. Under torchrun each of the N
processes takes B/N pairs of every batch; with ``gather=True`` the losses see the whole batch
(see :mod:`softref.train.distributed`), with ``gather=False`` each process computes its
losses on its own B/N pairs (the public CUSA code's way: 4 GPUs x 128).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from softref import __version__
from softref.config import ExperimentConfig, StudentConfig
from softref.data.manifest import file_sha256
from softref.evaluate.retrieval import KS, encode_split, image_text_metrics, progress_disabled, split_items
from softref.losses import CUSA_METHODS, contrastive_loss, csa_loss, usa_loss
from softref.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    config_differences,
    load_checkpoint,
    plain_config,
    restore_rng_state,
    save_checkpoint,
)
from softref.train.data import Batch, BatchCollator, EpochBatchSampler, TrainPairs, load_pairs, make_loader
from softref.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    average_gradients,
    any_across,
    barrier,
    broadcast_parameters,
    broadcast_from_main,
    cleanup_distributed,
    gather_no_grad,
    gather_with_grad,
    init_distributed,
)

__all__ = [
    "LOG_COLUMNS",
    "LOSS_TERMS",
    "TEMPERATURES",
    "NonFiniteLossError",
    "TrainResult",
    "train",
    "training_losses",
    "objective",
    "parameter_groups",
    "cosine_schedule",
    "seed_everything",
]

logger = logging.getLogger(__name__)

LOSS_TERMS: tuple[str, ...] = ("total", "itr", "csa", "usa", "id", "fuse", "guide", "recon")
TEMPERATURES: tuple[str, ...] = ("tau", "tau_c", "tau_image", "tau_text")
VAL_COLUMNS: tuple[str, ...] = tuple(f"val_{d}_R@{k}" for d in ("i2t", "t2i") for k in KS) + ("val_rsum",)
#: Columns of train_log.csv; loss terms a method does not use are left empty.
LOG_COLUMNS: tuple[str, ...] = (
    ("epoch", "step", "lr")
    + tuple(f"loss_{t}" for t in LOSS_TERMS)
    + TEMPERATURES
    + VAL_COLUMNS
    + ("seconds", "wait_seconds", "fetch_seconds")
)
#: Columns that measure time: they differ between otherwise identical runs.
TIME_COLUMNS: tuple[str, ...] = ("seconds", "wait_seconds", "fetch_seconds")
# Experiment keys that cannot change the result: a resume may differ in them.
_RESUME_IGNORED = ("num_workers",)

CHECKPOINT = "checkpoint.pt"
LAST = "last.pt"
BEST = "best.pt"
LOG = "train_log.csv"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stopped before applying that step."""


@dataclass(frozen=True)
class TrainResult:
    """What a call of :func:`train` produced.

    Attributes:
        checkpoint: the selected model, or None when the run stopped early (``max_steps``).
        train_log: the per-epoch log.
        last: the resume state.
        completed: True once every epoch has run.
        epochs_completed: epochs done so far (including those of earlier, resumed calls).
        steps: optimizer steps so far.
        best_epoch: the epoch selected by validation RSUM (0 before any epoch).
        best_val_rsum: its validation RSUM.
    """

    checkpoint: Path | None
    train_log: Path
    last: Path
    completed: bool
    epochs_completed: int
    steps: int
    best_epoch: int
    best_val_rsum: float


# ---------------------------------------------------------------------------------------------
# building blocks (also used by the tests and the benchmark)
# ---------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python ``random``."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_schedule(lr: float, min_lr: float, epochs: int) -> np.ndarray:
    """Per-epoch learning rates: cosine from ``lr`` (epoch 1) towards ``min_lr``, no warm-up.

    Entry e (0-based) is ``min_lr + (lr - min_lr) * (1 + cos(pi * e / epochs)) / 2``, as
    ``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` stepped once per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs: expected >= 1, found {epochs}")
    e = np.arange(epochs, dtype=np.float64)
    return min_lr + (lr - min_lr) * (1.0 + np.cos(np.pi * e / epochs)) / 2.0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices; none on 1-D / 0-D parameters (norms, temperatures) and biases."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def objective(
    out: Mapping[str, Tensor],
    teacher_image: Tensor | None,
    teacher_text: Tensor | None,
    positives: Tensor,
    cfg: ExperimentConfig,
) -> dict[str, Tensor]:
    """The terms of ``cfg.method`` (CUSA Eq. 9: itr + alpha CSA + beta USA) and their total.

    Uses the experiment's ``alpha``, ``beta``, ``teacher_tau`` and
    ``public_code_weighting``; the temperatures come from the student's output.
    """
    if cfg.method not in CUSA_METHODS:
        raise ValueError(f"experiment {cfg.name!r}: method {cfg.method!r} is not one of {sorted(CUSA_METHODS)}")
    terms = CUSA_METHODS[cfg.method]
    result: dict[str, Tensor] = {
        "itr": contrastive_loss(
            out["image_emb"], out["text_emb"], out["tau"], positives, public_code_weighting=cfg.public_code_weighting
        )
    }
    total = result["itr"]
    if "csa" in terms:
        result["csa"] = csa_loss(
            out["image_emb"], out["text_emb"], teacher_image, teacher_text, out["tau_c"], teacher_tau=cfg.teacher_tau
        )
        total = total + cfg.alpha * result["csa"]
    if "usa" in terms:
        result["usa"] = usa_loss(
            out["image_uni"],
            out["text_uni"],
            teacher_image,
            teacher_text,
            out["tau_image"],
            out["tau_text"],
            teacher_tau=cfg.teacher_tau,
        )
        total = total + cfg.beta * result["usa"]
    result["total"] = total
    return result


def mmref_losses(
    student: nn.Module,
    head: nn.Module,
    batch: Batch,
    cfg: ExperimentConfig,
    scheme: Any,
    teacher_references: Tensor | None = None,
) -> dict[str, Tensor]:
    """MMRef's terms for one batch (softref.losses.mmref.mmref_objective).

    Local Reconstruction masks a copy of the batch's tokens: the other terms see the captions
    as they are. Gathers the embeddings and identities across processes when ``cfg.gather``;
    the reconstruction is computed on each process's own captions.
    """
    from softref.losses.mmref import mmref_objective
    from softref.models.mmref import mask_tokens, text_token_features

    if batch.identity_index is None:
        raise ValueError(f"experiment {cfg.name!r} (mmref): the batch carries no identity rows")
    out = dict(student(batch.images, batch.tokens))
    identity_index = batch.identity_index
    logits = labels = None
    if cfg.mmref.local_reconstruction:
        masked, labels = mask_tokens(
            batch.tokens,
            mask_prob=cfg.mmref.mask_prob,
            mask_token_id=scheme.mask_token_id,
            vocab_size=scheme.vocab_size,
            special_ids=scheme.special_ids,
            pad_id=scheme.pad_token_id,
        )
        logits = head.reconstruct(
            text_token_features(student, masked), identity_index, padding_mask=batch.tokens == scheme.pad_token_id
        )
    if cfg.gather:
        for key in ("image_emb", "text_emb"):
            out[key] = gather_with_grad(out[key])
        identity_index = gather_no_grad(identity_index)
    return dict(
        mmref_objective(
            out, head, identity_index, cfg=cfg.mmref, mlm_logits=logits, mlm_labels=labels,
            teacher_references=teacher_references,
        )
    )


def training_losses(model: nn.Module, batch: Batch, cfg: ExperimentConfig) -> dict[str, Tensor]:
    """Forward one batch and compute the objective; gathers across processes when ``cfg.gather``.

    ``model`` is the student (or its DDP wrapper). In a single process gathering is the
    identity, so the same call serves both.
    """
    out = dict(model(batch.images, batch.tokens))
    image_index, teacher_image, teacher_text = batch.image_index, batch.teacher_image, batch.teacher_text
    if cfg.gather:
        for key in ("image_emb", "text_emb", "image_uni", "text_uni"):
            out[key] = gather_with_grad(out[key])
        image_index = gather_no_grad(image_index)
        if teacher_image is not None and teacher_text is not None:
            teacher_image = gather_no_grad(teacher_image)
            teacher_text = gather_no_grad(teacher_text)
    positives = image_index[:, None] == image_index[None, :]
    return objective(out, teacher_image, teacher_text, positives, cfg)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _temperatures(student: nn.Module) -> dict[str, float]:
    ranges = {
        "tau": student.tau_range,
        "tau_c": student.tau_c_range,
        "tau_image": student.tau_uni_range,
        "tau_text": student.tau_uni_range,
    }
    # The value the next forward will use (the student clamps at every forward).
    return {name: float(getattr(student, name).detach().clamp(*ranges[name])) for name in TEMPERATURES}


def _write_log(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c] for c in LOG_COLUMNS])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_finite(terms: Mapping[str, Tensor], epoch: int, step: int, batch_index: int, out_dir: Path, device: torch.device) -> list[float]:
    """The terms' values; NonFiniteLossError (on every process) if any is NaN/inf on any process."""
    values = torch.stack([terms[t].detach().float() for t in terms]).cpu().tolist()
    bad = [t for t, v in zip(terms, values) if not math.isfinite(v)]
    if any_across(bool(bad), device):
        last = out_dir / LAST
        kept = f"{last} holds the last good epoch ({epoch - 1})" if epoch > 1 else "no epoch completed, no last.pt"
        shown = ", ".join(f"{t}={v:.6g}" for t, v in zip(terms, values) if t in bad) or "on another process"
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step} (batch {batch_index + 1} of the epoch): "
            f"term(s) {bad or '?'} ({shown}); {kept}; checkpoint.pt not written. Lower the learning "
            f"rate or check the teacher features"
        )
    return values


# ---------------------------------------------------------------------------------------------
# teacher stores
# ---------------------------------------------------------------------------------------------
def _open_stores(
    cfg: ExperimentConfig,
    image_shards: Sequence[Path],
    text_shards: Sequence[Path],
    images_sha: str,
    texts_sha: str,
) -> tuple[Any, Any]:
    """The two teacher FeatureStores, checked against the manifests; (None, None) for ``base``."""
    from softref.features import FeatureStore

    if CUSA_METHODS[cfg.method] == ("itr",):
        if image_shards or text_shards:
            logger.info("method %r uses no teacher: the given feature shards are not read", cfg.method)
        return None, None
    need = f"experiment {cfg.name!r} (method {cfg.method!r}) needs"
    for key, value in (("image_teacher", cfg.image_teacher), ("text_teacher", cfg.text_teacher)):
        if not value:
            raise ValueError(f"{need} {key}; found none in its config")
    for what, shards in (("image", image_shards), ("text", text_shards)):
        if not shards:
            teacher = cfg.image_teacher if what == "image" else cfg.text_teacher
            raise FileNotFoundError(f"{need} the {what} teacher's feature shards (teacher {teacher!r}); none given")
        missing = [str(p) for p in shards if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{need} the {what} teacher's feature shards; missing: {missing}")
    image_store = FeatureStore(
        [Path(p) for p in image_shards],
        expect={"teacher": cfg.image_teacher, "modality": "images", "manifest_sha256": images_sha},
    )
    text_store = FeatureStore(
        [Path(p) for p in text_shards],
        expect={"teacher": cfg.text_teacher, "modality": "texts", "manifest_sha256": texts_sha},
    )
    return image_store, text_store


def _check_coverage(store: Any, ids: Sequence[str], what: str) -> None:
    missing = [i for i in dict.fromkeys(ids) if i not in store]
    if missing:
        raise KeyError(
            f"{len(missing)} {what} id(s) of the train split have no feature in {store.paths[0].parent} "
            f"(teacher {store.attrs.get('teacher')!r}); first: {missing[:5]}"
        )


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def train(
    cfg: ExperimentConfig,
    student_cfg: StudentConfig,
    dataset_root: Path,
    images_manifest: Path,
    texts_manifest: Path,
    image_shards: Sequence[Path],
    text_shards: Sequence[Path],
    out_dir: Path,
    *,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    references: Path | None = None,
    neighbours: Path | None = None,
) -> TrainResult:
    """Train one experiment's student; write checkpoint.pt, train_log.csv and last.pt in ``out_dir``.

    Args:
        cfg: the experiment (method, loss weights, schedule, batch, seed, gather).
        student_cfg: the student (open_clip architecture and pretrained weights).
        dataset_root: the root the manifest image paths are relative to.
        images_manifest, texts_manifest: the dataset's manifests (train and val splits used).
        image_shards, text_shards: the teachers' feature shards (``images-*.h5`` of the image
            teacher, ``texts-*.h5`` of the text teacher); required for csa/usa/cusa, not read
            for base. Their ``manifest_sha256`` must be the sha256 of the manifests given.
        out_dir: the run folder.
        device: None picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
        max_steps: stop (as if interrupted) once this many optimizer steps have run in total;
            the epoch in progress is dropped, last.pt keeps the last complete epoch.
        references, neighbours: MMRef only: the teacher references of the experiment's two
            teachers (``.h5``) and their neighbours table, read when the sampler places
            neighbour identities together or the soft targets are on.

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (names the epoch, step and term).
        CheckpointError: a finished run whose selected model is missing, or an unreadable state.
        FileNotFoundError / ValueError: a missing manifest, shard or teacher.

    A ``last.pt`` written by another configuration (or from other inputs) is never resumed:
    it and the run's other files move to ``out_dir/superseded/<UTC time>/`` and training
    starts over.
    """
    ctx = init_distributed(device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(
            ctx, cfg, student_cfg, Path(dataset_root), Path(images_manifest), Path(texts_manifest),
            [Path(p) for p in image_shards], [Path(p) for p in text_shards], Path(out_dir), max_steps,
            None if references is None else Path(references), None if neighbours is None else Path(neighbours),
        )
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        cleanup_distributed(ctx)


def _train(
    ctx: DistributedContext,
    cfg: ExperimentConfig,
    student_cfg: StudentConfig,
    dataset_root: Path,
    images_manifest: Path,
    texts_manifest: Path,
    image_shards: list[Path],
    text_shards: list[Path],
    out_dir: Path,
    max_steps: int | None,
    references: Path | None = None,
    neighbours_path: Path | None = None,
) -> TrainResult:
    from softref.models.student import Student

    device = ctx.device
    is_mmref = cfg.method == "mmref"
    if cfg.method not in CUSA_METHODS and not is_mmref:
        raise ValueError(
            f"experiment {cfg.name!r}: method {cfg.method!r} is not one of {sorted(CUSA_METHODS) + ['mmref']}"
        )
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"experiment {cfg.name!r}: epochs and batch_size must be >= 1, found {cfg.epochs}, {cfg.batch_size}")
    if ctx.world_size != cfg.gpus:
        message = (
            f"experiment {cfg.name!r} expects {cfg.gpus} training process(es) (experiments.{cfg.name}.gpus), "
            f"found {ctx.world_size}; with gather={cfg.gather} each process's losses see "
            f"{cfg.batch_size // ctx.world_size} pairs instead of {cfg.batch_size // cfg.gpus}"
        )
        if device.type == "cuda":
            # A silent change of the per-GPU batch would change the experiment.
            raise ValueError(message + ". Grant the job that many GPUs (resource gpu) or change gpus")
        logger.warning("%s (CPU run: going on)", message)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, ckpt_path, log_path = out_dir / LAST, out_dir / BEST, out_dir / CHECKPOINT, out_dir / LOG
    seed_everything(cfg.seed + ctx.rank)
    disable_bars = progress_disabled(logger) or not ctx.is_main

    # ============ data ... ============
    images_sha, texts_sha = file_sha256(images_manifest), file_sha256(texts_manifest)
    pairs = load_pairs(images_manifest, texts_manifest, "train")
    val_items = split_items(images_manifest, texts_manifest, "val")
    image_store, text_store = (None, None) if is_mmref else _open_stores(cfg, image_shards, text_shards, images_sha, texts_sha)
    if image_store is not None:
        _check_coverage(image_store, pairs["image_id"].tolist(), "image")
        _check_coverage(text_store, pairs["text_id"].tolist(), "text")
    logger.info(
        "data: %d train pairs (%d images), val %d images / %d captions; teachers %s",
        len(pairs), pairs["image_id"].nunique(), val_items.num_images, val_items.num_texts,
        "none" if image_store is None else f"{image_store!r}, {text_store!r}",
    )

    # ============ model ... ============
    student = Student(student_cfg.architecture, student_cfg.pretrained).to(device)
    dataset = TrainPairs(pairs, dataset_root, student.transform)
    head: nn.Module | None = None
    identities: list[str] = []
    teacher_references: Tensor | None = None
    reference_facts: dict[str, Any] | None = None
    scheme = None
    if is_mmref:
        from softref.models.mmref import MMRefHead, text_token_features, token_scheme_for
        from softref.train.sampler import IdentityBatchSampler

        identities = sorted(set(pairs["identity"]))
        neighbours, teacher_references, reference_facts = _mmref_inputs(
            cfg, identities, references, neighbours_path, images_sha, texts_sha
        )
        scheme = token_scheme_for(student)
        with torch.no_grad():
            text_width = int(text_token_features(student, student.tokenizer(["a"]).to(device)).shape[-1])
        head = MMRefHead(
            len(identities), student.embed_dim, text_width, scheme.vocab_size,
            heads=cfg.mmref.decoder_heads, reconstruction_context=cfg.mmref.reconstruction_context,
        ).to(device)
        if teacher_references is not None:
            teacher_references = teacher_references.to(device)
        sampler = IdentityBatchSampler(
            pairs["identity"].tolist(), batch_size=cfg.batch_size, samples_per_identity=cfg.mmref.samples_per_identity,
            seed=cfg.seed, neighbours=neighbours, neighbours_per_anchor=cfg.mmref.neighbours_per_anchor,
            rank=ctx.rank, world_size=ctx.world_size,
        )
        collator = BatchCollator(student.tokenizer, identity_rows={name: i for i, name in enumerate(identities)})
        logger.info(
            "mmref: %d identities in the reference bank; sampler %d x %d with %d neighbour(s) per anchor; terms: %s",
            len(identities), cfg.batch_size // cfg.mmref.samples_per_identity, cfg.mmref.samples_per_identity,
            cfg.mmref.neighbours_per_anchor,
            ", ".join(t for t, on in (("fuse", cfg.mmref.global_fusion), ("guide", cfg.mmref.reference_guidance),
                                      ("recon", cfg.mmref.local_reconstruction), ("soft", cfg.mmref.soft_targets)) if on) or "id only",
        )
    else:
        sampler = EpochBatchSampler(len(dataset), cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size)
        collator = BatchCollator(student.tokenizer, image_store, text_store)
    loader = make_loader(
        dataset, sampler, collator, num_workers=cfg.num_workers, pin_memory=device.type == "cuda"
    )

    # ============ loss and optimizer ... ============
    groups = parameter_groups(student, cfg.weight_decay)
    if head is not None:
        # The bank, decoder and MLM head start from scratch: they may learn faster than the
        # pretrained student (mmref.head_lr_scale).
        for extra in parameter_groups(head, cfg.weight_decay):
            groups.append({**extra, "lr_scale": float(cfg.mmref.head_lr_scale)})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)

    # ============ schedule ... ============
    lr_schedule = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs)

    # ============ resume ... ============
    run_config = {
        "experiment": plain_config(cfg),
        "student": plain_config(student_cfg),
        "inputs": {
            "images_manifest_sha256": images_sha,
            "texts_manifest_sha256": texts_sha,
            "image_teacher": None if image_store is None else _teacher_facts(image_store),
            "text_teacher": None if text_store is None else _teacher_facts(text_store),
            "references": reference_facts,
        },
    }
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val_rsum": -math.inf, "best_epoch": 0, "log": []}
    # Every process reads the resume state before rank 0 may move a stale one aside.
    barrier()
    resumed = (
        load_checkpoint(last_path, map_location="cpu", required=("model", "optimizer", "epoch", "config"))
        if last_path.exists()
        else None
    )
    barrier()
    if resumed is not None:
        differences = config_differences(_comparable(resumed["config"]), _comparable(run_config))
        if differences:
            # The run folder holds another experiment's state (the config or an input changed, and
            # Snakemake asked for a new run): keep it aside, never resume from it.
            moved = _supersede(out_dir, ctx)
            logger.warning(
                "%s was written by another configuration (differing keys: %s); it and the run's other "
                "files were moved to %s and training starts over", last_path, "; ".join(differences), moved,
            )
            resumed = None
    if resumed is not None:
        student.load_state_dict(resumed["model"])
        if head is not None:
            if "mmref_head" not in resumed:
                raise CheckpointError(f"{last_path}: an mmref run's resume state lacks 'mmref_head'; delete {out_dir} to start over")
            head.load_state_dict(resumed["mmref_head"])
        optimizer.load_state_dict(resumed["optimizer"])
        restore_rng_state(resumed["rng"])
        for key in state:
            state[key] = resumed[key]
        logger.info("resuming %s after epoch %d (step %d)", out_dir, state["epoch"], state["step"])
    # Under torchrun every process starts from rank 0's weights and averages gradients after each
    # backward, as DistributedDataParallel does. DDP itself is not used: base / csa / usa leave
    # heads and temperatures without gradient and the temperatures are returned as parameters,
    # which its reducer cannot follow (find_unused_parameters marks them ready twice).
    model: nn.Module = student
    broadcast_parameters(student)
    if head is not None:
        broadcast_parameters(head)
    mmref_extra = {} if head is None else {"mmref": {"identities": identities, "config": plain_config(cfg.mmref)}}

    if int(state["epoch"]) >= cfg.epochs:
        logger.warning(
            "%s: training already complete (epoch %d of %d, same configuration): publishing its selected "
            "model; delete the folder to train again", out_dir, state["epoch"], cfg.epochs,
        )

    # ============ loop ... ============
    step = int(state["step"])
    stopped = False
    for epoch in range(int(state["epoch"]) + 1, cfg.epochs + 1):
        if max_steps is not None and step >= max_steps:
            stopped = True
            break
        lr = float(lr_schedule[epoch - 1])
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        sampler.set_epoch(epoch)
        model.train()
        if head is not None:
            head.train()
        sums = np.zeros(len(LOSS_TERMS))
        used: tuple[str, ...] = ()
        num_batches = 0
        wait_seconds = fetch_seconds = 0.0
        start = time.perf_counter()
        ticked = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=disable_bars, leave=False)
        for batch_index, batch in enumerate(bar):
            if max_steps is not None and step >= max_steps:
                stopped = True
                break
            wait_seconds += time.perf_counter() - ticked
            fetch_seconds += batch.fetch_seconds
            batch = batch.to(device, non_blocking=True)
            if head is not None:
                terms = mmref_losses(student, head, batch, cfg, scheme, teacher_references)
            else:
                terms = training_losses(model, batch, cfg)
            values = _check_finite(terms, epoch, step + 1, batch_index, out_dir, device)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            average_gradients(student)
            if head is not None:
                average_gradients(head)
            optimizer.step()
            step += 1
            used = tuple(terms)
            for name, value in zip(terms, values):
                sums[LOSS_TERMS.index(name)] += value
            num_batches += 1
            bar.set_postfix(loss=f"{values[-1]:.4f}", refresh=False)
            ticked = time.perf_counter()
        bar.close()
        if stopped:
            logger.info("stopping at step %d (max_steps=%d) inside epoch %d; last.pt keeps epoch %d",
                        step, max_steps, epoch, epoch - 1)
            break

        means = all_reduce_mean(torch.tensor(sums / max(num_batches, 1), dtype=torch.float64, device=device)).cpu()
        row: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr}
        for k, name in enumerate(LOSS_TERMS):
            row[f"loss_{name}"] = float(means[k]) if name in used else None
        row.update(_temperatures(student))

        if ctx.is_main:
            image_emb, text_emb = encode_split(
                student, val_items, dataset_root, batch_size=cfg.batch_size, device=device,
                num_workers=cfg.num_workers, desc=f"val {epoch}",
            )
            # MMRef's benchmarks are identity-level (any image of the person is a hit): select the
            # same way; CUSA's are pair-level.
            relevant = val_items.identity_relevant() if is_mmref else val_items.relevant()
            val = image_text_metrics(image_emb, text_emb, relevant)
            student.train()
            for direction in ("i2t", "t2i"):
                for k in KS:
                    row[f"val_{direction}_R@{k}"] = val[direction][f"R@{k}"]
            row["val_rsum"] = val["rsum"]
            row.update(seconds=time.perf_counter() - start, wait_seconds=wait_seconds, fetch_seconds=fetch_seconds)
            state["log"] = list(state["log"]) + [row]
            if val["rsum"] > state["best_val_rsum"]:
                state["best_val_rsum"], state["best_epoch"] = float(val["rsum"]), epoch
                save_checkpoint(
                    {
                        "model": student.state_dict(),
                        "config": run_config,
                        "epoch": epoch,
                        "step": step,
                        "val": {k: row[k] for k in VAL_COLUMNS},
                        "softref_version": __version__,
                        **_head_state(head),
                        **mmref_extra,
                    },
                    best_path,
                )
            state["epoch"], state["step"] = epoch, step
            save_checkpoint(
                {
                    "model": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "scaler": None,
                    "rng": capture_rng_state(),
                    "config": run_config,
                    "best_val_rsum": state["best_val_rsum"],
                    "best_epoch": state["best_epoch"],
                    "log": state["log"],
                    "softref_version": __version__,
                    **_head_state(head),
                    **mmref_extra,
                },
                last_path,
            )
            _write_log(state["log"], log_path)
            logger.info(
                "epoch %d/%d step %d lr %.3g: loss %.4f, val RSUM %.2f (best %.2f at epoch %d), %.1fs "
                "(waiting for data %.1fs, teacher fetch %.1fs)",
                epoch, cfg.epochs, step, lr, row["loss_total"], row["val_rsum"], state["best_val_rsum"],
                state["best_epoch"], row["seconds"], wait_seconds, fetch_seconds,
            )
        state["epoch"], state["step"] = epoch, step
        barrier()

    for store in (image_store, text_store):
        if store is not None:
            store.close()
    completed = not stopped and int(state["epoch"]) >= cfg.epochs
    if completed and ctx.is_main:
        _finalize(best_path, ckpt_path, log_path, state)
    # Only rank 0 validates: share what it selected.
    best_val_rsum, best_epoch = broadcast_from_main([state["best_val_rsum"], state["best_epoch"]], device)
    state["best_val_rsum"], state["best_epoch"] = best_val_rsum, int(best_epoch)
    barrier()
    return TrainResult(
        checkpoint=ckpt_path if completed else None,
        train_log=log_path,
        last=last_path,
        completed=completed,
        epochs_completed=int(state["epoch"]),
        steps=step,
        best_epoch=int(state["best_epoch"]),
        best_val_rsum=float(state["best_val_rsum"]),
    )


def _supersede(out_dir: Path, ctx: DistributedContext) -> Path:
    """Move the run folder's state files (last, best, checkpoint, log) to ``superseded/<UTC time>/``.

    Rank 0 moves them; the others wait, so no process reads a half-moved folder.
    """
    target = out_dir / "superseded" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if ctx.is_main:
        target.mkdir(parents=True, exist_ok=True)
        for name in (LAST, BEST, CHECKPOINT, LOG):
            if (out_dir / name).exists():
                os.replace(out_dir / name, target / name)
    barrier()
    return target


def _head_state(head: nn.Module | None) -> dict[str, Any]:
    return {} if head is None else {"mmref_head": head.state_dict()}


def _mmref_inputs(
    cfg: ExperimentConfig,
    identities: Sequence[str],
    references: Path | None,
    neighbours_path: Path | None,
    images_sha: str,
    texts_sha: str,
) -> tuple[dict[str, list[str]] | None, Tensor | None, dict[str, Any] | None]:
    """MMRef's teacher inputs: the neighbour lists (sampler) and the teacher references (soft targets).

    Both come from the teacher references of the experiment's two teachers, made from the same
    manifests; their identities must be exactly the training identities (rows of the bank).
    """
    from softref.references.build import References
    from softref.train.sampler import neighbours_from_parquet

    need_neighbours = cfg.mmref.neighbours_per_anchor > 0
    if not (need_neighbours or cfg.mmref.soft_targets):
        return None, None, None
    what = f"experiment {cfg.name!r} (mmref)"
    if references is None or not Path(references).is_file():
        raise FileNotFoundError(
            f"{what} needs the teacher references results/references/{cfg.dataset}/{cfg.references_name}.h5 "
            f"(neighbours_per_anchor > 0 or soft_targets); found {references}"
        )
    expect = {
        "image_teacher": cfg.image_teacher,
        "text_teacher": cfg.text_teacher,
        "images_manifest_sha256": images_sha,
        "texts_manifest_sha256": texts_sha,
    }
    refs = References.open(references, expect=expect)
    found = list(refs.identities)
    if found != list(identities):
        extra, lacking = sorted(set(found) - set(identities)), sorted(set(identities) - set(found))
        raise ValueError(
            f"{references}: expected the {len(identities)} training identities as rows, found {len(found)}; "
            f"not in training: {extra[:5]}; without a reference: {lacking[:5]}"
        )
    teacher = torch.tensor(np.asarray(refs.multimodal, dtype=np.float32)) if cfg.mmref.soft_targets else None
    facts = {
        key: refs.attrs.get(key)
        for key in ("image_teacher", "text_teacher", "image_weights_sha256", "text_weights_sha256", "dim")
    }
    neighbours = None
    if need_neighbours:
        if neighbours_path is None or not Path(neighbours_path).is_file():
            raise FileNotFoundError(f"{what} needs the neighbours table of {references}; found {neighbours_path}")
        neighbours = neighbours_from_parquet(neighbours_path, identities)
    return neighbours, teacher, facts


def _teacher_facts(store: Any) -> dict[str, Any]:
    attrs = store.attrs
    return {key: attrs.get(key) for key in ("teacher", "weights_sha256", "preprocess", "dim", "normalized")}


def _comparable(run_config: Mapping[str, Any]) -> dict[str, Any]:
    plain = plain_config(run_config)
    for key in _RESUME_IGNORED:
        plain.get("experiment", {}).pop(key, None)
    return plain


def _finalize(best_path: Path, ckpt_path: Path, log_path: Path, state: Mapping[str, Any]) -> None:
    """Publish the selected model as checkpoint.pt (once every epoch has run)."""
    if not best_path.exists():
        raise CheckpointError(
            f"training is complete (epoch {state['epoch']}) but the selected model {best_path} is "
            f"missing; delete {ckpt_path.parent} to train again"
        )
    _copy_atomic(best_path, ckpt_path)
    if not log_path.exists():
        _write_log(state["log"], log_path)
    logger.info("selected epoch %d (val RSUM %.2f): %s", state["best_epoch"], state["best_val_rsum"], ckpt_path)
