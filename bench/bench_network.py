"""Benchmark the LUMOS network: FLOPs, inference and training speed, and accuracy after
training the default and the paper configurations for the same wall time.

Usage::

    .venv/bin/python bench/bench_network.py                     # short run (~2 x 2 min)
    .venv/bin/python bench/bench_network.py --seconds 1200      # longer comparison
    .venv/bin/python bench/bench_network.py --speed-only

Data: stamps from :mod:`lumos.simulate` when it works (``--data simulate``), else a
built-in PAUS-like synthetic set (``--data synthetic``: elliptical Gaussian galaxies,
r50 0.1-1.5 arcsec, convolved with a Moffat PSF of FWHM 0.6-1.3 arcsec, 0.263 arcsec
pixels, i = 18-23 with a narrow-band colour scatter, 90-130 s exposures, sky 150-200
e-/pixel with a gradient, read noise 5 e-, Poisson noise, a neighbour 5-15 pixels away in
20% of the stamps). A training pool is generated once and shared by both networks (with
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

from lumos.instrument import CCD_SIZE, PIXEL_SCALE
from lumos.network import LumosNet, NetworkConfig
from lumos.stamps import StampBatch
from lumos.training import TrainingConfig, derive_seed, train, validation_seed

S = 60


# ---------------------------------------------------------------------------------------
# data


def _moffat_otf(fwhm_px: torch.Tensor, beta: torch.Tensor, n: int) -> torch.Tensor:
    """FFT of unit-flux Moffat PSFs centred on pixel (0, 0) of an n x n periodic grid."""
    a = torch.fft.fftfreq(n, d=1.0 / n).to(torch.float32)
    r2 = a[None, :, None] ** 2 + a[None, None, :] ** 2
    alpha = fwhm_px / (2 * torch.sqrt(2 ** (1 / beta) - 1))
    psf = (1 + r2 / alpha[:, None, None] ** 2) ** (-beta[:, None, None])
    psf = psf / psf.sum(dim=(1, 2), keepdim=True)
    return torch.fft.rfft2(psf)


def _gaussian_galaxy(n: int, r50_px, q, pa, x0, y0, size: int) -> torch.Tensor:
    """Unit-flux elliptical Gaussians sampled at pixel centres."""
    c = (size - 1) / 2
    a = torch.arange(size, dtype=torch.float32) - c
    dx = a[None, None, :] - x0[:, None, None]
    dy = a[None, :, None] - y0[:, None, None]
    cos, sin = torch.cos(pa)[:, None, None], torch.sin(pa)[:, None, None]
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    sigma = (r50_px / 1.1774).clamp_min(0.3)  # half-light radius of a Gaussian
    sa = sigma / torch.sqrt(q)
    sb = sigma * torch.sqrt(q)
    img = torch.exp(-0.5 * (u**2 / sa[:, None, None] ** 2 + v**2 / sb[:, None, None] ** 2))
    return img / img.sum(dim=(1, 2), keepdim=True)


def synthetic_batch(n: int, seed: int) -> StampBatch:
    """PAUS-like synthetic stamps with truth (see the module docstring)."""
    g = torch.Generator().manual_seed(int(seed) % (2**63))

    def u(*shape):
        return torch.rand(*shape, generator=g)

    pad = 96  # render on a larger periodic canvas, then cut the central 60 x 60
    fwhm = (0.6 + 0.7 * u(n)) / PIXEL_SCALE
    beta = 2.5 + 2.5 * u(n)
    otf = _moffat_otf(fwhm, beta, pad)
    off = u(n, 2) - 0.5
    r50 = (0.1 + 1.4 * u(n) ** 2) / PIXEL_SCALE
    q = 0.3 + 0.7 * u(n)
    pa = math.pi * u(n)
    gal = _gaussian_galaxy(n, r50, q, pa, off[:, 0], off[:, 1], pad)
    prof_full = torch.fft.irfft2(torch.fft.rfft2(gal) * otf, s=(pad, pad))
    lo = (pad - S) // 2
    profile = prof_full[:, lo : lo + S, lo : lo + S].clamp_min(0)
    i_mag = 18.0 + 5.0 * u(n)
    colour = 0.4 * torch.randn(n, generator=g)
    exptime = torch.tensor([70.0, 80.0, 90.0, 110.0, 130.0])[torch.randint(0, 5, (n,),
                                                                           generator=g)]
    flux = 10 ** (-0.4 * (i_mag + colour - 24.5)) * exptime
    image = flux[:, None, None] * profile
    # a neighbour 5-15 px away in 20% of the stamps
    has_nb = u(n) < 0.2
    dist = 5 + 10 * u(n)
    ang = 2 * math.pi * u(n)
    nb = _gaussian_galaxy(n, (0.1 + 1.0 * u(n)) / PIXEL_SCALE, 0.3 + 0.7 * u(n), math.pi * u(n),
                          off[:, 0] + dist * torch.cos(ang), off[:, 1] + dist * torch.sin(ang),
                          pad)
    nb = torch.fft.irfft2(torch.fft.rfft2(nb) * otf, s=(pad, pad))[:, lo : lo + S, lo : lo + S]
    nb_flux = 10 ** (-0.4 * (18.0 + 5.0 * u(n) - 24.5)) * exptime
    image = image + (has_nb * nb_flux)[:, None, None] * nb.clamp_min(0)
    sky = 150.0 + 50.0 * u(n)
    grad = 0.3 * (u(n, 2) - 0.5) / S
    a = torch.arange(S, dtype=torch.float32) - (S - 1) / 2
    sky_img = sky[:, None, None] * (1 + grad[:, 0, None, None] * a[None, None, :]
                                    + grad[:, 1, None, None] * a[None, :, None])
    mean = sky_img + image
    pixels = mean + torch.sqrt(mean + 25.0) * torch.randn(n, S, S, generator=g)
    band_number = torch.randint(0, 40, (n,), generator=g)
    return StampBatch(
        pixels=pixels.float(),
        profile=(profile / profile.sum(dim=(1, 2), keepdim=True)).float(),
        i_mag=i_mag.float(),
        ccd_xy=(u(n, 2) * torch.tensor(CCD_SIZE, dtype=torch.float32)).float(),
        band_idx=band_number + 40 * (u(n) < 0.5).long(),
        flags=torch.zeros(n, dtype=torch.int64),
        offset=off.float(),
        truth=flux.float(),
    )


def make_data(kind: str, n: int, seed: int) -> tuple[StampBatch, str]:
    """``n`` stamps from the simulator or the synthetic generator."""
    if kind in ("auto", "simulate"):
        try:
            from lumos.simulate import SimulationConfig, Simulator

            sim = Simulator(SimulationConfig(), seed=seed)
            parts = [sim.sample(min(1000, n - i)) for i in range(0, n, 1000)]
            return StampBatch.concat(parts), "lumos.simulate"
        except Exception as exc:  # the simulator is optional for this benchmark
            if kind == "simulate":
                raise
            print(f"# lumos.simulate unavailable ({type(exc).__name__}: {exc}); "
                  "using the synthetic generator", flush=True)
    parts = [synthetic_batch(min(1000, n - i), derive_seed(seed, i)) for i in range(0, n, 1000)]
    return StampBatch.concat(parts), "synthetic"


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
    p.add_argument("--data", default="auto", choices=("auto", "simulate", "synthetic"))
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
    pool, source = make_data(args.data, n_train, seed=1)
    val, _ = make_data("synthetic" if source == "synthetic" else "simulate",
                       600 if args.speed_only else args.n_val, seed=validation_seed(1))
    print(f"# data: {source}, {len(pool)} training stamps, {len(val)} held-out, "
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
