"""sentence-transformers text teachers (all-mpnet-base-v2 is CUSA's and MMRef's text teacher).

`encode` hands the captions to `SentenceTransformer.encode`, which sorts them by length for
speed and returns rows in input order. Whether the features are unit-norm is read from the
model's module list (a `Normalize` module), not assumed from its name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from softref.teachers.base import (
    PRE_CAPTION_DESCRIPTION,
    TeacherError,
    TeacherSpec,
    TextTeacher,
    check_weights_sha256,
    progress_enabled,
    resolve_device,
    weights_sha256,
)

logger = logging.getLogger(__name__)

__all__ = ["SentenceTransformerTeacher", "load_sentence_transformer_teacher"]


def _normalize_module_type() -> type:
    # sentence-transformers 6 moved its modules; older releases keep them in `models`.
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:
        from sentence_transformers.models import Normalize
    return Normalize


class SentenceTransformerTeacher(TextTeacher):
    """A SentenceTransformer model as a text teacher."""

    def __init__(
        self, model: object, *, name: str, weights_sha256: str, device: torch.device, apply_pre_caption: bool
    ) -> None:
        normalize_type = _normalize_module_type()
        normalized = any(isinstance(module, normalize_type) for module in model)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise TeacherError(f"teacher {name!r}: the sentence-transformers model does not report its embedding size")
        cleaning = PRE_CAPTION_DESCRIPTION if apply_pre_caption else "captions as annotated"
        super().__init__(
            name=name,
            dim=dim,
            weights_sha256=weights_sha256,
            preprocess_description=(
                f"{cleaning}; sentence-transformers tokenizer, max_seq_length {model.max_seq_length}; "
                f"{dim}-d sentence embedding{' (L2-normalised by the model)' if normalized else ''}"
            ),
            normalized=normalized,
            device=device,
            apply_pre_caption=apply_pre_caption,
        )
        self.model = model

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=progress_enabled(show_progress),
        )


def load_sentence_transformer_teacher(
    spec: TeacherSpec, device: str | torch.device = "cpu"
) -> SentenceTransformerTeacher:
    """Build a sentence-transformers teacher from a local model folder (or a hub id, unverified)."""
    from sentence_transformers import SentenceTransformer

    path = Path(spec.weights).expanduser()
    if path.exists() and not path.is_dir():
        raise TeacherError(f"teacher {spec.name!r}: {path} is a file; a sentence-transformers model is a folder")
    sha = weights_sha256(spec.weights)
    check_weights_sha256(spec, sha, path if path.is_dir() else spec.weights)
    torch_device = resolve_device(device)
    logger.info("loading sentence-transformers model %s", spec.weights)
    source = str(path) if path.is_dir() else spec.weights
    model = SentenceTransformer(source, device=str(torch_device))
    model.eval()
    apply = True if spec.pre_caption is None else spec.pre_caption
    return SentenceTransformerTeacher(
        model, name=spec.name, weights_sha256=sha, device=torch_device, apply_pre_caption=apply
    )
