"""Training of softref's students: one loop for every method, single process or torchrun.

``from softref.train import train, retrain, TrainResult``. What differs between methods lives in
:mod:`softref.train.methods`; the multi-GPU launch in :mod:`softref.train.launch`; the student's
training-image augmentation in :mod:`softref.train.augment`.
"""

from softref.train.trainer import NonFiniteLossError, TrainResult, retrain, train

__all__ = ["train", "retrain", "TrainResult", "NonFiniteLossError"]
