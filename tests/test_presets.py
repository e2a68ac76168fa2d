"""The paper presets under configs/.

Each preset validates against the schema; the CUSA presets carry the published training settings
and build the paper tables they are meant to build; and a Snakemake dry run of each preset with
the SLURM profile (on placeholder data: fixture roots, empty weight files) plans the expected jobs,
with every train job asking for the GPUs its experiment names.

The dry runs (one per preset, all of its tables as targets) start together in one fixture, so the
file costs about as long as the slowest of them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from softref.config import read_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = REPO / "configs"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
PRESET_NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))

# The published settings (CUSA paper and public code): docs/reproducing.md.
COCO_BENCHMARKS = {
    # benchmark: (dataset format, protocol, paper_dataset, options)
    "coco-5k": ("karpathy", "image-text", "coco-5k", {}),
    "eccv-caption": ("eccv", "eccv", "eccv-caption", {"relevance": "eccv"}),
    "cub": ("cub", "image-retrieval", "cub", {"mode": "leave-one-out"}),
    "sop": ("sop", "image-retrieval", "sop", {"mode": "leave-one-out"}),
    "inaturalist": ("inaturalist", "image-retrieval", "inaturalist", {"mode": "leave-one-out"}),
    "inshop": ("inshop", "image-retrieval", "inshop", {"mode": "query-gallery"}),
    "sts": ("senteval-sts", "sts", "senteval", {}),
}
FLICKR_BENCHMARK = {"flickr30k-1k": ("karpathy", "image-text", "flickr30k-1k", {})}
COCO_TABLES = {  # table: (kind, benchmarks)
    "table1": ("retrieval", ["coco-5k"]),
    "table2": ("eccv", ["eccv-caption"]),
    "table3": ("image-retrieval", ["cub", "sop", "inaturalist", "inshop"]),
    "table4": ("sts", ["sts"]),
}
STUDENTS = {  # student: (open_clip architecture, pretrained, paper_model, global batch = 4 x per-GPU)
    "vitb32": ("ViT-B-32-quickgelu", "models/openai/ViT-B-32.pt", "CLIP-ViT-B/32", 4 * 128),
    "vitl14-336": ("ViT-L-14-336-quickgelu", "models/openai/ViT-L-14-336px.pt", "CLIP-ViT-L/14@336", 4 * 16),
}


@dataclass(frozen=True)
class CusaPreset:
    """What one CUSA preset must hold and what its dry run must plan."""

    student: str                                   # a key of STUDENTS
    dataset: str                                   # the training dataset
    epochs: int
    methods: tuple[str, ...]                       # the experiments' methods
    benchmarks: dict[str, tuple[str, str, str, dict[str, str]]]
    tables: dict[str, tuple[str, list[str]]]
    jobs: dict[str, int]                           # expected job counts of the dry run


def _coco(student: str) -> CusaPreset:
    # One evaluate job per run: each scores its run on every benchmark of its tables.
    return CusaPreset(
        student, "coco", 30, ("base", "cusa"), COCO_BENCHMARKS, COCO_TABLES,
        {"prepare_manifest": 7, "extract_image_features": 16, "extract_text_features": 16,
         "train": 2, "evaluate": 2, "table": 4},
    )


def _flickr(student: str) -> CusaPreset:
    # Appendix Table 7: 40 epochs for ViT-B/32, 30 for ViT-L/14@336 (the public config says 40).
    return CusaPreset(
        student, "flickr30k", 40 if student == "vitb32" else 30, ("base", "cusa"), FLICKR_BENCHMARK,
        {"table1": ("retrieval", ["flickr30k-1k"])},
        {"prepare_manifest": 1, "extract_image_features": 4, "extract_text_features": 4,
         "train": 2, "evaluate": 2, "table": 1},
    )


ABLATION_BENCHMARKS = ["coco-5k", "flickr30k-1k", "eccv-caption", "cub", "sop", "inaturalist", "inshop", "sts"]
CUSA_PRESETS = {
    "cusa-coco-vitb32": _coco("vitb32"),
    "cusa-coco-vitl14-336": _coco("vitl14-336"),
    "cusa-flickr-vitb32": _flickr("vitb32"),
    "cusa-flickr-vitl14-336": _flickr("vitl14-336"),
    "cusa-ablation-vitb32": CusaPreset(
        "vitb32", "coco", 30, ("base", "csa", "usa", "cusa"), {**COCO_BENCHMARKS, **FLICKR_BENCHMARK},
        {"table5": ("ablation", ABLATION_BENCHMARKS)},
        # Flickr30K is only evaluated: its manifest, no teacher features.
        {"prepare_manifest": 8, "extract_image_features": 16, "extract_text_features": 16,
         "train": 4, "evaluate": 4, "table": 1},
    ),
}
# MMRef presets: expected job counts and the (experiment, benchmark) evaluations their tables read
# (``pairing: dataset`` keeps each model on the test split of the dataset it trained on).
PERSON_MODELS = [f"{d}-{m}" for m in ("base", "mmref") for d in ("cuhk", "icfg", "rstpreid")]
PERSON_TESTS = ["cuhk-pedes-test", "icfg-pedes-test", "rstpreid-test"]
MMREF_PRESETS = {
    # Tables 1 and 3 and the cross-domain table (every person model on every test split); three
    # baselines beside the three MMRef models.
    "mmref-person": (
        {"prepare_manifest": 3, "extract_image_features": 10, "extract_text_features": 10,
         "build_references": 3, "build_neighbour_index": 3, "train": 10, "evaluate": 10, "table": 3},
        {*((e, b) for e in PERSON_MODELS for b in PERSON_TESTS),
         *((e, "cuhk-pedes-test") for e in ("cuhk-mmref-no-fusion", "cuhk-mmref-no-reconstruction",
                                            "cuhk-mmref-no-guidance", "cuhk-mmref-soft"))},
    ),
    # Every experiment selects its epoch on the released val classes, then retrains on trainval;
    # the MMRef ones need teacher references over the trainval classes too.
    "mmref-reed": (
        {"prepare_manifest": 2, "extract_image_features": 4, "extract_text_features": 4,
         "build_references": 2, "build_neighbour_index": 2, "build_trainval_references": 2,
         "build_trainval_neighbour_index": 2, "train": 4, "retrain": 4, "evaluate": 4, "table": 1},
        {("cub-base", "cub-zero-shot"), ("cub-mmref", "cub-zero-shot"),
         ("flowers-base", "flowers-zero-shot"), ("flowers-mmref", "flowers-zero-shot")},
    ),
}
# Presets that are neither: their dry run must succeed; their train jobs are checked like these.
OTHER_TARGET = "features"


def _raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def _targets(raw: dict[str, Any]) -> list[str]:
    tables = list(raw.get("tables") or {})
    return [f"results/{t}.csv" for t in tables] or [OTHER_TARGET]


# ----------------------------------------------------------------------------- settings


def test_every_cusa_preset_is_listed():
    assert sorted(n for n in PRESET_NAMES if n.startswith("cusa")) == sorted(CUSA_PRESETS)
    assert sorted(n for n in PRESET_NAMES if n.startswith("mmref")) == sorted(MMREF_PRESETS)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_validates(name):
    cfg = read_config(CONFIGS / f"{name}.yaml")
    assert all(not ds.root.startswith("resources/demo") for ds in cfg.datasets.values())


@pytest.mark.parametrize("name", sorted(CUSA_PRESETS))
def test_cusa_preset_settings(name):
    want = CUSA_PRESETS[name]
    cfg = read_config(CONFIGS / f"{name}.yaml")
    raw = _raw(name)
    architecture, pretrained, paper_model, batch = STUDENTS[want.student]
    assert sorted(ex.method for ex in cfg.experiments.values()) == sorted(want.methods)
    for ex_name, ex in cfg.experiments.items():
        assert ex_name == f"cusa-{want.dataset.replace('flickr30k', 'flickr')}-{want.student}-{ex.method}"
        assert ex.dataset == want.dataset
        assert (ex.lr, ex.min_lr, ex.weight_decay, ex.seed, ex.epochs) == (1e-5, 1e-6, 1e-4, 23, want.epochs)
        # The public code's arithmetic and inputs (docs/reproducing.md, "Where softref differs"): its
        # contrastive weighting, its caption cleaning for the student, the encoder's output for the
        # uni-modal benchmarks of models without USA.
        assert (ex.batch_size, ex.gather, ex.public_code_weighting) == (batch, False, True)
        assert ex.student_pre_caption is True and ex.uni_features == "encoder"
        assert ex.paper_method == ex.method
        assert raw["experiments"][ex_name]["gpus"] == 4
        assert "tau" not in raw["experiments"][ex_name]  # the student's own initial temperatures
        student = cfg.students[ex.student]
        assert (student.architecture, student.pretrained, student.paper_model) == (architecture, pretrained, paper_model)
        if ex.method == "base":
            assert ex.image_teacher is None and ex.text_teacher is None
            continue
        assert (ex.alpha, ex.beta, ex.teacher_tau) == (0.1, 0.5, 1.0)
        image, text = cfg.teachers[ex.image_teacher], cfg.teachers[ex.text_teacher]
        assert (image.kind, image.variant, image.output, image.weights) == (
            "unicom", "ViT-B/32", "features", "models/unicom/FP16-ViT-B-32.pt"
        )
        assert (text.kind, text.weights) == ("sentence-transformers", "models/all-mpnet-base-v2")
    assert set(cfg.benchmarks) == set(want.benchmarks)
    for bm_name, (fmt, protocol, paper_dataset, options) in want.benchmarks.items():
        bm = cfg.benchmarks[bm_name]
        assert cfg.datasets[bm.dataset].format == fmt
        assert (bm.protocol, bm.paper_dataset, dict(bm.options)) == (protocol, paper_dataset, options)
        if options.get("mode") != "query-gallery":
            assert bm.split == "test"
    assert set(cfg.tables) == set(want.tables)
    for tb_name, (kind, benchmarks) in want.tables.items():
        tb = cfg.tables[tb_name]
        assert (tb.kind, list(tb.benchmarks), sorted(tb.experiments)) == (kind, benchmarks, sorted(cfg.experiments))
        assert tb.label


def test_presets_share_what_they_name_alike():
    """Datasets, teachers, students and experiments of one name are the same in every CUSA preset,
    so presets run in one directory share those artifacts (the ablation reuses the COCO runs)."""
    seen: dict[tuple[str, str], tuple[str, Any]] = {}
    for name in sorted(CUSA_PRESETS):
        raw = _raw(name)
        for block in ("teachers", "students", "experiments", "datasets"):
            for key, value in (raw.get(block) or {}).items():
                if block == "datasets":  # which teachers encode it only decides what is extracted
                    value = {k: v for k, v in value.items() if k != "teachers"}
                first = seen.setdefault((block, key), (name, value))
                assert first[1] == value, f"{block}.{key} differs between {first[0]} and {name}"
    assert ("experiments", "cusa-coco-vitb32-cusa") in seen


# ----------------------------------------------------------------------------- dry runs


def _placeholder_root(fmt: str, annotations: str | None, dest: Path) -> Path:
    """A dataset root holding what the preset names (a fixture of the format where one exists)."""
    karpathy = {"dataset_coco.json": FIXTURES / "karpathy" / "coco",
                "dataset_flickr30k.json": FIXTURES / "karpathy" / "flickr30k"}
    source = karpathy.get(annotations or "") if fmt == "karpathy" else FIXTURES / fmt
    if source is not None and source.is_dir():
        shutil.copytree(source, dest)
    else:
        dest.mkdir(parents=True)
    if annotations and not (dest / annotations).exists():
        (dest / annotations).write_text("[]")  # a dry run only needs the file to exist
    return dest


def _localise(cfg: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The preset with its dataset roots and weight paths moved into ``tmp_path``."""
    for name, ds in cfg["datasets"].items():
        ds["root"] = str(_placeholder_root(ds["format"], ds.get("annotations"), tmp_path / "data" / name))
    weights = tmp_path / "weights"
    weights.mkdir()
    for name, teacher in cfg["teachers"].items():
        path = weights / name
        path.write_bytes(b"")
        teacher["weights"] = str(path)
    for name, student in (cfg.get("students") or {}).items():
        if student.get("pretrained"):
            path = weights / f"student-{name}.pt"
            path.write_bytes(b"")
            student["pretrained"] = str(path)
    return cfg


@dataclass(frozen=True)
class Job:
    """One job of a dry run's listing."""

    rule: str
    fields: dict[str, str]

    def pairs(self, key: str) -> dict[str, str]:
        """``wildcards`` / ``resources`` as a dict (``k=v, k=v``)."""
        return dict(item.split("=", 1) for item in self.fields.get(key, "").split(", ") if "=" in item)

    def files(self, key: str) -> list[str]:
        return [f for f in self.fields.get(key, "").split(", ") if f]


# A train (or retrain) job's listing is its message:
# "Job N: train EXPERIMENT seed S (resources: gpu=G, threads=T): k=v, ...".
_TRAIN_MESSAGE = re.compile(r"^Job \d+: (train|retrain) (\S+) seed (\d+) \(resources: ([^)]*)\): (.*)$")


def parse_jobs(text: str) -> list[Job]:
    """The jobs a ``snakemake -n`` listing shows: ``rule NAME:`` then indented ``key: value`` lines, and
    the train and retrain jobs' one-line messages (their switches under the field ``switches``)."""
    jobs: list[Job] = []
    fields: dict[str, str] | None = None
    for line in text.splitlines():
        message = _TRAIN_MESSAGE.match(line)
        if message:
            rule, experiment, seed, resources, switches = message.groups()
            jobs.append(Job(rule, {"wildcards": f"experiment={experiment}, seed={seed}", "resources": resources,
                                   "switches": switches}))
            fields = None
            continue
        match = re.match(r"^(?:local)?rule (\S+):$", line)
        if match:
            fields = {}
            jobs.append(Job(match.group(1), fields))
            continue
        match = re.match(r"^    (\w+): (.*)$", line)
        if fields is not None and match:
            fields[match.group(1)] = match.group(2)
        elif not line.startswith("    "):
            fields = None
    return jobs


@dataclass(frozen=True)
class DryRun:
    command: list[str]
    returncode: int
    text: str

    @property
    def jobs(self) -> list[Job]:
        return parse_jobs(self.text)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, DryRun]:
    """Every preset's dry run (all its tables as targets) with the SLURM profile, started together."""
    started = {}
    for name in PRESET_NAMES:
        tmp_path = tmp_path_factory.mktemp(name)
        cfg = _localise(_raw(name), tmp_path)
        config_path = tmp_path / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        run_dir = tmp_path / "run"  # no config.yaml here: the preset alone is the config
        run_dir.mkdir()
        # Targets before --configfile, which takes several values.
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
               "--directory", str(run_dir), *_targets(cfg), "--replace-workflow-config",
               "--configfile", str(config_path), "--workflow-profile", str(SLURM_PROFILE)]
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started[name] = (cmd, proc)
    runs = {}
    for name, (cmd, proc) in started.items():
        out, _ = proc.communicate(timeout=600)
        runs[name] = DryRun(cmd, proc.returncode, out)
    return runs


def _check_train_jobs(raw: dict[str, Any], run: DryRun) -> dict[str, Job]:
    """One train job per experiment a table shows (and one retrain job per experiment retrained on
    train + val), asking for the experiment's GPUs."""
    wanted = sorted({e for tb in (raw.get("tables") or {}).values() for e in tb.get("experiments", [])})
    trains = {job.pairs("wildcards")["experiment"]: job for job in run.jobs if job.rule == "train"}
    assert sorted(trains) == wanted, run.text
    retrains = {job.pairs("wildcards")["experiment"]: job for job in run.jobs if job.rule == "retrain"}
    assert sorted(retrains) == sorted(e for e in wanted if raw["experiments"][e].get("retrain_on_trainval")), run.text
    for experiment, job in [*trains.items(), *retrains.items()]:
        gpus = raw["experiments"][experiment].get("gpus", 1)
        resources = job.pairs("resources")
        assert resources.get("gpu") == str(gpus), (
            f"train job of {experiment}: expected resource gpu={gpus} (the experiment's gpus), "
            f"found {resources}"
        )
    return trains


def _switches(job: Job) -> dict[str, str]:
    return dict(item.split("=", 1) for item in job.fields["switches"].split(", "))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_dry_run(dry_runs, name):
    run = dry_runs[name]
    assert run.returncode == 0, f"{' '.join(run.command)}\n{run.text}"
    raw = _raw(name)
    _check_train_jobs(raw, run)
    if name in MMREF_PRESETS:
        jobs, evaluations = MMREF_PRESETS[name]
        counts = Counter(job.rule for job in run.jobs)
        assert dict(counts) == jobs, run.text
        assert _evaluations(name, run) == evaluations
        # An experiment retrained on train + val is evaluated with the retrained model.
        for job in (j for j in run.jobs if j.rule == "evaluate"):
            experiment, seed = job.pairs("wildcards")["experiment"], job.pairs("wildcards")["seed"]
            folder = "trainval/" if raw["experiments"][experiment].get("retrain_on_trainval") else ""
            assert f"results/runs/{experiment}/seed-{seed}/{folder}checkpoint.pt" in job.files("input"), job.fields
        return
    if name not in CUSA_PRESETS:
        return
    want = CUSA_PRESETS[name]
    # Every training the dry run plans shows the public code's switches.
    for experiment, job in _check_train_jobs(raw, run).items():
        switches = _switches(job)
        assert (switches["public_code_weighting"], switches["student_pre_caption"], switches["gather"]) == (
            "True", "True", "False"), (experiment, switches)
        assert switches["epochs"] == str(want.epochs) and switches["gpus"] == "4"
        assert switches["uni_features"] == "encoder"
    # A table rule may be one generic rule or one per table: count them together.
    counts = Counter("table" if re.fullmatch(r"table\d*", job.rule) else job.rule for job in run.jobs)
    assert dict(counts) == want.jobs, run.text
    tables = {job.files("output")[0]: job for job in run.jobs if job.rule.startswith("table")}
    for tb_name, tb in raw["tables"].items():
        job = tables[f"results/{tb_name}.csv"]
        expected = sorted(f"results/runs/{e}/seed-{raw['experiments'][e].get('seed', 23)}/eval"
                          for e in tb["experiments"])
        assert sorted(job.files("input")) == expected, run.text
    assert _evaluations(name, run) == {
        (e, b) for tb in raw["tables"].values() for e in tb["experiments"] for b in tb["benchmarks"]}


def _evaluations(name: str, run: DryRun) -> set[tuple[str, str]]:
    """The (experiment, benchmark) pairs the dry run's evaluate jobs score: one job per run, which
    writes the run's eval/ folder with a JSON per benchmark of ``Config.run_benchmarks``."""
    cfg = read_config(CONFIGS / f"{name}.yaml")
    found = set()
    for job in (j for j in run.jobs if j.rule == "evaluate"):
        experiment, seed = job.pairs("wildcards")["experiment"], job.pairs("wildcards")["seed"]
        assert job.files("output") == [f"results/runs/{experiment}/seed-{seed}/eval"], job.fields
        found |= {(experiment, b) for b in cfg.run_benchmarks(experiment)}
    return found


def test_person_train_jobs_are_the_fields_recipe(dry_runs):
    """The person preset trains at 384 x 128 with IRRA's augmentation and fixed tau: its dry run says so."""
    trains = [job for job in dry_runs["mmref-person"].jobs if job.rule == "train"]
    assert len(trains) == 10
    for job in trains:
        switches = _switches(job)
        assert (switches["image_size"], switches["augment"], switches["tau_mode"], switches["tau"]) == (
            "384x128", "reid", "fixed", "0.02"), switches
    # The Reed and CUSA presets keep the square student and no augmentation (the public CUSA code's choice).
    for name in PRESET_NAMES:
        if name != "mmref-person":
            for job in (j for j in dry_runs[name].jobs if j.rule in ("train", "retrain")):
                assert (_switches(job)["image_size"], _switches(job)["augment"]) == ("native", "none"), job.fields


def test_parse_jobs_reads_a_listing():
    text = (
        "[Mon Nov 23 16:23:12 2026]\n"
        "rule train:\n"
        "    input: a.parquet, b.parquet\n"
        "    output: results/runs/x/checkpoint.pt, results/runs/x/train_log.csv\n"
        "    wildcards: experiment=x\n"
        "    resources: tmpdir=/tmp, mem_mb=64000, slurm_partition=gpu, runtime=1440, gpu=4\n"
        "Shell command: None\n"
        "localrule table:\n"
        "    output: results/table1.csv, results/table1.md\n"
        "Job 7: retrain y seed 23 (resources: gpu=2, threads=8): epochs=60, augment=reid, image_size=384x128\n"
        "Reason: Missing output files\n"
    )
    train, table, retrain = parse_jobs(text)
    assert (retrain.rule, retrain.pairs("wildcards"), retrain.pairs("resources")) == (
        "retrain", {"experiment": "y", "seed": "23"}, {"gpu": "2", "threads": "8"})
    assert _switches(retrain) == {"epochs": "60", "augment": "reid", "image_size": "384x128"}
    assert (train.rule, train.pairs("wildcards"), train.pairs("resources")["gpu"]) == ("train", {"experiment": "x"}, "4")
    assert train.files("input") == ["a.parquet", "b.parquet"]
    assert (table.rule, table.files("output")[0]) == ("table", "results/table1.csv")
    message = "Job 3: train y seed 7 (resources: gpu=2, threads=4): method=cusa, epochs=30, public_code_weighting=True\n"
    (job,) = parse_jobs(message + "Reason: Missing output files\n")
    assert (job.rule, job.pairs("wildcards"), job.pairs("resources")) == ("train", {"experiment": "y", "seed": "7"},
                                                                         {"gpu": "2", "threads": "4"})
    assert _switches(job) == {"method": "cusa", "epochs": "30", "public_code_weighting": "True"}
