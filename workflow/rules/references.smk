# Teacher references: one file per (dataset, image teacher + text teacher), then its FAISS index
# and the k nearest identities. {teachers} is "<image_teacher>+<text_teacher>"; naming the
# neighbours table after the pair keeps two pairs of one dataset from writing the same file.


rule build_references:
    input:
        unpack(references_inputs),
    output:
        paths.REFERENCES,
    wildcard_constraints:
        teachers=TEACHER_PAIRS,
    params:
        references=references_params,
    threads: 1
    log:
        "logs/build_references/{dataset}/{teachers}.log",
    benchmark:
        "benchmarks/build_references/{dataset}/{teachers}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_references.py"


rule build_neighbour_index:
    input:
        references=paths.REFERENCES,
    output:
        index=paths.NEIGHBOUR_INDEX,
        neighbours=paths.NEIGHBOURS,
    wildcard_constraints:
        teachers=TEACHER_PAIRS,
    params:
        index=config["references"]["index"],
    threads: 2
    log:
        "logs/build_neighbour_index/{dataset}/{teachers}.log",
    benchmark:
        "benchmarks/build_neighbour_index/{dataset}/{teachers}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_neighbour_index.py"


rule teacher_diagnostics:
    input:
        unpack(references_inputs),
    output:
        paths.DIAGNOSTICS,
    wildcard_constraints:
        teachers=TEACHER_PAIRS,
    params:
        facts=diagnostics_facts,
    log:
        "logs/teacher_diagnostics/{dataset}/{teachers}.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/teacher_diagnostics.py"


rule references:
    input:
        all_references,


# The same over the train + val identities, for experiments retrained on train + val (MMRef's
# neighbour sampler and soft targets need a reference for every identity they train on).


rule build_trainval_references:
    input:
        unpack(references_inputs),
    output:
        paths.TRAINVAL_REFERENCES,
    wildcard_constraints:
        teachers=TEACHER_PAIRS,
    params:
        references=trainval_references_params,
    threads: 1
    log:
        "logs/build_references/{dataset}/trainval/{teachers}.log",
    benchmark:
        "benchmarks/build_references/{dataset}/trainval/{teachers}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_references.py"


rule build_trainval_neighbour_index:
    input:
        references=paths.TRAINVAL_REFERENCES,
    output:
        index=paths.TRAINVAL_NEIGHBOUR_INDEX,
        neighbours=paths.TRAINVAL_NEIGHBOURS,
    wildcard_constraints:
        teachers=TEACHER_PAIRS,
    params:
        index=config["references"]["index"],
    threads: 2
    log:
        "logs/build_neighbour_index/{dataset}/trainval/{teachers}.log",
    benchmark:
        "benchmarks/build_neighbour_index/{dataset}/trainval/{teachers}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_neighbour_index.py"
