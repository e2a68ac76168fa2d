"""Typed configuration: frozen dataclasses mirroring the blocks of ``config.yaml``.

The JSON schema (``softref/schemas/config.schema.yaml``, shipped with the package) checks
types and fills defaults; this module is the one place that turns the validated mapping into
dataclasses and checks what a schema cannot: cross references between blocks (a dataset
naming an unknown teacher, an experiment naming an unknown dataset). Every problem is
collected before one :class:`ConfigError` lists them all, each naming its key path, so a
config with five mistakes is fixed in one round.

Light on purpose: neither torch nor snakemake is imported here (``tests/test_layers.py``), so
planning a DAG (``snakemake -n``) never loads a deep-learning framework.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from softref.names import AUGMENTATIONS, METHODS, PROTOCOLS, TABLE_KINDS, TABLE_PROTOCOLS, TAU_MODES

__all__ = [
    "SCHEMA_PATH",
    "TAU_RANGE",
    "TRAINING_IGNORES",
    "BenchmarkConfig",
    "Config",
    "ConfigError",
    "DatasetConfig",
    "DemoConfig",
    "EvaluationConfig",
    "FiguresConfig",
    "ExperimentConfig",
    "FeaturesConfig",
    "MMRefConfig",
    "NeighbourIndexConfig",
    "ReferencesConfig",
    "RefineConfig",
    "ReportConfig",
    "ReportQuestion",
    "StudentConfig",
    "TableConfig",
    "TeacherError",
    "TeacherFeaturesConfig",
    "TeacherSpec",
    "load_config",
    "read_config",
    "validate_raw",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

#: Experiment keys that cannot change the trained model (loader workers; the table row's name and
#: paper role; which features the uni-modal benchmarks read; whether a second job retrains on
#: train+val afterwards): editing them neither reruns the train job nor stops a resume.
TRAINING_IGNORES: tuple[str, ...] = ("num_workers", "label", "paper_method", "uni_features", "retrain_on_trainval")

#: The range a learned contrastive temperature is clamped to at every forward (the public CUSA code's).
TAU_RANGE: tuple[float, float] = (0.01, 0.10)


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or refers to something unknown.

    ``problems`` lists every problem found, one line each, each starting with its key path.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class TeacherError(ValueError):
    """A teacher cannot be built as its spec asks: unknown kind, wrong weights, mismatched keys."""


# ---------------------------------------------------------------------------------------------
# The blocks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """The embedded synthetic benchmark (``softref.data.synthetic``). The defaults are a small
    benchmark; ``config.yaml``'s demo block sets the demo's sizes."""

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
    feature_splits: tuple[str, ...] = ()
    diagnostics_facts: str | None = None
    skip_missing: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def annotations_path(self) -> str:
        return str(Path(self.root) / self.annotations) if self.annotations else self.root


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher of the config's `teachers:` block.

    Attributes:
        name: the config key; it names the feature folder `results/features/{dataset}/{name}`.
        kind: which loader builds it: "efficientnet-lite0", "unicom", "sentence-transformers",
            "open_clip-image", "open_clip-text" or "oracle-attributes" (the demo's facts; image
            or text) (see `softref.teachers.registry.KINDS`).
        modality: "image" or "text"; must agree with the kind.
        weights: a local file or folder; for kinds that support it, a hub name (Unicom's
            "ViT-B/32", a sentence-transformers model id, an open_clip pretrained tag).
        weights_sha256: when given, the sha256 the weights must have (see `weights_sha256`).
        image_size: the square input side the image transform produces.
        variant: the Unicom architecture ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px").
        output: Unicom only: "embedding" (the 512-d head output) or "features" (the flattened,
            final-LayerNorm'd patch tokens, 37,632 values for ViT-B/32: CUSA's teacher feature).
        architecture: open_clip kinds only: the open_clip model name, e.g. "ViT-B-32".
        pre_caption: text teachers: apply CUSA's caption cleaning (`pre_caption`) before
            encoding. None means the kind's default: True for sentence-transformers, False
            for open_clip-text.
    """

    name: str
    kind: str
    modality: Literal["image", "text"]
    weights: str
    weights_sha256: str | None = None
    image_size: int = 224
    variant: str = "ViT-B/32"
    output: str = "embedding"
    architecture: str | None = None
    pre_caption: bool | None = None

    def __post_init__(self) -> None:
        for key in ("name", "kind", "weights"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise TeacherError(f"teacher spec {self.name!r}: {key} must be a non-empty string, got {value!r}")
        if self.modality not in ("image", "text"):
            raise TeacherError(f"teacher {self.name!r}: modality must be 'image' or 'text', got {self.modality!r}")
        if self.output not in ("embedding", "features"):
            raise TeacherError(f"teacher {self.name!r}: output must be 'embedding' or 'features', got {self.output!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise TeacherError(f"teacher {self.name!r}: image_size must be a positive integer, got {self.image_size!r}")
        if self.weights_sha256 is not None and not _SHA256_HEX.match(str(self.weights_sha256).lower()):
            raise TeacherError(
                f"teacher {self.name!r}: weights_sha256 must be 64 hex digits, got {self.weights_sha256!r}"
            )
        if self.pre_caption is not None and not isinstance(self.pre_caption, bool):
            raise TeacherError(
                f"teacher {self.name!r}: pre_caption must be true, false or null, got {self.pre_caption!r}"
            )

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> TeacherSpec:
        """Build a spec from one config entry (`teachers: {name: values}`); unknown keys are an error."""
        allowed = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise TeacherError(f"teacher {name!r}: unknown keys {unknown}; expected some of {sorted(allowed)}")
        return cls(name=name, **dict(values))

    @property
    def weights_path(self) -> Path:
        return Path(self.weights).expanduser()


@dataclass(frozen=True)
class FeaturesConfig:
    """How teacher features are extracted and stored."""

    dtype: str = "float16"
    image_batch_size: int = 32
    text_batch_size: int = 64
    num_workers: int = 2


@dataclass(frozen=True)
class EvaluationConfig:
    """How the evaluate jobs encode (speed only; the numbers do not depend on it)."""

    batch_size: int = 64
    num_workers: int = 0


@dataclass(frozen=True)
class FiguresConfig:
    """How the figure rules draw (softref.figures): resolution and the fixed choices of items."""

    dpi: int = 200
    seed: int = 0
    tsne_identities: int = 10
    case_queries: int = 3


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
    image_size: tuple[int, int] | None = None


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
    refine: bool = True

    @property
    def bank_trains(self) -> bool:
        """Whether the reference bank learns: Global Fusion or Local Reconstruction train it;
        reference guidance alone reads it through a stop-gradient."""
        return self.global_fusion or self.local_reconstruction


@dataclass(frozen=True)
class TeacherFeaturesConfig:
    """Where a CUSA run's teacher features come from, per modality: ``shards`` (read by id from the
    DAG's HDF5 shards) or ``online`` (the teacher runs on every batch, as the public code does for
    text; the paper recommends it when the dataset outgrows the disk)."""

    image: str = "shards"
    text: str = "shards"


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
    seeds: tuple[int, ...] = ()
    gather: bool = True
    public_code_weighting: bool = True
    student_pre_caption: bool = True
    uni_features: str = "encoder"
    augment: str = "none"
    tau_mode: str = "learned"
    tau: float = 0.05
    retrain_on_trainval: bool = False
    num_workers: int = 0
    label: str | None = None
    paper_method: str | None = None
    gpus: int = 1
    val_max_images: int | None = None
    teacher_features: TeacherFeaturesConfig = field(default_factory=TeacherFeaturesConfig)
    mmref: MMRefConfig = field(default_factory=MMRefConfig)

    @property
    def row_label(self) -> str:
        """The experiment's row name in tables: its label, else its method."""
        return self.label or self.method

    @property
    def references_name(self) -> str:
        """``<image_teacher>+<text_teacher>``: the teacher references an mmref run reads."""
        return f"{self.image_teacher}+{self.text_teacher}"

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds the DAG trains, one run each: ``seeds`` when given, else ``seed`` alone."""
        return tuple(self.seeds) or (self.seed,)

    def with_seed(self, seed: int) -> ExperimentConfig:
        """This experiment's run of ``seed`` (one of :attr:`run_seeds`)."""
        if seed not in self.run_seeds:
            raise ConfigError(f"experiments.{self.name}: no run with seed {seed}; its seeds are {list(self.run_seeds)}")
        return dataclasses.replace(self, seed=int(seed), seeds=())

    def uses_teacher_features(self) -> bool:
        """True when training needs teacher features (CUSA's soft labels), from shards or online."""
        return self.method in ("csa", "usa", "cusa")

    def reads_shards(self, modality: str) -> bool:
        """True when training reads the ``modality`` (image / text) teacher's feature shards."""
        return self.uses_teacher_features() and getattr(self.teacher_features, modality) == "shards"

    def switches(self) -> str:
        """The keys where a run may follow or leave the public code's way, as ``key=value`` pairs
        (the train job's message: a dry run shows them)."""
        keys = ["method", "epochs", "batch_size", "gpus", "gather", "public_code_weighting", "student_pre_caption",
                "uni_features", "teacher_tau", "augment", "tau_mode", "tau", "retrain_on_trainval"]
        sources = f"teacher_features=image:{self.teacher_features.image}/text:{self.teacher_features.text}"
        return ", ".join([f"{key}={getattr(self, key)}" for key in keys] + [sources])

    def refines(self) -> bool:
        """True when the person benchmarks also report this experiment with reference-based refinement."""
        return self.method == "mmref" and self.mmref.refine

    def needs_references(self) -> bool:
        """True when training reads the teacher references (mmref neighbours or soft targets)."""
        return self.method == "mmref" and (self.mmref.neighbours_per_anchor > 0 or self.mmref.soft_targets)


@dataclass(frozen=True)
class RefineConfig:
    """Reference-based refinement at retrieval (softref.evaluate.refine.refine_scores): the
    parameters a person benchmark refines with, for experiments that ask for it (``mmref.refine``)."""

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
    refine: RefineConfig = field(default_factory=RefineConfig)


@dataclass(frozen=True)
class TableConfig:
    """A table of the papers: which experiments on which benchmarks."""

    name: str
    kind: str = "retrieval"
    experiments: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    label: str = ""
    pairing: str = "cross"
    baseline: str | None = None

    @property
    def baseline_experiment(self) -> str | None:
        """The experiment whose row the others are compared with: ``baseline``, else the first listed."""
        return self.baseline or (self.experiments[0] if self.experiments else None)

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
class ReportQuestion:
    """One question ``softref report`` answers: ``row`` minus ``baseline`` (experiments) on one
    number of ``benchmark``'s evaluations, paired by seed."""

    question: str
    row: str
    baseline: str
    benchmark: str
    direction: str
    metric: str
    dataset: str | None = None
    variant: str = ""
    baseline_variant: str = ""


@dataclass(frozen=True)
class ReportConfig:
    """The questions ``softref report`` answers from a run's evaluations (the README's numbers)."""

    questions: tuple[ReportQuestion, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole run."""

    demo: DemoConfig
    datasets: Mapping[str, DatasetConfig]
    teachers: Mapping[str, TeacherSpec]
    features: FeaturesConfig
    references: ReferencesConfig = field(default_factory=ReferencesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    students: Mapping[str, StudentConfig] = field(default_factory=dict)
    experiments: Mapping[str, ExperimentConfig] = field(default_factory=dict)
    benchmarks: Mapping[str, BenchmarkConfig] = field(default_factory=dict)
    tables: Mapping[str, TableConfig] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def teachers_of(self, dataset: str, modality: str) -> list[str]:
        """Names of the teachers of one modality (``image`` or ``text``) that encode ``dataset``."""
        return [t for t in self.datasets[dataset].teachers if self.teachers[t].modality == modality]

    def run_benchmarks(self, experiment: str) -> list[str]:
        """The benchmarks each run of ``experiment`` is evaluated on: those of every table cell
        with it (:meth:`TableConfig.cells`), in the tables' order, each once. One evaluate job per
        run scores them all (``results/runs/{experiment}/seed-{seed}/eval/``)."""
        found = {b: None for tb in self.tables.values() for e, b in tb.cells(self.experiments, self.benchmarks)
                 if e == experiment}
        return list(found)


#: Dataclass of each top-level block (and of each entry of the named blocks): the schema test
#: checks that the schema's defaults equal these dataclasses' defaults.
BLOCKS: dict[str, type] = {
    "demo": DemoConfig,
    "datasets": DatasetConfig,
    "teachers": TeacherSpec,
    "features": FeaturesConfig,
    "evaluation": EvaluationConfig,
    "references": ReferencesConfig,
    "references.index": NeighbourIndexConfig,
    "students": StudentConfig,
    "experiments": ExperimentConfig,
    "experiments.mmref": MMRefConfig,
    "experiments.teacher_features": TeacherFeaturesConfig,
    "benchmarks": BenchmarkConfig,
    "benchmarks.refine": RefineConfig,
    "tables": TableConfig,
    "report.questions": ReportQuestion,
    "figures": FiguresConfig,
}


# ---------------------------------------------------------------------------------------------
# Schema validation
# ---------------------------------------------------------------------------------------------


def _schema(schema_path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config schema not found: {schema_path}") from None


def _key_path(parts: Sequence[Any]) -> str:
    return ".".join(str(p) for p in parts) or "config"


def _one_line(error: Any) -> str:
    """A schema error as ``key.path: what was expected, found what`` (never the schema itself)."""
    where = _key_path(list(error.absolute_path))
    found = error.instance
    shown = repr(found) if not isinstance(found, (dict, list)) else type(found).__name__
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(found) - set(allowed)) if isinstance(found, dict) else []
        close = {k: difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6) for k in extra}
        hint = "; ".join(f"did you mean {m[0]!r} for {k!r}?" for k, m in close.items() if m)
        return f"{where}: unknown key(s) {extra}; expected some of {allowed}" + (f"; {hint}" if hint else "")
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        return f"{where}: expected one of {error.validator_value}, found {shown}"
    if error.validator == "type":
        return f"{where}: expected {error.validator_value}, found {shown}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        return f"{where}: expected a number {sign} {error.validator_value}, found {shown}"
    if error.validator in ("minItems", "maxItems"):
        return f"{where}: expected {error.validator} {error.validator_value}, found {len(found)} item(s)"
    return f"{where}: {error.message.splitlines()[0]}"


def validate_raw(raw: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``raw`` against the JSON schema, filling defaults in place (as Snakemake's
    ``validate(..., set_default=True)``), and return it.

    Raises:
        ConfigError: listing every schema violation, one line each with its key path.
    """
    from jsonschema import Draft202012Validator, validators

    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, found {type(raw).__name__}")
    schema = _schema(schema_path)
    properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator: Any, props: Mapping[str, Any], instance: Any, sub: Mapping[str, Any]) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, prop in props.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from properties(validator, props, instance, sub)

    validator = validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)
    problems = [_one_line(e) for e in sorted(validator.iter_errors(raw), key=lambda e: [str(p) for p in e.absolute_path])]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return raw


# ---------------------------------------------------------------------------------------------
# Typed config and cross references
# ---------------------------------------------------------------------------------------------


class _Problems:
    """Collects problems (key path first) so that every one is reported at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def build(self, cls: type, values: Mapping[str, Any] | None, where: str, **fixed: Any) -> Any:
        """Instantiate dataclass ``cls`` from ``values``; a problem (and None) on unknown keys or bad values."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            self.add(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names - set(fixed))}")
            return None
        for f in dataclasses.fields(cls):
            if isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        try:
            return cls(**values, **fixed)
        except (TypeError, ValueError) as err:
            self.add(f"{where}: {err}")
            return None


def _named(problems: _Problems, cls: type, block: Any, where: str, nested: Mapping[str, tuple[type, str]] = {}) -> dict[str, Any]:
    """The entries of a named block (``datasets``, ``experiments``, ...) as dataclasses."""
    out = {}
    for name, values in (block or {}).items():
        values = dict(values or {})
        fixed: dict[str, Any] = {"name": name}
        for key, (sub_cls, _) in nested.items():
            sub = problems.build(sub_cls, values.pop(key, None), f"{where}.{name}.{key}")
            fixed[key] = sub if sub is not None else sub_cls()
        built = problems.build(cls, values, f"{where}.{name}", **fixed)
        if built is not None:
            out[name] = built
    return out


def _check_training_choices(problems: _Problems, where: str, ex: ExperimentConfig) -> None:
    """The augmentation and temperature choices of one experiment (the schema checks them too; typed
    configs built in code pass here only)."""
    if ex.augment not in AUGMENTATIONS:
        problems.add(f"{where}.augment: expected one of {list(AUGMENTATIONS)}, found {ex.augment!r}")
    if ex.tau_mode not in TAU_MODES:
        problems.add(f"{where}.tau_mode: expected one of {list(TAU_MODES)}, found {ex.tau_mode!r}")
    elif ex.tau_mode == "learned" and not TAU_RANGE[0] <= ex.tau <= TAU_RANGE[1]:
        problems.add(
            f"{where}.tau: a learned temperature starts inside its clamp range {list(TAU_RANGE)}, found {ex.tau}; "
            f"set tau_mode: fixed to keep another value"
        )
    elif not ex.tau > 0:
        problems.add(f"{where}.tau: expected a positive temperature, found {ex.tau}")


def _check_experiments(problems: _Problems, cfg: Config) -> None:
    for name, ex in cfg.experiments.items():
        where = f"experiments.{name}"
        if ex.dataset not in cfg.datasets:
            problems.add(f"{where}.dataset: unknown dataset {ex.dataset!r}; defined: {sorted(cfg.datasets)}")
            continue
        if ex.student not in cfg.students:
            problems.add(f"{where}.student: unknown student {ex.student!r}; defined: {sorted(cfg.students)}")
        if ex.method not in METHODS:
            problems.add(f"{where}.method: expected one of {list(METHODS)}, found {ex.method!r}")
        for key, modality in (("image_teacher", "image"), ("text_teacher", "text")):
            t = getattr(ex, key)
            if t is None:
                if ex.uses_teacher_features() or ex.needs_references():
                    why = ("soft labels" if ex.method != "mmref"
                           else "teacher references (neighbours_per_anchor > 0 or soft_targets)")
                    problems.add(f"{where}.{key}: method {ex.method!r} needs it for its {why}; found none")
            elif t not in cfg.datasets[ex.dataset].teachers:
                problems.add(
                    f"{where}.{key}: teacher {t!r} does not encode dataset {ex.dataset!r} "
                    f"(its teachers: {list(cfg.datasets[ex.dataset].teachers)})"
                )
            elif cfg.teachers[t].modality != modality:
                problems.add(f"{where}.{key}: expected a {modality} teacher, {t!r} is a {cfg.teachers[t].modality} teacher")
        _check_training_choices(problems, where, ex)
        if len(set(ex.run_seeds)) != len(ex.run_seeds):
            problems.add(f"{where}.seeds: expected distinct seeds, found {list(ex.run_seeds)}")
        if ex.gpus < 1 or ex.batch_size % ex.gpus:
            problems.add(f"{where}.gpus: expected >= 1 and a divisor of batch_size ({ex.batch_size}), found {ex.gpus}")
        if ex.val_max_images is not None and (isinstance(ex.val_max_images, bool)
                                              or not isinstance(ex.val_max_images, int) or ex.val_max_images < 1):
            problems.add(f"{where}.val_max_images: expected an integer >= 1 or null (the whole val split), "
                         f"found {ex.val_max_images!r}")
        if ex.refines() and not ex.mmref.bank_trains:
            problems.add(
                f"{where}.mmref.refine: refinement at test time needs a trained reference bank, but this experiment "
                f"turns off both global_fusion and local_reconstruction (the bank would stay random); set "
                f"mmref.refine: false"
            )
        if ex.method == "mmref" and ex.batch_size % ex.mmref.samples_per_identity:
            problems.add(
                f"{where}.batch_size: expected a multiple of mmref.samples_per_identity "
                f"({ex.mmref.samples_per_identity}) for the P x K identity sampler, found {ex.batch_size}"
            )


def _check_benchmarks_and_tables(problems: _Problems, cfg: Config) -> None:
    for name, bm in cfg.benchmarks.items():
        if bm.dataset not in cfg.datasets:
            problems.add(f"benchmarks.{name}.dataset: unknown dataset {bm.dataset!r}; defined: {sorted(cfg.datasets)}")
        if bm.protocol not in PROTOCOLS:
            problems.add(f"benchmarks.{name}.protocol: expected one of {list(PROTOCOLS)}, found {bm.protocol!r}")
        elif bm.protocol != "person" and bm.refine != RefineConfig():
            problems.add(f"benchmarks.{name}.refine: refinement is for the person protocol, found protocol {bm.protocol!r}")
    for name, tb in cfg.tables.items():
        if tb.kind not in TABLE_KINDS:
            problems.add(f"tables.{name}.kind: expected one of {list(TABLE_KINDS)}, found {tb.kind!r}")
            continue
        for key, known in (("experiments", cfg.experiments), ("benchmarks", cfg.benchmarks)):
            for item in getattr(tb, key):
                if item not in known:
                    problems.add(f"tables.{name}.{key}: unknown {key[:-1]} {item!r}; defined: {sorted(known)}")
        if tb.baseline is not None and tb.baseline not in tb.experiments:
            problems.add(f"tables.{name}.baseline: expected one of the table's experiments {list(tb.experiments)}, "
                         f"found {tb.baseline!r}")
        for b in tb.benchmarks:
            if b in cfg.benchmarks and cfg.benchmarks[b].protocol not in TABLE_PROTOCOLS[tb.kind]:
                problems.add(
                    f"tables.{name}.benchmarks: {b!r} has protocol {cfg.benchmarks[b].protocol!r}; a {tb.kind!r} "
                    f"table reads {list(TABLE_PROTOCOLS[tb.kind])}"
                )


def _report(problems: _Problems, raw: Mapping[str, Any] | None) -> ReportConfig:
    questions = []
    for i, values in enumerate((raw or {}).get("questions") or []):
        built = problems.build(ReportQuestion, values, f"report.questions[{i}]")
        if built is not None:
            questions.append(built)
    return ReportConfig(tuple(questions))


def _check_report(problems: _Problems, cfg: Config) -> None:
    for i, q in enumerate(cfg.report.questions):
        for key, known in (("row", cfg.experiments), ("baseline", cfg.experiments), ("benchmark", cfg.benchmarks)):
            if getattr(q, key) not in known:
                problems.add(f"report.questions[{i}].{key}: expected one of {sorted(known)}, found {getattr(q, key)!r}")


def load_config(raw: Mapping[str, Any]) -> Config:
    """Build the typed :class:`Config` from a (schema-validated) mapping and check cross references.

    Raises:
        ConfigError: listing every problem found, each naming its key path.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, found {type(raw).__name__}")
    problems = _Problems()
    references_raw = dict(raw.get("references") or {})
    index = problems.build(NeighbourIndexConfig, references_raw.pop("index", None), "references.index")
    benchmarks = _named(problems, BenchmarkConfig, raw.get("benchmarks"), "benchmarks",
                        {"refine": (RefineConfig, "refine")})
    cfg = Config(
        demo=problems.build(DemoConfig, raw.get("demo"), "demo") or DemoConfig(),
        datasets=_named(problems, DatasetConfig, raw.get("datasets"), "datasets"),
        teachers=_named(problems, TeacherSpec, raw.get("teachers"), "teachers"),
        features=problems.build(FeaturesConfig, raw.get("features"), "features") or FeaturesConfig(),
        references=problems.build(ReferencesConfig, references_raw, "references",
                                  index=index or NeighbourIndexConfig()) or ReferencesConfig(),
        evaluation=problems.build(EvaluationConfig, raw.get("evaluation"), "evaluation") or EvaluationConfig(),
        students=_named(problems, StudentConfig, raw.get("students"), "students"),
        experiments=_named(problems, ExperimentConfig, raw.get("experiments"), "experiments",
                           {"mmref": (MMRefConfig, "mmref"), "teacher_features": (TeacherFeaturesConfig, "")}),
        benchmarks=benchmarks,
        tables=_named(problems, TableConfig, raw.get("tables"), "tables"),
        report=_report(problems, raw.get("report")),
        figures=problems.build(FiguresConfig, raw.get("figures"), "figures") or FiguresConfig(),
        raw=dict(raw),
    )
    for name, ds in cfg.datasets.items():
        for t in ds.teachers:
            if t not in cfg.teachers:
                problems.add(f"datasets.{name}.teachers: unknown teacher {t!r}; defined teachers are {sorted(cfg.teachers)}")
        if ds.num_shards < 1:
            problems.add(f"datasets.{name}.num_shards: expected >= 1, found {ds.num_shards}")
    _check_experiments(problems, cfg)
    _check_benchmarks_and_tables(problems, cfg)
    _check_report(problems, cfg)
    if problems.items:
        raise ConfigError(problems.items)
    return cfg


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
