"""Tests of the batched Sersic renderer (lumos.profiles)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lumos.instrument import PIXEL_SCALE
from lumos.profiles import (
    SersicRenderer,
    render_sersic,
    valid_profile_parameters,
)
from lumos.psf import GaussianPSF, MoffatPSF
from lumos.sersic import sersic_table

PIX = PIXEL_SCALE
#: The accuracy profiles.py documents against GalSim: stamp flux within a few 1e-4, pixels
#: within 5e-4 of the peak.
FLUX_TOL, PIXEL_TOL = 3e-4, 5e-4


@pytest.fixture(scope="module")
def renderer() -> SersicRenderer:
    return SersicRenderer(size=60, pixel_scale=PIX)


def moments(img: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid (x, y) and second moments (xx, yy, xy) of an image [pixels]."""
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    f = img.sum()
    cx, cy = (img * x).sum() / f, (img * y).sum() / f
    xx = (img * (x - cx) ** 2).sum() / f
    yy = (img * (y - cy) ** 2).sum() / f
    xy = (img * (x - cx) * (y - cy)).sum() / f
    return cx, cy, xx, yy, xy


def test_table_matches_galsim_off_grid():
    galsim = pytest.importorskip("galsim")
    tab = sersic_table()
    from lumos.psf import cubic_rows

    for n in (0.3137, 0.71, 1.4567, 3.333, 6.1):
        row = cubic_rows(tab.table, torch.tensor([(n - tab.n_min) / tab.n_step]))[0]
        prof = galsim.Sersic(n, half_light_radius=1.0)
        for kappa in (0.05, 0.7, 2.0, 9.0, 60.0):
            u = (np.log(kappa) - tab.lnk_min) / tab.lnk_step
            j = int(np.floor(u))
            val = float(row[j] + (u - j) * (row[j + 1] - row[j]))
            assert val == pytest.approx(prof.kValue(kappa, 0).real, abs=3e-5), (n, kappa)


def test_small_galaxy_conserves_flux(renderer):
    psf = GaussianPSF([0.8, 1.0, 0.7])
    img = renderer.render([0.3, 0.2, 0.5], [1.0, 2.5, 0.5], [0.7, 0.4, 1.0], [10.0, 70.0, 0.0],
                          psf, offset=[[0.1, -0.2], [-0.5, 0.3], [0.0, 0.0]])
    assert img.shape == (3, 60, 60) and img.dtype == torch.float32
    np.testing.assert_allclose(img.double().sum(dim=(1, 2)).numpy(), 1.0, atol=1e-4)
    assert float(img.min()) > -1e-6


def test_flux_argument_scales(renderer):
    psf = MoffatPSF(0.9, 3.0)
    one = renderer.render([0.4, 0.4], [1.5, 1.5], [0.6, 0.6], [30.0, 30.0], psf)
    scaled = renderer.render([0.4, 0.4], [1.5, 1.5], [0.6, 0.6], [30.0, 30.0], psf,
                             flux=[2.0, 1000.0])
    torch.testing.assert_close(scaled[0], 2.0 * one[0])
    torch.testing.assert_close(scaled[1], 1000.0 * one[1], rtol=1e-5, atol=1e-5)


def test_offset_moves_centroid(renderer):
    psf = GaussianPSF(0.8)
    offsets = np.array([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.45]])
    img = renderer.render([0.2] * 3, [1.0] * 3, [1.0] * 3, [0.0] * 3, psf, offset=offsets)
    for im, (dx, dy) in zip(img.double().numpy(), offsets, strict=True):
        cx, cy, *_ = moments(im)
        assert cx == pytest.approx(29.5 + dx, abs=2e-3)
        assert cy == pytest.approx(29.5 + dy, abs=2e-3)


@pytest.mark.parametrize("pa", [0.0, 30.0, 75.0, 120.0, -40.0])
def test_position_angle_is_counter_clockwise_from_x(renderer, pa):
    img = renderer.render([0.8], [1.0], [0.3], [pa], GaussianPSF(0.3))[0].double().numpy()
    *_, xx, yy, xy = moments(img)
    angle = 0.5 * np.degrees(np.arctan2(2 * xy, xx - yy))
    diff = (angle - pa + 90.0) % 180.0 - 90.0
    assert abs(diff) < 0.5


def test_agrees_with_galsim_including_corners():
    """30 random galaxies and 10 parameter corners against GalSim drawImage."""
    galsim = pytest.importorskip("galsim")
    rng = np.random.default_rng(11)
    count = 30
    n_values = np.array([0.3, 0.5, 1.0, 1.5, 2.5, 4.0, 6.2])
    gal = {
        "r50": np.exp(rng.uniform(np.log(0.05), np.log(2.0), count)),
        "n": rng.choice(n_values, count),
        "q": rng.uniform(0.2, 1.0, count),
        "pa": rng.uniform(0.0, 180.0, count),
    }
    corners = np.array([  # r50, n, q
        [5.0, 0.3, 0.1], [5.0, 1.0, 0.1], [5.0, 4.0, 1.0], [2.0, 4.0, 0.2], [1.0, 6.2, 0.5],
        [3.0, 2.5, 0.15], [0.05, 6.2, 1.0], [0.05, 0.3, 0.1], [4.0, 1.0, 1.0], [2.0, 1.0, 0.1],
    ])
    for key, col in zip(("r50", "n", "q"), corners.T, strict=True):
        gal[key] = np.concatenate([gal[key], col])
    total = count + len(corners)
    gal["pa"] = np.concatenate([gal["pa"], rng.uniform(0, 180, len(corners))])
    offset = rng.uniform(-0.5, 0.5, (total, 2))
    fwhm = rng.uniform(0.6, 1.3, total)
    beta = rng.uniform(2.5, 5.0, total)
    ours = SersicRenderer(size=60, pixel_scale=PIX).render(
        gal["r50"], gal["n"], gal["q"], gal["pa"], MoffatPSF(fwhm, beta), offset=offset)
    ours = ours.double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(total):
            prof = galsim.Sersic(float(gal["n"][i]), half_light_radius=float(gal["r50"][i]))
            prof = prof.shear(q=float(gal["q"][i]), beta=float(gal["pa"][i]) * galsim.degrees)
            conv = galsim.Convolve(prof, galsim.Moffat(float(beta[i]), fwhm=float(fwhm[i])))
            ref = conv.drawImage(nx=60, ny=60, scale=PIX, offset=tuple(offset[i])).array
            flux_err = abs(ours[i].sum() / ref.sum() - 1)
            pix_err = np.abs(ours[i] - ref).max() / ref.max()
            assert flux_err < FLUX_TOL, (i, flux_err)
            assert pix_err < PIXEL_TOL, (i, pix_err)


def test_extreme_wraparound_corner_matches_large_fft():
    """A huge, flat, high-n galaxy (light far beyond the FFT box) against a 640 FFT."""
    args = ([5.0, 4.0], [6.2, 0.3], [0.1, 0.15], [33.0, 100.0], MoffatPSF([0.7, 1.2], [2.5, 4.0]))
    ours = SersicRenderer(size=60).render(*args, offset=[[0.2, 0.1], [-0.3, 0.4]])
    ref = SersicRenderer(size=60, fft_size=640, fold=1.0).render(
        *args, offset=[[0.2, 0.1], [-0.3, 0.4]])
    flux_err = (ours.double().sum(dim=(1, 2)) / ref.double().sum(dim=(1, 2)) - 1).abs()
    pix_err = (ours - ref).abs().amax(dim=(1, 2)) / ref.amax(dim=(1, 2))
    assert torch.all(flux_err < FLUX_TOL), flux_err
    assert torch.all(pix_err < PIXEL_TOL), pix_err


def test_larger_stamp_is_consistent_with_small_one(renderer):
    args = ([0.6, 2.0], [1.0, 4.0], [0.5, 0.8], [15.0, 95.0], MoffatPSF([0.8, 1.1], [3.0, 2.5]))
    offset = [[0.25, -0.1], [-0.4, 0.35]]
    small = renderer.render(*args, offset=offset)
    big = SersicRenderer(size=100).render(*args, offset=offset)
    assert big.shape == (2, 100, 100)
    diff = (big[:, 20:80, 20:80] - small).abs().amax(dim=(1, 2)) / small.amax(dim=(1, 2))
    assert torch.all(diff < 1e-4), diff
    one = render_sersic([1.0], [1.0], [0.7], [0.0], GaussianPSF(1.0), size=33)
    assert one.shape == (1, 33, 33)


def test_render_sersic_and_broadcast_psf():
    img = render_sersic([0.5, 0.5], [2.0, 2.0], [0.5, 0.5], [10.0, 10.0], MoffatPSF(1.0, 3.5))
    assert img.shape == (2, 60, 60) and img.dtype == torch.float32
    torch.testing.assert_close(img[0], img[1])


def test_invalid_values_are_clamped_not_raised(renderer):
    r50 = [np.nan, -1.0, 0.5, 0.5, 0.5]
    n = [1.0, 1.0, 9.0, 1.0, np.nan]
    q = [0.5, 0.5, 0.5, 1.7, 0.5]
    pa = [0.0, 0.0, 0.0, 0.0, np.nan]
    img = renderer.render(r50, n, q, pa, GaussianPSF(1.0))
    assert torch.isfinite(img).all()
    ok = valid_profile_parameters(r50, n, q, pa)
    assert ok.tolist() == [False, False, False, False, False]
    assert valid_profile_parameters([0.5, 3.0], [1.0, 6.2], [1.0, 0.2]).tolist() == [True, True]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"r50": [-0.5, 1.0]}, "r50"),
        ({"n": [1.0, 7.0]}, "n "),
        ({"q": [0.5, 0.0]}, "q "),
        ({"r50": [0.5, 0.5, 0.5]}, "shape mismatch"),
    ],
)
def test_strict_bad_input_raises_naming_argument(renderer, kwargs, word):
    args = {"r50": [0.5, 1.0], "n": [1.0, 2.0], "q": [0.5, 0.7], "pa": [0.0, 10.0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        renderer.render(args["r50"], args["n"], args["q"], args["pa"], GaussianPSF(1.0),
                        strict=True)


def test_structural_errors_raise(renderer):
    with pytest.raises(ValueError, match="psf has length 3"):
        renderer.render([0.5, 0.6], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], GaussianPSF([1, 1, 1]))
    with pytest.raises(ValueError, match="offset"):
        renderer.render([0.5, 0.6], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], GaussianPSF(1.0),
                        offset=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="size"):
        SersicRenderer(size=4)
    with pytest.raises(ValueError, match="r50"):
        renderer.render(np.ones((2, 2)), 1.0, 1.0, 0.0, GaussianPSF(1.0))


def test_num_threads_is_restored():
    before = torch.get_num_threads()
    renderer = SersicRenderer(size=20, num_threads=1)
    img = renderer.render([0.3], [1.0], [1.0], [0.0], GaussianPSF(0.8))
    assert img.shape == (1, 20, 20)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        SersicRenderer(num_threads=0)


def test_minimal_protocol_psf_and_large_offsets(renderer):
    """A PSF with only kvalue/__len__ works; offsets beyond half a pixel are honoured."""

    class Minimal:
        def __init__(self, fwhm):
            self.inner = MoffatPSF(fwhm, 3.0)

        def kvalue(self, kx, ky):
            return self.inner.kvalue(kx, ky)

        def __len__(self):
            return len(self.inner)

    args = ([1.0, 0.5], [2.0, 1.0], [0.5, 0.8], [30.0, 120.0])
    offset = [[8.3, -5.2], [-12.0, 3.4]]
    ref = renderer.render(*args, MoffatPSF([0.9, 1.1], 3.0), offset=offset)
    got = renderer.render(*args, Minimal([0.9, 1.1]), offset=offset)
    assert float((got - ref).abs().max() / ref.max()) < 1e-4
    for im, (dx, dy) in zip(ref.double().numpy(), offset, strict=True):
        cx, cy, *_ = moments(im)
        assert abs(cx - (29.5 + dx)) < 0.3 and abs(cy - (29.5 + dy)) < 0.3
