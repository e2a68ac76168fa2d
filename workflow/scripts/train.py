"""Train one experiment's student (resumes from last.pt when a previous job was killed).

With one GPU or none the student trains in this process. When the profile grants the job more
than one GPU (resource ``gpu``), the effective config is written beside the run and the same
training runs under torchrun, one process per GPU (softref.train.launch.run_train_rule).
"""
from softref.train.launch import run_train_rule
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    run_train_rule(snakemake, cfg)
