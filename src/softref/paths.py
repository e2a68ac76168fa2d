"""Where the DAG's artifacts live: every path pattern defined once, for the rules and the code.

The Snakemake rules take their ``output:`` patterns from here and the input functions of
``workflow/rules/common.smk`` fill them in; the CLI (``python -m softref.train``) and the
tests find the same files through the same functions. Patterns are relative to the folder
Snakemake runs in (``--directory``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CASE_STUDY_FIGURE",
    "CHECKPOINT",
    "DIAGNOSTICS",
    "EMBEDDINGS",
    "EVALUATION",
    "EVALUATIONS",
    "FIGURES",
    "FEATURE_SHARD",
    "IMAGES_MANIFEST",
    "IMAGE_SHARD",
    "MANIFEST",
    "PAIRS_MANIFEST",
    "POSITIVES_MANIFEST",
    "TEXTS_MANIFEST",
    "TEXT_SHARD",
    "NEIGHBOUR_INDEX",
    "NEIGHBOURS",
    "NEIGHBOURS_FIGURE",
    "REFERENCES",
    "REFINEMENT_FIGURE",
    "RESULTS",
    "RETRAIN_CHECKPOINT",
    "RETRAIN_LOG",
    "RETRAIN_RUN",
    "RUN",
    "RUN_CURVES_FIGURE",
    "TABLE_CSV",
    "TABLE_CURVES_FIGURE",
    "TABLE_HTML",
    "TABLE_MD",
    "TABLE_VALUES_FIGURE",
    "TIMINGS_FIGURE",
    "TIMINGS_HTML",
    "TRAIN_LOG",
    "TRAINVAL_NEIGHBOUR_INDEX",
    "TRAINVAL_NEIGHBOURS",
    "TRAINVAL_REFERENCES",
    "TSNE_FIGURE",
    "embeddings",
    "evaluation",
    "feature_shards",
    "manifest",
    "modality_folder",
    "references",
    "retrain_dir",
    "run_dir",
]

RESULTS = "results"
#: ``kind``: images, texts, positives (ECCV-style extra relevance), pairs (sentence pairs).
MANIFEST = "results/data/{dataset}/{kind}.parquet"
IMAGES_MANIFEST = "results/data/{dataset}/images.parquet"
TEXTS_MANIFEST = "results/data/{dataset}/texts.parquet"
POSITIVES_MANIFEST = "results/data/{dataset}/positives.parquet"
PAIRS_MANIFEST = "results/data/{dataset}/pairs.parquet"
IMAGE_SHARD = "results/features/{dataset}/{teacher}/images-{shard}.h5"
TEXT_SHARD = "results/features/{dataset}/{teacher}/texts-{shard}.h5"
FEATURE_SHARD = "results/features/{dataset}/{teacher}/{modality}-{shard}.h5"
#: ``teachers``: ``<image teacher>+<text teacher>``.
REFERENCES = "results/references/{dataset}/{teachers}.h5"
NEIGHBOUR_INDEX = "results/references/{dataset}/{teachers}.faiss"
NEIGHBOURS = "results/references/{dataset}/{teachers}.neighbours.parquet"
#: The same over the train + val identities: what an MMRef retrain on train + val samples with.
TRAINVAL_REFERENCES = "results/references/{dataset}/trainval/{teachers}.h5"
TRAINVAL_NEIGHBOUR_INDEX = "results/references/{dataset}/trainval/{teachers}.faiss"
TRAINVAL_NEIGHBOURS = "results/references/{dataset}/trainval/{teachers}.neighbours.parquet"
#: One run of an experiment: its seed's folder (an experiment trains one run per seed).
#: How well a dataset's teachers' similarities find its matching pairs (softref.teachers.diagnostics).
DIAGNOSTICS = "results/diagnostics/{dataset}/{teachers}.json"
RUN = "results/runs/{experiment}/seed-{seed}"
CHECKPOINT = RUN + "/checkpoint.pt"
TRAIN_LOG = RUN + "/train_log.csv"
#: An experiment with ``retrain_on_trainval``: trained again on train + val for the epochs its run
#: selected; its evaluations read this checkpoint.
RETRAIN_RUN = RUN + "/trainval"
RETRAIN_CHECKPOINT = RETRAIN_RUN + "/checkpoint.pt"
RETRAIN_LOG = RETRAIN_RUN + "/train_log.csv"
#: A run's evaluations: one folder (written by one evaluate job), a JSON per benchmark in it.
EVALUATIONS = RUN + "/eval"
EVALUATION = EVALUATIONS + "/{benchmark}.json"
TABLE_CSV = "results/{table}.csv"
TABLE_MD = "results/{table}.md"
#: A run's cross-modal test embeddings of one split of a dataset (numpy .npz, no pickled objects),
#: the input of the figures that need rankings (t-SNE, case study, refinement).
EMBEDDINGS = RUN + "/embeddings/{dataset}/{split}.npz"
#: Figures (PNG) and the report's rendered tables: per experiment, per table, for the whole run.
FIGURES = "results/figures"
RUN_CURVES_FIGURE = "results/figures/runs/{experiment}/curves.png"
TABLE_CURVES_FIGURE = "results/figures/{table}/curves.png"
TABLE_VALUES_FIGURE = "results/figures/{table}/values.png"
TABLE_HTML = "results/figures/{table}/table.html"
TSNE_FIGURE = "results/figures/{table}/tsne.png"
CASE_STUDY_FIGURE = "results/figures/{table}/case-study.png"
REFINEMENT_FIGURE = "results/figures/{table}/refinement.png"
NEIGHBOURS_FIGURE = "results/figures/{table}/neighbours.png"
TIMINGS_FIGURE = "results/figures/timings.png"
TIMINGS_HTML = "results/figures/timings.html"

_MODALITY_FOLDERS = {"image": "images", "text": "texts"}


def modality_folder(modality: str) -> str:
    """A teacher's modality (``image`` / ``text``) as its shards name it (``images`` / ``texts``)."""
    return _MODALITY_FOLDERS[modality]


def _under(root: str | Path, pattern: str, **values: object) -> Path:
    """``pattern`` filled in, with ``results/`` replaced by ``root``."""
    relative = Path(pattern.format(**values)).relative_to(RESULTS)
    return Path(root) / relative


def manifest(dataset: str, kind: str, root: str | Path = RESULTS) -> Path:
    return _under(root, MANIFEST, dataset=dataset, kind=kind)


def feature_shards(dataset: str, teacher: str, modality: str, num_shards: int, root: str | Path = RESULTS) -> list[Path]:
    """Every shard of one (dataset, teacher); ``modality`` is the teacher's (image or text)."""
    folder = modality_folder(modality)
    return [_under(root, FEATURE_SHARD, dataset=dataset, teacher=teacher, modality=folder, shard=k)
            for k in range(num_shards)]


def references(dataset: str, teachers: str, root: str | Path = RESULTS, trainval: bool = False) -> dict[str, Path]:
    """The references file, its FAISS index and its neighbours table of ``<image>+<text>`` teachers
    (over the train + val identities with ``trainval``)."""
    patterns = ((TRAINVAL_REFERENCES, TRAINVAL_NEIGHBOUR_INDEX, TRAINVAL_NEIGHBOURS) if trainval
                else (REFERENCES, NEIGHBOUR_INDEX, NEIGHBOURS))
    return {key: _under(root, pattern, dataset=dataset, teachers=teachers)
            for key, pattern in zip(("references", "index", "neighbours"), patterns)}


def run_dir(experiment: str, seed: int, root: str | Path = RESULTS) -> Path:
    return _under(root, RUN, experiment=experiment, seed=seed)


def retrain_dir(experiment: str, seed: int, root: str | Path = RESULTS) -> Path:
    return _under(root, RETRAIN_RUN, experiment=experiment, seed=seed)


def evaluation(experiment: str, seed: int, benchmark: str, root: str | Path = RESULTS) -> Path:
    return _under(root, EVALUATION, experiment=experiment, seed=seed, benchmark=benchmark)


def embeddings(experiment: str, seed: int, dataset: str, split: str, root: str | Path = RESULTS) -> Path:
    return _under(root, EMBEDDINGS, experiment=experiment, seed=seed, dataset=dataset, split=split)
