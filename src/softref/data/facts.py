"""The demo's facts: what a synthetic image shows, what a caption says, and which captions are true.

A *fact* is a named property with a finite domain of values (:data:`FACT_DOMAINS`). The six
*figure* facts are a demo identity's attributes (:data:`FIGURE_FACTS`: the colours of hat, top,
bottom and shoes, the emblem's shape, the accessory); the six *scene* facts
(:data:`SCENE_FACTS`) are what a COCO-style image adds around its figure: the background's
kind and colour, the figure's position and size, and a second object and its colour.

An image *shows* a value for each of its facts (a COCO-style scene shows all twelve, a person
crop the six figure facts); a caption *mentions* some facts, each with a value. **A caption is
true of an image when every fact it mentions has the same value in the image** (a fact the
image does not show makes it false). This is the demo's ground truth: :func:`truth_matrix`
evaluates it for many captions and images at once, :func:`eccv_ground_truth` writes it in ECCV
Caption's layout, :func:`false_negative_stats` counts the captions true of more than their own
image.

Facts travel as plain mappings ``{fact: value}``; :func:`fact_codes` turns them into integer
codes (value index, ``-1`` where a fact is absent) and :func:`one_hot` into the one-hot-per-fact
vectors of the ``oracle-attributes`` teacher. The generator writes every image's and caption's
facts to a sidecar JSON (:data:`FACT_TABLE_FORMAT`), read back with :class:`FactTable`::

    {"format": "softref-oracle-attributes/1",
     "facts": [{"name": "hat", "values": ["red", ...]}, ...],
     "images": {"<path relative to the sidecar's folder>": {fact: value, ...}, ...},
     "captions": {"<caption text as annotated>": {fact: value, ...}, ...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ACCESSORIES",
    "ATTRIBUTES",
    "BACKGROUNDS",
    "BACKGROUND_COLOURS",
    "COLOURS",
    "FACTS",
    "FACT_DOMAINS",
    "FACT_TABLE_FORMAT",
    "FIGURE_FACTS",
    "FactError",
    "FactTable",
    "OBJECTS",
    "PARTS",
    "POSITIONS",
    "SCENE_FACTS",
    "SHAPES",
    "SIZES",
    "eccv_ground_truth",
    "fact_codes",
    "false_negative_stats",
    "fact_table_json",
    "one_hot",
    "truth_matrix",
]

COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
ACCESSORIES: tuple[str, ...] = ("bag", "glasses", "umbrella", "none")
PARTS: tuple[str, ...] = ("hat", "top", "bottom", "shoes")
ATTRIBUTES: tuple[str, ...] = PARTS + ("emblem", "accessory")
FIGURE_FACTS = ATTRIBUTES

# Background colours are muted and share no name with the figure's colours, so a figure never
# vanishes into a background of its own colour and a colour word names one kind of thing.
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered")
BACKGROUND_COLOURS: tuple[str, ...] = ("grey", "brown", "pink", "teal", "beige", "olive")
POSITIONS: tuple[str, ...] = ("left", "centre", "right")
SIZES: tuple[str, ...] = ("small", "large")
OBJECTS: tuple[str, ...] = ("ball", "box", "cone")
SCENE_FACTS: tuple[str, ...] = (
    "background", "background_colour", "position", "size", "object", "object_colour",
)

FACT_DOMAINS: dict[str, tuple[str, ...]] = {
    **{part: COLOURS for part in PARTS},
    "emblem": SHAPES,
    "accessory": ACCESSORIES,
    "background": BACKGROUNDS,
    "background_colour": BACKGROUND_COLOURS,
    "position": POSITIONS,
    "size": SIZES,
    "object": OBJECTS,
    "object_colour": COLOURS,
}
FACTS: tuple[str, ...] = tuple(FACT_DOMAINS)

FACT_TABLE_FORMAT = "softref-oracle-attributes/1"
# Captions per block of truth_matrix: bounds its (block, images, facts) temporary.
_TRUTH_BLOCK = 512


class FactError(ValueError):
    """A fact, value, image or caption that the fact table does not know."""


def fact_codes(facts: Sequence[Mapping[str, str]], where: str = "facts") -> np.ndarray:
    """(N, len(FACTS)) int16: the index of each fact's value in its domain, -1 where absent.

    Raises FactError naming the row, the fact and the value for an unknown fact or value.
    """
    codes = np.full((len(facts), len(FACTS)), -1, dtype=np.int16)
    index = {name: {v: k for k, v in enumerate(values)} for name, values in FACT_DOMAINS.items()}
    column = {name: j for j, name in enumerate(FACTS)}
    for row, mapping in enumerate(facts):
        for name, value in mapping.items():
            if name not in column:
                raise FactError(f"{where}[{row}]: unknown fact {name!r}; expected one of {list(FACTS)}")
            if value not in index[name]:
                raise FactError(
                    f"{where}[{row}]: fact {name!r} has value {value!r}; expected one of "
                    f"{list(FACT_DOMAINS[name])}"
                )
            codes[row, column[name]] = index[name][value]
    return codes


def truth_matrix(caption_codes: np.ndarray, image_codes: np.ndarray) -> np.ndarray:
    """(C, I) bool: caption c is true of image i (every fact c mentions has that value in i).

    Both arguments are :func:`fact_codes` arrays: -1 in a caption row means "not mentioned"
    (any value is fine), -1 in an image row means "not shown" (no mentioned value matches it).
    """
    caption_codes = np.asarray(caption_codes)
    image_codes = np.asarray(image_codes)
    if caption_codes.ndim != 2 or image_codes.ndim != 2 or caption_codes.shape[1] != image_codes.shape[1]:
        raise ValueError(
            f"truth_matrix: expected (C, F) and (I, F) code arrays, got {caption_codes.shape} and "
            f"{image_codes.shape}"
        )
    out = np.empty((caption_codes.shape[0], image_codes.shape[0]), dtype=bool)
    for start in range(0, caption_codes.shape[0], _TRUTH_BLOCK):
        block = caption_codes[start : start + _TRUTH_BLOCK, None, :]
        agree = (block < 0) | (block == image_codes[None, :, :])
        out[start : start + _TRUTH_BLOCK] = agree.all(axis=2)
    return out


def one_hot(codes: np.ndarray) -> np.ndarray:
    """(N, sum of domain sizes) float32: one block per fact (in :data:`FACTS` order), a 1 at the
    value's position, an all-zero block where the fact is absent (-1)."""
    codes = np.asarray(codes)
    sizes = [len(FACT_DOMAINS[name]) for name in FACTS]
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"one_hot: expected (N, {len(sizes)}) codes, got shape {codes.shape}")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((codes.shape[0], int(sum(sizes))), dtype=np.float32)
    rows, cols = np.nonzero(codes >= 0)
    out[rows, offsets[cols] + codes[rows, cols]] = 1.0
    return out


def eccv_ground_truth(
    truth: np.ndarray, caption_ids: Sequence[int], image_ids: Sequence[int]
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """ECCV Caption's two positive lists from a (C, I) truth matrix: ``(image_to_caption,
    caption_to_image)``, keyed by the id as a string (the JSON files' keys), ids ascending; every
    image and caption is a query, its own pair included (as in ECCV Caption's files)."""
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != (len(caption_ids), len(image_ids)):
        raise ValueError(f"eccv_ground_truth: truth has shape {truth.shape}, expected "
                         f"({len(caption_ids)}, {len(image_ids)})")
    captions = np.asarray(caption_ids, dtype=np.int64)
    images = np.asarray(image_ids, dtype=np.int64)
    image_to_caption = {str(int(images[i])): sorted(captions[truth[:, i]].tolist()) for i in range(len(images))}
    caption_to_image = {str(int(captions[c])): sorted(images[truth[c]].tolist()) for c in range(len(captions))}
    return image_to_caption, caption_to_image


def false_negative_stats(truth: np.ndarray, own_image: Sequence[int],
                         mentions: Sequence[int] | None = None) -> dict[str, Any]:
    """How many captions are true of images other than their own, from a (C, I) truth matrix.

    ``own_image[c]`` is the column of caption c's annotated image; it must be true (a caption is
    always true of its own image). ``false_negative_rate`` is the share of captions true of at
    least one other image: the captions for which image-level ground truth misses positives.
    With ``mentions`` (how many facts each caption states), ``by_facts_mentioned`` breaks the
    count down by that number.
    """
    truth = np.asarray(truth, dtype=bool)
    own = np.asarray(own_image, dtype=np.int64)
    if own.shape != (truth.shape[0],):
        raise ValueError(f"false_negative_stats: own_image has {own.shape[0]} entries, expected {truth.shape[0]}")
    if truth.shape[0] and not truth[np.arange(truth.shape[0]), own].all():
        bad = int(np.flatnonzero(~truth[np.arange(truth.shape[0]), own])[0])
        raise ValueError(f"false_negative_stats: caption row {bad} is not true of its own image (column {own[bad]})")
    per_caption = truth.sum(axis=1)
    per_image = truth.sum(axis=0)
    others = int((per_caption > 1).sum())
    breakdown = {}
    if mentions is not None:
        mentions = np.asarray(mentions)
        for k in sorted(set(mentions.tolist())):
            rows = mentions == k
            breakdown[str(k)] = {"captions": int(rows.sum()), "captions_true_of_other_images": int((per_caption[rows] > 1).sum())}
    return {
        "images": int(truth.shape[1]),
        "captions": int(truth.shape[0]),
        "captions_true_of_other_images": others,
        "false_negative_rate": others / truth.shape[0] if truth.shape[0] else 0.0,
        "extra_positive_pairs": int(per_caption.sum() - truth.shape[0]),
        "images_per_caption": _summary(per_caption),
        "captions_per_image": _summary(per_image),
        **({"by_facts_mentioned": breakdown} if mentions is not None else {}),
    }


def _summary(counts: np.ndarray) -> dict[str, float]:
    if not len(counts):
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0}
    return {
        "mean": round(float(counts.mean()), 4),
        "median": float(np.median(counts)),
        "p90": float(np.percentile(counts, 90)),
        "max": int(counts.max()),
    }


def fact_table_json(images: Mapping[str, Mapping[str, str]], captions: Mapping[str, Mapping[str, str]]) -> str:
    """The sidecar JSON text (sorted keys: same facts, same bytes); see the module docstring."""
    fact_codes(list(images.values()), "images")
    fact_codes(list(captions.values()), "captions")
    data = {
        "format": FACT_TABLE_FORMAT,
        "facts": [{"name": name, "values": list(FACT_DOMAINS[name])} for name in FACTS],
        "images": {key: dict(value) for key, value in images.items()},
        "captions": {key: dict(value) for key, value in captions.items()},
    }
    return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class FactTable:
    """The facts of every demo image (by path) and caption (by text), read from the sidecar.

    Image keys are paths relative to the sidecar's folder, so one table serves every dataset
    under it (``coco/images/...``, ``person/imgs/...``).
    """

    path: Path
    images: Mapping[str, Mapping[str, str]]
    captions: Mapping[str, Mapping[str, str]]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FactTable:
        """Read and check a sidecar: its format tag and that its fact vocabulary is this module's."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fact table not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FactError(f"{path}: not a JSON fact table ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FACT_TABLE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise FactError(f"{path}: expected format {FACT_TABLE_FORMAT!r}, found {found!r}")
        vocabulary = [{"name": n, "values": list(FACT_DOMAINS[n])} for n in FACTS]
        if data.get("facts") != vocabulary:
            raise FactError(f"{path}: its fact vocabulary differs from softref.data.facts.FACT_DOMAINS; "
                            "regenerate it with this version of softref")
        for key in ("images", "captions"):
            if not isinstance(data.get(key), dict):
                raise FactError(f"{path}: {key!r} must be an object, found {type(data.get(key)).__name__}")
        return cls(path=path, images=data["images"], captions=data["captions"])

    def image_key(self, image_path: str | os.PathLike[str]) -> str:
        """The key of an image file: its path relative to the sidecar's folder, with ``/``."""
        base = self.path.resolve().parent
        rel = os.path.relpath(Path(image_path).resolve(), base)
        if rel.startswith(".."):
            raise FactError(f"image {image_path} is not under the fact table's folder {base} ({self.path})")
        return Path(rel).as_posix()

    def image_codes(self, image_paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """:func:`fact_codes` of image files; FactError naming the first path the table lacks."""
        facts = []
        for image_path in image_paths:
            key = self.image_key(image_path)
            if key not in self.images:
                raise FactError(f"image {image_path} (key {key!r}) is not in the fact table {self.path}")
            facts.append(self.images[key])
        return fact_codes(facts, f"{self.path} images")

    def caption_codes(self, captions: Sequence[str]) -> np.ndarray:
        """:func:`fact_codes` of captions (as annotated); FactError naming the first one the table lacks."""
        facts = []
        for caption in captions:
            if caption not in self.captions:
                raise FactError(f"caption {caption!r} is not in the fact table {self.path}")
            facts.append(self.captions[caption])
        return fact_codes(facts, f"{self.path} captions")
