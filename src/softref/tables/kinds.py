"""Table kinds: each is one function from the table's entries to its cells, and one registry entry.

A kind reads the evaluations of its protocols (``softref.names.TABLE_PROTOCOLS``), derives the
numbers it shows (per-benchmark numbers, averages over benchmarks, the ablation's summaries)
and puts the paper's number beside each number whose row stands for a row of a paper: the
student's ``paper_model``, the experiment's ``paper_method`` and the benchmark's
``paper_dataset`` together (the CUSA paper), or ``paper_method: MMRef`` on a paper dataset for
the published MMRef numbers, which are with refinement. A table of demo data (no
``paper_dataset``) never shows a paper number.

Adding a kind: write ``_<kind>_cells(table, entries) -> list[Cell]``, add a :class:`Kind` to
:data:`KINDS` and its protocols to ``softref.names.TABLE_PROTOCOLS``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from softref.names import TABLE_KINDS
from softref.tables.entries import Entry, MetricRow, finite
from softref.tables.paper import (
    load_paper_values,
    paper_value,
    person_reference_value,
    resource_reference_value,
    resource_setting,
)

__all__ = ["AP_METRIC", "Cell", "KINDS", "Kind", "cross_domain_label"]

logger = logging.getLogger(__name__)

_MMREF_REFERENCE = "MMRef"
_CUSA_METHODS = ("base", "csa", "usa", "cusa")
_ECCV_CELLS = tuple((d, m) for d in ("i2t", "t2i") for m in ("mAP@R", "R-P", "R@1"))
_RETRIEVAL_CELLS = tuple((d, f"R@{k}") for d in ("i2t", "t2i") for k in (1, 5, 10)) + (("both", "RSUM"),)
_PERSON_CELLS = tuple(("t2i", m) for m in ("R@1", "R@5", "R@10", "mAP", "mINP"))
# Domain-generalization tables of the person line (IRRA, RDE, ...): R@1, mAP and mINP per test set.
_CROSS_DOMAIN_CELLS = tuple(("t2i", m) for m in ("R@1", "mAP", "mINP"))
_IMAGE_RETRIEVAL_SUMMARY = "image-retrieval"
# Table 5's columns, in the paper's order; the names are the paper CSV's.
_ABLATION_CELLS = (("both", "RSUM"), ("both", "avg"), ("i2i", "avg R@1"), ("t2t", "avg spearman"))
_STS_SUMMARY = "sts"
_AVG = "avg"
AP_METRIC = re.compile(r"AP@\d+")


@dataclass(frozen=True)
class Cell:
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
    #: The 95 % interval: over seeds (``interval`` "seeds", t-interval of the mean of ``seeds`` runs)
    #: or, for a single run, the evaluation's bootstrap over queries (``interval`` "queries").
    ci_low: float | None = None
    ci_high: float | None = None
    interval: str = ""
    seeds: int = 1
    std: float | None = None

    def key(self) -> tuple[str, ...]:
        return (self.student, self.label, self.variant, self.dataset, self.direction, self.metric)


# ---------------------------------------------------------------- paper values



@lru_cache(maxsize=None)
def _paper_datasets(direction: str, metric: str) -> frozenset[str]:
    """The datasets a paper average runs over (e.g. the four image-retrieval sets of Table 3)."""
    return frozenset(
        v.dataset for v in load_paper_values() if (v.direction, v.metric) == (direction, metric) and v.dataset != _AVG
    )


def _cusa_paper(table: str, group: Sequence[Entry], dataset: str, direction: str, metric: str) -> float | None:
    """The CUSA paper's number when every evaluation behind the cell stands for a row of the paper."""
    if not group or not all(e.mapped and e.paper_method in _CUSA_METHODS for e in group):
        return None
    return paper_value(group[0].paper_model, group[0].paper_method, dataset, direction, metric, table=table)


def _person_paper(entry: Entry, variant: str, dataset: str, metric: str) -> float | None:
    """MMRef's published number: it is with refinement, so only the refined numbers of an experiment
    declared ``paper_method: MMRef`` on a paper dataset get it (ablations and variants declare none)."""
    if entry.paper_method != _MMREF_REFERENCE or variant != "refined" or not entry.paper_dataset:
        return None
    return person_reference_value(_MMREF_REFERENCE, dataset, metric)


# ---------------------------------------------------------------- derived rows per kind


def _cell(e: Entry, variant: str, dataset: str, direction: str, metric: str, value: float, paper: float | None,
          source: str | None = None, row: MetricRow | None = None) -> Cell:
    """A cell of evaluation ``e``; a cell read from one metric ``row`` keeps its bootstrap interval."""
    low, high = (getattr(row, "ci_low", None), getattr(row, "ci_high", None)) if row is not None else (None, None)
    return Cell(e.student, e.label, e.method, e.experiment, variant, dataset, direction, metric, float(value), paper,
                source or e.source, low, high, "queries" if low is not None and high is not None else "")


def _by_experiment(entries: Sequence[Entry]) -> list[list[Entry]]:
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.experiment, []).append(e)
    return [sorted(groups[name], key=lambda e: e.benchmark) for name in sorted(groups)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _image_text_values(e: Entry) -> dict[tuple[str, str], float]:
    """R@1/5/10 both ways and RSUM of an image-text evaluation (metric rows, else Table 1's top-level keys)."""
    if e.metrics:
        values = {(d, m): e.one(d, m).value for d, m in _RETRIEVAL_CELLS}
    else:
        values = {}
        for direction in ("i2t", "t2i"):
            block = e.result.get(direction)
            for k in (1, 5, 10):
                value = block.get(f"R@{k}") if isinstance(block, dict) else None
                if not finite(value):
                    raise ValueError(f"{e.source}: {direction} R@{k} expected a finite number, found {value!r}; "
                                     f"{direction} holds {block!r}")
                values[(direction, f"R@{k}")] = float(value)
        values[("both", "RSUM")] = sum(values.values())
    six = sum(v for (d, _), v in values.items() if d != "both")
    top = e.result.get("rsum")
    if top is not None and (not finite(top) or abs(float(top) - six) > 1e-6):
        raise ValueError(f"{e.source}: rsum {top!r} is not the sum of the six recalls ({six})")
    if abs(values[("both", "RSUM")] - six) > 1e-6:
        raise ValueError(f"{e.source}: the ('both', 'RSUM') row {values[('both', 'RSUM')]} is not the sum of the six "
                         f"recalls ({six})")
    return values


def _retrieval_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        for (direction, metric), value in _image_text_values(e).items():
            row = e.one(direction, metric) if e.metrics else None
            cells.append(_cell(e, "", e.dataset, direction, metric, value,
                               _cusa_paper(table, [e], e.dataset, direction, metric), row=row))
    return cells


def _eccv_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        for direction, metric in _ECCV_CELLS:
            r = e.one(direction, metric)
            cells.append(_cell(e, "", r.dataset, direction, metric, r.value,
                               _cusa_paper(table, [e], r.dataset, direction, metric), row=r))
    return cells


def _image_retrieval_average(table: str, group: Sequence[Entry], benchmarks: Sequence[str], dataset: str,
                             metric: str) -> Cell | None:
    """Mean R@1 of one experiment over the table's image-retrieval benchmarks; None when it lacks one."""
    have = [e.benchmark for e in group]
    if have != list(benchmarks):
        logger.warning(
            "%s: experiment %s lacks image-retrieval benchmark(s) %s: no average",
            table, group[0].experiment, sorted(set(benchmarks) - set(have)),
        )
        return None
    rows = [e.one("i2i", "R@1") for e in group]
    value = _mean([r.value for r in rows])
    # The paper's average is over its four sets; an average over others is not comparable.
    comparable = {e.paper_dataset for e in group} == _paper_datasets("i2i", "R@1")
    paper = _cusa_paper(table, group, dataset, "i2i", metric) if comparable else None
    source = ", ".join(e.source for e in group)
    cell = _cell(group[0], "", dataset, "i2i", metric, value, paper, source)
    halves = [(r.ci_high - r.ci_low) / 2 for r in rows if getattr(r, "ci_low", None) is not None]
    if len(halves) == len(rows):
        # The benchmarks' queries are independent: the mean's half-width adds theirs in quadrature.
        half = math.sqrt(sum(h * h for h in halves)) / len(halves)
        cell = dataclasses.replace(cell, ci_low=value - half, ci_high=value + half, interval="queries")
    return cell


def _image_retrieval_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        r = e.one("i2i", "R@1")
        cells.append(_cell(e, "", r.dataset, "i2i", "R@1", r.value, _cusa_paper(table, [e], r.dataset, "i2i", "R@1"),
                           row=r))
    benchmarks = sorted({e.benchmark for e in entries})
    for group in _by_experiment(entries):
        average = _image_retrieval_average(table, group, benchmarks, _AVG, "R@1")
        if average is not None:
            cells.append(average)
    return cells


def _sts_avg(e: Entry) -> tuple[MetricRow, bool]:
    """The evaluation's STS average and whether it covers the paper's tasks (so compares with its Avg)."""
    row = e.one("t2t", "spearman", dataset=_AVG)
    tasks = {r.dataset for r in e.metrics if (r.direction, r.metric, r.variant) == ("t2t", "spearman", "")}
    if tasks == {_AVG}:
        raise ValueError(f"{e.source}: metrics: expected per-task ('t2t', 'spearman') rows besides 'avg', found none")
    return row, _paper_datasets("t2t", "spearman") <= tasks


def _sts_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        _, comparable = _sts_avg(e)
        for r in e.metrics:
            if r.variant:
                continue
            paper = None if r.dataset == _AVG and not comparable else _cusa_paper(
                table, [e], r.dataset, r.direction, r.metric
            )
            cells.append(_cell(e, "", r.dataset, r.direction, r.metric, r.value, paper, row=r))
    return cells


def _rsum(e: Entry) -> float:
    """RSUM of an image-text evaluation: its ('both', 'RSUM') row, or Table 1's top-level ``rsum``."""
    top = e.result.get("rsum")
    if top is not None and not finite(top):
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


def _ablation_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    retrieval_benchmarks = sorted({e.benchmark for e in entries if e.protocol == "image-retrieval"})
    for group in _by_experiment(entries):
        for e in group:
            if e.protocol == "image-text":
                row = e.one("both", "RSUM") if e.metrics else None
                cells.append(_cell(e, "", e.dataset, "both", "RSUM", _rsum(e),
                                   _cusa_paper(table, [e], e.dataset, "both", "RSUM"), row=row))
            elif e.protocol == "eccv":
                value = _mean([e.one(d, m).value for d, m in _ECCV_CELLS])
                # The evaluation's own ('both', 'avg') row, when it writes one, carries its interval.
                own = [r for r in e.metrics if (r.direction, r.metric, r.variant) == ("both", "avg", "")]
                if own and abs(own[0].value - value) > 1e-6:
                    raise ValueError(f"{e.source}: the ('both', 'avg') row {own[0].value} is not the mean of the six "
                                     f"ECCV numbers ({value})")
                cells.append(_cell(e, "", e.dataset, "both", "avg", value,
                                   _cusa_paper(table, [e], e.dataset, "both", "avg"), row=own[0] if own else None))
            elif e.protocol == "sts":
                row, comparable = _sts_avg(e)
                paper = _cusa_paper(table, [e], _STS_SUMMARY, "t2t", "avg spearman") if comparable else None
                cells.append(_cell(e, "", _STS_SUMMARY, "t2t", "avg spearman", row.value, paper, row=row))
        retrieval = [e for e in group if e.protocol == "image-retrieval"]
        if retrieval:
            average = _image_retrieval_average(table, retrieval, retrieval_benchmarks, _IMAGE_RETRIEVAL_SUMMARY,
                                               "avg R@1")
            if average is not None:
                cells.append(average)
    return cells


def _person_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        for variant in e.variants():
            for direction, metric in _PERSON_CELLS:
                r = e.one(direction, metric, variant)
                cells.append(_cell(e, variant, r.dataset, direction, metric, r.value,
                                   _person_paper(e, variant, r.dataset, metric), row=r))
    return cells


def cross_domain_label(train_dataset: str, label: str) -> str:
    """The row name of a cross-domain table: the training dataset first, then the experiment's label."""
    return f"train {train_dataset}: {label}"


def _cross_domain_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    """Person models on the test splits of every listed dataset: one row per (training dataset,
    experiment label, variant), one column group per test dataset. No published numbers: none shown."""
    cells = []
    for e in entries:
        if not e.train_dataset:
            raise ValueError(
                f"{table}: {e.source}: a 'cross-domain' table names each row by the dataset its model trained on; "
                f"entry of experiment {e.experiment!r} has no train_dataset"
            )
        label = cross_domain_label(e.train_dataset, e.label)
        for variant in e.variants():
            for direction, metric in _CROSS_DOMAIN_CELLS:
                r = e.one(direction, metric, variant)
                # The evaluation's own cell (its bootstrap interval kept), named by the training dataset.
                cells.append(replace(_cell(e, variant, r.dataset, direction, metric, r.value, None, row=r), label=label))
    return cells


def _zero_shot_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    cells = []
    for e in entries:
        for variant in e.variants():
            names = sorted({r.metric for r in e.metrics
                            if r.direction == "t2i" and r.variant == variant and AP_METRIC.fullmatch(r.metric)})
            if len(names) != 1:
                raise ValueError(
                    f"{e.source}: metrics: expected one ('t2i', 'AP@k') metric with variant {variant!r} "
                    f"(protocol 'zero-shot'), found {names}"
                )
            for direction, metric in (("t2i", names[0]), ("i2t", "top-1")):
                r = e.one(direction, metric, variant)
                cells.append(_cell(e, variant, r.dataset, direction, metric, r.value, None, row=r))
    return cells


# The appendix's Table 13: measured metric -> its name in the paper's resources CSV.
_RESOURCE_METRICS = {"time per epoch (min)": "time_per_epoch", "GPU memory (MB)": "gpu_memory",
                     "host memory (GB)": "host_memory"}
_RATIO = "time / contrastive"
_RESOURCE_ORDER = ("time per epoch (min)", _RATIO, "host memory (GB)", "GPU memory (MB)")


def _setting(e: Entry) -> str | None:
    """Table 13's setting of a training-cost evaluation (its teacher-feature sources), or None."""
    sources = e.result.get("teacher_features") or {}
    try:
        return resource_setting(e.paper_method or e.method, sources.get("image", "shards"), sources.get("text", "shards"))
    except ValueError:
        return None


def _resources_cells(table: str, entries: Sequence[Entry]) -> list[Cell]:
    """Time per epoch, host and GPU memory of each training, and its time over the contrastive
    baseline's (the table's ``base`` runs on the same benchmark); beside each, Table 13's figure for
    the same method and teacher setting (the paper's machine, not this one: the note says so)."""
    cells = []
    for e in entries:
        setting = _setting(e)
        for metric, name in _RESOURCE_METRICS.items():
            found = [r for r in e.metrics if (r.direction, r.metric, r.variant) == ("train", metric, "")]
            if found:
                paper = resource_reference_value(e.paper_method, setting, name) if e.paper_method and setting else None
                cells.append(_cell(e, "", e.dataset, "train", metric, found[0].value, paper, row=found[0]))
    for e in entries:
        base = [c.value for c in cells if c.metric == "time per epoch (min)" and c.method == "base"
                and c.dataset == e.dataset]
        own = [c for c in cells if c.experiment == e.experiment and c.metric == "time per epoch (min)"]
        if base and own:
            paper_base = resource_reference_value("base", "none", "time_per_epoch")
            paper = own[0].paper / paper_base if own[0].paper is not None and paper_base else None
            cells.append(_cell(e, "", e.dataset, "train", _RATIO, own[0].value / _mean(base), paper))
    return cells


@dataclass(frozen=True)
class Kind:
    """A table kind: how its cells are derived and what its Markdown says.

    Attributes:
        derive: (table name, entries) -> cells.
        units: the Markdown's last line: what the numbers are.
        direction_in_header: column headers name the direction (i2t / t2i) besides the metric.
        variant_columns: refined numbers as extra columns of the same row (else as extra rows).
        paper: "cusa" (the CUSA paper's values), "person" (published person-retrieval numbers),
            "resources" (the appendix's Table 13) or "none" (no published numbers for this layout).
        column_group: (direction, metric) -> the group a column sorts in first (the ablation's order).
        row_keys: the entry facts that name a row (two experiments giving one row on one benchmark
            are refused): student and label; the cross-domain kind adds the training dataset.
    """

    derive: Callable[[str, Sequence[Entry]], list[Cell]]
    units: str
    direction_in_header: bool = False
    variant_columns: bool = False
    paper: str = "cusa"
    column_group: Callable[[str, str], int] = lambda direction, metric: 0
    directions: tuple[str, ...] = ("i2t", "t2i", "i2i", "t2t", "both")
    row_keys: tuple[str, ...] = ("student", "label")


_PERSON_UNITS = ("Text-to-image person retrieval: R@1/5/10 (CMC), mAP and mINP in percent; '+ refinement' = re-ranked "
                 "with the reference-based similarity.")

#: Every table kind, by the name ``tables.<name>.kind`` gives.
KINDS: dict[str, Kind] = {
    "retrieval": Kind(_retrieval_cells, "Recall in percent; RSUM is the sum of the six recalls.",
                      direction_in_header=True),
    "eccv": Kind(_eccv_cells, "ECCV Caption: mAP@R, R-Precision (R-P) and R@1 in percent.", direction_in_header=True),
    "image-retrieval": Kind(_image_retrieval_cells, "Image-to-image R@1 in percent; avg is the mean over the "
                            "table's {benchmarks} benchmark(s)."),
    "sts": Kind(_sts_cells, "Spearman correlation x 100; avg is the evaluation's mean over its tasks."),
    "ablation": Kind(_ablation_cells, "RSUM: sum of the six recalls; eccv avg: mean of the six ECCV Caption numbers; "
                     "image-retrieval avg R@1: mean R@1 over the image-retrieval benchmarks; sts avg spearman: the STS "
                     "average (x 100).", column_group=lambda d, m: _ABLATION_CELLS.index((d, m))),
    "person": Kind(_person_cells, _PERSON_UNITS, paper="person"),
    "zero-shot": Kind(_zero_shot_cells, "Zero-shot classes: t2i AP@k = share of the class's images among the top k "
                      "for its class-mean caption query; i2t top-1 = zero-shot classification accuracy; percent.",
                      direction_in_header=True, directions=("t2i", "i2t")),
    "mmref-ablation": Kind(_person_cells, _PERSON_UNITS, variant_columns=True, paper="person"),
    "resources": Kind(_resources_cells, "Time per epoch: the epoch's optimizer steps (data waits included, validation "
                      "excluded), mean over epochs; host memory: peak resident memory of the training process and its "
                      "data-loader workers; GPU memory: peak CUDA memory allocated (CUDA runs only).",
                      paper="resources", column_group=lambda d, m: _RESOURCE_ORDER.index(m)),
    "cross-domain": Kind(_cross_domain_cells, "Cross-domain text-to-image person retrieval: each row is a model trained "
                         "on the dataset it names, each column group the test split of a dataset (the row's own "
                         "dataset is in-domain, the others cross-domain); R@1 (CMC), mAP and mINP in percent; "
                         "'+ refinement' = re-ranked with the training set's references.", paper="none",
                         row_keys=("student", "label", "train_dataset")),
}

if tuple(KINDS) != TABLE_KINDS:  # the registry and softref.names list the same kinds, in one order
    raise ImportError(f"softref.tables.kinds: KINDS {list(KINDS)} differ from softref.names.TABLE_KINDS {list(TABLE_KINDS)}")
