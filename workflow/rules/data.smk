# Raw data to manifests: the synthetic demo, and prepare_manifest for every dataset.


rule synthesize_demo:
    output:
        coco="resources/demo/coco/dataset_coco.json",
        eccv=directory("resources/demo/coco/eccv"),
        ground_truth="resources/demo/coco/ground_truth_stats.json",
        oracle="resources/demo/oracle_attributes.json",
        person="resources/demo/person/reid_raw.json",
        sts="resources/demo/sts/pairs.tsv",
        retrieval=directory("resources/demo/retrieval"),
    params:
        demo=config["demo"],
    log:
        "logs/synthesize_demo.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/synthesize_demo.py"


rule prepare_manifest:
    input:
        annotations_of,
    output:
        images=paths.IMAGES_MANIFEST,
        texts=paths.TEXTS_MANIFEST,
        positives=paths.POSITIVES_MANIFEST,
        pairs=paths.PAIRS_MANIFEST,
    params:
        dataset=dataset_params,
    log:
        "logs/prepare_manifest/{dataset}.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/prepare_manifest.py"
