# Training: one job per experiment. A killed job resumes from results/runs/{experiment}/last.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint="results/runs/{experiment}/checkpoint.pt",
        train_log="results/runs/{experiment}/train_log.csv",
    params:
        run=train_params,
    threads: 2
    resources:
        gpu=lambda wildcards: CFG.experiments[wildcards.experiment].gpus,
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/train.py"
