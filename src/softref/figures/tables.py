"""The tables as figures (a bar per method and number, its 95 % interval as an error bar, the paper's
number beside it) and as HTML for the report (the wide Markdown, rendered).

Both read what the table rule wrote: the long CSV (:data:`softref.tables.CSV_COLUMNS`) and the
Markdown; nothing is recomputed, so a figure shows exactly the table's numbers.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pandas as pd

from softref.figures.style import colour, figure, save
from softref.files import write_text_atomic

__all__ = ["markdown_html", "plot_table_values", "read_table_csv", "values_height"]

_COLUMNS = 4
_REQUIRED = ("method", "dataset", "direction", "metric", "value", "paper_value", "ci_low", "ci_high")


def read_table_csv(path: Path) -> pd.DataFrame:
    """A table's long CSV; an error names the file and the missing columns."""
    frame = pd.read_csv(Path(path), keep_default_na=False, na_values=[""])
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"{path}: expected rows with columns {list(_REQUIRED)}; found {len(frame)} row(s), "
                         f"missing {missing}")
    return frame


def _groups(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The table's numbers, (dataset, direction, metric), in the CSV's order."""
    return list(dict.fromkeys(zip(frame["dataset"], frame["direction"], frame["metric"])))


def values_height(num_groups: int) -> float:
    """Height (inches) of a values figure with ``num_groups`` panels."""
    rows = math.ceil(num_groups / _COLUMNS)
    return 0.9 + 1.6 * rows


def _finite(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _panel(ax, rows: pd.DataFrame, methods: list[str]) -> bool:
    """Bars of one number; returns whether a paper value was drawn."""
    paper_drawn = False
    for i, method in enumerate(methods):
        row = rows[rows["method"] == method]
        if row.empty:
            continue
        r = row.iloc[0]
        err = None
        if _finite(r["ci_low"]) and _finite(r["ci_high"]):
            err = [[max(0.0, r["value"] - r["ci_low"])], [max(0.0, r["ci_high"] - r["value"])]]
        ax.bar(i, r["value"], width=0.42, color=colour(i), yerr=err, capsize=2, error_kw={"lw": 0.8})
        top = max(r["value"], r["ci_high"]) if err is not None else r["value"]
        ax.text(i, top, f"{r['value']:.1f}", ha="center", va="bottom", fontsize=5.5)
        if _finite(r["paper_value"]):
            ax.bar(i + 0.42, r["paper_value"], width=0.42, color="white", edgecolor=colour(i), hatch="////", lw=0.8)
            ax.text(i + 0.42, r["paper_value"], f"{r['paper_value']:.1f}", ha="center", va="bottom", fontsize=5.5)
            paper_drawn = True
    ax.set_xticks([])
    ax.set_xlim(-0.6, len(methods) - 0.2)
    return paper_drawn


def plot_table_values(csv_path: Path, *, title: str, out: Path, dpi: int) -> Path:
    """One panel per number of the table (dataset, direction, metric), a bar per method with its 95 %
    interval (``ci_low``..``ci_high``) as error bar and the paper's value as a hatched bar beside."""
    frame = read_table_csv(csv_path)
    methods = list(dict.fromkeys(frame["method"]))
    groups = _groups(frame)
    several = len({d for d, _, _ in groups}) > 1
    ncols = min(_COLUMNS, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    with figure(values_height(len(groups)), nrows, ncols) as (fig, axes):
        paper = False
        for k, ax in enumerate(axes.flat):
            if k >= len(groups):
                ax.set_visible(False)
                continue
            dataset, direction, metric = groups[k]
            rows = frame[(frame["dataset"] == dataset) & (frame["direction"] == direction) & (frame["metric"] == metric)]
            paper |= _panel(ax, rows, methods)
            ax.set_title(f"{dataset}\n{direction} {metric}" if several else f"{direction} {metric}")
        from matplotlib.patches import Patch

        handles = [Patch(color=colour(i), label=m) for i, m in enumerate(methods)]
        if paper:
            handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="////", label="paper"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), frameon=False)
        fig.suptitle(f"{title}: error bars are 95 % intervals (seeds, or one run's queries)", fontsize=8.5)
        return save(fig, out, dpi)


def _inline(text: str) -> str:
    """Escaped text with `code` spans and **bold** as HTML."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_html(lines: list[str]) -> str:
    header, rule, *body = lines
    align = ["right" if c.endswith(":") else "left" for c in _cells(rule)]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(header)) + "</tr>"]
    for line in body:
        cells = _cells(line)
        out.append("<tr>" + "".join(f'<td style="text-align:{align[min(i, len(align) - 1)]}">{_inline(c)}</td>'
                                    for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(out + ["</table>"])


def markdown_html(md_path: Path, out: Path) -> Path:
    """Render a table's Markdown (headings, paragraphs, pipe tables) as a standalone HTML page."""
    blocks, current = [], []
    for line in Path(md_path).read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    parts = []
    for block in blocks:
        if block[0].startswith("#"):
            level = min(len(block[0]) - len(block[0].lstrip("#")), 6)
            parts.append(f"<h{level}>{_inline(block[0].lstrip('#').strip())}</h{level}>")
        elif block[0].startswith("|") and len(block) >= 2:
            parts.append(_table_html(block))
        else:
            parts.append("<p>" + "<br>\n".join(_inline(line) for line in block) + "</p>")
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>{style}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return write_text_atomic(out, page)
