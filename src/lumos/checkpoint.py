"""Epoch checkpoints of training and transfer learning (safetensors + JSON, no pickles).

A checkpoint of epoch ``e`` is ``epoch-EEEE.safetensors`` (weights, optional weight
average, optimiser tensors, RNG states of torch/numpy/python) and ``epoch-EEEE.json``
(format, epoch, network configuration, optimiser and scheduler state, and whatever the
caller adds). The JSON is written last and carries the tensors' SHA-256, so a checkpoint
interrupted while being written is ignored by :func:`latest_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from . import __version__
from .model_io import json_default, sha256_file, write_tensors

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "write_checkpoint",
    "read_checkpoint",
    "load_optimizer_state",
    "restore_rng",
    "latest_checkpoint",
    "checkpoint_conflicts",
    "clear_checkpoints",
]

CHECKPOINT_FORMAT = "lumos-checkpoint"
CHECKPOINT_VERSION = 1
_CKPT_RE = re.compile(r"^epoch-(\d{4,})\.json$")
_log = logging.getLogger("lumos.checkpoint")


def _stem(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}"


def _epochs(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, JSON path) of every checkpoint JSON in a folder."""
    return [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CKPT_RE.match(p.name))]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The JSON of the most recent complete checkpoint in a folder (or None).

    A checkpoint counts when its JSON exists and the SHA-256 of its tensors file matches.
    """
    d = Path(directory)
    if not d.is_dir():
        return None
    for _, p in sorted(_epochs(d), reverse=True):
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
    found = _epochs(d)
    for _, p in found:
        p.unlink(missing_ok=True)
        p.with_suffix(".safetensors").unlink(missing_ok=True)
    (d / "history.jsonl").unlink(missing_ok=True)
    return len(found)


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


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict) -> None:
    """Restore an optimiser from a checkpoint's tensors and its JSON ``"optimizer"`` entry.

    Parameters
    ----------
    opt : torch.optim.Optimizer
        Built over the same parameters, in the same order, as the one saved.
    tensors : dict
        The checkpoint's tensors (:func:`read_checkpoint`).
    meta : dict
        ``meta["optimizer"]`` of the checkpoint.
    """
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


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore the torch, CUDA, numpy and python global RNG states of a checkpoint
    (``tensors`` and ``meta["rng"]`` from :func:`read_checkpoint`)."""
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


def write_checkpoint(directory: Path, epoch: int, model: nn.Module, opt: torch.optim.Optimizer,
                     sched, state: dict[str, Any], keep: int, ema: nn.Module | None = None,
                     ema_steps: int | None = None) -> Path:
    """Write the checkpoint of an epoch and keep only the ``keep`` most recent ones.

    Parameters
    ----------
    directory : Path
        Checkpoint folder (exists).
    epoch : int
        Epochs completed.
    model : LumosNet
        Its ``state_dict`` is saved under ``model/`` and its configuration in the JSON.
    opt : torch.optim.Optimizer
    sched : torch.optim.lr_scheduler.LRScheduler
    state : dict
        JSON-ready entries added to the description (step, history, settings...).
    keep : int
        Number of most recent checkpoints kept.
    ema : nn.Module, optional
        A weight average, saved under ``ema/``, with ``ema_steps`` in the JSON.

    Returns
    -------
    Path
        The checkpoint's JSON.
    """
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    stem = _stem(directory, epoch)
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
        "ema_steps": None if ema is None else ema_steps,
        "rng": rng_meta,
        **state,
    }
    json_path = stem.with_suffix(".json")
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, default=json_default))
    os.replace(tmp, json_path)
    for e in sorted(e for e, _ in _epochs(directory))[:-keep]:
        for suffix in (".json", ".safetensors"):
            _stem(directory, e).with_suffix(suffix).unlink(missing_ok=True)
    return json_path


def read_checkpoint(json_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON description and the tensors of a checkpoint (ValueError if it is not a
    lumos checkpoint of this version)."""
    meta = json.loads(json_path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{json_path}: not a lumos checkpoint of version {CHECKPOINT_VERSION}")
    return meta, load_file(str(json_path.with_suffix(".safetensors")))
