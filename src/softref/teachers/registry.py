"""The teacher registry: one place that turns a `TeacherSpec` into a loaded teacher.

Each kind names its modality and its loader; loaders import their heavy libraries
(sentence-transformers, open_clip) only when used, so a job that extracts image features does
not pay for the text stack.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch

from softref.teachers.base import ImageTeacher, TeacherError, TeacherSpec, TextTeacher

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "TeacherKind", "load_teacher"]


@dataclass(frozen=True)
class TeacherKind:
    """A kind of teacher: the modality it encodes (or several: its loader then builds the one the
    spec asks for) and the `module:function` that loads it."""

    modality: str | tuple[str, ...]
    loader: str

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.modality,) if isinstance(self.modality, str) else tuple(self.modality)


KINDS: dict[str, TeacherKind] = {
    "efficientnet-lite0": TeacherKind("image", "softref.teachers.efficientnet:load_efficientnet_lite0_teacher"),
    "unicom": TeacherKind("image", "softref.teachers.unicom:load_unicom_teacher"),
    "sentence-transformers": TeacherKind("text", "softref.teachers.sentence:load_sentence_transformer_teacher"),
    "open_clip-image": TeacherKind("image", "softref.teachers.openclip:load_open_clip_image_teacher"),
    "open_clip-text": TeacherKind("text", "softref.teachers.openclip:load_open_clip_text_teacher"),
    # Demo diagnostic: the synthetic generator's facts as features (softref.teachers.oracle).
    "oracle-attributes": TeacherKind(("image", "text"), "softref.teachers.oracle:load_oracle_attributes_teacher"),
}


def load_teacher(spec: TeacherSpec, device: str | torch.device = "cpu") -> ImageTeacher | TextTeacher:
    """Load the teacher a spec describes, in eval mode on `device` ("auto": CUDA if present).

    Raises TeacherError for an unknown kind, a modality that disagrees with the kind, or weights
    whose sha256 differs from `spec.weights_sha256`; FileNotFoundError for missing weights.
    """
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise TeacherError(f"teacher {spec.name!r}: unknown kind {spec.kind!r}; known kinds: {sorted(KINDS)}")
    if spec.modality not in kind.modalities:
        raise TeacherError(
            f"teacher {spec.name!r}: kind {spec.kind!r} is a {' or '.join(kind.modalities)} teacher, "
            f"but the spec says modality {spec.modality!r}"
        )
    module_name, function_name = kind.loader.split(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    teacher = loader(spec, device)
    if spec.weights_sha256 is not None and teacher.weights_sha256 != spec.weights_sha256.lower():
        raise TeacherError(
            f"teacher {spec.name!r}: weights {spec.weights} have sha256 {teacher.weights_sha256}, "
            f"but the spec expects {spec.weights_sha256.lower()}"
        )
    logger.info("loaded teacher %s (%s, %d-d, weights %s)", spec.name, spec.kind, teacher.dim, teacher.weights_sha256)
    return teacher
