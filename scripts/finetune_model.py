"""Fine-tune a trained lumos model on simulations with catalogue (model-profile) errors.

The model-profile channel of real data is drawn from an external catalogue whose shape
parameters are measured with errors, and real galaxies are not single Sersic profiles. A model
trained with exact profiles trusts the profile channel too much there. This script continues
training from an existing model (default: the shipped one, its temperature scaling removed)
on fresh TEAHUPOO simulations whose profile channel is drawn with
``lumos.simulate.CatalogueErrors.realistic()`` errors (10% in r50, 15% in n, 0.05 in q,
5 degrees in pa, 3% in the PSF FWHM, 0.03 mag in i), with checkpoints so that an interrupted
run resumes. Calibrate the result afterwards with ``scripts/calibrate_model.py
--catalogue-errors realistic``.

Usage::

    .venv/bin/python scripts/finetune_model.py --out runs/lumos-caterr \\
        --checkpoints runs/ckpt-caterr --minutes 50
"""

from __future__ import annotations

import argparse
import dataclasses
import time


def main() -> None:
    import torch

    from lumos.model_io import default_model_path, load_model, read_model_description, save_model
    from lumos.network import LumosNet
    from lumos.simulate import CatalogueErrors, SimulationConfig, Simulator
    from lumos.training import TrainingConfig, simulator_stream, train, validation_seed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default=None, help="starting model (default: shipped)")
    parser.add_argument("--out", required=True, help="output model")
    parser.add_argument("--checkpoints", required=True, help="checkpoint directory")
    parser.add_argument("--minutes", type=float, default=50.0, help="wall-time budget")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--samples-per-epoch", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-step", type=int, default=25)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--val-size", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--two-component-fraction", type=float, default=0.0,
                        help="fraction of bulge + disk galaxies behind single-Sersic catalogue "
                        "entries (SimulationConfig.two_component_fraction)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start_path = args.start or default_model_path()
    start = load_model(start_path)
    model = LumosNet(start.config.replace(sigma_scale=1.0))  # re-calibrate afterwards
    model.load_state_dict(start.state_dict())
    sim_config = SimulationConfig(catalogue_errors=CatalogueErrors.realistic(),
                                  two_component_fraction=args.two_component_fraction)
    val_seed = validation_seed(args.seed)
    val = Simulator(sim_config, seed=val_seed).sample(args.val_size)
    config = TrainingConfig(
        n_epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size, learning_rate=args.lr, lr_step_epochs=args.lr_step,
        seed=args.seed, max_time_s=60.0 * args.minutes, num_threads=args.threads,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = train(model, simulator_stream(sim_config), val, config,
                   checkpoint_dir=args.checkpoints, progress=False)  # fmt: skip
    previous = read_model_description(start_path).get("training") or {}
    save_model(
        result.model,
        args.out,
        training={
            "trainer": "scripts/finetune_model.py (lumos.training.train)",
            "started_from": {"model": str(start_path), "training": previous},
            "simulation": {"catalogue_errors": "CatalogueErrors.realistic()",
                           "values": dataclasses.asdict(sim_config.catalogue_errors)},
            "simulation_config": sim_config.to_dict(),
            "training_config": config.to_dict(),
            "epochs_completed": result.epochs_completed,
            "validation_seed": val_seed,
            "validation_size": args.val_size,
            "last_epoch": result.history[-1] if result.history else {},
            "wall_time_s_this_run": time.perf_counter() - t0,
        },
    )  # fmt: skip
    print(f"finetune: {result.epochs_completed} epochs; model written to {args.out}")


if __name__ == "__main__":
    main()
