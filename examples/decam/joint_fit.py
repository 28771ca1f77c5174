"""Single-Sersic fit of one source on every exposure that holds it at once.

A catalogue whose positions and shapes are fitted on one of the exposures it is later used to
measure follows that exposure's noise: a faint galaxy's fitted centre moves towards the noise
peak of that exposure, and a forced measurement at that centre favours that exposure's flux.
Here one profile is fitted to all exposures together, as a catalogue from deeper imaging is:

    model_e(x, y) = F_b(e) * P_e(x, y; x_c, y_c, r50, n, q, pa) + s_e

for exposure e of band b(e), where P_e is the unit-flux Sersic profile convolved with exposure
e's PSFEx PSF at the source (drawn by :class:`lumos.profiles.SersicRenderer`), the centre
``(x_c, y_c)`` is in the reference exposure's pixels and reaches exposure e through both TPV
WCSs, r50, n, q and pa are shared (the exposures have the same orientation to 0.1 degree),
F_b is one flux per band [nanomaggies] and s_e a constant sky residual per exposure. The fit
minimises the inverse-variance weighted squared residuals of all exposures' stamps (masked
pixels and the pixels of other detections at zero weight; ``scipy.optimize.least_squares``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

# shape parameters: dx, dy [reference pixels], ln r50 [arcsec], n, q, pa [deg]
SHAPE_LOWER = np.array([-3.0, -3.0, np.log(0.03), 0.4, 0.08, -360.0])
SHAPE_UPPER = np.array([3.0, 3.0, np.log(5.0), 6.0, 1.0, 360.0])
SHAPE_STEP = np.array([0.02, 0.02, 0.02, 0.02, 0.01, 1.0])


@dataclass
class View:
    """One exposure's stamp of a source: data, weight, PSF and where the centre maps to.

    ``to_exposure(x_ref, y_ref)`` maps reference-exposure pixels to this exposure's
    pixels; ``x0, y0`` is the stamp's centre pixel in this exposure; ``band`` indexes the
    fitted fluxes.
    """

    data: np.ndarray
    weight: np.ndarray
    psf: object
    x0: int
    y0: int
    band: int
    to_exposure: object


@dataclass
class JointFit:
    """Result of :func:`fit_joint`: shape, centre, per-band fluxes and per-view skies."""

    x_ref: float
    y_ref: float
    r50: float
    sersic_n: float
    q: float
    pa: float
    flux: np.ndarray  # per band [nanomaggies]
    sky: np.ndarray  # per view
    chi2: float  # per degree of freedom


def _offsets(views: list[View], x_ref: float, y_ref: float) -> np.ndarray:
    """The centre's offset from each view's stamp centre, shape (V, 2)."""
    out = np.empty((len(views), 2))
    for i, v in enumerate(views):
        x, y = v.to_exposure(x_ref, y_ref)
        out[i] = (x - v.x0, y - v.y0)
    return out


def fit_joint(fitter, views: list[View], n_bands: int, x_start: float, y_start: float,
              shape_start: np.ndarray, flux_start: float, free_shape: np.ndarray | None = None,
              shape_lower: np.ndarray = SHAPE_LOWER, positive_band: int | None = None,
              max_nfev: int = 200) -> JointFit:
    """Fit one Sersic profile to all ``views`` at once (see the module docstring).

    Parameters
    ----------
    fitter : build_catalogue.SersicModel
        Its ``stamps`` draws the unit-flux profiles.
    views : list of View
    n_bands : int
        Number of fitted fluxes (``View.band`` indexes them).
    x_start, y_start : float
        Starting centre in reference pixels.
    shape_start : numpy.ndarray, shape (4,)
        Starting ``ln r50, n, q, pa``.
    flux_start : float
        Starting flux of every band [nanomaggies].
    free_shape : numpy.ndarray of bool, shape (6,), optional
        Which of ``dx, dy, ln r50, n, q, pa`` are fitted (default all).
    shape_lower : numpy.ndarray, shape (6,)
        Lower bounds of the shape parameters.
    positive_band : int, optional
        A band whose flux is kept >= 0 (the catalogue's reference band).
    max_nfev : int
        Largest number of function evaluations.

    Returns
    -------
    JointFit
    """
    free = np.ones(6, bool) if free_shape is None else np.asarray(free_shape, bool)
    n_views = len(views)
    base = np.concatenate([[0.0, 0.0], shape_start])
    base = np.clip(base, shape_lower + 1e-6, SHAPE_UPPER - 1e-6)
    sw = [np.sqrt(v.weight) for v in views]
    band = np.array([v.band for v in views])
    n_shape = int(free.sum())

    def unpack(p):
        shape = base.copy()
        shape[free] = p[:n_shape]
        return shape, p[n_shape:n_shape + n_bands], p[n_shape + n_bands:]

    def profiles(shape, extra_rows: np.ndarray | None = None) -> list[np.ndarray]:
        """Unit-flux profiles per view; with ``extra_rows`` (R, 6) also the perturbed ones."""
        rows = shape[None] if extra_rows is None else np.vstack([shape[None], extra_rows])
        offsets = np.stack([_offsets(views, x_start + r[0], y_start + r[1]) for r in rows], 1)
        out = []
        for i, v in enumerate(views):
            par = np.zeros((rows.shape[0], 8))
            par[:, 0] = 1.0
            par[:, 1:3] = offsets[i]
            par[:, 3:7] = rows[:, 2:6]
            out.append(fitter.stamps(par, v.psf))
        return out

    def resid(p):
        shape, flux, sky = unpack(p)
        prof = profiles(shape)
        return np.concatenate([((flux[band[i]] * prof[i][0] + sky[i] - v.data) * sw[i]).ravel()
                               for i, v in enumerate(views)])  # fmt: skip

    def jac(p):
        shape, flux, sky = unpack(p)
        idx = np.flatnonzero(free)
        h = SHAPE_STEP[idx] * np.where(shape[idx] + SHAPE_STEP[idx] > SHAPE_UPPER[idx], -1, 1)
        rows = np.repeat(shape[None], idx.size, 0)
        rows[np.arange(idx.size), idx] += h
        prof = profiles(shape, rows)
        blocks = []
        for i in range(n_views):
            npix = sw[i].size
            j = np.zeros((npix, p.size))
            d = (prof[i][1:] - prof[i][0]) / h[:, None, None] * flux[band[i]]
            j[:, :n_shape] = (d * sw[i]).reshape(idx.size, -1).T
            j[:, n_shape + band[i]] = (prof[i][0] * sw[i]).ravel()
            j[:, n_shape + n_bands + i] = sw[i].ravel()
            blocks.append(j)
        return np.vstack(blocks)

    flux_lo = np.full(n_bands, -np.inf)
    if positive_band is not None:
        flux_lo[positive_band] = 0.0
    lower = np.concatenate([shape_lower[free], flux_lo, np.full(n_views, -np.inf)])
    upper = np.concatenate([SHAPE_UPPER[free], np.full(n_bands + n_views, np.inf)])
    start = np.concatenate([base[free], np.full(n_bands, max(flux_start, 1e-3)),
                            np.zeros(n_views)])  # fmt: skip
    start = np.clip(start, lower + 1e-9, upper - 1e-9)
    result = least_squares(resid, start, jac=jac, bounds=(lower, upper), x_scale="jac",
                           max_nfev=max_nfev)  # fmt: skip
    shape, flux, sky = unpack(result.x)
    n_pix = sum(int(np.count_nonzero(v.weight)) for v in views)
    chi2 = float(2.0 * result.cost / max(n_pix - result.x.size, 1))
    return JointFit(x_start + shape[0], y_start + shape[1], float(np.exp(shape[2])),
                    float(shape[3]), float(shape[4]), float(shape[5] % 180.0), flux.copy(),
                    sky.copy(), chi2)  # fmt: skip
