"""Adapters of the text-to-person retrieval sets: CUHK-PEDES, ICFG-PEDES, RSTPReid.

Each is one JSON list of ``{"split", "captions": [...], "id", <image field>}`` with images under
``imgs/``: CUHK-PEDES ``reid_raw.json`` / ``file_path``, ICFG-PEDES ``ICFG-PEDES.json`` /
``file_path``, RSTPReid ``data_captions.json`` / ``img_path``. ``image_id`` is the image field
itself (unique in these files), ``path`` is ``imgs/<image field>``, the identity is ``str(id)``,
and caption ``k`` of an image gets ``text_id = "<image_id>#<k>"``. Identities must not cross
splits.
"""

from __future__ import annotations

from pathlib import Path

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


def person_adapter(default_file: str, image_field: str, image_dir: str = "imgs") -> Adapter:
    """An adapter for a text-to-person JSON list whose image name sits under ``image_field``."""

    def read_person(root: Path, annotations: PathLike | None = None) -> AdapterOutput:
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
    return read_person
