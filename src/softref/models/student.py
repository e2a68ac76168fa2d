"""The CUSA student: an open_clip model with cross-modal and uni-modal projection heads.

Each encoder output goes through two heads (LayerNorm then Linear, D to D): the cross-modal
head gives the embeddings used for image-text retrieval and the contrastive / CSA losses,
the uni-modal head gives the embeddings used for uni-modal retrieval and STS, trained by USA.
Four learnable temperatures (tau, tau_c, tau_image, tau_text) are clamped to their ranges at
every forward, as the public CUSA code does; the contrastive ``tau`` can instead be fixed
(a buffer, never trained), as the person-retrieval line of work fixes it (IRRA: 0.02).

A ViT student can take non-square images (``image_size=(H, W)``, e.g. the person field's
384 x 128): open_clip builds the patch grid at (H / patch, W / patch) and, when weights load,
interpolates the pretrained square grid of position embeddings to it (bicubic, antialiased, the
class token kept); the image transform then resizes to exactly (H, W), without cropping.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import Tensor, nn

from softref.checkpoints import CheckpointError, load_checkpoint, load_error_reason
from softref.config import TAU_RANGE
from softref.data.captions import pre_caption

__all__ = [
    "MODEL_CONFIG_DIR", "HEADS", "register_model_configs", "is_convolutional", "Student", "load_student", "student_options",
]

logger = logging.getLogger(__name__)

#: open_clip model configs shipped with softref (e.g. ``softref-tiny`` for the demo).
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".npy")
HEADS = ("cross", "uni", "encoder")


def register_model_configs() -> None:
    """Make softref's model configs known to open_clip (idempotent)."""
    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    if not names:
        raise FileNotFoundError(f"no open_clip model config (*.json) found in {MODEL_CONFIG_DIR}")
    known = set(open_clip.list_models())
    if all(name in known for name in names):
        return
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    logger.debug("registered open_clip model configs %s from %s", names, MODEL_CONFIG_DIR)


def _projector(dim: int) -> nn.Sequential:
    """LayerNorm then Linear D -> D, initialised as the public CUSA code (N(0, 0.02), bias 0)."""
    linear = nn.Linear(dim, dim)
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.LayerNorm(dim), linear)


def _check_range(name: str, init: float, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = float(bounds[0]), float(bounds[1])
    if not 0.0 < low <= high:
        raise ValueError(f"{name}_range: expected 0 < low <= high, found ({low}, {high})")
    if not low <= init <= high:
        raise ValueError(f"{name}_init: expected a value in [{low}, {high}], found {init}")
    return low, high


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)


def _create_clip(architecture: str, pretrained: str | None, **kwargs: Any) -> nn.Module:
    """``open_clip.create_model``; a damaged or foreign weights file is a CheckpointError naming it
    (torch's own refusal says to retry unsafely, which softref never suggests)."""
    try:
        return open_clip.create_model(architecture, pretrained=pretrained, **kwargs)
    except (pickle.UnpicklingError, EOFError, OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "state_dict" in str(err):
            raise  # a readable file of another architecture: open_clip's message lists the keys
        raise CheckpointError(
            f"pretrained weights for {architecture!r}: {pretrained} is not a readable state dict "
            f"({load_error_reason(err)}); softref loads weights only with weights_only=True"
        ) from None


def _forced_size(architecture: str, model_cfg: dict | None, image_size: Any) -> tuple[int, int] | None:
    """``image_size`` as (H, W), checked against the architecture; None keeps the architecture's own.

    Non-square sizes need one of open_clip's own ViTs (a patch grid of H / patch x W / patch);
    both sides must be multiples of the patch size, or the grid would not cover the image.
    """
    if image_size is None:
        return None
    if isinstance(image_size, int) or len(image_size) != 2 or not all(isinstance(v, int) and v > 0 for v in image_size):
        raise ValueError(f"image_size: expected [height, width], two positive integers, found {image_size!r}")
    height, width = int(image_size[0]), int(image_size[1])
    vision = (model_cfg or {}).get("vision_cfg", {})
    is_vit = isinstance(vision.get("layers"), int) and "patch_size" in vision and not vision.get("timm_model_name")
    if height != width and not is_vit:
        raise ValueError(
            f"image_size {[height, width]}: a non-square input needs an open_clip ViT; {architecture!r} is not one "
            f"(its vision_cfg: {sorted(vision)})"
        )
    patch = int(vision.get("patch_size", 1)) if is_vit else 1
    if height % patch or width % patch:
        raise ValueError(
            f"image_size {[height, width]}: expected multiples of {architecture!r}'s patch size {patch}, so the "
            f"patch grid covers the image"
        )
    return height, width


def is_convolutional(visual: nn.Module) -> bool:
    """Whether an image tower is a convolutional network (a ResNet, a ConvNeXt): more than one
    Conv2d. A ViT has one, its patch embedding."""
    return sum(isinstance(m, nn.Conv2d) for m in visual.modules()) > 1


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of a channels-last image tower: its input images in the same layout."""
    images, *rest = args
    return (images.contiguous(memory_format=torch.channels_last), *rest)


def _preprocess(clip: nn.Module, forced: tuple[int, int] | None) -> tuple[int | tuple[int, int], dict[str, Any]]:
    """The model's input size (an int when square) and its preprocess settings; a forced size
    resizes to exactly (H, W), no crop: a centre crop of a tall person image would cut off head or feet."""
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))
    size = preprocess_cfg["size"]
    if isinstance(size, (tuple, list)):
        size = (int(size[0]), int(size[1]))
        image_size: int | tuple[int, int] = size[0] if size[0] == size[1] else size
    else:
        image_size = int(size)
    if forced is not None:
        preprocess_cfg.update(size=forced, resize_mode="squash")
    return image_size, preprocess_cfg


class Student(nn.Module):
    """open_clip image and text encoders plus CUSA's cross-modal and uni-modal heads.

    Args:
        architecture: an open_clip model name (``ViT-B-32``, ``softref-tiny``, ...).
        pretrained: None (random init), a local checkpoint file (state dict, loaded
            strictly by open_clip with ``weights_only=True``), or an open_clip tag such as
            ``openai`` (downloads: works only online).
        image_size: None (the architecture's own size and open_clip's evaluation preprocess:
            resize the shorter side, centre crop) or (height, width): the model is built at that
            size (position embeddings interpolated from the pretrained grid when weights load)
            and the transform resizes every image to exactly (height, width), no crop. Non-square
            sizes need an open_clip ViT, both sides multiples of its patch size.
        tau_init, tau_range: contrastive temperature (CUSA: 0.05 in [0.01, 0.10]).
        tau_fixed: keep ``tau`` at ``tau_init`` for good: a buffer, not a parameter, so no
            optimizer ever sees it (``tau_range`` is then ignored).
        tau_c_init, tau_c_range: CSA temperature (0.45 in [0.10, 0.99]).
        tau_uni_init, tau_uni_range: USA temperatures, one per modality (0.45 in [0.10, 1.0]).
        pre_caption: clean every caption with CUSA's ``pre_caption`` before tokenizing
            (:meth:`tokenize`), as the public CUSA code does for every student input.
        channels_last: use the channels-last memory layout for a convolutional image tower
            (:func:`is_convolutional`): its weights, and its input images through a forward
            pre-hook. Faster convolutions, the same model; False keeps PyTorch's default layout
            (a benchmark's side-by-side run). A ViT ignores it.

    Attributes:
        clip: the open_clip model. Its own ``logit_scale`` is unused and frozen.
        channels_last: whether the image tower runs in the channels-last layout.
        embed_dim: D, the joint embedding size of the encoders and the heads.
        image_size: input size, an int when square, else (height, width).
        preprocess_cfg: open_clip's preprocess settings of the model (size, mean, std,
            interpolation, resize_mode), from which :attr:`transform` is built.
        tokenizer: open_clip's tokenizer for the architecture.
        transform: the evaluation preprocess (no augmentation, as CUSA); training augmentation,
            where an experiment asks for it, wraps the training images only
            (:mod:`softref.train.augment`).
    """

    def __init__(
        self,
        architecture: str,
        pretrained: str | None = None,
        *,
        image_size: tuple[int, int] | None = None,
        tau_init: float = 0.05,
        tau_range: tuple[float, float] = TAU_RANGE,
        tau_fixed: bool = False,
        tau_c_init: float = 0.45,
        tau_c_range: tuple[float, float] = (0.10, 0.99),
        tau_uni_init: float = 0.45,
        tau_uni_range: tuple[float, float] = (0.10, 1.0),
        pre_caption: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        register_model_configs()
        self.architecture = architecture
        self.pretrained = pretrained
        self.pre_caption = bool(pre_caption)
        self.tau_fixed = bool(tau_fixed)
        if self.tau_fixed and not float(tau_init) > 0:
            raise ValueError(f"tau_init: a fixed temperature must be positive, found {tau_init}")
        # A fixed tau clamps to itself, so the trainer logs it like the learned ones.
        self.tau_range = (float(tau_init),) * 2 if self.tau_fixed else _check_range("tau", tau_init, tau_range)
        self.tau_c_range = _check_range("tau_c", tau_c_init, tau_c_range)
        self.tau_uni_range = _check_range("tau_uni", tau_uni_init, tau_uni_range)

        has_schema = architecture.startswith(("hf-hub:", "local-dir:"))
        model_cfg = open_clip.get_model_config(architecture)
        if model_cfg is None and not has_schema:
            raise ValueError(
                f"unknown open_clip architecture {architecture!r}; known: {', '.join(open_clip.list_models())}"
            )
        if pretrained is not None and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise FileNotFoundError(
                f"pretrained weights for {architecture!r}: expected a checkpoint file at {pretrained}, found none"
            )

        forced = _forced_size(architecture, model_cfg, image_size)
        # open_clip resizes the pretrained position-embedding grid to the forced size while loading.
        size_arg = {} if forced is None else {"force_image_size": forced[0] if forced[0] == forced[1] else forced}
        self.clip = _create_clip(architecture, pretrained, **size_arg)
        # Retrieval uses the heads and tau below; open_clip's logit scale would get no gradient.
        for name in ("logit_scale", "logit_bias"):
            param = getattr(self.clip, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)

        if model_cfg is not None:
            self.embed_dim = int(model_cfg["embed_dim"])
        else:
            self.embed_dim = int(self.clip.visual.output_dim)
        # A convolutional image tower runs in the channels-last layout (weights and inputs), which
        # oneDNN and cuDNN convolve fastest: on one CPU thread the demo's tiny ResNet takes 0.84x
        # the time of a training step and 0.60x of an image forward (bench/layout.py). The same
        # model; its sums are ordered differently, so values agree to float rounding.
        self.channels_last = bool(channels_last) and is_convolutional(self.clip.visual)
        if self.channels_last:
            self.clip.visual.to(memory_format=torch.channels_last)
            self.clip.visual.register_forward_pre_hook(_channels_last_input)
        self.image_size, self.preprocess_cfg = _preprocess(self.clip, forced)
        self.transform: Callable = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(architecture)

        self.image_cross_proj = _projector(self.embed_dim)
        self.text_cross_proj = _projector(self.embed_dim)
        self.image_uni_proj = _projector(self.embed_dim)
        self.text_uni_proj = _projector(self.embed_dim)

        if self.tau_fixed:
            self.register_buffer("tau", torch.tensor(float(tau_init)))
        else:
            self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self.tau_c = nn.Parameter(torch.tensor(float(tau_c_init)))
        self.tau_image = nn.Parameter(torch.tensor(float(tau_uni_init)))
        self.tau_text = nn.Parameter(torch.tensor(float(tau_uni_init)))
        logger.info("student %s (pretrained=%s): embed_dim=%d, image_size=%s, tau %s %.4g", architecture, pretrained,
                    self.embed_dim, self.image_size, "fixed at" if self.tau_fixed else "learned from", float(tau_init))

    @torch.no_grad()
    def clamp_temperatures(self) -> None:
        """Clamp the four temperatures in place to their ranges (outside autograd)."""
        self.tau.clamp_(*self.tau_range)
        self.tau_c.clamp_(*self.tau_c_range)
        self.tau_image.clamp_(*self.tau_uni_range)
        self.tau_text.clamp_(*self.tau_uni_range)

    def _head(self, modality: str, head: str) -> nn.Module:
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, found {head!r}")
        if head == "encoder":
            # The open_clip encoder's own output, before either of CUSA's projectors.
            return nn.Identity()
        return getattr(self, f"{modality}_{head}_proj")

    def tokenize(self, captions: list[str]) -> Tensor:
        """Token ids of ``captions`` as this student reads them: through CUSA's ``pre_caption``
        first when the student was built with ``pre_caption=True`` (training and evaluation
        alike, since :func:`load_student` restores the setting from the checkpoint)."""
        if self.pre_caption:
            captions = [pre_caption(c) for c in captions]
        return self.tokenizer(list(captions))

    def encode_image(self, images: Tensor, head: str = "cross") -> Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) L2-normalised embeddings of ``head``
        (``cross``, ``uni``, or ``encoder``: the open_clip encoder's output)."""
        projector = self._head("image", head)
        return F.normalize(projector(self.clip.encode_image(images)), dim=-1)

    def encode_text(self, tokens: Tensor, head: str = "cross") -> Tensor:
        """(B, L) token ids -> (B, D) L2-normalised embeddings of ``head``."""
        projector = self._head("text", head)
        return F.normalize(projector(self.clip.encode_text(tokens)), dim=-1)

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        """Encode a batch of image-text pairs through both heads.

        Returns:
            "image_emb", "text_emb": (B, D) cross-modal embeddings, L2-normalised;
            "image_uni", "text_uni": (B, D) uni-modal embeddings, L2-normalised;
            "tau", "tau_c", "tau_image", "tau_text": the clamped temperatures (0-d, learnable;
            ``tau`` a constant when the student was built with ``tau_fixed``).
        """
        self.clamp_temperatures()
        image_features = self.clip.encode_image(images)
        text_features = self.clip.encode_text(tokens)
        return {
            "image_emb": F.normalize(self.image_cross_proj(image_features), dim=-1),
            "text_emb": F.normalize(self.text_cross_proj(text_features), dim=-1),
            "image_uni": F.normalize(self.image_uni_proj(image_features), dim=-1),
            "text_uni": F.normalize(self.text_uni_proj(text_features), dim=-1),
            "tau": self.tau,
            "tau_c": self.tau_c,
            "tau_image": self.tau_image,
            "tau_text": self.tau_text,
        }


def student_options(student: Mapping[str, Any], experiment: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`Student` keywords a student block and an experiment block ask for (plain
    dicts, as a checkpoint's ``config`` holds them; keys they lack take the defaults, so a
    checkpoint written before a key existed rebuilds the student it trained)."""
    size = student.get("image_size")
    fixed = experiment.get("tau_mode", "learned") == "fixed"
    return {
        "image_size": None if size is None else (int(size[0]), int(size[1])),
        "tau_init": float(experiment.get("tau", 0.05)),
        "tau_fixed": fixed,
        "pre_caption": bool(experiment.get("student_pre_caption", False)),
    }


def load_student(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[Student, dict]:
    """Rebuild the student stored in a selected-model checkpoint; returns (model in eval mode, checkpoint).

    The architecture, its input size and the caption cleaning come from the checkpoint's
    ``config`` (``config["student"]["architecture"]`` and ``["image_size"]``,
    ``config["experiment"]["student_pre_caption"]``, ``["tau_mode"]`` and ``["tau"]``), so
    evaluation sees images at the size and with the transform training used; the weights come
    from its ``model`` state dict (pretrained weights are not needed). Loaded with
    ``weights_only=True``.
    """
    ckpt = load_checkpoint(Path(checkpoint), map_location="cpu", required=("model", "config"))
    config = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    student = config.get("student")
    if not isinstance(student, dict) or "architecture" not in student:
        raise CheckpointError(
            f"{checkpoint}: config['student']['architecture'] expected, found config keys "
            f"{sorted(config) if config else type(ckpt['config']).__name__}"
        )
    experiment = config.get("experiment") if isinstance(config.get("experiment"), dict) else {}
    model = Student(student["architecture"], None, **student_options(student, experiment))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{checkpoint}: its model state does not fit a {student['architecture']!r} student ({err})"
        ) from err
    model.to(device).eval()
    return model, ckpt
