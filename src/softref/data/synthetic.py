"""Synthetic demo benchmark: a small, deterministic stand-in for the papers' datasets.

Identities are combinations of six attributes -- the colours of four parts (hat, top, bottom,
shoes; eight named colours), the shape of an emblem on the chest (circle, square, triangle,
star) and an accessory (bag, glasses, umbrella or none). No two identities share all six, but
many share some.

COCO-style images are *scenes*: an identity's figure plus six scene facts drawn per image (the
background's kind and colour, the figure's position and size, a second object and its colour;
:mod:`softref.data.facts`), distinct for every image, so a caption that mentions enough facts
has exactly one right image. Each caption states a random subset (two to seven) of its image's
twelve facts, so a vague caption is also true of other images: the false negatives CUSA's
soft labels target, now known exactly. The generator evaluates every test caption against
every test image and writes that ground truth in ECCV Caption's format. Person crops show only
the figure; their captions mention one to four (never all) of the identity's six attributes,
and relevance there is by identity: the incomplete descriptions MMRef's references target.

:func:`synthesize_demo` writes the benchmark under ``root`` in the real datasets' formats, so
the real adapters (:mod:`softref.data.adapters`) read it:

``coco/dataset_coco.json`` + ``coco/images/id<identity>_<n>.png``
    Karpathy-split JSON (``{"images": [{"filepath": "images", "filename", "imgid", "cocoid",
    "split", "sentids", "sentences": [{"raw", "tokens", "imgid", "sentid"}]}], "dataset":
    "coco"}``), square scenes with one figure each; about a third of the training images are
    marked ``restval``, as in the real file.
``coco/eccv/``
    The test split's ground truth in the ``eccv_caption`` package's layout, keyed by ``cocoid``
    and ``sentid``: ``coco_test_ids.npy`` (every test caption id), ``original_caption_to_image
    .json`` / ``original_image_to_caption.json`` (the annotated pairs) and
    ``eccv_caption_to_image.json`` / ``eccv_image_to_caption.json`` (every test image and
    caption is a query; its positives are all test items the caption is true of, its own pair
    included). The ``eccv`` adapter and the ``eccv`` protocol (``eccv_dir: eccv``) read them.
``coco/ground_truth_stats.json``
    Per split: images, captions, the captions true of more than their own image (the
    false-negative rate of image-level relevance) and how many images a caption is true of.
``oracle_attributes.json``
    The facts of every COCO-style and person image (keyed by path relative to ``root``) and of
    every caption (keyed by its text): the ``oracle-attributes`` teacher's input
    (:class:`softref.data.facts.FactTable`).
``person/reid_raw.json`` + ``person/imgs/demo/<id>/<n>.png``
    CUHK-PEDES-style list of ``{"split", "captions" (two per image), "id" (from 1),
    "file_path": "demo/<id>/<n>.png", "processed_tokens"}``; ``H x W`` crops of a standing figure.
``retrieval/<split>/<class>/<n>.png``
    Class folders for uni-modal image retrieval; a class is an identity (``<class>`` is its
    four-digit number) rendered in random scenes, and the train, val and test classes are
    disjoint (CUB's protocol).
``sts/pairs.tsv``
    Sentence pairs for semantic textual similarity: a header line ``sentence1<TAB>sentence2
    <TAB>score``, then one pair per line. Each sentence describes every attribute of an
    attribute set; the first set is a demo identity, the second is derived from it by changing
    ``6 - s`` of its attributes, and the score is ``5 * s / 6`` (in [0, 5], four decimals).

Splits are by identity (disjoint identities in train, val and test). Everything follows from
``seed`` through independent random streams (identities and splits, COCO-style, person,
retrieval, STS), so the same arguments give byte-identical files: PNGs carry no timestamps,
JSON is written with sorted keys and the ``.npy`` file holds a plain int64 array.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from softref.data.facts import (
    ACCESSORIES,
    ATTRIBUTES,
    BACKGROUND_COLOURS,
    BACKGROUNDS,
    COLOURS,
    FACT_DOMAINS,
    FACTS,
    OBJECTS,
    PARTS,
    POSITIONS,
    SCENE_FACTS,
    SHAPES,
    SIZES,
    eccv_ground_truth,
    fact_codes,
    fact_table_json,
    false_negative_stats,
    truth_matrix,
)
from softref.files import publish
from softref.runtime import progress_disabled

__all__ = [
    "PALETTE",
    "BACKGROUND_PALETTE",
    "COLOURS",
    "SHAPES",
    "ACCESSORIES",
    "PARTS",
    "ATTRIBUTES",
    "FACTS",
    "SCENE_FACTS",
    "CAPTION_FACT_COUNTS",
    "ORACLE_FILE",
    "Identity",
    "sample_identities",
    "assign_splits",
    "sample_scenes",
    "describe",
    "describe_scene",
    "tokenize",
    "synthesize_demo",
]

logger = logging.getLogger(__name__)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (240, 140, 25),
    "yellow": (235, 215, 40),
    "green": (40, 150, 60),
    "blue": (40, 75, 205),
    "purple": (135, 55, 165),
    "white": (242, 242, 242),
    "black": (25, 25, 25),
}
BACKGROUND_PALETTE: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "brown": (125, 85, 50),
    "pink": (225, 150, 175),
    "teal": (40, 135, 135),
    "beige": (215, 200, 160),
    "olive": (115, 115, 45),
}
if tuple(PALETTE) != COLOURS or tuple(BACKGROUND_PALETTE) != BACKGROUND_COLOURS:
    raise AssertionError("the palettes must name exactly softref.data.facts' colours, in order")
_DOMAINS = FACT_DOMAINS

# Independent random streams, so that e.g. more STS pairs do not change any image.
_STREAM_IDENTITIES, _STREAM_COCO, _STREAM_PERSON, _STREAM_RETRIEVAL, _STREAM_STS = range(5)

ORACLE_FILE = "oracle_attributes.json"
PERSON_CAPTIONS_PER_IMAGE = 2  # as in CUHK-PEDES


@dataclass(frozen=True)
class Identity:
    """One demo identity: a number (from 1) and its six attribute values."""

    number: int
    hat: str
    top: str
    bottom: str
    shoes: str
    emblem: str
    accessory: str

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


# ---------------------------------------------------------------------------------------------
# Identities and splits
# ---------------------------------------------------------------------------------------------


def sample_identities(num_identities: int, seed: int = 0) -> list[Identity]:
    """``num_identities`` distinct attribute combinations, numbered from 1."""
    radices = [len(_DOMAINS[a]) for a in ATTRIBUTES]
    total = math.prod(radices)
    if not 1 <= num_identities <= total:
        raise ValueError(f"num_identities must be in [1, {total}], got {num_identities}")
    codes = _rng(seed, _STREAM_IDENTITIES).choice(total, size=num_identities, replace=False)
    identities = []
    for number, code in enumerate(codes.tolist(), start=1):
        values = []
        for attr, radix in zip(ATTRIBUTES, radices):
            code, digit = divmod(code, radix)
            values.append(_DOMAINS[attr][digit])
        identities.append(Identity(number, *values))
    return identities


def assign_splits(
    identities: Sequence[Identity],
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[int, str]:
    """Identity number -> ``train`` / ``val`` / ``test``, disjoint, sizes from the fractions.

    A split with a positive fraction gets at least one identity.
    """
    if len(split_fractions) != 3 or any(f < 0 for f in split_fractions):
        raise ValueError(
            f"split_fractions must be three non-negative numbers (train, val, test), got "
            f"{tuple(split_fractions)}"
        )
    if not math.isclose(sum(split_fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_fractions must sum to 1, got {tuple(split_fractions)} "
                         f"(sum {sum(split_fractions)})")
    n = len(identities)
    f_train, f_val, f_test = split_fractions
    n_val = max(1, round(f_val * n)) if f_val > 0 else 0
    n_test = max(1, round(f_test * n)) if f_test > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1 or (f_train == 0 and n_train > 0):
        raise ValueError(
            f"{n} identities cannot be split as {tuple(split_fractions)}: "
            f"train {n_train}, val {n_val}, test {n_test}"
        )
    order = _rng(seed, _STREAM_IDENTITIES).permutation(n)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return {identities[i].number: s for i, s in zip(order.tolist(), splits)}


def sample_scenes(count: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """``count`` distinct scenes: each a value for every scene fact, uniformly drawn.

    Distinct within the call, so the renderings of one identity never show the same facts.
    """
    total = math.prod(len(_DOMAINS[f]) for f in SCENE_FACTS)
    if not 0 <= count <= total:
        raise ValueError(f"count must be in [0, {total}] (distinct scenes), got {count}")
    scenes: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    while len(scenes) < count:
        scene = {f: _pick(rng, _DOMAINS[f]) for f in SCENE_FACTS}
        key = tuple(scene.values())
        if key not in seen:
            seen.add(key)
            scenes.append(scene)
    return scenes


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

# (noun, plural): plural nouns take no article.
_NOUNS: dict[str, tuple[tuple[str, bool], ...]] = {
    "hat": (("hat", False), ("cap", False), ("beanie", False)),
    "top": (("shirt", False), ("top", False), ("jacket", False), ("sweater", False)),
    "bottom": (("trousers", True), ("pants", True), ("jeans", True)),
    "shoes": (("shoes", True), ("sneakers", True), ("boots", True)),
}
_EMBLEM_PHRASES = ("a {} emblem", "a {} logo on the chest", "a {}-shaped badge")
_ACCESSORY_PHRASES: dict[str, tuple[str, ...]] = {
    "bag": ("carrying a bag", "with a bag on the shoulder"),
    "glasses": ("wearing glasses", "with glasses on"),
    "umbrella": ("holding an umbrella", "with an umbrella"),
}
_SUBJECTS = ("A person", "Someone", "A pedestrian", "This person", "The individual", "A figure")
_VERBS = ("wearing", "in", "dressed in", "with")
# How many attributes a person caption mentions: 1 to 4, mostly 2 or 3.
_MENTION_COUNTS = (1, 2, 3, 4)
_MENTION_PROBS = (0.1, 0.3, 0.35, 0.25)

# Scene captions. The size is an adjective of the subject; the other scene facts are clauses.
_SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
_SIZE_NOUNS = ("person", "figure", "pedestrian")
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "standing on the left", "on the left side of the picture"),
    "centre": ("in the middle", "in the centre", "standing in the middle"),
    "right": ("on the right", "standing on the right", "on the right side of the picture"),
}
_BACKGROUND_NOUNS = ("background", "backdrop", "wall")
_BACKGROUND_LEADS = ("in front of", "against")
_OBJECT_NOUNS: dict[str, tuple[str, ...]] = {"ball": ("ball",), "box": ("box", "crate"), "cone": ("cone",)}
_UNNAMED_OBJECT = ("object", "thing")
_OBJECT_LEADS = ("next to", "beside", "near")
#: How many of its image's facts a COCO-style caption mentions, and how often: two to seven of
#: twelve. On the default demo this makes about half the test captions true of another image
#: too (``coco/ground_truth_stats.json``) while most detailed ones pin down one image.
CAPTION_FACT_COUNTS: dict[int, float] = {2: 0.1, 3: 0.2, 4: 0.25, 5: 0.2, 6: 0.15, 7: 0.1}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _mentionable(facts: Identity | Mapping[str, str]) -> list[str]:
    """The facts a caption may mention, in :data:`FACTS` order (an accessory 'none' is unsayable)."""
    attrs = facts.attributes() if isinstance(facts, Identity) else facts
    return [a for a in FACTS if a in attrs and not (a == "accessory" and attrs[a] == "none")]


def _figure_phrases(attrs: Mapping[str, str], mention: Sequence[str],
                    rng: np.random.Generator) -> tuple[list[str], str]:
    """The worn items (garments, emblem) and the accessory phrase for the figure facts of ``mention``."""
    worn: list[str] = []
    accessory = ""
    for attr in mention:
        value = attrs[attr]
        if attr in PARTS:
            noun, plural = _NOUNS[attr][int(rng.integers(len(_NOUNS[attr])))]
            worn.append(f"{value} {noun}" if plural else _article(f"{value} {noun}"))
        elif attr == "emblem":
            worn.append(_pick(rng, _EMBLEM_PHRASES).format(value))
        elif attr == "accessory":
            if value == "none":
                raise ValueError("the accessory 'none' cannot be mentioned")
            accessory = _pick(rng, _ACCESSORY_PHRASES[value])
        elif attr not in SCENE_FACTS:
            raise ValueError(f"unknown attribute {attr!r}; expected one of {list(FACTS)}")
    return worn, accessory


def _predicate(worn: Sequence[str], accessory: str, rng: np.random.Generator) -> str:
    """What follows the subject: `` wearing ... , <accessory>`` (empty when neither is mentioned)."""
    if worn:
        text = f" {_pick(rng, _VERBS)} {_join(worn)}"
        return text + (f", {accessory}" if accessory else "")
    return f" {accessory}" if accessory else ""


def describe(
    identity: Identity | Mapping[str, str], mention: Sequence[str], rng: np.random.Generator
) -> str:
    """A sentence mentioning exactly the attributes ``mention`` (in that order) of ``identity``."""
    attrs = identity.attributes() if isinstance(identity, Identity) else dict(identity)
    unknown = [a for a in mention if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attribute {unknown[0]!r}; expected one of {list(ATTRIBUTES)}")
    worn, accessory = _figure_phrases(attrs, mention, rng)
    if not worn and not accessory:
        raise ValueError("a description must mention at least one attribute")
    subject = _pick(rng, _SUBJECTS)
    return subject + _predicate(worn, accessory, rng) + "."


def _scene_clause(facts: Mapping[str, str], mention: set[str], clause: str,
                  rng: np.random.Generator) -> str:
    """One scene clause: ``position``, ``background`` (kind and/or colour) or ``object`` (kind and/or colour)."""
    if clause == "position":
        return _pick(rng, _POSITION_PHRASES[facts["position"]])
    if clause == "background":
        words = [facts[f] for f in ("background", "background_colour") if f in mention]
        noun = " ".join(words + [_pick(rng, _BACKGROUND_NOUNS)])
        return f"{_pick(rng, _BACKGROUND_LEADS)} {_article(noun)}"
    if "object" in mention:
        noun = _pick(rng, _OBJECT_NOUNS[facts["object"]])
    else:
        noun = _pick(rng, _UNNAMED_OBJECT)
    if "object_colour" in mention:
        noun = f"{facts['object_colour']} {noun}"
    return f"{_pick(rng, _OBJECT_LEADS)} {_article(noun)}"


def describe_scene(facts: Mapping[str, str], mention: Sequence[str], rng: np.random.Generator) -> str:
    """A sentence about a COCO-style scene that mentions exactly the facts ``mention`` of ``facts``.

    Grammar: ``<subject>[ <verb> <worn items>][, <accessory>][, <scene clause>]*.``; the subject
    carries the size (``A small figure``) when it is mentioned, the scene clauses (position;
    background kind and colour; second object kind and colour) follow in random order.
    """
    mentioned = set(mention)
    unknown = sorted(mentioned - set(FACTS))
    if unknown:
        raise ValueError(f"unknown fact {unknown[0]!r}; expected one of {list(FACTS)}")
    if not mentioned:
        raise ValueError("a description must mention at least one fact")
    worn, accessory = _figure_phrases(facts, [m for m in mention if m in ATTRIBUTES], rng)
    if "size" in mentioned:
        subject = f"A {_pick(rng, _SIZE_WORDS[facts['size']])} {_pick(rng, _SIZE_NOUNS)}"
    else:
        subject = _pick(rng, _SUBJECTS)
    clauses = [c for c, needs in (("position", {"position"}), ("background", {"background", "background_colour"}),
                                  ("object", {"object", "object_colour"})) if needs & mentioned]
    order = rng.permutation(len(clauses)).tolist()
    scene = "".join(f", {_scene_clause(facts, mentioned, clauses[i], rng)}" for i in order)
    return subject + _predicate(worn, accessory, rng) + scene + "."


def _caption(identity: Identity, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A person caption mentioning a random part (never all) of the identity's attributes, and
    the facts it mentions."""
    attrs = identity.attributes()
    candidates = _mentionable(attrs)
    k = int(rng.choice(_MENTION_COUNTS, p=_MENTION_PROBS))
    k = max(1, min(k, len(candidates) - 1))
    chosen = [candidates[i] for i in rng.choice(len(candidates), size=k, replace=False).tolist()]
    return describe(identity, chosen, rng), {a: attrs[a] for a in chosen}


def _scene_caption(facts: Mapping[str, str], rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A COCO-style caption mentioning :data:`CAPTION_FACT_COUNTS` of the scene's facts, and those facts."""
    candidates = _mentionable(facts)
    counts = list(CAPTION_FACT_COUNTS)
    k = int(rng.choice(counts, p=list(CAPTION_FACT_COUNTS.values())))
    k = max(1, min(k, len(candidates) - 1))
    chosen = [candidates[i] for i in rng.choice(len(candidates), size=k, replace=False).tolist()]
    return describe_scene(facts, chosen, rng), {f: facts[f] for f in chosen}


def tokenize(sentence: str) -> list[str]:
    """Lower-case word tokens, as in the Karpathy JSON ``tokens`` field."""
    return re.findall(r"[a-z]+", sentence.lower())


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_SKIN = ((241, 194, 155), (224, 172, 125), (198, 134, 90), (141, 85, 54), (92, 58, 38))
_BAG = (120, 75, 40)
_UMBRELLA = (70, 70, 85)
_GLASSES = (15, 15, 15)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted base colour with a gradient, stripes or a checkerboard on it."""
    base = rng.uniform(70, 200, size=3)
    amp = rng.uniform(10, 35)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle)
        delta = 2 * amp * t
    elif kind == 1:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        delta = amp * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    else:
        cell = int(rng.integers(4, 12))
        delta = amp * (((xx // cell + yy // cell) % 2) - 0.5)
    return np.clip(base[None, None, :] + delta[..., None], 0, 255).astype(np.uint8)


def _emblem(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
            colour: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=colour)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        draw.polygon(points, fill=colour)
    else:
        raise ValueError(f"unknown emblem shape {shape!r}; expected one of {list(SHAPES)}")


def _draw_figure(draw: ImageDraw.ImageDraw, ident: Identity, x0: float, y0: float,
                 w: float, h: float, rng: np.random.Generator) -> None:
    """A standing figure in the box (x0, y0, w, h), random pose and accessory side."""
    col = PALETTE
    cx = x0 + w / 2
    side = 1 if rng.random() < 0.5 else -1
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    arm_angle = rng.uniform(0.05, 0.5)
    spread = rng.uniform(0.0, 0.12) * w
    lean = rng.uniform(-0.05, 0.05) * w
    top_rgb = col[ident.top]
    bottom_rgb = col[ident.bottom]

    # Legs and hips.
    hip_y, foot_y = y0 + 0.58 * h, y0 + 0.9 * h
    leg_w = max(1, int(round(0.16 * w)))
    for s in (-1, 1):
        draw.line([(cx + s * 0.1 * w, hip_y), (cx + s * (0.1 * w + spread) + lean, foot_y)],
                  fill=bottom_rgb, width=leg_w)
    draw.rectangle((cx - 0.22 * w, hip_y - 0.03 * h, cx + 0.22 * w, hip_y + 0.05 * h),
                   fill=bottom_rgb)
    # Shoes.
    for s in (-1, 1):
        fx = cx + s * (0.1 * w + spread) + lean
        draw.ellipse((fx - 0.13 * w, foot_y - 0.01 * h, fx + 0.13 * w, foot_y + 0.05 * h),
                     fill=col[ident.shoes])
    # Arms, then torso over their roots.
    shoulder_y = y0 + 0.28 * h
    arm_len = 0.3 * h
    arm_w = max(1, int(round(0.1 * w)))
    hands = []
    for s in (-1, 1):
        sx = cx + s * 0.2 * w
        hx = sx + s * np.sin(arm_angle) * arm_len
        hy = shoulder_y + np.cos(arm_angle) * arm_len
        draw.line([(sx, shoulder_y), (hx, hy)], fill=top_rgb, width=arm_w)
        draw.ellipse((hx - 0.05 * w, hy - 0.05 * w, hx + 0.05 * w, hy + 0.05 * w), fill=skin)
        hands.append((hx, hy))
    draw.rectangle((cx - 0.22 * w, y0 + 0.25 * h, cx + 0.22 * w, hip_y), fill=top_rgb)
    # Emblem: white on dark tops, black on light ones.
    luminance = 0.299 * top_rgb[0] + 0.587 * top_rgb[1] + 0.114 * top_rgb[2]
    emblem_rgb = (15, 15, 15) if luminance > 140 else (245, 245, 245)
    _emblem(draw, ident.emblem, cx, y0 + 0.41 * h, min(0.14 * w, 0.08 * h), emblem_rgb)
    # Head and hat.
    head_cy, head_r = y0 + 0.16 * h, min(0.09 * h, 0.2 * w)
    draw.ellipse((cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r), fill=skin)
    hat_rgb = col[ident.hat]
    draw.rectangle((cx - 0.8 * head_r, y0 + 0.03 * h, cx + 0.8 * head_r, head_cy - 0.4 * head_r),
                   fill=hat_rgb)
    draw.rectangle((cx - 1.3 * head_r, head_cy - 0.55 * head_r, cx + 1.3 * head_r,
                    head_cy - 0.3 * head_r), fill=hat_rgb)
    # Accessory.
    if ident.accessory == "glasses":
        er = 0.3 * head_r
        for s in (-1, 1):
            ex = cx + s * 0.4 * head_r
            draw.ellipse((ex - er, head_cy - er, ex + er, head_cy + er), outline=_GLASSES,
                         width=max(1, int(round(0.12 * head_r))))
        draw.line([(cx - 0.1 * head_r, head_cy), (cx + 0.1 * head_r, head_cy)], fill=_GLASSES,
                  width=1)
    elif ident.accessory == "bag":
        bx = cx + side * 0.32 * w
        draw.line([(cx - side * 0.18 * w, shoulder_y), (bx, hip_y - 0.02 * h)], fill=_BAG,
                  width=max(1, int(round(0.04 * w))))
        draw.rectangle((bx - 0.14 * w, hip_y - 0.04 * h, bx + 0.14 * w, hip_y + 0.08 * h),
                       fill=_BAG)
    elif ident.accessory == "umbrella":
        hx, hy = hands[0] if side < 0 else hands[1]
        ur = 0.4 * w
        uy = y0 + 0.08 * h
        draw.line([(hx, hy), (hx, uy)], fill=_UMBRELLA, width=max(1, int(round(0.04 * w))))
        draw.pieslice((hx - ur, uy - ur, hx + ur, uy + ur), 180, 360, fill=_UMBRELLA)


def _finish(img: Image.Image, rng: np.random.Generator, occlusion_p: float,
            occlusion_frac: tuple[float, float]) -> Image.Image:
    """Random occlusion patch, then Gaussian pixel noise."""
    width, height = img.size
    if rng.random() < occlusion_p:
        ow = rng.uniform(*occlusion_frac) * width
        oh = rng.uniform(*occlusion_frac) * height
        ox = rng.uniform(0, width - ow)
        oy = rng.uniform(0, height - oh)
        grey = int(rng.integers(60, 200))
        ImageDraw.Draw(img).rectangle((ox, oy, ox + ow, oy + oh), fill=(grey, grey, grey))
    pixels = np.asarray(img, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(3, 10), size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _scene_background(kind: str, colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` background of the named kind and colour (plain: a faint gradient)."""
    base = np.asarray(BACKGROUND_PALETTE[colour], dtype=np.float32) + rng.uniform(-8, 8, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == "plain":
        delta = rng.uniform(4, 8) * (2 * along - 1)
    elif kind == "striped":
        delta = rng.uniform(28, 40) * np.sign(np.sin(2 * np.pi * along / rng.uniform(0.12, 0.2)))
    elif kind == "checkered":
        cell = rng.uniform(0.1, 0.16)
        delta = rng.uniform(28, 40) * (((xx // cell + yy // cell) % 2) * 2 - 1)
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {list(BACKGROUNDS)}")
    return np.clip(base[None, None, :] + delta[..., None], 0, 255).astype(np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
                 colour: tuple[int, int, int]) -> None:
    """The second object, standing on the ground at (cx, cy + r): a ball, a box or a cone."""
    edge = tuple(int(c * 0.55) for c in colour)
    if kind == "ball":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=edge)
    elif kind == "box":
        draw.rectangle((cx - r, cy - 0.85 * r, cx + r, cy + r), fill=colour, outline=edge)
    elif kind == "cone":
        draw.polygon([(cx, cy - 1.3 * r), (cx + 0.8 * r, cy + r), (cx - 0.8 * r, cy + r)], fill=colour,
                     outline=edge)
    else:
        raise ValueError(f"unknown object {kind!r}; expected one of {list(OBJECTS)}")


# Horizontal centre of the figure for each position, as a fraction of the side; the object
# stands where the figure is not.
_FIGURE_X = {"left": (0.22, 0.28), "centre": (0.47, 0.53), "right": (0.72, 0.78)}
_FIGURE_HEIGHT = {"small": (0.42, 0.55), "large": (0.74, 0.9)}
_OBJECT_X = {"left": ((0.7, 0.85),), "centre": ((0.1, 0.16), (0.84, 0.9)), "right": ((0.15, 0.3),)}


def _render_scene(ident: Identity, scene: Mapping[str, str], size: int,
                  rng: np.random.Generator) -> Image.Image:
    """A square COCO-style scene showing exactly the figure's and the scene's facts.

    The background has the scene's kind and colour; the figure (height by ``size``, horizontal
    centre by ``position``) and the second object (kind, colour) stand apart so both stay
    visible. No occlusion patch: a caption's facts must be visible in its image. Pixel noise.
    """
    img = Image.fromarray(_scene_background(scene["background"], scene["background_colour"], size, rng), "RGB")
    draw = ImageDraw.Draw(img)
    spans = _OBJECT_X[scene["position"]]
    ox = rng.uniform(*spans[int(rng.integers(len(spans)))]) * size
    r = rng.uniform(0.08, 0.11) * size
    oy = rng.uniform(0.62, 0.85) * size
    _draw_object(draw, scene["object"], ox, min(oy, size - 1.05 * r), r, PALETTE[scene["object_colour"]])
    h = rng.uniform(*_FIGURE_HEIGHT[scene["size"]]) * size
    w = 0.45 * h
    cx = rng.uniform(*_FIGURE_X[scene["position"]]) * size
    y0 = rng.uniform(0.02 * size, max(0.02 * size, 0.98 * size - h))
    _draw_figure(draw, ident, cx - w / 2, y0, w, h, rng)
    return _finish(img, rng, occlusion_p=0.0, occlusion_frac=(0.0, 0.0))


def _render_person(ident: Identity, height: int, width: int,
                   rng: np.random.Generator) -> Image.Image:
    """A pedestrian crop: the figure fills most of the ``height x width`` frame."""
    img = Image.fromarray(_background(rng, height, width), "RGB")
    h = rng.uniform(0.85, 0.97) * height
    w = rng.uniform(0.7, 0.85) * width
    x0 = (width - w) / 2 + rng.uniform(-0.08, 0.08) * width
    y0 = rng.uniform(0.0, height - h)
    _draw_figure(ImageDraw.Draw(img), ident, x0, y0, w, h, rng)
    return _finish(img, rng, occlusion_p=0.3, occlusion_frac=(0.15, 0.3))


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No pnginfo: PIL then writes no text or time chunks, so the bytes depend on pixels only.
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


@dataclass
class _Facts:
    """What the generator knows: the facts of every image (by key) and of every caption text."""

    images: dict[str, dict[str, str]]
    captions: dict[str, dict[str, str]]

    def caption(self, text: str, facts: dict[str, str]) -> None:
        """Record a caption's facts; one text must always state the same facts."""
        seen = self.captions.setdefault(text, facts)
        if seen != facts:
            raise AssertionError(f"caption {text!r} was generated for facts {seen} and for {facts}")


def _write_coco(out: Path, identities: Sequence[Identity], split_of: Mapping[int, str],
                images_per_identity: int, captions_per_image: int, image_size: int,
                seed: int, known: _Facts) -> None:
    """dataset_coco.json and the scenes; then the ground truth (:func:`_write_ground_truth`)."""
    rng = _rng(seed, _STREAM_COCO)
    records, image_facts, caption_facts = [], [], []
    sentid = 0
    for ident in tqdm(identities, desc="demo coco", unit="id", disable=progress_disabled(logger)):
        for n, scene in enumerate(sample_scenes(images_per_identity, rng)):
            imgid = len(records)
            filename = f"id{ident.number:04d}_{n}.png"
            facts = {**ident.attributes(), **scene}
            _save_png(_render_scene(ident, scene, image_size, rng), out / "images" / filename)
            known.images[f"{out.name}/images/{filename}"] = facts
            image_facts.append(facts)
            sentences = []
            for _ in range(captions_per_image):
                raw, mentioned = _scene_caption(facts, rng)
                known.caption(raw, mentioned)
                caption_facts.append(mentioned)
                sentences.append({"raw": raw, "tokens": tokenize(raw), "imgid": imgid,
                                  "sentid": sentid})
                sentid += 1
            records.append({
                "filepath": "images",
                "filename": filename,
                "imgid": imgid,
                # Distinct from imgid so that readers must prefer cocoid, as with real COCO.
                "cocoid": 500000 + 7 * imgid,
                "split": split_of[ident.number],
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            })
    train = [i for i, r in enumerate(records) if r["split"] == "train"]
    for i in rng.choice(train, size=len(train) // 3, replace=False).tolist():
        records[i]["split"] = "restval"
    _write_text(out / "dataset_coco.json",
                json.dumps({"images": records, "dataset": "coco"}, sort_keys=True))
    _write_ground_truth(out, records, image_facts, caption_facts)


def _write_ground_truth(out: Path, records: Sequence[Mapping], image_facts: Sequence[Mapping[str, str]],
                        caption_facts: Sequence[Mapping[str, str]]) -> None:
    """``eccv/`` (the test split's ground truth in ECCV Caption's files) and ``ground_truth_stats.json``.

    Within each split every caption is evaluated against every image of the split
    (:func:`softref.data.facts.truth_matrix`); restval counts as train, as the adapters read it.
    """
    image_codes = fact_codes(image_facts, "images")
    caption_codes = fact_codes(caption_facts, "captions")
    splits = [{"restval": "train"}.get(r["split"], r["split"]) for r in records]
    stats: dict[str, dict] = {}
    caption_row = 0
    rows_of: dict[str, tuple[list[int], list[int], list[int]]] = {}  # split -> images, captions, own image
    for i, record in enumerate(records):
        images, captions, own = rows_of.setdefault(splits[i], ([], [], []))
        for _ in record["sentences"]:
            captions.append(caption_row)
            own.append(len(images))
            caption_row += 1
        images.append(i)
    for split in ("train", "val", "test"):
        if split not in rows_of:
            continue
        images, captions, own = rows_of[split]
        truth = truth_matrix(caption_codes[captions], image_codes[images])
        stats[split] = false_negative_stats(truth, own, (caption_codes[captions] >= 0).sum(axis=1))
        if split == "test":
            _write_eccv(out / "eccv", records, images, truth)
    summary = {
        "definition": (
            "A caption is true of an image when every fact it mentions has that value in the image "
            "(softref.data.facts.truth_matrix), evaluated against every image of the caption's split. "
            "false_negative_rate: the share of captions true of at least one image other than their own."
        ),
        "splits": stats,
    }
    _write_text(out / "ground_truth_stats.json", json.dumps(summary, sort_keys=True, indent=1) + "\n")


def _write_eccv(folder: Path, records: Sequence[Mapping], images: Sequence[int], truth: np.ndarray) -> None:
    """The test split's ground truth as the ``eccv_caption`` package's data files (ids: cocoid, sentid)."""
    cocoids = [int(records[i]["cocoid"]) for i in images]
    sentids = [int(s["sentid"]) for i in images for s in records[i]["sentences"]]
    image_to_caption, caption_to_image = eccv_ground_truth(truth, sentids, cocoids)
    original_c2i = {str(s["sentid"]): [int(records[i]["cocoid"])] for i in images for s in records[i]["sentences"]}
    original_i2c = {str(records[i]["cocoid"]): [int(s["sentid"]) for s in records[i]["sentences"]] for i in images}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "coco_test_ids.npy", "wb") as f:
        np.save(f, np.asarray(sentids, dtype=np.int64), allow_pickle=False)
    for name, data in (("eccv_image_to_caption.json", image_to_caption),
                       ("eccv_caption_to_image.json", caption_to_image),
                       ("original_caption_to_image.json", original_c2i),
                       ("original_image_to_caption.json", original_i2c)):
        _write_text(folder / name, json.dumps(data, sort_keys=True))


def _write_person(out: Path, identities: Sequence[Identity], split_of: Mapping[int, str],
                  images_per_identity: int, size: tuple[int, int], seed: int, known: _Facts) -> None:
    rng = _rng(seed, _STREAM_PERSON)
    height, width = size
    records = []
    for ident in tqdm(identities, desc="demo person", unit="id", disable=progress_disabled(logger)):
        for n in range(images_per_identity):
            file_path = f"demo/{ident.number}/{n}.png"
            _save_png(_render_person(ident, height, width, rng), out / "imgs" / file_path)
            known.images[f"{out.name}/imgs/{file_path}"] = ident.attributes()
            captions = []
            for _ in range(PERSON_CAPTIONS_PER_IMAGE):
                caption, mentioned = _caption(ident, rng)
                known.caption(caption, mentioned)
                captions.append(caption)
            records.append({
                "split": split_of[ident.number],
                "captions": captions,
                "id": ident.number,
                "file_path": file_path,
                "processed_tokens": [tokenize(c) for c in captions],
            })
    _write_text(out / "reid_raw.json", json.dumps(records, sort_keys=True))


def _write_retrieval(out: Path, identities: Sequence[Identity], split_of: Mapping[int, str],
                     images_per_identity: int, image_size: int, seed: int) -> None:
    rng = _rng(seed, _STREAM_RETRIEVAL)
    for ident in tqdm(identities, desc="demo retrieval", unit="id",
                      disable=progress_disabled(logger)):
        folder = out / split_of[ident.number] / f"{ident.number:04d}"
        for n, scene in enumerate(sample_scenes(images_per_identity, rng)):
            _save_png(_render_scene(ident, scene, image_size, rng), folder / f"{n}.png")


def _write_sts(path: Path, identities: Sequence[Identity], num_pairs: int, seed: int) -> None:
    rng = _rng(seed, _STREAM_STS)
    lines = ["sentence1\tsentence2\tscore"]
    for _ in range(num_pairs):
        a = identities[int(rng.integers(len(identities)))].attributes()
        shared = int(rng.integers(0, len(ATTRIBUTES) + 1))
        b = dict(a)
        for idx in rng.choice(len(ATTRIBUTES), size=len(ATTRIBUTES) - shared,
                              replace=False).tolist():
            attr = ATTRIBUTES[idx]
            others = [v for v in _DOMAINS[attr] if v != a[attr]]
            b[attr] = _pick(rng, others)
        sentences = []
        for attrs in (a, b):
            mention = _mentionable(attrs)
            if not mention:  # unreachable: parts always have a colour
                raise AssertionError("nothing to describe")
            order = rng.permutation(len(mention)).tolist()
            sentences.append(describe(attrs, [mention[i] for i in order], rng))
        lines.append(f"{sentences[0]}\t{sentences[1]}\t{5 * shared / len(ATTRIBUTES):.4f}")
    _write_text(path, "\n".join(lines) + "\n")


_OUTPUT_DIRS = ("coco", "person", "retrieval", "sts")


def synthesize_demo(
    root: Path,
    *,
    seed: int = 0,
    num_identities: int = 60,
    images_per_identity: int = 4,
    captions_per_image: int = 5,
    image_size: int = 96,
    person_size: tuple[int, int] = (128, 64),
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    sts_pairs: int = 200,
) -> dict[str, Path]:
    """Render the demo benchmark under ``root``; see the module docstring for the layout.

    Args:
        root: output folder. Its ``coco``, ``person``, ``retrieval`` and ``sts`` subfolders and
            its ``oracle_attributes.json`` are built in a temporary folder and then replace any
            earlier ones; nothing else under ``root`` is touched.
        seed: the only source of randomness.
        num_identities: distinct attribute combinations (at least 3: one per split).
        images_per_identity: images per identity in each of coco, person and retrieval (each
            COCO-style and retrieval image of an identity is a different scene).
        captions_per_image: captions per COCO-style image (person images have 2, as in
            CUHK-PEDES).
        image_size: side of the square COCO-style and retrieval images, in pixels.
        person_size: (height, width) of the person crops.
        split_fractions: (train, val, test) fractions of the identities.
        sts_pairs: number of STS sentence pairs.

    Returns:
        ``coco_root``, ``coco_annotations``, ``coco_eccv`` (the ECCV Caption files' folder),
        ``coco_ground_truth_stats``, ``person_root``, ``person_annotations``,
        ``retrieval_root``, ``sts_pairs`` and ``oracle_attributes`` paths.
    """
    _check_sizes(images_per_identity, captions_per_image, sts_pairs, image_size, person_size)
    identities = sample_identities(num_identities, seed)
    split_of = assign_splits(identities, split_fractions, seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=root, prefix=".synthesize-"))
    known = _Facts(images={}, captions={})
    try:
        _write_coco(build / "coco", identities, split_of, images_per_identity,
                    captions_per_image, image_size, seed, known)
        _write_person(build / "person", identities, split_of, images_per_identity,
                      (int(person_size[0]), int(person_size[1])), seed, known)
        _write_retrieval(build / "retrieval", identities, split_of, images_per_identity,
                         image_size, seed)
        _write_sts(build / "sts" / "pairs.tsv", identities, sts_pairs, seed)
        _write_text(build / ORACLE_FILE, fact_table_json(known.images, known.captions))
        for name in _OUTPUT_DIRS:
            target = root / name
            if target.exists():
                target.rename(build / f"old-{name}")
            (build / name).rename(target)
        publish(build / ORACLE_FILE, root / ORACLE_FILE)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    _log_summary(root, identities, split_of, images_per_identity)
    return {
        "coco_root": root / "coco",
        "coco_annotations": root / "coco" / "dataset_coco.json",
        "coco_eccv": root / "coco" / "eccv",
        "coco_ground_truth_stats": root / "coco" / "ground_truth_stats.json",
        "person_root": root / "person",
        "person_annotations": root / "person" / "reid_raw.json",
        "retrieval_root": root / "retrieval",
        "sts_pairs": root / "sts" / "pairs.tsv",
        "oracle_attributes": root / ORACLE_FILE,
    }


def _check_sizes(images_per_identity: int, captions_per_image: int, sts_pairs: int, image_size: int,
                 person_size: Sequence[int]) -> None:
    if images_per_identity < 1 or captions_per_image < 1 or sts_pairs < 0:
        raise ValueError(
            "images_per_identity and captions_per_image must be >= 1 and sts_pairs >= 0, got "
            f"{images_per_identity}, {captions_per_image}, {sts_pairs}"
        )
    if image_size < 16 or min(person_size) < 16:
        raise ValueError(
            f"image_size and person_size must be at least 16 pixels, got {image_size} and "
            f"{tuple(person_size)}"
        )


def _log_summary(root: Path, identities: Sequence[Identity], split_of: Mapping[int, str],
                 images_per_identity: int) -> None:
    stats = json.loads((root / "coco" / "ground_truth_stats.json").read_text(encoding="utf-8"))["splits"]
    logger.info(
        "demo: %d identities (%s), %d images each, written to %s",
        len(identities),
        ", ".join(f"{s} {list(split_of.values()).count(s)}" for s in ("train", "val", "test")),
        images_per_identity, root,
    )
    for split, row in stats.items():
        logger.info(
            "demo coco %s: %d images, %d captions, %d (%.1f%%) captions true of another image too",
            split, row["images"], row["captions"], row["captions_true_of_other_images"],
            100 * row["false_negative_rate"],
        )
