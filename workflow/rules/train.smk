# Training: one job per (experiment, seed). A killed job resumes from its run folder's last.pt.
# The job's message lists the switches where a run may follow or leave the public code's way, so a
# dry run (snakemake -n) shows them for every training it plans.


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
