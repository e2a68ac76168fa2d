"""The ``oracle-attributes`` teacher: the demo generator's own facts as teacher features (demo only).

A diagnostic, not a model. Its image feature is the one-hot-per-fact vector of the facts an image
shows, its text feature the one-hot-per-fact vector of the facts a caption mentions (all-zero
blocks for the facts it leaves out), both read from the sidecar the synthetic demo writes
(``resources/demo/oracle_attributes.json``, :class:`softref.data.facts.FactTable`), which the
teacher's ``weights`` names. The features are not normalised: the cosine of two images is the
share of facts they share, the cosine of two captions ``shared / sqrt(k1 * k2)`` for captions
mentioning ``k1`` and ``k2`` facts.

It answers what a stand-in teacher cannot: whether soft labels help when they are right. It
encodes images by path, not pixels (:attr:`ImageTeacher.encodes_paths`), so the extractor hands
it the image files' paths; an image or caption the sidecar lacks is an error naming it. The
shards record the sidecar's sha256 as ``weights_sha256``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from softref.data.facts import FACT_DOMAINS, FACTS, FactError, FactTable, one_hot
from softref.files import file_sha256
from softref.teachers.base import (
    ImageTeacher,
    TeacherError,
    TeacherSpec,
    TextTeacher,
    check_weights_sha256,
)

logger = logging.getLogger(__name__)

__all__ = ["OracleImageTeacher", "OracleTextTeacher", "load_oracle_attributes_teacher"]

DIM = sum(len(FACT_DOMAINS[name]) for name in FACTS)


def _description(what: str, table: FactTable) -> str:
    return (
        f"oracle-attributes (demo diagnostic): one-hot block per fact ({', '.join(FACTS)}; {DIM}-d) of the "
        f"facts {what}, from {table.path.name}; not normalised"
    )


class _NoPixels:
    """The transform slot of a teacher that reads paths: never called by the extractor."""

    def __call__(self, image: object) -> torch.Tensor:
        raise TeacherError("the oracle-attributes teacher encodes images by path, not pixels (encode_paths)")

    def __repr__(self) -> str:
        return "NoPixels()"


class OracleImageTeacher(ImageTeacher):
    """Image features: the one-hot facts each image shows, looked up by its path."""

    encodes_paths = True

    def __init__(self, table: FactTable, *, name: str, weights_sha256: str) -> None:
        super().__init__(
            name=name,
            dim=DIM,
            weights_sha256=weights_sha256,
            preprocess_description=_description("the image shows", table),
            normalized=False,
            transform=_NoPixels(),
            device=torch.device("cpu"),
            input_size=1,
        )
        self.table = table

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        raise TeacherError(f"teacher {self.name!r}: oracle-attributes encodes images by path (encode_paths), not pixels")

    def encode_paths(self, paths: Sequence[str]) -> torch.Tensor:
        """Image files -> (N, dim) float32; TeacherError naming the first path the sidecar lacks."""
        try:
            codes = self.table.image_codes(list(paths))
        except FactError as exc:
            raise TeacherError(f"teacher {self.name!r}: {exc}") from None
        return torch.from_numpy(one_hot(codes))


class OracleTextTeacher(TextTeacher):
    """Text features: the one-hot facts each caption mentions, looked up by its text as annotated."""

    def __init__(self, table: FactTable, *, name: str, weights_sha256: str) -> None:
        super().__init__(
            name=name,
            dim=DIM,
            weights_sha256=weights_sha256,
            preprocess_description=_description("the caption mentions (looked up by the caption as annotated)", table),
            normalized=False,
            device=torch.device("cpu"),
            apply_pre_caption=False,
        )
        self.table = table

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        try:
            return one_hot(self.table.caption_codes(texts))
        except FactError as exc:
            raise TeacherError(f"teacher {self.name!r}: {exc}") from None


def load_oracle_attributes_teacher(
    spec: TeacherSpec, device: str | torch.device = "cpu"
) -> OracleImageTeacher | OracleTextTeacher:
    """The image or text oracle (by ``spec.modality``) over the sidecar ``spec.weights``; runs on the CPU."""
    path = Path(spec.weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher {spec.name!r}: fact table {path} not found; the synthetic demo writes it "
            "(softref.data.synthetic.synthesize_demo: <root>/oracle_attributes.json)"
        )
    if spec.pre_caption:
        raise TeacherError(f"teacher {spec.name!r}: oracle-attributes looks captions up as annotated; pre_caption must be false or null")
    sha = file_sha256(path)
    check_weights_sha256(spec, sha, path)
    try:
        table = FactTable.load(path)
    except FactError as exc:
        raise TeacherError(f"teacher {spec.name!r}: {exc}") from None
    cls = OracleImageTeacher if spec.modality == "image" else OracleTextTeacher
    logger.info("oracle-attributes %s teacher from %s (%d images, %d captions)", spec.modality, path,
                len(table.images), len(table.captions))
    return cls(table, name=spec.name, weights_sha256=sha)
