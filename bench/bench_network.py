"""Benchmark the LUMOS network: FLOPs, inference and training speed, and accuracy after
training the default and the paper configurations for the same wall time.

Usage::

    .venv/bin/python bench/bench_network.py                     # short run (~2 x 2 min)
    .venv/bin/python bench/bench_network.py --seconds 1200      # longer comparison
    .venv/bin/python bench/bench_network.py --speed-only

Data: stamps of the training simulator (:class:`lumos.simulate.Simulator`, default
settings). A training pool is generated once and shared by both networks (with
random flips/rotations), and the held-out set uses a separate seed. Timings on shared
2-core machines are noisy: compare the numbers of one run.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
import torch
from _common import median_sigma68

from lumos.network import LumosNet, NetworkConfig
from lumos.simulate import SimulationConfig, Simulator
from lumos.stamps import StampBatch
from lumos.training import TrainingConfig, train, validation_seed

# ---------------------------------------------------------------------------------------
# data


def make_data(n: int, seed: int) -> StampBatch:
    """``n`` stamps of the training simulator (:class:`lumos.simulate.Simulator`)."""
    sim = Simulator(SimulationConfig(), seed=seed)
    return StampBatch.concat([sim.sample(min(1000, n - i)) for i in range(0, n, 1000)])


def pool_stream(pool: StampBatch):
    """A resumable stream factory drawing random rows of a fixed pool."""

    def factory(seed: int, batch_size: int):
        g = torch.Generator().manual_seed(seed)
        while True:
            yield pool[torch.randint(0, len(pool), (batch_size,), generator=g)]

    return factory


# ---------------------------------------------------------------------------------------
# measurements


def flops_per_stamp(model: LumosNet, batch: StampBatch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_raw(batch[:1])
    return float(counter.get_total_flops())


def inference_rate(model: LumosNet, batch: StampBatch, reps: int = 5) -> float:
    """Stamps/s of eval-mode forward passes (best of ``reps``: the machine is shared)."""
    model.eval()
    times = []
    with torch.no_grad():
        model.forward_raw(batch[:64])
        for _ in range(reps):
            t = time.perf_counter()
            model.forward_raw(batch)
            times.append(time.perf_counter() - t)
    return len(batch) / float(np.min(times))


def training_rate(model: LumosNet, batch: StampBatch, steps: int = 5) -> float:
    """Stamps/s of optimiser steps (best of ``steps``)."""
    from lumos.loss import RawForward as _RawModule
    from lumos.loss import batch_loss as _batch_loss

    model.train()
    module = _RawModule(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = _batch_loss(module, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return len(batch) / float(np.min(times))


def baseline(val: StampBatch) -> dict[str, float]:
    """Profile-weighted optimal sum (the network's starting point) on the held-out set."""
    pre = LumosNet(NetworkConfig.tiny()).preprocess(val)
    rel = ((pre.optimal_flux - val.truth) / val.truth).numpy()
    out = {}
    for name, sel in (("all", np.ones(len(val), bool)), ("bright", val.i_mag.numpy() < 20.5),
                      ("faint", val.i_mag.numpy() >= 20.5)):
        out[f"bias_{name}"], out[f"sigma68_{name}"] = median_sigma68(rel[sel])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="training time per config")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default="default,paper")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epoch-samples", type=int, default=8192,
                   help="training stamps between validations")
    p.add_argument("--speed-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = {"default": NetworkConfig.default(), "paper": NetworkConfig.paper(),
               "tiny": NetworkConfig.tiny()}
    names = [c.strip() for c in args.configs.split(",") if c.strip()]

    t = time.perf_counter()
    n_train = 600 if args.speed_only else args.n_train
    pool = make_data(n_train, seed=1)
    val = make_data(600 if args.speed_only else args.n_val, seed=validation_seed(1))
    print(f"# data: lumos.simulate, {len(pool)} training stamps, {len(val)} held-out, "
          f"made in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
          f"{args.threads} threads", flush=True)
    print(f"\n## speed (batch 500 inference, batch {args.batch_size} training)")
    print("| config | parameters | MFLOP/stamp | channels_last | inference stamps/s | "
          "training stamps/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    big = StampBatch.concat([pool] * math.ceil(500 / len(pool)))[:500]
    for name in names:
        for cl in (True, False):
            torch.manual_seed(0)
            model = LumosNet(configs[name].replace(channels_last=cl))
            fl = flops_per_stamp(model, pool)
            inf = inference_rate(model, big)
            tr = training_rate(model, big[: args.batch_size])
            print(f"| {name} | {model.n_parameters():,} | {fl / 1e6:.0f} | {cl} | {inf:.0f} | "
                  f"{tr:.0f} |", flush=True)
    if args.speed_only:
        return

    base = baseline(val)
    print(f"\n## accuracy after {args.seconds:.0f} s of training each (Adam lr {args.lr}, "
          f"batch {args.batch_size}, EMA 0.99, flips/rotations)")
    print("baseline (profile-weighted optimal sum): "
          + ", ".join(f"{k} {v:+.4f}" for k, v in base.items()))
    print("| config | samples seen | val NLL | bias | sigma68 | sigma68 i<20.5 | "
          "sigma68 i>=20.5 | coverage68 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        torch.manual_seed(0)
        model = LumosNet(configs[name])
        config = TrainingConfig(
            n_epochs=10**6, samples_per_epoch=max(args.batch_size, args.epoch_samples),
            batch_size=args.batch_size, learning_rate=args.lr, lr_step_epochs=10**6,
            ema_decay=0.99, max_time_s=args.seconds, num_threads=args.threads, seed=3,
        )
        with tempfile.TemporaryDirectory() as d:
            result = train(model, pool_stream(pool), val, config, d, progress=False)
        h = result.history[-1]
        print(f"| {name} | {h['samples']:,} | {h['val_loss']:.4f} | {h['val_bias']:+.4f} | "
              f"{h['val_sigma68']:.4f} | {h['val_sigma68_bright']:.4f} | "
              f"{h['val_sigma68_faint']:.4f} | {h['val_coverage68']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
