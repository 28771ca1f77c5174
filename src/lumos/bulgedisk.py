"""Bulge + disk galaxies and the single-Sersic description a deep catalogue gives them.

Real galaxies are not single Sersic profiles, yet the catalogues that forced photometry
starts from (COSMOS, deep coadds) describe each by one Sersic fit of its light. This module
draws two-component galaxies (an n = 4 bulge and an n = 1 disk, each with its own size,
axis ratio and position angle) and describes each by the single Sersic profile that fits
its light best, as such a catalogue would.

The fit is done once, on a bank of dimensionless shapes (:func:`build_bank`): each shape is
drawn with a disk of unit half-light radius, rendered noiselessly on a fine grid (pixel =
1/6 of the disk radius, Gaussian PSF of 2.5 pixels FWHM: a deep space-based image), and
fitted by least squares with uniform weights (background-limited imaging) for the Sersic
half-light radius, index, axis ratio and position angle, the amplitude solved linearly.
Without noise and with a PSF small against the galaxy, the fit scales with the galaxy's size
and turns with its orientation, so one bank entry describes a galaxy of any size and
position angle: :func:`describe_bank` places bank entries behind given catalogue
descriptions. The shipped bank (``lumos/data/bulgedisk_bank.npz``) is
``build_bank(4000, seed=7)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import gammainc, gammaincinv, ndtri
from scipy.stats import beta as beta_dist

from .profiles import SERSIC_N_RANGE, SersicRenderer
from .psf import GaussianPSF

__all__ = [
    "bulge_disk_half_light_radius",
    "two_component_galaxies",
    "BulgeDiskBank",
    "draw_bulge_disk_shapes",
    "fit_single_sersic",
    "build_bank",
    "load_bank",
    "describe_bank",
]

#: Fitting grid: pixel scale (disk half-light radii per pixel), side, PSF FWHM (pixels).
_FIT_PIXEL = 1.0 / 6.0
_FIT_SIZE = 80
_FIT_PSF_PIXELS = 2.5
#: Sersic indices the fit may take (inside the renderer's range).
FIT_N_RANGE = (0.4, 6.0)
#: Axis ratios the fit may take.
FIT_Q_RANGE = (0.05, 1.0)
_BANK_FILE = "bulgedisk_bank.npz"
_FIELDS = ("bulge_fraction", "r50_bulge", "q_bulge", "pa_bulge", "r50_disk", "q_disk",
           "pa_disk", "n_fit", "q_fit", "cost")  # fmt: skip


def _sersic_enclosed(r: np.ndarray, r50: np.ndarray, n: float) -> np.ndarray:
    """Fraction of a circular Sersic profile's light inside radius ``r``."""
    b = gammaincinv(2.0 * n, 0.5)
    return gammainc(2.0 * n, b * (r / r50) ** (1.0 / n))


def bulge_disk_half_light_radius(bulge_fraction, ratio) -> np.ndarray:
    """Half-light radius of an n = 4 bulge plus an n = 1 disk of unit half-light radius.

    Parameters
    ----------
    bulge_fraction : numpy.ndarray
        Bulge-to-total flux ratio, shape (N,).
    ratio : numpy.ndarray
        Bulge half-light radius over the disk's, shape (N,).

    Returns
    -------
    numpy.ndarray, shape (N,)
        The radius enclosing half the light (circular components), in disk radii.
    """
    bt = np.asarray(bulge_fraction, dtype=float)
    rho = np.asarray(ratio, dtype=float)
    lo = np.minimum(rho, 1.0) * 0.5
    hi = np.maximum(rho, 1.0) * 2.0
    for _ in range(60):  # bisection: the enclosed light grows with r
        mid = 0.5 * (lo + hi)
        light = bt * _sersic_enclosed(mid, rho, 4.0) + (1 - bt) * _sersic_enclosed(mid, 1.0, 1.0)
        below = light < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def two_component_galaxies(r50, sersic_n, q, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bulge + disk galaxies that a single-Sersic catalogue describes as (r50, n, q).

    Real galaxies are not single Sersic profiles; a catalogue fits them with one. This draws,
    for each single-Sersic description, a two-component galaxy consistent with it: the
    bulge-to-total ratio grows with n (``0.15 + 0.2 (n - 1)`` with a scatter of 0.1, clipped
    to 0.05-0.85), the bulge (n = 4) has 0.2-0.6 times the disk's (n = 1) half-light radius,
    both are scaled so that the composite half-light radius equals ``r50``, the bulge axis
    ratio is drawn in 0.6-1 and the disk's is set so that the flux-weighted axis ratio is
    ``q``; both share the position angle.

    Parameters
    ----------
    r50, sersic_n, q : numpy.ndarray, shape (N,)
        The catalogue's single-Sersic description (arcsec, index, axis ratio).
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    dict
        ``bulge_fraction``, ``r50_bulge``, ``q_bulge``, ``r50_disk``, ``q_disk``.
    """
    r50 = np.asarray(r50, dtype=float)
    n = np.asarray(sersic_n, dtype=float)
    q = np.asarray(q, dtype=float)
    m = r50.size
    bt = np.clip(0.15 + 0.2 * (n - 1.0) + 0.1 * rng.standard_normal(m), 0.05, 0.85)
    rho = rng.uniform(0.2, 0.6, m)
    q_bulge = rng.uniform(0.6, 1.0, m)
    r50_disk = r50 / bulge_disk_half_light_radius(bt, rho)
    q_disk = np.clip((q - bt * q_bulge) / (1.0 - bt), 0.1, 1.0)
    return {"bulge_fraction": bt, "r50_bulge": rho * r50_disk, "q_bulge": q_bulge,
            "r50_disk": r50_disk, "q_disk": q_disk}  # fmt: skip


@dataclass(frozen=True)
class BulgeDiskBank:
    """Two-component shapes with their single-Sersic fits, relative to the fit.

    Every length is in units of the fitted half-light radius and every angle is in degrees
    counter-clockwise from the fitted position angle, so an entry placed behind a catalogue
    description (r50, pa) has components ``r50 * r50_bulge``, ``pa + pa_bulge`` etc.

    Attributes
    ----------
    bulge_fraction : numpy.ndarray, shape (M,)
        Bulge-to-total flux ratio.
    r50_bulge, q_bulge, pa_bulge : numpy.ndarray, shape (M,)
        Bulge (n = 4) half-light radius, axis ratio and position angle.
    r50_disk, q_disk, pa_disk : numpy.ndarray, shape (M,)
        Disk (n = 1) half-light radius, axis ratio and position angle.
    n_fit, q_fit : numpy.ndarray, shape (M,)
        Sersic index and axis ratio of the single-Sersic fit.
    cost : numpy.ndarray, shape (M,)
        Residual of the fit: sum of squared residuals over the sum of squared pixel values.
    """

    bulge_fraction: np.ndarray
    r50_bulge: np.ndarray
    q_bulge: np.ndarray
    pa_bulge: np.ndarray
    r50_disk: np.ndarray
    q_disk: np.ndarray
    pa_disk: np.ndarray
    n_fit: np.ndarray
    q_fit: np.ndarray
    cost: np.ndarray

    def __len__(self) -> int:
        return int(self.n_fit.size)

    @cached_property
    def tree(self) -> cKDTree:
        """The entries in (log n_fit / 0.1, q_fit / 0.05), for nearest-neighbour look-ups."""
        return cKDTree(np.stack([np.log(self.n_fit) / 0.1, self.q_fit / 0.05], axis=1))

    def save(self, path: str | Path) -> None:
        """Write the bank as a compressed ``.npz`` of float64 arrays (no pickles)."""
        np.savez_compressed(path, **{f: np.asarray(getattr(self, f), np.float64)
                                     for f in _FIELDS})  # fmt: skip


def draw_bulge_disk_shapes(m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Dimensionless bulge + disk shapes, the disk of unit half-light radius at angle 0.

    Bulge-to-total ``B/T ~ Beta(0.7, 2.5)`` (median 0.15), bulge radius over disk radius
    log-uniform in 0.1-1, disk axis ratio uniform in 0.1-1 (random inclinations), bulge
    axis ratio uniform in 0.4-1, and the bulge's position angle misaligned from the disk's
    by N(0, 15 deg) for 70% of the galaxies and uniform in +-90 deg for the others.

    Parameters
    ----------
    m : int
        Number of shapes.
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    dict
        ``bulge_fraction``, ``r50_bulge``, ``q_bulge``, ``pa_bulge``, ``r50_disk``,
        ``q_disk``, ``pa_disk`` (arcsec-free units, degrees), each shape (m,).
    """
    u = rng.random((int(m), 6))  # one row per shape: a bank's first rows do not depend on m
    bt = np.clip(beta_dist.ppf(u[:, 0], 0.7, 2.5), 0.0, 0.95)
    rho = np.exp(math.log(0.1) * (1.0 - u[:, 1]))
    q_disk = 0.1 + 0.9 * u[:, 2]
    q_bulge = 0.4 + 0.6 * u[:, 3]
    wild = u[:, 4] < 0.3
    dpa = np.where(wild, 180.0 * u[:, 5] - 90.0,
                   15.0 * ndtri(np.clip(u[:, 5], 1e-12, 1 - 1e-12)))  # fmt: skip
    return {"bulge_fraction": bt, "r50_bulge": rho, "q_bulge": q_bulge, "pa_bulge": dpa,
            "r50_disk": np.ones(len(u)), "q_disk": q_disk, "pa_disk": np.zeros(len(u))}  # fmt: skip


def _wrap_pa(angle):
    """Position angles [degrees] folded into [-90, 90)."""
    return (np.asarray(angle, dtype=float) + 90.0) % 180.0 - 90.0


def _relative_to_fit(shapes: dict[str, np.ndarray], fit: dict[str, np.ndarray]
                     ) -> BulgeDiskBank:
    """The bank of ``shapes`` with lengths and angles relative to their fits."""
    r, pa = fit["r50"], fit["pa"]
    return BulgeDiskBank(
        bulge_fraction=shapes["bulge_fraction"], r50_bulge=shapes["r50_bulge"] / r,
        q_bulge=shapes["q_bulge"], pa_bulge=_wrap_pa(shapes["pa_bulge"] - pa),
        r50_disk=shapes["r50_disk"] / r, q_disk=shapes["q_disk"],
        pa_disk=_wrap_pa(shapes["pa_disk"] - pa), n_fit=fit["n"], q_fit=fit["q"],
        cost=fit["cost"],
    )  # fmt: skip


def _render_two(renderer: SersicRenderer, psf, shapes: dict[str, np.ndarray]) -> torch.Tensor:
    bt = torch.as_tensor(shapes["bulge_fraction"], dtype=torch.float64)[:, None, None]
    bulge = renderer.render(shapes["r50_bulge"], 4.0, shapes["q_bulge"], shapes["pa_bulge"],
                            psf)  # fmt: skip
    disk = renderer.render(shapes["r50_disk"], 1.0, shapes["q_disk"], shapes["pa_disk"], psf)
    return bt * bulge + (1.0 - bt) * disk


def _moments(images: torch.Tensor, pixel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-light radius, axis ratio and angle from the images' light (the fit's start)."""
    s = images.shape[-1]
    c = (torch.arange(s, dtype=torch.float64) - (s - 1) / 2) * pixel
    x, y = c[None, None, :], c[None, :, None]
    w = images / images.sum(dim=(1, 2), keepdim=True)
    mxx = (w * x * x).sum(dim=(1, 2))
    myy = (w * y * y).sum(dim=(1, 2))
    mxy = (w * x * y).sum(dim=(1, 2))
    tr, det = mxx + myy, mxx * myy - mxy**2
    disc = torch.sqrt(torch.clamp((tr / 2) ** 2 - det, min=0.0))
    a2, b2 = tr / 2 + disc, torch.clamp(tr / 2 - disc, min=1e-12)
    q = torch.sqrt(b2 / a2).numpy()
    pa = np.degrees(0.5 * np.arctan2(2 * mxy.numpy(), (mxx - myy).numpy()))
    r = torch.sqrt(x * x + y * y).expand_as(images).reshape(len(images), -1)
    order = torch.argsort(r, dim=1)
    cum = torch.cumsum(torch.gather(w.reshape(len(images), -1), 1, order), dim=1)
    idx = torch.searchsorted(cum, torch.full((len(images), 1), 0.5, dtype=cum.dtype))
    r50_circ = torch.gather(torch.gather(r, 1, order), 1, idx.clamp(max=r.shape[1] - 1))
    return r50_circ[:, 0].numpy(), np.clip(q, 0.1, 1.0), pa


def _unpack(p: np.ndarray) -> tuple[np.ndarray, ...]:
    r50 = np.exp(p[:, 0])
    lo, hi = FIT_N_RANGE
    n = lo + (hi - lo) / (1.0 + np.exp(-p[:, 1]))
    qlo, qhi = FIT_Q_RANGE
    q = qlo + (qhi - qlo) / (1.0 + np.exp(-p[:, 2]))
    return r50, n, q, p[:, 3]


def _pack(r50, n, q, pa) -> np.ndarray:
    lo, hi = FIT_N_RANGE
    qlo, qhi = FIT_Q_RANGE
    un = np.clip((n - lo) / (hi - lo), 1e-3, 1 - 1e-3)
    uq = np.clip((q - qlo) / (qhi - qlo), 1e-3, 1 - 1e-3)
    return np.stack([np.log(r50), np.log(un / (1 - un)), np.log(uq / (1 - uq)), pa], axis=1)


def _residuals(renderer, psf, data: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Residuals ``data - a * model`` with the amplitude ``a`` solved linearly, (N, P)."""
    r50, n, q, pa = _unpack(p)
    model = renderer.render(r50, n, q, pa, psf).reshape(len(p), -1)
    d = data.reshape(len(p), -1)
    a = (d * model).sum(1, keepdim=True) / (model * model).sum(1, keepdim=True)
    return d - a * model


def fit_single_sersic(images: torch.Tensor, renderer: SersicRenderer, psf,
                      iterations: int = 40) -> dict[str, np.ndarray]:
    """Least-squares single-Sersic fits of noiseless images (uniform weights).

    Levenberg-Marquardt on (log r50, logit n, logit q, pa) with finite-difference
    Jacobians, every image of the batch at once; the amplitude is solved linearly at each
    step. The index is kept in :data:`FIT_N_RANGE` and the axis ratio in
    :data:`FIT_Q_RANGE`.

    Parameters
    ----------
    images : torch.Tensor, shape (N, S, S), float64
        The light to fit, on the renderer's grid, centred.
    renderer : SersicRenderer
        Renderer of the fitting grid (its ``size`` and ``pixel_scale``).
    psf : PSF
        The PSF the images were drawn with (one, broadcast).
    iterations : int
        Levenberg-Marquardt steps.

    Returns
    -------
    dict
        ``r50`` (in the renderer's arcsec), ``n``, ``q``, ``pa`` (degrees) and ``cost``
        (sum of squared residuals over the sum of squared pixels), each shape (N,).
    """
    r0, q0, pa0 = _moments(images, renderer.pixel_scale)
    p = _pack(r0, np.full(len(r0), 1.5), q0, pa0)
    norm = (images.reshape(len(p), -1) ** 2).sum(1).numpy()
    res = _residuals(renderer, psf, images, p)
    cost = (res * res).sum(1).numpy()
    lam = np.full(len(p), 1e-2)
    steps = np.array([1e-4, 1e-4, 1e-4, 1e-2])
    for _ in range(iterations):
        jac = []
        for k in range(4):
            dp = p.copy()
            dp[:, k] += steps[k]
            jac.append((_residuals(renderer, psf, images, dp) - res) / steps[k])
        J = torch.stack(jac, dim=2)  # (N, P, 4)
        jtj = torch.einsum("npk,npl->nkl", J, J).numpy()
        jtr = torch.einsum("npk,np->nk", J, res).numpy()
        damp = jtj + lam[:, None, None] * np.eye(4) * np.maximum(
            np.diagonal(jtj, axis1=1, axis2=2), 1e-12)[:, None, :]  # fmt: skip
        delta = -np.linalg.solve(damp, jtr[:, :, None])[:, :, 0]
        delta[:, :3] = np.clip(delta[:, :3], -1.0, 1.0)
        delta[:, 3] = np.clip(delta[:, 3], -20.0, 20.0)
        trial = p + delta
        res_t = _residuals(renderer, psf, images, trial)
        cost_t = (res_t * res_t).sum(1).numpy()
        better = cost_t < cost
        p = np.where(better[:, None], trial, p)
        res = torch.where(torch.as_tensor(better)[:, None], res_t, res)
        cost = np.where(better, cost_t, cost)
        lam = np.where(better, lam / 3.0, lam * 4.0)
    r50, n, q, pa = _unpack(p)
    return {"r50": r50, "n": n, "q": q, "pa": _wrap_pa(pa), "cost": cost / norm}


def build_bank(m: int, seed: int = 7, chunk: int = 250) -> BulgeDiskBank:
    """Draw ``m`` bulge + disk shapes and fit each with one Sersic profile.

    Parameters
    ----------
    m : int
        Number of shapes.
    seed : int
        Seed of the shapes (:func:`draw_bulge_disk_shapes`).
    chunk : int
        Shapes fitted together.

    Returns
    -------
    BulgeDiskBank
    """
    shapes = draw_bulge_disk_shapes(int(m), np.random.default_rng(seed))
    renderer = SersicRenderer(_FIT_SIZE, _FIT_PIXEL, dtype=torch.float64)
    psf = GaussianPSF(_FIT_PSF_PIXELS * _FIT_PIXEL)
    fits = []
    for start in range(0, int(m), chunk):
        part = {k: v[start : start + chunk] for k, v in shapes.items()}
        fits.append(fit_single_sersic(_render_two(renderer, psf, part), renderer, psf))
    fit = {k: np.concatenate([f[k] for f in fits]) for k in fits[0]}
    return _relative_to_fit(shapes, fit)


@lru_cache(maxsize=1)
def load_bank() -> BulgeDiskBank:
    """The shipped bank, ``build_bank(4000, seed=7)`` (refitting reproduces it to ~1e-3)."""
    with resources.as_file(resources.files("lumos") / "data" / _BANK_FILE) as path:
        with np.load(path, allow_pickle=False) as z:
            return BulgeDiskBank(**{f: np.array(z[f]) for f in _FIELDS})


def describe_bank(r50, sersic_n, q, pa, rng: np.random.Generator,
                  bank: BulgeDiskBank | None = None, neighbours: int = 8
                  ) -> dict[str, np.ndarray]:
    """Bulge + disk galaxies whose single-Sersic fit is close to the given descriptions.

    For each target description (r50, n, q, pa), one of the ``neighbours`` bank entries
    nearest in (log n / 0.1, q / 0.05) is chosen at random and placed at the target's
    radius and position angle. The galaxy's catalogue description is then the entry's fit:
    ``(r50, n_fit, q_fit, pa)``, exactly the single Sersic that fits its light.

    Parameters
    ----------
    r50, sersic_n, q, pa : numpy.ndarray, shape (N,)
        Target descriptions (arcsec, index, axis ratio, degrees).
    rng : numpy.random.Generator
        Random generator.
    bank : BulgeDiskBank, optional
        Default :func:`load_bank`.
    neighbours : int
        Entries to choose among.

    Returns
    -------
    dict
        Components ``bulge_fraction``, ``r50_bulge``, ``q_bulge``, ``pa_bulge``,
        ``r50_disk``, ``q_disk``, ``pa_disk`` and the catalogue description ``n``, ``q``
        (r50 and pa are the targets'), each shape (N,).
    """
    bank = load_bank() if bank is None else bank
    r50 = np.asarray(r50, dtype=float)
    n = np.clip(np.asarray(sersic_n, dtype=float), *SERSIC_N_RANGE)
    q = np.asarray(q, dtype=float)
    pa = np.asarray(pa, dtype=float)
    if r50.size == 0:
        empty = np.zeros(0)
        return {k: empty for k in ("bulge_fraction", "r50_bulge", "q_bulge", "pa_bulge",
                                   "r50_disk", "q_disk", "pa_disk", "n", "q")}  # fmt: skip
    k = min(int(neighbours), len(bank))
    _, idx = bank.tree.query(np.stack([np.log(n) / 0.1, q / 0.05], axis=1), k=k)
    idx = np.asarray(idx).reshape(r50.size, k)
    pick = idx[np.arange(r50.size), rng.integers(0, k, r50.size)]
    return {
        "bulge_fraction": bank.bulge_fraction[pick],
        "r50_bulge": r50 * bank.r50_bulge[pick], "q_bulge": bank.q_bulge[pick],
        "pa_bulge": _wrap_pa(pa + bank.pa_bulge[pick]),
        "r50_disk": r50 * bank.r50_disk[pick], "q_disk": bank.q_disk[pick],
        "pa_disk": _wrap_pa(pa + bank.pa_disk[pick]),
        "n": bank.n_fit[pick], "q": bank.q_fit[pick],
    }  # fmt: skip
