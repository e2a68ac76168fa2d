"""The run's ``benchmarks/`` timings per rule, as a figure and an HTML table for the report.

Every costly rule writes ``benchmarks/<rule>/<wildcards...>.tsv`` (Snakemake's ``benchmark:``: wall
seconds ``s``, peak resident memory ``max_rss`` in MB, ``cpu_time``); the rule is the first folder.
The files of earlier runs stay until ``make clean-results``, so a rule's row is its latest
measurement of every job that ever ran here. These are measurements: unlike the other figures they
change from run to run.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from softref.figures.style import figure, save
from softref.files import write_text_atomic

__all__ = ["per_rule", "plot_timings", "read_benchmarks", "timings_height", "timings_html"]


def read_benchmarks(folder: Path) -> pd.DataFrame:
    """One row per benchmark file under ``folder``: rule, job (the rest of its path), s, max_rss, cpu_time."""
    rows = []
    for path in sorted(Path(folder).rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or "s" not in frame.columns:
            raise ValueError(f"{path}: expected a Snakemake benchmark file with an 's' column")
        last = frame.iloc[-1]
        relative = path.relative_to(folder)
        rows.append({"rule": relative.parts[0], "job": str(relative.with_suffix(""))[len(relative.parts[0]) + 1:],
                     "s": float(last["s"]), "max_rss": pd.to_numeric(last.get("max_rss"), errors="coerce"),
                     "cpu_time": pd.to_numeric(last.get("cpu_time"), errors="coerce")})
    if not rows:
        raise ValueError(f"{folder}: no benchmark file (*.tsv) found")
    return pd.DataFrame(rows)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule (the index, by total time, largest first): jobs, total_s, mean_s, max_s, max_rss_mb."""
    summary = jobs.groupby("rule").agg(jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"),
                                       max_s=("s", "max"), max_rss_mb=("max_rss", "max"))
    return summary.sort_values("total_s", ascending=False)


def timings_height(num_rules: int) -> float:
    """Height (inches) of the timings figure with ``num_rules`` bars."""
    return 1.0 + 0.22 * num_rules


def plot_timings(jobs: pd.DataFrame, *, out: Path, dpi: int) -> Path:
    """Total wall seconds per rule (bars), with the job count and the slowest job beside each."""
    summary = per_rule(jobs)
    with figure(timings_height(len(summary))) as (fig, axes):
        ax = axes[0, 0]
        y = range(len(summary))
        ax.barh(list(y), summary["total_s"], color="0.4")
        ax.set_yticks(list(y), summary.index)
        ax.invert_yaxis()
        for i, (_, row) in enumerate(summary.iterrows()):
            ax.text(row["total_s"], i, f"  {row['jobs']} job(s), slowest {row['max_s']:.1f} s", va="center",
                    fontsize=6)
        ax.set_xlabel("wall seconds, all jobs of the rule added (jobs may have run in parallel)")
        ax.set_xlim(0, summary["total_s"].max() * 1.45)
        fig.suptitle(f"benchmarks/: {len(jobs)} jobs, {summary['total_s'].sum():.0f} s in all", fontsize=8.5)
        return save(fig, out, dpi)


def timings_html(jobs: pd.DataFrame, out: Path) -> Path:
    """The per-rule summary and every job's line as a standalone HTML page."""
    summary = per_rule(jobs).reset_index()

    def table(frame: pd.DataFrame) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>\n"
                       for row in frame.itertuples(index=False))
        return f"<table><tr>{head}</tr>\n{body}</table>"

    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>{style}</style></head><body>\n"
            "<h1>Timings per rule (benchmarks/)</h1>\n<p>Wall seconds (s) and peak resident memory (MB) of "
            "each job, as Snakemake's benchmark directive measured them.</p>\n"
            f"{table(summary)}\n<h2>Jobs</h2>\n{table(jobs.sort_values(['rule', 'job']))}\n</body></html>\n")
    return write_text_atomic(out, page)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.2f}"
    return str(value)
