"""Rendering a table: the long CSV (one number a row) and the wide Markdown (one row per method).

The CSV has the columns :data:`CSV_COLUMNS`; values are rounded to 4 decimals, ``paper_value``
is empty where the paper has no number for the row. The Markdown shows the measured value with
the paper's in parentheses and says which data produced the numbers, so a demo table is never
mistaken for MSCOCO results. Rows and columns are sorted, so the same inputs in any order give
byte-identical files.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from softref.tables.entries import VARIANTS, Entry
from softref.tables.kinds import AP_METRIC, KINDS, Cell
from softref.tables.paper import PERSON_METRICS, load_person_reference

__all__ = ["CSV_COLUMNS", "csv_text", "display_title", "markdown_text", "method_name", "sort_cells", "table_title",
           "versus_baseline"]

#: The long CSV: a number a row; ``seeds`` runs behind it, their ``std``; its 95 % interval
#: ``ci_low``..``ci_high`` (``interval``: "seeds" for the t-interval over runs, "queries" for one
#: run's bootstrap over queries, "" for none); ``vs_baseline``: "above" / "below" when the interval
#: and the baseline row's do not overlap, else "".
CSV_COLUMNS: tuple[str, ...] = ("table", "student", "method", "dataset", "direction", "metric", "value", "paper_value",
                                "seeds", "std", "ci_low", "ci_high", "interval", "vs_baseline")
_REFINED_SUFFIX = " + refinement"
_AVG = "avg"
_METHOD_ORDER = ("base", "csa", "usa", "cusa", "mmref")
# The papers' column order; other names sort alphabetically after these, "avg" last.
_DATASET_ORDER = (
    "coco-5k", "flickr30k-1k", "eccv-caption", "cub", "sop", "inshop", "inaturalist", "image-retrieval",
    "sts12", "sts13", "sts14", "sts15", "sts16", "sts12-16", "stsb", "sickr", "sts",
    "cuhk-pedes", "icfg-pedes", "rstpreid", "flowers",
)
_METRIC_ORDER = ("mAP@R", "R-P", "R@1", "R@5", "R@10", "mAP", "mINP", "top-1", "spearman", "RSUM", "avg")
_PREFIX_TITLES = {"mmref": "MMRef", "cusa": "CUSA"}


def table_title(table: str) -> str:
    """``"table1"`` -> ``"Table 1"``; other names unchanged."""
    match = re.fullmatch(r"table[-_ ]?(\d+)", str(table), flags=re.IGNORECASE)
    return f"Table {match.group(1)}" if match else str(table)


def display_title(table: str) -> str:
    """``"table2"`` -> ``"Table 2"``; ``"mmref/table1"`` -> ``"MMRef Table 1"``; others unchanged."""
    *prefix, name = str(table).split("/")
    return " ".join([_PREFIX_TITLES.get(p.lower(), p) for p in prefix if p] + [table_title(name)])


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The long CSV of a table's rows (:data:`CSV_COLUMNS`; values rounded to 4 decimals)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    def number(value: float | None) -> str:
        return "" if value is None else repr(round(float(value), 4))

    for row in rows:
        paper = row["paper_value"]
        writer.writerow(
            [row[c] for c in CSV_COLUMNS[:6]]
            + [number(row["value"]), "" if paper is None else repr(float(paper)), row.get("seeds", 1),
               number(row.get("std")), number(row.get("ci_low")), number(row.get("ci_high")), row.get("interval", ""),
               row.get("vs_baseline", "")]
        )
    return buffer.getvalue()


def _baseline_cell(c: Cell, baseline_label: str | None, cells: Sequence[Cell]) -> Cell | None:
    """The baseline row's number in ``c``'s column (its variant if it has one, else its plain ranking)."""
    if baseline_label is None or c.label == baseline_label:
        return None
    found = {x.variant: x for x in cells if (x.student, x.label, x.dataset, x.direction, x.metric)
             == (c.student, baseline_label, c.dataset, c.direction, c.metric)}
    return found.get(c.variant) or found.get("")


def versus_baseline(c: Cell, baseline_label: str | None, cells: Sequence[Cell]) -> str:
    """"above" / "below" when ``c``'s 95 % interval and the baseline row's same number's do not
    overlap (a difference the intervals support), else ""."""
    base = _baseline_cell(c, baseline_label, cells)
    if base is None or None in (c.ci_low, c.ci_high, base.ci_low, base.ci_high):
        return ""
    if c.ci_low > base.ci_high:
        return "above"
    if c.ci_high < base.ci_low:
        return "below"
    return ""


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
    if AP_METRIC.fullmatch(metric):
        return (len(_METRIC_ORDER), int(metric[3:]), "")
    return (len(_METRIC_ORDER) + 1, 0, metric)


def _column_key(kind: str, dataset: str, direction: str, metric: str) -> tuple:
    spec = KINDS[kind]
    return (spec.column_group(direction, metric), _dataset_rank(dataset), _rank(direction, spec.directions),
            _metric_rank(metric))


def _row_key(student: str, method: str, label: str, variant: str = "") -> tuple:
    return (student, _rank(method, _METHOD_ORDER), label, VARIANTS.index(variant))


def sort_cells(kind: str, cells: Sequence[Cell]) -> list[Cell]:
    """Cells in the table's order: rows (student, method in the papers' order, label, variant), then columns."""
    return sorted(cells, key=lambda c: _row_key(c.student, c.method, c.label, c.variant)
                  + _column_key(kind, c.dataset, c.direction, c.metric))


def method_name(label: str, variant: str) -> str:
    """A row's name: its label, + " + refinement" for refined numbers."""
    return label + _REFINED_SUFFIX if variant == "refined" else label


# ---------------------------------------------------------------- Markdown


def _fmt(value: float | None, paper: float | None, cell: Cell | None = None, mark: str = "") -> str:
    """``value ± half-width`` of its 95 % interval, ``*`` when it differs from the baseline, then
    ``(paper)``."""
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if cell is not None and cell.ci_low is not None and cell.ci_high is not None:
        text += f" ± {(cell.ci_high - cell.ci_low) / 2:.2f}"
    text += "*" if mark else ""
    return text if paper is None else f"{text} ({paper:.2f})"


def _interval_note(cells: Sequence[Cell], baseline_label: str | None) -> list[str]:
    kinds = {c.interval for c in cells if c.interval}
    if not kinds:
        return ["No number here carries an interval: with one run and no bootstrap, no difference is supported."]
    parts = []
    if "seeds" in kinds:
        counts = sorted({c.seeds for c in cells if c.interval == "seeds"})
        parts.append(f"over seeds, Student's t interval of the mean of n = {', '.join(map(str, counts))} runs "
                     f"(the Method column gives n)")
    if "queries" in kinds:
        parts.append("for a single run, the evaluation's percentile bootstrap over queries (half its width)")
    note = "±: half-width of the 95 % interval of the number: " + "; ".join(parts) + "."
    if baseline_label is not None:
        note += (f" *: the interval and the baseline row's ({baseline_label}) do not overlap, a difference the "
                 f"intervals support; an unmarked difference is not supported by them.")
    return [note]


def _header(kind: str, dataset: str, direction: str, metric: str, variant: str = "") -> str:
    parts = [dataset]
    if KINDS[kind].direction_in_header and direction in ("i2t", "t2i"):
        parts.append(direction)
    parts.append(metric)
    if variant:
        parts.append(f"({variant})")
    return " ".join(parts)


def _measured_on(entries: Sequence[Entry]) -> str:
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


def _machines(entries: Sequence[Entry]) -> str:
    """Where training-cost evaluations were measured (device, its name, processes, threads)."""
    found = sorted({
        f"{m.get('device')} ({m.get('device_name') or 'unknown'}), {m.get('processes')} process(es) x "
        f"{m.get('threads')} thread(s) of {m.get('cpus')} CPU(s)"
        for m in (e.result.get("machine") or {} for e in entries)
    })
    return "Trained on " + "; ".join(found) + "." if found else "The machine is not recorded."


def _paper_note(kind: str, entries: Sequence[Entry], cells: Sequence[Cell]) -> str:
    if KINDS[kind].paper == "none":
        return "No published numbers are packaged for this layout: none shown."
    if KINDS[kind].paper == "resources":
        note = _machines(entries)
        if any(c.paper is not None for c in cells):
            note += (" In parentheses: the appendix's Table 13 for the same method and teacher setting (CLIP ViT-B/32 "
                     "on MSCOCO, 4 V100 GPUs, batch 128 per GPU, mean of 3 runs of 5 epochs): a reference for the "
                     "ratios, not the setting measured here.")
        return note
    person = KINDS[kind].paper == "person"
    if not any(c.paper is not None for c in cells):
        if person:
            return ("No paper value in parentheses (shown only beside the refined rows of an experiment declared "
                    "paper_method: MMRef on a paper dataset).")
        return "No row maps to a model and dataset of the paper: no paper values shown."
    if not person:
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
        "in the refined columns of the experiment declared paper_method: MMRef (ablated runs get none)"
        if KINDS[kind].variant_columns
        else f"beside the '{_REFINED_SUFFIX.strip()}' rows of the experiment declared paper_method: MMRef"
    )
    return (
        f"In parentheses: the number published for MMRef (with its reference-based refinement) on {datasets}, "
        f"{where}; the paper's other numbers are not known."
    )


def _units_note(kind: str, entries: Sequence[Entry]) -> str:
    return KINDS[kind].units.format(benchmarks=len({e.benchmark for e in entries}))


def _references(entries: Sequence[Entry]) -> list[tuple[str, str, dict[tuple[str, str], float]]]:
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


def _row_name(name: str, cells: Sequence[Cell | None]) -> str:
    seeds = max((c.seeds for c in cells if c is not None), default=1)
    return f"{name} ({seeds} seeds)" if seeds > 1 else name


def markdown_text(kind: str, table: str, label: str, entries: Sequence[Entry], cells: Sequence[Cell],
                  baseline_label: str | None = None) -> str:
    """The wide Markdown table: a row per (student, label[, variant]), a column per (dataset,
    direction, metric) (per variant too for kinds with ``variant_columns``), then the notes."""
    lines = [f"# {display_title(table)}", ""]
    if label:
        lines += [label, ""]
    variant_columns = KINDS[kind].variant_columns
    if variant_columns:
        # Every metric of one dataset unrefined, then refined, as two readable blocks.
        columns = sorted(
            {(c.dataset, c.variant, c.direction, c.metric) for c in cells},
            key=lambda k: (_dataset_rank(k[0]), VARIANTS.index(k[1]), _column_key(kind, k[0], k[2], k[3])),
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
            name = method_name(label_, variant)
            found = [lookup.get((student, label_, variant) + col) for col in columns]
        values = [_fmt(None, None) if c is None else _fmt(c.value, c.paper, c, versus_baseline(c, baseline_label, cells))
                  for c in found]
        lines.append("| " + " | ".join([student, _row_name(name, found)] + values) + " |")
    references = _references(entries) if KINDS[kind].paper == "person" and not variant_columns else []
    for source, method, values in references:
        shown = [_fmt(values.get((d, m)), None) for d, _, m in columns]
        lines.append("| " + " | ".join([f"reference ({source})", method] + shown) + " |")
    lines.append("")
    lines.append(_measured_on(entries))
    lines.append(_paper_note(kind, entries, cells))
    if references:
        lines.append("Rows 'reference (source)': numbers published by others on the same datasets, not measured here.")
    lines.append(_units_note(kind, entries))
    lines += _interval_note(cells, baseline_label)
    return "\n".join(lines) + "\n"
