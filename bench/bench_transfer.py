"""Benchmark unsupervised transfer learning on a simulated domain shift.

The pairs (the same galaxy observed twice in the same band) are rendered with a PSF and a
background the training never saw, while the model-profile channel is drawn with the
catalogue's nominal PSF, as in real data where the PSF model is imperfect:

* true PSF: Moffat with beta ~ U(2.0, 2.2) (training: 2.5-5; broader wings), FWHM as in
  training (0.6-1.3 arcsec);
* model-profile PSF: Moffat of the same FWHM with a 3% log-normal error, and the true beta
  (``--profile-beta 0``, default: a PSF model that fits the shape but is outside the
  training range) or a fixed nominal beta (``--profile-beta 3.5``: a wrong wing shape,
  which biases the fluxes by ~15%; pairs cannot see a bias common to both exposures);
* background: cutouts of the real KiDS images in ``../shared/data/kids`` (correlated
  noise, real neighbours and gradients) scaled to the PAUS sky noise; where those are
  absent, a synthetic sky with triple the cosmic-ray rate, more hot pixels and 50% more
  sky.

``lumos.transfer.transfer`` then fine-tunes the last layer with the pair loss plus the
supervised loss on (in-domain) simulations. The script prints, before and after, on the
held-out pairs: sigma68 and median of D = (f1 - f2) / sqrt(s1^2 + s2^2) (paper Eq. 19), and
the bias (median) and sigma68 of (f - f_true) / f_true by i-band magnitude; and the
supervised validation metrics on in-domain simulations (to check nothing was lost there).
For reference it also prints the D statistics of the starting model on pairs from the
training domain. D is N(0, 1) only for independent errors; what the two observations share
(the catalogue magnitude used as a prior, the catalogue profile, fixed neighbours, the
truncation at zero for i > 20.5) makes it narrower even for a calibrated model, most at the
faint end. So the script also prints the width of D divided by its training-domain width at
the same magnitude (``lumos.consistency.d_reference``), which is 1 for a model as well
calibrated on the new domain as on its training domain, whatever the magnitude.

Usage::

    .venv/bin/python bench/bench_transfer.py                       # default model, 2000 pairs
    .venv/bin/python bench/bench_transfer.py --model runs/ckpt-default/best --lr 1e-4
    .venv/bin/python bench/bench_transfer.py --sim-pool 0          # fresh simulations per step

Model: ``--model``, else the shipped model, else ``runs/lumos-default``, else
``runs/ckpt-default/best`` (copied first: it changes while training runs), else a small
model trained here for ``--train-minutes``. Timings on the shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import KIDS_DIR, ROOT, median_sigma68

from lumos.consistency import d_reference, pair_consistency
from lumos.model_io import default_model_path, load_model, model_paths
from lumos.pairs import PairSimulation, simulate_pairs
from lumos.simulate import Simulator
from lumos.stats import P16, P84, pair_pull
from lumos.training import (
    TrainingConfig,
    evaluate,
    simulator_stream,
    train,
    training_simulation,
    validation_seed,
)
from lumos.transfer import TransferConfig, transfer

MAG_BINS = ((17.0, 19.0), (19.0, 20.5), (20.5, 22.0), (22.0, 23.0))


def _find_model(given: str | None, workdir: Path, train_minutes: float, seed: int):
    """Load the model to transfer (see the module docstring); returns (model, label)."""
    if given:
        return load_model(given), given
    shipped = default_model_path()
    for stem in (shipped, ROOT / "runs" / "lumos-default", ROOT / "runs" / "ckpt-default" / "best"):
        weights, desc = model_paths(stem)
        if weights.is_file() and desc.is_file():
            if stem == shipped:
                return load_model(stem), "the shipped lumos-default model"
            copy = workdir / "start"
            for src, suffix in ((weights, ".safetensors"), (desc, ".json")):
                shutil.copyfile(src, copy.with_suffix(suffix))
            return load_model(copy), f"{stem.relative_to(ROOT)} (copied at start)"
    from lumos.network import LumosNet, NetworkConfig

    print(f"no trained model found: training the default network for {train_minutes} min")
    torch.manual_seed(seed)
    model = LumosNet(NetworkConfig.default())
    cfg = TrainingConfig(n_epochs=1000, samples_per_epoch=2000, batch_size=200,
                         learning_rate=1e-3, max_time_s=60.0 * train_minutes, num_threads=1)
    val = Simulator(seed=validation_seed(seed)).sample(500)
    result = train(model, simulator_stream(), val, cfg, checkpoint_dir=workdir / "train",
                   progress=False)
    return result.model, f"trained here for {train_minutes} min"


def _shifted_background(seed: int):
    from lumos.backgrounds import RealImageBackground, SyntheticSky

    images = sorted(KIDS_DIR.glob("*.fits")) if KIDS_DIR.is_dir() else []
    if images:
        return RealImageBackground([str(p) for p in images]), "KiDS real-image cutouts"
    sky = SyntheticSky(sky_rate_685=3.0, cosmic_rate=6.0, hot_pixel_fraction=1e-4,
                       pattern_seed=seed + 17)
    return sky, "synthetic sky (3x cosmics, 1.5x sky; KiDS images absent)"


@torch.no_grad()
def _table(model, pairs) -> dict:
    """D statistics and accuracy by magnitude bin on a pair set with truth."""
    m1 = model.predict(pairs.first)
    m2 = model.predict(pairs.second)
    f1, f2 = m1.mean().double().numpy(), m2.mean().double().numpy()
    s1, s2 = m1.std().double().numpy(), m2.std().double().numpy()
    d = pair_pull(f1, s1, f2, s2)
    truth = pairs.truth.double().numpy()
    rel = np.concatenate([(f1 - truth) / truth, (f2 - truth) / truth])
    i_mag = np.concatenate([pairs.first.i_mag.numpy()] * 2)
    ok = np.isfinite(d)
    out = {"D": (median_sigma68(d[ok])[1], float(np.median(d[ok])), int(ok.sum()),
                 float(np.mean(np.abs(d[ok]) > 3)))}
    good = np.isfinite(rel)
    out["all"] = (float(np.median(rel[good])), median_sigma68(rel[good])[1], int(good.sum()))
    # calibration against the truth (what D tries to judge without it): 68% coverage
    inside = []
    for m in (m1, m2):
        lo, hi = m.quantile(P16).double().numpy(), m.quantile(P84).double().numpy()
        inside.append((truth >= lo) & (truth <= hi))
    inside = np.concatenate(inside)
    trunc_rows = np.concatenate([pairs.first.i_mag.numpy() > 20.5] * 2)
    out["coverage68"] = (float(inside.mean()), float(inside[~trunc_rows].mean()),
                         float(inside[trunc_rows].mean()))
    for lo, hi in MAG_BINS:
        sel = good & (i_mag >= lo) & (i_mag < hi)
        out[(lo, hi)] = (float(np.median(rel[sel])) if sel.any() else float("nan"),
                         median_sigma68(rel[sel])[1], int(sel.sum()))
        dsel = ok & (pairs.first.i_mag.numpy() >= lo) & (pairs.first.i_mag.numpy() < hi)
        out[("D", lo, hi)] = (median_sigma68(d[dsel])[1], int(dsel.sum()))
    return out


def _print_tables(before: dict, after: dict, ref: dict) -> None:
    print("\nheld-out pairs (shifted domain)       before      after   | in-domain pairs")
    print(f"  sigma68(D)                       {before['D'][0]:8.3f}   {after['D'][0]:8.3f}   |"
          f" {ref['D'][0]:8.3f}     ({before['D'][2]} pairs; 1 = calibrated)")
    print(f"  median(D)                        {before['D'][1]:+8.3f}   {after['D'][1]:+8.3f}   |"
          f" {ref['D'][1]:+8.3f}")
    print(f"  fraction |D| > 3                 {before['D'][3]:8.3f}   {after['D'][3]:8.3f}   |"
          f" {ref['D'][3]:8.3f}")
    for lo, hi in MAG_BINS:
        b, a, r = before[("D", lo, hi)], after[("D", lo, hi)], ref[("D", lo, hi)]
        print(f"  sigma68(D)   i {lo:4.1f}-{hi:4.1f}          {b[0]:8.3f}   {a[0]:8.3f}   |"
              f" {r[0]:8.3f}     ({b[1]} pairs)")
    b, a = before["coverage68"], after["coverage68"]
    print(f"\n68% coverage of the truth, all / i < 20.5 / i > 20.5:  before {b[0]:.3f} / "
          f"{b[1]:.3f} / {b[2]:.3f}   after {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f}")
    print("\n(f - f_true) / f_true              bias / sigma68 before     bias / sigma68 after")
    for key in ["all", *MAG_BINS]:
        label = "all" if key == "all" else f"i {key[0]:4.1f}-{key[1]:4.1f}"
        b, a = before[key], after[key]
        print(f"  {label:12s} (n={b[2]:5d})       {b[0]:+8.4f} / {b[1]:.4f}      "
              f"{a[0]:+8.4f} / {a[1]:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model to transfer (NAME.safetensors)")
    parser.add_argument("--n-pairs", type=int, default=2000, help="simulated pairs")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-5, help="initial learning rate")
    parser.add_argument("--lr-step", type=int, default=50, help="epochs between /10 decays")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per step")
    parser.add_argument("--holdout", type=float, default=0.3, help="held-out fraction")
    parser.add_argument("--sim-pool", type=int, default=4096,
                        help="simulated stamps drawn once and reused (0: fresh every step)")
    parser.add_argument("--profile-beta", type=float, default=0.0,
                        help="Moffat beta of the model-profile PSF (0: the true beta)")
    parser.add_argument("--ref-pairs", type=int, default=3000,
                        help="in-domain pairs (training PSF and sky) for reference values")
    parser.add_argument("--val-size", type=int, default=1000, help="in-domain validation")
    parser.add_argument("--train-minutes", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also keep the transferred model here")
    parser.add_argument("--no-reference", action="store_true",
                        help="pair loss of Eq. 11 as if the observations shared nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))

    model, label = _find_model(args.model, work, args.train_minutes, args.seed)
    print(f"model: {label} ({model.n_parameters()} parameters, head "
          f"{sum(p.numel() for p in model.head.parameters())})")
    background, bg_label = _shifted_background(args.seed)
    trained_on = training_simulation(model)  # the training domain: supervised term, reference
    shift = PairSimulation(
        simulation=dataclasses.replace(trained_on, psf_beta_range=(2.0, 2.2)),
        profile_psf_beta=args.profile_beta or None,
        profile_psf_fwhm_error=0.03,
    )
    beta = f"beta {args.profile_beta}" if args.profile_beta else "the true beta"
    print(f"domain shift: true PSF Moffat beta 2.0-2.2, profile channel drawn with {beta} "
          f"and a 3% FWHM error; background: {bg_label}")
    t0 = time.perf_counter()
    pairs = simulate_pairs(args.n_pairs, seed=args.seed, config=shift, background=background)
    t_pairs = time.perf_counter() - t0
    print(f"simulated {len(pairs)} pairs in {t_pairs:.0f} s "
          f"({2 * len(pairs) / t_pairs:.0f} stamps/s)")
    val = Simulator(trained_on, seed=validation_seed(args.seed)).sample(args.val_size)
    # the same statistics on pairs of the training domain: what calibrated looks like here
    ref_pairs = simulate_pairs(args.ref_pairs, seed=args.seed + 1,
                               config=PairSimulation(simulation=trained_on))
    reference = _table(model, ref_pairs)
    d_ref = d_reference(model, ref_pairs)
    print("D width of the starting model on training-domain pairs, by i: "
          + ", ".join(f"{lo:g}-{hi:g}: {w:.3f}" for lo, hi, w in
                      zip(d_ref.edges[:-1], d_ref.edges[1:], d_ref.width, strict=True)))

    config = TransferConfig(
        n_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        lr_step_epochs=args.lr_step, holdout_fraction=args.holdout,
        sim_pool=args.sim_pool or None, seed=args.seed,
    )  # fmt: skip
    _, held = pairs.split(config.holdout_fraction, config.seed)
    before = _table(model, held)
    cons_before = pair_consistency(model, held, reference=d_ref)
    val_before = evaluate(model, val)
    t0 = time.perf_counter()
    model, history = transfer(model, pairs, simulator_stream(trained_on), config, work / "ckpt",
                              progress=False, out=args.out,
                              reference=None if args.no_reference else d_ref)  # fmt: skip
    t_transfer = time.perf_counter() - t0
    after = _table(model, held)
    cons_after = pair_consistency(model, held, reference=d_ref)
    val_after = evaluate(model, val)

    print(f"\ntransfer: {history[-1]['epoch']} epochs in {t_transfer:.0f} s "
          f"({t_transfer / max(history[-1]['epoch'], 1):.2f} s/epoch, sim_pool "
          f"{config.sim_pool}), lr {args.lr:g} /10 every {args.lr_step} epochs")
    for entry in history:
        if entry["epoch"] % max(1, args.epochs // 10) == 0 or entry is history[-1]:
            print(f"  epoch {entry['epoch']:4d}  val pair loss "
                  f"{entry.get('val_pair_loss', float('nan')):+.4f}  sigma68(D) "
                  f"{entry.get('val_sigma68_D', float('nan')):.3f} (untruncated "
                  f"{entry.get('val_sigma68_D_untruncated', float('nan')):.3f})  median(D) "
                  f"{entry.get('val_median_D', float('nan')):+.3f}  bias "
                  f"{entry.get('val_bias', float('nan')):+.4f}")
    _print_tables(before, after, reference)
    print("\nD / (its training-domain width at that i), held-out pairs:  before      after"
          "   (1 = as calibrated as in training)")
    for key, label in (("sigma68_Dref", "all pairs"),
                       ("sigma68_Dref_untruncated", "untruncated (i < 20.5)"),
                       ("sigma68_Dref_truncated", "truncated (i > 20.5)")):
        print(f"  sigma68, {label:24s}                 {cons_before[key]:8.3f}   "
              f"{cons_after[key]:8.3f}")
    print("\nin-domain simulations (supervised validation)   before        after")
    for key in ("val_loss", "val_bias", "val_sigma68", "val_coverage68"):
        print(f"  {key:16s}                          {val_before[key]:+.4f}      "
              f"{val_after[key]:+.4f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
