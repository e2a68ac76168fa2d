"""Tables: the papers' numbers and one builder that puts measured results next to them.

Every table, Table 1 included, is built the same way by :func:`build_table`: read the
evaluation JSON of every (experiment, benchmark) pair of the table and check it
(:mod:`softref.tables.entries`), derive the numbers its kind shows (:mod:`softref.tables.kinds`,
one function and one registry entry per kind), and write a long CSV and a wide Markdown table
(:mod:`softref.tables.render`). :func:`build_config_table` does it for a table of a config,
as the ``table`` rule does. The packaged paper values are in :mod:`softref.tables.paper`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from softref import paths
from softref.files import write_text_atomic
from softref.names import TABLE_KINDS
from softref.tables.entries import check_entries, load_entry
from softref.tables.kinds import KINDS
from softref.tables.paper import load_paper_values, load_person_reference, paper_value
from softref.tables.render import CSV_COLUMNS, csv_text, display_title, markdown_text, method_name, sort_cells

__all__ = [
    "CSV_COLUMNS",
    "TABLE_KINDS",
    "build_config_table",
    "build_table",
    "config_entries",
    "display_title",
    "load_paper_values",
    "load_person_reference",
    "paper_value",
]

logger = logging.getLogger(__name__)


def build_table(
    kind: str, table: str, *, label: str, entries: Sequence[Mapping[str, Any]], csv_path: Path, md_path: Path,
) -> list[dict[str, Any]]:
    """Write one table of kind ``kind`` as a long CSV and a wide Markdown table.

    Args:
        kind: one of :data:`TABLE_KINDS` (``retrieval``: CUSA's Table 1, ``eccv``, ``image-retrieval``,
            ``sts``, ``ablation``, ``person``, ``zero-shot``, ``mmref-ablation``, ``cross-domain``).
        table: the table's name (``"table2"``, ``"mmref/table1"``): the CSV's ``table`` column; the
            Markdown title ("Table 2", "MMRef Table 1"); its number picks the CUSA paper table whose
            value is preferred when a number appears in several (Table 5 repeats Table 1's RSUMs).
        label: what the numbers are (e.g. "Demo: synthetic benchmarks, not the paper's data"),
            written on the line under the Markdown title.
        entries: one mapping per (experiment, benchmark): ``student``, ``experiment``, ``method``
            (base, csa, usa, cusa, mmref), ``label`` (the row name), ``benchmark``, optional
            ``paper_model`` / ``paper_method`` / ``paper_dataset`` (the paper row the entry stands
            for; None: none), optional ``train_dataset`` (the dataset the experiment trained on;
            the cross-domain kind needs it), and ``eval`` (the evaluation JSON's path) or
            ``result`` (its dict).
        csv_path: the long CSV (:data:`CSV_COLUMNS`): one row per number; ``method`` is the
            entry's label, + " + refinement" for refined numbers; values rounded to 4 decimals;
            ``paper_value`` empty where the paper has no number for the row.
        md_path: the Markdown table, the paper's number in parentheses; person tables also list
            published numbers of other methods on the table's paper datasets.

    Returns:
        The long rows (full precision): the CSV's columns plus ``experiment``, ``label`` and
        ``variant``. The same inputs, in any order, give byte-identical files.

    Raises:
        ValueError: unknown kind; an entry with missing/unknown keys; a JSON whose protocol the
            kind does not read, whose metric rows lack one the kind needs, or that was written
            for another experiment or benchmark; two results for one cell.
        FileNotFoundError: an ``eval`` path that does not exist.
    """
    if kind not in KINDS:
        raise ValueError(f"{table}: kind expected one of {list(TABLE_KINDS)}, found {kind!r}")
    loaded = [load_entry(kind, i, row) for i, row in enumerate(entries)]
    if not loaded:
        raise ValueError(f"{table}: no entries to tabulate")
    check_entries(table, loaded, KINDS[kind].row_keys)
    cells = KINDS[kind].derive(table, loaded)
    seen: dict[tuple[str, ...], str] = {}
    for c in cells:
        if c.key() in seen:
            raise ValueError(
                f"{table}: two numbers for student {c.student!r}, label {c.label!r}, variant {c.variant!r}, "
                f"dataset {c.dataset!r}, {c.direction} {c.metric}: from {seen[c.key()]} and {c.source}"
            )
        seen[c.key()] = c.source
    cells = sort_cells(kind, cells)
    long_rows = [
        {"table": table, "student": c.student, "method": method_name(c.label, c.variant), "dataset": c.dataset,
         "direction": c.direction, "metric": c.metric, "value": c.value, "paper_value": c.paper,
         "experiment": c.experiment, "label": c.label, "variant": c.variant}
        for c in cells
    ]
    write_text_atomic(Path(csv_path), csv_text(long_rows))
    write_text_atomic(Path(md_path), markdown_text(kind, table, label, loaded, cells))
    logger.info("%s (%s): %d evaluations, %d numbers -> %s, %s", table, kind, len(loaded), len(long_rows),
                csv_path, md_path)
    return long_rows


def config_entries(cfg: Any, table: str, results: str | Path = paths.RESULTS) -> list[dict[str, Any]]:
    """The entries of ``tables.<table>`` of a typed config: one per (experiment, benchmark) it shows."""
    tb = cfg.tables[table]
    entries = []
    for ex_name, bm_name in tb.cells(cfg.experiments, cfg.benchmarks):
        ex, bm = cfg.experiments[ex_name], cfg.benchmarks[bm_name]
        student = cfg.students[ex.student]
        entries.append({
            "eval": str(paths.evaluation(ex_name, bm_name, results)), "student": student.name,
            "paper_model": student.paper_model, "experiment": ex_name, "method": ex.method, "label": ex.row_label,
            "paper_method": ex.paper_method, "benchmark": bm_name, "paper_dataset": bm.paper_dataset,
            "train_dataset": ex.dataset,
        })
    return entries


def build_config_table(cfg: Any, table: str, csv_path: Path, md_path: Path,
                       results: str | Path = paths.RESULTS) -> list[dict[str, Any]]:
    """Build ``tables.<table>`` of a typed config (:class:`softref.config.Config`) from its evaluations."""
    tb = cfg.tables[table]
    return build_table(tb.kind, tb.name, label=tb.label, entries=config_entries(cfg, table, results),
                       csv_path=csv_path, md_path=md_path)
