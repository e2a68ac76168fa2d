# Teacher features: one job per (dataset, teacher, shard), written as HDF5 shards.


rule extract_image_features:
    input:
        manifest=paths.IMAGES_MANIFEST,
        weights=teacher_weights,
    output:
        paths.IMAGE_SHARD,
    wildcard_constraints:
        teacher=IMAGE_TEACHERS,
    params:
        extraction=extraction_params,
    threads: 2
    log:
        "logs/extract_image_features/{dataset}/{teacher}/{shard}.log",
    benchmark:
        "benchmarks/extract_image_features/{dataset}/{teacher}/{shard}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/extract_image_features.py"


rule extract_text_features:
    input:
        manifest=paths.TEXTS_MANIFEST,
        weights=teacher_weights,
    output:
        paths.TEXT_SHARD,
    wildcard_constraints:
        teacher=TEXT_TEACHERS,
    params:
        extraction=extraction_params,
    threads: 2
    log:
        "logs/extract_text_features/{dataset}/{teacher}/{shard}.log",
    benchmark:
        "benchmarks/extract_text_features/{dataset}/{teacher}/{shard}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/extract_text_features.py"


rule features:
    input:
        all_feature_shards,
