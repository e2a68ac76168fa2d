"""Where one experiment's training inputs live in the DAG's layout (shared by the CLI and the rules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from softref.config import Config, ConfigError

__all__ = ["RunInputs", "run_inputs"]


@dataclass(frozen=True)
class RunInputs:
    """The paths :func:`softref.train.trainer.train` reads and writes for one experiment."""

    dataset_root: Path
    images_manifest: Path
    texts_manifest: Path
    image_shards: tuple[Path, ...]
    text_shards: tuple[Path, ...]
    references: Path | None
    neighbours: Path | None
    out_dir: Path


def _shards(dataset: str, teacher: str, modality: str, num_shards: int, results: Path) -> tuple[Path, ...]:
    return tuple(results / "features" / dataset / teacher / f"{modality}-{k}.h5" for k in range(num_shards))


def run_inputs(cfg: Config, experiment: str, results: Path = Path("results")) -> RunInputs:
    """The artifacts the ``train`` rule gives ``experiment`` (teacher shards for CUSA's soft
    labels, teacher references and their neighbours for MMRef), under ``results``."""
    if experiment not in cfg.experiments:
        raise ConfigError(f"experiments: no experiment {experiment!r}; defined: {sorted(cfg.experiments)}")
    ex = cfg.experiments[experiment]
    ds = cfg.datasets[ex.dataset]
    data = results / "data" / ex.dataset
    image_shards: tuple[Path, ...] = ()
    text_shards: tuple[Path, ...] = ()
    if ex.method in ("csa", "usa", "cusa"):
        image_shards = _shards(ex.dataset, str(ex.image_teacher), "images", ds.num_shards, results)
        text_shards = _shards(ex.dataset, str(ex.text_teacher), "texts", ds.num_shards, results)
    references = neighbours = None
    if ex.needs_references():
        stem = results / "references" / ex.dataset / ex.references_name
        references, neighbours = stem.with_name(stem.name + ".h5"), stem.with_name(stem.name + ".neighbours.parquet")
    return RunInputs(
        dataset_root=Path(ds.root),
        images_manifest=data / "images.parquet",
        texts_manifest=data / "texts.parquet",
        image_shards=image_shards,
        text_shards=text_shards,
        references=references,
        neighbours=neighbours,
        out_dir=results / "runs" / experiment,
    )
