"""Training of CUSA students: single process or torchrun/DDP, checkpoints and resume.

``from softref.train import train, TrainResult``. The names are imported on first use so that
``softref.train.data`` and ``softref.train.checkpoint`` load without the trainer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "TrainResult", "NonFiniteLossError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from softref.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'softref.train' has no attribute {name!r}")
