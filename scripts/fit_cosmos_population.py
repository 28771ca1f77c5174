"""Fit the TEAHUPOO shape/redshift model to the COSMOS parametric-fit catalogue.

Reads GalSim's COSMOS 23.5 parametric fits (``real_galaxy_23.5_500_fits.fits``, HDU 1) and
fits a small full-covariance Gaussian mixture to the joint distribution of

    (i_mag, ln r50, ln n, logit q, ln(1 + z))

where ``i_mag`` is the F814W ``mag_auto``, ``r50`` the circularised half-light radius in
arcsec (``0.03 * sersicfit[1] * sqrt(sersicfit[3])``, as GalSim's ``COSMOSCatalog`` does),
``n = sersicfit[2]``, ``q = sersicfit[3]`` and ``z = zphot``. Values are clipped to the
ranges lumos simulates before the transform. The mixture is fitted by expectation
maximisation (several seeded restarts, best log-likelihood kept) for 1..``--max-k``
components and the number of components chosen by the Bayesian information criterion.

The script prints the fitted constants as Python source to paste into
``src/lumos/population.py``; the data file itself stays outside the repository.

Usage::

    python scripts/fit_cosmos_population.py [--path ../shared/data/cosmos/...fits] [--max-k 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.io import fits

from lumos.population import POPULATION_N_RANGE, POPULATION_R50_RANGE

DEFAULT_PATH = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "cosmos"
    / "real_galaxy_23.5_500_fits.fits"
)
COSMOS_PIXEL_SCALE = 0.03  # arcsec per pixel of the COSMOS lensing reductions
#: Axis ratios of the fit sample (below 1, so that logit q is finite).
Q_FIT_RANGE = (0.05, 0.99)
Z_RANGE = (0.005, 3.0)


def load_cosmos(path: Path) -> np.ndarray:
    """Read the catalogue and return the transformed sample, shape (N, 5).

    Columns: i_mag, ln r50 [arcsec], ln n, logit q, ln(1 + z). Only galaxies whose single
    Sersic fit succeeded (``fit_status[4]`` in 1..4, positive radius) are kept.
    """
    with fits.open(path) as hdul:
        table = hdul[1].data
        sersic = np.asarray(table["sersicfit"], dtype=float)
        status = np.asarray(table["fit_status"])[:, 4]
        mag = np.asarray(table["mag_auto"], dtype=float)
        zphot = np.asarray(table["zphot"], dtype=float)
    good = (status >= 1) & (status <= 4) & (sersic[:, 1] > 0) & np.isfinite(mag)
    sersic, mag, zphot = sersic[good], mag[good], zphot[good]
    q = np.clip(sersic[:, 3], *Q_FIT_RANGE)
    r50 = np.clip(COSMOS_PIXEL_SCALE * sersic[:, 1] * np.sqrt(sersic[:, 3]),
                  *POPULATION_R50_RANGE)
    n = np.clip(sersic[:, 2], *POPULATION_N_RANGE)
    z = np.clip(zphot, *Z_RANGE)
    return np.column_stack([mag, np.log(r50), np.log(n), np.log(q / (1 - q)), np.log1p(z)])


def _log_gauss(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, (x - mean).T)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (np.sum(sol**2, axis=0) + logdet + x.shape[1] * np.log(2 * np.pi))


def fit_gmm(
    x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 500, reg: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fit a k-component full-covariance Gaussian mixture by EM.

    Returns
    -------
    weights (k,), means (k, d), covariances (k, d, d), total log-likelihood.
    """
    m, d = x.shape
    means = x[rng.choice(m, size=k, replace=False)]
    covs = np.repeat(np.cov(x.T)[None], k, axis=0)
    weights = np.full(k, 1.0 / k)
    previous = -np.inf
    loglike = previous
    for _ in range(n_iter):
        logp = np.stack([np.log(weights[j]) + _log_gauss(x, means[j], covs[j]) for j in range(k)])
        top = logp.max(axis=0)
        norm = top + np.log(np.exp(logp - top).sum(axis=0))
        loglike = float(norm.sum())
        resp = np.exp(logp - norm)  # (k, m)
        nk = resp.sum(axis=1) + 1e-12
        weights = nk / m
        means = (resp @ x) / nk[:, None]
        for j in range(k):
            diff = x - means[j]
            covs[j] = (resp[j, :, None] * diff).T @ diff / nk[j] + reg * np.eye(d)
        if loglike - previous < 1e-8 * abs(loglike):
            break
        previous = loglike
    return weights, means, covs, loglike


def best_fit(x: np.ndarray, max_k: int, restarts: int, seed: int):
    """Choose the number of components by BIC; several EM restarts per k."""
    m, d = x.shape
    rng = np.random.default_rng(seed)
    best = None
    for k in range(1, max_k + 1):
        fits_k = [fit_gmm(x, k, rng) for _ in range(restarts)]
        w, mu, cov, ll = max(fits_k, key=lambda f: f[3])
        n_par = k * (d + d * (d + 1) // 2) + (k - 1)
        bic = -2 * ll + n_par * np.log(m)
        print(f"k={k}: log-likelihood {ll:.1f}, BIC {bic:.1f}")
        if best is None or bic < best[0]:
            best = (bic, w, mu, cov)
    return best[1:]


def format_constants(weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> str:
    """Python source for the fitted constants."""
    order = np.argsort(-weights)
    weights, means, covs = weights[order], means[order], covs[order]

    def arr(a: np.ndarray) -> str:
        return np.array2string(a, precision=6, separator=", ", max_line_width=90, floatmode="fixed")

    lines = [
        "_SHAPE_GMM_WEIGHTS = np.array(" + arr(weights) + ")",
        "_SHAPE_GMM_MEANS = np.array(" + arr(means) + ")",
        "_SHAPE_GMM_COVS = np.array(" + arr(covs) + ")",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--max-k", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    if not args.path.is_file():
        raise SystemExit(f"COSMOS catalogue not found: {args.path}")
    x = load_cosmos(args.path)
    print(f"{len(x)} galaxies; columns: i_mag, ln r50, ln n, logit q, ln(1+z)")
    weights, means, covs = best_fit(x, args.max_k, args.restarts, args.seed)
    print()
    print(format_constants(weights, means, covs))


if __name__ == "__main__":
    main()
