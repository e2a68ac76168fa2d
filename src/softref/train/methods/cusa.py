"""The CUSA family (base, csa, usa, cusa): image-caption batches, teacher rows by id, CUSA Eq. 9.

Batches are random permutations of the train split's caption-image pairs
(:class:`~softref.train.data.EpochBatchSampler`); every caption of the same image in a batch is
a positive. csa, usa and cusa read the two teachers' feature shards by id
(:class:`~softref.features.FeatureStore`), checked against the manifests before the first
step; base reads no teacher. The objective is :func:`softref.losses.cusa_objective` itself, so
editing the public loss changes what trains.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from softref.config import ExperimentConfig
from softref.features import FeatureStore
from softref.losses import CUSA_METHODS, cusa_objective
from softref.train.data import Batch, BatchCollator, EpochBatchSampler
from softref.train.distributed import gather_no_grad, gather_with_grad
from softref.train.methods import MethodRun, RunSetup
from softref.train.methods.online import OnlineBatch, OnlineCollator, OnlineItems, OnlineTeachers, load_online_teachers

__all__ = ["open_teacher_stores", "prepare", "training_losses"]

logger = logging.getLogger(__name__)


def training_losses(model: nn.Module, batch: Batch, cfg: ExperimentConfig) -> dict[str, Tensor]:
    """Forward one batch and compute :func:`softref.losses.cusa_objective` with the experiment's
    weights; gathers across processes when ``cfg.gather`` (the identity in a single process).

    ``model`` is the student (or a DDP wrapper of it).
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
    return cusa_objective(
        out, teacher_image, teacher_text, positives, cfg.method, alpha=cfg.alpha, beta=cfg.beta,
        teacher_tau=cfg.teacher_tau, public_code_weighting=cfg.public_code_weighting,
    )


def open_teacher_stores(
    cfg: ExperimentConfig, image_shards: Sequence[Path], text_shards: Sequence[Path], images_sha: str, texts_sha: str,
) -> tuple[FeatureStore | None, FeatureStore | None]:
    """The teacher FeatureStores of the modalities read from shards, checked against the manifests;
    None for a modality computed online and for ``base``."""
    if CUSA_METHODS[cfg.method] == ("itr",):
        if image_shards or text_shards:
            logger.info("method %r uses no teacher: the given feature shards are not read", cfg.method)
        return None, None
    need = f"experiment {cfg.name!r} (method {cfg.method!r}) needs"
    for key, value in (("image_teacher", cfg.image_teacher), ("text_teacher", cfg.text_teacher)):
        if not value:
            raise ValueError(f"{need} {key}; found none in its config")
    stores = []
    for what, shards, teacher, sha in (("image", image_shards, cfg.image_teacher, images_sha),
                                       ("text", text_shards, cfg.text_teacher, texts_sha)):
        if not cfg.reads_shards(what):
            stores.append(None)
            continue
        if not shards:
            raise FileNotFoundError(f"{need} the {what} teacher's feature shards (teacher {teacher!r}); none given")
        missing = [str(p) for p in shards if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{need} the {what} teacher's feature shards; missing: {missing}")
        stores.append(FeatureStore([Path(p) for p in shards],
                                   expect={"teacher": teacher, "modality": f"{what}s", "manifest_sha256": sha}))
    return stores[0], stores[1]


def _check_coverage(store: FeatureStore, ids: Sequence[str], what: str) -> None:
    unique = list(dict.fromkeys(ids))
    missing = [unique[k] for k in np.flatnonzero(~store.contains(unique))]
    if missing:
        raise KeyError(
            f"{len(missing)} {what} id(s) of the train split have no feature in {store.paths[0].parent} "
            f"(teacher {store.attrs.get('teacher')!r}); first: {missing[:5]}"
        )


def _teacher_facts(store: FeatureStore | None) -> Mapping[str, Any] | None:
    if store is None:
        return None
    return {key: store.attrs.get(key) for key in ("teacher", "weights_sha256", "preprocess", "dim", "normalized")}


def _online_facts(teacher: Any) -> Mapping[str, Any] | None:
    if teacher is None:
        return None
    return {"teacher": teacher.name, "weights_sha256": teacher.weights_sha256, "online": True}


def _online_run(setup: RunSetup, image_store: Any, text_store: Any, sampler: Any, close: Any) -> MethodRun:
    """The run's parts when a modality's teacher features are computed online, on every batch."""
    cfg = setup.cfg
    online = {m: cfg.uses_teacher_features() and getattr(cfg.teacher_features, m) == "online" for m in ("image", "text")}
    image, text = load_online_teachers(setup.teachers, cfg.image_teacher, cfg.text_teacher, online, setup.device,
                                       f"experiment {cfg.name!r}")
    teachers = OnlineTeachers(image, text, image_store, text_store)
    transform = None if image is None or image.encodes_paths else image.transform
    logger.info("teachers online: %s", ", ".join(f"{m} {t.name}" for m, t in (("image", image), ("text", text)) if t))

    def losses(student: nn.Module, batch: OnlineBatch) -> dict[str, Tensor]:
        teacher_image, teacher_text = teachers.features(batch, setup.device)
        inner = dataclasses.replace(batch.batch, teacher_image=teacher_image, teacher_text=teacher_text)
        return training_losses(student, inner, cfg)

    facts = {"image_teacher": _online_facts(image) or _teacher_facts(image_store),
             "text_teacher": _online_facts(text) or _teacher_facts(text_store)}
    return MethodRun(sampler=sampler, collator=OnlineCollator(setup.student.tokenize, image_store, text_store),
                     losses=losses, relevance=lambda items: items.relevant(), facts=facts, close=close,
                     dataset=OnlineItems(setup.dataset, transform, online["image"]))


def prepare(setup: RunSetup) -> MethodRun:
    """Sampler, collator (with the teacher stores) and objective of a base / csa / usa / cusa run."""
    cfg, ctx = setup.cfg, setup.ctx
    image_store, text_store = open_teacher_stores(
        cfg, setup.image_shards, setup.text_shards, setup.images_sha, setup.texts_sha
    )
    if image_store is not None:
        _check_coverage(image_store, setup.pairs["image_id"].tolist(), "image")
    if text_store is not None:
        _check_coverage(text_store, setup.pairs["text_id"].tolist(), "text")
    stores = [repr(s) for s in (image_store, text_store) if s is not None]
    logger.info("teachers: %s (from shards)", ", ".join(stores) or "none")

    def close() -> None:
        for store in (image_store, text_store):
            if store is not None:
                store.close()

    sampler = EpochBatchSampler(len(setup.dataset), cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size)
    if cfg.uses_teacher_features() and not (cfg.reads_shards("image") and cfg.reads_shards("text")):
        return _online_run(setup, image_store, text_store, sampler, close)
    return MethodRun(
        sampler=sampler,
        collator=BatchCollator(setup.student.tokenize, image_store, text_store, pairs=setup.dataset),
        losses=lambda student, batch: training_losses(student, batch, cfg),
        relevance=lambda items: items.relevant(),
        facts={"image_teacher": _teacher_facts(image_store), "text_teacher": _teacher_facts(text_store)},
        close=close,
    )
