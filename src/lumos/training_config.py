"""Settings of :func:`lumos.training.train`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import Settings, check_optimiser, check_positive_integers

__all__ = ["TrainingConfig"]


@dataclass
class TrainingConfig(Settings, kind="training"):
    """Settings of :func:`train`.

    Parameters
    ----------
    n_epochs : int
        Number of epochs (the run continues from a checkpoint up to this number).
    samples_per_epoch : int
        Training stamps per epoch, over all ranks (data are drawn on the fly).
    batch_size : int
        Stamps per optimiser step on each rank.
    learning_rate : float
        Adam learning rate at the start (the paper: 1e-4).
    lr_decay : float
        Factor applied to the learning rate every ``lr_step_epochs`` epochs (paper: 0.1).
    lr_step_epochs : int
        Epochs between learning-rate decays (paper: 40).
    weight_decay : float
        Adam L2 weight decay.
    max_grad_norm : float or None
        Clip the gradient norm to this value (None: no clipping).
    ema_decay : float
        Decay of the exponential moving average of the weights used for validation and
        the saved models (0 disables it). Bias-corrected: the effective decay at step t
        is ``min(ema_decay, (1 + t) / (10 + t))``.
    augment : bool
        Random flips and 90-degree rotations.
    seed : int
        Base seed of the training streams, augmentation and dropout.
    validation_chunk : int
        Rows per forward pass during validation.
    keep_checkpoints : int
        Number of most recent epoch checkpoints kept on disk (>= 1).
    max_time_s : float or None
        Stop at the end of the first epoch after this many seconds of this call.
    num_threads : int or None
        Torch CPU threads (None: environment or cores).
    device : str or None
        ``"cpu"``, ``"cuda"``... (None: CUDA when present, else CPU).
    data_workers : int
        Processes simulating the batches ahead of the training, for an indexable stream
        factory (:mod:`lumos.data_pipeline`; 0 simulates in the training process). The
        data, and so the run, do not depend on it.
    """

    n_epochs: int = 120
    samples_per_epoch: int = 100_000
    batch_size: int = 500
    learning_rate: float = 1e-4
    lr_decay: float = 0.1
    lr_step_epochs: int = 40
    weight_decay: float = 0.0
    max_grad_norm: float | None = 10.0
    ema_decay: float = 0.999
    augment: bool = True
    seed: int = 1
    validation_chunk: int = 2048
    keep_checkpoints: int = 3
    max_time_s: float | None = None
    num_threads: int | None = None
    device: str | None = None
    data_workers: int = 1

    def __post_init__(self) -> None:
        check_positive_integers(self, ("n_epochs", "samples_per_epoch", "batch_size",
                                       "lr_step_epochs", "validation_chunk", "keep_checkpoints"))
        w = self.data_workers
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
            raise ValueError(f"TrainingConfig.data_workers must be an integer >= 0, got {w!r}")
        check_optimiser(self)
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
