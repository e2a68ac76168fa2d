# Config validation, typed config, input functions and wildcard constraints shared by all rules.
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The package is imported from the checkout: here for parsing, and in the rule scripts through
# workflow/scripts/softref (a link to src/softref on the scripts' search path), so a conda env
# built from envs/softref.yaml (--sdm conda) needs no install of the package itself.
SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from softref.config import load_config

validate(config, "../schemas/config.schema.yaml", set_default=True)
CFG = load_config(config)

MODALITY_OF = {"image": "images", "text": "texts"}


def _alternatives(names):
    """A regex matching exactly one of ``names`` (never empty, so constraints stay valid)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!x)x"


IMAGE_TEACHERS = _alternatives(n for n, t in CFG.teachers.items() if t.modality == "image")
TEXT_TEACHERS = _alternatives(n for n, t in CFG.teachers.items() if t.modality == "text")


wildcard_constraints:
    dataset=_alternatives(CFG.datasets),
    teacher=_alternatives(CFG.teachers),
    shard=r"\d+",
    experiment=_alternatives(CFG.experiments),
    benchmark=_alternatives(CFG.benchmarks),
    table=_alternatives(CFG.tables),


def annotations_of(wildcards):
    """The raw annotation file (or root folder) a dataset's manifests are prepared from."""
    return CFG.datasets[wildcards.dataset].annotations_path


def dataset_params(wildcards):
    """The dataset block as plain values for the prepare_manifest script."""
    ds = CFG.datasets[wildcards.dataset]
    return {
        "format": ds.format,
        "root": ds.root,
        "annotations": ds.annotations,
        "skip_missing": ds.skip_missing,
        "options": dict(ds.options),
    }


def _looks_local(weights):
    """A teacher weights value that names a file on disk (tracked as an input) rather than a hub name."""
    return (
        Path(weights).exists()
        or os.path.isabs(weights)
        or weights.startswith((".", "~", "models"))
        or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    )


def teacher_weights(wildcards):
    """Local weights of ``{teacher}`` as an input (a missing file stops the DAG naming it); none for hub names."""
    weights = CFG.teachers[wildcards.teacher].weights
    return [weights] if _looks_local(weights) else []


def feature_shards(dataset, teacher):
    """Every shard file of one (dataset, teacher)."""
    modality = MODALITY_OF[CFG.teachers[teacher].modality]
    n = CFG.datasets[dataset].num_shards
    return [f"results/features/{dataset}/{teacher}/{modality}-{shard}.h5" for shard in range(n)]


def all_feature_shards(wildcards=None):
    """Every shard of every (dataset, teacher) pair the config declares."""
    return [p for d, ds in CFG.datasets.items() for t in ds.teachers for p in feature_shards(d, t)]


def _manifests(dataset):
    return {
        "images": f"results/data/{dataset}/images.parquet",
        "texts": f"results/data/{dataset}/texts.parquet",
    }


def _extra_manifests(dataset):
    """The relevance (eccv positives) and sentence-pair tables prepare_manifest writes beside the manifests."""
    return {
        "positives": f"results/data/{dataset}/positives.parquet",
        "pairs": f"results/data/{dataset}/pairs.parquet",
    }


# {teachers} of the references rules: "<image_teacher>+<text_teacher>".
TEACHER_PAIRS = rf"(?:{IMAGE_TEACHERS})\+(?:{TEXT_TEACHERS})"


def teacher_pair(dataset, teachers):
    """``"<image>+<text>"`` -> (image teacher, text teacher), both encoding ``dataset``."""
    image, _, text = teachers.partition("+")
    for name, modality in ((image, "image"), (text, "text")):
        if name not in CFG.teachers_of(dataset, modality):
            raise ValueError(
                f"results/references/{dataset}/{teachers}: {name!r} is not a {modality} teacher of "
                f"dataset {dataset!r} (its {modality} teachers: {CFG.teachers_of(dataset, modality)})"
            )
    return image, text


def references_inputs(wildcards):
    """Manifests of ``{dataset}`` and every shard of the two teachers named by ``{teachers}``."""
    image, text = teacher_pair(wildcards.dataset, wildcards.teachers)
    return {
        **_manifests(wildcards.dataset),
        "image_shards": feature_shards(wildcards.dataset, image),
        "text_shards": feature_shards(wildcards.dataset, text),
    }


def all_references(wildcards=None):
    """References, FAISS index and neighbours of every (dataset, image teacher, text teacher) pair."""
    return [
        f"results/references/{d}/{i}+{t}.{ext}"
        for d in CFG.datasets
        for i in CFG.teachers_of(d, "image")
        for t in CFG.teachers_of(d, "text")
        for ext in ("h5", "faiss", "neighbours.parquet")
    ]


def train_inputs(wildcards):
    """Manifests of the experiment's dataset; CUSA's teacher shards; MMRef's teacher references."""
    ex = CFG.experiments[wildcards.experiment]
    inputs = _manifests(ex.dataset)
    if ex.method in ("csa", "usa", "cusa"):
        inputs["image_shards"] = feature_shards(ex.dataset, ex.image_teacher)
        inputs["text_shards"] = feature_shards(ex.dataset, ex.text_teacher)
    if ex.needs_references():
        stem = f"results/references/{ex.dataset}/{ex.references_name}"
        inputs["references"] = f"{stem}.h5"
        inputs["neighbours"] = f"{stem}.neighbours.parquet"
    return inputs


def evaluate_inputs(wildcards):
    """The trained checkpoint and the manifests (with positives and pairs) of the benchmark's dataset."""
    bm = CFG.benchmarks[wildcards.benchmark]
    return {
        "checkpoint": f"results/runs/{wildcards.experiment}/checkpoint.pt",
        **_manifests(bm.dataset),
        **_extra_manifests(bm.dataset),
    }


def table_inputs(wildcards):
    """Every evaluation JSON the table shows."""
    tb = CFG.tables[wildcards.table]
    return [f"results/runs/{e}/eval/{b}.json" for e, b in tb.cells(CFG.experiments, CFG.benchmarks)]


def train_params(wildcards):
    """The experiment and its student as configured: a change reruns the train job (params trigger)."""
    ex = config["experiments"][wildcards.experiment]
    return {"experiment": ex, "student": config["students"][ex["student"]]}


def evaluate_params(wildcards):
    """The benchmark as configured: a change reruns the evaluation."""
    return config["benchmarks"][wildcards.benchmark]


def table_params(wildcards):
    """The table as configured (kind, label, pairing): a change rebuilds it."""
    return config["tables"][wildcards.table]


def all_tables(wildcards=None):
    return [f"results/{t}.{ext}" for t in CFG.tables for ext in ("csv", "md")]
