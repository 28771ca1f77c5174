"""Benchmark: GaussianMixture.summaries() on many random 5-component mixtures.

Usage::

    .venv/bin/python bench/bench_mixture.py [--n 1000000] [--threads 2]

Prints the wall time of ``summaries()`` (target: 1,000,000 mixtures in under 30 s on
2 cores), of the two losses on a training-sized batch, and an accuracy spot check of the
summaries against a fine-grid numerical integration on a few rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import norm

from lumos.mixture import GaussianMixture, mixture_nll, pair_nll
from lumos.stats import P16, P84


def random_mixtures(n: int, rng: np.random.Generator, truncated_fraction: float = 0.3):
    """Network-like PDFs: a main peak plus satellite components, some multi-modal."""
    k = 5
    flux = 10 ** rng.uniform(1.0, 4.0, n)
    err = np.sqrt(flux + 400.0)
    w = rng.dirichlet(np.full(k, 0.8), n)
    mu = flux[:, None] + err[:, None] * rng.normal(0.0, 1.0, (n, k))
    multi = rng.random(n) < 0.1  # 10% with a far secondary mode
    mu[multi, 0] += 6.0 * err[multi]
    sg = err[:, None] * rng.uniform(0.3, 1.5, (n, k))
    trunc = rng.random(n) < truncated_fraction
    return GaussianMixture.from_arrays(w, mu, sg, truncated=trunc)


def check_accuracy(mix: GaussianMixture, summ: dict[str, np.ndarray], rows: int = 20) -> float:
    """Largest |error| / std of the quantiles and mean vs a fine grid, over a few rows."""
    worst = 0.0
    arr = mix.numpy()
    for i in range(rows):
        w, mu, sg, tr = arr["weight"][i], arr["mean"][i], arr["sigma"][i], arr["truncated"][i]
        lo = 0.0 if tr else float(np.min(mu - 12 * sg))
        x = np.linspace(lo, float(np.max(np.maximum(mu, 0) + 12 * sg)), 400_001)
        p = np.zeros_like(x)
        for wk, m, s in zip(w, mu, sg, strict=True):
            p += wk * norm.pdf(x, m, s) / (norm.sf(0.0, m, s) if tr else 1.0)
        c = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
        q = np.interp([0.025, P16, 0.5, P84, 0.975], c / c[-1], x)
        keys = ("flux_q025", "flux_q16", "flux_median", "flux_q84", "flux_q975")
        got = [summ[k][i] for k in keys]
        mean = np.trapezoid(x * p, x) / c[-1]
        err = np.max(np.abs(np.array(got) - q)) / summ["flux_err"][i]
        worst = max(worst, err, abs(summ["flux"][i] - mean) / summ["flux_err"][i])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(2024)
    mix = random_mixtures(args.n, rng)
    t0 = time.perf_counter()
    summ = mix.summaries()
    dt = time.perf_counter() - t0
    n_nan = int(sum(np.isnan(v).sum() for v in summ.values()))
    print(f"summaries: {args.n} mixtures (K=5, 30% truncated, 10% bimodal) in {dt:.1f} s "
          f"({args.n / dt:,.0f} rows/s, {args.threads} threads), NaN values: {n_nan}")
    print(f"accuracy vs fine grid (20 rows): max |error| = {check_accuracy(mix, summ):.2e} std")

    batch = 4096
    lw = torch.randn(batch, 5, dtype=torch.float32).log_softmax(1).requires_grad_()
    mu = (torch.randn(batch, 5) * 50 + 100).requires_grad_()
    sg = (torch.rand(batch, 5) * 20 + 1).requires_grad_()
    target = torch.rand(batch) * 200
    mask = torch.rand(batch) < 0.3

    def nll():
        return mixture_nll(GaussianMixture(lw, mu, sg), target, mask).mean()

    def pair():
        return pair_nll(GaussianMixture(lw, mu, sg), GaussianMixture(lw, mu + 1, sg), mask).mean()

    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        times = []
        for fn in (nll, pair):
            fn().backward()
            t0 = time.perf_counter()
            for _ in range(20):
                fn().backward()
            times.append(1e3 * (time.perf_counter() - t0) / 20)
        print(f"losses (batch {batch}, float32, forward+backward, {threads} intra-op threads): "
              f"mixture_nll {times[0]:.1f} ms, pair_nll {times[1]:.1f} ms")


if __name__ == "__main__":
    main()
