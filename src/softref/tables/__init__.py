"""Tables: the papers' numbers and one builder that puts measured results next to them.

Every table, Table 1 included, is built the same way by :func:`build_table`: read the
evaluation JSON of every (experiment, benchmark) pair of the table and check it
(:mod:`softref.tables.entries`), derive the numbers its kind shows (:mod:`softref.tables.kinds`,
one function and one registry entry per kind), and write a long CSV and a wide Markdown table
(:mod:`softref.tables.render`). :func:`build_config_table` does it for a table of a config,
as the ``table`` rule does. The packaged paper values are in :mod:`softref.tables.paper`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from softref import paths
from softref.files import write_text_atomic
from softref.names import TABLE_KINDS
from softref.tables.entries import check_entries, load_entry
from softref.tables.kinds import KINDS, Cell
from softref.tables.paper import load_paper_values, load_person_reference, paper_value
from softref.tables.render import (
    CSV_COLUMNS,
    csv_text,
    display_title,
    markdown_text,
    method_name,
    sort_cells,
    versus_baseline,
)

__all__ = [
    "CSV_COLUMNS",
    "TABLE_KINDS",
    "build_config_table",
    "build_table",
    "combine_seeds",
    "config_entries",
    "display_title",
    "load_paper_values",
    "load_person_reference",
    "paper_value",
]

logger = logging.getLogger(__name__)


def _t95(n: int) -> float:
    """Two-sided 95 % quantile of Student's t with n - 1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def combine_seeds(per_seed: Mapping[int | None, Sequence[Cell]]) -> list[Cell]:
    """One cell per table position from the cells of each seed's runs: a position with n >= 2 runs
    shows their mean, their standard deviation and the 95 % t-interval of the mean over seeds; a
    position with one run keeps that run's value and its bootstrap interval over queries."""
    groups: dict[tuple[str, ...], list[Cell]] = {}
    for seed in sorted(per_seed, key=lambda s: (s is None, s)):
        for cell in per_seed[seed]:
            groups.setdefault(cell.key(), []).append(cell)
    out = []
    for cells in groups.values():
        if len(cells) == 1:
            out.append(cells[0])
            continue
        values = [c.value for c in cells]
        n, mean = len(values), sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = _t95(n) * std / math.sqrt(n)
        out.append(dataclasses.replace(cells[0], value=mean, ci_low=mean - half, ci_high=mean + half,
                                       interval="seeds", seeds=n, std=std,
                                       source="; ".join(c.source for c in cells)))
    return out


def build_table(
    kind: str, table: str, *, label: str, entries: Sequence[Mapping[str, Any]], csv_path: Path, md_path: Path,
    baseline: str | None = None,
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
            for; None: none), ``seed`` (the run's seed: entries of one experiment with several
            seeds are combined, :func:`combine_seeds`), optional ``train_dataset`` (the dataset the
            experiment trained on; the cross-domain kind needs it), and ``eval`` (the evaluation
            JSON's path) or ``result`` (its dict).
        csv_path: the long CSV (:data:`CSV_COLUMNS`): one row per number; ``method`` is the
            entry's label, + " + refinement" for refined numbers; values rounded to 4 decimals;
            ``paper_value`` empty where the paper has no number for the row.
        md_path: the Markdown table, the paper's number in parentheses; person tables also list
            published numbers of other methods on the table's paper datasets.
        baseline: the experiment whose row the others are compared with; a number whose 95 %
            interval does not overlap the baseline's same number is marked (None: the first
            entry's experiment).

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
    per_seed: dict[int | None, list[Cell]] = {}
    for seed in {e.seed for e in loaded}:
        cells = KINDS[kind].derive(table, [e for e in loaded if e.seed == seed])
        seen: dict[tuple[str, ...], str] = {}
        for c in cells:
            if c.key() in seen:
                raise ValueError(
                    f"{table}: two numbers for student {c.student!r}, label {c.label!r}, variant {c.variant!r}, "
                    f"dataset {c.dataset!r}, {c.direction} {c.metric}: from {seen[c.key()]} and {c.source}"
                )
            seen[c.key()] = c.source
        per_seed[seed] = cells
    cells = sort_cells(kind, combine_seeds(per_seed))
    baseline_label = _baseline_label(loaded, baseline)
    long_rows = [_long_row(table, c, baseline_label, cells) for c in cells]
    write_text_atomic(Path(csv_path), csv_text(long_rows))
    write_text_atomic(Path(md_path), markdown_text(kind, table, label, loaded, cells, baseline_label))
    logger.info("%s (%s): %d evaluations, %d numbers -> %s, %s", table, kind, len(loaded), len(long_rows),
                csv_path, md_path)
    return long_rows


def _baseline_label(entries: Sequence[Any], baseline: str | None) -> str | None:
    name = baseline or (entries[0].experiment if entries else None)
    labels = {e.label for e in entries if e.experiment == name}
    if baseline is not None and not labels:
        raise ValueError(f"baseline: experiment {baseline!r} has no entry in the table")
    return next(iter(labels)) if labels else None


def _long_row(table: str, c: Cell, baseline_label: str | None, cells: Sequence[Cell]) -> dict[str, Any]:
    return {"table": table, "student": c.student, "method": method_name(c.label, c.variant), "dataset": c.dataset,
            "direction": c.direction, "metric": c.metric, "value": c.value, "paper_value": c.paper,
            "seeds": c.seeds, "std": c.std, "ci_low": c.ci_low, "ci_high": c.ci_high, "interval": c.interval,
            "vs_baseline": versus_baseline(c, baseline_label, cells), "experiment": c.experiment, "label": c.label,
            "variant": c.variant}


def config_entries(cfg: Any, table: str, results: str | Path = paths.RESULTS) -> list[dict[str, Any]]:
    """The entries of ``tables.<table>`` of a typed config: one per (experiment, seed, benchmark) it shows."""
    tb = cfg.tables[table]
    entries = []
    for ex_name, bm_name in tb.cells(cfg.experiments, cfg.benchmarks):
        ex, bm = cfg.experiments[ex_name], cfg.benchmarks[bm_name]
        student = cfg.students[ex.student]
        for seed in ex.run_seeds:
            entries.append({
                "eval": str(paths.evaluation(ex_name, seed, bm_name, results)), "student": student.name,
                "paper_model": student.paper_model, "experiment": ex_name, "method": ex.method,
                "label": ex.row_label, "paper_method": ex.paper_method, "seed": seed, "benchmark": bm_name,
                "paper_dataset": bm.paper_dataset, "train_dataset": ex.dataset,
            })
    return entries


def build_config_table(cfg: Any, table: str, csv_path: Path, md_path: Path,
                       results: str | Path = paths.RESULTS) -> list[dict[str, Any]]:
    """Build ``tables.<table>`` of a typed config (:class:`softref.config.Config`) from its evaluations."""
    tb = cfg.tables[table]
    return build_table(tb.kind, tb.name, label=tb.label, entries=config_entries(cfg, table, results),
                       csv_path=csv_path, md_path=md_path, baseline=tb.baseline_experiment)
