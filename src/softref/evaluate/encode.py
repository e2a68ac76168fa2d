"""Encoding with a trained student: images and sentences to L2-normalised embeddings.

One pair of loops serves every protocol (and the trainer's validation): eval mode, no
gradient, a DataLoader decoding images, captions through the student's own :meth:`tokenize`
(so the caption cleaning recorded in the checkpoint applies), each batch back on the CPU as
float32, and a progress bar that follows the log level.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from softref.data.images import ImageFiles
from softref.runtime import progress_disabled

__all__ = ["encode_images", "encode_texts"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, root: Path, paths: Sequence[str], *, head: str = "cross", batch_size: int = 64,
    device: str | torch.device = "cpu", num_workers: int = 0, desc: str = "images",
) -> Tensor:
    """(N, D) L2-normalised float32 CPU embeddings of the images at ``root / paths`` (``head`` as
    :meth:`softref.models.student.Student.encode_image`). The model is left in eval mode."""
    model.eval()
    device = torch.device(device)
    loader = DataLoader(ImageFiles(Path(root), paths, model.transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    parts = [model.encode_image(pixels.to(device), head=head).float().cpu()
             for pixels in tqdm(loader, desc=desc, disable=progress_disabled(logger), leave=False)]
    if not parts:
        raise ValueError(f"encode_images: no image to encode under {root}")
    return torch.cat(parts)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, sentences: Sequence[str], *, head: str = "cross", batch_size: int = 64,
    device: str | torch.device = "cpu", desc: str = "captions",
) -> Tensor:
    """(N, D) L2-normalised float32 CPU embeddings of ``sentences`` (``model.tokenize``, then
    ``encode_text`` of ``head``). The model is left in eval mode."""
    model.eval()
    device = torch.device(device)
    parts = []
    for start in tqdm(range(0, len(sentences), batch_size), desc=desc, disable=progress_disabled(logger),
                      leave=False):
        tokens = model.tokenize(list(sentences[start : start + batch_size]))
        parts.append(model.encode_text(tokens.to(device), head=head).float().cpu())
    if not parts:
        raise ValueError("encode_texts: no sentence to encode")
    return torch.cat(parts)
