"""``lumos train``: supervised training on on-the-fly TEAHUPOO simulations."""

from __future__ import annotations

import argparse
import time

import torch

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..model_io import save_model
    from ..network import LumosNet, NetworkConfig
    from ..simulate import Simulator
    from ..training import TrainingConfig, simulator_stream, train, validation_seed

    for name in ("epochs", "samples_per_epoch", "batch_size", "lr_step", "val_size"):
        if getattr(args, name) < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be positive")
    if not args.lr > 0:
        raise LumosError("--lr must be positive")
    config = {"default": NetworkConfig.default, "paper": NetworkConfig.paper,
              "tiny": NetworkConfig.tiny}[args.config]()  # fmt: skip
    torch.manual_seed(args.seed)
    model = LumosNet(config)
    t0 = time.perf_counter()
    val_seed = validation_seed(args.seed)
    print(f"lumos train: drawing {args.val_size} held-out validation stamps (seed {val_seed})")
    val_batch = Simulator(seed=val_seed).sample(args.val_size)
    train_config = TrainingConfig(
        n_epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_step_epochs=args.lr_step,
        seed=args.seed,
        max_time_s=None if args.hours is None else 3600.0 * args.hours,
    )
    result = train(
        model, simulator_stream(), val_batch, train_config, checkpoint_dir=args.checkpoints,
        resume=not args.no_resume,
    )  # fmt: skip
    last = result.history[-1] if result.history else {}
    save_model(
        result.model,
        args.out,
        training={
            "training": train_config.to_dict(),
            "network": args.config,
            "epochs_completed": result.epochs_completed,
            "validation_seed": val_seed,
            "validation_size": args.val_size,
            "final_metrics": last,
            "wall_time_s_this_run": time.perf_counter() - t0,
            "command": "lumos train " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                if k not in ("command",) and v not in (None, False)
            ),
        },
    )
    print(f"lumos train: {result.epochs_completed} epochs; model written to {args.out}")
    return 0
