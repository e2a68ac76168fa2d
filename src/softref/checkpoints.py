"""Checkpoints of plain values: save atomically, load with ``torch.load(weights_only=True)``.

Two kinds of file come out of a training run:

``last.pt`` (the resume state, rewritten after every epoch)
    ``model`` and ``optimizer`` state dicts, ``epoch`` (the last completed one, 1-based),
    ``step``, ``rng`` (torch, CUDA, numpy and Python
    random states as tensors and plain lists), ``config`` (the run's configuration as a plain
    dict), ``best_val_rsum``, ``best_epoch``, ``log`` (the train_log rows so far),
    ``softref_version``.
``checkpoint.pt`` (the selected model: best validation RSUM)
    ``model`` state dict, ``config``, ``epoch``, ``step``, ``val`` (its validation metrics),
    ``softref_version``. :func:`softref.models.student.load_student` rebuilds the student.

Only tensors, dicts, lists, tuples, strings, numbers, booleans and None go in, so the files
load with ``weights_only=True`` and no code can ride along.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softref.files import atomic_path

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "plain_config",
    "config_differences",
    "load_error_reason",
]

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint is missing a key, was written by another configuration, or cannot be read."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a file-size limit, an I/O error)."""


# How torch.save reports a failed write of the zip stream (its own words, not an errno).
_WRITE_FAILED = ("PytorchStreamWriter failed writing", "file write failed", "unexpected pos")


def save_checkpoint(obj: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path`` (fsynced), then rename over ``path``.

    A failed write (e.g. a full disk) raises :class:`CheckpointWriteError` naming ``path`` and the
    free space of its file system; the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(dict(obj), fh)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(words in str(err) for words in _WRITE_FAILED):
            raise
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[-1]
        kept = f"{path} is as it was" if path.exists() else f"{path} was not written"
        # torch's own words carry no errno: a short write, most often a full disk.
        if isinstance(err, RuntimeError) or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            advice = "Free disk space (or raise the file-size limit) and rerun the job"
        else:
            advice = f"Check that {path.parent} can be written and rerun the job"
        raise CheckpointWriteError(
            f"{path}: writing the checkpoint failed ({reason}); {_free_space(path.parent)}; {kept}. {advice}"
        ) from err


def _free_space(folder: Path) -> str:
    """``"N.N GB free on the file system of <folder>"`` (or why that is unknown)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as err:
        return f"the free space of {folder} is unknown ({err.strerror})"
    return f"{free / 1e9:.1f} GB free on the file system of {folder}"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; check that ``required`` keys are present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable softref checkpoint ({load_error_reason(err)}); softref loads checkpoints only with "
            f"weights_only=True, so delete the file and rerun the job that writes it"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, found {type(obj).__name__}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {missing}; found {sorted(obj)}")
    return obj


# Words of torch's advice on a refused file (turn weights-only loading off, allowlist its globals,
# "if you trust the source"): running code from a file is never a fix softref suggests.
_ADVICE = ("weights_only", "weights only", "arbitrary code", "trust", "safe_globals", "allowlist",
           "documentation of torch.load", "file an issue")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_error_reason(err: BaseException) -> str:
    """What went wrong when ``torch.load(weights_only=True)`` refused a file, as one line, without
    torch's advice to turn weights-only loading off or to allowlist its classes.

    Example:
        >>> load_error_reason(RuntimeError("Weights only load failed. Re-running `torch.load` with "
        ...     "`weights_only` set to `False` will likely succeed.\\nWeightsUnpickler error: Unsupported operand 103"))
        'RuntimeError: WeightsUnpickler error: Unsupported operand 103'
    """
    text = _ANSI.sub("", str(err))
    detail = text.partition("WeightsUnpickler error:")[2]
    if detail.strip():
        first = next(line.strip() for line in detail.splitlines() if line.strip())
        first = re.split(r"\.\s+Please use|\s+Please use", first)[0].rstrip(". ")
        return f"{type(err).__name__}: WeightsUnpickler error: {first}"
    for line in text.splitlines():
        line = line.strip()
        if line and not any(word in line.lower() for word in _ADVICE):
            return f"{type(err).__name__}: {line}"
    return type(err).__name__


def capture_rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python ``random`` generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(x) for x in internal], "gauss_next": gauss_next},
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            logger.warning(
                "CUDA RNG states for %d devices in the checkpoint, %d visible: not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


def plain_config(obj: Any) -> Any:
    """A dataclass / mapping as JSON-plain values (tuples become lists, Paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"config value of type {type(value).__name__} is not plain data: {value!r}")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if not obj and prefix:
            out[prefix] = {}
        return out
    return {prefix: obj}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two plain configs, as ``key: stored -> current``."""
    a, b = _flatten(plain_config(stored)), _flatten(plain_config(current))
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key, missing), b.get(key, missing)
        if old != new:
            show_old = "<absent>" if old is missing else repr(old)
            show_new = "<absent>" if new is missing else repr(new)
            lines.append(f"{key}: {show_old} -> {show_new}")
    return lines
