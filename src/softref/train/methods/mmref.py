"""The MMRef family: P x K identity batches, a learnable reference bank, MMRef's objective.

Batches hold P identities and K captions each (:class:`~softref.train.sampler.IdentityBatchSampler`),
each anchor identity bringing its nearest identities from the teacher references' FAISS
neighbours. The student gains an :class:`~softref.models.mmref.MMRefHead` (reference bank R,
reconstruction decoder, MLM head), trained with the student and saved in every checkpoint
under ``mmref_head``. The objective is :func:`softref.losses.mmref_objective`; Local
Reconstruction masks a copy of the tokens, so the other terms see the captions as they are.
Model selection is identity-level: any image of the caption's person is a hit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from softref.checkpoints import plain_config
from softref.config import ExperimentConfig
from softref.losses.mmref import mmref_objective
from softref.models.mmref import (
    IGNORE_INDEX,
    MMRefHead,
    TokenScheme,
    mask_tokens,
    text_token_features,
    token_scheme_for,
)
from softref.train.data import Batch, BatchCollator
from softref.train.distributed import gather_no_grad, gather_with_grad
from softref.train.methods import MethodRun, RunSetup
from softref.train.sampler import IdentityBatchSampler, neighbours_from_parquet

__all__ = ["mmref_losses", "prepare"]

logger = logging.getLogger(__name__)


def mmref_losses(
    student: nn.Module, head: nn.Module, batch: Batch, cfg: ExperimentConfig, scheme: TokenScheme,
    teacher_references: Tensor | None = None,
) -> dict[str, Tensor]:
    """MMRef's terms for one batch (:func:`softref.losses.mmref_objective`).

    Local Reconstruction masks a copy of the batch's tokens: the other terms see the captions
    as they are. Gathers the embeddings and identities across processes when ``cfg.gather``;
    the reconstruction is computed on each process's own captions.
    """
    if batch.identity_index is None:
        raise ValueError(f"experiment {cfg.name!r} (mmref): the batch carries no identity rows")
    out = dict(student(batch.images, batch.tokens))
    identity_index = batch.identity_index
    logits = labels = None
    if cfg.mmref.local_reconstruction:
        masked, labels = mask_tokens(
            batch.tokens, mask_prob=cfg.mmref.mask_prob, mask_token_id=scheme.mask_token_id,
            vocab_size=scheme.vocab_size, special_ids=scheme.special_ids, pad_id=scheme.pad_token_id,
        )
        # The MLM head on the masked positions only: same loss, ~7x less of the step's largest product.
        positions = labels != IGNORE_INDEX
        logits = head.reconstruct(
            text_token_features(student, masked), identity_index, padding_mask=batch.tokens == scheme.pad_token_id,
            positions=positions,
        )
        labels = labels[positions]
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


def teacher_inputs(
    cfg: ExperimentConfig, identities: Sequence[str], references: Path | None, neighbours_path: Path | None,
    images_sha: str, texts_sha: str,
) -> tuple[dict[str, list[str]] | None, Tensor | None, dict[str, Any] | None]:
    """MMRef's teacher inputs: the neighbour lists (sampler) and the teacher references (soft targets).

    Both come from the teacher references of the experiment's two teachers, made from the same
    manifests; their identities must be exactly the training identities (rows of the bank).
    """
    from softref.references.build import References

    need_neighbours = cfg.mmref.neighbours_per_anchor > 0
    if not (need_neighbours or cfg.mmref.soft_targets):
        return None, None, None
    what = f"experiment {cfg.name!r} (mmref)"
    if references is None or not Path(references).is_file():
        raise FileNotFoundError(
            f"{what} needs the teacher references results/references/{cfg.dataset}/{cfg.references_name}.h5 "
            f"(neighbours_per_anchor > 0 or soft_targets); found {references}"
        )
    expect = {"image_teacher": cfg.image_teacher, "text_teacher": cfg.text_teacher,
              "images_manifest_sha256": images_sha, "texts_manifest_sha256": texts_sha}
    refs = References.open(references, expect=expect)
    found = list(refs.identities)
    if found != list(identities):
        extra, lacking = sorted(set(found) - set(identities)), sorted(set(identities) - set(found))
        raise ValueError(
            f"{references}: expected the {len(identities)} training identities as rows, found {len(found)}; "
            f"not in training: {extra[:5]}; without a reference: {lacking[:5]}"
        )
    teacher = torch.tensor(np.asarray(refs.multimodal, dtype=np.float32)) if cfg.mmref.soft_targets else None
    facts = {key: refs.attrs.get(key)
             for key in ("image_teacher", "text_teacher", "image_weights_sha256", "text_weights_sha256", "dim")}
    neighbours = None
    if need_neighbours:
        if neighbours_path is None or not Path(neighbours_path).is_file():
            raise FileNotFoundError(f"{what} needs the neighbours table of {references}; found {neighbours_path}")
        neighbours = neighbours_from_parquet(neighbours_path, identities)
    return neighbours, teacher, facts


def prepare(setup: RunSetup) -> MethodRun:
    """Identity sampler, reference bank and head, and MMRef's objective for an mmref run."""
    cfg, ctx, student, device = setup.cfg, setup.ctx, setup.student, setup.device
    identities = sorted(set(setup.pairs["identity"]))
    neighbours, teacher_references, facts = teacher_inputs(
        cfg, identities, setup.references, setup.neighbours, setup.images_sha, setup.texts_sha
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
        setup.pairs["identity"].tolist(), batch_size=cfg.batch_size, samples_per_identity=cfg.mmref.samples_per_identity,
        seed=cfg.seed, neighbours=neighbours, neighbours_per_anchor=cfg.mmref.neighbours_per_anchor,
        rank=ctx.rank, world_size=ctx.world_size,
    )
    on = [t for t, flag in (("fuse", cfg.mmref.global_fusion), ("guide", cfg.mmref.reference_guidance),
                            ("recon", cfg.mmref.local_reconstruction), ("soft", cfg.mmref.soft_targets)) if flag]
    logger.info("mmref: %d identities in the reference bank; sampler %d x %d with %d neighbour(s) per anchor; "
                "terms: %s", len(identities), cfg.batch_size // cfg.mmref.samples_per_identity,
                cfg.mmref.samples_per_identity, cfg.mmref.neighbours_per_anchor, ", ".join(on) or "id only")
    return MethodRun(
        sampler=sampler,
        collator=BatchCollator(student.tokenize, identity_rows={name: i for i, name in enumerate(identities)}),
        losses=lambda model, batch: mmref_losses(model, head, batch, cfg, scheme, teacher_references),
        # MMRef's benchmarks are identity-level (any image of the person is a hit): select the same way.
        relevance=lambda items: items.identity_relevant(),
        modules={"mmref_head": head},
        lr_scale=float(cfg.mmref.head_lr_scale),
        facts={"references": facts},
        record={"mmref": {"identities": identities, "config": plain_config(cfg.mmref)}},
    )
