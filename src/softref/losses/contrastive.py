"""Multi-positive image-text contrastive loss (InfoNCE) used as the retrieval objective.

Pure function: no state, no parameters. The learnable temperature lives in the student
(:class:`softref.models.student.Student`) and is passed in as a float or a 0-d tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_loss"]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half inputs (softmax over logits / tau is unsafe in fp16), else the widest input."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def _check_embeddings(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name}: expected shape (B, D), found {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating point tensor, found dtype {x.dtype}")


def _soft_cross_entropy(logits: Tensor, targets: Tensor, public_code_weighting: bool) -> Tensor:
    # Per-row CE summed over the row, then averaged over the rows.
    per_row = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    loss = per_row.mean()
    if public_code_weighting:
        # The public CUSA code also averages over the row (its mean over all elements).
        loss = loss / logits.shape[1]
    return loss


def _positives(positives: Tensor | None, num_images: int, num_texts: int, device: torch.device) -> Tensor:
    """The (B_I, B_T) bool positives: the diagonal for None; checked (shape, a positive per row and column)."""
    if positives is None:
        if num_images != num_texts:
            raise ValueError(
                f"positives=None means the diagonal, which needs as many images as texts: "
                f"found {num_images} images and {num_texts} texts"
            )
        return torch.eye(num_images, dtype=torch.bool, device=device)
    if tuple(positives.shape) != (num_images, num_texts):
        raise ValueError(f"positives: expected shape ({num_images}, {num_texts}), found {tuple(positives.shape)}")
    positives = positives.to(device=device, dtype=torch.bool)
    empty_rows = int((~positives.any(dim=1)).sum())
    empty_cols = int((~positives.any(dim=0)).sum())
    if empty_rows or empty_cols:
        raise ValueError(
            f"positives: every image and every text needs at least one positive; found "
            f"{empty_rows} image row(s) and {empty_cols} text column(s) without any"
        )
    return positives


def contrastive_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    tau: float | Tensor,
    positives: Tensor | None = None,
    public_code_weighting: bool = False,
) -> Tensor:
    r"""Symmetric multi-positive InfoNCE between image and text embeddings.

    Equation (CUSA, AAAI 2024, Eq. 1-4)::

        x_i = img_i / |img_i|,  y_j = txt_j / |txt_j|,  S_ij = x_i . y_j / tau
        T_ij  = P_ij / sum_k P_ik            (image i's positives, rows sum to 1)
        T'_ji = P_ij / sum_k P_kj            (text j's positives, from P transposed)
        CE_i2t = (1/B_I) sum_i [ - sum_j T_ij  log softmax_j(S_i.) ]
        CE_t2i = (1/B_T) sum_j [ - sum_i T'_ji log softmax_i(S_.j) ]
        L_itr  = (CE_i2t + CE_t2i) / 2

    With ``positives=None`` the positives are the diagonal (pair i is image i with text i)
    and the loss is CLIP's loss. With ``public_code_weighting=True`` each CE is further
    divided by its row length (B_T for i2t, B_I for t2i), reproducing the public CUSA code,
    which takes the mean over all elements of the soft-target product instead of summing
    over the row; this rescales the gradient by 1/B relative to the usual definition.

    Args:
        image_emb: (B_I, D) image embeddings, any norm (normalised here).
        text_emb: (B_T, D) text embeddings, any norm (normalised here).
        tau: temperature, a float or a 0-d tensor (gradients flow to it when learnable).
        positives: (B_I, B_T) bool; row i marks the texts that are positives of image i.
            ``None`` means the diagonal (requires B_I == B_T). Every row and every column
            needs at least one positive.
        public_code_weighting: divide by the row length as the public CUSA code does.

    Returns:
        0-d tensor, the loss (float32 for half inputs).

    Example:
        >>> import torch
        >>> img, txt = torch.randn(4, 8), torch.randn(4, 8)
        >>> pos = torch.eye(4, dtype=torch.bool); pos[0, 1] = pos[1, 0] = True
        >>> loss = contrastive_loss(img, txt, tau=0.05, positives=pos)
        >>> loss.dim()
        0
    """
    _check_embeddings("image_emb", image_emb)
    _check_embeddings("text_emb", text_emb)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"image_emb and text_emb must share the embedding dim: found {image_emb.shape[1]} "
            f"and {text_emb.shape[1]}"
        )
    positives = _positives(positives, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    dtype = _compute_dtype(image_emb, text_emb)
    img = F.normalize(image_emb.to(dtype), dim=-1)
    txt = F.normalize(text_emb.to(dtype), dim=-1)
    logits = img @ txt.T / tau

    pos = positives.to(dtype)
    targets_i2t = pos / pos.sum(dim=1, keepdim=True)
    targets_t2i = pos.T / pos.T.sum(dim=1, keepdim=True)

    loss_i2t = _soft_cross_entropy(logits, targets_i2t, public_code_weighting)
    loss_t2i = _soft_cross_entropy(logits.T, targets_t2i, public_code_weighting)
    return (loss_i2t + loss_t2i) / 2
