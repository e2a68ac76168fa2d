"""Typed configuration: frozen dataclasses mirroring the blocks of ``config.yaml``.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types and fills defaults;
this module is the one place that turns the validated mapping into dataclasses and checks
what a schema cannot: cross references between blocks (a dataset naming an unknown teacher,
an experiment naming an unknown dataset). Errors name the key path and what was found.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from softref.teachers.base import TeacherSpec

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

METHODS = ("base", "csa", "usa", "cusa", "mmref")
PROTOCOLS = ("image-text", "eccv", "image-retrieval", "sts", "person", "zero-shot")
TABLE_KINDS = ("retrieval", "eccv", "image-retrieval", "sts", "ablation", "person", "zero-shot", "mmref-ablation")
# Which evaluation protocols each table kind reads.
TABLE_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "retrieval": ("image-text",),
    "eccv": ("eccv",),
    "image-retrieval": ("image-retrieval",),
    "sts": ("sts",),
    "ablation": ("image-text", "eccv", "image-retrieval", "sts"),
    "person": ("person",),
    "zero-shot": ("zero-shot",),
    "mmref-ablation": ("person",),
}


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or refers to something unknown."""


@dataclass(frozen=True)
class DemoConfig:
    """The embedded synthetic benchmark (``softref.data.synthetic``)."""

    enabled: bool = True
    seed: int = 0
    num_identities: int = 60
    images_per_identity: int = 4
    captions_per_image: int = 5
    image_size: int = 96
    person_size: tuple[int, int] = (128, 64)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    sts_pairs: int = 200


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset: where its raw annotations are and which teachers encode it."""

    name: str
    format: str
    root: str
    annotations: str | None = None
    teachers: tuple[str, ...] = ()
    num_shards: int = 1
    skip_missing: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def annotations_path(self) -> str:
        return str(Path(self.root) / self.annotations) if self.annotations else self.root


@dataclass(frozen=True)
class FeaturesConfig:
    """How teacher features are extracted and stored."""

    dtype: str = "float16"
    image_batch_size: int = 32
    text_batch_size: int = 64
    num_workers: int = 2
    store_tokens: bool = False


@dataclass(frozen=True)
class NeighbourIndexConfig:
    """The FAISS index over the multi-modal references (softref.references.index)."""

    kind: str = "flat"
    k: int = 10
    nlist: int | None = None
    nprobe: int | None = None
    m: int = 32
    ef_construction: int = 40
    ef_search: int | None = None
    use_gpu: bool | str = "auto"


@dataclass(frozen=True)
class ReferencesConfig:
    """Per-identity teacher references (softref.references.build) and their neighbour index."""

    split: str = "train"
    on_missing: str = "error"
    index: NeighbourIndexConfig = field(default_factory=NeighbourIndexConfig)


@dataclass(frozen=True)
class StudentConfig:
    """An open_clip student: architecture name and optional pretrained weights."""

    name: str
    architecture: str
    pretrained: str | None = None
    paper_model: str | None = None


@dataclass(frozen=True)
class MMRefConfig:
    """MMRef's switches and hyper-parameters (method ``mmref``); see docs/method/mmref.md."""

    global_fusion: bool = True
    local_reconstruction: bool = True
    reference_guidance: bool = True
    soft_targets: bool = False
    tau_proxy: float = 0.05
    fuse_weight: float = 1.0
    guidance_weight: float = 1.0
    reconstruction_weight: float = 1.0
    soft_tau: float = 0.05
    soft_mix: float = 0.5
    mask_prob: float = 0.15
    decoder_heads: int = 4
    reconstruction_context: int = 1
    samples_per_identity: int = 4
    neighbours_per_anchor: int = 1
    head_lr_scale: float = 1.0


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run: a student trained on a dataset with a method and its hyper-parameters."""

    name: str
    dataset: str
    student: str
    method: str = "cusa"
    image_teacher: str | None = None
    text_teacher: str | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-5
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    alpha: float = 0.10
    beta: float = 0.50
    teacher_tau: float = 1.0
    seed: int = 23
    gather: bool = True
    public_code_weighting: bool = False
    num_workers: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    gpus: int = 1
    mmref: MMRefConfig = field(default_factory=MMRefConfig)

    @property
    def row_label(self) -> str:
        """The experiment's row name in tables: its label, else its method."""
        return self.label or self.method

    @property
    def references_name(self) -> str:
        """``<image_teacher>+<text_teacher>``: the teacher references an mmref run reads."""
        return f"{self.image_teacher}+{self.text_teacher}"

    def needs_references(self) -> bool:
        """True when training reads the teacher references (mmref neighbours or soft targets)."""
        return self.method == "mmref" and (self.mmref.neighbours_per_anchor > 0 or self.mmref.soft_targets)


@dataclass(frozen=True)
class RefineConfig:
    """Reference-based refinement at retrieval (softref.evaluate.refine.refine_scores)."""

    enabled: bool = False
    k: int = 10
    tau: float = 0.1
    top_k: int = 100
    lam: float = 0.5


@dataclass(frozen=True)
class BenchmarkConfig:
    """An evaluation: a split of a dataset under a protocol."""

    name: str
    dataset: str
    split: str = "test"
    protocol: str = "image-text"
    paper_dataset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    refine: RefineConfig | None = None


@dataclass(frozen=True)
class TableConfig:
    """A table of the papers: which experiments on which benchmarks."""

    name: str
    kind: str = "retrieval"
    experiments: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    label: str = ""
    pairing: str = "cross"

    def cells(self, experiments: Mapping[str, ExperimentConfig], benchmarks: Mapping[str, BenchmarkConfig]) -> list[tuple[str, str]]:
        """The (experiment, benchmark) evaluations the table shows: every pair (``cross``), or
        only benchmarks of the dataset each experiment trained on (``dataset``)."""
        return [
            (e, b)
            for e in self.experiments
            for b in self.benchmarks
            if self.pairing == "cross" or benchmarks[b].dataset == experiments[e].dataset
        ]


@dataclass(frozen=True)
class Config:
    """The whole run."""

    demo: DemoConfig
    datasets: Mapping[str, DatasetConfig]
    teachers: Mapping[str, TeacherSpec]
    features: FeaturesConfig
    references: ReferencesConfig = field(default_factory=ReferencesConfig)
    students: Mapping[str, StudentConfig] = field(default_factory=dict)
    experiments: Mapping[str, ExperimentConfig] = field(default_factory=dict)
    benchmarks: Mapping[str, BenchmarkConfig] = field(default_factory=dict)
    tables: Mapping[str, TableConfig] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def teachers_of(self, dataset: str, modality: str) -> list[str]:
        """Names of the teachers of one modality (``image`` or ``text``) that encode ``dataset``."""
        return [t for t in self.datasets[dataset].teachers if self.teachers[t].modality == modality]


def _build(cls: type, values: Mapping[str, Any], where: str, **fixed: Any) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, naming the key path on unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names - set(fixed))}")
    kwargs = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list):
            kwargs[f.name] = tuple(kwargs[f.name])
    try:
        return cls(**kwargs, **fixed)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_config(raw: Mapping[str, Any]) -> Config:
    """Build the typed :class:`Config` from a (schema-validated) mapping and check cross references."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, found {type(raw).__name__}")
    demo = _build(DemoConfig, raw.get("demo") or {}, "demo")
    teachers = {
        name: _build(TeacherSpec, values or {}, f"teachers.{name}", name=name)
        for name, values in (raw.get("teachers") or {}).items()
    }
    datasets = {
        name: _build(DatasetConfig, values or {}, f"datasets.{name}", name=name)
        for name, values in (raw.get("datasets") or {}).items()
    }
    features = _build(FeaturesConfig, raw.get("features") or {}, "features")
    references_raw = dict(raw.get("references") or {})
    index = _build(NeighbourIndexConfig, references_raw.pop("index", None) or {}, "references.index")
    references = _build(ReferencesConfig, references_raw, "references", index=index)
    students = {
        name: _build(StudentConfig, values or {}, f"students.{name}", name=name)
        for name, values in (raw.get("students") or {}).items()
    }
    experiments = {}
    for name, values in (raw.get("experiments") or {}).items():
        values = dict(values or {})
        mmref = _build(MMRefConfig, values.pop("mmref", None) or {}, f"experiments.{name}.mmref")
        experiments[name] = _build(ExperimentConfig, values, f"experiments.{name}", name=name, mmref=mmref)
    benchmarks = {}
    for name, values in (raw.get("benchmarks") or {}).items():
        values = dict(values or {})
        refine = _build(RefineConfig, values.pop("refine", None) or {}, f"benchmarks.{name}.refine")
        refine = refine if refine.enabled else None
        benchmarks[name] = _build(BenchmarkConfig, values, f"benchmarks.{name}", name=name, refine=refine)
    tables = {
        name: _build(TableConfig, values or {}, f"tables.{name}", name=name)
        for name, values in (raw.get("tables") or {}).items()
    }
    for name, ds in datasets.items():
        for t in ds.teachers:
            if t not in teachers:
                raise ConfigError(
                    f"datasets.{name}.teachers: unknown teacher {t!r}; defined teachers are {sorted(teachers)}"
                )
        if ds.num_shards < 1:
            raise ConfigError(f"datasets.{name}.num_shards: expected >= 1, found {ds.num_shards}")
    for name, ex in experiments.items():
        if ex.dataset not in datasets:
            raise ConfigError(f"experiments.{name}.dataset: unknown dataset {ex.dataset!r}; defined: {sorted(datasets)}")
        if ex.student not in students:
            raise ConfigError(f"experiments.{name}.student: unknown student {ex.student!r}; defined: {sorted(students)}")
        if ex.method not in METHODS:
            raise ConfigError(f"experiments.{name}.method: expected one of {list(METHODS)}, found {ex.method!r}")
        for key, modality in (("image_teacher", "image"), ("text_teacher", "text")):
            t = getattr(ex, key)
            if t is None:
                continue
            if t not in datasets[ex.dataset].teachers:
                raise ConfigError(
                    f"experiments.{name}.{key}: teacher {t!r} does not encode dataset {ex.dataset!r} "
                    f"(its teachers: {list(datasets[ex.dataset].teachers)})"
                )
            if teachers[t].modality != modality:
                raise ConfigError(
                    f"experiments.{name}.{key}: expected a {modality} teacher, {t!r} is a {teachers[t].modality} teacher"
                )
        if ex.method in ("csa", "usa", "cusa") or ex.needs_references():
            why = "soft labels" if ex.method != "mmref" else "teacher references (neighbours_per_anchor > 0 or soft_targets)"
            for key in ("image_teacher", "text_teacher"):
                if getattr(ex, key) is None:
                    raise ConfigError(f"experiments.{name}.{key}: method {ex.method!r} needs it for its {why}; found none")
        if ex.gpus < 1 or ex.batch_size % ex.gpus:
            raise ConfigError(
                f"experiments.{name}.gpus: expected >= 1 and a divisor of batch_size ({ex.batch_size}), found {ex.gpus}"
            )
        if ex.method == "mmref" and ex.batch_size % ex.mmref.samples_per_identity:
            raise ConfigError(
                f"experiments.{name}.batch_size: expected a multiple of mmref.samples_per_identity "
                f"({ex.mmref.samples_per_identity}) for the P x K identity sampler, found {ex.batch_size}"
            )
    for name, bm in benchmarks.items():
        if bm.dataset not in datasets:
            raise ConfigError(f"benchmarks.{name}.dataset: unknown dataset {bm.dataset!r}; defined: {sorted(datasets)}")
        if bm.protocol not in PROTOCOLS:
            raise ConfigError(f"benchmarks.{name}.protocol: expected one of {list(PROTOCOLS)}, found {bm.protocol!r}")
        if bm.refine is not None and bm.protocol != "person":
            raise ConfigError(f"benchmarks.{name}.refine: refinement is for the person protocol, found protocol {bm.protocol!r}")
    for name, tb in tables.items():
        if tb.kind not in TABLE_KINDS:
            raise ConfigError(f"tables.{name}.kind: expected one of {list(TABLE_KINDS)}, found {tb.kind!r}")
        for b in tb.benchmarks:
            if b in benchmarks and benchmarks[b].protocol not in TABLE_PROTOCOLS[tb.kind]:
                raise ConfigError(
                    f"tables.{name}.benchmarks: {b!r} has protocol {benchmarks[b].protocol!r}; a {tb.kind!r} "
                    f"table reads {list(TABLE_PROTOCOLS[tb.kind])}"
                )
        for key, known in (("experiments", experiments), ("benchmarks", benchmarks)):
            for item in getattr(tb, key):
                if item not in known:
                    raise ConfigError(f"tables.{name}.{key}: unknown {key[:-1]} {item!r}; defined: {sorted(known)}")
    return Config(
        demo=demo,
        datasets=datasets,
        teachers=teachers,
        features=features,
        references=references,
        students=students,
        experiments=experiments,
        benchmarks=benchmarks,
        tables=tables,
        raw=dict(raw),
    )


def validate_raw(raw: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``raw`` against the JSON schema, filling defaults in place (as Snakemake's ``validate``)."""
    from snakemake.utils import validate

    try:
        validate(raw, str(schema_path), set_default=True)
    except Exception as err:  # snakemake wraps jsonschema's error in a WorkflowError
        raise ConfigError(str(err)) from None
    return raw


def read_config(path: str | Path) -> Config:
    """Read, validate and type a config YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return load_config(validate_raw(raw or {}))
