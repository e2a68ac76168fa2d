"""Unicom ViT (An et al., ICLR 2023): CUSA's image teacher, rebuilt so a local checkpoint loads offline.

The module names reproduce the released checkpoints' state-dict keys exactly (`pos_embed`,
`patch_embed.proj`, `blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2`, `norm`,
`feature.0..3`), so `load_unicom` loads `FP16-ViT-B-32.pt` and its siblings with a strict
`load_state_dict`. The model is inference-only: stochastic depth (DropPath 0.1 in training) is the
identity in eval mode and is left out; the BatchNorm head runs on its running statistics.

CUSA's teacher feature is `forward_features`: the final-LayerNorm'd patch tokens, flattened
(49 x 768 = 37,632 values for ViT-B/32); `forward` gives the 512-d retrieval embedding.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from softref.checkpoints import load_error_reason
from softref.teachers.base import (
    ConvertRGB,
    ImageTeacher,
    TeacherError,
    TeacherSpec,
    check_weights_sha256,
    describe_transform,
    file_sha256,
    resolve_device,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "UNICOM_RELEASED_SHA256",
    "UNICOM_VARIANTS",
    "UnicomConfig",
    "UnicomTeacher",
    "UnicomViT",
    "build_unicom",
    "load_unicom",
    "load_unicom_teacher",
    "read_state_dict",
    "resolve_variant",
    "unicom_transform",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class UnicomConfig:
    """Shape of one Unicom ViT: input side, patch side, width, depth, heads, head output size."""

    input_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    embedding_size: int
    mlp_ratio: int = 4

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2


UNICOM_VARIANTS: dict[str, UnicomConfig] = {
    "ViT-B/32": UnicomConfig(input_size=224, patch_size=32, width=768, depth=12, heads=12, embedding_size=512),
    "ViT-B/16": UnicomConfig(input_size=224, patch_size=16, width=768, depth=12, heads=12, embedding_size=768),
    "ViT-L/14": UnicomConfig(input_size=224, patch_size=14, width=1024, depth=24, heads=16, embedding_size=768),
    "ViT-L/14@336px": UnicomConfig(input_size=336, patch_size=14, width=1024, depth=24, heads=16, embedding_size=768),
}
_VARIANT_ALIASES = {"ViT-L/14@336": "ViT-L/14@336px"}

# The released fp16 checkpoints (file name -> sha256), as published with the Unicom package.
UNICOM_RELEASED_SHA256: dict[str, str] = {
    "FP16-ViT-B-32.pt": "f9d5696a9b58dbbbefee2d31615ca59084f2895a0fdd2ca4c235e0f9b2793f7a",
    "FP16-ViT-B-16.pt": "c04f324f7c3b4435667236ec6c0eca1cd62f9d64fbfc2d06f8e8e60e6497edef",
    "FP16-ViT-L-14.pt": "ff3ab62ff782876460099e6e0ee17b73a7c01109de2fffd595f16f4129404bbd",
    "FP16-ViT-L-14-336px.pt": "3916ab5aed3b522fc90345be8b4457fe5dad60801ad2af5a6871c0c096e8d7ea",
}
_RELEASED_FILE = {
    "ViT-B/32": "FP16-ViT-B-32.pt",
    "ViT-B/16": "FP16-ViT-B-16.pt",
    "ViT-L/14": "FP16-ViT-L-14.pt",
    "ViT-L/14@336px": "FP16-ViT-L-14-336px.pt",
}


def resolve_variant(variant: str) -> str:
    """The canonical variant name ("ViT-L/14@336" is accepted for "ViT-L/14@336px")."""
    canonical = _VARIANT_ALIASES.get(variant, variant)
    if canonical not in UNICOM_VARIANTS:
        raise TeacherError(f"unknown Unicom variant {variant!r}; expected one of {sorted(UNICOM_VARIANTS)}")
    return canonical


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: a strided convolution, no class token."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; qkv without bias, softmax(q k^T / sqrt(head_dim)) v."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    """fc1 -> ReLU6 -> fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UnicomViT(nn.Module):
    """The Unicom vision transformer with its BatchNorm embedding head (`feature`)."""

    def __init__(self, config: UnicomConfig) -> None:
        super().__init__()
        self.config = config
        tokens, width = config.num_patches, config.width
        self.patch_embed = PatchEmbed(config.patch_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(Block(width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width)
        self.feature = nn.Sequential(
            nn.Linear(tokens * width, width, bias=False),
            nn.BatchNorm1d(width, eps=2e-5),
            nn.Linear(width, config.embedding_size, bias=False),
            nn.BatchNorm1d(config.embedding_size, eps=2e-5),
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def token_shape(self) -> tuple[int, int]:
        return (self.config.num_patches, self.config.width)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, T, C): the final-LayerNorm'd patch tokens, in float32."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        # The released model takes the last norm in float32 even when the blocks run in fp16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.norm(x.float())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, T * C) float32: CUSA's teacher feature."""
        tokens = self.forward_tokens(x)
        return tokens.reshape(tokens.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, embedding_size): the Unicom embedding, not normalised."""
        return self.feature(self.forward_features(x))


def build_unicom(variant: str = "ViT-B/32") -> UnicomViT:
    """A randomly initialised Unicom ViT of the given variant (in train mode, like any new module)."""
    return UnicomViT(UNICOM_VARIANTS[resolve_variant(variant)])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict, or a dict holding one under "state_dict".

    A leading "module." (from DataParallel/DDP training) is stripped from every key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Unicom checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded: Any = load_file(str(path))
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for foreign or damaged files
            raise TeacherError(f"cannot read Unicom checkpoint {path}: {load_error_reason(error)}") from None
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise TeacherError(f"Unicom checkpoint {path} holds a {type(loaded).__name__}, expected a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise TeacherError(f"Unicom checkpoint {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key.removeprefix("module.")] = value
    return state


def _first(names: list[str], count: int = 5) -> str:
    shown = ", ".join(names[:count])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > count else shown


def load_unicom(path: str | os.PathLike[str], variant: str = "ViT-B/32") -> UnicomViT:
    """Load a Unicom checkpoint file strictly into the rebuilt ViT; float32, eval mode."""
    variant = resolve_variant(variant)
    state = read_state_dict(path)
    with torch.device("meta"):
        model = UnicomViT(UNICOM_VARIANTS[variant])
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise TeacherError(
            f"Unicom checkpoint {path} does not match the {variant} architecture: "
            f"missing keys [{_first(missing)}]; unexpected keys [{_first(unexpected)}]"
        )
    try:
        # assign=True takes the checkpoint's tensors instead of filling a random model first.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise TeacherError(f"Unicom checkpoint {path} does not fit the {variant} architecture: {error}") from error
    return model.float().eval()


def _download_with_unicom_package(name: str) -> Path:
    """A hub name resolved through the `unicom` package's own download (used only when it is installed)."""
    if importlib.util.find_spec("unicom") is None:
        released = _RELEASED_FILE[name]
        raise TeacherError(
            f"Unicom weights {name!r} name a hub download, and the `unicom` package that downloads them is not "
            f"installed; softref loads Unicom from a local checkpoint: put {released} (sha256 "
            f"{UNICOM_RELEASED_SHA256[released]}) on disk and set the teacher's weights to its path"
        )
    try:
        package_model = importlib.import_module("unicom.model")
        target = package_model._download(package_model._MODELS[name], os.path.expanduser("~/.cache/unicom"))
    except Exception as error:  # whatever the package raises, the user needs the same advice
        raise TeacherError(
            f"the unicom package could not provide {name!r} ({type(error).__name__}: {error}); "
            f"set the teacher's weights to a local checkpoint path instead"
        ) from error
    return Path(target)


# --------------------------------------------------------------------------------------------
# Teacher
# --------------------------------------------------------------------------------------------


def unicom_transform(image_size: int = 224) -> T.Compose:
    """Unicom's evaluation transform: Resize (bicubic), CenterCrop, RGB, ToTensor, CLIP mean/std."""
    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            ConvertRGB(),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class UnicomTeacher(ImageTeacher):
    """Unicom as an image teacher: output "embedding" (forward) or "features" (forward_features)."""

    def __init__(
        self,
        model: UnicomViT,
        *,
        name: str,
        output: str,
        weights_sha256: str,
        device: torch.device,
        variant: str,
    ) -> None:
        if output not in ("embedding", "features"):
            raise TeacherError(f"teacher {name!r}: Unicom output must be 'embedding' or 'features', got {output!r}")
        config = model.config
        dim = config.embedding_size if output == "embedding" else config.num_patches * config.width
        transform = unicom_transform(config.input_size)
        what = (
            f"{config.embedding_size}-d embedding (feature head)"
            if output == "embedding"
            else f"forward_features: final-LayerNorm'd {config.num_patches}x{config.width} patch tokens, flattened"
        )
        super().__init__(
            name=name,
            dim=dim,
            weights_sha256=weights_sha256,
            preprocess_description=f"Unicom {variant} {what}; {describe_transform(transform)}",
            normalized=False,
            transform=transform,
            device=device,
            input_size=config.input_size,
            token_shape=model.token_shape,
        )
        self.model = model.to(device).eval()
        self.output = output
        self.variant = variant

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.output == "embedding":
            return self.model(pixels)
        return self.model.forward_features(pixels)

    def _forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_tokens(pixels)


def load_unicom_teacher(spec: TeacherSpec, device: str | torch.device = "cpu") -> UnicomTeacher:
    """Build the Unicom teacher a spec names: a local checkpoint file, or a hub name via the unicom package."""
    variant = resolve_variant(spec.variant)
    config = UNICOM_VARIANTS[variant]
    if spec.image_size != config.input_size:
        raise TeacherError(
            f"teacher {spec.name!r}: Unicom {variant} takes {config.input_size}px images, "
            f"but the spec says image_size {spec.image_size}"
        )
    path = spec.weights_path
    if not path.exists():
        hub_name = _VARIANT_ALIASES.get(spec.weights, spec.weights)
        if hub_name not in UNICOM_VARIANTS:
            raise FileNotFoundError(
                f"teacher {spec.name!r}: Unicom checkpoint {path} not found (nor is it one of Unicom's "
                f"model names {sorted(UNICOM_VARIANTS)})"
            )
        if hub_name != variant:
            raise TeacherError(f"teacher {spec.name!r}: weights name {hub_name!r} but variant is {variant!r}")
        path = _download_with_unicom_package(hub_name)
    sha = file_sha256(path)
    check_weights_sha256(spec, sha, path)
    logger.info("loading Unicom %s from %s", variant, path)
    model = load_unicom(path, variant)
    return UnicomTeacher(
        model, name=spec.name, output=spec.output, weights_sha256=sha, device=resolve_device(device), variant=variant
    )
