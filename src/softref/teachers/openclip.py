"""open_clip towers as teachers: the image tower ("open_clip-image") or the text tower ("open_clip-text").

`spec.architecture` is the open_clip model name; `spec.weights` is a local checkpoint file (its
sha256 is recorded) or one of open_clip's pretrained tags for that architecture (recorded as
"unverified:<architecture>/<tag>", since the bytes come from a hub cache). Features are the
towers' projected embeddings, not normalised.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from softref.teachers.base import (
    PRE_CAPTION_DESCRIPTION,
    ImageTeacher,
    TeacherError,
    TeacherSpec,
    TextTeacher,
    check_weights_sha256,
    describe_transform,
    file_sha256,
    progress_enabled,
    resolve_device,
)

logger = logging.getLogger(__name__)

__all__ = [
    "OpenClipImageTeacher",
    "OpenClipTextTeacher",
    "create_open_clip",
    "load_open_clip_image_teacher",
    "load_open_clip_text_teacher",
]


def create_open_clip(spec: TeacherSpec, device: torch.device) -> tuple[Any, Any, str]:
    """(model in eval mode, its evaluation image transform, weights sha256) for an open_clip spec."""
    import open_clip

    if not spec.architecture:
        raise TeacherError(f"teacher {spec.name!r}: kind {spec.kind!r} needs `architecture` (an open_clip model name)")
    architecture = spec.architecture
    unknown = (
        not architecture.startswith(("hf-hub:", "local-dir:")) and open_clip.get_model_config(architecture) is None
    )
    if unknown:
        raise TeacherError(
            f"teacher {spec.name!r}: open_clip has no model config {architecture!r}; "
            f"known: {', '.join(open_clip.list_models()[:12])}, ... "
            f"(register custom ones with open_clip.add_model_config)"
        )
    path = spec.weights_path
    if path.is_file():
        sha = file_sha256(path)
        pretrained = str(path)
        where: Any = path
    elif path.exists():
        raise TeacherError(f"teacher {spec.name!r}: {path} is a folder; open_clip weights are one checkpoint file")
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if spec.weights not in tags:
            raise FileNotFoundError(
                f"teacher {spec.name!r}: open_clip weights {spec.weights!r} are neither a local file nor a pretrained "
                f"tag of {architecture} (tags: {tags})"
            )
        sha = f"unverified:{architecture}/{spec.weights}"
        pretrained = spec.weights
        where = f"{architecture}/{spec.weights}"
    check_weights_sha256(spec, sha, where)
    logger.info("loading open_clip %s with weights %s", architecture, pretrained)
    model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=pretrained, device=device)
    model.eval()
    return model, preprocess, sha


def _image_size(model: Any) -> int:
    size = model.visual.image_size
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise TeacherError(
                f"open_clip image tower takes non-square {tuple(size)} images; softref needs square ones"
            )
        size = size[0]
    return int(size)


class OpenClipImageTeacher(ImageTeacher):
    """An open_clip image tower: `encode_image`, not normalised."""

    def __init__(
        self, model: Any, preprocess: Any, *, name: str, architecture: str, weights_sha256: str, device: torch.device
    ) -> None:
        size = _image_size(model)
        model = model.to(device).eval()
        with torch.no_grad():
            dim = model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1]
        super().__init__(
            name=name,
            dim=dim,
            weights_sha256=weights_sha256,
            preprocess_description=f"open_clip {architecture} image tower, {dim}-d; {describe_transform(preprocess)}",
            normalized=False,
            transform=preprocess,
            device=device,
            input_size=size,
            token_shape=None,
        )
        self.model = model

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class OpenClipTextTeacher(TextTeacher):
    """An open_clip text tower: `encode_text` over open_clip's tokenizer, not normalised."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        architecture: str,
        weights_sha256: str,
        device: torch.device,
        apply_pre_caption: bool,
    ) -> None:
        model = model.to(device).eval()
        with torch.no_grad():
            dim = model.encode_text(tokenizer(["a"]).to(device)).shape[-1]
        cleaning = PRE_CAPTION_DESCRIPTION if apply_pre_caption else "captions as annotated"
        super().__init__(
            name=name,
            dim=dim,
            weights_sha256=weights_sha256,
            preprocess_description=(
                f"{cleaning}; open_clip {architecture} tokenizer, context length "
                f"{getattr(tokenizer, 'context_length', 'default')}; {dim}-d text embedding"
            ),
            normalized=False,
            device=device,
            apply_pre_caption=apply_pre_caption,
        )
        self.model = model
        self.tokenizer = tokenizer

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        # Every caption is padded to the context length, so batches need no sorting by length.
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        chunks = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=f"{self.name} text", disable=not progress_enabled(show_progress)):
            tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
            with torch.no_grad(), autocast:
                chunks.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(chunks)


def load_open_clip_image_teacher(spec: TeacherSpec, device: str | torch.device = "cpu") -> OpenClipImageTeacher:
    """Build an open_clip image-tower teacher."""
    torch_device = resolve_device(device)
    model, preprocess, sha = create_open_clip(spec, torch_device)
    size = _image_size(model)
    if spec.image_size != size:
        raise TeacherError(
            f"teacher {spec.name!r}: open_clip {spec.architecture} takes {size}px images, "
            f"but the spec says image_size {spec.image_size}"
        )
    return OpenClipImageTeacher(
        model, preprocess, name=spec.name, architecture=spec.architecture or "", weights_sha256=sha, device=torch_device
    )


def load_open_clip_text_teacher(spec: TeacherSpec, device: str | torch.device = "cpu") -> OpenClipTextTeacher:
    """Build an open_clip text-tower teacher."""
    import open_clip

    torch_device = resolve_device(device)
    model, _, sha = create_open_clip(spec, torch_device)
    tokenizer = open_clip.get_tokenizer(spec.architecture)
    apply = False if spec.pre_caption is None else spec.pre_caption
    return OpenClipTextTeacher(
        model,
        tokenizer,
        name=spec.name,
        architecture=spec.architecture or "",
        weights_sha256=sha,
        device=torch_device,
        apply_pre_caption=apply,
    )
