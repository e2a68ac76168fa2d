"""Table builders for every table kind but Table 1's image-text retrieval.

The CUSA paper's Tables 2-5 (``eccv``, ``image-retrieval``, ``sts``, ``ablation``) and the
MMRef tables (``person``, ``zero-shot``, ``mmref-ablation``) are built the same way: read the
evaluation JSON of every (experiment, benchmark) pair of the table, check that its protocol is
one the kind reads and that it carries the metric rows the kind needs, derive the numbers the
kind shows (per-benchmark numbers, averages over benchmarks, the ablation's summaries), put the
paper's number beside each number whose row stands for a model and dataset of a paper, and
write a long CSV (the columns of :data:`softref.tables.builder.RETRIEVAL_COLUMNS`) and a wide
Markdown table. A table of demo data (no ``paper_dataset``) never shows a paper number.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from softref.config import TABLE_PROTOCOLS
from softref.tables.builder import _atomic_write_text, _csv_text, table_title
from softref.tables.paper import (
    PERSON_METRICS,
    load_paper_values,
    load_person_reference,
    paper_value,
    person_reference_value,
)

__all__ = ["KIND_PROTOCOLS", "TABLE_KINDS", "MetricRow", "build_table", "display_title"]

logger = logging.getLogger(__name__)

# Table 1 ("retrieval") has its own builder, softref.tables.builder.build_retrieval_table.
KIND_PROTOCOLS: dict[str, tuple[str, ...]] = {k: v for k, v in TABLE_PROTOCOLS.items() if k != "retrieval"}
TABLE_KINDS: tuple[str, ...] = tuple(KIND_PROTOCOLS)

_REQUIRED_KEYS = ("student", "experiment", "method", "label", "benchmark")
_OPTIONAL_KEYS = ("paper_model", "paper_dataset", "eval", "result")
_METRIC_KEYS = ("dataset", "direction", "metric", "value", "variant")
_VARIANTS = ("", "refined")
_REFINED_SUFFIX = " + refinement"
_MMREF_METHOD = "mmref"
_MMREF_REFERENCE = "MMRef"
_CUSA_KINDS = ("eccv", "image-retrieval", "sts", "ablation")
_PERSON_KINDS = ("person", "mmref-ablation")

_ECCV_CELLS = tuple((d, m) for d in ("i2t", "t2i") for m in ("mAP@R", "R-P", "R@1"))
_PERSON_CELLS = tuple(("t2i", m) for m in PERSON_METRICS)
# Table 5's columns, in the paper's order; the names are the paper CSV's.
_ABLATION_CELLS = (("both", "RSUM"), ("both", "avg"), ("i2i", "avg R@1"), ("t2t", "avg spearman"))
_IMAGE_RETRIEVAL_SUMMARY = "image-retrieval"
_STS_SUMMARY = "sts"
_AVG = "avg"

_METHOD_ORDER = ("base", "csa", "usa", "cusa", "mmref")
# The papers' column order; other names sort alphabetically after these, "avg" last.
_DATASET_ORDER = (
    "coco-5k", "flickr30k-1k", "eccv-caption", "cub", "sop", "inshop", "inaturalist", "image-retrieval",
    "sts12", "sts13", "sts14", "sts15", "sts16", "sts12-16", "stsb", "sickr", "sts",
    "cuhk-pedes", "icfg-pedes", "rstpreid", "flowers",
)
_DIRECTION_ORDER = ("i2t", "t2i", "i2i", "t2t", "both")
_METRIC_ORDER = ("mAP@R", "R-P", "R@1", "R@5", "R@10", "mAP", "mINP", "top-1", "spearman", "RSUM", "avg")
_AP_METRIC = re.compile(r"AP@\d+")

_PREFIX_TITLES = {"mmref": "MMRef", "cusa": "CUSA"}


@dataclass(frozen=True)
class MetricRow:
    """One row of an evaluation JSON's ``metrics`` list."""

    dataset: str
    direction: str
    metric: str
    value: float
    variant: str


@dataclass(frozen=True)
class _Entry:
    """One (experiment, benchmark) evaluation placed in a table."""

    student: str
    experiment: str
    method: str
    label: str
    benchmark: str
    paper_model: str | None
    paper_dataset: str | None
    protocol: str
    result: Mapping[str, Any]
    metrics: tuple[MetricRow, ...]
    source: str

    @property
    def dataset(self) -> str:
        """The name the evaluation gives its metric rows: the paper's dataset, else the benchmark."""
        return self.paper_dataset or self.benchmark

    @property
    def mapped(self) -> bool:
        return bool(self.paper_model and self.paper_dataset)

    def variants(self) -> list[str]:
        return sorted({r.variant for r in self.metrics}, key=_VARIANTS.index)

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


@dataclass(frozen=True)
class _Cell:
    """One number of a table, before it becomes a long CSV row."""

    student: str
    label: str
    method: str
    experiment: str
    variant: str
    dataset: str
    direction: str
    metric: str
    value: float
    paper: float | None
    source: str

    def key(self) -> tuple[str, ...]:
        return (self.student, self.label, self.variant, self.dataset, self.direction, self.metric)


def display_title(table: str) -> str:
    """``"table2"`` -> ``"Table 2"``; ``"mmref/table1"`` -> ``"MMRef Table 1"``; others unchanged."""
    *prefix, name = str(table).split("/")
    return " ".join([_PREFIX_TITLES.get(p.lower(), p) for p in prefix if p] + [table_title(name)])


# ---------------------------------------------------------------- reading the evaluations


def _finite(value: Any) -> bool:
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
        if item["variant"] not in _VARIANTS:
            raise ValueError(f"{where}: 'variant' expected one of {list(_VARIANTS)}, found {item['variant']!r}")
        if not _finite(item["value"]):
            raise ValueError(f"{where}: 'value' expected a finite number, found {item['value']!r}")
        row = MetricRow(item["dataset"], item["direction"], item["metric"], float(item["value"]), item["variant"])
        key = (row.dataset, row.direction, row.metric, row.variant)
        if key in rows:
            raise ValueError(f"{where}: a second row for (dataset, direction, metric, variant) {key}")
        rows[key] = row
    return tuple(rows.values())


def _load_entry(kind: str, index: int, row: Mapping[str, Any]) -> _Entry:
    where = f"entry {index}"
    if not isinstance(row, Mapping):
        raise TypeError(f"{where}: expected a mapping, found {type(row).__name__}")
    unknown = sorted(set(row) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    missing = [k for k in _REQUIRED_KEYS if not isinstance(row.get(k), str) or not row.get(k)]
    if missing or unknown:
        raise ValueError(
            f"{where}: expected string keys {list(_REQUIRED_KEYS)} (+ optional {list(_OPTIONAL_KEYS)}); "
            f"missing or empty {missing}, unknown {unknown}"
        )
    for key in ("paper_model", "paper_dataset"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} expected a string or None, found {row[key]!r}")
    result, source = _read_result(where, row)
    allowed = KIND_PROTOCOLS[kind]
    protocol = result.get("protocol")
    if protocol not in allowed:
        expected = repr(allowed[0]) if len(allowed) == 1 else f"one of {list(allowed)}"
        raise ValueError(f"{source}: key 'protocol': a {kind!r} table expects {expected}, found {protocol!r}")
    # A JSON written for another experiment, benchmark or paper dataset is a miswired or stale input.
    for key in ("experiment", "benchmark"):
        found = result.get(key)
        if found is not None and found != row[key]:
            raise ValueError(f"{source}: key {key!r}: expected {row[key]!r} (the table's entry), found {found!r}")
    if "paper_dataset" in result and (result["paper_dataset"] or None) != (row.get("paper_dataset") or None):
        raise ValueError(
            f"{source}: key 'paper_dataset': expected {row.get('paper_dataset')!r} (the benchmark's), "
            f"found {result['paper_dataset']!r}; re-run the evaluation"
        )
    # Image-text JSONs carry Table 1's top-level keys; their metric rows are optional here.
    metrics = _metric_rows(result, source, required=protocol != "image-text")
    return _Entry(
        student=row["student"],
        experiment=row["experiment"],
        method=row["method"],
        label=row["label"],
        benchmark=row["benchmark"],
        paper_model=row.get("paper_model") or None,
        paper_dataset=row.get("paper_dataset") or None,
        protocol=protocol,
        result=result,
        metrics=metrics,
        source=source,
    )


def _check_entries(table: str, entries: Sequence[_Entry]) -> None:
    seen: dict[tuple[str, str], str] = {}
    experiments: dict[str, _Entry] = {}
    rows: dict[tuple[str, str, str], str] = {}
    for e in entries:
        key = (e.experiment, e.benchmark)
        if key in seen:
            raise ValueError(
                f"{table}: two results for experiment {key[0]!r}, benchmark {key[1]!r}: {seen[key]} and {e.source}"
            )
        seen[key] = e.source
        first = experiments.setdefault(e.experiment, e)
        for attr in ("student", "method", "label", "paper_model"):
            if getattr(first, attr) != getattr(e, attr):
                raise ValueError(
                    f"{table}: experiment {e.experiment!r}: {attr} expected {getattr(first, attr)!r} "
                    f"(as in {first.source}), found {getattr(e, attr)!r} in {e.source}"
                )
        # One row may gather experiments trained per dataset (pairing: dataset), but never two
        # results for the same cells.
        other = rows.setdefault((e.student, e.label, e.benchmark), e.experiment)
        if other != e.experiment:
            raise ValueError(
                f"{table}: experiments {other!r} and {e.experiment!r} both give the row student {e.student!r}, "
                f"label {e.label!r} on benchmark {e.benchmark!r}; give them distinct labels"
            )


# ---------------------------------------------------------------- paper values


@lru_cache(maxsize=None)
def _paper_datasets(direction: str, metric: str) -> frozenset[str]:
    """The datasets a paper average runs over (e.g. the four image-retrieval sets of Table 3)."""
    return frozenset(
        v.dataset for v in load_paper_values() if (v.direction, v.metric) == (direction, metric) and v.dataset != _AVG
    )


def _cusa_paper(table: str, group: Sequence[_Entry], dataset: str, direction: str, metric: str) -> float | None:
    """The CUSA paper's number when every evaluation behind the cell maps to the paper."""
    if not group or not all(e.mapped for e in group):
        return None
    return paper_value(group[0].paper_model, group[0].method, dataset, direction, metric, table=table)


def _person_paper(entry: _Entry, variant: str, dataset: str, metric: str) -> float | None:
    """MMRef's published number: it is with refinement, so only the refined row of the full mmref run
    (an mmref experiment without a label of its own; ablations and variants carry one) gets it."""
    if entry.method != _MMREF_METHOD or entry.label.lower() != _MMREF_METHOD or variant != "refined" or not entry.paper_dataset:
        return None
    return person_reference_value(_MMREF_REFERENCE, dataset, metric)


# ---------------------------------------------------------------- derived rows per kind


def _cell(e: _Entry, variant: str, dataset: str, direction: str, metric: str, value: float, paper: float | None,
          source: str | None = None) -> _Cell:
    return _Cell(e.student, e.label, e.method, e.experiment, variant, dataset, direction, metric, float(value), paper,
                 source or e.source)


def _by_experiment(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        groups.setdefault(e.experiment, []).append(e)
    return [sorted(groups[name], key=lambda e: e.benchmark) for name in sorted(groups)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _eccv_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    for e in entries:
        for direction, metric in _ECCV_CELLS:
            r = e.one(direction, metric)
            cells.append(_cell(e, "", r.dataset, direction, metric, r.value,
                               _cusa_paper(table, [e], r.dataset, direction, metric)))
    return cells


def _image_retrieval_average(table: str, group: Sequence[_Entry], benchmarks: Sequence[str], dataset: str,
                             metric: str) -> _Cell | None:
    """Mean R@1 of one experiment over the table's image-retrieval benchmarks; None when it lacks one."""
    have = [e.benchmark for e in group]
    if have != list(benchmarks):
        logger.warning(
            "%s: experiment %s lacks image-retrieval benchmark(s) %s: no average",
            table, group[0].experiment, sorted(set(benchmarks) - set(have)),
        )
        return None
    value = _mean([e.one("i2i", "R@1").value for e in group])
    # The paper's average is over its four sets; an average over others is not comparable.
    comparable = {e.paper_dataset for e in group} == _paper_datasets("i2i", "R@1")
    paper = _cusa_paper(table, group, dataset, "i2i", metric) if comparable else None
    source = ", ".join(e.source for e in group)
    return _cell(group[0], "", dataset, "i2i", metric, value, paper, source)


def _image_retrieval_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    for e in entries:
        r = e.one("i2i", "R@1")
        cells.append(_cell(e, "", r.dataset, "i2i", "R@1", r.value, _cusa_paper(table, [e], r.dataset, "i2i", "R@1")))
    benchmarks = sorted({e.benchmark for e in entries})
    for group in _by_experiment(entries):
        average = _image_retrieval_average(table, group, benchmarks, _AVG, "R@1")
        if average is not None:
            cells.append(average)
    return cells


def _sts_avg(e: _Entry) -> tuple[MetricRow, bool]:
    """The evaluation's STS average and whether it covers the paper's tasks (so compares with its Avg)."""
    row = e.one("t2t", "spearman", dataset=_AVG)
    tasks = {r.dataset for r in e.metrics if (r.direction, r.metric, r.variant) == ("t2t", "spearman", "")}
    if tasks == {_AVG}:
        raise ValueError(f"{e.source}: metrics: expected per-task ('t2t', 'spearman') rows besides 'avg', found none")
    return row, _paper_datasets("t2t", "spearman") <= tasks


def _sts_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    for e in entries:
        _, comparable = _sts_avg(e)
        for r in e.metrics:
            if r.variant:
                continue
            paper = None if r.dataset == _AVG and not comparable else _cusa_paper(
                table, [e], r.dataset, r.direction, r.metric
            )
            cells.append(_cell(e, "", r.dataset, r.direction, r.metric, r.value, paper))
    return cells


def _rsum(e: _Entry) -> float:
    """RSUM of an image-text evaluation: its ('both', 'RSUM') row, or Table 1's top-level ``rsum``."""
    top = e.result.get("rsum")
    if top is not None and not _finite(top):
        raise ValueError(f"{e.source}: key 'rsum': expected a finite number, found {top!r}")
    if e.metrics:
        value = e.one("both", "RSUM").value
        if top is not None and abs(float(top) - value) > 1e-6:
            raise ValueError(f"{e.source}: key 'rsum' ({top}) differs from the ('both', 'RSUM') metric row ({value})")
        return value
    if top is None:
        raise ValueError(
            f"{e.source}: expected a 'metrics' list with a ('both', 'RSUM') row or a key 'rsum', found neither"
        )
    return float(top)


def _ablation_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    retrieval_benchmarks = sorted({e.benchmark for e in entries if e.protocol == "image-retrieval"})
    for group in _by_experiment(entries):
        for e in group:
            if e.protocol == "image-text":
                cells.append(_cell(e, "", e.dataset, "both", "RSUM", _rsum(e),
                                   _cusa_paper(table, [e], e.dataset, "both", "RSUM")))
            elif e.protocol == "eccv":
                value = _mean([e.one(d, m).value for d, m in _ECCV_CELLS])
                cells.append(_cell(e, "", e.dataset, "both", "avg", value,
                                   _cusa_paper(table, [e], e.dataset, "both", "avg")))
            elif e.protocol == "sts":
                row, comparable = _sts_avg(e)
                paper = _cusa_paper(table, [e], _STS_SUMMARY, "t2t", "avg spearman") if comparable else None
                cells.append(_cell(e, "", _STS_SUMMARY, "t2t", "avg spearman", row.value, paper))
        retrieval = [e for e in group if e.protocol == "image-retrieval"]
        if retrieval:
            average = _image_retrieval_average(table, retrieval, retrieval_benchmarks, _IMAGE_RETRIEVAL_SUMMARY,
                                               "avg R@1")
            if average is not None:
                cells.append(average)
    return cells


def _person_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    for e in entries:
        for variant in e.variants():
            for direction, metric in _PERSON_CELLS:
                r = e.one(direction, metric, variant)
                cells.append(_cell(e, variant, r.dataset, direction, metric, r.value,
                                   _person_paper(e, variant, r.dataset, metric)))
    return cells


def _zero_shot_cells(table: str, entries: Sequence[_Entry]) -> list[_Cell]:
    cells = []
    for e in entries:
        for variant in e.variants():
            names = sorted({r.metric for r in e.metrics
                            if r.direction == "t2i" and r.variant == variant and _AP_METRIC.fullmatch(r.metric)})
            if len(names) != 1:
                raise ValueError(
                    f"{e.source}: metrics: expected one ('t2i', 'AP@k') metric with variant {variant!r} "
                    f"(protocol 'zero-shot'), found {names}"
                )
            for direction, metric in (("t2i", names[0]), ("i2t", "top-1")):
                r = e.one(direction, metric, variant)
                cells.append(_cell(e, variant, r.dataset, direction, metric, r.value, None))
    return cells


_DERIVE = {
    "eccv": _eccv_cells,
    "image-retrieval": _image_retrieval_cells,
    "sts": _sts_cells,
    "ablation": _ablation_cells,
    "person": _person_cells,
    "zero-shot": _zero_shot_cells,
    "mmref-ablation": _person_cells,
}


# ---------------------------------------------------------------- ordering


def _rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def _dataset_rank(dataset: str) -> tuple[int, int, str]:
    if dataset == _AVG:
        return (2, 0, "")
    if dataset in _DATASET_ORDER:
        return (0, _DATASET_ORDER.index(dataset), "")
    return (1, 0, dataset)


def _metric_rank(metric: str) -> tuple[int, int, str]:
    if metric in _METRIC_ORDER:
        return (_METRIC_ORDER.index(metric), 0, "")
    if _AP_METRIC.fullmatch(metric):
        return (len(_METRIC_ORDER), int(metric[3:]), "")
    return (len(_METRIC_ORDER) + 1, 0, metric)


def _column_key(kind: str, dataset: str, direction: str, metric: str) -> tuple:
    group = _ABLATION_CELLS.index((direction, metric)) if kind == "ablation" else 0
    # Zero-shot reads text-to-image first, the MMRef paper's main direction.
    directions = ("t2i", "i2t") if kind == "zero-shot" else _DIRECTION_ORDER
    return (group, _dataset_rank(dataset), _rank(direction, directions), _metric_rank(metric))


def _row_key(student: str, method: str, label: str, variant: str = "") -> tuple:
    return (student, _rank(method, _METHOD_ORDER), label, _VARIANTS.index(variant))


def _cell_key(kind: str, c: _Cell) -> tuple:
    return _row_key(c.student, c.method, c.label, c.variant) + _column_key(kind, c.dataset, c.direction, c.metric)


def _method_name(label: str, variant: str) -> str:
    return label + _REFINED_SUFFIX if variant == "refined" else label


# ---------------------------------------------------------------- Markdown


def _fmt(value: float | None, paper: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if paper is None else f"{value:.2f} ({paper:.2f})"


def _header(kind: str, dataset: str, direction: str, metric: str, variant: str = "") -> str:
    parts = [dataset]
    if kind in ("eccv", "zero-shot"):
        parts.append(direction)
    parts.append(metric)
    if variant:
        parts.append(f"({variant})")
    return " ".join(parts)


def _measured_on(entries: Sequence[_Entry]) -> str:
    facts = []
    for benchmark in sorted({e.benchmark for e in entries}):
        e = next(x for x in entries if x.benchmark == benchmark)
        counts = [
            f"{e.result[k]} {k[4:].replace('_', ' ')}"
            for k in sorted(e.result)
            if k.startswith("num_") and isinstance(e.result[k], (int, float)) and not isinstance(e.result[k], bool)
        ]
        described = f"benchmark `{benchmark}` ({e.protocol}, split `{e.result.get('split', '?')}`"
        described += f"; {', '.join(counts)})" if counts else ")"
        facts.append(described)
    return "Numbers measured on " + "; ".join(facts) + "."


def _paper_note(kind: str, entries: Sequence[_Entry], cells: Sequence[_Cell]) -> str:
    if not any(c.paper is not None for c in cells):
        if kind in _PERSON_KINDS:
            return ("No paper value in parentheses (shown only beside the refined rows of the full mmref run on a "
                    "paper dataset).")
        return "No row maps to a model and dataset of the paper: no paper values shown."
    if kind in _CUSA_KINDS:
        mapped: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for e in entries:
            if e.mapped:
                mapped.setdefault((str(e.paper_model), e.student), set()).add((str(e.paper_dataset), e.benchmark))
        described = [
            f"{model} (for {student}) on " + ", ".join(f"{pd} (`{b}`)" for pd, b in sorted(pairs))
            for (model, student), pairs in sorted(mapped.items())
        ]
        return "In parentheses: what the CUSA paper (AAAI 2024) reports for the same method with " + "; ".join(
            described
        ) + "."
    datasets = ", ".join(sorted({c.dataset for c in cells if c.paper is not None}))
    where = (
        "in the refined columns of the full mmref run (ablated runs, which carry a label, get none)"
        if kind == "mmref-ablation"
        else f"beside the '{_REFINED_SUFFIX.strip()}' rows of the full mmref run"
    )
    return (
        f"In parentheses: the number published for MMRef (with its reference-based refinement) on {datasets}, "
        f"{where}; the paper's other numbers are not known."
    )


def _units_note(kind: str, entries: Sequence[_Entry]) -> str:
    if kind == "eccv":
        return "ECCV Caption: mAP@R, R-Precision (R-P) and R@1 in percent."
    if kind == "image-retrieval":
        n = len({e.benchmark for e in entries})
        return f"Image-to-image R@1 in percent; avg is the mean over the table's {n} benchmark(s)."
    if kind == "sts":
        return "Spearman correlation x 100; avg is the evaluation's mean over its tasks."
    if kind == "ablation":
        return (
            "RSUM: sum of the six recalls; eccv avg: mean of the six ECCV Caption numbers; image-retrieval "
            "avg R@1: mean R@1 over the image-retrieval benchmarks; sts avg spearman: the STS average (x 100)."
        )
    if kind == "zero-shot":
        return ("Zero-shot classes: t2i AP@k = share of the class's images among the top k for its class-mean "
                "caption query; i2t top-1 = zero-shot classification accuracy; percent.")
    return ("Text-to-image person retrieval: R@1/5/10 (CMC), mAP and mINP in percent; '+ refinement' = re-ranked "
            "with the reference-based similarity.")


def _references(entries: Sequence[_Entry]) -> list[tuple[str, str, dict[tuple[str, str], float]]]:
    """Published person-retrieval numbers on the table's paper datasets: (source, method, values)."""
    datasets = {e.paper_dataset for e in entries if e.paper_dataset}
    found: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    for row in load_person_reference():
        if row["dataset"] not in datasets:
            continue
        values = found.setdefault((str(row["source"]), str(row["method"])), {})
        for metric in PERSON_METRICS:
            if row[metric] is not None:
                values[(str(row["dataset"]), metric)] = float(row[metric])
    return [(source, method, values) for (source, method), values in found.items() if values]


def _md_text(kind: str, table: str, label: str, entries: Sequence[_Entry], cells: Sequence[_Cell]) -> str:
    lines = [f"# {display_title(table)}", ""]
    if label:
        lines += [label, ""]
    variant_columns = kind == "mmref-ablation"
    if variant_columns:
        # Every metric of one dataset unrefined, then refined, as two readable blocks.
        columns = sorted(
            {(c.dataset, c.variant, c.direction, c.metric) for c in cells},
            key=lambda k: (_dataset_rank(k[0]), _VARIANTS.index(k[1]), _column_key(kind, k[0], k[2], k[3])),
        )
        lookup = {(c.student, c.label, c.dataset, c.variant, c.direction, c.metric): c for c in cells}
        rows = sorted({(c.student, c.method, c.label) for c in cells}, key=lambda r: _row_key(*r))
        header = ["Student", "Method"] + [_header(kind, d, di, m, v) for d, v, di, m in columns]
    else:
        columns = sorted({(c.dataset, c.direction, c.metric) for c in cells}, key=lambda k: _column_key(kind, *k))
        lookup = {(c.student, c.label, c.variant, c.dataset, c.direction, c.metric): c for c in cells}
        rows = sorted({(c.student, c.method, c.label, c.variant) for c in cells}, key=lambda r: _row_key(*r))
        header = ["Student", "Method"] + [_header(kind, *k) for k in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * 2 + "---:|" * (len(header) - 2))
    for row in rows:
        if variant_columns:
            student, _, label_ = row
            name = label_
            found = [lookup.get((student, label_) + col) for col in columns]
        else:
            student, _, label_, variant = row
            name = _method_name(label_, variant)
            found = [lookup.get((student, label_, variant) + col) for col in columns]
        values = [_fmt(None if c is None else c.value, None if c is None else c.paper) for c in found]
        lines.append("| " + " | ".join([student, name] + values) + " |")
    references = _references(entries) if kind == "person" else []
    for source, method, values in references:
        shown = [_fmt(values.get((d, m)), None) for d, _, m in columns]
        lines.append("| " + " | ".join([f"reference ({source})", method] + shown) + " |")
    lines.append("")
    lines.append(_measured_on(entries))
    lines.append(_paper_note(kind, entries, cells))
    if references:
        lines.append("Rows 'reference (source)': numbers published by others on the same datasets, not measured here.")
    lines.append(_units_note(kind, entries))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry point


def build_table(
    kind: str,
    table: str,
    *,
    label: str,
    entries: Sequence[Mapping[str, Any]],
    csv_path: Path,
    md_path: Path,
) -> list[dict[str, Any]]:
    """Write one table of kind ``kind`` as a long CSV and a wide Markdown table.

    Args:
        kind: one of :data:`TABLE_KINDS` (every ``TableConfig.kind`` but ``"retrieval"``, which
            :func:`softref.tables.builder.build_retrieval_table` builds).
        table: the table's name (``"table2"``, ``"mmref/table1"``): the CSV's ``table`` column; the
            Markdown title ("Table 2", "MMRef Table 1"); its number picks the CUSA paper table whose
            value is preferred when a number appears in several (Table 5 repeats Table 1's RSUMs).
        label: what the numbers are (e.g. "Demo: synthetic benchmarks, not the paper's data"),
            written on the line under the Markdown title.
        entries: one mapping per (experiment, benchmark): ``student``, ``experiment``, ``method``
            (the experiment's method: base, csa, usa, cusa, mmref), ``label`` (the row name),
            ``benchmark``, optional ``paper_model`` / ``paper_dataset`` (None: the row stands for
            nothing of a paper), and ``eval`` (the evaluation JSON's path) or ``result`` (its dict).
        csv_path: the long CSV (:data:`softref.tables.builder.RETRIEVAL_COLUMNS`): one row per
            number; ``method`` is the entry's label, + " + refinement" for refined numbers; values
            rounded to 4 decimals; ``paper_value`` empty where the paper has no number for the row.
        md_path: the Markdown table, a row per (student, label[, variant]) and a column per
            (dataset, direction, metric) (mmref-ablation: per variant too), the paper's number in
            parentheses; person tables also list published numbers of other methods on the
            table's paper datasets.

    Returns:
        The long rows (full precision): the CSV's columns plus ``experiment``, ``label`` and
        ``variant``. The same inputs, in any order, give byte-identical files.

    Raises:
        ValueError: unknown kind; an entry with missing/unknown keys; a JSON whose protocol the
            kind does not read, whose metric rows lack one the kind needs, or that was written
            for another experiment or benchmark; two results for one cell.
        FileNotFoundError: an ``eval`` path that does not exist.
    """
    if kind not in KIND_PROTOCOLS:
        if kind == "retrieval":
            raise ValueError(f"{table}: kind 'retrieval' is built by softref.tables.builder.build_retrieval_table")
        raise ValueError(f"{table}: kind expected one of {list(TABLE_KINDS)}, found {kind!r}")
    loaded = [_load_entry(kind, i, row) for i, row in enumerate(entries)]
    if not loaded:
        raise ValueError(f"{table}: no entries to tabulate")
    _check_entries(table, loaded)
    cells = _DERIVE[kind](table, loaded)
    seen: dict[tuple[str, ...], str] = {}
    for c in cells:
        if c.key() in seen:
            raise ValueError(
                f"{table}: two numbers for student {c.student!r}, label {c.label!r}, variant {c.variant!r}, "
                f"dataset {c.dataset!r}, {c.direction} {c.metric}: from {seen[c.key()]} and {c.source}"
            )
        seen[c.key()] = c.source
    cells = sorted(cells, key=lambda c: _cell_key(kind, c))
    long_rows = [
        {
            "table": table,
            "student": c.student,
            "method": _method_name(c.label, c.variant),
            "dataset": c.dataset,
            "direction": c.direction,
            "metric": c.metric,
            "value": c.value,
            "paper_value": c.paper,
            "experiment": c.experiment,
            "label": c.label,
            "variant": c.variant,
        }
        for c in cells
    ]
    _atomic_write_text(_csv_text(long_rows), Path(csv_path))
    _atomic_write_text(_md_text(kind, table, label, loaded, cells), Path(md_path))
    logger.info("%s (%s): %d evaluations, %d numbers -> %s, %s", table, kind, len(loaded), len(long_rows),
                csv_path, md_path)
    return long_rows
