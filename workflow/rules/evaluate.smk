# Evaluation: one job per (experiment, seed, benchmark), a JSON of metrics each.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        paths.EVALUATION,
    params:
        evaluation=evaluate_params,
    threads: 2
    log:
        "logs/evaluate/{experiment}/seed-{seed}/{benchmark}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}/seed-{seed}/{benchmark}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/evaluate.py"
