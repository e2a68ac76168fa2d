"""CUSA soft-label alignment losses (CSA, USA) and the combined CUSA objective.

The teacher (uni-modal, frozen) similarities between the items of a batch become soft labels:
CSA aligns the student's cross-modal similarities with them, USA the student's uni-modal ones.
All functions are pure; the learnable temperatures live in the student.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from softref.losses.contrastive import _check_embeddings, _compute_dtype, contrastive_loss
from softref.names import CUSA_TERMS

__all__ = ["CUSA_METHODS", "csa_loss", "usa_loss", "cusa_objective"]

#: Training objectives of the CUSA ablation (paper Table 5): which terms enter the total.
CUSA_METHODS: dict[str, tuple[str, ...]] = CUSA_TERMS


def _teacher_log_probs(teacher: Tensor, name: str, batch: int, teacher_tau: float, like: Tensor) -> Tensor:
    """Row-wise log softmax of the teacher's cosine self-similarity, without gradient."""
    if not isinstance(teacher, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(teacher).__name__}")
    if teacher.dim() < 2 or teacher.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch}, D_t), found {tuple(teacher.shape)}")
    if not teacher.is_floating_point():
        raise ValueError(f"{name}: expected a floating point tensor, found dtype {teacher.dtype}")
    with torch.no_grad():
        # Token features (B, T, C) are compared flattened, as the public code does.
        feats = teacher.detach().reshape(batch, -1).to(device=like.device, dtype=like.dtype)
        feats = F.normalize(feats, dim=-1)
        sims = feats @ feats.T
        return F.log_softmax(sims / teacher_tau, dim=1)


def _kl_batchmean(teacher_log_probs: Tensor, student_logits: Tensor) -> Tensor:
    # KL(p_teacher || q_student) summed over each row, averaged over rows.
    return F.kl_div(
        F.log_softmax(student_logits, dim=1), teacher_log_probs, reduction="batchmean", log_target=True
    )


def csa_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    teacher_image: Tensor,
    teacher_text: Tensor,
    tau: float | Tensor,
    teacher_tau: float = 1.0,
) -> Tensor:
    r"""Cross-modal soft-label alignment: teacher uni-modal similarities supervise image-text logits.

    Equation (CUSA, AAAI 2024, Eq. 5-6)::

        S_I = cos(t_img, t_img),  S_T = cos(t_txt, t_txt)        (teacher, no gradient)
        P_I = softmax_row(S_I / teacher_tau),  P_T = softmax_row(S_T / teacher_tau)
        Q_i2t = softmax_row(x @ y.T / tau),   Q_t2i = softmax_row(y @ x.T / tau)
        L_CSA = ( KL(P_I || Q_i2t) + KL(P_T || Q_t2i) ) / 2

    x, y are the L2-normalised student image and text embeddings; each KL is summed over a
    row and averaged over the B rows (``batchmean``). The diagonal is not masked.

    Args:
        image_emb: (B, D) student cross-modal image embeddings, any norm.
        text_emb: (B, D) student cross-modal text embeddings of the paired captions, any norm.
        teacher_image: (B, D_ti) teacher image features (any dim, norm and float dtype;
            token features (B, T, C) are flattened). Detached.
        teacher_text: (B, D_tt) teacher text features, same rules.
        tau: student temperature tau_c, a float or a 0-d tensor (learnable).
        teacher_tau: teacher temperature, 1.0 in the paper.

    Returns:
        0-d tensor (float32 for half inputs).

    Example:
        >>> import torch
        >>> img, txt = torch.randn(4, 8), torch.randn(4, 8)
        >>> t_img, t_txt = torch.randn(4, 32).half(), torch.randn(4, 16)
        >>> csa_loss(img, txt, t_img, t_txt, tau=0.45).dim()
        0
    """
    _check_embeddings("image_emb", image_emb)
    _check_embeddings("text_emb", text_emb)
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must have the same shape (B paired items, D): found "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    dtype = _compute_dtype(image_emb, text_emb)
    img = F.normalize(image_emb.to(dtype), dim=-1)
    txt = F.normalize(text_emb.to(dtype), dim=-1)
    batch = img.shape[0]
    log_p_image = _teacher_log_probs(teacher_image, "teacher_image", batch, teacher_tau, img)
    log_p_text = _teacher_log_probs(teacher_text, "teacher_text", batch, teacher_tau, img)
    logits = img @ txt.T / tau
    return (_kl_batchmean(log_p_image, logits) + _kl_batchmean(log_p_text, logits.T)) / 2


def usa_loss(
    image_uni: Tensor,
    text_uni: Tensor,
    teacher_image: Tensor,
    teacher_text: Tensor,
    tau_image: float | Tensor,
    tau_text: float | Tensor,
    teacher_tau: float = 1.0,
) -> Tensor:
    r"""Uni-modal soft-label alignment: teacher similarities supervise image-image and text-text logits.

    Equation (CUSA, AAAI 2024, Eq. 7-8)::

        P_I = softmax_row(cos(t_img, t_img) / teacher_tau)        (teacher, no gradient)
        P_T = softmax_row(cos(t_txt, t_txt) / teacher_tau)
        L_USA = ( KL(P_I || softmax_row(u @ u.T / tau_image))
                + KL(P_T || softmax_row(v @ v.T / tau_text)) ) / 2

    u, v are the L2-normalised uni-modal student embeddings (the uni-modal heads); KL is
    ``batchmean``; the diagonal is not masked.

    Args:
        image_uni: (B, D) student uni-modal image embeddings, any norm.
        text_uni: (B, D') student uni-modal text embeddings, any norm (B must match).
        teacher_image: (B, D_ti) teacher image features, any dim/norm/float dtype.
        teacher_text: (B, D_tt) teacher text features, same rules.
        tau_image: image temperature, a float or a 0-d tensor (learnable).
        tau_text: text temperature, a float or a 0-d tensor (learnable).
        teacher_tau: teacher temperature, 1.0 in the paper.

    Returns:
        0-d tensor (float32 for half inputs).

    Example:
        >>> import torch
        >>> u, v = torch.randn(4, 8), torch.randn(4, 8)
        >>> usa_loss(u, v, torch.randn(4, 32), torch.randn(4, 16), 0.45, 0.45).dim()
        0
    """
    _check_embeddings("image_uni", image_uni)
    _check_embeddings("text_uni", text_uni)
    if image_uni.shape[0] != text_uni.shape[0]:
        raise ValueError(
            f"image_uni and text_uni must hold the same batch: found {image_uni.shape[0]} and "
            f"{text_uni.shape[0]} rows"
        )
    dtype = _compute_dtype(image_uni, text_uni)
    u = F.normalize(image_uni.to(dtype), dim=-1)
    v = F.normalize(text_uni.to(dtype), dim=-1)
    batch = u.shape[0]
    log_p_image = _teacher_log_probs(teacher_image, "teacher_image", batch, teacher_tau, u)
    log_p_text = _teacher_log_probs(teacher_text, "teacher_text", batch, teacher_tau, v)
    loss_image = _kl_batchmean(log_p_image, u @ u.T / tau_image)
    loss_text = _kl_batchmean(log_p_text, v @ v.T / tau_text)
    return (loss_image + loss_text) / 2


def _method_terms(method: str, teacher_image: Tensor | None, teacher_text: Tensor | None) -> tuple[str, ...]:
    """The terms of ``method``; an error for an unknown method or soft labels without teachers."""
    if method not in CUSA_METHODS:
        raise ValueError(f"unknown CUSA method {method!r}; expected one of {sorted(CUSA_METHODS)}")
    terms = CUSA_METHODS[method]
    if ("csa" in terms or "usa" in terms) and (teacher_image is None or teacher_text is None):
        raise ValueError(
            f"cusa_objective: method {method!r} needs teacher_image and teacher_text, found "
            f"teacher_image={'None' if teacher_image is None else 'tensor'}, "
            f"teacher_text={'None' if teacher_text is None else 'tensor'}"
        )
    return terms


def cusa_objective(
    out: Mapping[str, Tensor],
    teacher_image: Tensor | None,
    teacher_text: Tensor | None,
    positives: Tensor | None,
    method: str,
    *,
    alpha: float = 0.10,
    beta: float = 0.50,
    teacher_tau: float = 1.0,
    public_code_weighting: bool = False,
) -> dict[str, Tensor]:
    r"""The CUSA training objective and its named terms.

    Equation (CUSA, AAAI 2024, Eq. 9)::

        L = L_itr + alpha * L_CSA + beta * L_USA

    where only the terms of ``method`` enter: ``base`` (itr), ``csa`` (itr + CSA),
    ``usa`` (itr + USA), ``cusa`` (all three). L_itr uses ``out["tau"]``, CSA
    ``out["tau_c"]``, USA ``out["tau_image"]`` and ``out["tau_text"]``.

    Args:
        out: the dict returned by ``Student.forward``: "image_emb", "text_emb" (B, D),
            "image_uni", "text_uni" (B, D), and the temperatures "tau", "tau_c",
            "tau_image", "tau_text".
        teacher_image: (B, D_ti) teacher image features; may be None for ``base``.
        teacher_text: (B, D_tt) teacher text features; may be None for ``base``.
        positives: (B, B) bool, row i marks the positives of image i; None = diagonal.
        method: one of "base", "csa", "usa", "cusa".
        alpha: weight of CSA (0.10 for CLIP in the paper).
        beta: weight of USA (0.50 for CLIP in the paper).
        teacher_tau: temperature of the teachers' similarity softmax (1.0 in the paper).
        public_code_weighting: divide the contrastive term by its row length as the public
            CUSA code does (see :func:`softref.losses.contrastive_loss`).

    Returns:
        dict with "itr", "csa" / "usa" when used by the method, and "total".

    Example:
        >>> import torch
        >>> out = {"image_emb": torch.randn(4, 8), "text_emb": torch.randn(4, 8),
        ...        "image_uni": torch.randn(4, 8), "text_uni": torch.randn(4, 8),
        ...        "tau": torch.tensor(0.05), "tau_c": torch.tensor(0.45),
        ...        "tau_image": torch.tensor(0.45), "tau_text": torch.tensor(0.45)}
        >>> terms = cusa_objective(out, torch.randn(4, 32), torch.randn(4, 16), None, "cusa")
        >>> sorted(terms)
        ['csa', 'itr', 'total', 'usa']
    """
    terms = _method_terms(method, teacher_image, teacher_text)

    def need(key: str) -> Tensor:
        if key not in out:
            raise KeyError(f"cusa_objective: method {method!r} needs out[{key!r}], found keys {sorted(out)}")
        return out[key]

    result: dict[str, Tensor] = {}
    result["itr"] = contrastive_loss(
        need("image_emb"), need("text_emb"), need("tau"), positives, public_code_weighting=public_code_weighting
    )
    total = result["itr"]
    if "csa" in terms:
        result["csa"] = csa_loss(
            need("image_emb"), need("text_emb"), teacher_image, teacher_text, need("tau_c"), teacher_tau=teacher_tau
        )
        total = total + alpha * result["csa"]
    if "usa" in terms:
        result["usa"] = usa_loss(
            need("image_uni"), need("text_uni"), teacher_image, teacher_text, need("tau_image"), need("tau_text"),
            teacher_tau=teacher_tau,
        )
        total = total + beta * result["usa"]
    result["total"] = total
    return result
