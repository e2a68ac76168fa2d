"""The sizes of the real datasets, and the check that compares a dataset on disk with them.

:data:`EXPECTED` is the one table of split sizes (images, captions, identities per split; for
the STS benchmarks, scored pairs per year or set) of every dataset softref reads, as published
with the datasets and used by the papers (sources in ``docs/datasets.md``). A ``None`` entry is
not checked. The generic formats (``image-folders``, ``sts-pairs``) hold no particular dataset:
their entries publish no size, so the check only shows what it counts (pass ``--dataset`` to
compare such a layout with a real dataset's sizes). :func:`check_dataset` reads a dataset with
its adapter (nothing is written), counts what it found and sets it beside the table; ``softref
check-dataset`` prints the result and exits with 1 on any mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softref.data.adapters import LoadedDataset, check_captions, load_dataset

__all__ = [
    "SplitSizes",
    "ExpectedSizes",
    "EXPECTED",
    "DEFAULT_DATASET",
    "CheckRow",
    "DatasetCheck",
    "dataset_of",
    "check_dataset",
    "format_check",
]


@dataclass(frozen=True)
class SplitSizes:
    """Expected sizes of one split; ``None`` is not checked."""

    images: int | None = None
    texts: int | None = None
    identities: int | None = None


@dataclass(frozen=True)
class ExpectedSizes:
    """Expected sizes of one dataset: per split, and for sentence-pair sets per pair group.

    ``complete``: the table lists every split and pair group of the dataset, so one found
    beyond them is a mismatch (expected 0); ``False`` (no published sizes) shows it unchecked.
    """

    title: str
    splits: Mapping[str, SplitSizes] = field(default_factory=dict)
    pairs: Mapping[str, int] = field(default_factory=dict)
    complete: bool = True


def _image_only(**splits: tuple[int, int | None]) -> dict[str, SplitSizes]:
    return {s: SplitSizes(images=n, texts=0, identities=k) for s, (n, k) in splits.items()}


EXPECTED: dict[str, ExpectedSizes] = {
    "coco": ExpectedSizes(
        "MSCOCO, Karpathy split (train = train + restval)",
        {
            "train": SplitSizes(113_287, 566_747, 113_287),
            "val": SplitSizes(5_000, 25_010, 5_000),
            "test": SplitSizes(5_000, 25_010, 5_000),
        },
    ),
    "flickr30k": ExpectedSizes(
        "Flickr30K, Karpathy split",
        {
            "train": SplitSizes(29_000, 145_000, 29_000),
            "val": SplitSizes(1_014, 5_070, 1_014),
            "test": SplitSizes(1_000, 5_000, 1_000),
        },
    ),
    "eccv": ExpectedSizes(
        "ECCV Caption: the MSCOCO 5K test, 5 captions per image",
        {"test": SplitSizes(5_000, 25_000, 5_000)},
    ),
    "cub": ExpectedSizes(
        "CUB-200-2011, metric-learning split (classes 1-100 train, 101-200 test)",
        _image_only(train=(5_864, 100), test=(5_924, 100)),
    ),
    "sop": ExpectedSizes(
        "Stanford Online Products",
        _image_only(train=(59_551, 11_318), test=(60_502, 11_316)),
    ),
    "inshop": ExpectedSizes(
        "In-Shop Clothes Retrieval (items of query and gallery not checked)",
        _image_only(train=(25_882, 3_997), query=(14_218, None), gallery=(12_612, None)),
    ),
    "inaturalist": ExpectedSizes(
        "iNaturalist 2018, metric-learning split",
        _image_only(train=(325_846, 5_690), test=(136_093, 2_452)),
    ),
    "sts": ExpectedSizes(
        "SentEval STS12-16, STS-B and SICK-R test sets (pairs with a gold score)",
        pairs={
            "STS12": 3_108,
            "STS13": 1_500,
            "STS14": 3_750,
            "STS15": 3_000,
            "STS16": 1_186,
            "STSBenchmark": 1_379,
            "SICK-R": 4_927,
        },
    ),
    "cuhk-pedes": ExpectedSizes(
        "CUHK-PEDES",
        {
            "train": SplitSizes(34_054, 68_126, 11_003),
            "val": SplitSizes(3_078, 6_158, 1_000),
            "test": SplitSizes(3_074, 6_156, 1_000),
        },
    ),
    "icfg-pedes": ExpectedSizes(
        "ICFG-PEDES (one caption per image, no val split)",
        {
            "train": SplitSizes(34_674, 34_674, 3_102),
            "test": SplitSizes(19_848, 19_848, 1_000),
        },
    ),
    "rstpreid": ExpectedSizes(
        "RSTPReid",
        {
            "train": SplitSizes(18_505, 37_010, 3_701),
            "val": SplitSizes(1_000, 2_000, 200),
            "test": SplitSizes(1_000, 2_000, 200),
        },
    ),
    "reed-cub": ExpectedSizes(
        "CUB-200-2011 with Reed et al. captions, zero-shot split (trainval -> train)",
        {
            "train": SplitSizes(8_855, 88_550, 150),
            "test": SplitSizes(2_933, 29_330, 50),
        },
    ),
    "reed-flowers": ExpectedSizes(
        "Oxford-102 Flowers with Reed et al. captions, zero-shot split (trainval -> train)",
        {
            "train": SplitSizes(7_034, 70_340, 82),
            "test": SplitSizes(1_155, 11_550, 20),
        },
    ),
    "image-folders": ExpectedSizes(
        "image folders (split/class/image): no published sizes, counts not checked",
        complete=False,
    ),
    "sts-pairs": ExpectedSizes(
        "scored sentence pairs (TSV): no published sizes, counts not checked",
        complete=False,
    ),
}

# The dataset a format holds when its files do not say; None: the files must say (see dataset_of).
DEFAULT_DATASET: dict[str, str | None] = {
    "karpathy": None,
    "albef": None,
    "cusa-json": None,
    "eccv": "eccv",
    "cub": "cub",
    "sop": "sop",
    "inshop": "inshop",
    "inaturalist": "inaturalist",
    "image-folders": "image-folders",
    "senteval-sts": "sts",
    "sts-pairs": "sts-pairs",
    "cuhk-pedes": "cuhk-pedes",
    "icfg-pedes": "icfg-pedes",
    "rstpreid": "rstpreid",
    "reed-cub": "reed-cub",
    "reed-flowers": "reed-flowers",
}

# Annotation file names that tell which image-text dataset a karpathy / albef file holds.
_NAMED_BY_FILE = {
    "dataset_coco.json": "coco",
    "dataset_flickr30k.json": "flickr30k",
    "coco_train.json": "coco",
    "coco_val.json": "coco",
    "coco_test.json": "coco",
    "flickr30k_train.json": "flickr30k",
    "flickr30k_val.json": "flickr30k",
    "flickr30k_test.json": "flickr30k",
}


def dataset_of(format: str, annotations: Path) -> str:
    """The key of :data:`EXPECTED` for a dataset read with ``format`` from ``annotations``."""
    name = DEFAULT_DATASET.get(format)
    if name is None:
        name = _NAMED_BY_FILE.get(annotations.name)
    if name is None:
        raise ValueError(
            f"{format}: {annotations.name} does not say which dataset it holds; name it "
            f"(--dataset on the command line), one of {sorted(EXPECTED)}"
        )
    return name


@dataclass(frozen=True)
class CheckRow:
    """One count beside its expected value (``None``: not checked)."""

    split: str
    kind: str
    found: int
    expected: int | None

    @property
    def ok(self) -> bool:
        return self.expected is None or self.found == self.expected


@dataclass(frozen=True)
class DatasetCheck:
    """The result of :func:`check_dataset`."""

    format: str
    dataset: str
    title: str
    root: Path
    annotations: Path
    rows: tuple[CheckRow, ...]
    images_checked: bool
    missing_images: int
    missing_examples: tuple[str, ...]
    num_images: int = 0

    @property
    def mismatches(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if not r.ok)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.missing_images == 0


def _rows(loaded: LoadedDataset, expected: ExpectedSizes) -> list[CheckRow]:
    rows: list[CheckRow] = []
    images, texts = loaded.images, loaded.texts
    found_splits = set(images["split"]) | set(texts["split"])
    order = list(expected.splits) + sorted(found_splits - set(expected.splits))
    unlisted = SplitSizes(0, 0, 0) if expected.complete else SplitSizes()
    for split in order:
        want = expected.splits.get(split, unlisted)
        in_split = images["split"] == split
        counts = (
            ("images", int(in_split.sum()), want.images),
            ("texts", int((texts["split"] == split).sum()), want.texts),
            ("identities", int(images.loc[in_split, "identity"].nunique()), want.identities),
        )
        rows.extend(CheckRow(split, kind, found, exp) for kind, found, exp in counts)
    if expected.pairs or loaded.pairs is not None:
        pairs = loaded.pairs
        groups = (
            {} if pairs is None
            else pairs["task"].str.split("/").str[0].value_counts().to_dict()
        )
        for group in list(expected.pairs) + sorted(set(groups) - set(expected.pairs)):
            rows.append(CheckRow(group, "pairs", int(groups.get(group, 0)),
                                 expected.pairs.get(group, 0 if expected.complete else None)))
    return rows


def check_dataset(
    format: str,
    root: Path,
    *,
    dataset: str | None = None,
    annotations: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    expected: Mapping[str, ExpectedSizes] | None = None,
    **options: Any,
) -> DatasetCheck:
    """Read the dataset at ``root`` with ``format`` and compare its sizes with the real dataset's.

    Args:
        dataset: the key of ``expected`` to compare with; by default what the format and its
            annotation file name say (:func:`dataset_of`).
        annotations, check_images, **options: as for :func:`softref.data.adapters.prepare`.
        expected: the table (default :data:`EXPECTED`).

    Adapter and schema errors are raised as by ``prepare``, and so are empty captions and images
    without a caption in a caption dataset; images absent on disk count as a problem of the
    check, not as an error.
    """
    table = EXPECTED if expected is None else expected
    if format in ("icfg-pedes", "reed-cub", "reed-flowers"):
        # Compare the published splits: the val carved from train for training is not in the table.
        options = {"val_fraction": 0.0, **options}
    loaded = load_dataset(
        format, Path(root), annotations=annotations, check_images=check_images, **options
    )
    check_captions(loaded)
    name = dataset if dataset is not None else dataset_of(format, loaded.annotations)
    if name not in table:
        raise ValueError(f"no expected sizes for dataset {name!r}; known: {sorted(table)}")
    sizes = table[name]
    return DatasetCheck(
        format=format,
        dataset=name,
        title=sizes.title,
        root=loaded.root,
        annotations=loaded.annotations,
        rows=tuple(_rows(loaded, sizes)),
        images_checked=loaded.images_checked,
        missing_images=len(loaded.missing),
        missing_examples=tuple(loaded.missing["path"].head(5).tolist()),
        num_images=len(loaded.images),
    )


def format_check(check: DatasetCheck) -> list[str]:
    """The lines ``softref check-dataset`` prints for ``check``."""
    lines = [
        f"{check.format} dataset at {check.root} (read from {check.annotations.name})",
        f"expected sizes: {check.dataset}: {check.title}",
        f"  {'split':<14}{'kind':<12}{'found':>10}{'expected':>10}",
    ]
    for row in check.rows:
        expected = "-" if row.expected is None else f"{row.expected:,}"
        flag = "" if row.ok else "  MISMATCH"
        lines.append(f"  {row.split:<14}{row.kind:<12}{row.found:>10,}{expected:>10}{flag}")
    if check.num_images == 0:
        lines.append("images on disk: none listed (the dataset has no images)")
    elif not check.images_checked:
        lines.append("images on disk: not checked")
    elif check.missing_images:
        shown = ", ".join(check.missing_examples)
        lines.append(f"images on disk: {check.missing_images:,} missing (first: {shown})")
    else:
        lines.append("images on disk: all present")
    problems = len(check.mismatches) + (1 if check.missing_images else 0)
    if not check.ok:
        lines.append(f"{problems} problem(s) found")
    elif any(r.expected is not None for r in check.rows):
        lines.append("ok: matches the real dataset")
    else:
        lines.append("ok: no published sizes to compare with (counts shown, not checked)")
    return lines
