"""Training of softref's students: one loop for every method, single process or torchrun.

``from softref.train import train, TrainResult``. What differs between methods lives in
:mod:`softref.train.methods`; the multi-GPU launch in :mod:`softref.train.launch`.
"""

from softref.train.trainer import NonFiniteLossError, TrainResult, train

__all__ = ["train", "TrainResult", "NonFiniteLossError"]
