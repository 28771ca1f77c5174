"""The flux prior p(flux | catalogue magnitude, band) and the posterior it makes of a likelihood.

A likelihood model (``NetworkConfig(likelihood=True)``) measures each exposure from its pixels
and model profile alone. The catalogue's i magnitude then enters once, explicitly, through a
prior on the band flux ``f`` given the i magnitude::

    x = f / (u * S(i)),    S(i) = 10 ** (-0.4 * (i - 20)),

where ``x`` is a colour (the band flux of an i = 20 galaxy of that colour) and ``u`` the unit
of the prior: the exposure time for a prior in electrons per second (the simulation
population's), 1 for a prior in the image's own flux units (a prior learnt from the measured
galaxies). For each band and bin of i magnitude, ``p(x)`` is a Gaussian mixture, so
``p(f | i)`` is a Gaussian mixture in ``f`` and the posterior ``L(f) p(f | i)``, truncated at
zero flux (no galaxy has negative flux), is again one (:func:`posterior`). Three sources:

* :func:`population_prior`: the TEAHUPOO population's colours (what the simulations assume);
* a table given by the user (:meth:`FluxPrior.read`, the format of :meth:`FluxPrior.to_table`);
* :func:`empirical_prior`: learnt from the measured galaxies' likelihoods by deconvolution
  (extreme deconvolution: each galaxy's likelihood is a Gaussian of known width, the prior
  the distribution whose convolution with those widths best explains the measured fluxes),
  using no truth. It follows the colours of the data being measured. ``form="binned"``
  fits up to ``k`` components per bin of i magnitude; ``form="smooth"`` one Gaussian per
  band whose mean and log-width are linear in ``i - 20``, fitted to all the band's galaxies
  at once and widened by the fit's own uncertainty
  (:func:`lumos.deconvolution.fit_linear_gaussian`): the faint galaxies, whose likelihoods
  are much wider than the colours' spread, take the width the whole band measures instead
  of one their own bin cannot fix. :data:`EMPIRICAL_FORM` is the default.

:func:`choose_prior` picks the empirical prior where a band has enough measured galaxies
(``EMPIRICAL_MIN_GALAXIES``) and the population prior elsewhere: a prior fitted to the data
keeps faint posteriors calibrated when the real colours differ from the simulation's, which
a fixed population prior does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from astropy.table import Table

from .deconvolution import (
    fit_linear_gaussian,
    fit_mixture_1d,
    fit_mixture_bic,
    mixture_log_likelihood,
)
from .errors import LumosError
from .mixture import GaussianMixture, product
from .population import sample_population

__all__ = [
    "REFERENCE_MAG",
    "EMPIRICAL_MIN_GALAXIES",
    "EMPIRICAL_COMPONENTS",
    "EMPIRICAL_FORM",
    "EMPIRICAL_FORMS",
    "EMPIRICAL_STEP",
    "FluxPrior",
    "PriorChoice",
    "magnitude_scale",
    "fit_mixture_1d",
    "fit_mixture_bic",
    "mixture_log_likelihood",
    "population_prior",
    "empirical_prior",
    "choose_prior",
    "posterior",
]

#: i magnitude at which the prior's colour variable ``x`` equals the band flux.
REFERENCE_MAG = 20.0
#: Fewest usable measured galaxies in a band for :func:`choose_prior` to learn its prior.
EMPIRICAL_MIN_GALAXIES = 100
#: Most mixture components per band and i bin of :func:`empirical_prior` by default: one
#: Gaussian. Narrow components deconvolved from a few hundred galaxies per bin have widths
#: set by the difference of two similar variances (measured scatter minus the likelihoods'),
#: so a few percent of error in the likelihood's width makes them confidently wrong; on
#: lumos's own held-out simulations (``bench/bench_prior.py``) the BIC-chosen mixture of up to
#: three components covers the truth 0.62-0.65 of the time, one Gaussian 0.64-0.68.
EMPIRICAL_COMPONENTS = 1
#: Forms of :func:`empirical_prior`: one Gaussian per band following i, or up to ``k``
#: components per i bin.
EMPIRICAL_FORMS = ("smooth", "binned")
#: Form of :func:`empirical_prior` unless another is asked for.
EMPIRICAL_FORM = "binned"
#: Width in magnitudes of the i bins on which the smooth empirical prior is tabulated.
EMPIRICAL_STEP = 0.05
_PRIOR_KINDS = ("population", "table", "empirical")
#: i-magnitude bin edges of the population prior.
POPULATION_I_EDGES = tuple(float(v) for v in np.arange(17.0, 23.01, 0.5))


def magnitude_scale(i_mag) -> np.ndarray:
    """``S(i) = 10 ** (-0.4 (i - REFERENCE_MAG))``: flux of magnitude ``i`` relative to i = 20."""
    return 10.0 ** (-0.4 * (np.asarray(i_mag, dtype=float) - REFERENCE_MAG))


@dataclass(frozen=True)
class FluxPrior:
    """Gaussian-mixture priors of the colour ``x = f / (u S(i))`` per band and i bin.

    Parameters
    ----------
    kind : {"population", "table", "empirical"}
        Where the prior comes from (recorded in output tables).
    bands : tuple of str
        Band names.
    i_edges : tuple of float
        Edges of the i-magnitude bins (increasing, at least two); magnitudes outside use
        the nearest bin.
    weight, mean, sigma : numpy.ndarray, shape (n_bands, n_bins, K)
        Mixture of ``x`` per band and bin (weights sum to 1 over K).
    per_second : bool
        ``x`` is in electrons per second (``u`` = exposure time); otherwise in the image's
        flux units (``u`` = 1).
    """

    kind: str
    bands: tuple[str, ...]
    i_edges: tuple[float, ...]
    weight: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    per_second: bool

    def __post_init__(self) -> None:
        if self.kind not in _PRIOR_KINDS:
            raise LumosError(f"prior kind must be one of {', '.join(_PRIOR_KINDS)}, "
                             f"got {self.kind!r}")  # fmt: skip
        edges = np.asarray(self.i_edges, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise LumosError(f"prior i_edges must be increasing, got {self.i_edges}")
        shape = (len(self.bands), edges.size - 1)
        for name in ("weight", "mean", "sigma"):
            a = np.asarray(getattr(self, name))
            if a.ndim != 3 or a.shape[:2] != shape:
                raise LumosError(f"prior {name} must have shape (bands, i bins, K) = "
                                 f"{shape + ('K',)}, got {a.shape}")  # fmt: skip
        if not (np.all(np.isfinite(self.weight)) and np.all(self.weight >= 0)
                and np.all(np.asarray(self.sigma) > 0) and np.all(np.isfinite(self.mean))):
            raise LumosError("prior weights must be >= 0 and finite, sigmas > 0")

    def band_row(self, bands) -> np.ndarray:
        """Row of each band in the prior's arrays (-1 where the prior lacks the band)."""
        lookup = {b: i for i, b in enumerate(self.bands)}
        return np.array([lookup.get(str(b), -1) for b in np.atleast_1d(bands)], dtype=int)

    def mixture(self, bands, i_mag, exposure_time=1.0) -> tuple[GaussianMixture, np.ndarray]:
        """The prior of the band flux of each galaxy, in flux units.

        Parameters
        ----------
        bands : array_like of str, shape (N,)
        i_mag : array_like, shape (N,)
            Catalogue i magnitudes.
        exposure_time : float or array_like
            Seconds (used when ``per_second``).

        Returns
        -------
        mixture : GaussianMixture
            N rows of K components, truncated at zero flux.
        known : numpy.ndarray of bool, shape (N,)
            False where the band is not in the prior or the magnitude is not finite (those
            rows hold a placeholder; :func:`posterior` uses no prior there).
        """
        i_mag = np.asarray(i_mag, dtype=float)
        n = i_mag.size
        rows = self.band_row(bands) if n else np.zeros(0, int)
        if rows.size == 1 and n > 1:
            rows = np.repeat(rows, n)
        known = (rows >= 0) & np.isfinite(i_mag)
        ibin = np.clip(np.searchsorted(np.asarray(self.i_edges), np.nan_to_num(i_mag), "right") - 1,
                       0, len(self.i_edges) - 2)  # fmt: skip
        r = np.where(known, rows, 0)
        w = np.asarray(self.weight)[r, ibin]
        mu = np.asarray(self.mean)[r, ibin]
        sg = np.asarray(self.sigma)[r, ibin]
        unit = np.broadcast_to(np.asarray(exposure_time, float), (n,)) if self.per_second \
            else np.ones(n)  # fmt: skip
        s = np.where(known, unit * magnitude_scale(np.nan_to_num(i_mag, nan=REFERENCE_MAG)), 1.0)
        mix = GaussianMixture.from_arrays(w, mu * s[:, None], sg * s[:, None],
                                          truncated=np.ones(n, bool))  # fmt: skip
        return mix, known

    # -- tables ------------------------------------------------------------------------
    def to_table(self) -> Table:
        """One row per (band, i bin): ``band``, ``i_min``, ``i_max`` and vector columns
        ``weight``, ``mean``, ``sigma`` (K each); ``meta`` holds ``KIND`` and ``PERSEC``."""
        t = Table()
        nb, nbin, _ = np.asarray(self.weight).shape
        t["band"] = np.repeat(np.asarray(self.bands, dtype=str), nbin)
        edges = np.asarray(self.i_edges, dtype=float)
        t["i_min"] = np.tile(edges[:-1], nb)
        t["i_max"] = np.tile(edges[1:], nb)
        for name in ("weight", "mean", "sigma"):
            a = np.asarray(getattr(self, name), dtype=float)
            t[name] = a.reshape(nb * nbin, -1)
        t.meta["KIND"] = self.kind
        t.meta["PERSEC"] = bool(self.per_second)
        return t

    @classmethod
    def from_table(cls, table: Table, kind: str = "table") -> FluxPrior:
        """Inverse of :meth:`to_table`: every band must use the same i bins."""
        need = ("band", "i_min", "i_max", "weight", "mean", "sigma")
        missing = [c for c in need if c not in table.colnames]
        if missing:
            raise LumosError(f"prior table lacks column(s): {', '.join(missing)}")
        bands = list(dict.fromkeys(str(b) for b in table["band"]))
        lo = np.asarray(table["i_min"], float)
        hi = np.asarray(table["i_max"], float)
        b0 = np.asarray(table["band"]).astype(str) == bands[0]
        edges = np.concatenate([lo[b0], hi[b0][-1:]])
        nbin = edges.size - 1
        if len(table) != len(bands) * nbin:
            raise LumosError("prior table: every band needs the same i-magnitude bins")
        order = np.lexsort((lo, [bands.index(str(b)) for b in table["band"]]))
        arrays = {}
        for name in ("weight", "mean", "sigma"):
            a = np.asarray(table[name], dtype=float)
            a = a.reshape(len(table), -1)[order]
            arrays[name] = a.reshape(len(bands), nbin, -1)
        per_second = bool(table.meta.get("PERSEC", False))
        return cls(kind, tuple(bands), tuple(edges.tolist()), arrays["weight"], arrays["mean"],
                   arrays["sigma"], per_second)  # fmt: skip

    def write(self, path) -> None:
        """Write :meth:`to_table` (FITS or ECSV by the file name)."""
        self.to_table().write(str(path), overwrite=True)

    @classmethod
    def read(cls, path) -> FluxPrior:
        """Read a prior table written by :meth:`write` (or made by the user)."""
        try:
            table = Table.read(str(path))
        except (OSError, ValueError) as exc:
            raise LumosError(f"cannot read the prior table {path}: {exc}") from exc
        return cls.from_table(table)


def population_prior(bands=None, n: int = 200_000, seed: int = 0, k: int = 3,
                     i_edges=POPULATION_I_EDGES) -> FluxPrior:
    """The TEAHUPOO population's colours as a prior (electrons per second).

    Parameters
    ----------
    bands : sequence of str, optional
        Bands (default the 40 PAUS narrow bands).
    n : int
        Galaxies drawn from :func:`lumos.population.sample_population` (seeded).
    seed : int
        Seed of the draw.
    k : int
        Components per band and i bin.
    i_edges : sequence of float
        Bin edges in i magnitude.

    Returns
    -------
    FluxPrior
    """
    gal = sample_population(int(n), np.random.default_rng(seed), bands=bands)
    names = tuple(gal.bands)
    edges = np.asarray(i_edges, dtype=float)
    nbin = edges.size - 1
    shape = (len(names), nbin, k)
    w, mu, sg = np.zeros(shape), np.zeros(shape), np.ones(shape)
    x_all = gal.flux_e_per_s / magnitude_scale(gal.i_mag)[:, None]
    ibin = np.clip(np.searchsorted(edges, gal.i_mag, "right") - 1, 0, nbin - 1)
    for j in range(nbin):
        sel = ibin == j
        for b in range(len(names)):
            w[b, j], mu[b, j], sg[b, j] = fit_mixture_1d(x_all[sel, b], k=k, seed=seed + b)
    return FluxPrior("population", names, tuple(edges.tolist()), w, mu, sg, per_second=True)


def _equal_count_edges(i_mag: np.ndarray, min_per_bin: int, max_bins: int) -> np.ndarray:
    n_bins = int(max(1, min(max_bins, i_mag.size // max(min_per_bin, 1))))
    edges = np.quantile(i_mag, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    edges = np.unique(edges)
    return edges if edges.size >= 2 else np.array([-np.inf, np.inf])


def empirical_prior(flux, flux_err, i_mag, bands, k: int = EMPIRICAL_COMPONENTS,
                    min_per_bin: int = 75, max_bins: int = 4, seed: int = 0,
                    form: str | None = None) -> FluxPrior:
    """A prior learnt from measured likelihoods by deconvolution, using no truth.

    The colours ``x_j = flux_j / S(i_j)`` with errors ``flux_err_j / S(i_j)`` are
    deconvolved per band, in one of two forms:

    * ``"smooth"``: one Gaussian whose mean and log-width are
      linear in ``i - REFERENCE_MAG``, fitted to all the band's galaxies
      (:func:`lumos.deconvolution.fit_linear_gaussian`) and widened by the fit's
      uncertainty (:meth:`~lumos.deconvolution.LinearGaussian.at`), tabulated on bins of
      :data:`EMPIRICAL_STEP` mag from the brightest to the faintest measured magnitude
      (the model is constant beyond the band's own range);
    * ``"binned"``: up to ``k`` components chosen by
      :func:`fit_mixture_bic` in bins of i magnitude holding at least ``min_per_bin``
      galaxies (equal counts, at most ``max_bins``; one bin for few galaxies).

    Both are equivariant under a shift of every catalogue magnitude: the prior of a flux
    follows the colours the data show, whatever magnitudes the catalogue quotes. The
    prior is in the measurements' flux units.

    Parameters
    ----------
    flux, flux_err : array_like, shape (N,)
        Likelihood estimates and their per-exposure errors (``flux_like``,
        ``flux_like_err``); non-finite rows are ignored.
    i_mag : array_like, shape (N,)
        Catalogue i magnitudes.
    bands : array_like of str, shape (N,)
    k : int
        Most components per band and bin (>= 1; ``"smooth"`` has one).
    min_per_bin, max_bins : int
        Binning in i magnitude of ``"binned"`` (the same edges for every band, from all
        galaxies).
    seed : int
        Seed of the EM starts.
    form : {"smooth", "binned"}, optional
        Default :data:`EMPIRICAL_FORM`.

    Returns
    -------
    FluxPrior

    Raises
    ------
    ValueError
        If ``k`` is not an integer >= 1, or ``form`` is unknown or ``"smooth"`` with
        ``k > 1``.
    LumosError
        Where a band has no usable galaxy.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    form = EMPIRICAL_FORM if form is None else form
    if form not in EMPIRICAL_FORMS:
        raise ValueError(f"form must be one of {', '.join(EMPIRICAL_FORMS)}, got {form!r}")
    if form == "smooth" and k != 1:
        raise ValueError(f"the smooth empirical prior has one component, got k={k}")
    flux = np.asarray(flux, float)
    err = np.asarray(flux_err, float)
    i_mag = np.asarray(i_mag, float)
    bands = np.asarray(bands).astype(str)
    ok = np.isfinite(flux) & np.isfinite(err) & (err > 0) & np.isfinite(i_mag)
    names = tuple(sorted(set(bands[ok])))
    if not names:
        raise LumosError("no usable galaxy to learn the prior from")
    s = magnitude_scale(np.where(ok, i_mag, REFERENCE_MAG))
    x, ex = flux / s, err / s
    if form == "smooth":
        return _smooth_prior(x, ex, i_mag, bands, ok, names)
    counts = [int((ok & (bands == b)).sum()) for b in names]
    edges = _equal_count_edges(i_mag[ok], min_per_bin, min(max_bins, max(1, min(counts)
                                                                          // max(min_per_bin, 1))))
    nbin = edges.size - 1
    shape = (len(names), nbin, k)
    w, mu, sg = np.zeros(shape), np.zeros(shape), np.ones(shape)
    ibin = np.clip(np.searchsorted(edges, i_mag, "right") - 1, 0, nbin - 1)
    for b, name in enumerate(names):
        for j in range(nbin):
            sel = ok & (bands == name) & (ibin == j)
            if not sel.any():
                sel = ok & (bands == name)
            fw, fm, fs = fit_mixture_bic(x[sel], ex[sel], k_max=k, seed=seed + b)
            kk = fw.size
            w[b, j, :kk], mu[b, j, :kk], sg[b, j, :kk] = fw, fm, fs
    finite_edges = np.where(np.isfinite(edges), edges, np.where(edges < 0, 0.0, 99.0))
    return FluxPrior("empirical", names, tuple(finite_edges.tolist()), w, mu, sg,
                     per_second=False)  # fmt: skip


def _smooth_prior(x, ex, i_mag, bands, ok, names) -> FluxPrior:
    """The ``"smooth"`` form of :func:`empirical_prior` on colours ``x`` with errors ``ex``."""
    lo, hi = float(i_mag[ok].min()), float(i_mag[ok].max())
    edges = lo + EMPIRICAL_STEP * np.arange(int(np.ceil((hi - lo) / EMPIRICAL_STEP)) + 2)
    centre = 0.5 * (edges[1:] + edges[:-1]) - REFERENCE_MAG
    shape = (len(names), centre.size, 1)
    mu, sg = np.zeros(shape), np.ones(shape)
    for b, name in enumerate(names):
        sel = ok & (bands == name)
        fit = fit_linear_gaussian(x[sel], ex[sel], i_mag[sel] - REFERENCE_MAG)
        mu[b, :, 0], sg[b, :, 0] = fit.at(centre)
    return FluxPrior("empirical", names, tuple(edges.tolist()), np.ones(shape), mu, sg,
                     per_second=False)  # fmt: skip


@dataclass(frozen=True)
class PriorChoice:
    """A prior as the command line names it, with the form of a prior learnt from the data.

    Parameters
    ----------
    name : str
        ``"auto"``, ``"population"``, ``"empirical"``, ``"none"`` or the path of a prior
        table (see :func:`choose_prior`).
    form : str
        Form of the empirical prior (:data:`EMPIRICAL_FORMS`, see :func:`empirical_prior`);
        used where the prior is learnt (``"auto"`` with enough galaxies, ``"empirical"``).

    Raises
    ------
    ValueError
        If ``form`` is unknown, or not the default for a prior that is not learnt.
    """

    name: str = "auto"
    form: str = EMPIRICAL_FORM

    def __post_init__(self) -> None:
        if self.form not in EMPIRICAL_FORMS:
            raise ValueError(f"prior form must be one of {', '.join(EMPIRICAL_FORMS)}, "
                             f"got {self.form!r}")  # fmt: skip
        if self.form != EMPIRICAL_FORM and self.name not in ("auto", "empirical"):
            raise ValueError(f"the prior form applies to a prior learnt from the measurements "
                             f"(auto or empirical), not to {self.name!r}")  # fmt: skip

    def __str__(self) -> str:
        return self.name


def choose_prior(name: str | PriorChoice, likelihood: dict | None = None,
                 population: FluxPrior | None = None) -> FluxPrior | None:
    """The prior named on the command line.

    Parameters
    ----------
    name : str or PriorChoice
        ``"auto"`` (empirical where every band has ``EMPIRICAL_MIN_GALAXIES`` usable
        measurements, else the population prior), ``"population"``, ``"empirical"``,
        ``"none"`` (a flat prior on positive fluxes), or the path of a prior table; a
        :class:`PriorChoice` also gives the empirical prior's form (default
        :data:`EMPIRICAL_FORM`).
    likelihood : dict, optional
        ``flux``, ``flux_err``, ``i_mag``, ``band`` arrays of the measured galaxies (for
        the empirical prior).
    population : FluxPrior, optional
        A precomputed population prior (default :func:`population_prior`).

    Returns
    -------
    FluxPrior or None
        None for ``"none"``.
    """
    choice = name if isinstance(name, PriorChoice) else PriorChoice(str(name))
    name = choice.name
    if name == "none":
        return None
    if name not in ("auto", "population", "empirical"):
        return FluxPrior.read(name)
    if name in ("auto", "empirical") and likelihood is not None:
        lk = likelihood
        ok = np.isfinite(np.asarray(lk["flux"], float)) & np.isfinite(np.asarray(lk["i_mag"],
                                                                                   float))
        bands = np.asarray(lk["band"]).astype(str)
        enough = bool(ok.any()) and all(int((ok & (bands == b)).sum()) >= EMPIRICAL_MIN_GALAXIES
                                        for b in set(bands[ok]))  # fmt: skip
        if name == "empirical" or enough:
            return empirical_prior(lk["flux"], lk["flux_err"], lk["i_mag"], bands,
                                   form=choice.form)
    if name == "empirical":
        raise LumosError("the empirical prior needs the measured likelihoods")
    return population if population is not None else population_prior()


def posterior(likelihood: GaussianMixture, prior: GaussianMixture | None,
              known: np.ndarray | None = None,
              max_components: int | None = None) -> GaussianMixture:
    """The posterior ``L(f) p(f)``, truncated at zero flux, as a Gaussian mixture.

    The product of a K-component and a J-component mixture has K J components
    (:func:`lumos.mixture.product`); with ``max_components`` it is reduced by moment
    matching. Rows without a prior (``known`` False, or ``prior`` None) get the
    likelihood truncated at zero (a flat prior on positive fluxes).

    Parameters
    ----------
    likelihood : GaussianMixture
        Per-exposure (or co-added) likelihoods, N rows, untruncated.
    prior : GaussianMixture or None
        N rows (from :meth:`FluxPrior.mixture`).
    known : numpy.ndarray of bool, optional
        Rows with a prior.
    max_components : int, optional

    Returns
    -------
    GaussianMixture
        Truncated at zero on every row.
    """
    n = len(likelihood)
    trunc = torch.ones(n, dtype=torch.bool)
    like = GaussianMixture(likelihood.log_weights.double(), likelihood.means.double(),
                           likelihood.sigmas.double(), trunc)  # fmt: skip
    if prior is None or n == 0:
        return like
    known = np.ones(n, bool) if known is None else np.asarray(known, bool)
    # rows without a prior: a single component far wider than the likelihood
    width = (like.means.abs().amax(dim=1) + like.sigmas.amax(dim=1)) * 1e6 + 1.0
    kp = prior.n_components
    kn = torch.from_numpy(known)
    lw = torch.where(kn[:, None], prior.log_weights.double(),
                     torch.cat([torch.zeros(n, 1, dtype=torch.float64),
                                torch.full((n, kp - 1), -math.inf, dtype=torch.float64)], 1)
                     if kp > 1 else torch.zeros(n, 1, dtype=torch.float64))  # fmt: skip
    mu = torch.where(kn[:, None], prior.means.double(), torch.zeros(n, kp, dtype=torch.float64))
    sg = torch.where(kn[:, None], prior.sigmas.double(), width[:, None].expand(n, kp))
    p = GaussianMixture(lw, mu, sg, trunc)
    return product([like, p], max_components=max_components)
