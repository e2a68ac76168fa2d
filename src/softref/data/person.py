"""Adapters of the text-to-person retrieval sets: CUHK-PEDES, ICFG-PEDES, RSTPReid.

Each is one JSON list of ``{"split", "captions": [...], "id", <image field>}`` with images under
``imgs/``: CUHK-PEDES ``reid_raw.json`` / ``file_path``, ICFG-PEDES ``ICFG-PEDES.json`` /
``file_path``, RSTPReid ``data_captions.json`` / ``img_path``. ``image_id`` is the image field
itself (unique in these files), ``path`` is ``imgs/<image field>``, the identity is ``str(id)``,
and caption ``k`` of an image gets ``text_id = "<image_id>#<k>"``. Identities must not cross
splits.

ICFG-PEDES has no val split. Its adapter carves one from the *train* identities (never from
test): ``val_fraction`` of them (default 0.1, at least one), drawn by a NumPy generator seeded
with ``val_seed`` (default 0) from the sorted train identities, so the choice is deterministic.
``val_fraction=0`` keeps the file's splits unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from softref.data.common import (
    Adapter,
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_disjoint_identities,
    check_duplicates,
    frame,
    id_str,
    load_json_list,
    require,
    resolve_annotations,
    text,
)
from softref.data.manifest import IMAGE_COLUMNS, TEXT_COLUMNS

__all__ = ["PERSON_SPLITS", "person_adapter"]

PERSON_SPLITS = ("train", "val", "test")

logger = logging.getLogger(__name__)


def carve_val_identities(identities: list[str], fraction: float, seed: int) -> set[str]:
    """The train identities moved to val: ``fraction`` of them (at least one), seeded and deterministic."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), found {fraction}")
    unique = sorted(set(identities))
    if fraction == 0 or len(unique) < 2:
        return set()
    count = max(1, round(fraction * len(unique)))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:count]}


def person_adapter(default_file: str, image_field: str, image_dir: str = "imgs", carve_val: bool = False) -> Adapter:
    """An adapter for a text-to-person JSON list whose image name sits under ``image_field``.

    With ``carve_val`` the adapter takes ``val_fraction`` and ``val_seed`` options and moves a
    seeded subset of the train identities to a val split (for sets published without one).
    """

    def read_person(
        root: Path, annotations: PathLike | None = None, *, val_fraction: float = 0.1, val_seed: int = 0
    ) -> AdapterOutput:
        path = resolve_annotations(root, annotations, (default_file,), default_file)
        name = path.name
        records = load_json_list(path)
        image_rows: list[tuple[str, ...]] = []
        text_rows: list[tuple[str, ...]] = []
        places: list[str] = []
        for i, rec in enumerate(records):
            where = f"record [{i}]"
            split = require(rec, "split", where, name)
            captions = require(rec, "captions", where, name)
            identity = id_str(require(rec, "id", where, name), f"{where}.id", name)
            image = require(rec, image_field, where, name)
            if not isinstance(image, str) or not image:
                raise AnnotationError(
                    f"{name}: {where}.{image_field} must be a non-empty string, found {image!r}"
                )
            if split not in PERSON_SPLITS:
                raise AnnotationError(
                    f"{name}: {where}.split is {split!r}, expected one of {list(PERSON_SPLITS)}"
                )
            if not isinstance(captions, list):
                raise AnnotationError(
                    f"{name}: {where}.captions must be a list, found {type(captions).__name__}"
                )
            image_rows.append((image, f"{image_dir}/{image}", identity, split))
            places.append(where)
            for k, caption in enumerate(captions):
                caption = text(caption, f"{where}.captions[{k}]", name)
                text_rows.append((f"{image}#{k}", image, identity, caption, split))

        check_duplicates([r[0] for r in image_rows], places, image_field, name)
        check_disjoint_identities(
            [(r[0], r[1], f"id {r[2]}", r[3]) for r in image_rows], places, name
        )
        if carve_val:
            if any(r[3] == "val" for r in image_rows):
                logger.info("%s already has a val split: keeping it", name)
            else:
                val = carve_val_identities([r[2] for r in image_rows if r[3] == "train"], val_fraction, val_seed)
                image_rows = [(*r[:3], "val") if r[3] == "train" and r[2] in val else r for r in image_rows]
                text_rows = [(*r[:4], "val") if r[4] == "train" and r[2] in val else r for r in text_rows]
                logger.info("%s: %d train identities moved to val (fraction %s, seed %d)", name, len(val), val_fraction, val_seed)
        return AdapterOutput(
            images=frame(image_rows, IMAGE_COLUMNS),
            texts=frame(text_rows, TEXT_COLUMNS),
            annotations=path,
        )

    read_person.__name__ = read_person.__qualname__ = (
        "read_" + default_file.rsplit(".", 1)[0].lower().replace("-", "_")
    )
    read_person.__doc__ = (
        f"Read {default_file} (image field {image_field!r}, images under {image_dir}/)."
    )
    if carve_val:
        return read_person

    def read_person_as_published(root: Path, annotations: PathLike | None = None) -> AdapterOutput:
        return read_person(root, annotations, val_fraction=0.0)

    read_person_as_published.__name__ = read_person_as_published.__qualname__ = read_person.__name__
    read_person_as_published.__doc__ = read_person.__doc__
    return read_person_as_published
