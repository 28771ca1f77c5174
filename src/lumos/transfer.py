"""Unsupervised transfer learning on pairs of observations (Cabayol et al., section 4.3).

A network trained on simulations meets real images whose PSF, background and artefacts
differ from the simulated ones. Real data have no true fluxes, but they do have *repeated
observations*: the same galaxy observed in the same band on two different exposures must
get agreeing flux PDFs. Transfer learning fine-tunes the network with

    loss = mean_pairs pair_nll(p1, p2)  +  mean_sim NLL(truth | p)                  (Eq. 11)

where ``pair_nll`` (:func:`lumos.mixture.pair_nll`) is minus the log of the overlap
integral of the two (calibrated) mixtures, truncated at zero flux for galaxies fainter
than the model's ``truncate_threshold`` (i = 20.5), and the second term is the supervised
loss of :mod:`lumos.training` on a fresh simulated batch. The second term keeps the flux
scale, which pairs cannot fix: scaling both PDFs of a pair by ``c`` changes the pair loss
by ``+log c`` (it is a density of the flux difference), so on its own the pair term would
even pull every flux down a little; with equal weights the balance costs a small bias
(about 1-2% in ``bench/bench_transfer.py``; lower ``pair_weight`` to reduce it). Both
terms are evaluated on the flux relative to a detached per-row reference flux, so their
values are O(1) and independent of the image units (the gradients are those of the
flux-space losses).

Only the **last linear layer** (``model.head``) is trained; every other parameter,
including the band embedding, is frozen. Because the frozen body is deterministic (the
model runs in ``eval()`` mode: no dropout), the body's output
(:meth:`lumos.network.LumosNet.body`) is computed once per stamp and cached, and every step
runs only :meth:`lumos.network.LumosNet.head_raw`, so an epoch over the pairs costs a few
small matrix products; the simulated batches go through the frozen body without gradients.

Optimiser: Adam, learning rate 1e-5 divided by 10 every 50 epochs (configurable); an
epoch is one pass over the training pairs. A fraction of the pairs (grouped by galaxy) is
held out; after every epoch :func:`lumos.consistency.pair_consistency` is reported on
them: the width ``sigma68`` of ``D = (f1 - f2) / sqrt(s1^2 + s2^2)`` (paper Eq. 19; ``f``
the mixture mean, ``s`` its standard deviation), 1 for calibrated PDFs. Checkpoints (one per
epoch, :mod:`lumos.checkpoint`, as in training) make the run resumable, bit for bit.

Pairs come from simulations (:func:`lumos.pairs.simulate_pairs`, for tests and benchmarks,
optionally with a PSF and background the training never saw) or from real measurement tables
(:func:`lumos.pairs_measured.pairs_from_measurements`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import latest_checkpoint, load_optimizer_state, read_checkpoint, write_checkpoint
from .consistency import DReference, consistency_metrics
from .devices import configure_threads
from .loss import relative_nll
from .mixture import pair_nll
from .model_io import save_model
from .network import BodyOutput, LumosNet, RawOutput
from .pairs import PairSet
from .settings import Settings, check_optimiser, check_positive_integers
from .stamps import StampBatch
from .streams import augment_batch, derive_seed

__all__ = ["TransferConfig", "transfer"]
_log = logging.getLogger("lumos.transfer")


def _pair_losses(raw1: RawOutput, raw2: RawOutput, zp: Tensor, zp_err: Tensor,
                 width: Tensor | None = None) -> Tensor:
    """Per-pair loss, in units of log(relative flux): flux-space pair_nll + log R."""
    zp, zp_err = zp.to(raw1.means), zp_err.to(raw1.means)  # dtype and device
    norm = torch.sqrt(raw1.reference * zp[:, 0] * raw2.reference * zp[:, 1]).detach()
    m1 = raw1.mixture().calibrate(zp[:, 0], zp_err[:, 0]).scale(1.0 / norm)
    m2 = raw2.mixture().calibrate(zp[:, 1], zp_err[:, 1]).scale(1.0 / norm)
    return pair_nll(m1, m2, raw1.truncated | raw2.truncated, width)


def _pair_widths(reference: DReference | None, pairs: PairSet, device) -> Tensor | None:
    """Training-domain width of D for each pair (None without a reference)."""
    if reference is None:
        return None
    w = reference(pairs.first.i_mag.double().cpu().numpy())
    return torch.as_tensor(w, dtype=torch.float64, device=device)


def _finite_mean(values: Tensor) -> Tensor:
    good = torch.isfinite(values)
    if not bool(good.any()):
        return torch.zeros((), dtype=values.dtype, device=values.device, requires_grad=True)
    return values[good].mean()


@dataclass
class TransferConfig(Settings, kind="transfer"):
    """Settings of :func:`transfer`.

    Parameters
    ----------
    n_epochs : int
        Epochs (passes over the training pairs); a resumed run continues up to this number.
    batch_size : int
        Pairs per optimiser step.
    sim_batch_size : int or None
        Simulated stamps per step for the supervised term (None: ``batch_size``).
    sim_pool : int or None
        None (default): a fresh simulated batch every step, drawn from the stream factory
        with a per-epoch seed (as in training). An integer: draw that many simulated
        stamps once and cycle through them (much faster; the head input of every stamp
        is cached).
    learning_rate : float
        Adam learning rate at the start (paper: 1e-5).
    lr_decay : float
        Factor applied every ``lr_step_epochs`` epochs (paper: 0.1).
    lr_step_epochs : int
        Epochs between decays (paper: 50).
    pair_weight, sim_weight : float
        Weights of the pair and supervised terms (equal by default).
    holdout_fraction : float
        Fraction of the pairs (grouped by galaxy) held out to report
        :func:`pair_consistency` after every epoch.
    max_grad_norm : float or None
        Gradient-norm clipping (None: none).
    augment : bool
        Random flips / 90-degree rotations of the simulated stamps.
    seed : int
        Base seed (pair order, simulated streams, hold-out choice).
    keep_checkpoints : int
        Most recent epoch checkpoints kept.
    max_time_s : float or None
        Stop at the end of the first epoch after this many seconds of this call.
    num_threads : int or None
        Torch CPU threads (None: leave torch's setting alone).
    """

    n_epochs: int = 100
    batch_size: int = 256
    sim_batch_size: int | None = None
    sim_pool: int | None = None
    learning_rate: float = 1e-5
    lr_decay: float = 0.1
    lr_step_epochs: int = 50
    pair_weight: float = 1.0
    sim_weight: float = 1.0
    holdout_fraction: float = 0.2
    max_grad_norm: float | None = 10.0
    augment: bool = True
    seed: int = 1
    keep_checkpoints: int = 2
    max_time_s: float | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        check_positive_integers(self, ("n_epochs", "batch_size", "lr_step_epochs",
                                       "keep_checkpoints"))
        for name in ("sim_batch_size", "sim_pool"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"TransferConfig.{name} must be a positive integer or None")
        check_optimiser(self)
        if not (self.pair_weight >= 0 and self.sim_weight >= 0
                and self.pair_weight + self.sim_weight > 0):
            raise ValueError("pair_weight and sim_weight must be >= 0 and not both 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")


def _frozen_digest(model: LumosNet) -> str:
    """SHA-256 of every parameter and buffer except the head (the frozen body)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not name.startswith("head."):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _SimSource:
    """Supervised batches: fresh per step (per-epoch seeded) or a cached pool."""

    def __init__(self, factory, model: LumosNet, config: TransferConfig) -> None:
        if not callable(factory):
            raise ValueError("sim_stream_factory must be a callable factory(seed, batch_size)")
        self.factory = factory
        self.model = model
        self.config = config
        self.batch_size = int(config.sim_batch_size or config.batch_size)
        self.pool: tuple[BodyOutput, Tensor] | None = None
        self.iterator: Iterator[StampBatch] | None = None
        self.generator: torch.Generator | None = None

    def _prepare(self, batch: StampBatch, generator: torch.Generator) -> StampBatch:
        if batch.truth is None:
            raise ValueError("the simulated stream must give batches with truth")
        return augment_batch(batch, generator) if self.config.augment else batch

    def start_epoch(self, epoch: int) -> None:
        seed = self.config.seed
        if self.config.sim_pool is not None:
            if self.pool is None:
                gen = torch.Generator().manual_seed(derive_seed(seed, 0x504F4F4C, 1))
                stream = iter(self.factory(derive_seed(seed, 0x504F4F4C, 0), self.batch_size))
                parts, truths, have = [], [], 0
                while have < self.config.sim_pool:
                    batch = self._prepare(next(stream), gen)
                    parts.append(self.model.body_in_chunks(batch))
                    truths.append(batch.truth)
                    have += len(batch)
                inputs = BodyOutput.concat(parts).take(slice(0, self.config.sim_pool))
                self.pool = (inputs, torch.cat(truths)[: self.config.sim_pool])
            return
        self.iterator = iter(self.factory(derive_seed(seed, 0, epoch, 0), self.batch_size))
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0, epoch, 1))

    def next(self, global_step: int) -> tuple[BodyOutput, Tensor]:
        if self.pool is not None:
            inputs, truth = self.pool
            n = len(truth)
            start = (global_step * self.batch_size) % n
            idx = torch.arange(start, start + self.batch_size) % n
            return inputs.take(idx), truth[idx]
        try:
            batch = self._prepare(next(self.iterator), self.generator)
        except StopIteration:
            raise ValueError("the simulated stream ended; give an infinite stream factory") \
                from None
        return self.model.body_in_chunks(batch), batch.truth


def _holdout_metrics(model: LumosNet, held: BodyOutput, held2: BodyOutput,
                     pairs: PairSet, reference: DReference | None = None) -> dict[str, float]:
    with torch.no_grad():
        raw1, raw2 = model.head_raw(held), model.head_raw(held2)
        loss = _finite_mean(_pair_losses(raw1, raw2, pairs.zero_point, pairs.zero_point_err,
                                         _pair_widths(reference, pairs, raw1.means.device)))
        m1 = raw1.mixture().calibrate(pairs.zero_point[:, 0], pairs.zero_point_err[:, 0])
        m2 = raw2.mixture().calibrate(pairs.zero_point[:, 1], pairs.zero_point_err[:, 1])
        metrics = consistency_metrics(m1, m2, pairs.truth, pairs.zero_point, pairs.first.i_mag,
                               reference)  # fmt: skip
    return {"val_pair_loss": float(loss), **{f"val_{k}": v for k, v in metrics.items()}}


def transfer(
    model: LumosNet,
    pairs: PairSet,
    sim_stream_factory: Callable[[int, int], Iterator[StampBatch]],
    config: TransferConfig | None = None,
    checkpoint_dir: str | os.PathLike = "transfer-checkpoints",
    progress: bool = True,
    resume: bool = True,
    out: str | os.PathLike | None = None,
    reference: DReference | None = None,
) -> tuple[LumosNet, list[dict[str, Any]]]:
    """Fine-tune the last layer of a model on pairs of observations (unsupervised).

    Parameters
    ----------
    model : LumosNet
        The model trained on simulations; its head is trained in place, everything else
        stays bit-identical.
    pairs : PairSet
        Pairs of observations; ``config.holdout_fraction`` of them (grouped by galaxy) are
        held out for the per-epoch metric.
    sim_stream_factory : callable
        ``factory(seed, batch_size)`` -> iterator of simulated StampBatch with truth
        (e.g. :func:`lumos.training.simulator_stream`), for the supervised term.
    config : TransferConfig, optional
        Settings (default: Adam 1e-5, /10 every 50 epochs, 100 epochs).
    checkpoint_dir : str or path-like
        Folder of the per-epoch checkpoints and ``history.jsonl``.
    progress : bool
        Show a progress bar and one line per epoch.
    resume : bool
        Continue from the latest checkpoint in ``checkpoint_dir`` when there is one.
    out : str or path-like, optional
        Where to write the transferred model (:func:`lumos.model_io.save_model`);
        default ``checkpoint_dir / "transferred"``.
    reference : DReference, optional
        Training-domain widths of D (:func:`d_reference`). The pair loss then asks the two
        PDFs to agree as well as they do in the training domain, not as if the two
        observations shared nothing (Eq. 11 assumes independent errors; the catalogue
        magnitude and profile are shared), and the held-out metrics also include
        ``val_sigma68_Dref`` (1 when as calibrated as in the training domain).

    Returns
    -------
    (LumosNet, list of dict)
        The model (``eval()`` mode, with ``metadata["transfer"]``) and the history: one
        entry per epoch with ``epoch, step, lr, loss, pair_loss, sim_loss,
        val_pair_loss, val_sigma68_D, val_median_D, ...`` (``val_bias``,
        ``val_sigma68_rel`` for simulated pairs). Entry 0 (epoch 0) is the model before
        transfer.
    """
    config = TransferConfig() if config is None else config
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise ValueError("transfer needs a LumosNet whose last layer `head` is nn.Linear")
    if len(pairs) < 1:
        raise ValueError("transfer needs at least one pair")
    if config.num_threads is not None:
        configure_threads(config.num_threads)
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    train_pairs, held_pairs = pairs.split(config.holdout_fraction, config.seed)
    if len(train_pairs) == 0:
        raise ValueError("no training pairs left after the hold-out split")
    dev = next(model.parameters()).device
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    head_params = list(model.head.parameters())
    try:
        frozen = _frozen_digest(model)
        optimizer = torch.optim.Adam(head_params, lr=config.learning_rate)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay)
        start_epoch, global_step, history = 0, 0, []
        fingerprint = pairs.fingerprint()
        ckpt = latest_checkpoint(directory) if resume else None
        if ckpt is not None:
            start_epoch, global_step, history = _resume(
                ckpt, model, optimizer, scheduler, frozen, fingerprint, config)

        # the frozen body, once: head inputs of every pair stamp
        h1 = model.body_in_chunks(train_pairs.first)
        h2 = model.body_in_chunks(train_pairs.second)
        held1 = held2 = None
        if len(held_pairs):
            held1 = model.body_in_chunks(held_pairs.first)
            held2 = model.body_in_chunks(held_pairs.second)
        sims = _SimSource(sim_stream_factory, model, config)
        zp_train = train_pairs.zero_point.to(dev)
        zp_err_train = train_pairs.zero_point_err.to(dev)
        width_train = _pair_widths(reference, train_pairs, dev)
        n_train = len(train_pairs)
        steps = math.ceil(n_train / config.batch_size)

        if not history:  # the starting point
            entry = {"epoch": 0, "step": 0, "lr": config.learning_rate}
            if held1 is not None:
                entry.update(_holdout_metrics(model, held1, held2, held_pairs, reference))
            history.append(entry)
            _append_history(directory, entry)

        bar = tqdm(total=config.n_epochs, initial=start_epoch, desc="transfer", unit="epoch",
                   disable=not progress, dynamic_ncols=True)
        for epoch in range(start_epoch, config.n_epochs):
            if config.max_time_s is not None and time.perf_counter() - t_start > config.max_time_s:
                break
            t_epoch = time.perf_counter()
            order = torch.randperm(
                n_train, generator=torch.Generator().manual_seed(
                    derive_seed(config.seed, 1, epoch, 0)))
            sims.start_epoch(epoch)
            sums = {"loss": 0.0, "pair_loss": 0.0, "sim_loss": 0.0}
            for step in range(steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss = torch.zeros((), device=dev)
                pair_loss = sim_loss = torch.zeros((), device=dev)
                if config.pair_weight > 0:
                    raw1 = model.head_raw(h1.take(idx))
                    raw2 = model.head_raw(h2.take(idx))
                    pair_loss = _finite_mean(_pair_losses(
                        raw1, raw2, zp_train[idx], zp_err_train[idx],
                        None if width_train is None else width_train[idx]))
                    loss = loss + config.pair_weight * pair_loss
                if config.sim_weight > 0:
                    inputs, truth = sims.next(global_step)
                    sim_loss = _finite_mean(relative_nll(model.head_raw(inputs),
                                                               truth.to(dev)))
                    loss = loss + config.sim_weight * sim_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(head_params, config.max_grad_norm)
                optimizer.step()
                global_step += 1
                sums["loss"] += float(loss.detach())
                sums["pair_loss"] += float(pair_loss.detach())
                sums["sim_loss"] += float(sim_loss.detach())
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            entry = {"epoch": epoch + 1, "step": global_step, "lr": lr,
                     **{k: v / steps for k, v in sums.items()}}
            if held1 is not None:
                entry.update(_holdout_metrics(model, held1, held2, held_pairs, reference))
            entry["seconds"] = time.perf_counter() - t_epoch
            history.append(entry)
            write_checkpoint(directory, epoch + 1, model, optimizer, scheduler, {
                "global_step": global_step,
                "history": history,
                "transfer_config": config.to_dict(),
                "frozen_sha256": frozen,
                "pairs_fingerprint": fingerprint,
            }, config.keep_checkpoints)
            _append_history(directory, entry)
            bar.update(1)
            if progress:
                tqdm.write(_epoch_line(entry, config.n_epochs))
        bar.close()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])
    model.eval()
    model.metadata = _transfer_metadata(model, pairs, train_pairs, held_pairs, config, history)
    save_model(model, directory / "transferred" if out is None else out,
               training=model.metadata)
    return model, history


def _epoch_line(entry: dict[str, Any], n_epochs: int) -> str:
    line = (f"epoch {entry['epoch']}/{n_epochs} loss {entry.get('loss', float('nan')):.4f} "
            f"(pairs {entry.get('pair_loss', float('nan')):.4f}, "
            f"sim {entry.get('sim_loss', float('nan')):.4f})")
    if "val_sigma68_D" in entry:
        line += (f" held-out sigma68(D) {entry['val_sigma68_D']:.3f} (untruncated "
                 f"{entry['val_sigma68_D_untruncated']:.3f}) median(D) "
                 f"{entry['val_median_D']:+.3f}")
    if "val_bias" in entry:
        line += f" bias {entry['val_bias']:+.4f}"
    return line + f" lr {entry['lr']:.1e}"


def _append_history(directory: Path, entry: dict[str, Any]) -> None:
    with open(directory / "history.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _resume(ckpt: Path, model: LumosNet, optimizer, scheduler, frozen: str, fingerprint: str,
            config: TransferConfig) -> tuple[int, int, list[dict[str, Any]]]:
    meta, tensors = read_checkpoint(ckpt)
    if "transfer_config" not in meta:
        raise ValueError(f"{ckpt.parent} holds training checkpoints, not transfer ones; "
                         "use another checkpoint folder")
    if meta.get("frozen_sha256") != frozen:
        raise ValueError(f"{ckpt}: written for a different starting model; use another "
                         "checkpoint folder or resume=False")
    if meta.get("pairs_fingerprint") != fingerprint:
        _log.warning("resuming %s with different pairs than the checkpoint's", ckpt.name)
    volatile = {"n_epochs", "max_time_s", "num_threads", "keep_checkpoints"}
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in volatile and meta["transfer_config"].get(k) != v)
    if changed:
        _log.warning("resuming with changed transfer settings (%s)", ", ".join(changed))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            p.copy_(state[f"head.{name}"])
    load_optimizer_state(optimizer, tensors, meta["optimizer"])
    scheduler.load_state_dict(meta["scheduler"])
    _log.info("resumed transfer from %s", ckpt.name)
    return int(meta["epoch"]), int(meta["global_step"]), list(meta.get("history", []))


def _transfer_metadata(model: LumosNet, pairs: PairSet, train_pairs: PairSet,
                       held_pairs: PairSet, config: TransferConfig,
                       history: list[dict[str, Any]]) -> dict[str, Any]:
    before = dict(getattr(model, "metadata", {}) or {})
    before.pop("transfer", None)
    return {
        **before,
        "transfer": {
            "method": "lumos.transfer.transfer (pair loss + supervised simulations, "
                      "last layer only)",
            "lumos_version": __version__,
            "pairs": pairs.source,
            "n_pairs": len(pairs),
            "n_train_pairs": len(train_pairs),
            "n_holdout_pairs": len(held_pairs),
            "pairs_fingerprint": pairs.fingerprint(),
            "config": config.to_dict(),
            "epochs": history[-1]["epoch"] if history else 0,
            "before": history[0] if history else {},
            "after": history[-1] if history else {},
        },
    }

