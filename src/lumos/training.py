"""Supervised training of :class:`~lumos.network.LumosNet` on on-the-fly simulations.

Design points:

* **Resumable data.** The training data come from a *stream factory*
  ``factory(seed, batch_size) -> iterator of StampBatch`` (for example
  :func:`simulator_stream`). Epoch ``e`` of rank ``r`` reads a fresh iterator seeded with
  ``derive_seed(base_seed, r, e, 0)``, so the data of every (epoch, step) are fixed by the
  base seed alone. Augmentation and dropout draw from generators seeded the same way at
  the start of each epoch. A checkpoint after every epoch therefore resumes *exactly*: the
  resumed run's weights equal the uninterrupted run's bit for bit. A plain iterable is
  accepted too; it is then read in order and fast-forwarded on resume, which is exact only
  if the iterable is recreated identically.
* **Loss.** The mixture negative log-likelihood (Eq. 8 of the paper, truncated at zero
  flux per Eq. 10 for galaxies fainter than the model's ``truncate_threshold``, i = 20.5),
  averaged over the batch. It is evaluated on ``truth / F_ref`` with the mixture relative
  to the model's reference flux ``F_ref``; this differs from the flux-space NLL by the
  per-galaxy constant ``log F_ref``, so the gradients are the same and the loss values are
  independent of the image units. A likelihood model (``NetworkConfig.likelihood``) is
  trained with the Eq. 10 form for every stamp and importance weights
  (:func:`likelihood_weights`) that divide out the training flux distribution.
* **Augmentation.** A random element of the 8 flips/90-degree rotations per stamp,
  applied identically to the stamp, the profile and the sub-pixel offset.
* **Validation.** A fixed held-out batch (simulate it with :func:`validation_seed`, never
  used for training) after every epoch: loss, median bias of (mean - truth) / truth,
  sigma68 of that ratio, and the fraction of truths inside the central 68% of their PDF.
* **Checkpoints** (``epoch-NNNN.safetensors`` + ``epoch-NNNN.json``; no pickles): weights,
  weight EMA, Adam state, scheduler, RNG states of torch/numpy/python, epoch, step and
  stream seeds. The JSON is written last and carries the weights' SHA-256, so a
  checkpoint interrupted while being written is ignored. ``best`` and ``final`` model files
  (:func:`lumos.model_io.save_model` format), ``train.log`` and ``history.jsonl`` go to the
  same folder.
* **Hardware.** CPU by default, CUDA when present; under ``torchrun`` (``WORLD_SIZE`` > 1)
  the model is wrapped in DistributedDataParallel, every rank reads its own stream seed,
  and only rank 0 writes files. Threads: ``TrainingConfig.num_threads``, else
  ``LUMOS_NUM_THREADS``, else ``OMP_NUM_THREADS``, else cores / local ranks.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .mixture import GaussianMixture, mixture_nll
from .model_io import (
    json_default,
    save_model,
    sha256_file,
    write_tensors,
)
from .network import LumosNet, RawOutput
from .stamps import StampBatch
from .stats import P16, P84, sigma68

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "train",
    "augment_batch",
    "derive_seed",
    "validation_seed",
    "simulator_stream",
    "training_simulation",
    "evaluate",
    "latest_checkpoint",
    "checkpoint_conflicts",
    "clear_checkpoints",
    "configure_threads",
    "StreamFactory",
]

StreamFactory = Callable[[int, int], Iterator[StampBatch]]
CHECKPOINT_FORMAT = "lumos-checkpoint"
CHECKPOINT_VERSION = 1
_CKPT_RE = re.compile(r"^epoch-(\d{4,})\.json$")
_log = logging.getLogger("lumos.training")


@dataclass
class TrainingConfig:
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

    def __post_init__(self) -> None:
        for name in ("n_epochs", "samples_per_epoch", "batch_size", "lr_step_epochs",
                     "validation_chunk", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TrainingConfig.{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training configuration keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : LumosNet
        The trained model (the weight average when ``ema_decay`` > 0), in ``eval()`` mode.
    history : list of dict
        One entry per completed epoch (also of earlier runs resumed from): epoch, step,
        samples, lr, loss, val_loss, val_bias, val_sigma68, val_coverage68, ...
    epochs_completed : int
        Epochs completed in total.
    resumed_from : int or None
        Epoch of the checkpoint the run resumed from.
    best_epoch : int or None
        Epoch with the lowest validation loss.
    checkpoint_dir : Path
        Folder with checkpoints, logs and model files.
    final_model_path, best_model_path : Path or None
        JSON descriptions of the saved final and best models (rank 0).
    stopped_early : bool
        True when ``max_time_s`` ended the run before ``n_epochs``.
    """

    model: LumosNet
    history: list[dict[str, Any]]
    epochs_completed: int
    resumed_from: int | None
    best_epoch: int | None
    checkpoint_dir: Path
    final_model_path: Path | None = None
    best_model_path: Path | None = None
    stopped_early: bool = False


# ---------------------------------------------------------------------------------------
# seeds and streams


def derive_seed(base_seed: int, *keys: int) -> int:
    """A 63-bit seed determined by a base seed and integer keys (rank, epoch, purpose...).

    Parameters
    ----------
    base_seed : int
        Non-negative base seed.
    *keys : int
        Non-negative integers.

    Returns
    -------
    int
    """
    ss = np.random.SeedSequence([int(base_seed), *[int(k) for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def validation_seed(base_seed: int) -> int:
    """Seed for a held-out validation set, distinct from every training stream seed.

    Training streams use ``derive_seed(base_seed, rank, epoch, purpose)`` (four entropy
    words); this uses a different key layout, so the two never coincide in practice.
    """
    return derive_seed(base_seed, 0x7FFFFFFF, 0x56414C49, 0x44415445, 0x5345)


def training_simulation(model):
    """The simulation settings a model was trained on, from its metadata.

    Models record them as ``metadata["simulation_config"]``
    (:meth:`lumos.simulate.SimulationConfig.to_dict`); models that do not were trained on
    the default settings.

    Parameters
    ----------
    model : LumosNet
        A model (typically from :func:`lumos.model_io.load_model`).

    Returns
    -------
    lumos.simulate.SimulationConfig
    """
    from .simulate import SimulationConfig

    data = (getattr(model, "metadata", None) or {}).get("simulation_config")
    return SimulationConfig.from_dict(data) if data else SimulationConfig()


def simulator_stream(sim_config=None, **simulator_kwargs) -> StreamFactory:
    """A stream factory drawing fresh :class:`lumos.simulate.Simulator` batches.

    Parameters
    ----------
    sim_config : lumos.simulate.SimulationConfig, optional
        Simulation settings.
    **simulator_kwargs
        Passed to :class:`lumos.simulate.Simulator` (background, renderer_factory, ...).

    Returns
    -------
    callable
        ``factory(seed, batch_size)`` -> infinite iterator of StampBatch with truth.
    """

    def factory(seed: int, batch_size: int) -> Iterator[StampBatch]:
        from .simulate import Simulator

        return Simulator(sim_config, seed=seed, **simulator_kwargs).stream(batch_size)

    return factory


def augment_batch(batch: StampBatch, generator: torch.Generator | None = None) -> StampBatch:
    """Apply a random flip/90-degree rotation (one of 8) to every stamp.

    The same transformation is applied to the stamp, its profile and its sub-pixel
    offset, so the galaxy and its model profile stay aligned; the flux is unchanged
    (pixels are only permuted).

    Parameters
    ----------
    batch : StampBatch
    generator : torch.Generator, optional
        Source of randomness (CPU generator).

    Returns
    -------
    StampBatch
        A new batch; the other fields are shared with the input.
    """
    n = len(batch)
    code = torch.randint(0, 8, (n,), generator=generator).to(batch.pixels.device)
    pixels = batch.pixels.clone()
    profile = batch.profile.clone()
    offset = batch.offset.clone()
    for c in range(1, 8):
        idx = torch.nonzero(code == c).flatten()
        if idx.numel() == 0:
            continue
        p, q, o = batch.pixels[idx], batch.profile[idx], batch.offset[idx].clone()
        if c & 4:  # transpose: x <-> y
            p, q = p.transpose(-1, -2), q.transpose(-1, -2)
            o = o.flip(-1)
        if c & 1:  # mirror x (columns)
            p, q = p.flip(-1), q.flip(-1)
            o[:, 0] = -o[:, 0]
        if c & 2:  # mirror y (rows)
            p, q = p.flip(-2), q.flip(-2)
            o[:, 1] = -o[:, 1]
        pixels[idx] = p
        profile[idx] = q
        offset[idx] = o
    return batch.replace(pixels=pixels, profile=profile, offset=offset)


# ---------------------------------------------------------------------------------------
# environment


@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def _setup_distributed(device_type: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        here = True
    return _Dist(
        world_size=dist.get_world_size(),
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        initialised_here=here,
    )


def configure_threads(num_threads: int | None = None, local_world_size: int = 1) -> int:
    """Set torch's CPU threads: argument, else LUMOS_NUM_THREADS, OMP_NUM_THREADS, cores.

    Returns
    -------
    int
        The number of threads set.
    """
    n = num_threads
    for var in ("LUMOS_NUM_THREADS", "OMP_NUM_THREADS"):
        if n is None and os.environ.get(var, "").strip().isdigit():
            n = int(os.environ[var])
    if n is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        n = max(1, (cores or os.cpu_count() or 1) // max(1, local_world_size))
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _pick_device(config: TrainingConfig, dist: _Dist) -> torch.device:
    if config.device is not None:
        dev = torch.device(config.device)
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dist.enabled and dev.index is None:
        dev = torch.device("cuda", dist.local_rank)
    return dev


# ---------------------------------------------------------------------------------------
# loss, EMA, metrics


class _RawModule(nn.Module):
    """Wraps a LumosNet so DistributedDataParallel sees a tensor-only forward."""

    def __init__(self, net: LumosNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: StampBatch) -> RawOutput:
        return self.net.forward_raw(batch)


def _relative_nll(raw: RawOutput, truth: torch.Tensor,
                  truncated: torch.Tensor | None = None) -> torch.Tensor:
    """Per-galaxy NLL of truth / F_ref under the relative mixture (NaN for bad truth)."""
    truncated = raw.truncated if truncated is None else truncated
    target = truth.to(raw.means.dtype) / raw.reference
    # The truncated density is zero below 0; a negative truth can only be noise-free 0.
    target = torch.where(truncated, target.clamp_min(0.0), target)
    mix = GaussianMixture(raw.log_weights, raw.means, raw.sigmas, truncated=truncated)
    return mixture_nll(mix, target, truncated)


#: Largest importance weight of one stamp in a likelihood model's loss.
LIKELIHOOD_WEIGHT_MAX = 5.0


def likelihood_weights(truth: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Importance weights that turn the training posterior into the likelihood.

    A network trained by maximum likelihood on pairs (flux f, data d) learns the
    posterior ``p(f | d)``, which carries the training flux distribution ``pi(f)``.
    Weighting each stamp's loss by ``g(d) / pi(f)`` makes the optimum, for every d, the
    normalised likelihood ``p(d | f)`` instead (over the support of ``pi``), for any
    positive ``g``. With fluxes drawn log-uniform (``pi(f) ~ 1 / f``,
    ``SimulationConfig(flux_prior="loguniform")``) and ``g(d) = 1 / F_ref(d)`` the
    weight is ``f / F_ref``: about 1 wherever the galaxy is detected, small for fluxes
    well below the noise, which carry little information. Weights are clipped at
    :data:`LIKELIHOOD_WEIGHT_MAX` and normalised to a mean of 1 over the finite rows.

    Parameters
    ----------
    truth, reference : torch.Tensor, shape (N,)
        True flux and the network's reference flux ``F_ref``, image units.

    Returns
    -------
    torch.Tensor, shape (N,)
    """
    w = (truth.to(reference.dtype) / reference).clamp(0.0, LIKELIHOOD_WEIGHT_MAX)
    w = torch.nan_to_num(w, nan=0.0)
    return w / w.mean().clamp_min(1e-12)


def _batch_loss(module: nn.Module, batch: StampBatch, likelihood: bool = False) -> torch.Tensor:
    if batch.truth is None:
        raise ValueError("training batches need truth (true fluxes)")
    raw = module(batch)
    truth = batch.truth.to(raw.means.device)
    if likelihood:
        # Fluxes are positive in training: the likelihood is fitted on f > 0 (Eq. 10 form
        # for every stamp) and its mixture continues smoothly below zero.
        nll = _relative_nll(raw, truth, torch.ones_like(raw.truncated))
        good = torch.isfinite(nll)
        if not bool(good.any()):
            raise ValueError("no training row has a finite loss (check truth and pixels)")
        w = likelihood_weights(truth[good], raw.reference[good])
        return (w * nll[good]).mean()
    nll = _relative_nll(raw, truth)
    good = torch.isfinite(nll)
    if not bool(good.any()):
        raise ValueError("no training row has a finite loss (check truth and pixels)")
    return nll[good].mean()


class _Ema:
    """Exponential moving average of a model's floating-point state."""

    def __init__(self, model: LumosNet, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps = 0

    @torch.no_grad()
    def update(self, model: LumosNet) -> None:
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        self.steps += 1
        src = model.state_dict()
        for name, t in self.model.state_dict().items():
            if t.is_floating_point():
                t.mul_(d).add_(src[name].detach(), alpha=1.0 - d)
            else:
                t.copy_(src[name])


@torch.no_grad()
def evaluate(model: LumosNet, batch: StampBatch, chunk_size: int = 2048) -> dict[str, float]:
    """Validation metrics of a model on a batch with truth.

    Parameters
    ----------
    model : LumosNet
    batch : StampBatch
        With ``truth`` (true flux, image units).
    chunk_size : int
        Rows per forward pass.

    Returns
    -------
    dict
        ``val_loss`` (mean relative-units NLL, see the module docstring), ``val_bias``
        (median of (mean - truth) / truth), ``val_sigma68`` (:func:`lumos.stats.sigma68` of
        that ratio), ``val_coverage68`` (fraction of truths between the q16 and q84
        quantiles of their PDF, :data:`lumos.stats.P16` and :data:`lumos.stats.P84`), and
        ``val_bias_bright``/``val_sigma68_bright`` (i < 20.5) and
        ``val_bias_faint``/``val_sigma68_faint``.
    """
    if batch.truth is None:
        raise ValueError("the validation batch needs truth (true fluxes)")
    was_training = model.training
    model.eval()
    try:
        nll, mean, cdf = [], [], []
        for i in range(0, len(batch), chunk_size):
            part = batch[i : i + chunk_size]
            dev = next(model.parameters()).device
            raw = model.forward_raw(part.to(dev))
            truth = part.truth.to(dev)
            nll.append(_relative_nll(raw, truth).cpu())
            mix = GaussianMixture(raw.log_weights, raw.means, raw.sigmas, raw.truncated)
            mix = mix.scale(raw.reference)
            mean.append(mix.mean().cpu())
            cdf.append(mix.cdf(truth.to(mix.means.dtype)).cpu())
    finally:
        model.train(was_training)
    nll_t, mean_t, cdf_t = torch.cat(nll), torch.cat(mean), torch.cat(cdf)
    truth = batch.truth.double().cpu()
    rel = ((mean_t.double() - truth) / truth).numpy()
    ok = (truth > 0).numpy() & np.isfinite(rel)
    bright = (batch.i_mag.cpu().numpy() < 20.5) & ok
    faint = (batch.i_mag.cpu().numpy() >= 20.5) & ok

    def med(x: np.ndarray) -> float:
        return float(np.median(x)) if x.size else float("nan")

    finite = torch.isfinite(nll_t)
    c = cdf_t[torch.isfinite(cdf_t)].double()
    return {
        "val_loss": float(nll_t[finite].mean()) if bool(finite.any()) else float("nan"),
        "val_bias": med(rel[ok]),
        "val_sigma68": sigma68(rel[ok]),
        "val_coverage68": float(((c >= P16) & (c <= P84)).double().mean()) if c.numel()
        else float("nan"),
        "val_bias_bright": med(rel[bright]),
        "val_sigma68_bright": sigma68(rel[bright]),
        "val_bias_faint": med(rel[faint]),
        "val_sigma68_faint": sigma68(rel[faint]),
    }


# ---------------------------------------------------------------------------------------
# checkpoints


def _ckpt_stem(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The JSON of the most recent complete checkpoint in a folder (or None).

    A checkpoint counts when its JSON exists and the SHA-256 of its tensors file matches.
    """
    d = Path(directory)
    if not d.is_dir():
        return None
    found = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    for _, p in sorted(found, reverse=True):
        try:
            meta = json.loads(p.read_text())
            tensors = p.with_suffix(".safetensors")
            if meta.get("format") == CHECKPOINT_FORMAT and tensors.is_file() and (
                sha256_file(tensors) == meta.get("tensors_sha256")
            ):
                return p
        except (OSError, ValueError):
            continue
        _log.warning("ignoring incomplete checkpoint %s", p)
    return None


def checkpoint_conflicts(directory: str | os.PathLike, network_config: dict[str, Any],
                         seed: int) -> tuple[Path | None, dict[str, Any], list[str]]:
    """How the latest checkpoint of a folder differs from a run about to resume from it.

    Parameters
    ----------
    directory : str or path-like
        Checkpoint folder.
    network_config : dict
        ``NetworkConfig.to_dict()`` of the model to train.
    seed : int
        Training seed of the run.

    Returns
    -------
    checkpoint : Path or None
        The latest complete checkpoint (None when there is none).
    meta : dict
        Its JSON description (empty when there is none).
    conflicts : list of str
        What makes it another run's checkpoint ("network configuration", "seed 1, not
        2"); empty when the run can resume from it.
    """
    ckpt = latest_checkpoint(directory)
    if ckpt is None:
        return None, {}, []
    meta = json.loads(ckpt.read_text())
    conflicts = []
    if meta.get("network_config") != network_config:
        conflicts.append("another network configuration")
    before = meta.get("training_config", {}).get("seed")
    if before is not None and int(before) != int(seed):
        conflicts.append(f"seed {before}, not {seed}")
    return ckpt, meta, conflicts


def clear_checkpoints(directory: str | os.PathLike) -> int:
    """Remove the epoch checkpoints and the history of an earlier run from a folder.

    A run that does not resume calls this first: a later resume must not pick up a stale
    checkpoint of a higher epoch, and pruning to the most recent checkpoints must not
    remove the new run's own.

    Returns
    -------
    int
        Number of checkpoints removed.
    """
    d = Path(directory)
    if not d.is_dir():
        return 0
    removed = 0
    for p in list(d.iterdir()):
        m = _CKPT_RE.match(p.name)
        if m:
            removed += 1
            p.unlink(missing_ok=True)
            p.with_suffix(".safetensors").unlink(missing_ok=True)
    (d / "history.jsonl").unlink(missing_ok=True)
    return removed


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [name, int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    name, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng/numpy"].numpy().view(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))  # noqa: NPY002
    py_version, py_state, py_gauss = meta["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


def _write_checkpoint(directory: Path, epoch: int, model: LumosNet, ema: _Ema | None,
                      opt: torch.optim.Optimizer, sched, state: dict[str, Any],
                      keep: int) -> Path:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.model.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    stem = _ckpt_stem(directory, epoch)
    tensors_path = stem.with_suffix(".safetensors")
    write_tensors(tensors, tensors_path, metadata={"format": CHECKPOINT_FORMAT})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "lumos_version": __version__,
        "epoch": epoch,
        "tensors_sha256": sha256_file(tensors_path),
        "network_config": model.config.to_dict(),
        "optimizer": opt_meta,
        "scheduler": sched.state_dict(),
        "ema_steps": None if ema is None else ema.steps,
        "rng": rng_meta,
        **state,
    }
    json_path = stem.with_suffix(".json")
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, default=json_default))
    os.replace(tmp, json_path)
    # Keep only the most recent `keep` checkpoints.
    old = sorted(
        int(m.group(1)) for p in directory.iterdir() if (m := _CKPT_RE.match(p.name))
    )
    for e in old[:-keep]:
        for suffix in (".json", ".safetensors"):
            _ckpt_stem(directory, e).with_suffix(suffix).unlink(missing_ok=True)
    return json_path


def _read_checkpoint(json_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    meta = json.loads(json_path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{json_path}: not a lumos checkpoint of version {CHECKPOINT_VERSION}")
    return meta, load_file(str(json_path.with_suffix(".safetensors")))


# ---------------------------------------------------------------------------------------
# the training loop


class _Batches:
    """Training batches of one rank: per-epoch seeded iterators, or one plain iterable."""

    def __init__(self, source, batch_size: int, seed: int, rank: int) -> None:
        self.factory = source if (callable(source) and not hasattr(source, "__next__")) else None
        self.iterable: Iterable[StampBatch] | None = None if self.factory else source
        self._iter: Iterator[StampBatch] | None = None
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.consumed = 0

    @property
    def resumable(self) -> bool:
        return self.factory is not None

    def epoch_seed(self, epoch: int) -> int:
        return derive_seed(self.seed, self.rank, epoch, 0)

    def start_epoch(self, epoch: int, consumed_before: int) -> None:
        if self.factory is not None:
            self._iter = iter(self.factory(self.epoch_seed(epoch), self.batch_size))
            self.consumed = consumed_before
            return
        if self._iter is None:
            self._iter = iter(self.iterable)
            for _ in range(consumed_before):  # fast-forward a recreated iterable
                next(self._iter)
            self.consumed = consumed_before

    def next(self) -> StampBatch:
        try:
            batch = next(self._iter)
        except StopIteration:
            raise ValueError(
                "the training stream ended; give an infinite stream or a stream factory"
            ) from None
        self.consumed += 1
        return batch


def _describe_stream(batches: _Batches) -> dict[str, Any]:
    return {
        "kind": "factory" if batches.resumable else "iterable",
        "base_seed": batches.seed,
        "epoch_seed": "derive_seed(base_seed, rank, epoch, 0)",
        "batches_consumed_rank0": batches.consumed,
    }


def _setup_file_logging(directory: Path) -> logging.Handler:
    handler = logging.FileHandler(directory / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)
    return handler


def train(
    model: LumosNet,
    train_stream: StreamFactory | Iterable[StampBatch],
    val_batch: StampBatch,
    config: TrainingConfig | None = None,
    checkpoint_dir: str | os.PathLike = "checkpoints",
    resume: bool = True,
    progress: bool = True,
) -> TrainingResult:
    """Train a LumosNet on a stream of simulated batches, with checkpoints and resume.

    Parameters
    ----------
    model : LumosNet
        The network (trained in place; initialise it with a seeded torch RNG).
    train_stream : callable or iterable
        Preferably a factory ``f(seed, batch_size) -> iterator of StampBatch`` with truth
        (e.g. :func:`simulator_stream`), which makes resume exact; or an infinite iterable
        of batches.
    val_batch : StampBatch
        Held-out batch with truth, from a seed never used for training (see
        :func:`validation_seed`).
    config : TrainingConfig, optional
        Settings (default ``TrainingConfig()``: Adam 1e-4, /10 every 40 epochs, batch 500).
    checkpoint_dir : str or path-like
        Folder for checkpoints, ``train.log``, ``history.jsonl`` and the ``best`` and
        ``final`` model files.
    resume : bool
        Continue from the latest complete checkpoint in ``checkpoint_dir`` if there is one;
        when False, the checkpoints of an earlier run in ``checkpoint_dir`` are removed
        (:func:`clear_checkpoints`).
    progress : bool
        Show a tqdm progress bar (rank 0 only).

    Returns
    -------
    TrainingResult
    """
    config = TrainingConfig() if config is None else config
    if val_batch.truth is None:
        raise ValueError("val_batch needs truth (true fluxes)")
    directory = Path(checkpoint_dir)
    wanted = _pick_device(config, _Dist())
    dist = _setup_distributed(wanted.type)
    device = _pick_device(config, dist)
    threads = configure_threads(config.num_threads, dist.local_world_size)
    if dist.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    handler = _setup_file_logging(directory) if dist.is_main else None
    try:
        return _train(model, train_stream, val_batch, config, directory, resume, progress,
                      dist, device, threads)
    finally:
        if handler is not None:
            _log.removeHandler(handler)
            handler.close()
        if dist.initialised_here:
            torch.distributed.destroy_process_group()


def _train(model, train_stream, val_batch, config, directory, resume, progress, dist, device,
           threads) -> TrainingResult:
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    model.to(device)
    if model.config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs,
                                                gamma=config.lr_decay)
    ema = _Ema(model, config.ema_decay) if config.ema_decay > 0 else None
    batches = _Batches(train_stream, config.batch_size, config.seed, dist.rank)
    steps_per_epoch = math.ceil(config.samples_per_epoch / (config.batch_size * dist.world_size))

    start_epoch, global_step, history = 0, 0, []
    best_loss, best_epoch, resumed_from = math.inf, None, None
    consumed = 0
    ckpt = latest_checkpoint(directory) if resume else None
    if not resume and dist.is_main:
        removed = clear_checkpoints(directory)
        if removed:
            _log.info("not resuming: removed %d checkpoints of an earlier run from %s",
                      removed, directory)
    dist.barrier()
    if ckpt is not None:
        meta, tensors = _read_checkpoint(ckpt)
        if meta["network_config"] != model.config.to_dict():
            raise ValueError(
                f"{ckpt}: the checkpoint's network configuration differs from the model's; "
                "use another checkpoint folder, or start afresh without resuming"
            )
        if meta.get("world_size", 1) != dist.world_size:
            _log.warning("resuming with %d ranks from a checkpoint written with %d: the data "
                         "order differs from an uninterrupted run", dist.world_size,
                         meta.get("world_size", 1))
        volatile = {"n_epochs", "max_time_s", "num_threads", "device", "keep_checkpoints",
                    "validation_chunk"}
        before = meta.get("training_config", {})
        changed = sorted(k for k, v in config.to_dict().items()
                         if k not in volatile and k in before and before[k] != v)
        if changed and dist.is_main:
            _log.warning("resuming with changed training settings (%s): the run will not "
                         "reproduce an uninterrupted one", ", ".join(changed))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        if ema is not None:
            ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
            ema.model.load_state_dict(ema_state if ema_state else model.state_dict())
            ema.steps = int(meta.get("ema_steps") or 0)
        _optimizer_from_flat(optimizer, tensors, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        _restore_rng(tensors, meta["rng"])
        start_epoch = int(meta["epoch"])
        global_step = int(meta["global_step"])
        consumed = int(meta.get("batches_consumed", global_step))
        history = list(meta.get("history", []))
        best_loss = float(meta.get("best_val_loss", math.inf))
        best_epoch = meta.get("best_epoch")
        resumed_from = start_epoch
        if dist.is_main:
            _log.info("resumed from %s (epoch %d, step %d)", ckpt.name, start_epoch, global_step)

    train_module: nn.Module = _RawModule(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(
            train_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.is_main:
        _log.info(
            "training %d parameters on %s (%d threads, %d ranks): epochs %d-%d, %d steps of "
            "%d stamps per epoch per rank", model.n_parameters(), device, threads,
            dist.world_size, start_epoch + 1, config.n_epochs, steps_per_epoch,
            config.batch_size,
        )

    best_path = final_path = None
    stopped_early = False
    for epoch in range(start_epoch, config.n_epochs):
        if config.max_time_s is not None and time.perf_counter() - t_start > config.max_time_s:
            stopped_early = True
            break
        torch.manual_seed(derive_seed(config.seed, dist.rank, epoch, 2))
        aug_gen = torch.Generator().manual_seed(derive_seed(config.seed, dist.rank, epoch, 1))
        batches.start_epoch(epoch, consumed)
        model.train()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.n_epochs}",
                   disable=not (progress and dist.is_main), leave=False, dynamic_ncols=True)
        loss_sum, loss_n = 0.0, 0
        t_epoch = time.perf_counter()
        for _ in range(steps_per_epoch):
            batch = batches.next()
            if config.augment:
                batch = augment_batch(batch, aug_gen)
            batch = batch.to(device)
            loss = _batch_loss(train_module, batch, model.config.likelihood)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            global_step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
        bar.close()
        if dist.enabled:  # log the mean training loss over all ranks
            totals = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            loss_sum, loss_n = float(totals[0]), int(totals[1].item())
        consumed = batches.consumed
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        eval_model = ema.model if ema is not None else model
        metrics = evaluate(eval_model, val_batch, config.validation_chunk)
        seconds = time.perf_counter() - t_epoch
        entry = {
            "epoch": epoch + 1,
            "step": global_step,
            "samples": global_step * config.batch_size * dist.world_size,
            "lr": lr,
            "loss": loss_sum / max(loss_n, 1),
            **metrics,
            "seconds": seconds,
            "stamps_per_s": steps_per_epoch * config.batch_size * dist.world_size / seconds,
        }
        history.append(entry)
        improved = metrics["val_loss"] < best_loss
        if improved:
            best_loss, best_epoch = metrics["val_loss"], epoch + 1
        if dist.is_main:
            line = (
                f"epoch {epoch + 1}/{config.n_epochs} loss {entry['loss']:.4f} "
                f"val_loss {metrics['val_loss']:.4f} bias {metrics['val_bias']:+.4f} "
                f"sigma68 {metrics['val_sigma68']:.4f} cov68 {metrics['val_coverage68']:.3f} "
                f"lr {lr:.2e} {entry['stamps_per_s']:.0f} stamps/s"
            )
            _log.info(line)
            if progress:
                tqdm.write(line)
            meta_state = {
                "global_step": global_step,
                "batches_consumed": consumed,
                "world_size": dist.world_size,
                "training_config": config.to_dict(),
                "stream": _describe_stream(batches),
                "history": history,
                "best_val_loss": best_loss,
                "best_epoch": best_epoch,
            }
            _write_checkpoint(directory, epoch + 1, model, ema, optimizer, scheduler,
                              meta_state, config.keep_checkpoints)
            with open(directory / "history.jsonl", "a") as f:
                f.write(json.dumps(entry, default=json_default) + "\n")
            if improved:
                best_path = save_model(eval_model, directory / "best",
                                       training=_metadata(config, history, dist, batches))
        dist.barrier()

    final = ema.model if ema is not None else model
    final.eval()
    epochs_done = len(history)
    final.metadata = _metadata(config, history, dist, batches)
    if dist.is_main:
        final_path = save_model(final, directory / "final", training=final.metadata)
        if best_path is None and (directory / "best.json").is_file():
            best_path = directory / "best.json"
        _log.info("finished: %d epochs, final model %s", epochs_done, final_path)
    dist.barrier()
    return TrainingResult(
        model=final,
        history=history,
        epochs_completed=epochs_done,
        resumed_from=resumed_from,
        best_epoch=best_epoch,
        checkpoint_dir=directory,
        final_model_path=final_path,
        best_model_path=best_path,
        stopped_early=stopped_early,
    )


def _metadata(config: TrainingConfig, history: list[dict[str, Any]], dist: _Dist,
              batches: _Batches) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {
        "trainer": "lumos.training.train",
        "lumos_version": __version__,
        "training_config": config.to_dict(),
        "epochs": len(history),
        "samples_seen": last.get("samples", 0),
        "world_size": dist.world_size,
        "stream": _describe_stream(batches),
        "last_epoch": last,
    }

