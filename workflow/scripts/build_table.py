"""Build one retrieval table (long CSV + wide Markdown) from its evaluation JSONs."""
from pathlib import Path

from softref.tables.builder import build_retrieval_table
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    tb = cfg.tables[snakemake.wildcards.table]
    rows = []
    for ex_name in tb.experiments:
        ex = cfg.experiments[ex_name]
        student = cfg.students[ex.student]
        for bm_name in tb.benchmarks:
            bm = cfg.benchmarks[bm_name]
            rows.append(
                {
                    "eval": f"results/runs/{ex_name}/eval/{bm_name}.json",
                    "student": student.name,
                    "paper_model": student.paper_model,
                    "method": ex.method,
                    "dataset": bm.dataset,
                    "paper_dataset": bm.paper_dataset,
                }
            )
    build_retrieval_table(tb.name, rows, Path(snakemake.output.csv), Path(snakemake.output.md), label=tb.label)
