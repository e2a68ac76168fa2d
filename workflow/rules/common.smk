# Config validation, typed config, input functions and wildcard constraints shared by all rules.
import re
import sys
from pathlib import Path

# The checkout's package is the code that runs: here for parsing, and in every job (local or on
# a cluster, with or without --sdm conda) through PYTHONPATH, which the jobs inherit (envvars passes
# it to remote executors) and which Python reads before any installed copy of softref.
# First on sys.path even when it is there already, later (an editable install's .pth entry comes
# after PYTHONPATH, so a softref found on PYTHONPATH would otherwise win).
SRC = str(Path(workflow.basedir) / "src")
sys.path[:] = [SRC] + [p for p in sys.path if p != SRC]

from softref.workflow import use_package_from

use_package_from(SRC)


envvars:
    "PYTHONPATH",


from softref import paths
from softref.config import TRAINING_IGNORES, load_config, validate_raw
from softref.names import RETRAIN_SPLITS
from softref.preflight import is_local_path, is_student_path, preflight

# softref's own check (`softref check-config`: the package's schema, the cross references, finite
# numbers, formats and their options, splits, the weight and dataset files): every problem is
# listed at once, each with its key path, before any job starts. A job that Snakemake starts on a
# cluster node parses this file again; it only needs the typed config.
if workflow.is_main_process:
    CFG = preflight(config)
else:
    CFG = load_config(validate_raw(config))


def _alternatives(names):
    """A regex matching exactly one of ``names`` (never empty, so constraints stay valid)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!x)x"


IMAGE_TEACHERS = _alternatives(n for n, t in CFG.teachers.items() if t.modality == "image")
TEXT_TEACHERS = _alternatives(n for n, t in CFG.teachers.items() if t.modality == "text")
# {teachers} of the references rules: "<image_teacher>+<text_teacher>".
TEACHER_PAIRS = rf"(?:{IMAGE_TEACHERS})\+(?:{TEXT_TEACHERS})"
# Experiments trained again on train + val (rule retrain) once their run has selected an epoch.
RETRAIN_EXPERIMENTS = _alternatives(n for n, ex in CFG.experiments.items() if ex.retrain_on_trainval)


wildcard_constraints:
    dataset=_alternatives(CFG.datasets),
    teacher=_alternatives(CFG.teachers),
    shard=r"\d+",
    experiment=_alternatives(CFG.experiments),
    seed=r"\d+",
    benchmark=_alternatives(CFG.benchmarks),
    table=_alternatives(CFG.tables),


def annotations_of(wildcards):
    """The raw annotation file (or root folder) a dataset's manifests are prepared from."""
    return CFG.datasets[wildcards.dataset].annotations_path


def dataset_params(wildcards):
    """The dataset block as configured: a change rewrites its manifests."""
    return config["datasets"][wildcards.dataset]


def teacher_weights(wildcards):
    """Local weights of ``{teacher}`` as an input (a missing file stops the DAG naming it); none for hub names."""
    weights = CFG.teachers[wildcards.teacher].weights
    return [weights] if is_local_path(weights) else []


def student_weights(experiment):
    """The local ``pretrained`` checkpoint of the experiment's student, as a list (none for a student
    trained from scratch or an open_clip tag)."""
    pretrained = CFG.students[CFG.experiments[experiment].student].pretrained
    return [pretrained] if pretrained and is_student_path(pretrained) else []


def extraction_params(wildcards):
    """What changes a shard's bytes: the teacher as configured, the storage dtype and the splits encoded
    (batch sizes and workers change only the speed, so editing them reruns nothing)."""
    return {"teacher": config["teachers"][wildcards.teacher], "dtype": config["features"]["dtype"],
            "splits": config["datasets"][wildcards.dataset].get("feature_splits", [])}


def feature_shards(dataset, teacher):
    """Every shard file of one (dataset, teacher)."""
    modality = CFG.teachers[teacher].modality
    return [str(p) for p in paths.feature_shards(dataset, teacher, modality, CFG.datasets[dataset].num_shards)]


def all_feature_shards(wildcards=None):
    """Every shard of every (dataset, teacher) pair the config declares."""
    return [p for d, ds in CFG.datasets.items() for t in ds.teachers for p in feature_shards(d, t)]


def _manifests(dataset, kinds=("images", "texts")):
    return {kind: str(paths.manifest(dataset, kind)) for kind in kinds}


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


def diagnostics_facts(wildcards):
    """The facts file whose captions' truth defines the matching pairs (the demo), or None (identity)."""
    return CFG.datasets[wildcards.dataset].diagnostics_facts


def all_diagnostics(wildcards=None):
    """The teacher diagnostics of every (dataset, image teacher + text teacher) pair an experiment trains with."""
    pairs = sorted({(ex.dataset, ex.image_teacher, ex.text_teacher) for ex in CFG.experiments.values()
                    if ex.image_teacher and ex.text_teacher})
    return [paths.DIAGNOSTICS.format(dataset=d, teachers=f"{i}+{t}") for d, i, t in pairs]


def references_params(wildcards):
    """What changes the references: the split and the missing-identity rule (not the index settings)."""
    return {key: config["references"][key] for key in ("split", "on_missing")}


def trainval_references_params(wildcards):
    """The references over the train + val identities (a retrain's): those splits, the missing-identity rule."""
    return {"split": list(RETRAIN_SPLITS), "on_missing": config["references"]["on_missing"]}


def all_references(wildcards=None):
    """References, FAISS index and neighbours of every (dataset, image teacher, text teacher) pair."""
    return [
        str(p)
        for d in CFG.datasets
        for i in CFG.teachers_of(d, "image")
        for t in CFG.teachers_of(d, "text")
        for p in paths.references(d, f"{i}+{t}").values()
    ]


def train_inputs(wildcards):
    """Manifests of the experiment's dataset; the student's local weights (so a missing file stops the
    DAG before any extraction); CUSA's teacher shards (or, online, the teachers' local weights);
    MMRef's teacher references."""
    ex = CFG.experiments[wildcards.experiment]
    inputs = _manifests(ex.dataset)
    if student_weights(wildcards.experiment):
        inputs["student_weights"] = student_weights(wildcards.experiment)
    for modality, teacher in (("image", ex.image_teacher), ("text", ex.text_teacher)):
        if ex.reads_shards(modality):
            inputs[f"{modality}_shards"] = feature_shards(ex.dataset, teacher)
        elif ex.uses_teacher_features():  # online: the teacher itself runs in the train job
            weights = CFG.teachers[teacher].weights
            if is_local_path(weights):
                inputs[f"{modality}_teacher_weights"] = weights
    if ex.needs_references():
        refs = paths.references(ex.dataset, ex.references_name)
        inputs["references"] = str(refs["references"])
        inputs["neighbours"] = str(refs["neighbours"])
    return inputs


def train_params(wildcards):
    """The experiment and its student as configured, less what cannot change the trained model
    (DataLoader workers, the table row's name and paper role): a change reruns the train job."""
    ex = {**config["experiments"][wildcards.experiment], "seed": int(wildcards.seed), "seeds": []}
    return {
        "experiment": {k: v for k, v in ex.items() if k not in TRAINING_IGNORES},
        "student": {k: v for k, v in config["students"][ex["student"]].items() if k != "paper_model"},
    }


def retrain_inputs(wildcards):
    """What train reads, with the selection run's checkpoint (its selected epoch) and, for MMRef, the
    teacher references and neighbours over the train + val identities."""
    ex = CFG.experiments[wildcards.experiment]
    inputs = train_inputs(wildcards)
    inputs["selection"] = paths.CHECKPOINT.format(experiment=wildcards.experiment, seed=wildcards.seed)
    if ex.needs_references():
        refs = paths.references(ex.dataset, ex.references_name, trainval=True)
        inputs["references"] = str(refs["references"])
        inputs["neighbours"] = str(refs["neighbours"])
    return inputs


def model_checkpoint(experiment, seed):
    """The checkpoint a run's evaluations read: its retrain's when the experiment retrains on train + val."""
    retrains = CFG.experiments[experiment].retrain_on_trainval
    return (paths.RETRAIN_CHECKPOINT if retrains else paths.CHECKPOINT).format(experiment=experiment, seed=seed)


def train_switches(wildcards):
    """The experiment's switches where softref and the public code can differ, and the student's input
    size, one line for the dry run's job listing (docs/reproducing.md lists them)."""
    ex = CFG.experiments[wildcards.experiment]
    size = CFG.students[ex.student].image_size
    return f"{ex.switches()}, image_size={'x'.join(str(v) for v in size) if size else 'native'}"


def train_gpus(wildcards):
    """GPUs the train job asks for: the experiment's training processes (more than one runs torchrun)."""
    return CFG.experiments[wildcards.experiment].gpus


def run_benchmarks(wildcards):
    """The benchmarks the run is evaluated on (its tables' cells); an error if none asks for it."""
    names = CFG.run_benchmarks(wildcards.experiment)
    if not names:
        folder = paths.EVALUATIONS.format(experiment=wildcards.experiment, seed=wildcards.seed)
        raise ValueError(f"{folder}: no table shows experiment {wildcards.experiment!r}, so it has no "
                         f"benchmarks to be evaluated on")
    return names


def evaluate_inputs(wildcards):
    """The trained checkpoint (the retrain's, for an experiment retrained on train + val), the
    manifests (with positives and pairs) of every benchmark's dataset and, for a training-cost
    benchmark, the log of the run that made the model."""
    names = run_benchmarks(wildcards)
    datasets = sorted({CFG.benchmarks[b].dataset for b in names})
    inputs = {
        "checkpoint": model_checkpoint(wildcards.experiment, wildcards.seed),
        "manifests": [m for d in datasets for m in _manifests(d, ("images", "texts", "positives", "pairs")).values()],
    }
    if any(CFG.benchmarks[b].protocol == "training-cost" for b in names):
        # The log of the run that made the evaluated model: the retrain's, where there is one.
        retrains = CFG.experiments[wildcards.experiment].retrain_on_trainval
        log = paths.RETRAIN_LOG if retrains else paths.TRAIN_LOG
        inputs["train_log"] = log.format(experiment=wildcards.experiment, seed=wildcards.seed)
    return inputs


def evaluate_params(wildcards):
    """The run's benchmarks as configured and the experiment's evaluation-only keys (refined or
    not, the uni-modal features): a change reruns the run's evaluations."""
    ex = CFG.experiments[wildcards.experiment]
    return {"benchmarks": {b: config["benchmarks"][b] for b in run_benchmarks(wildcards)},
            "refine": ex.refines(), "uni_features": ex.uni_features}


def table_inputs(wildcards):
    """The eval/ folder of every run the table shows (each holds a JSON per benchmark)."""
    tb = CFG.tables[wildcards.table]
    experiments = dict.fromkeys(e for e, _ in tb.cells(CFG.experiments, CFG.benchmarks))
    return [paths.EVALUATIONS.format(experiment=e, seed=s) for e in experiments for s in CFG.experiments[e].run_seeds]


def table_params(wildcards):
    """The table as configured, and its rows' names and paper roles: a change rebuilds it."""
    tb = CFG.tables[wildcards.table]
    rows = {}
    for e in tb.experiments:
        ex = CFG.experiments[e]
        rows[e] = {"label": ex.row_label, "paper_method": ex.paper_method,
                   "paper_model": CFG.students[ex.student].paper_model}
    columns = {b: CFG.benchmarks[b].paper_dataset for b in tb.benchmarks}
    return {"table": config["tables"][wildcards.table], "rows": rows, "paper_datasets": columns}


def all_tables(wildcards=None):
    return [pattern.format(table=t) for t in CFG.tables for pattern in (paths.TABLE_CSV, paths.TABLE_MD)]


# Figures (workflow/rules/figures.smk): softref.figures.plan decides which figures a config calls for
# and what each compares; these functions turn its choices into the rules' inputs and params.
from softref.figures import plan as figure_plan


def all_figures(wildcards=None):
    """Every figure of the run (results/figures/), the timings last: they read every other job's benchmark."""
    return figure_plan.all_figures(CFG) + [paths.TIMINGS_FIGURE, paths.TIMINGS_HTML]


def _train_logs(experiment):
    return [paths.TRAIN_LOG.format(experiment=experiment, seed=s) for s in CFG.experiments[experiment].run_seeds]


def run_curves_inputs(wildcards):
    """The train logs of every seed of ``{experiment}``."""
    return _train_logs(wildcards.experiment)


def run_curves_params(wildcards):
    return figure_plan.run_facts(CFG, wildcards.experiment)


def table_figures_inputs(wildcards):
    """The table's CSV and Markdown, and the train logs of every run of its experiments."""
    tb = CFG.tables[wildcards.table]
    return {"csv": paths.TABLE_CSV.format(table=wildcards.table), "md": paths.TABLE_MD.format(table=wildcards.table),
            "logs": [p for e in tb.experiments for p in _train_logs(e)]}


def table_figures_params(wildcards):
    return figure_plan.table_facts(CFG, wildcards.table)


def _embeddings(experiment, benchmark):
    bm = CFG.benchmarks[benchmark]
    return str(paths.embeddings(experiment, figure_plan.figure_seed(CFG, experiment), bm.dataset, bm.split))


def _comparison_inputs(comparison, table, kind):
    if comparison is None:
        raise ValueError(f"results/figures/{table}: the table has no {kind} figure (softref.figures.plan)")
    bm = CFG.benchmarks[comparison.benchmark]
    inputs = {"baseline": _embeddings(comparison.baseline, comparison.benchmark),
              "other": _embeddings(comparison.other, comparison.benchmark), **_manifests(bm.dataset)}
    eccv_dir = bm.options.get("eccv_dir")
    if kind == "case-study" and bm.protocol == "eccv" and eccv_dir is not None and not os.path.isabs(eccv_dir):
        inputs["eccv"] = str(Path(CFG.datasets[bm.dataset].root) / eccv_dir)
    return inputs


def tsne_inputs(wildcards):
    """Both runs' embeddings of the t-SNE's benchmark split, and the dataset's manifests."""
    return _comparison_inputs(figure_plan.tsne_comparison(CFG, wildcards.table), wildcards.table, "tsne")


def tsne_params(wildcards):
    return figure_plan.comparison_facts(CFG, "tsne", wildcards.table)


def case_study_inputs(wildcards):
    """Both runs' embeddings of the case study's benchmark split, the manifests (and ECCV's files)."""
    comparison = figure_plan.case_study_comparison(CFG, wildcards.table)
    return _comparison_inputs(comparison, wildcards.table, "case-study")


def case_study_params(wildcards):
    return figure_plan.comparison_facts(CFG, "case-study", wildcards.table)


def refinement_inputs(wildcards):
    """The refining run's embeddings (with its reference bank) and the benchmark dataset's manifests."""
    chosen = figure_plan.refinement_run(CFG, wildcards.table)
    if chosen is None:
        raise ValueError(f"results/figures/{wildcards.table}: the table has no refinement figure")
    experiment, benchmark = chosen
    return {"embeddings": _embeddings(experiment, benchmark), **_manifests(CFG.benchmarks[benchmark].dataset)}


def refinement_params(wildcards):
    return figure_plan.refinement_facts(CFG, wildcards.table)


def neighbours_inputs(wildcards):
    """The teacher references' neighbours table and the dataset's images manifest."""
    source = figure_plan.neighbours_source(CFG, wildcards.table)
    if source is None:
        raise ValueError(f"results/figures/{wildcards.table}: the table has no neighbours figure")
    dataset, teachers = source
    return {"neighbours": str(paths.references(dataset, teachers)["neighbours"]),
            "images": str(paths.manifest(dataset, "images"))}


def neighbours_params(wildcards):
    return figure_plan.neighbours_facts(CFG, wildcards.table)


def embeddings_inputs(wildcards):
    """The run's checkpoint and the manifests of the dataset whose split it encodes."""
    return {"checkpoint": paths.CHECKPOINT.format(experiment=wildcards.experiment, seed=wildcards.seed),
            **_manifests(wildcards.dataset)}


def timings_inputs(wildcards):
    """Every table and figure: the timings job runs last, when every benchmark file is written."""
    return all_tables() + figure_plan.all_figures(CFG)


def report_paper_of_experiment(wildcards):
    return figure_plan.paper_of(CFG, wildcards.experiment)


def report_paper_of_table(wildcards):
    return figure_plan.paper_of_table(CFG, wildcards.table)


def report_table_title(wildcards):
    return figure_plan.table_facts(CFG, wildcards.table)["title"]
