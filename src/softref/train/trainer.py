"""The trainer: one experiment, one process or torchrun, resumable at epoch boundaries.

One loop serves every method; what differs between methods (batches, sampler, model
additions, objective, the relevance used for selection) comes from the method's family in
:mod:`softref.train.methods`. :func:`train` reads top to bottom in banner-marked steps: data,
model and method, optimizer and schedule, resume, loop. It writes, in ``out_dir`` (on rank 0):

``checkpoint.pt``
    the selected model (best validation RSUM; the val split, never test), written once the
    last epoch is done. With ``val_max_images`` each epoch validates on the val split's first N
    images and their captions (:meth:`~softref.evaluate.retrieval.SplitItems.first_images`),
    the selection uses that RSUM, and the selected model's metrics on the whole val split are
    computed once after the last epoch and recorded under ``val_full``.
``train_log.csv``
    one row per epoch (:data:`LOG_COLUMNS`), rewritten atomically after every epoch.
``last.pt``
    the resume state after every epoch (atomic). A rerun with the same configuration continues
    from the next epoch; on CPU it reaches exactly the weights and log of an uninterrupted run.
``best.pt``
    the best model so far; published as ``checkpoint.pt`` once the last epoch is done (a hard
    link where the file system has them, else a copy: :func:`~softref.files.link_atomic`) and kept,
    so that a rerun of a finished run (e.g. after Snakemake removed its outputs) republishes
    ``checkpoint.pt`` without training again.

:func:`retrain` trains an experiment again on train + val for the number of epochs its
selection run chose (Reed et al.'s CUB / Flowers: published numbers train on every trainval
class); with nothing left to select on, it publishes the last epoch.

The student is built at the student block's ``image_size`` with the experiment's temperature
choice (:func:`softref.models.student.student_options`, which evaluation reads back from the
checkpoint); with ``augment: reid`` the training images, and only they, go through
:mod:`softref.train.augment`.

Batch size: ``ExperimentConfig.batch_size`` is the global batch. Under torchrun each of the N
processes takes B/N pairs of every batch; with ``gather=True`` the losses see the whole batch
(see :mod:`softref.train.distributed`), with ``gather=False`` each process computes its
losses on its own B/N pairs (the public CUSA code's way: 4 GPUs x 128).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from softref import __version__
from softref.checkpoints import (
    CheckpointError,
    capture_rng_state,
    config_differences,
    load_checkpoint,
    plain_config,
    restore_rng_state,
    save_checkpoint,
)
from softref.config import TRAINING_IGNORES, ExperimentConfig, StudentConfig
from softref.evaluate.retrieval import KS, encode_split, image_text_metrics, split_items
from softref.files import file_sha256, link_atomic, write_text_atomic
from softref.names import RETRAIN_SPLITS
from softref.runtime import gpu_memory_peak_mb, host_memory_peak_mb, progress_disabled, reset_gpu_memory_peak
from softref.train.augment import AugmentedPairs, EpochTaggedBatches, augmentation
from softref.train.data import TrainPairs, load_pairs, make_loader
from softref.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    any_across,
    average_gradients,
    barrier,
    broadcast_from_main,
    broadcast_parameters,
    cleanup_distributed,
    init_distributed,
)
from softref.train.methods import MethodRun, RunSetup, family

__all__ = [
    "LOG_COLUMNS",
    "LOSS_TERMS",
    "MEASURED_COLUMNS",
    "TEMPERATURES",
    "NonFiniteLossError",
    "TrainResult",
    "train",
    "retrain",
    "selected_epoch",
    "parameter_groups",
    "make_optimizer",
    "mean_direction_norm",
    "warn_if_collapsed",
    "cosine_schedule",
    "seed_everything",
]

logger = logging.getLogger(__name__)

LOSS_TERMS: tuple[str, ...] = ("total", "itr", "csa", "usa", "id", "fuse", "guide", "recon")
TEMPERATURES: tuple[str, ...] = ("tau", "tau_c", "tau_image", "tau_text")
VAL_COLUMNS: tuple[str, ...] = tuple(f"val_{d}_R@{k}" for d in ("i2t", "t2i") for k in KS) + ("val_rsum",)
#: Columns that measure time: ``seconds`` (the epoch with its validation), ``train_seconds`` (its
#: optimizer steps, data waits included), waiting for data and fetching teacher rows.
TIME_COLUMNS: tuple[str, ...] = ("seconds", "train_seconds", "wait_seconds", "fetch_seconds")
#: Columns that measure memory: peak host memory of the training process and its workers (MiB),
#: peak CUDA memory of the epoch (MiB; empty off CUDA).
MEMORY_COLUMNS: tuple[str, ...] = ("host_peak_mb", "gpu_peak_mb")
#: Columns that differ between otherwise identical runs.
MEASURED_COLUMNS: tuple[str, ...] = TIME_COLUMNS + MEMORY_COLUMNS
#: Columns of train_log.csv; loss terms a method does not use are left empty.
LOG_COLUMNS: tuple[str, ...] = (
    ("epoch", "step", "lr") + tuple(f"loss_{t}" for t in LOSS_TERMS) + TEMPERATURES + VAL_COLUMNS + MEASURED_COLUMNS
)

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


def make_optimizer(groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``; torch's fused kernel on CPU and CUDA.

    The same update as the default implementation (up to float rounding), one kernel over all
    parameters instead of a loop: on one CPU thread the default took 68 ms a step for the demo's
    tiny student, whose 49,408 x 128 token embedding is 78 % of its parameters, the fused one
    10 ms (``python bench/optimizer.py``). Other devices get torch's default implementation.
    """
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


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
        writer.writerow(["" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in LOG_COLUMNS])
    write_text_atomic(path, buffer.getvalue())


def _check_finite(terms: Mapping[str, Tensor], epoch: int, step: int, batch_index: int, out_dir: Path,
                  device: torch.device) -> list[float]:
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
# the run's state
# ---------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything one call of :func:`train` works with, set up once before the loop."""

    cfg: ExperimentConfig
    ctx: DistributedContext
    out_dir: Path
    student: nn.Module
    method: MethodRun
    optimizer: torch.optim.Optimizer
    lr_schedule: np.ndarray
    run_config: dict[str, Any]
    val_items: Any
    dataset_root: Path
    loader: Any
    max_steps: int | None
    augmented: AugmentedPairs | None = None
    select: bool = True
    #: With ``val_max_images``: the whole val split, for the selected model's ``val_full``
    #: (``val_items`` is then its first images); None otherwise.
    full_val_items: Any = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "step": 0, "best_val_rsum": -math.inf, "best_epoch": 0, "log": []}
    )

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def modules_state(self) -> dict[str, Any]:
        return {key: module.state_dict() for key, module in self.method.modules.items()}


def _check_experiment(cfg: ExperimentConfig, ctx: DistributedContext) -> None:
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"experiment {cfg.name!r}: epochs and batch_size must be >= 1, found {cfg.epochs}, "
                         f"{cfg.batch_size}")
    if ctx.world_size != cfg.gpus:
        message = (
            f"experiment {cfg.name!r} expects {cfg.gpus} training process(es) (experiments.{cfg.name}.gpus), "
            f"found {ctx.world_size}; with gather={cfg.gather} each process's losses see "
            f"{cfg.batch_size // ctx.world_size} pairs instead of {cfg.batch_size // cfg.gpus}"
        )
        if ctx.device.type == "cuda":
            # A silent change of the per-GPU batch would change the experiment.
            raise ValueError(message + ". Grant the job that many GPUs (resource gpu) or change gpus")
        logger.warning("%s (CPU run: going on)", message)
    limit = cfg.val_max_images
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"experiment {cfg.name!r}: val_max_images: expected an integer >= 1 or None (the whole "
                         f"val split), found {limit!r}")


def _training_pairs(images_manifest: Path, texts_manifest: Path, splits: Sequence[str]) -> pd.DataFrame:
    """The pairs of ``splits`` together, as :func:`load_pairs` gives one split's (text_id order,
    ``image_index`` numbering the distinct images in image_id order)."""
    if len(splits) == 1:
        return load_pairs(images_manifest, texts_manifest, splits[0])
    frames = [load_pairs(images_manifest, texts_manifest, split) for split in splits]
    pairs = pd.concat(frames).sort_values("text_id", kind="stable").reset_index(drop=True)
    pairs["image_index"] = pd.factorize(pairs["image_id"], sort=True)[0].astype(np.int64)
    return pairs


def _setup(ctx: DistributedContext, cfg: ExperimentConfig, student_cfg: StudentConfig, inputs: Mapping[str, Any],
           max_steps: int | None) -> _Run:
    from softref.models.student import Student, student_options

    family_module = family(cfg.method)  # an unknown method fails here, before any file is read
    _check_experiment(cfg, ctx)
    out_dir = Path(inputs["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + ctx.rank)

    # ============ data ... ============
    images_manifest, texts_manifest = Path(inputs["images_manifest"]), Path(inputs["texts_manifest"])
    images_sha, texts_sha = file_sha256(images_manifest), file_sha256(texts_manifest)
    splits, select = tuple(inputs["splits"]), bool(inputs["select"])
    pairs = _training_pairs(images_manifest, texts_manifest, splits)
    val_items = split_items(images_manifest, texts_manifest, "val") if select else None
    full_val_items = None
    if select and cfg.val_max_images is not None:
        full_val_items, val_items = val_items, val_items.first_images(cfg.val_max_images)

    # ============ model and method ... ============
    options = student_options(plain_config(student_cfg), plain_config(cfg))
    student = Student(student_cfg.architecture, student_cfg.pretrained, **options).to(ctx.device)
    dataset = TrainPairs(pairs, Path(inputs["dataset_root"]), student.transform)
    method = family_module.prepare(RunSetup(
        cfg=cfg, student=student, pairs=pairs, dataset=dataset, ctx=ctx,
        image_shards=tuple(inputs["image_shards"]), text_shards=tuple(inputs["text_shards"]),
        references=inputs["references"], neighbours=inputs["neighbours"], images_sha=images_sha, texts_sha=texts_sha,
        teachers=inputs["teachers"],
    ))
    # The student's augmentation wraps what the loader reads (the pairs, or the method's items);
    # its epoch rides on the sampler's indices, since the persistent workers never see set_epoch.
    items, sampler = method.dataset or dataset, method.sampler
    augment = augmentation(cfg.augment, student.preprocess_cfg)
    augmented = None if augment is None else AugmentedPairs(items, augment, cfg.seed)
    if augmented is not None:
        sampler = EpochTaggedBatches(sampler, augmented)
    if not select:
        validation = "no selection (the last epoch is published)"
    elif full_val_items is None:
        validation = f"val {val_items.num_images} images / {val_items.num_texts} captions"
    else:
        validation = (f"val per epoch: the first {val_items.num_images} of {full_val_items.num_images} images / "
                      f"{val_items.num_texts} of {full_val_items.num_texts} captions (val_max_images "
                      f"{cfg.val_max_images}), the whole split for the selected model")
    logger.info("data: %d pairs of %s (%d images), %s; augment %s", len(pairs), "+".join(splits),
                pairs["image_id"].nunique(), validation, cfg.augment)

    # ============ optimizer and schedule ... ============
    groups = parameter_groups(student, cfg.weight_decay)
    for module in method.modules.values():
        # New modules (MMRef's bank, decoder, MLM head) start from scratch: they may learn faster.
        groups += [{**g, "lr_scale": method.lr_scale} for g in parameter_groups(module, cfg.weight_decay)]
    run_config = {
        "experiment": plain_config(cfg),
        "student": plain_config(student_cfg),
        "inputs": {"images_manifest_sha256": images_sha, "texts_manifest_sha256": texts_sha,
                   "image_teacher": None, "text_teacher": None, "references": None, **method.facts},
    }
    if splits != ("train",) or not select:
        # Only a retrain records this, so runs trained before the key existed still resume.
        run_config["inputs"]["training"] = {"splits": list(splits), "select": select}
    return _Run(
        cfg=cfg, ctx=ctx, out_dir=out_dir, student=student, method=method,
        optimizer=make_optimizer(groups, cfg.lr, ctx.device), lr_schedule=cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs),
        run_config=run_config, val_items=val_items, dataset_root=Path(inputs["dataset_root"]),
        loader=make_loader(augmented or items, sampler, method.collator, num_workers=cfg.num_workers,
                           pin_memory=ctx.device.type == "cuda"),
        max_steps=max_steps, augmented=augmented, select=select, full_val_items=full_val_items,
    )


# ---------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------
def _comparable(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's configuration less what cannot change the trained model: a resume may differ there."""
    plain = plain_config(run_config)
    for key in TRAINING_IGNORES:
        plain.get("experiment", {}).pop(key, None)
    if plain.get("experiment", {}).get("val_max_images", 0) is None:
        # The default (the whole val split) is how runs trained before the key existed validated.
        plain["experiment"].pop("val_max_images")
    plain.get("student", {}).pop("paper_model", None)
    return plain


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


def _resume(run: _Run) -> None:
    """Continue from ``last.pt`` when it was written by this configuration; set it aside otherwise."""
    last_path = run.path(LAST)
    # Every process reads the resume state before rank 0 may move a stale one aside.
    barrier()
    resumed = (load_checkpoint(last_path, map_location="cpu", required=("model", "optimizer", "epoch", "config"))
               if last_path.exists() else None)
    barrier()
    if resumed is not None:
        differences = config_differences(_comparable(resumed["config"]), _comparable(run.run_config))
        if differences:
            # The run folder holds another experiment's state (the config or an input changed, and
            # Snakemake asked for a new run): keep it aside, never resume from it.
            moved = _supersede(run.out_dir, run.ctx)
            logger.warning("%s was written by another configuration (differing keys: %s); it and the run's other "
                           "files were moved to %s and training starts over", last_path, "; ".join(differences), moved)
            resumed = None
    if resumed is not None:
        run.student.load_state_dict(resumed["model"])
        for key, module in run.method.modules.items():
            if key not in resumed:
                raise CheckpointError(f"{last_path}: the resume state lacks {key!r}; delete {run.out_dir} to start over")
            module.load_state_dict(resumed[key])
        run.optimizer.load_state_dict(resumed["optimizer"])
        restore_rng_state(resumed["rng"])
        for key in run.state:
            run.state[key] = resumed[key]
        logger.info("resuming %s after epoch %d (step %d)", run.out_dir, run.state["epoch"], run.state["step"])
    # Under torchrun every process starts from rank 0's weights and averages gradients after each
    # backward, as DistributedDataParallel does. DDP itself is not used: base / csa / usa leave
    # heads and temperatures without gradient and the temperatures are returned as parameters,
    # which its reducer cannot follow (find_unused_parameters marks them ready twice).
    for module in (run.student, *run.method.modules.values()):
        broadcast_parameters(module)
    if int(run.state["epoch"]) >= run.cfg.epochs:
        logger.warning("%s: training already complete (epoch %d of %d, same configuration): publishing its "
                       "selected model; delete the folder to train again", run.out_dir, run.state["epoch"],
                       run.cfg.epochs)


# ---------------------------------------------------------------------------------------------
# loop
# ---------------------------------------------------------------------------------------------
def _train_epoch(run: _Run, epoch: int, step: int) -> tuple[int, dict[str, Any] | None]:
    """One epoch of optimizer steps; returns (step, the epoch's log row) or (step, None) when
    ``max_steps`` stopped it inside the epoch."""
    cfg, modules = run.cfg, (run.student, *run.method.modules.values())
    lr = float(run.lr_schedule[epoch - 1])
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    run.method.sampler.set_epoch(epoch)
    if run.augmented is not None:
        run.augmented.set_epoch(epoch)
    for module in modules:
        module.train()
    sums, used, num_batches = np.zeros(len(LOSS_TERMS)), (), 0
    wait_seconds = fetch_seconds = 0.0
    reset_gpu_memory_peak(run.device)
    start = ticked = time.perf_counter()
    disable = progress_disabled(logger) or not run.ctx.is_main
    bar = tqdm(run.loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=disable, leave=False)
    for batch_index, batch in enumerate(bar):
        if run.max_steps is not None and step >= run.max_steps:
            bar.close()
            return step, None
        wait_seconds += time.perf_counter() - ticked
        fetch_seconds += batch.fetch_seconds
        terms = run.method.losses(run.student, batch.to(run.device, non_blocking=True))
        values = _check_finite(terms, epoch, step + 1, batch_index, run.out_dir, run.device)
        run.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        for module in modules:
            average_gradients(module)
        run.optimizer.step()
        step, used, num_batches = step + 1, tuple(terms), num_batches + 1
        for name, value in zip(terms, values):
            sums[LOSS_TERMS.index(name)] += value
        bar.set_postfix(loss=f"{values[-1]:.4f}", refresh=False)
        ticked = time.perf_counter()
    bar.close()
    train_seconds = time.perf_counter() - start
    means = all_reduce_mean(torch.tensor(sums / max(num_batches, 1), dtype=torch.float64, device=run.device)).cpu()
    row: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr}
    for k, name in enumerate(LOSS_TERMS):
        row[f"loss_{name}"] = float(means[k]) if name in used else None
    row.update(_temperatures(run.student))
    # "seconds" is filled in after validation: it covers the epoch and its validation.
    row.update(_start=start, train_seconds=train_seconds, wait_seconds=wait_seconds, fetch_seconds=fetch_seconds,
               host_peak_mb=host_memory_peak_mb(), gpu_peak_mb=gpu_memory_peak_mb(run.device))
    return step, row


#: Norm of the mean unit embedding above which a modality's embeddings count as collapsed.
COLLAPSE_NORM = 0.99


def mean_direction_norm(embeddings: Tensor) -> float:
    """|mean of the L2-normalised rows|: 1 when every row points the same way, about
    1/sqrt(N) for N random directions."""
    unit = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
    return float(unit.mean(dim=0).norm())


def warn_if_collapsed(image_emb: Tensor, text_emb: Tensor, desc: str) -> bool:
    """Warn when both modalities' val embeddings point (nearly) one way: every score then ties
    and the contrastive loss sits at ln(batch), the value of constant embeddings, with almost
    no gradient to leave it. The person demo's students did so within 6 steps at lr 1e-3
    (norms 0.9974 and 0.9997 at every epoch) and trained at 3e-4. Students trained from random
    weights also point one way after their first epoch while they learn, so the trainer checks
    from the second epoch on. Returns whether it warned."""
    norms = mean_direction_norm(image_emb), mean_direction_norm(text_emb)
    if min(norms) <= COLLAPSE_NORM:
        return False
    logger.warning(
        "%s: the student's embeddings have collapsed (norm of the mean unit embedding: images %.4f, texts "
        "%.4f; 1 means all identical, above %.2f counts as collapsed): retrieval is at chance and the "
        "contrastive loss sits near ln(batch size). A lower learning rate (or a pretrained student) avoids it.",
        desc, norms[0], norms[1], COLLAPSE_NORM,
    )
    return True


def _val_metrics(run: _Run, items: Any, desc: str, check_collapse: bool = False) -> dict[str, float]:
    """R@1/5/10 and RSUM of the student on ``items`` (val), with the method's relevance, as
    :data:`VAL_COLUMNS`; the score matrix and its ranking on the run's device."""
    image_emb, text_emb = encode_split(run.student, items, run.dataset_root, batch_size=run.cfg.batch_size,
                                       device=run.device, num_workers=run.cfg.num_workers, desc=desc)
    val = image_text_metrics(image_emb, text_emb, run.method.relevance(items), device=run.device)
    if check_collapse:
        warn_if_collapsed(image_emb, text_emb, desc)
    run.student.train()
    out = {f"val_{d}_R@{k}": val[d][f"R@{k}"] for d in ("i2t", "t2i") for k in KS}
    out["val_rsum"] = val["rsum"]
    return out


def _validate(run: _Run, epoch: int) -> dict[str, float]:
    """The epoch's validation: on the val split, or its first images with ``val_max_images``."""
    # From the second epoch: after their first epoch from random weights 19 of the demo's 30
    # students were above the threshold while learning; none was later unless it had collapsed.
    return _val_metrics(run, run.val_items, f"val {epoch}", check_collapse=epoch >= 2)


def _machine(run: _Run) -> dict[str, Any]:
    """What trained: device, its name, processes and torch threads (the training-cost table says it)."""
    import platform

    device = run.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": device.type, "device_name": name, "processes": run.ctx.world_size,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def _save_epoch(run: _Run, epoch: int, step: int, row: dict[str, Any]) -> None:
    """Rank 0: validate, keep the best model, write the resume state and the log."""
    state, start = run.state, row.pop("_start")
    row.update(_validate(run, epoch) if run.select else dict.fromkeys(VAL_COLUMNS))
    row["seconds"] = time.perf_counter() - start
    state["log"] = list(state["log"]) + [row]
    common = {"model": run.student.state_dict(), "config": run.run_config, "epoch": epoch, "step": step,
              "softref_version": __version__, "machine": _machine(run), **run.modules_state(), **run.method.record}
    if not run.select or row["val_rsum"] > state["best_val_rsum"]:
        # Without selection (a retrain on train + val) every epoch is "best": the last one is published.
        state["best_val_rsum"] = float(row["val_rsum"]) if run.select else state["best_val_rsum"]
        state["best_epoch"] = epoch
        save_checkpoint({**common, "val": {k: row[k] for k in VAL_COLUMNS}}, run.path(BEST))
    state["epoch"], state["step"] = epoch, step
    save_checkpoint({**common, "optimizer": run.optimizer.state_dict(), "rng": capture_rng_state(),
                     "best_val_rsum": state["best_val_rsum"], "best_epoch": state["best_epoch"], "log": state["log"]},
                    run.path(LAST))
    _write_log(state["log"], run.path(LOG))
    val = (f"val RSUM {row['val_rsum']:.2f} (best {state['best_val_rsum']:.2f} at epoch {state['best_epoch']})"
           if run.select else "no validation")
    logger.info("epoch %d/%d step %d lr %.3g: loss %.4f, %s, %.1fs (waiting for data %.1fs, teacher fetch %.1fs)",
                epoch, run.cfg.epochs, step, row["lr"], row["loss_total"], val, row["seconds"], row["wait_seconds"],
                row["fetch_seconds"])


def _loop(run: _Run) -> tuple[bool, int]:
    """Every remaining epoch; returns (False, steps) when ``max_steps`` stopped the run early."""
    step = int(run.state["step"])
    for epoch in range(int(run.state["epoch"]) + 1, run.cfg.epochs + 1):
        if run.max_steps is not None and step >= run.max_steps:
            return False, step
        step, row = _train_epoch(run, epoch, step)
        if row is None:
            logger.info("stopping at step %d (max_steps=%d) inside epoch %d; last.pt keeps epoch %d",
                        step, run.max_steps, epoch, epoch - 1)
            return False, step
        if run.ctx.is_main:
            _save_epoch(run, epoch, step, row)
        run.state["epoch"], run.state["step"] = epoch, step
        barrier()
    return True, step


def _finalize(run: _Run) -> None:
    """Publish the selected model as checkpoint.pt (once every epoch has run); with
    ``val_max_images``, after recording its metrics on the whole val split (:func:`_record_full_val`)."""
    best_path, ckpt_path, log_path, state = run.path(BEST), run.path(CHECKPOINT), run.path(LOG), run.state
    if not best_path.exists():
        raise CheckpointError(
            f"training is complete (epoch {state['epoch']}) but the selected model {best_path} is "
            f"missing; delete {ckpt_path.parent} to train again"
        )
    full = _record_full_val(run) if run.full_val_items is not None else None
    link_atomic(best_path, ckpt_path)
    if not log_path.exists():
        _write_log(state["log"], log_path)
    if full is not None:
        logger.info("selected epoch %d (val RSUM %.2f on the first %d val images); on the whole val split (%d "
                    "images, %d captions): RSUM %.2f, i2t R@1 %.2f, t2i R@1 %.2f: %s", state["best_epoch"],
                    state["best_val_rsum"], run.val_items.num_images, full["num_images"], full["num_texts"],
                    full["val_rsum"], full["val_i2t_R@1"], full["val_t2i_R@1"], ckpt_path)
    elif run.select:
        logger.info("selected epoch %d (val RSUM %.2f): %s", state["best_epoch"], state["best_val_rsum"], ckpt_path)
    else:
        logger.info("published the last epoch %d (no selection): %s", state["best_epoch"], ckpt_path)


def _record_full_val(run: _Run) -> dict[str, Any]:
    """The selected model's metrics on the whole val split (``val_max_images`` runs), written into
    best.pt as ``val_full`` once: :data:`VAL_COLUMNS` plus ``num_images`` and ``num_texts``.

    A best.pt that already holds them (a finished run called again) is left as it is. When the
    per-epoch subset is the whole split the selected epoch's own ``val`` is recorded; otherwise the
    student is loaded with the selected weights and validated on the whole split.
    """
    best_path, items = run.path(BEST), run.full_val_items
    best = load_checkpoint(best_path, map_location="cpu", required=("model", "val"))
    if "val_full" in best:
        return best["val_full"]
    if run.val_items is items:
        metrics = {k: best["val"][k] for k in VAL_COLUMNS}
    else:
        run.student.load_state_dict(best["model"])
        metrics = _val_metrics(run, items, "val (whole split)")
    full = {**metrics, "num_images": items.num_images, "num_texts": items.num_texts}
    save_checkpoint({**best, "val_full": full}, best_path)
    return full


def _deterministic_on_cpu(device: torch.device) -> Any:
    """Deterministic algorithms for a CPU run (bit-identical reruns); returns the restore call."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return lambda: torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


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
    teachers: Mapping[str, Any] | None = None,
    splits: Sequence[str] = ("train",), select: bool = True,
) -> TrainResult:
    """Train one experiment's student; write checkpoint.pt, train_log.csv and last.pt in ``out_dir``;
    return a :class:`TrainResult`.

    Args:
        cfg: the experiment (method, loss weights, schedule, batch, seed, gather).
        student_cfg: the student (open_clip architecture and pretrained weights).
        dataset_root: the root the manifest image paths are relative to.
        images_manifest, texts_manifest: the dataset's manifests (train and val splits used).
        image_shards, text_shards: the teachers' feature shards (``images-*.h5`` of the image
            teacher, ``texts-*.h5`` of the text teacher); required for csa/usa/cusa, not read
            for base. Their ``manifest_sha256`` must be the sha256 of the manifests given.
        out_dir: the run folder. device: None picks ``cuda:LOCAL_RANK`` if CUDA is available, else the CPU.
        max_steps: stop (as if interrupted) once this many optimizer steps have run in total;
            the epoch in progress is dropped, last.pt keeps the last complete epoch.
        references, neighbours: MMRef only: the teacher references of the experiment's two
            teachers (``.h5``) and their neighbours table, read when the sampler places
            neighbour identities together or the soft targets are on.
        teachers: the config's teacher specs by name (:class:`softref.config.TeacherSpec`); a CUSA
            run whose ``teacher_features`` compute a modality online loads that teacher from them.
        splits, select: the manifest splits trained on; whether to select the epoch of best val
            RSUM (False: validate nothing, publish the last epoch; :func:`retrain` uses both).

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (names the epoch, step and term).
        CheckpointError: a finished run whose selected model is missing, or an unreadable state.
        FileNotFoundError / ValueError: a missing manifest, shard or teacher.

    A ``last.pt`` written by another configuration (or from other inputs) is never resumed: it
    and the run's other files move to ``out_dir/superseded/<UTC time>/``; training starts over.
    """
    ctx = init_distributed(device)
    inputs = {
        "dataset_root": dataset_root, "images_manifest": images_manifest, "texts_manifest": texts_manifest,
        "image_shards": [Path(p) for p in image_shards], "text_shards": [Path(p) for p in text_shards],
        "out_dir": out_dir, "references": None if references is None else Path(references),
        "neighbours": None if neighbours is None else Path(neighbours), "teachers": dict(teachers or {}),
        "splits": tuple(splits), "select": select,
    }
    run = None
    restore = _deterministic_on_cpu(ctx.device)
    try:
        run = _setup(ctx, cfg, student_cfg, inputs, max_steps)
        _resume(run)
        finished, steps = _loop(run)
        completed = finished and int(run.state["epoch"]) >= cfg.epochs
        if completed and ctx.is_main:
            _finalize(run)
        # Only rank 0 validates: share what it selected.
        best_val_rsum, best_epoch = broadcast_from_main([run.state["best_val_rsum"], run.state["best_epoch"]],
                                                        ctx.device)
        barrier()
        return TrainResult(
            checkpoint=run.path(CHECKPOINT) if completed else None, train_log=run.path(LOG), last=run.path(LAST),
            completed=completed, epochs_completed=int(run.state["epoch"]), steps=steps,
            best_epoch=int(best_epoch), best_val_rsum=float(best_val_rsum),
        )
    finally:
        if run is not None:
            run.method.close()
        restore()
        cleanup_distributed(ctx)


def selected_epoch(checkpoint: Path, experiment: str | None = None) -> int:
    """The epoch a finished run selected on val: the ``epoch`` its ``checkpoint.pt`` (the best model)
    was saved at. With ``experiment``, the checkpoint must have been trained for that experiment."""
    ckpt = load_checkpoint(Path(checkpoint), map_location="cpu", required=("epoch", "config"))
    trained_for = (ckpt["config"].get("experiment") or {}).get("name") if isinstance(ckpt["config"], dict) else None
    if experiment is not None and trained_for != experiment:
        raise CheckpointError(f"{checkpoint}: trained for experiment {trained_for!r}, expected {experiment!r}")
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise CheckpointError(f"{checkpoint}: key 'epoch': expected the selected epoch (>= 1), found {epoch!r}")
    return epoch


def retrain(
    cfg: ExperimentConfig,
    student_cfg: StudentConfig,
    selection_checkpoint: Path,
    dataset_root: Path,
    images_manifest: Path,
    texts_manifest: Path,
    image_shards: Sequence[Path],
    text_shards: Sequence[Path],
    out_dir: Path,
    **kwargs: Any,
) -> TrainResult:
    """Train ``cfg`` again, from scratch, on train + val for the epochs its selection run chose.

    The selection run (``selection_checkpoint``, the experiment's ``checkpoint.pt``) picked its
    epoch E on val; this run trains the same experiment with ``epochs: E`` (its own cosine schedule
    over E epochs) on the pairs of :data:`softref.names.RETRAIN_SPLITS` and publishes the last epoch
    in ``out_dir`` (no val is left to select on). ``kwargs`` go to :func:`train` (``references`` and
    ``neighbours`` must then cover the train + val identities, ``device``, ``max_steps``).
    """
    epochs = selected_epoch(selection_checkpoint, cfg.name)
    logger.info("%s: retraining on %s for the %d epoch(s) selected by %s", cfg.name, "+".join(RETRAIN_SPLITS), epochs,
                selection_checkpoint)
    return train(dataclasses.replace(cfg, epochs=epochs), student_cfg, dataset_root, images_manifest, texts_manifest,
                 image_shards, text_shards, out_dir, splits=RETRAIN_SPLITS, select=False, **kwargs)
