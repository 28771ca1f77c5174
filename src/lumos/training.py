"""Supervised training of :class:`~lumos.network.LumosNet` on on-the-fly simulations.

The parts, one module each:

* **Data** (:mod:`lumos.streams`, :mod:`lumos.data_pipeline`). The training data come
  from a *stream factory* ``factory(seed, batch_size) -> iterator of StampBatch`` (for
  example :func:`lumos.streams.simulator_stream`). Epoch ``e`` of rank ``r`` reads the
  stream of ``derive_seed(base_seed, r, e, 0)``, so the data of every (epoch, step) are
  fixed by the base seed alone. An indexable factory (:class:`lumos.streams.SimulatorStream`)
  is drawn in ``TrainingConfig.data_workers`` worker processes ahead of the training, with
  the same batches as in one process. A plain iterable is accepted too; it is then read in
  order and fast-forwarded on resume, which is exact only if the iterable is recreated
  identically.
* **Loss** (:mod:`lumos.loss`): the mixture negative log-likelihood of ``truth / F_ref``,
  truncated at zero flux for faint galaxies; importance-weighted for a likelihood model.
* **Augmentation** (:func:`lumos.streams.augment_batch`): a random element of the 8
  flips/90-degree rotations per stamp, applied identically to the stamp, the profile and
  the sub-pixel offset. Augmentation and dropout draw from generators seeded per epoch.
* **Validation** (:func:`lumos.evaluation.evaluate`): a fixed held-out batch (simulate it
  with :func:`validation_seed`, never used for training) after every epoch: loss, median
  bias of (mean - truth) / truth, sigma68 of that ratio, and the fraction of truths inside
  the central 68% of their PDF.
* **Checkpoints** (:mod:`lumos.checkpoint`) after every epoch: weights, weight EMA, Adam
  state, scheduler, RNG states, epoch, step and stream seeds. A resumed run's weights
  equal the uninterrupted run's bit for bit. ``best`` and ``final`` model files
  (:func:`lumos.model_io.save_model` format), ``train.log`` and ``history.jsonl`` go to
  the same folder.
* **Hardware** (:mod:`lumos.devices`). CPU by default, CUDA when present; under
  ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel, every
  rank reads its own stream seed, and only rank 0 writes files. Threads:
  ``TrainingConfig.num_threads``, else ``LUMOS_NUM_THREADS``, else ``OMP_NUM_THREADS``,
  else this rank's share of the cores less its data workers.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (
    checkpoint_conflicts,
    clear_checkpoints,
    latest_checkpoint,
    load_optimizer_state,
    read_checkpoint,
    restore_rng,
    write_checkpoint,
)
from .data_pipeline import TrainingBatches
from .devices import Ranks, configure_threads, pick_device, setup_distributed
from .evaluation import evaluate
from .loss import LIKELIHOOD_WEIGHT_MAX, RawForward, batch_loss, likelihood_weights
from .model_io import json_default, save_model
from .network import LumosNet
from .stamps import StampBatch
from .streams import (
    StreamFactory,
    augment_batch,
    derive_seed,
    simulator_stream,
    training_simulation,
    validation_seed,
)
from .training_config import TrainingConfig

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
    "likelihood_weights",
    "LIKELIHOOD_WEIGHT_MAX",
    "latest_checkpoint",
    "checkpoint_conflicts",
    "clear_checkpoints",
    "configure_threads",
    "StreamFactory",
]

_log = logging.getLogger("lumos.training")


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
    wanted = pick_device(config.device, Ranks())
    dist = setup_distributed(wanted.type)
    device = pick_device(config.device, dist)
    threads = configure_threads(config.num_threads, dist.local_world_size,
                                reserved=config.data_workers)
    if dist.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    handler = _setup_file_logging(directory) if dist.is_main else None
    steps_per_epoch = math.ceil(config.samples_per_epoch / (config.batch_size * dist.world_size))
    batches = TrainingBatches(train_stream, config.batch_size, config.seed, dist.rank,
                              steps_per_epoch, config.n_epochs, config.data_workers)
    try:
        return _train(model, batches, steps_per_epoch, val_batch, config, directory, resume,
                      progress, dist, device, threads)
    finally:
        batches.close()
        if handler is not None:
            _log.removeHandler(handler)
            handler.close()
        if dist.initialised_here:
            torch.distributed.destroy_process_group()


def _train(model: LumosNet, batches: TrainingBatches, steps_per_epoch: int,
           val_batch: StampBatch, config: TrainingConfig, directory: Path, resume: bool,
           progress: bool, dist: Ranks, device: torch.device, threads: int) -> TrainingResult:
    t_start = time.perf_counter()
    model.to(device)
    if model.config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs,
                                                gamma=config.lr_decay)
    ema = _Ema(model, config.ema_decay) if config.ema_decay > 0 else None

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
        meta, tensors = read_checkpoint(ckpt)
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
                    "validation_chunk", "data_workers"}
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
        load_optimizer_state(optimizer, tensors, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        restore_rng(tensors, meta["rng"])
        start_epoch = int(meta["epoch"])
        global_step = int(meta["global_step"])
        consumed = int(meta.get("batches_consumed", global_step))
        history = list(meta.get("history", []))
        best_loss = float(meta.get("best_val_loss", math.inf))
        best_epoch = meta.get("best_epoch")
        resumed_from = start_epoch
        if dist.is_main:
            _log.info("resumed from %s (epoch %d, step %d)", ckpt.name, start_epoch, global_step)

    train_module: nn.Module = RawForward(model)
    if dist.enabled:
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
        wait_before = batches.wait_seconds
        for _ in range(steps_per_epoch):
            batch = batches.next()
            if config.augment:
                batch = augment_batch(batch, aug_gen)
            batch = batch.to(device)
            loss = batch_loss(train_module, batch, model.config.likelihood)
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
            "data_wait_s": batches.wait_seconds - wait_before,
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
                f"lr {lr:.2e} {entry['stamps_per_s']:.0f} stamps/s "
                f"(waited {entry['data_wait_s']:.1f} s for data)"
            )
            _log.info(line)
            if progress:
                tqdm.write(line)
            meta_state = {
                "global_step": global_step,
                "batches_consumed": consumed,
                "world_size": dist.world_size,
                "training_config": config.to_dict(),
                "stream": batches.describe(),
                "history": history,
                "best_val_loss": best_loss,
                "best_epoch": best_epoch,
            }
            write_checkpoint(directory, epoch + 1, model, optimizer, scheduler, meta_state,
                             config.keep_checkpoints, ema=None if ema is None else ema.model,
                             ema_steps=None if ema is None else ema.steps)
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


def _metadata(config: TrainingConfig, history: list[dict[str, Any]], dist: Ranks,
              batches: TrainingBatches) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {
        "trainer": "lumos.training.train",
        "lumos_version": __version__,
        "training_config": config.to_dict(),
        "epochs": len(history),
        "samples_seen": last.get("samples", 0),
        "world_size": dist.world_size,
        "stream": batches.describe(),
        "last_epoch": last,
    }

