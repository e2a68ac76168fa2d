"""Build one table (long CSV + wide Markdown) from its evaluation JSONs; its kind picks the layout."""
from pathlib import Path

from softref.tables.builder import build_retrieval_table
from softref.tables.kinds import build_table
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    tb = cfg.tables[snakemake.wildcards.table]
    entries = []
    for ex_name, bm_name in tb.cells(cfg.experiments, cfg.benchmarks):
        ex, bm = cfg.experiments[ex_name], cfg.benchmarks[bm_name]
        student = cfg.students[ex.student]
        entries.append(
            {
                "eval": f"results/runs/{ex_name}/eval/{bm_name}.json",
                "student": student.name,
                "paper_model": student.paper_model,
                "experiment": ex_name,
                "method": ex.method,
                "label": ex.row_label,
                "benchmark": bm_name,
                "dataset": bm.dataset,
                "paper_dataset": bm.paper_dataset,
            }
        )
    csv_path, md_path = Path(snakemake.output.csv), Path(snakemake.output.md)
    if tb.kind == "retrieval":
        keys = ("eval", "student", "paper_model", "method", "dataset", "paper_dataset")
        rows = [{k: e[k] for k in keys} for e in entries]
        build_retrieval_table(tb.name, rows, csv_path, md_path, label=tb.label)
    else:
        rows = [{k: v for k, v in e.items() if k != "dataset"} for e in entries]
        build_table(tb.kind, tb.name, label=tb.label, entries=rows, csv_path=csv_path, md_path=md_path)
