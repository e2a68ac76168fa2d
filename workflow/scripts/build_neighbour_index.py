"""Index one references file with FAISS and write each identity's k nearest identities."""
from pathlib import Path

from softref.references import build_neighbour_index
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    index = cfg.references.index
    build_neighbour_index(
        Path(snakemake.input.references),
        Path(snakemake.output.index),
        Path(snakemake.output.neighbours),
        kind=index.kind,
        k=index.k,
        nlist=index.nlist,
        nprobe=index.nprobe,
        m=index.m,
        ef_construction=index.ef_construction,
        ef_search=index.ef_search,
        use_gpu=index.use_gpu,
        threads=snakemake.threads,
    )
