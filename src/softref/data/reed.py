"""Adapters of Reed et al. (2016)'s captions of CUB-200-2011 birds and Oxford-102 flowers (MMRef).

Both read, under the root (the unpacked ``cvpr2016_cub`` / ``cvpr2016_flowers`` folder, with
the images placed beside it):

- ``text_c10/<class_dir>/<image_name>.txt``: one caption per line, 10 per image;
- ``trainvalclasses.txt`` and ``testclasses.txt``: the zero-shot class split, one class folder
  name per line (CUB: 150 / 50 classes, ``001.Black_footed_Albatross``; Flowers: 82 / 20,
  ``class_00001``). Trainval classes go to split ``train``, test classes to ``test``.
- val classes for model selection, by option ``val_classes``: ``carved`` (default) moves a seeded
  ``val_fraction`` (default 0.1) of the trainval classes to ``val`` (``val_fraction=0`` keeps
  none); ``released`` takes Reed et al.'s own ``trainclasses.txt`` / ``valclasses.txt``, which
  must split ``trainvalclasses.txt`` exactly (CUB: 100 / 50). Published numbers then train on
  every trainval class: ``experiments.<name>.retrain_on_trainval`` retrains on train + val for the
  epoch count selected on val.

``reed-cub`` finds the image of ``text_c10/<class_dir>/<name>.txt`` at
``images/<class_dir>/<name>.jpg`` (CUB-200-2011's own ``images/`` folder); ``reed-flowers`` at
``jpg/<name>.jpg`` (Oxford-102's flat ``jpg/`` folder). ``image_id`` is ``<class_dir>/<name>``,
the identity is the class folder name, and caption ``k`` gets ``text_id = "<image_id>#<k>"``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from softref.data.common import (
    Adapter,
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_duplicates,
    frame,
    join_rel,
    quote,
    read_lines,
    require_file,
    resolve_folder,
)
from softref.data.manifest import IMAGE_COLUMNS, TEXT_COLUMNS
from softref.data.person import carve_val_identities

__all__ = ["REED_SPLIT_FILES", "REED_VAL_FILES", "VAL_CLASSES", "reed_adapter"]

REED_SPLIT_FILES = {"train": "trainvalclasses.txt", "test": "testclasses.txt"}
#: Reed et al.'s own split of the trainval classes into train and val (option ``val_classes: released``).
REED_VAL_FILES = {"train": "trainclasses.txt", "val": "valclasses.txt"}
VAL_CLASSES = ("carved", "released")

logger = logging.getLogger(__name__)


def _class_split(folder: Path, fmt: str) -> dict[str, str]:
    """class folder name -> split, from the two class lists."""
    split_of: dict[str, str] = {}
    where_of: dict[str, str] = {}
    for split, fname in REED_SPLIT_FILES.items():
        path = require_file(folder / fname, fmt, "class list")
        names: list[str] = []
        places: list[str] = []
        for n, line in enumerate(read_lines(path), 1):
            if not line.strip():
                continue
            cls = line.strip()
            names.append(cls)
            places.append(f"line {n}")
            if cls in split_of and split_of[cls] != split:
                raise AnnotationError(
                    f"{fmt}: class {cls!r} is in both {where_of[cls]} and {fname} line {n}; "
                    "expected disjoint zero-shot splits"
                )
            split_of[cls] = split
            where_of[cls] = f"{fname} line {n}"
        check_duplicates(names, places, "class", fname)
    return split_of


def _class_list(folder: Path, fname: str, fmt: str) -> list[str]:
    """The class names of one list file, one per line (blank lines skipped; duplicates refused)."""
    path = require_file(folder / fname, fmt, "class list")
    names, places = [], []
    for n, line in enumerate(read_lines(path), 1):
        if line.strip():
            names.append(line.strip())
            places.append(f"line {n}")
    check_duplicates(names, places, "class", fname)
    return names


def _released_val(folder: Path, fmt: str, trainval: list[str]) -> set[str]:
    """The val classes of Reed et al.'s ``valclasses.txt``, checked: with ``trainclasses.txt`` it
    must split the trainval classes exactly."""
    train, val = (_class_list(folder, REED_VAL_FILES[s], fmt) for s in ("train", "val"))
    both = sorted(set(train) & set(val))
    if both:
        raise AnnotationError(f"{fmt}: {len(both)} class(es) in both {REED_VAL_FILES['train']} and "
                              f"{REED_VAL_FILES['val']}: {quote(both)}")
    lacking, extra = sorted(set(trainval) - set(train) - set(val)), sorted((set(train) | set(val)) - set(trainval))
    if lacking or extra:
        raise AnnotationError(
            f"{fmt}: {REED_VAL_FILES['train']} and {REED_VAL_FILES['val']} expected to split "
            f"{REED_SPLIT_FILES['train']} exactly; trainval classes in neither: {quote(lacking) or 'none'}; "
            f"listed but not trainval: {quote(extra) or 'none'}"
        )
    return set(val)


def _val_split(folder: Path, fmt: str, split_of: dict[str, str], how: str, fraction: float,
               seed: int) -> dict[str, str]:
    """``split_of`` with the val classes (``val_classes``: carved or released) moved to ``val``."""
    trainval = [c for c, s in split_of.items() if s == "train"]
    if how == "released":
        val = _released_val(folder, fmt, trainval)
    elif how == "carved":
        # The zero-shot split has no val: carve val *classes* from trainval (never from test), so
        # model selection sees unseen classes as the test does.
        val = carve_val_identities(trainval, fraction, seed)
    else:
        raise ValueError(f"{fmt}: val_classes expected one of {list(VAL_CLASSES)}, found {how!r}")
    if val:
        logger.info("%s: %d of %d trainval classes are val (%s)", fmt, len(val), len(trainval),
                    REED_VAL_FILES["val"] if how == "released" else f"carved, fraction {fraction}, seed {seed}")
    return {c: ("val" if c in val else s) for c, s in split_of.items()}


def reed_adapter(fmt: str, image_dir: str, class_subdirs: bool) -> Adapter:
    """An adapter for Reed et al.'s captions whose images lie in ``image_dir`` (per class folder
    when ``class_subdirs``)."""

    def read_reed(
        root: Path,
        annotations: PathLike | None = None,
        *,
        image_dir: str = image_dir,
        image_ext: str = ".jpg",
        captions_per_image: int | None = 10,
        val_fraction: float = 0.1,
        val_seed: int = 0,
        val_classes: str = "carved",
    ) -> AdapterOutput:
        folder = resolve_folder(root, annotations, fmt)
        split_of = _val_split(folder, fmt, _class_split(folder, fmt), val_classes, val_fraction, val_seed)
        text_root = folder / "text_c10"
        if not text_root.is_dir():
            raise FileNotFoundError(f"{fmt}: caption folder not found: {text_root}")
        class_dirs = sorted(p.name for p in text_root.iterdir() if p.is_dir())
        unsplit = [c for c in class_dirs if c not in split_of]
        if unsplit:
            raise AnnotationError(
                f"{fmt}: {len(unsplit)} class folder(s) of {text_root} are in neither "
                f"{' nor '.join(REED_SPLIT_FILES.values())}, so they have no split: "
                f"{quote(unsplit)}"
            )
        absent = [c for c in split_of if c not in class_dirs]
        if absent:
            raise FileNotFoundError(
                f"{fmt}: {len(absent)} listed class(es) have no caption folder under "
                f"{text_root}: {quote(absent)}"
            )
        image_rows: list[tuple[str, ...]] = []
        text_rows: list[tuple[str, ...]] = []
        for cls in class_dirs:
            split = split_of[cls]
            for path in sorted((text_root / cls).glob("*.txt")):
                captions = [line for line in read_lines(path) if line.strip()]
                if captions_per_image is not None and len(captions) != captions_per_image:
                    raise AnnotationError(
                        f"{fmt}: {cls}/{path.name} has {len(captions)} caption(s), expected "
                        f"{captions_per_image} (one per line; pass captions_per_image=None to "
                        "accept any number)"
                    )
                image_id = f"{cls}/{path.stem}"
                image = join_rel(image_dir, cls if class_subdirs else "", path.stem + image_ext)
                image_rows.append((image_id, image, cls, split))
                text_rows.extend(
                    (f"{image_id}#{k}", image_id, cls, caption, split)
                    for k, caption in enumerate(captions)
                )
        check_duplicates(
            [r[1] for r in image_rows], [f"text_c10/{r[0]}.txt" for r in image_rows],
            "image path", fmt,
        )
        return AdapterOutput(
            images=frame(image_rows, IMAGE_COLUMNS),
            texts=frame(text_rows, TEXT_COLUMNS),
            annotations=folder / REED_SPLIT_FILES["test"],
        )

    read_reed.__name__ = read_reed.__qualname__ = "read_" + fmt.replace("-", "_")
    read_reed.__doc__ = (
        f"Read Reed et al.'s captions with images under {image_dir}/"
        f"{'<class_dir>/' if class_subdirs else ''}; see the module docstring.\n\n"
        "``annotations`` is the folder holding ``text_c10/`` and the class lists (default the\n"
        "root); ``image_dir`` and ``image_ext`` place the images; ``captions_per_image`` is the\n"
        "number of captions every file must hold (None: any); ``val_classes`` picks the val\n"
        "classes for model selection: ``carved`` (``val_fraction`` of the trainval classes, seeded\n"
        "by ``val_seed``; 0 keeps none) or ``released`` (trainclasses.txt / valclasses.txt)."
    )
    return read_reed
