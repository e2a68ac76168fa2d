"""Reading the evaluations a table shows: one entry per (experiment, benchmark), checked.

An entry names the experiment, its row (student, method, label), its paper role (the
student's ``paper_model``, the experiment's ``paper_method``, the benchmark's
``paper_dataset``) and its evaluation JSON. Reading checks that the JSON is one the table's
kind can read (its protocol), that it was written for this experiment and benchmark (a stale
JSON is refused with both names), and that its metric rows are well formed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softref.names import TABLE_PROTOCOLS

__all__ = ["Entry", "MetricRow", "VARIANTS", "check_entries", "load_entry"]

REQUIRED_KEYS = ("student", "experiment", "method", "label", "benchmark")
OPTIONAL_KEYS = ("paper_model", "paper_dataset", "paper_method", "seed", "train_dataset", "eval", "result")
_METRIC_KEYS = ("dataset", "direction", "metric", "value", "variant")
#: Variants of one evaluation's numbers: the plain ranking and the reference-refined one.
VARIANTS = ("", "refined")


@dataclass(frozen=True)
class MetricRow:
    """One row of an evaluation JSON's ``metrics`` list."""

    dataset: str
    direction: str
    metric: str
    value: float
    variant: str
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class Entry:
    """One (experiment, benchmark) evaluation placed in a table."""

    student: str
    experiment: str
    method: str
    label: str
    benchmark: str
    paper_model: str | None
    paper_dataset: str | None
    paper_method: str | None
    seed: int | None
    protocol: str
    result: Mapping[str, Any]
    metrics: tuple[MetricRow, ...]
    source: str
    train_dataset: str | None = None

    @property
    def dataset(self) -> str:
        """The name the evaluation gives its metric rows: the paper's dataset, else the benchmark."""
        return self.paper_dataset or self.benchmark

    @property
    def mapped(self) -> bool:
        """True when the row stands for a row of the CUSA paper (model, method and dataset known)."""
        return bool(self.paper_model and self.paper_dataset and self.paper_method)

    def variants(self) -> list[str]:
        return sorted({r.variant for r in self.metrics}, key=VARIANTS.index)

    def one(self, direction: str, metric: str, variant: str = "", dataset: str | None = None) -> MetricRow:
        """The single metric row (direction, metric, variant) of this evaluation's dataset."""
        dataset = self.dataset if dataset is None else dataset
        found = [r for r in self.metrics if (r.direction, r.metric, r.variant) == (direction, metric, variant)]
        if not found:
            present = sorted({(r.direction, r.metric, r.variant) for r in self.metrics})
            raise ValueError(
                f"{self.source}: metrics: expected a row direction {direction!r}, metric {metric!r}, "
                f"variant {variant!r} (protocol {self.protocol!r}), found none; rows present "
                f"(direction, metric, variant): {present}"
            )
        matching = [r for r in found if r.dataset == dataset]
        if len(matching) != 1:
            raise ValueError(
                f"{self.source}: metrics: expected one row ({direction!r}, {metric!r}, variant {variant!r}) with "
                f"dataset {dataset!r} (the benchmark's paper_dataset, else its name), found datasets "
                f"{sorted(r.dataset for r in found)}"
            )
        return matching[0]


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _read_result(where: str, row: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if ("eval" in row) == ("result" in row):
        raise ValueError(f"{where}: give exactly one of 'eval' (a JSON path) and 'result' (a dict)")
    if "eval" in row:
        path = Path(row["eval"])
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: evaluation file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        source = str(path)
    else:
        result, source = row["result"], f"{where} (result)"
    if not isinstance(result, Mapping):
        raise ValueError(f"{source}: expected a JSON object, found {type(result).__name__}")
    return result, source


def _metric_rows(result: Mapping[str, Any], source: str, *, required: bool) -> tuple[MetricRow, ...]:
    raw = result.get("metrics")
    if raw is None and not required:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{source}: key 'metrics': expected a list of metric rows, found {type(raw).__name__}")
    rows: dict[tuple[str, str, str, str], MetricRow] = {}
    for i, item in enumerate(raw):
        where = f"{source}: metrics[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected an object, found {type(item).__name__}")
        missing = [k for k in _METRIC_KEYS if k not in item]
        if missing:
            raise ValueError(f"{where}: expected keys {list(_METRIC_KEYS)}, missing {missing}")
        for key in ("dataset", "direction", "metric"):
            if not isinstance(item[key], str) or not item[key]:
                raise ValueError(f"{where}: {key!r} expected a non-empty string, found {item[key]!r}")
        if item["variant"] not in VARIANTS:
            raise ValueError(f"{where}: 'variant' expected one of {list(VARIANTS)}, found {item['variant']!r}")
        if not finite(item["value"]):
            raise ValueError(f"{where}: 'value' expected a finite number, found {item['value']!r}")
        low, high = item.get("ci_low"), item.get("ci_high")
        if (low is None) != (high is None) or (low is not None and not (
                finite(low) and finite(high) and float(low) <= float(item["value"]) <= float(high))):
            raise ValueError(f"{where}: 'ci_low' <= 'value' <= 'ci_high' expected (finite, both or neither), found "
                             f"{low!r}, {item['value']!r}, {high!r}")
        row = MetricRow(item["dataset"], item["direction"], item["metric"], float(item["value"]), item["variant"],
                        None if low is None else float(low), None if high is None else float(high))
        key = (row.dataset, row.direction, row.metric, row.variant)
        if key in rows:
            raise ValueError(f"{where}: a second row for (dataset, direction, metric, variant) {key}")
        rows[key] = row
    return tuple(rows.values())


def _check_keys(where: str, row: Any) -> None:
    if not isinstance(row, Mapping):
        raise TypeError(f"{where}: expected a mapping, found {type(row).__name__}")
    unknown = sorted(set(row) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    missing = [k for k in REQUIRED_KEYS if not isinstance(row.get(k), str) or not row.get(k)]
    if missing or unknown:
        raise ValueError(
            f"{where}: expected string keys {list(REQUIRED_KEYS)} (+ optional {list(OPTIONAL_KEYS)}); "
            f"missing or empty {missing}, unknown {unknown}"
        )
    for key in ("paper_model", "paper_dataset", "paper_method", "train_dataset"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} expected a string or None, found {row[key]!r}")
    seed = row.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{where}: 'seed' expected an integer or None, found {seed!r}")


def load_entry(kind: str, index: int, row: Mapping[str, Any]) -> Entry:
    """Read and check entry ``index`` of a ``kind`` table (see the module docstring)."""
    where = f"entry {index}"
    _check_keys(where, row)
    result, source = _read_result(where, row)
    allowed = TABLE_PROTOCOLS[kind]
    protocol = result.get("protocol")
    if protocol not in allowed:
        expected = repr(allowed[0]) if len(allowed) == 1 else f"one of {list(allowed)}"
        raise ValueError(f"{source}: key 'protocol': a {kind!r} table expects {expected}, found {protocol!r}")
    # A JSON written for another experiment, benchmark or paper dataset is a miswired or stale input.
    for key in ("experiment", "benchmark", "seed"):
        found = result.get(key)
        if found is not None and row.get(key) is not None and found != row[key]:
            raise ValueError(f"{source}: key {key!r}: expected {row[key]!r} (the table's entry), found {found!r}")
    if "paper_dataset" in result and (result["paper_dataset"] or None) != (row.get("paper_dataset") or None):
        raise ValueError(
            f"{source}: key 'paper_dataset': expected {row.get('paper_dataset')!r} (the benchmark's), "
            f"found {result['paper_dataset']!r}; re-run the evaluation"
        )
    # Image-text JSONs carry Table 1's top-level keys; their metric rows are optional.
    metrics = _metric_rows(result, source, required=protocol != "image-text")
    return Entry(
        student=row["student"], experiment=row["experiment"], method=row["method"], label=row["label"],
        benchmark=row["benchmark"], paper_model=row.get("paper_model") or None,
        paper_dataset=row.get("paper_dataset") or None, paper_method=row.get("paper_method") or None,
        seed=row.get("seed"), protocol=protocol, result=result, metrics=metrics, source=source,
        train_dataset=row.get("train_dataset") or None,
    )


def check_entries(table: str, entries: Sequence[Entry], row_keys: Sequence[str] = ("student", "label")) -> None:
    """One result per (experiment, benchmark, seed); one row per ``row_keys`` (the kind's: student
    and label, plus the training dataset for the cross-domain kind) and benchmark; an experiment's
    row facts (student, method, label, paper roles, training dataset) the same in every entry."""
    seen: dict[tuple[str, str, int | None], str] = {}
    experiments: dict[str, Entry] = {}
    rows: dict[tuple[Any, ...], str] = {}
    for e in entries:
        key = (e.experiment, e.benchmark, e.seed)
        if key in seen:
            seed = "" if e.seed is None else f", seed {e.seed}"
            raise ValueError(
                f"{table}: two results for experiment {key[0]!r}, benchmark {key[1]!r}{seed}: {seen[key]} and {e.source}"
            )
        seen[key] = e.source
        first = experiments.setdefault(e.experiment, e)
        for attr in ("student", "method", "label", "paper_model", "paper_method", "train_dataset"):
            if getattr(first, attr) != getattr(e, attr):
                raise ValueError(
                    f"{table}: experiment {e.experiment!r}: {attr} expected {getattr(first, attr)!r} "
                    f"(as in {first.source}), found {getattr(e, attr)!r} in {e.source}"
                )
        # One row may gather experiments trained per dataset (pairing: dataset), but never two
        # results for the same cells.
        other = rows.setdefault(tuple(getattr(e, k) for k in row_keys) + (e.benchmark,), e.experiment)
        if other != e.experiment:
            row = ", ".join(f"{k} {getattr(e, k)!r}" for k in row_keys)
            raise ValueError(
                f"{table}: experiments {other!r} and {e.experiment!r} both give the row {row} on benchmark "
                f"{e.benchmark!r}; give them distinct labels"
            )
