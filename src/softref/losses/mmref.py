"""MMRef losses as pure functions: proxy losses against the reference bank, reconstruction, objective.

- Global Fusion (``L_Fuse``): the batch's image and text embeddings ``E`` (2B x D), detached,
  against the bank ``R``: each row of ``sg(E)`` gets a softmax over the M references and its
  identity as target, so the loss trains ``R`` only.
- Reference-Guided Representation Learning (RGRL): the same proxy loss with ``sg(R)``, so the
  embeddings move toward their identity's reference.
- Identity contrastive loss: the multi-positive InfoNCE with every image and caption of the
  same identity in the batch as positives (the base alignment loss of the MMRef student).
- Local Reconstruction: cross-entropy of the MLM head over the masked caption tokens.
- Soft targets (softref's extension): the one-hot identity target mixed with a softmax over the
  teacher's multi-modal references, so identities the teachers find alike share target mass.

Every loss computes in float32 for half inputs (float64 stays float64). The bank and the
temperature are passed in; the learnable state lives in the student and the
:class:`~softref.models.mmref.MMRefHead`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from softref.losses.contrastive import _check_embeddings, _compute_dtype, contrastive_loss

__all__ = [
    "MMREF_TERMS",
    "global_fusion_loss",
    "identity_contrastive_loss",
    "mmref_objective",
    "proxy_logits",
    "proxy_loss",
    "reconstruction_loss",
    "reference_guidance_loss",
    "soft_identity_targets",
]

#: Terms :func:`mmref_objective` may return besides "total", in that order.
MMREF_TERMS: tuple[str, ...] = ("id", "fuse", "guide", "recon")

_IGNORE_INDEX = -100
# Tolerance on the row sums of soft targets (float32 softmax mixtures).
_ROW_SUM_TOL = 1e-3


def _check_tau(name: str, tau: float | Tensor) -> None:
    value = float(tau.detach()) if isinstance(tau, Tensor) else float(tau)
    if not value > 0:
        raise ValueError(f"{name}: expected a positive temperature, found {value}")


def _check_identity_index(identity_index: Tensor, batch: int, num_rows: int, name: str = "identity_index") -> Tensor:
    if not isinstance(identity_index, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(identity_index).__name__}")
    if tuple(identity_index.shape) != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},), found {tuple(identity_index.shape)}")
    if identity_index.is_floating_point() or identity_index.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer bank rows, found dtype {identity_index.dtype}")
    if batch and not (0 <= int(identity_index.min()) and int(identity_index.max()) < num_rows):
        raise ValueError(
            f"{name}: expected bank rows in [0, {num_rows}), found "
            f"[{int(identity_index.min())}, {int(identity_index.max())}]"
        )
    return identity_index.to(torch.int64)


def proxy_logits(features: Tensor, references: Tensor, tau: float | Tensor) -> Tensor:
    """Cosine similarity of every feature to every reference over ``tau``: (N, D), (M, D) -> (N, M)."""
    _check_embeddings("features", features)
    _check_embeddings("references", references)
    if features.shape[1] != references.shape[1]:
        raise ValueError(
            f"features and references must share the embedding dim: found {features.shape[1]} and "
            f"{references.shape[1]}"
        )
    _check_tau("tau", tau)
    dtype = _compute_dtype(features, references)
    feats = F.normalize(features.to(dtype), dim=-1)
    refs = F.normalize(references.to(device=features.device, dtype=dtype), dim=-1)
    return feats @ refs.T / tau


def proxy_loss(features: Tensor, references: Tensor, targets: Tensor, tau: float | Tensor) -> Tensor:
    r"""Proxy cross-entropy: each feature against all references, its identity's row as target.

    Equation::

        S_nj = cos(f_n, r_j) / tau
        L = (1/N) sum_n [ - sum_j T_nj log softmax_j(S_n.) ]

    Args:
        features: (N, D) embeddings, any norm.
        references: (M, D) reference rows, any norm.
        targets: (N,) int64 rows of the references (one-hot T), or (N, M) float soft
            targets whose rows sum to 1.
        tau: temperature, a float or a 0-d tensor.

    Returns:
        0-d tensor (float32 for half inputs).

    Example:
        >>> import torch
        >>> feats, refs = torch.randn(6, 8), torch.randn(3, 8)
        >>> proxy_loss(feats, refs, torch.tensor([0, 1, 2, 0, 1, 2]), tau=0.05).dim()
        0
    """
    logits = proxy_logits(features, references, tau)
    num, num_refs = logits.shape
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets: expected a torch.Tensor, found {type(targets).__name__}")
    if targets.is_floating_point():
        if tuple(targets.shape) != (num, num_refs):
            raise ValueError(f"targets: soft targets must have shape ({num}, {num_refs}), found {tuple(targets.shape)}")
        soft = targets.to(device=logits.device, dtype=logits.dtype)
        if bool((soft < 0).any()):
            raise ValueError("targets: soft targets must be non-negative")
        sums = soft.sum(dim=1)
        worst = float((sums - 1).abs().max()) if num else 0.0
        if worst > _ROW_SUM_TOL:
            raise ValueError(f"targets: soft target rows must sum to 1, found a row off by {worst:.3g}")
        return -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    index = _check_identity_index(targets, num, num_refs, "targets").to(logits.device)
    return F.cross_entropy(logits, index)


def _fusion_targets(identity_index: Tensor, soft_targets: Tensor | None, batch: int, num_refs: int) -> Tensor:
    """Targets of the 2B rows of E = [images; texts]: the B targets repeated for both halves."""
    index = _check_identity_index(identity_index, batch, num_refs)
    if soft_targets is None:
        return torch.cat([index, index])
    if tuple(soft_targets.shape) != (batch, num_refs) or not soft_targets.is_floating_point():
        raise ValueError(
            f"soft_targets: expected a float ({batch}, {num_refs}) tensor (one row per pair), found "
            f"{tuple(soft_targets.shape)} of dtype {soft_targets.dtype}"
        )
    return torch.cat([soft_targets, soft_targets]).detach()


def _check_pairs(image_emb: Tensor, text_emb: Tensor) -> None:
    _check_embeddings("image_emb", image_emb)
    _check_embeddings("text_emb", text_emb)
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must have the same shape (B pairs, D): found {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )


def global_fusion_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    bank: Tensor,
    identity_index: Tensor,
    tau: float | Tensor,
    soft_targets: Tensor | None = None,
) -> Tensor:
    r"""``L_Fuse``: the proxy loss of ``sg(E)`` against the bank; trains the bank only.

    Equation::

        E = sg([x_1..x_B; y_1..y_B])             (2B, D): images then texts, detached
        L_Fuse = proxy_loss(E, R, [id; id], tau)

    Args:
        image_emb, text_emb: (B, D) embeddings of the B pairs of the batch (pair i = image i,
            caption i); no gradient reaches them.
        bank: (M, D) reference bank R (the learnable rows).
        identity_index: (B,) bank row of each pair's identity.
        tau: proxy temperature (``tau_proxy``).
        soft_targets: optional (B, M) soft targets, one row per pair
            (:func:`soft_identity_targets`), repeated for the image and the text half of E.

    Returns:
        0-d tensor (float32 for half inputs).
    """
    _check_pairs(image_emb, text_emb)
    _check_embeddings("bank", bank)
    targets = _fusion_targets(identity_index, soft_targets, image_emb.shape[0], bank.shape[0])
    features = torch.cat([image_emb, text_emb]).detach()
    return proxy_loss(features, bank, targets, tau)


def reference_guidance_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    bank: Tensor,
    identity_index: Tensor,
    tau: float | Tensor,
    soft_targets: Tensor | None = None,
) -> Tensor:
    r"""RGRL: the proxy loss of the batch embeddings against ``sg(R)``; trains the embeddings only.

    Equation::

        E = [x_1..x_B; y_1..y_B]                 (2B, D): images then texts
        L_RGRL = proxy_loss(E, sg(R), [id; id], tau)

    Arguments as :func:`global_fusion_loss`; here the bank gets no gradient.
    """
    _check_pairs(image_emb, text_emb)
    _check_embeddings("bank", bank)
    targets = _fusion_targets(identity_index, soft_targets, image_emb.shape[0], bank.shape[0])
    features = torch.cat([image_emb, text_emb])
    return proxy_loss(features, bank.detach(), targets, tau)


def identity_contrastive_loss(
    image_emb: Tensor, text_emb: Tensor, tau: float | Tensor, identity_index: Tensor
) -> Tensor:
    """Multi-positive InfoNCE with identity-level positives (every image and caption of one identity).

    :func:`~softref.losses.contrastive.contrastive_loss` with ``positives[i, j] = id_i == id_j``.
    ``identity_index`` is (B,), any integer labels (bank rows in the MMRef trainer).
    """
    _check_pairs(image_emb, text_emb)
    batch = image_emb.shape[0]
    if not isinstance(identity_index, Tensor) or tuple(identity_index.shape) != (batch,):
        found = tuple(identity_index.shape) if isinstance(identity_index, Tensor) else type(identity_index).__name__
        raise ValueError(f"identity_index: expected shape ({batch},), found {found}")
    index = identity_index.to(image_emb.device)
    positives = index[:, None] == index[None, :]
    return contrastive_loss(image_emb, text_emb, tau, positives=positives)


def reconstruction_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the MLM head, averaged over the masked tokens (labels != -100).

    Args:
        logits: (B, L, V) logits of :meth:`~softref.models.mmref.MMRefHead.reconstruct`, or
            (N, V) logits of the N masked positions only (its ``positions`` argument).
        labels: (B, L) int64: the original id at masked positions, -100 elsewhere
            (:func:`~softref.models.mmref.mask_tokens`); (N,) with (N, V) logits.

    Both forms give the same value for the same masked positions.

    Raises:
        ValueError: on shape mismatch, or when no position is masked (the mean is undefined).
    """
    if not isinstance(logits, Tensor) or logits.dim() not in (2, 3) or not logits.is_floating_point():
        found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected a float (B, L, V) or (N, V) tensor, found {found}")
    if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(logits.shape[:-1]):
        found = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])}, found {found}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected integer token ids, found dtype {labels.dtype}")
    vocab = logits.shape[-1]
    labels = labels.to(device=logits.device, dtype=torch.int64)
    target = labels != _IGNORE_INDEX
    if not bool(target.any()):
        raise ValueError("labels: no masked position (every label is -100); the reconstruction loss is undefined")
    picked = labels[target]
    if int(picked.min()) < 0 or int(picked.max()) >= vocab:
        raise ValueError(
            f"labels: expected ids in [0, {vocab}) or -100, found [{int(picked.min())}, {int(picked.max())}]"
        )
    dtype = _compute_dtype(logits)
    return F.cross_entropy(logits[target].to(dtype), picked)


@torch.no_grad()
def soft_identity_targets(
    teacher_references: Tensor, identity_index: Tensor, *, soft_tau: float, soft_mix: float
) -> Tensor:
    r"""Soft proxy targets from the teacher's references: one-hot identity mixed with teacher similarity.

    Equation::

        T = rows of the teacher's multi-modal references, aligned with the bank (M, D_t)
        target_i = (1 - soft_mix) * onehot(id_i) + soft_mix * softmax_j(cos(T_{id_i}, T_j) / soft_tau)

    The identity's own row takes part in the softmax (cosine 1, the largest). For the proxy
    losses over ``E = [images; texts]`` these B rows are repeated for both halves.

    Args:
        teacher_references: (M, D_t) teacher references (any norm; normalised here).
        identity_index: (B,) bank row of each pair's identity.
        soft_tau: temperature of the teacher softmax, > 0.
        soft_mix: weight of the teacher part, in [0, 1] (0 gives one-hot targets).

    Returns:
        (B, M) float32 targets (float64 for float64 references); rows sum to 1; no gradient.
    """
    _check_embeddings("teacher_references", teacher_references)
    if not soft_tau > 0:
        raise ValueError(f"soft_tau: expected a positive temperature, found {soft_tau}")
    if not 0.0 <= soft_mix <= 1.0:
        raise ValueError(f"soft_mix: expected a value in [0, 1], found {soft_mix}")
    num_refs = teacher_references.shape[0]
    if not isinstance(identity_index, Tensor) or identity_index.dim() != 1:
        found = tuple(identity_index.shape) if isinstance(identity_index, Tensor) else type(identity_index).__name__
        raise ValueError(f"identity_index: expected a (B,) tensor of bank rows, found {found}")
    index = _check_identity_index(identity_index, identity_index.shape[0], num_refs)
    dtype = _compute_dtype(teacher_references)
    refs = F.normalize(teacher_references.detach().to(dtype), dim=-1)
    index = index.to(refs.device)
    teacher = F.softmax(refs[index] @ refs.T / soft_tau, dim=1)
    one_hot = F.one_hot(index, num_refs).to(dtype)
    return (1.0 - soft_mix) * one_hot + soft_mix * teacher


def mmref_objective(
    out: Mapping[str, Tensor],
    head: Any,
    identity_index: Tensor,
    *,
    cfg: Any,
    mlm_logits: Tensor | None = None,
    mlm_labels: Tensor | None = None,
    teacher_references: Tensor | None = None,
) -> dict[str, Tensor]:
    r"""The MMRef training objective: identity contrastive loss plus the switched-on MMRef terms.

    Equation::

        total = L_id + fuse_weight * L_Fuse + guidance_weight * L_RGRL + reconstruction_weight * L_rec

    with ``L_Fuse`` when ``cfg.global_fusion``, ``L_RGRL`` when ``cfg.reference_guidance``,
    ``L_rec`` when ``cfg.local_reconstruction``; both proxy losses use ``cfg.tau_proxy`` and,
    when ``cfg.soft_targets``, the targets of :func:`soft_identity_targets` (``cfg.soft_tau``,
    ``cfg.soft_mix``) instead of one-hot identities.

    Args:
        out: the Student forward output; uses "image_emb", "text_emb" (B, D) and "tau".
        head: the :class:`~softref.models.mmref.MMRefHead` (its ``bank`` is R).
        identity_index: (B,) bank row of each pair's identity.
        cfg: an object with the attributes of ``MMRefConfig``.
        mlm_logits, mlm_labels: (B, L, V) logits and (B, L) labels of the masked captions, or
            (N, V) and (N,) at the N masked positions (:func:`reconstruction_loss`);
            required when ``cfg.local_reconstruction`` (ignored otherwise).
        teacher_references: (M, D_t) teacher multi-modal references aligned with the bank;
            required when ``cfg.soft_targets`` (ignored otherwise).

    Returns:
        {"id", ["fuse"], ["guide"], ["recon"], "total"}: 0-d tensors.

    Raises:
        ValueError: a switched-on term lacks its inputs (a term is never skipped silently).
    """
    for key in ("image_emb", "text_emb", "tau"):
        if key not in out:
            raise ValueError(f"out: the student output lacks {key!r}; found keys {sorted(out)}")
    image_emb, text_emb, tau = out["image_emb"], out["text_emb"], out["tau"]
    bank = getattr(head, "bank", None)
    if not isinstance(bank, Tensor):
        raise TypeError(f"head: expected an MMRefHead with a `bank` tensor, found {type(head).__name__}")
    if cfg.soft_targets and teacher_references is None:
        raise ValueError("mmref_objective: soft_targets is on but no teacher_references were given")
    if cfg.local_reconstruction and (mlm_logits is None or mlm_labels is None):
        raise ValueError(
            "mmref_objective: local_reconstruction is on but mlm_logits and/or mlm_labels are missing"
        )
    if teacher_references is not None and cfg.soft_targets and teacher_references.shape[0] != bank.shape[0]:
        raise ValueError(
            f"teacher_references: expected one row per bank row ({bank.shape[0]}), found {teacher_references.shape[0]}"
        )

    terms: dict[str, Tensor] = {"id": identity_contrastive_loss(image_emb, text_emb, tau, identity_index)}
    soft = None
    if cfg.soft_targets and (cfg.global_fusion or cfg.reference_guidance):
        soft = soft_identity_targets(
            teacher_references.to(bank.device), identity_index, soft_tau=cfg.soft_tau, soft_mix=cfg.soft_mix
        )
    if cfg.global_fusion:
        terms["fuse"] = global_fusion_loss(image_emb, text_emb, bank, identity_index, cfg.tau_proxy, soft)
    if cfg.reference_guidance:
        terms["guide"] = reference_guidance_loss(image_emb, text_emb, bank, identity_index, cfg.tau_proxy, soft)
    if cfg.local_reconstruction:
        terms["recon"] = reconstruction_loss(mlm_logits, mlm_labels)

    weights = {
        "id": 1.0,
        "fuse": float(cfg.fuse_weight),
        "guide": float(cfg.guidance_weight),
        "recon": float(cfg.reconstruction_weight),
    }
    total = sum(weights[name] * value for name, value in terms.items())
    terms["total"] = total
    return terms
