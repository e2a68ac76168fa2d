"""Train one run (experiment, seed) again on train + val for the epochs it selected on val.

With one GPU or none it trains in this process; with more (resource ``gpu``), under torchrun on the
effective config written beside the run (``python -m softref.train --retrain``;
softref.train.launch.run_train_rule).
"""
from softref.train.launch import run_train_rule
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    run_train_rule(snakemake, cfg, retrain=True)
