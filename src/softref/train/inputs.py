"""Where one experiment's training inputs live in the DAG's layout (the CLI's view of the train rule)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from softref import paths
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
    selection: Path | None = None


def run_inputs(cfg: Config, experiment: str, seed: int, results: Path = Path(paths.RESULTS),
               retrain: bool = False) -> RunInputs:
    """The artifacts the ``train`` rule gives the run of ``experiment`` with ``seed`` (teacher
    shards for CUSA's soft labels, teacher references and their neighbours for MMRef), under
    ``results``; with ``retrain``, those of the ``retrain`` rule (references over train + val, the
    selection run's checkpoint, the retrain's folder)."""
    if experiment not in cfg.experiments:
        raise ConfigError(f"experiments: no experiment {experiment!r}; defined: {sorted(cfg.experiments)}")
    ex = cfg.experiments[experiment].with_seed(seed)
    ds = cfg.datasets[ex.dataset]
    image_shards: tuple[Path, ...] = ()
    text_shards: tuple[Path, ...] = ()
    if ex.reads_shards("image"):
        image_shards = tuple(paths.feature_shards(ex.dataset, str(ex.image_teacher), "image", ds.num_shards, results))
    if ex.reads_shards("text"):
        text_shards = tuple(paths.feature_shards(ex.dataset, str(ex.text_teacher), "text", ds.num_shards, results))
    refs = paths.references(ex.dataset, ex.references_name, results, trainval=retrain) if ex.needs_references() else None
    return RunInputs(
        dataset_root=Path(ds.root),
        images_manifest=paths.manifest(ex.dataset, "images", results),
        texts_manifest=paths.manifest(ex.dataset, "texts", results),
        image_shards=image_shards,
        text_shards=text_shards,
        references=None if refs is None else refs["references"],
        neighbours=None if refs is None else refs["neighbours"],
        out_dir=(paths.retrain_dir if retrain else paths.run_dir)(experiment, seed, results),
        selection=paths.run_dir(experiment, seed, results) / Path(paths.CHECKPOINT).name if retrain else None,
    )
