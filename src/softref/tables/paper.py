"""The papers' reported numbers, packaged with softref, for side-by-side tables.

``data/cusa_tables.csv`` holds every number of the CUSA paper's Tables 1-5 and of its
appendix's Tables 8-11 in long format: table, family, model, method, dataset, direction, metric,
value (e.g. ``1, dual, CLIP-ViT-B/32, cusa, coco-5k, i2t, R@1, 57.3``).
``data/cusa_resources.csv`` holds the appendix's resource costs (Table 12 per module, Table 13
per training setting: time per epoch, GPU and host memory). ``data/person_retrieval_reference.csv``
holds published text-to-person retrieval numbers (MMRef, IRRA, CFine, RaSa) with their sources.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = [
    "PaperValue",
    "PAPER_COLUMNS",
    "load_paper_values",
    "paper_value",
    "load_person_reference",
    "person_reference_value",
    "PERSON_METRICS",
    "load_resource_reference",
    "resource_reference_value",
    "resource_setting",
    "table_number",
]

PAPER_COLUMNS: tuple[str, ...] = ("table", "family", "model", "method", "dataset", "direction", "metric", "value")
_CUSA_CSV = "cusa_tables.csv"
_PERSON_CSV = "person_retrieval_reference.csv"
_RESOURCES_CSV = "cusa_resources.csv"
_RESOURCE_COLUMNS = ("table", "setting", "method", "metric", "value", "unit", "note")
PERSON_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "mAP", "mINP")


@dataclass(frozen=True)
class PaperValue:
    """One number reported in the CUSA paper."""

    table: int
    family: str
    model: str
    method: str
    dataset: str
    direction: str
    metric: str
    value: float


def _read_text(path: Path | None, name: str) -> tuple[str, str]:
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"paper values file not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    resource = resources.files("softref.tables").joinpath("data", name)
    return resource.read_text(encoding="utf-8"), f"softref/tables/data/{name}"


@lru_cache(maxsize=4)
def _load(path: Path | None) -> tuple[PaperValue, ...]:
    text, where = _read_text(path, _CUSA_CSV)
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != PAPER_COLUMNS:
        raise ValueError(f"{where}: expected columns {list(PAPER_COLUMNS)}, found {reader.fieldnames}")
    values = []
    for line, row in enumerate(reader, start=2):
        try:
            values.append(
                PaperValue(
                    table=int(row["table"]),
                    family=row["family"],
                    model=row["model"],
                    method=row["method"],
                    dataset=row["dataset"],
                    direction=row["direction"],
                    metric=row["metric"],
                    value=float(row["value"]),
                )
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}, line {line}: expected an integer table and a numeric value, found {row} ({err})") from None
    return tuple(values)


def load_paper_values(path: Path | None = None) -> tuple[PaperValue, ...]:
    """All numbers of the CUSA paper (the packaged copy unless ``path`` is given)."""
    return _load(None if path is None else Path(path))


def table_number(table: str | int | None) -> int | None:
    """``"table1"`` / ``"Table 5"`` / ``5`` -> the number; None when the name holds none."""
    if table is None:
        return None
    if isinstance(table, int):
        return table
    match = re.search(r"(\d+)", str(table))
    return int(match.group(1)) if match else None


def paper_value(
    model: str | None,
    method: str,
    dataset: str | None,
    direction: str,
    metric: str,
    *,
    table: str | int | None = None,
    path: Path | None = None,
) -> float | None:
    """The paper's number for (model, method, dataset, direction, metric), or None.

    When the number appears in several of the paper's tables (Table 5 repeats RSUMs of
    Table 1), the one of ``table`` is preferred, else the lowest table number.
    """
    if model is None or dataset is None:
        return None
    found = [
        v
        for v in load_paper_values(path)
        if (v.model, v.method, v.dataset, v.direction, v.metric) == (model, method, dataset, direction, metric)
    ]
    if not found:
        return None
    wanted = table_number(table)
    preferred = [v for v in found if v.table == wanted]
    return (preferred or sorted(found, key=lambda v: v.table))[0].value


def load_person_reference(path: Path | None = None) -> list[dict[str, str | float | None]]:
    """Published text-to-person retrieval numbers: source, method, dataset, R@1/5/10, mAP, mINP.

    Empty cells (not reported) become None; numbers become floats.
    """
    text, _ = _read_text(None if path is None else Path(path), _PERSON_CSV)
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append(
            {
                key: (value if key in ("source", "method", "dataset") else (float(value) if value else None))
                for key, value in row.items()
            }
        )
    return rows


def person_reference_value(
    method: str, dataset: str | None, metric: str, *, path: Path | None = None
) -> float | None:
    """The published number of ``method`` (e.g. ``"MMRef"``) on ``dataset`` for ``metric``, or None.

    None when the dataset is None, the pair is not listed, or the cell is empty (not reported).
    """
    if metric not in PERSON_METRICS:
        raise ValueError(f"person reference: metric expected one of {list(PERSON_METRICS)}, found {metric!r}")
    if dataset is None:
        return None
    for row in load_person_reference(path):
        if row["method"] == method and row["dataset"] == dataset and row[metric] is not None:
            return float(row[metric])
    return None


@lru_cache(maxsize=4)
def _load_resources(path: Path | None) -> tuple[dict[str, str | float | int], ...]:
    text, where = _read_text(path, _RESOURCES_CSV)
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != _RESOURCE_COLUMNS:
        raise ValueError(f"{where}: expected columns {list(_RESOURCE_COLUMNS)}, found {reader.fieldnames}")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            rows.append({**row, "table": int(row["table"]), "value": float(row["value"])})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}, line {line}: expected an integer table and a numeric value, found {row} "
                             f"({err})") from None
    return tuple(rows)


def load_resource_reference(path: Path | None = None) -> tuple[dict[str, str | float | int], ...]:
    """The appendix's resource costs (Tables 12-13): table, setting, method, metric, value, unit, note."""
    return _load_resources(None if path is None else Path(path))


def resource_setting(method: str, image: str, text: str) -> str:
    """Table 13's name of a training setting: ``none`` for the contrastive baseline, else
    ``"image disk + text online"`` and so on (``shards`` is the paper's "Disk", ``online`` its
    "Real-Time")."""
    if method in ("base", "contrastive"):
        return "none"
    names = {"shards": "disk", "online": "online"}
    for what, value in (("image", image), ("text", text)):
        if value not in names:
            raise ValueError(f"resource_setting: {what} teacher features expected one of {list(names)}, found {value!r}")
    return f"image {names[image]} + text {names[text]}"


def resource_reference_value(method: str, setting: str, metric: str, *, path: Path | None = None) -> float | None:
    """Table 13's ``metric`` (time_per_epoch in min, gpu_memory in MB, host_memory in GB) for a
    method (``base`` is its "Contrastive loss") in a setting (:func:`resource_setting`), or None."""
    name = "contrastive" if method == "base" else method
    for row in load_resource_reference(path):
        if (row["table"], row["setting"], row["method"], row["metric"]) == (13, setting, name, metric):
            return float(row["value"])
    return None
