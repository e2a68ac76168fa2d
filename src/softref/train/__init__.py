"""Training of softref's students: one loop for every method, single process or torchrun.

``from softref.train import train, retrain, TrainResult``. What differs between methods lives in
:mod:`softref.train.methods`; the multi-GPU launch in :mod:`softref.train.launch`; the student's
training-image augmentation in :mod:`softref.train.augment`.

The names load :mod:`softref.train.trainer` (and with it torch and open_clip, several seconds) on
first use, so ``python -m softref.train`` reads and checks its config first: a config error or an
unknown experiment is reported in about a second, not after those imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softref.train.trainer import NonFiniteLossError, TrainResult, retrain, train

__all__ = ["train", "retrain", "TrainResult", "NonFiniteLossError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from softref.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
