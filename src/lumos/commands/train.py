"""``lumos train``: supervised training on on-the-fly TEAHUPOO simulations.

With ``--survey FILE`` the simulations are of that survey (bands, exposure times, zero
points, pixel scale, CCD, PSF range), and the survey is recorded in the model file
(``training["survey"]``); without it, PAUS.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import LumosError

#: ``--flux-softening S`` draws training fluxes from ``-NEGATIVE_SOFTENINGS * S`` upwards.
NEGATIVE_SOFTENINGS = 4.0


def checkpoint_dir(out: str | Path, given: str | None = None) -> Path:
    """The checkpoint folder of a training run: ``given``, else ``OUT-checkpoints`` next
    to the model (``OUT`` without its ``.safetensors`` or ``.json`` suffix)."""
    if given:
        return Path(given)
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    return stem.with_name(stem.name + "-checkpoints")


def _check_resume(ckpt: Path, model, seed: int, epochs: int) -> None:
    """Say where the run resumes from, or refuse another run's checkpoints in one line."""
    from ..training import checkpoint_conflicts

    latest, meta, conflicts = checkpoint_conflicts(ckpt, model.config.to_dict(), seed)
    if latest is None:
        return
    if conflicts:
        raise LumosError(f"the checkpoints in {ckpt} are of another run "
                         f"({'; '.join(conflicts)}): give another --checkpoints folder, or "
                         "--no-resume to start afresh")  # fmt: skip
    print(f"lumos train: resuming from {latest} (epoch {meta.get('epoch')} of {epochs}; "
          "--no-resume to start afresh)")  # fmt: skip


def _flux_prior(likelihood: bool, softening: float | None, flux_max: float) -> dict:
    """The training flux distribution: the population's, log-uniform (``--likelihood``)
    or asinh-uniform from ``-NEGATIVE_SOFTENINGS * S`` (``--flux-softening S``)."""
    if not likelihood:
        return {"flux_prior": "population"}
    if softening is None:
        return {"flux_prior": "loguniform"}
    return {"flux_prior": "asinh", "flux_softening": float(softening),
            "flux_range": (-NEGATIVE_SOFTENINGS * float(softening), float(flux_max))}


def run(args: argparse.Namespace) -> int:
    from ..model_io import load_model, model_paths, save_model
    from ..network import LumosNet, NetworkConfig
    from ..simulate import CatalogueErrors, Simulator
    from ..survey import load_survey
    from ..tableio import announce_overwrite, check_output_path
    from ..training import (
        TrainingConfig,
        latest_checkpoint,
        simulator_stream,
        train,
        validation_seed,
    )
    from .simulate import training_background

    weights = model_paths(args.out)[0]
    if weights.parent.is_dir():  # else save_model creates it
        check_output_path(weights, table=False)
    for name in ("epochs", "samples_per_epoch", "batch_size", "lr_step", "val_size"):
        if getattr(args, name) < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be positive")
    if not args.lr > 0:
        raise LumosError("--lr must be positive")
    if not 0.0 <= args.two_component_fraction <= 1.0:
        raise LumosError("--two-component-fraction must be in [0, 1]")
    position = float(getattr(args, "position_error", 0.0))
    if not (math.isfinite(position) and position >= 0):
        raise LumosError(f"--position-error must be 0 or more pixels, got {position:g}")
    softening = getattr(args, "flux_softening", None)
    if softening is not None and not args.likelihood:
        raise LumosError("--flux-softening needs --likelihood")
    if softening is not None and not (softening > 0 and math.isfinite(softening)):
        raise LumosError(f"--flux-softening must be positive, got {softening}")
    if args.threads is not None and args.threads < 1:
        raise LumosError("--threads must be positive")
    workers = getattr(args, "data_workers", 1)
    if workers < 0:
        raise LumosError("--data-workers must be 0 or more")
    torch.manual_seed(args.seed)
    survey = load_survey(getattr(args, "survey", None))
    # the model is trained on the survey's magnitudes: outside them OUT_OF_RANGE
    mag_range = tuple(float(m) for m in survey.mag_range)
    start = getattr(args, "start", None)
    if start:
        base = load_model(start)
        # calibrate again afterwards
        config = base.config.uncalibrated().replace(i_mag_range=mag_range)
        if args.likelihood:
            config = config.replace(likelihood=True)
        model = LumosNet(config)
        model.load_state_dict(base.state_dict())
        print(f"lumos train: starting from {start}")
    else:
        config = {"default": NetworkConfig.default, "paper": NetworkConfig.paper,
                  "tiny": NetworkConfig.tiny}[args.config]().replace(
                      i_mag_range=mag_range)  # fmt: skip
        if args.likelihood:
            config = config.replace(likelihood=True)
        model = LumosNet(config)
    ckpt = checkpoint_dir(args.out, args.checkpoints)
    if not args.no_resume:
        _check_resume(ckpt, model, args.seed, args.epochs)
    elif latest_checkpoint(ckpt) is not None:
        print(f"lumos train: --no-resume: removing the checkpoints of an earlier run from {ckpt}")
    announce_overwrite("train", *model_paths(args.out))
    errors = replace(CatalogueErrors.named(args.catalogue_errors),
                     position_sigma=position)
    sim_config = survey.simulation_config(
        catalogue_errors=errors,
        two_component_fraction=args.two_component_fraction,
        two_component_model=getattr(args, "two_component_model", "matched"),
        **_flux_prior(args.likelihood, softening, survey.flux_range[1]),
    )
    sim_kwargs = training_background(args, survey)
    t0 = time.perf_counter()
    val_seed = validation_seed(args.seed)
    print(f"lumos train: drawing {args.val_size} held-out validation stamps (seed {val_seed})")
    val_batch = Simulator(sim_config, seed=val_seed, **sim_kwargs).sample(args.val_size)
    train_config = TrainingConfig(
        n_epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_step_epochs=args.lr_step,
        seed=args.seed,
        max_time_s=None if args.hours is None else 3600.0 * args.hours,
        num_threads=args.threads,
        data_workers=workers,
    )
    result = train(
        model, simulator_stream(sim_config, **sim_kwargs), val_batch, train_config,
        checkpoint_dir=ckpt, resume=not args.no_resume,
    )  # fmt: skip
    last = result.history[-1] if result.history else {}
    save_model(
        result.model,
        args.out,
        training={
            "training": train_config.to_dict(),
            "network": args.config,
            "started_from": start,
            "simulation_config": sim_config.to_dict(),
            "survey": survey.to_dict(),
            "epochs_completed": result.epochs_completed,
            "validation_seed": val_seed,
            "validation_size": args.val_size,
            "final_metrics": last,
            "wall_time_s_this_run": time.perf_counter() - t0,
            "command": "lumos train " + " ".join(
                f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                for k, v in vars(args).items()
                if k not in ("command",) and v is not None and v is not False
            ),
        },
    )
    print(f"lumos train: {result.epochs_completed} epochs; model written to {args.out} "
          f"(checkpoints in {ckpt})")
    return 0
