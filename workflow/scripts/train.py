"""Train one experiment's student (resumes from last.pt when a previous job was killed).

With one GPU or none the student trains in this process. When the profile grants the job more
than one GPU (resource ``gpu``), the effective config is written beside the run and the same
training runs under torchrun, one process per GPU; arguments go as a list, never through a shell.
"""
import os
import subprocess
import sys
from pathlib import Path

from softref.train.trainer import train
from softref.workflow import rule_context, write_config

with rule_context(snakemake) as cfg:
    name = snakemake.wildcards.experiment
    ex = cfg.experiments[name]
    out_dir = Path(snakemake.output.checkpoint).parent
    gpus = int(snakemake.resources.get("gpu", 0) or 0)
    if gpus > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path = write_config(snakemake.config, out_dir / "config.yaml")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "softref.train", "--config", str(config_path), "--experiment", name,
        ]
        print("running:", " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=sys.stderr, stderr=sys.stderr, env=dict(os.environ))
    else:
        train(
            ex,
            cfg.students[ex.student],
            Path(cfg.datasets[ex.dataset].root),
            Path(snakemake.input.images),
            Path(snakemake.input.texts),
            [Path(p) for p in snakemake.input.get("image_shards", [])],
            [Path(p) for p in snakemake.input.get("text_shards", [])],
            out_dir,
            references=Path(snakemake.input.references) if snakemake.input.get("references") else None,
            neighbours=Path(snakemake.input.neighbours) if snakemake.input.get("neighbours") else None,
        )
