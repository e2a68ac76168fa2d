# Training: one job per experiment. A killed job resumes from results/runs/{experiment}/last.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint=paths.CHECKPOINT,
        train_log=paths.TRAIN_LOG,
    params:
        run=train_params,
    threads: 2
    resources:
        gpu=train_gpus,
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/train.py"
