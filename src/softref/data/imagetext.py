"""Adapters of the image-text retrieval sets (MSCOCO, Flickr30K) and of ECCV Caption.

``karpathy``
    Karpathy-split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_f8k.json``):
    ``{"images": [{"filepath"?, "filename", "imgid", "cocoid"?, "split", "sentences":
    [{"raw", "sentid", ...}]}], "dataset": ...}``. An image's path is ``filepath/filename``
    when the record has ``filepath`` (COCO: ``val2014/...``), else ``image_dir/filename``
    (option ``image_dir``, default ``"images"``; Flickr30K usually needs
    ``image_dir="flickr30k-images"``). ``restval`` counts as ``train``. ``image_id`` is the
    ``cocoid`` when present, else the ``imgid``; the identity is the image itself (option
    ``identity_pattern``: a regex whose first group, searched in the file name, is the
    identity instead); ``text_id``
    is the ``sentid`` (for COCO, the COCO caption annotation id); the caption is ``raw``.
``albef``
    ALBEF-style files ``<prefix>_train.json`` (a flat list of ``{"caption", "image",
    "image_id"}``) and ``<prefix>_val.json`` / ``<prefix>_test.json`` (lists of ``{"image",
    "caption": [...]}``), ``prefix`` being ``coco`` or ``flickr30k``. ``image_id`` is the
    ``image`` path as written (unique across the three files); the path is
    ``image_dir/image``; the identity is the image; the k-th caption of an image (in file order)
    gets ``text_id = "<image>#<k>"``.
``cusa-json``
    The CUSA public code's ``new_{train,val,test}.json``: flat lists of ``{"image_path",
    "caption", "image_id"}``. ``image_id`` is the record's ``image_id``; the path is
    ``image_path`` relative to the folder of the JSON files; the k-th caption of an image gets
    ``text_id = "<image_id>#<k>"``.
``eccv``
    ECCV Caption (the ``eccv_caption`` package): the MSCOCO 5K test of the Karpathy
    ``dataset_coco.json`` (test split only), its captions restricted to the 25,000 caption ids
    ECCV Caption evaluates, and ``positives.parquet`` with ECCV Caption's extra positives (its
    verified image-caption matches that are not the annotated pair). ECCV Caption keys its
    annotations by COCO image id and COCO caption id, which are this manifest's ``image_id``
    (``cocoid``) and ``text_id`` (``sentid``).
"""

from __future__ import annotations

import dataclasses

import importlib.util
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softref.data.common import (
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_duplicates,
    check_splits_option,
    frame,
    id_str,
    join_rel,
    load_json,
    load_json_list,
    quote,
    relative_image,
    relative_to_root,
    require,
    require_file,
    resolve_annotations,
    resolve_folder,
    text,
    under,
)
from softref.data.manifest import IMAGE_COLUMNS, POSITIVE_COLUMNS, TEXT_COLUMNS

__all__ = [
    "KARPATHY_FILES",
    "ALBEF_PREFIXES",
    "ECCV_FILES",
    "EccvAnnotations",
    "load_eccv_annotations",
    "read_karpathy",
    "read_albef",
    "read_cusa_json",
    "read_eccv",
]

logger = logging.getLogger("softref.data.adapters")

IMAGE_TEXT_SPLITS = ("train", "val", "test")

# ---------------------------------------------------------------------------------------------
# Karpathy JSON (MSCOCO, Flickr30K, Flickr8K)
# ---------------------------------------------------------------------------------------------

KARPATHY_FILES = ("dataset_coco.json", "dataset_flickr30k.json", "dataset_f8k.json")
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _read_karpathy(
    root: Path, annotations: PathLike | None, image_dir: str, candidates: Sequence[str], fmt: str
) -> AdapterOutput:
    path = resolve_annotations(root, annotations, candidates, fmt)
    name = path.name
    data = load_json(path)
    records = require(data, "images", "the top level", name)
    if not isinstance(records, list):
        raise AnnotationError(f"{name}: 'images' must be a list, found {type(records).__name__}")

    image_rows: list[tuple[str, ...]] = []
    text_rows: list[tuple[str, ...]] = []
    image_places: list[str] = []
    text_places: list[str] = []
    for i, rec in enumerate(records):
        where = f"images[{i}]"
        filename = text(require(rec, "filename", where, name), f"{where}.filename", name)
        imgid = id_str(require(rec, "imgid", where, name), f"{where}.imgid", name)
        raw_split = require(rec, "split", where, name)
        sentences = require(rec, "sentences", where, name)
        if raw_split not in _KARPATHY_SPLITS:
            raise AnnotationError(
                f"{name}: {where}.split is {raw_split!r}, expected one of "
                f"{sorted(_KARPATHY_SPLITS)}"
            )
        split = _KARPATHY_SPLITS[raw_split]
        if "cocoid" in rec:
            image_id = id_str(rec["cocoid"], f"{where}.cocoid", name)
        else:
            image_id = imgid
        if "filepath" in rec:
            folder = text(rec["filepath"], f"{where}.filepath", name)
        else:
            folder = image_dir
        image_path = f"{folder}/{filename}" if folder else filename
        image_rows.append((image_id, image_path, image_id, split))
        image_places.append(where)

        if not isinstance(sentences, list):
            raise AnnotationError(
                f"{name}: {where}.sentences must be a list, found {type(sentences).__name__}"
            )
        sentids: list[str] = []
        for k, sent in enumerate(sentences):
            swhere = f"{where}.sentences[{k}]"
            raw = text(require(sent, "raw", swhere, name), f"{swhere}.raw", name)
            sentid = id_str(require(sent, "sentid", swhere, name), f"{swhere}.sentid", name)
            if "imgid" in sent and str(sent["imgid"]) != imgid:
                raise AnnotationError(
                    f"{name}: {swhere}.imgid is {sent['imgid']!r}, expected the record's imgid "
                    f"{imgid}"
                )
            sentids.append(sentid)
            text_rows.append((sentid, image_id, image_id, raw, split))
            text_places.append(swhere)
        if "sentids" in rec:
            listed = rec["sentids"]
            if not isinstance(listed, list) or [str(s) for s in listed] != sentids:
                raise AnnotationError(
                    f"{name}: {where}.sentids is {listed!r}, expected the sentences' sentids "
                    f"{[int(s) if s.isdigit() else s for s in sentids]}"
                )

    check_duplicates([r[0] for r in image_rows], image_places, "image id", name)
    check_duplicates([r[0] for r in text_rows], text_places, "sentid", name)
    return AdapterOutput(
        images=frame(image_rows, IMAGE_COLUMNS),
        texts=frame(text_rows, TEXT_COLUMNS),
        annotations=path,
    )


def read_karpathy(
    root: Path,
    annotations: PathLike | None = None,
    *,
    image_dir: str = "images",
    identity_pattern: str | None = None,
) -> AdapterOutput:
    """Read a Karpathy-split JSON; see the module docstring for the mapping.

    ``image_dir`` is the folder (relative to ``root``) holding the images of records without
    ``filepath`` (Flickr30K, Flickr8K). ``identity_pattern``: a regular expression searched in
    each image's file name whose first group is the image's identity (the demo's
    ``^id(\\d+)_`` groups the renderings of one synthetic identity); by default each image is
    its own identity, as in MSCOCO and Flickr30K. A file name it does not match is an error.
    """
    out = _read_karpathy(root, annotations, image_dir, KARPATHY_FILES, "karpathy")
    if identity_pattern is None:
        return out
    try:
        pattern = re.compile(identity_pattern)
    except re.error as err:
        raise ValueError(f"karpathy: option identity_pattern {identity_pattern!r} is not a regular expression ({err})") from None
    if pattern.groups < 1:
        raise ValueError(f"karpathy: option identity_pattern {identity_pattern!r} needs a group (the identity)")
    identity_of: dict[str, str] = {}
    for image_id, path in zip(out.images["image_id"], out.images["path"]):
        match = pattern.search(Path(path).name)
        if match is None or not match.group(1):
            raise AnnotationError(
                f"karpathy: image {image_id!r} ({path}): identity_pattern {identity_pattern!r} does not "
                f"match its file name {Path(path).name!r}"
            )
        identity_of[image_id] = match.group(1)
    images = out.images.assign(identity=[identity_of[i] for i in out.images["image_id"]])
    texts = out.texts.assign(identity=[identity_of[i] for i in out.texts["image_id"]])
    return dataclasses.replace(out, images=images, texts=texts)


# ---------------------------------------------------------------------------------------------
# Captions grouped per image (ALBEF, CUSA JSON)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Images:
    """Images and captions gathered over several files, with where each was seen."""

    rows: dict[str, tuple[str, str, str]]  # image_id -> (path, split, place)
    captions: dict[str, list[tuple[str, str]]]  # image_id -> [(caption, place)]

    @classmethod
    def empty(cls) -> _Images:
        return cls({}, defaultdict(list))

    def add(self, image_id: str, path: str, split: str, place: str, name: str) -> None:
        """Register an image, or check that a repeated mention agrees with the first one."""
        seen = self.rows.get(image_id)
        if seen is None:
            self.rows[image_id] = (path, split, place)
            return
        if seen[1] != split:
            raise AnnotationError(
                f"{name}: image {image_id!r} appears in two splits: {seen[1]} ({seen[2]}) and "
                f"{split} ({place}); expected disjoint splits"
            )
        if seen[0] != path:
            raise AnnotationError(
                f"{name}: image id {image_id!r} names two images: {seen[0]!r} ({seen[2]}) and "
                f"{path!r} ({place})"
            )

    def output(self, annotations: Path) -> AdapterOutput:
        image_rows = [(i, p, i, s) for i, (p, s, _) in self.rows.items()]
        text_rows = [
            (f"{i}#{k}", i, i, caption, self.rows[i][1])
            for i, caps in self.captions.items()
            for k, (caption, _) in enumerate(caps)
        ]
        return AdapterOutput(
            images=frame(image_rows, IMAGE_COLUMNS),
            texts=frame(text_rows, TEXT_COLUMNS),
            annotations=annotations,
        )


# ---------------------------------------------------------------------------------------------
# ALBEF-style files
# ---------------------------------------------------------------------------------------------

ALBEF_PREFIXES = ("coco", "flickr30k")
_ALBEF_FILE = re.compile(r"^(?P<prefix>.+)_(?P<split>train|val|test)\.json$")


def _albef_location(
    root: Path, annotations: PathLike | None, prefix: str | None
) -> tuple[Path, str]:
    """The folder and prefix of the ALBEF files (see :func:`read_albef`)."""
    if annotations is not None and under(root, annotations).is_file():
        path = under(root, annotations)
        match = _ALBEF_FILE.match(path.name)
        if match is None:
            raise AnnotationError(
                f"albef: {path.name} is not named <prefix>_{{train,val,test}}.json"
            )
        if prefix is not None and prefix != match["prefix"]:
            raise ValueError(
                f"albef: prefix {prefix!r} disagrees with the annotation file {path.name}"
            )
        return path.parent, match["prefix"]
    if annotations is not None and not under(root, annotations).exists():
        raise FileNotFoundError(f"albef: annotations not found: {under(root, annotations)}")
    folder = resolve_folder(root, annotations, "albef")
    if prefix is not None:
        return folder, prefix
    present = [
        p for p in ALBEF_PREFIXES
        if any((folder / f"{p}_{s}.json").is_file() for s in IMAGE_TEXT_SPLITS)
    ]
    if not present:
        looked = [f"{p}_{s}.json" for p in ALBEF_PREFIXES for s in IMAGE_TEXT_SPLITS]
        raise FileNotFoundError(
            f"albef: no annotation file in {folder}; looked for {looked} "
            "(pass `annotations` or the `prefix` option to name others)"
        )
    if len(present) > 1:
        raise AnnotationError(
            f"albef: files of several datasets in {folder}: {present}; pass the `prefix` option "
            "to choose one"
        )
    return folder, present[0]


def read_albef(
    root: Path,
    annotations: PathLike | None = None,
    *,
    prefix: str | None = None,
    splits: Sequence[str] = IMAGE_TEXT_SPLITS,
    image_dir: str = "",
) -> AdapterOutput:
    """Read ALBEF-style ``<prefix>_{train,val,test}.json``; see the module docstring.

    Args:
        annotations: the folder holding the files (relative to ``root``; default ``root``), or
            one of the files, which then gives the folder and the prefix.
        prefix: ``coco``, ``flickr30k`` or another file prefix; by default the one prefix whose
            files are present.
        splits: which of ``train``, ``val``, ``test`` to read; each file must exist.
        image_dir: folder (relative to ``root``) the ``image`` paths are relative to.
    """
    chosen = check_splits_option(splits, IMAGE_TEXT_SPLITS, "albef")
    folder, prefix = _albef_location(root, annotations, prefix)
    files = {s: require_file(folder / f"{prefix}_{s}.json", "albef", f"{s} file") for s in chosen}
    gathered = _Images.empty()
    train_ids: dict[str, tuple[str, str]] = {}  # the train files' image_id -> (image, place)
    for split, path in files.items():
        name = path.name
        records = load_json_list(path)
        seen_here: dict[str, str] = {}
        for i, rec in enumerate(records):
            where = f"record [{i}]"
            place = f"{name} {where}"
            image = relative_image(require(rec, "image", where, name), f"{where}.image", name)
            captions = require(rec, "caption", where, name)
            if split == "train":
                caption = text(captions, f"{where}.caption", name)
                own_id = id_str(require(rec, "image_id", where, name), f"{where}.image_id", name)
                first = train_ids.setdefault(own_id, (image, place))
                if first[0] != image:
                    raise AnnotationError(
                        f"{name}: image_id {own_id!r} names two images: {first[0]!r} "
                        f"({first[1]}) and {image!r} ({where})"
                    )
                captions = [caption]
            else:
                if image in seen_here:
                    raise AnnotationError(
                        f"{name}: 1 duplicated image(s): {image!r} at {seen_here[image]}, {where}"
                    )
                seen_here[image] = where
                if not isinstance(captions, list):
                    raise AnnotationError(
                        f"{name}: {where}.caption must be a list of strings in a {split} file, "
                        f"found {type(captions).__name__}"
                    )
                captions = [text(c, f"{where}.caption[{k}]", name) for k, c in enumerate(captions)]
            gathered.add(image, join_rel(image_dir, image), split, place, name)
            gathered.captions[image].extend((c, place) for c in captions)
    # The train file's image_id must name one image only, both ways.
    by_image: dict[str, list[str]] = defaultdict(list)
    for own_id, (image, _) in train_ids.items():
        by_image[image].append(own_id)
    clash = {image: ids for image, ids in by_image.items() if len(ids) > 1}
    if clash:
        image, ids = next(iter(clash.items()))
        raise AnnotationError(
            f"{files['train'].name}: {len(clash)} image(s) carry several image_ids, expected one "
            f"each: {image!r} has {quote(ids)}"
        )
    return gathered.output(files.get("test", files[chosen[-1]]))


# ---------------------------------------------------------------------------------------------
# CUSA public code's new_{split}.json
# ---------------------------------------------------------------------------------------------


def read_cusa_json(
    root: Path, annotations: PathLike | None = None, *, splits: Sequence[str] = IMAGE_TEXT_SPLITS
) -> AdapterOutput:
    """Read the CUSA code's ``new_{train,val,test}.json``; see the module docstring.

    ``annotations`` is the folder holding the files (relative to ``root``; default ``root``);
    the ``image_path`` values are relative to it, as the CUSA code joins them.
    """
    chosen = check_splits_option(splits, IMAGE_TEXT_SPLITS, "cusa-json")
    folder = resolve_folder(root, annotations, "cusa-json")
    base = relative_to_root(root, folder)
    if base.startswith(".."):
        raise ValueError(f"cusa-json: the annotation folder {folder} must lie inside root {root}")
    files = {
        s: require_file(folder / f"new_{s}.json", "cusa-json", f"{s} file") for s in chosen
    }
    gathered = _Images.empty()
    for split, path in files.items():
        name = path.name
        for i, rec in enumerate(load_json_list(path)):
            where = f"record [{i}]"
            image_path = relative_image(
                require(rec, "image_path", where, name), f"{where}.image_path", name
            )
            caption = text(require(rec, "caption", where, name), f"{where}.caption", name)
            image_id = id_str(require(rec, "image_id", where, name), f"{where}.image_id", name)
            place = f"{name} {where}"
            gathered.add(image_id, join_rel(base, image_path), split, place, name)
            gathered.captions[image_id].append((caption, place))
    return gathered.output(files.get("test", files[chosen[-1]]))


# ---------------------------------------------------------------------------------------------
# ECCV Caption
# ---------------------------------------------------------------------------------------------

# The files of the eccv_caption package this adapter reads (under its `data/` folder).
ECCV_FILES = (
    "coco_test_ids.npy",
    "original_caption_to_image.json",
    "eccv_image_to_caption.json",
    "eccv_caption_to_image.json",
)


@dataclass(frozen=True)
class EccvAnnotations:
    """ECCV Caption's annotations, keyed by COCO image ids and COCO caption ids.

    Attributes:
        caption_ids: the 25,000 caption ids of the COCO 5K test ECCV Caption evaluates.
        caption_image: caption id -> its annotated COCO image id.
        image_to_caption: ECCV positives of the 1,261 image queries.
        caption_to_image: ECCV positives of the 1,332 caption queries.
        source: the folder the files were read from.
    """

    caption_ids: tuple[int, ...]
    caption_image: Mapping[int, int]
    image_to_caption: Mapping[int, tuple[int, ...]]
    caption_to_image: Mapping[int, tuple[int, ...]]
    source: Path


def eccv_data_dir() -> Path:
    """The ``data/`` folder of the installed ``eccv_caption`` package (not imported: importing
    it only warns about an optional JSON library)."""
    spec = importlib.util.find_spec("eccv_caption")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "eccv: the eccv_caption package is not installed (pip install eccv_caption==0.1.0); "
            "or pass the eccv_dir option naming a folder with its annotation files"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _int_lists(path: Path) -> dict[int, tuple[int, ...]]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{path.name}: the top level must be an object of id -> [ids], found "
            f"{type(data).__name__}"
        )
    out: dict[int, tuple[int, ...]] = {}
    for key, values in data.items():
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise AnnotationError(f"{path.name}: entry {key!r} must be a list of integer ids")
        try:
            out[int(key)] = tuple(values)
        except ValueError:
            raise AnnotationError(f"{path.name}: key {key!r} is not an integer id") from None
    return out


def load_eccv_annotations(eccv_dir: PathLike | None = None) -> EccvAnnotations:
    """Read ECCV Caption's annotations from ``eccv_dir`` (default: the installed package's)."""
    folder = Path(eccv_dir) if eccv_dir is not None else eccv_data_dir()
    for fname in ECCV_FILES:
        require_file(folder / fname, "eccv", "ECCV Caption annotation file")
    try:
        ids = np.load(folder / "coco_test_ids.npy", allow_pickle=False)
    except ValueError as exc:
        raise AnnotationError(f"coco_test_ids.npy: not a plain integer array ({exc})") from exc
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise AnnotationError(
            f"coco_test_ids.npy: expected a 1-d integer array, found shape {ids.shape} "
            f"dtype {ids.dtype}"
        )
    caption_image: dict[int, int] = {}
    for cid, images in _int_lists(folder / "original_caption_to_image.json").items():
        if len(images) != 1:
            raise AnnotationError(
                f"original_caption_to_image.json: caption {cid} lists {len(images)} images, "
                "expected 1"
            )
        caption_image[cid] = images[0]
    caption_ids = tuple(int(i) for i in ids)
    if len(set(caption_ids)) != len(caption_ids):
        raise AnnotationError(f"coco_test_ids.npy: caption ids repeat ({folder})")
    unpaired = sorted(set(caption_ids) ^ set(caption_image))
    if unpaired:
        raise AnnotationError(
            f"coco_test_ids.npy and original_caption_to_image.json must list the same caption "
            f"ids; {len(unpaired)} are in only one of them: {quote(unpaired)} ({folder})"
        )
    return EccvAnnotations(
        caption_ids=caption_ids,
        caption_image=caption_image,
        image_to_caption=_int_lists(folder / "eccv_image_to_caption.json"),
        caption_to_image=_int_lists(folder / "eccv_caption_to_image.json"),
        source=folder,
    )


def read_eccv(
    root: Path, annotations: PathLike | None = None, *, eccv_dir: PathLike | None = None
) -> AdapterOutput:
    """Read the COCO 5K test of ``dataset_coco.json`` with ECCV Caption's extra positives.

    Args:
        annotations: the Karpathy COCO file (default ``root/dataset_coco.json``).
        eccv_dir: folder with ECCV Caption's files (:data:`ECCV_FILES`), relative to ``root``
            unless absolute; default: the installed ``eccv_caption`` package's ``data/``, which
            holds them all (nothing is downloaded).

    The test split must hold exactly ECCV Caption's 5,000 images and every one of its 25,000
    caption ids, each with the same image; the Karpathy test captions ECCV Caption does not
    evaluate (beyond five per image) are left out. ECCV pairs naming a caption or image outside
    those are left out of the positives with a warning.
    """
    karpathy = _read_karpathy(root, annotations, "images", ("dataset_coco.json",), "eccv")
    name = karpathy.annotations.name
    ann = load_eccv_annotations(None if eccv_dir is None else under(root, eccv_dir))
    images = karpathy.images[karpathy.images["split"] == "test"].reset_index(drop=True)
    texts = karpathy.texts[karpathy.texts["split"] == "test"].reset_index(drop=True)
    image_of = dict(zip(texts["text_id"], texts["image_id"]))

    want_images = {str(i) for i in ann.caption_image.values()}
    have_images = set(images["image_id"])
    if want_images != have_images:
        lacking = sorted(want_images - have_images)
        extra = sorted(have_images - want_images)
        raise AnnotationError(
            f"{name}: the test split must hold ECCV Caption's {len(want_images)} COCO images "
            f"(cocoid); {len(lacking)} are missing (first {quote(lacking)}) and {len(extra)} "
            f"are not ECCV images (first {quote(extra)}); is this the Karpathy COCO file?"
        )
    keep = [str(c) for c in ann.caption_ids]
    lacking = [c for c in keep if c not in image_of]
    if lacking:
        raise AnnotationError(
            f"{name}: {len(lacking)} of ECCV Caption's {len(keep)} caption ids are not sentids "
            f"of the test split: {quote(lacking)}; is this the Karpathy COCO file?"
        )
    moved = [c for c in keep if image_of[c] != str(ann.caption_image[int(c)])]
    if moved:
        c = moved[0]
        raise AnnotationError(
            f"{name}: {len(moved)} caption(s) belong to another image than in ECCV Caption; "
            f"e.g. sentid {c} is on image {image_of[c]}, ECCV Caption says "
            f"{ann.caption_image[int(c)]}"
        )
    kept = texts["text_id"].isin(set(keep))
    if not kept.all():
        logger.info(
            "%s: keeping the %d captions ECCV Caption evaluates; leaving out %d further test "
            "caption(s) (sentids %s)", name, int(kept.sum()), int((~kept).sum()),
            quote(texts["text_id"][~kept].tolist()),
        )
    texts = texts[kept].reset_index(drop=True)

    pairs = {(str(c), str(i)) for i, caps in ann.image_to_caption.items() for c in caps}
    pairs |= {(str(c), str(i)) for c, imgs in ann.caption_to_image.items() for i in imgs}
    known_texts = set(texts["text_id"])
    outside = sorted(p for p in pairs if p[0] not in known_texts or p[1] not in have_images)
    if outside:
        logger.warning(
            "ECCV Caption (%s): %d pair(s) name a caption or image outside the %d-caption test "
            "set and are left out of the positives: (text_id, image_id) %s",
            ann.source, len(outside), len(known_texts),
            quote(outside),
        )
    extra_pairs = sorted(
        (t, i) for t, i in pairs
        if t in known_texts and i in have_images and image_of[t] != i
    )
    return AdapterOutput(
        images=images,
        texts=texts,
        annotations=karpathy.annotations,
        positives=frame(extra_pairs, POSITIVE_COLUMNS),
    )


def eccv_summary(ann: EccvAnnotations) -> dict[str, int]:
    """Sizes of ECCV Caption's annotations (for checks and logs)."""
    return {
        "caption_ids": len(ann.caption_ids),
        "images": len(set(ann.caption_image.values())),
        "image_queries": len(ann.image_to_caption),
        "caption_queries": len(ann.caption_to_image),
    }
