# Evaluation: one job per (experiment, seed). It scores the run's student on every benchmark its
# tables show (CFG.run_benchmarks) and writes the run's eval/ folder, a JSON per benchmark: the
# student is loaded once and each split encoded once, and every job pays Python's and torch's
# start-up once rather than once per benchmark.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        directory(paths.EVALUATIONS),
    params:
        evaluation=evaluate_params,
    threads: 2
    log:
        "logs/evaluate/{experiment}/seed-{seed}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}/seed-{seed}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/evaluate.py"
