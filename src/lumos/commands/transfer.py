"""``lumos transfer``: unsupervised transfer learning on repeated observations.

Options beyond ``tables``, ``--model`` and ``--out`` are read with defaults when the parser
does not define them (``--images``, ``--catalogue``, ``--zero-points``, ``--pairing``,
``--max-pairs``, ``--epochs``, ``--batch-size``, ``--lr``, ``--lr-step``, ``--holdout``,
``--sim-pool``, ``--checkpoints``, ``--seed``, ``--hours``, ``--no-resume``,
``--reference-pairs``, ``--survey``). A model trained for another survey than PAUS needs
its survey file (``--survey``): its bands, and its sky for the simulated stamps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import LumosError
from ..tableio import announce_overwrite, check_output_path

_DEFAULTS = {
    "images": None,
    "catalogue": None,
    "zero_points": None,
    "pairing": "consecutive",
    "max_pairs": 4,
    "epochs": 100,
    "batch_size": 256,
    "lr": 1e-5,
    "lr_step": 50,
    "holdout": 0.2,
    "sim_pool": None,
    "checkpoints": None,
    "seed": 1,
    "hours": None,
    "no_resume": False,
    "reference_pairs": 2000,
    "survey": None,
}
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar", ".joblib"}


def _option(args: argparse.Namespace, name: str):
    value = getattr(args, name, None)
    return _DEFAULTS[name] if value is None else value


def _checkpoint_dir(out: Path, given) -> Path:
    if given:
        return Path(given)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    return stem.with_name(stem.name + "-transfer-checkpoints")


def _summary(label: str, entry: dict) -> str:
    parts = [f"{label}: held-out sigma68(D) {entry.get('val_sigma68_D', float('nan')):.3f}",
             f"median(D) {entry.get('val_median_D', float('nan')):+.3f}",
             f"pair loss {entry.get('val_pair_loss', float('nan')):.4f}"]
    if "val_sigma68_Dref" in entry:
        parts.append(f"sigma68(D / training-domain width) {entry['val_sigma68_Dref']:.3f}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run ``lumos transfer`` (see the module docstring); returns the exit status."""
    from ..consistency import d_reference, reference_edges
    from ..model_io import load_default_model, load_model, model_paths
    from ..pairs import PairSimulation, simulate_pairs
    from ..pairs_measured import pairs_from_measurements
    from ..training import configure_threads, simulator_stream, training_simulation
    from ..transfer import TransferConfig, transfer

    out = Path(args.out)
    if out.suffix.lower() in _PICKLE_SUFFIXES:
        raise LumosError(f"--out {out.name}: lumos models are NAME.safetensors + NAME.json, "
                         "not pickles")
    check_output_path(out, table=False)
    announce_overwrite("transfer", *model_paths(out))
    try:
        config = TransferConfig(
            n_epochs=int(_option(args, "epochs")),
            batch_size=int(_option(args, "batch_size")),
            learning_rate=float(_option(args, "lr")),
            lr_step_epochs=int(_option(args, "lr_step")),
            holdout_fraction=float(_option(args, "holdout")),
            sim_pool=_option(args, "sim_pool"),
            seed=int(_option(args, "seed")),
            max_time_s=None if _option(args, "hours") is None
            else 3600.0 * float(_option(args, "hours")),
        )
    except ValueError as exc:
        raise LumosError(str(exc)) from None
    model = load_model(args.model) if args.model else load_default_model()
    from .surveys import survey_simulation

    # the model's survey: its bands registered, its sky for the simulated stamps
    sim_kwargs = survey_simulation(args, model, args.model or "the shipped model")
    configure_threads()
    t0 = time.perf_counter()
    pairs = pairs_from_measurements(
        args.tables,
        images=_option(args, "images"),
        catalogue=_option(args, "catalogue"),
        pairing=_option(args, "pairing"),
        max_pairs=_option(args, "max_pairs"),
        zero_points=_option(args, "zero_points"),
        progress=True,
    )
    if len(pairs) < 2:
        raise LumosError(f"found {len(pairs)} pair of observations; transfer needs at least 2 "
                         "(some to train on, some held out)")
    print(f"lumos transfer: {len(pairs)} pairs of observations from {len(args.tables)} "
          f"table(s), cut in {time.perf_counter() - t0:.0f} s")
    sim_config = training_simulation(model)  # supervised term and reference: as trained
    reference = None
    n_ref = int(_option(args, "reference_pairs"))
    if n_ref > 0:
        # what a calibrated D looks like for this model: its width on training-domain pairs
        print(f"lumos transfer: simulating {n_ref} pairs of the model's training domain "
              "(the calibrated width of D; --reference-pairs 0 to skip)")
        t0 = time.perf_counter()
        ref_pairs = simulate_pairs(n_ref, seed=config.seed + 7919,
                                   config=PairSimulation(simulation=sim_config),
                                   background=sim_kwargs.get("background"))  # fmt: skip
        try:
            reference = d_reference(model, ref_pairs, reference_edges(model))
        except ValueError as exc:
            raise LumosError(f"--reference-pairs {n_ref}: {exc}; simulate more pairs, or "
                             "give --reference-pairs 0 to skip the reference") from None
        print(f"lumos transfer: training-domain width of D from {n_ref} simulated pairs in "
              f"{time.perf_counter() - t0:.0f} s: "
              + ", ".join(f"i {lo:g}-{hi:g} {w:.2f}" for lo, hi, w in
                          zip(reference.edges[:-1], reference.edges[1:], reference.width,
                              strict=True)))  # fmt: skip
    ckpt = _checkpoint_dir(out, _option(args, "checkpoints"))
    try:
        model, history = transfer(model, pairs, simulator_stream(sim_config, **sim_kwargs),
                                  config,
                                  checkpoint_dir=ckpt,
                                  resume=not _option(args, "no_resume"), out=out,
                                  reference=reference)  # fmt: skip
    except ValueError as exc:
        if isinstance(exc, LumosError):
            raise
        raise LumosError(str(exc).splitlines()[0]) from None
    if history:
        print(_summary("before", history[0]))
        print(_summary(f"after {history[-1]['epoch']} epochs", history[-1]))
    print(f"lumos transfer: model written to {out} (checkpoints in {ckpt})")
    return 0
