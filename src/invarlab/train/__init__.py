"""Training: one trainer for every method, with atomic checkpoints, exact resume, AMP, DDP and logging.

``train(config)`` builds everything from a :class:`TrainConfig` (what ``invarlab train`` runs);
``Trainer(config, method, train_set, monitor_set).fit()`` trains a method you built yourself.
"""

from invarlab.train.api import build_datasets, train
from invarlab.train.checkpoint import atomic_save, find_latest, list_checkpoints, load_training_checkpoint
from invarlab.train.config import TrainConfig
from invarlab.train.loop import EpochBatchSampler, NonFiniteLossError, Trainer, TrainResult
from invarlab.train.monitor import knn_predict
from invarlab.train.optim import LARS, build_optimizer, lars_trust_ratio
from invarlab.train.schedule import WarmupCosine, scaled_lr

__all__ = [
    "LARS",
    "EpochBatchSampler",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "atomic_save",
    "build_datasets",
    "build_optimizer",
    "find_latest",
    "knn_predict",
    "lars_trust_ratio",
    "list_checkpoints",
    "load_training_checkpoint",
    "scaled_lr",
    "train",
]
