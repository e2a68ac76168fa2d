# Training: one job per (experiment, seed). A killed job resumes from its run folder's last.pt.
# An experiment with retrain_on_trainval is then trained again on train + val (rule retrain) for
# the epochs its run selected on val; its evaluations read that model.
# The jobs' message lists the switches where a run may follow or leave the public code's way, and
# what decides the student's input (size, augmentation, temperature), so a dry run (snakemake -n)
# shows them for every training it plans.


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint=paths.CHECKPOINT,
        train_log=paths.TRAIN_LOG,
    params:
        run=train_params,
        switches=train_switches,
    message:
        "train {wildcards.experiment} seed {wildcards.seed} (resources: gpu={resources.gpu}, threads={threads}): {params.switches}"
    threads: 2
    resources:
        gpu=train_gpus,
    log:
        "logs/train/{experiment}/seed-{seed}.log",
    benchmark:
        "benchmarks/train/{experiment}/seed-{seed}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/train.py"


rule retrain:
    input:
        unpack(retrain_inputs),
    output:
        checkpoint=paths.RETRAIN_CHECKPOINT,
        train_log=paths.RETRAIN_LOG,
    wildcard_constraints:
        experiment=RETRAIN_EXPERIMENTS,
    params:
        run=train_params,
        switches=train_switches,
    message:
        "retrain {wildcards.experiment} seed {wildcards.seed} (resources: gpu={resources.gpu}, threads={threads}): {params.switches}"
    threads: 2
    resources:
        gpu=train_gpus,
    log:
        "logs/retrain/{experiment}/seed-{seed}.log",
    benchmark:
        "benchmarks/retrain/{experiment}/seed-{seed}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/retrain.py"
