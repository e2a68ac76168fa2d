# Training: one job per experiment. A killed job resumes from results/runs/{experiment}/last.pt.
# An experiment with retrain_on_trainval is then trained again on train + val (rule retrain) for
# the epochs its run selected on val; its evaluations read that model.
# The message shows what decides the student's input (size, augmentation, temperature): a dry run
# lists it for every train job.


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint=paths.CHECKPOINT,
        train_log=paths.TRAIN_LOG,
    params:
        run=train_params,
    message:
        "train experiment={wildcards.experiment}, gpu={resources.gpu}: student {params.run[student][architecture]}, "
        "image_size {params.run[student][image_size]}, augment {params.run[experiment][augment]}, "
        "tau {params.run[experiment][tau_mode]} {params.run[experiment][tau]}"
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
    message:
        "retrain experiment={wildcards.experiment}, gpu={resources.gpu}: on train + val for the epochs selected in "
        "{input.selection}; student {params.run[student][architecture]}, image_size "
        "{params.run[student][image_size]}, augment {params.run[experiment][augment]}, "
        "tau {params.run[experiment][tau_mode]} {params.run[experiment][tau]}"
    threads: 2
    resources:
        gpu=train_gpus,
    log:
        "logs/retrain/{experiment}.log",
    benchmark:
        "benchmarks/retrain/{experiment}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/retrain.py"
