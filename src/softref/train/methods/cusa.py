"""The CUSA family (base, csa, usa, cusa): image-caption batches, teacher rows by id, CUSA Eq. 9.

Batches are random permutations of the train split's caption-image pairs
(:class:`~softref.train.data.EpochBatchSampler`); every caption of the same image in a batch is
a positive. csa, usa and cusa read the two teachers' feature shards by id
(:class:`~softref.features.FeatureStore`), checked against the manifests before the first
step; base reads no teacher. The objective is :func:`softref.losses.cusa_objective` itself, so
editing the public loss changes what trains.
"""

from __future__ import annotations

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
    """The two teacher FeatureStores, checked against the manifests; (None, None) for ``base``."""
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


def prepare(setup: RunSetup) -> MethodRun:
    """Sampler, collator (with the teacher stores) and objective of a base / csa / usa / cusa run."""
    cfg, ctx = setup.cfg, setup.ctx
    image_store, text_store = open_teacher_stores(
        cfg, setup.image_shards, setup.text_shards, setup.images_sha, setup.texts_sha
    )
    if image_store is not None and text_store is not None:
        _check_coverage(image_store, setup.pairs["image_id"].tolist(), "image")
        _check_coverage(text_store, setup.pairs["text_id"].tolist(), "text")
    logger.info("teachers: %s", "none" if image_store is None else f"{image_store!r}, {text_store!r}")

    def close() -> None:
        for store in (image_store, text_store):
            if store is not None:
                store.close()

    return MethodRun(
        sampler=EpochBatchSampler(len(setup.dataset), cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size),
        collator=BatchCollator(setup.student.tokenize, image_store, text_store),
        losses=lambda student, batch: training_losses(student, batch, cfg),
        relevance=lambda items: items.relevant(),
        facts={"image_teacher": _teacher_facts(image_store), "text_teacher": _teacher_facts(text_store)},
        close=close,
    )
