"""How well one (dataset, image teacher + text teacher) pair's similarities find the matching pairs
of the train split, and how peaked their soft labels are (softref teacher-diagnostics)."""
from pathlib import Path

from softref.cli import main
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    w, ds = snakemake.wildcards, cfg.datasets[snakemake.wildcards.dataset]
    image, _, text = w.teachers.partition("+")
    shards = Path(snakemake.input.image_shards[0]).parents[1]
    args = ["teacher-diagnostics", str(Path(snakemake.input.images).parent), "--image-features", str(shards / image),
            "--text-features", str(shards / text), "--split", "train", "--out", snakemake.output[0]]
    if snakemake.params.facts:
        args += ["--relevance", "facts", "--facts", snakemake.params.facts, "--root", ds.root]
    if main(args) != 0:
        raise RuntimeError(f"teacher-diagnostics failed for {w.dataset} {w.teachers}; see the log")
