"""Table builders: evaluation JSONs -> a long CSV and a readable Markdown table.

A retrieval table (the CUSA paper's Table 1 layout) has one block of columns per dataset
(i2t R@1 R@5 R@10, t2i R@1 R@5 R@10, RSUM) and one row per student and method. The long CSV
(:data:`RETRIEVAL_COLUMNS`) holds every number with the paper's value next to it where the
row maps to a model and dataset of the paper; the Markdown shows the measured value with the
paper's in parentheses and says which data produced the numbers, so a demo table is never
mistaken for MSCOCO results.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softref.atomic import write_text_atomic
from softref.tables.paper import paper_value

__all__ = ["RETRIEVAL_COLUMNS", "RetrievalEntry", "build_retrieval_table", "retrieval_rows", "table_title"]

logger = logging.getLogger(__name__)

RETRIEVAL_COLUMNS: tuple[str, ...] = (
    "table", "student", "method", "dataset", "direction", "metric", "value", "paper_value",
)
_DIRECTIONS = ("i2t", "t2i")
_METRICS = ("R@1", "R@5", "R@10")
# Methods in the order of the paper's ablation; any other name sorts after them.
_METHOD_ORDER = ("base", "csa", "usa", "cusa")
_ROW_KEYS = ("student", "method", "dataset")
_OPTIONAL_KEYS = ("paper_model", "paper_dataset", "experiment", "eval", "result")


@dataclass(frozen=True)
class RetrievalEntry:
    """One (experiment, benchmark) result placed in a table."""

    student: str
    method: str
    dataset: str
    paper_model: str | None
    paper_dataset: str | None
    result: Mapping[str, Any]
    source: str

    def sort_key(self) -> tuple:
        return _order(self.student, self.method) + (self.dataset,)

    def value(self, direction: str, metric: str) -> float:
        if direction == "both":
            return sum(float(self.result[d][m]) for d in _DIRECTIONS for m in _METRICS)
        return float(self.result[direction][metric])


def _order(student: str, method: str) -> tuple[str, int, str]:
    rank = _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)
    return (student, rank, method)


def table_title(table: str) -> str:
    """``"table1"`` -> ``"Table 1"``; other names unchanged."""
    match = re.fullmatch(r"table[-_ ]?(\d+)", str(table), flags=re.IGNORECASE)
    return f"Table {match.group(1)}" if match else str(table)


def _load_entry(index: int, row: Mapping[str, Any]) -> RetrievalEntry:
    where = f"row {index}"
    if not isinstance(row, Mapping):
        raise TypeError(f"{where}: expected a mapping, found {type(row).__name__}")
    unknown = sorted(set(row) - set(_ROW_KEYS) - set(_OPTIONAL_KEYS))
    missing = [k for k in _ROW_KEYS if not row.get(k)]
    if missing or unknown:
        raise ValueError(
            f"{where}: expected keys {list(_ROW_KEYS)} (+ optional {list(_OPTIONAL_KEYS)}); "
            f"missing {missing}, unknown {unknown}"
        )
    if ("eval" in row) == ("result" in row):
        raise ValueError(f"{where}: give exactly one of 'eval' (a JSON path) and 'result' (a dict)")
    if "eval" in row:
        path = Path(row["eval"])
        source = str(path)
        try:
            result = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: evaluation file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    else:
        result, source = row["result"], f"{where} (result)"
    if not isinstance(result, Mapping):
        raise ValueError(f"{source}: expected a JSON object, found {type(result).__name__}")
    if result.get("protocol", "image-text") != "image-text":
        raise ValueError(f"{source}: protocol expected 'image-text', found {result.get('protocol')!r}")
    for direction in _DIRECTIONS:
        block = result.get(direction)
        absent = [m for m in _METRICS if not isinstance(block, Mapping) or m not in block]
        if absent:
            raise ValueError(f"{source}: {direction} lacks {absent}; found {block!r}")
        for metric in _METRICS:
            value = block[metric]
            if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ValueError(f"{source}: {direction} {metric} expected a finite number, found {value!r}")
    entry = RetrievalEntry(
        student=str(row["student"]),
        method=str(row["method"]),
        dataset=str(row["dataset"]),
        paper_model=row.get("paper_model") or None,
        paper_dataset=row.get("paper_dataset") or None,
        result=result,
        source=source,
    )
    if "rsum" in result and abs(float(result["rsum"]) - entry.value("both", "RSUM")) > 1e-6:
        raise ValueError(
            f"{source}: rsum {result['rsum']} is not the sum of the six recalls ({entry.value('both', 'RSUM')})"
        )
    return entry


def retrieval_rows(table: str, entries: Sequence[RetrievalEntry]) -> list[dict[str, Any]]:
    """The long rows of a retrieval table, sorted (student, method, dataset, direction, metric)."""
    rows = []
    for entry in sorted(entries, key=RetrievalEntry.sort_key):
        cells = [(d, m) for d in _DIRECTIONS for m in _METRICS] + [("both", "RSUM")]
        for direction, metric in cells:
            rows.append(
                {
                    "table": table,
                    "student": entry.student,
                    "method": entry.method,
                    "dataset": entry.dataset,
                    "direction": direction,
                    "metric": metric,
                    "value": entry.value(direction, metric),
                    "paper_value": paper_value(
                        entry.paper_model, entry.method, entry.paper_dataset, direction, metric, table=table
                    ),
                }
            )
    return rows


def _atomic_write_text(text: str, path: Path) -> None:
    write_text_atomic(path, text)


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RETRIEVAL_COLUMNS)
    for row in rows:
        paper = row["paper_value"]
        writer.writerow(
            [row[c] for c in RETRIEVAL_COLUMNS[:6]]
            + [repr(round(float(row["value"]), 4)), "" if paper is None else repr(float(paper))]
        )
    return buffer.getvalue()


def _cell(value: float | None, paper: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if paper is None else f"{value:.2f} ({paper:.2f})"


def _md_text(table: str, label: str, entries: Sequence[RetrievalEntry], rows: Sequence[Mapping[str, Any]]) -> str:
    datasets = sorted({e.dataset for e in entries})
    lookup = {(r["student"], r["method"], r["dataset"], r["direction"], r["metric"]): r for r in rows}
    cells = [(d, m) for d in _DIRECTIONS for m in _METRICS] + [("both", "RSUM")]
    title = table_title(table)
    lines = [f"# {title}: {label}" if label else f"# {title}", ""]
    header = ["Student", "Method"] + [
        f"{ds} {m}" if d == "both" else f"{ds} {d} {m}" for ds in datasets for d, m in cells
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * 2 + "---:|" * (len(header) - 2))
    for student, method in sorted({(e.student, e.method) for e in entries}, key=lambda sm: _order(*sm)):
        row = [student, method]
        for ds in datasets:
            for d, m in cells:
                found = lookup.get((student, method, ds, d, m))
                row.append(_cell(None if found is None else found["value"], None if found is None else found["paper_value"]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    sources = []
    for ds in datasets:
        facts = sorted(
            {
                (
                    str(e.result.get("benchmark", "?")),
                    str(e.result.get("split", "?")),
                    e.result.get("num_images", "?"),
                    e.result.get("num_texts", "?"),
                )
                for e in entries
                if e.dataset == ds
            }
        )
        described = "; ".join(f"benchmark `{b}`, split `{s}` ({ni} images, {nt} captions)" for b, s, ni, nt in facts)
        sources.append(f"{ds}: {described}")
    lines.append("Numbers measured on " + "; ".join(sources) + ".")
    mapped = sorted(
        {(e.student, e.dataset, e.paper_model, e.paper_dataset) for e in entries if e.paper_model and e.paper_dataset}
    )
    if mapped:
        lines.append(
            "In parentheses: what the CUSA paper (AAAI 2024) reports for the same method with "
            + "; ".join(f"{pm} on {pd} (for {s} on {d})" for s, d, pm, pd in mapped)
            + "."
        )
    else:
        lines.append("No row maps to a model and dataset of the paper: no paper values shown.")
    lines.append("Recall in percent; RSUM is the sum of the six recalls.")
    return "\n".join(lines) + "\n"


def build_retrieval_table(
    table: str,
    rows: Sequence[Mapping[str, Any]],
    out_csv: Path,
    out_md: Path,
    *,
    label: str,
) -> list[dict[str, Any]]:
    """Write an image-text retrieval table as a long CSV and a wide Markdown table.

    Args:
        table: the table's name (``"table1"``); written in the CSV's ``table`` column and,
            as "Table 1", in the Markdown title. Its number picks the paper table whose
            values are preferred when a number appears in several.
        rows: one mapping per (experiment, benchmark): ``eval`` (path of the evaluation JSON
            of :func:`softref.evaluate.retrieval.evaluate_image_text`; or ``result``, the dict
            itself), ``student``, ``method``, ``dataset`` (the column label), and optional
            ``paper_model`` / ``paper_dataset`` (the paper's model and dataset this row
            stands for, e.g. ``CLIP-ViT-B/32`` / ``coco-5k``; None: no paper value).
        out_csv: the long CSV (:data:`RETRIEVAL_COLUMNS`), one row per (student, method,
            dataset, direction, metric); values rounded to 4 decimals.
        out_md: the Markdown table, values with 2 decimals.
        label: what the numbers are, for the title (e.g. "Demo: synthetic benchmark, not MSCOCO").

    Returns:
        The long rows (full precision). Output is deterministic: rows are sorted, whatever
        the order of ``rows``.
    """
    entries = [_load_entry(i, row) for i, row in enumerate(rows)]
    if not entries:
        raise ValueError(f"{table}: no rows to tabulate")
    seen: dict[tuple[str, str, str], str] = {}
    for entry in entries:
        key = (entry.student, entry.method, entry.dataset)
        if key in seen:
            raise ValueError(
                f"{table}: two results for student {key[0]!r}, method {key[1]!r}, dataset {key[2]!r}: "
                f"{seen[key]} and {entry.source}"
            )
        seen[key] = entry.source
    long_rows = retrieval_rows(table, entries)
    _atomic_write_text(_csv_text(long_rows), Path(out_csv))
    _atomic_write_text(_md_text(table, label, entries, long_rows), Path(out_md))
    logger.info("%s: %d results -> %s, %s", table, len(entries), out_csv, out_md)
    return long_rows
