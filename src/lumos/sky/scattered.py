"""The scattered-light pattern of the synthetic sky, per band and camera state.

The sky of :class:`lumos.sky.synthetic.SyntheticSky` is multiplied by ``1 + P(x, y)``, a
smooth pattern across the CCD: an exponential fall-off from each of the four edges and each
corner, a weak linear gradient and a broad bump. Each camera state has its own geometry;
each band modulates the amplitudes and scale lengths of its state's pattern.
:class:`ScatteredLight` holds those parameters for every band x camera-state index, drawn
once from a seed, and evaluates ``P`` as a sum of separable terms ``fx_k(x) fy_k(y)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumos.bands import N_BAND_INDEX, N_PAUS_BANDS
from lumos.instrument import CCD_HEIGHT, CCD_WIDTH

__all__ = ["ScatteredLight"]

# Terms of the scattered-light pattern: P(x, y) = sum_k fx_k(x) * fy_k(y).
_N_TERMS = 7  # x-only (edges, gradient), y-only, 4 corners, 1 bump


@dataclass(frozen=True)
class ScatteredLight:
    """Parameters of the scattered-light pattern for all 80 band x camera-state indices.

    Attributes
    ----------
    edge_amp, edge_len : numpy.ndarray
        [80, 4] amplitude (fraction of the sky) and exponential scale length (pixels) of
        the left, right, bottom and top edge terms.
    corner_amp, corner_len : numpy.ndarray
        [80, 4] the same for the corners (bottom-left, bottom-right, top-left, top-right).
    gradient : numpy.ndarray
        [80, 2] linear gradient across the CCD in x and y (fraction of the sky from
        centre to edge x 2).
    bump_amp, bump_xy, bump_width : numpy.ndarray
        [80], [80, 2], [80] amplitude, centre (pixels) and Gaussian width (pixels) of a
        broad bump.
    """

    edge_amp: np.ndarray
    edge_len: np.ndarray
    corner_amp: np.ndarray
    corner_len: np.ndarray
    gradient: np.ndarray
    bump_amp: np.ndarray
    bump_xy: np.ndarray
    bump_width: np.ndarray

    @classmethod
    def draw(cls, seed: int) -> ScatteredLight:
        """Draw the pattern parameters of every band and camera state from ``seed``."""
        rows = {k: [] for k in cls.__dataclass_fields__}
        for state in range(N_BAND_INDEX // N_PAUS_BANDS):
            base = np.random.default_rng([seed, state])
            edge_amp = base.uniform(0.04, 0.2, 4)
            edge_len = np.exp(base.uniform(np.log(60.0), np.log(400.0), 4))
            corner_amp = base.uniform(0.0, 0.08, 4)
            corner_len = np.exp(base.uniform(np.log(100.0), np.log(400.0), 4))
            gradient = base.uniform(-0.04, 0.04, 2)
            bump_xy = base.uniform([0.2 * CCD_WIDTH, 0.2 * CCD_HEIGHT],
                                   [0.8 * CCD_WIDTH, 0.8 * CCD_HEIGHT])
            bump_width = base.uniform(300.0, 1000.0)
            bump_amp = base.uniform(0.0, 0.05)
            for number in range(N_PAUS_BANDS):
                r = np.random.default_rng([seed, state, number])
                rows["edge_amp"].append(edge_amp * r.lognormal(0.0, 0.35, 4))
                rows["edge_len"].append(edge_len * r.lognormal(0.0, 0.2, 4))
                rows["corner_amp"].append(corner_amp * r.lognormal(0.0, 0.35, 4))
                rows["corner_len"].append(corner_len * r.lognormal(0.0, 0.2, 4))
                rows["gradient"].append(gradient * r.lognormal(0.0, 0.35, 2))
                rows["bump_amp"].append(bump_amp * r.lognormal(0.0, 0.35))
                rows["bump_xy"].append(bump_xy + r.normal(0.0, 100.0, 2))
                rows["bump_width"].append(bump_width * r.lognormal(0.0, 0.2))
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in rows.items()})

    def factors(
        self,
        band_idx: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        offset: float = 0.0,
        scale: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Separable factors of ``scale * (offset + P)``: ``sum_k fx[:, k, :] * fy[:, k, :]``.

        Parameters
        ----------
        band_idx : numpy.ndarray
            int [N].
        x : numpy.ndarray
            [N, W] CCD x coordinates of the image columns, pixels.
        y : numpy.ndarray
            [N, H] CCD y coordinates of the image rows, pixels.
        offset : float
            Constant added to the pattern (1 gives the sky multiplier ``1 + P``).
        scale : numpy.ndarray, optional
            [N] factor applied to each image (e.g. the flat sky level in electrons).

        Returns
        -------
        fx : numpy.ndarray
            float32 [N, K, W].
        fy : numpy.ndarray
            float32 [N, K, H].
        """
        b = band_idx
        n = b.size
        # distances to the edges (pixel centres run from 0 to size - 1; edges at -0.5)
        dl = np.clip(x + 0.5, 0.0, None)
        dr = np.clip(CCD_WIDTH - 0.5 - x, 0.0, None)
        db = np.clip(y + 0.5, 0.0, None)
        dt = np.clip(CCD_HEIGHT - 0.5 - y, 0.0, None)
        fx = np.ones((n, _N_TERMS, x.shape[1]))
        fy = np.ones((n, _N_TERMS, y.shape[1]))
        ea, el = self.edge_amp[b][:, :, None], self.edge_len[b][:, :, None]
        ca, cl = self.corner_amp[b][:, :, None], self.corner_len[b][:, :, None]
        g = self.gradient[b]
        # term 0: everything that depends on x only (left, right edges, x gradient, offset)
        fx[:, 0] = (
            offset
            + ea[:, 0] * np.exp(-dl / el[:, 0])
            + ea[:, 1] * np.exp(-dr / el[:, 1])
            + g[:, 0:1] * (2.0 * x / CCD_WIDTH - 1.0)
        )
        # term 1: y only (bottom, top edges, y gradient)
        fy[:, 1] = (
            ea[:, 2] * np.exp(-db / el[:, 2])
            + ea[:, 3] * np.exp(-dt / el[:, 3])
            + g[:, 1:2] * (2.0 * y / CCD_HEIGHT - 1.0)
        )
        # terms 2-5: corners (bottom-left, bottom-right, top-left, top-right)
        for k, (dx, dy) in enumerate(((dl, db), (dr, db), (dl, dt), (dr, dt))):
            fx[:, 2 + k] = ca[:, k] * np.exp(-dx / cl[:, k])
            fy[:, 2 + k] = np.exp(-dy / cl[:, k])
        # term 6: a broad bump
        bxy, bw = self.bump_xy[b], self.bump_width[b][:, None]
        fx[:, 6] = self.bump_amp[b][:, None] * np.exp(-0.5 * ((x - bxy[:, 0:1]) / bw) ** 2)
        fy[:, 6] = np.exp(-0.5 * ((y - bxy[:, 1:2]) / bw) ** 2)
        if scale is not None:
            fx *= np.asarray(scale, dtype=np.float64)[:, None, None]
        return fx.astype(np.float32), fy.astype(np.float32)

    def evaluate(
        self,
        band_idx: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        offset: float = 0.0,
        scale: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``scale * (offset + P)`` on the pixel grid of each image.

        Parameters
        ----------
        band_idx, x, y, offset, scale
            As in :meth:`factors`.
        out : numpy.ndarray, optional
            float32 [N, H, W] array to write into.

        Returns
        -------
        numpy.ndarray
            float32 [N, H, W] (fraction of the flat sky when ``offset=0, scale=None``).
        """
        fx, fy = self.factors(band_idx, x, y, offset, scale)
        return np.matmul(fy.transpose(0, 2, 1), fx, out=out)
