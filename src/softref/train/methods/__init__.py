"""Method families: one module per family owns its batches, sampler, model additions and objective.

The trainer (:mod:`softref.train.trainer`) is one loop for every method; what differs between
methods lives here. ``softref.names.METHOD_FAMILIES`` maps each method to its family module
(``cusa`` trains base, csa, usa and cusa; ``mmref`` trains mmref). A family module exposes
``prepare(setup: RunSetup) -> MethodRun``. Adding a method family is one new module here and
one line in ``METHOD_FAMILIES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from softref.config import ExperimentConfig
from softref.names import METHOD_FAMILIES
from softref.train.data import Batch, BatchCollator, TrainPairs
from softref.train.distributed import DistributedContext

__all__ = ["MethodRun", "RunSetup", "family"]


@dataclass(frozen=True)
class RunSetup:
    """What every family needs to prepare a run: the experiment, the student and the inputs.

    Attributes:
        cfg: the experiment.
        student: the student (on ``device``).
        pairs: the train split's pairs (:func:`softref.train.data.load_pairs`).
        dataset: the pairs as a dataset of decoded images and captions.
        ctx: the process group (rank, world size, device).
        image_shards, text_shards: the teachers' feature shards (CUSA's soft labels).
        references, neighbours: the teacher references and their neighbours table (MMRef).
        images_sha, texts_sha: sha256 of the manifests, which the shards must name.
        teachers: the config's teacher specs (a CUSA run loads those it computes online).
    """

    cfg: ExperimentConfig
    student: nn.Module
    pairs: pd.DataFrame
    dataset: TrainPairs
    ctx: DistributedContext
    image_shards: tuple[Path, ...] = ()
    text_shards: tuple[Path, ...] = ()
    references: Path | None = None
    neighbours: Path | None = None
    images_sha: str = ""
    texts_sha: str = ""
    teachers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.ctx.device


@dataclass
class MethodRun:
    """One family's part of a run.

    Attributes:
        sampler: this process's batches of an epoch (``set_epoch`` before iterating).
        collator: items -> :class:`~softref.train.data.Batch` (teacher rows fetched by id).
        losses: (student, batch on the device) -> the named loss terms and ``total``.
        relevance: the val split's items -> (images, captions) bool relevance used to select
            the model (pair-level for CUSA, identity-level for MMRef).
        modules: modules trained beside the student, saved under their key in every checkpoint.
        lr_scale: learning-rate factor of ``modules`` relative to the student's.
        facts: what the run read (teachers, references), part of the resume fingerprint.
        record: plain values written into every checkpoint beside the model (e.g. MMRef's
            identities, the bank's rows).
        close: releases open files.
        dataset: the items to load, when the family needs more than the pairs (online teachers).
    """

    sampler: Sampler[list[int]]
    collator: BatchCollator
    losses: Callable[[nn.Module, Batch], dict[str, Tensor]]
    relevance: Callable[[Any], np.ndarray]
    modules: Mapping[str, nn.Module] = field(default_factory=dict)
    lr_scale: float = 1.0
    facts: Mapping[str, Any] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
    dataset: Dataset | None = None


def family(method: str) -> ModuleType:
    """The family module that trains ``method`` (``softref.train.methods.<family>``)."""
    if method not in METHOD_FAMILIES:
        raise ValueError(f"method {method!r} is not one of {list(METHOD_FAMILIES)}")
    return importlib.import_module(f"softref.train.methods.{METHOD_FAMILIES[method]}")
