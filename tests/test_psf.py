"""Tests of the batched PSFs (lumos.psf)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gamma, kv

from lumos.instrument import PIXEL_SCALE
from lumos.profiles import SersicRenderer, draw_psf
from lumos.psf import BasisImagePSF, GaussianPSF, ImagePSF, MoffatPSF

PIX = PIXEL_SCALE


def moffat_ft(k: np.ndarray, fwhm: float, beta: float) -> np.ndarray:
    """Reference Moffat transform from SciPy's Bessel function."""
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    x = np.maximum(k * alpha, 1e-12)
    nu = beta - 1
    return 2 * (x / 2) ** nu * kv(nu, x) / gamma(nu)


def test_moffat_kvalue_matches_bessel_formula():
    fwhm = np.array([0.6, 0.9, 1.3, 1.0])
    beta = np.array([2.5, 3.3, 5.0, 4.21])
    psf = MoffatPSF(fwhm, beta)
    k = torch.linspace(0.0, 25.0, 301, dtype=torch.float64)
    got = psf.kvalue(k[None, :], torch.zeros(1, 1)).numpy()
    assert got.shape == (4, 301)
    for i in range(4):
        ref = moffat_ft(k.numpy(), fwhm[i], beta[i])
        ref[0] = 1.0
        np.testing.assert_allclose(got[i], ref, atol=2e-5)
    assert np.all(got[:, 0] == 1.0)


def test_gaussian_kvalue_and_radial_agree():
    psf = GaussianPSF([0.7, 1.2])
    sigma = np.array([0.7, 1.2]) / 2.3548200450309493
    kx = torch.tensor([0.0, 1.0, 3.0])
    ky = torch.tensor([0.0, 2.0, -1.0])
    got = psf.kvalue(kx[None], ky[None]).numpy()
    k2 = (kx**2 + ky**2).numpy()
    np.testing.assert_allclose(got, np.exp(-0.5 * sigma[:, None] ** 2 * k2[None]), rtol=1e-5)
    radial = psf.kvalue_radial(torch.sqrt(torch.tensor(k2))).numpy()
    np.testing.assert_allclose(radial, got, rtol=1e-5)


@pytest.mark.parametrize("psf", [MoffatPSF([0.8, 1.1], [5.0, 4.0]), GaussianPSF([0.7, 1.3])])
def test_drawn_psf_sums_to_one_and_is_centred(psf):
    img = draw_psf(psf, 64, PIX)
    assert img.shape == (2, 64, 64) and img.dtype == torch.float32
    np.testing.assert_allclose(img.sum(dim=(1, 2)).numpy(), 1.0, atol=2e-5)
    y, x = np.mgrid[0:64, 0:64]
    for im in img.double().numpy():
        assert abs((im * x).sum() / im.sum() - 31.5) < 1e-3
        assert abs((im * y).sum() / im.sum() - 31.5) < 1e-3


def test_drawn_moffat_matches_galsim():
    galsim = pytest.importorskip("galsim")
    img = draw_psf(MoffatPSF(0.7, 2.5), 40, PIX)[0].double().numpy()
    ref = galsim.Moffat(2.5, fwhm=0.7).drawImage(nx=40, ny=40, scale=PIX).array
    assert np.abs(img - ref).max() < 1e-3 * ref.max()


def test_kmax_bounds_transform():
    psf = MoffatPSF([0.6, 1.3, 1.0], [2.5, 5.0, 3.0])
    kmax = psf.kmax(1e-4)
    vals = psf.kvalue(kmax[:, None] * 1.001, torch.zeros(1, 1))[:, 0]
    assert torch.all(vals < 1.05e-4)
    vals_in = psf.kvalue(kmax[:, None] * 0.97, torch.zeros(1, 1))[:, 0]
    assert torch.all(vals_in > 1e-4)
    g = GaussianPSF([0.8])
    val = float(g.kvalue(g.kmax(1e-5)[:, None], torch.zeros(1, 1)))
    assert val == pytest.approx(1e-5, rel=1e-3)


def test_image_psf_normalised_at_k0():
    rng = np.random.default_rng(4)
    images = rng.random((3, 15, 17)) + 0.1
    psf = ImagePSF(images * 7.0, PIX)
    assert len(psf) == 3
    k0 = psf.kvalue(torch.zeros(1, 1), torch.zeros(1, 1))
    np.testing.assert_allclose(k0.real.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(k0.imag.numpy(), 0.0, atol=1e-6)
    grid = psf.kvalue_grid(torch.tensor([0.0, 1.0]), torch.tensor([0.0, -2.0]))
    direct = psf.kvalue(torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None],
                        torch.tensor([[0.0, 0.0], [-2.0, -2.0]])[None])
    np.testing.assert_allclose(grid.numpy(), direct.numpy(), atol=1e-5)


def test_image_psf_reproduces_moffat_render():
    moffat = MoffatPSF(1.0, 3.0)
    image = draw_psf(moffat, 48, PIX)[0]
    renderer = SersicRenderer(size=40)
    args = ([0.1, 0.8], [1.0, 4.0], [0.5, 0.8], [20.0, 110.0])
    offset = [[0.2, -0.3], [-0.45, 0.1]]
    ref = renderer.render(*args, moffat, offset=offset)
    got = renderer.render(*args, ImagePSF(image, PIX), offset=offset)
    peak = ref.amax(dim=(1, 2))
    err = (got - ref).abs().amax(dim=(1, 2)) / peak
    assert torch.all(err < 2e-3), err


def test_basis_image_psf_renders_like_image_psf_of_its_images():
    rng = np.random.default_rng(8)
    base = draw_psf(MoffatPSF(1.0, 3.0), 33, PIX)[0].double().numpy()
    basis = np.stack([base, 0.05 * rng.standard_normal((33, 33)), np.roll(base, 1, axis=1)])
    coefficients = np.array([[1.0, 0.3, 0.0], [1.0, -0.2, 0.5], [0.4, 0.0, 0.6]])
    psf = BasisImagePSF(basis, coefficients, PIX)
    images = psf.images()
    np.testing.assert_allclose(images.sum(dim=(1, 2)).numpy(), 1.0, rtol=1e-12)
    renderer = SersicRenderer(size=40)
    args = ([0.2, 0.6, 1.0], [1.0, 2.5, 0.5], [0.5, 0.9, 0.3], [20.0, 110.0, 60.0])
    offset = [[0.2, -0.3], [-0.45, 0.1], [0.0, 0.3]]
    ref = renderer.render(*args, ImagePSF(images, PIX), offset=offset)
    got = renderer.render(*args, psf, offset=offset)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)
    assert len(psf[torch.tensor([1])]) == 1


def test_psf_indexing_and_broadcast():
    psf = MoffatPSF(0.9, [2.5, 3.0, 4.0])
    assert len(psf) == 3
    sub = psf[torch.tensor([2, 0])]
    assert len(sub) == 2 and float(sub.beta[0]) == 4.0
    assert len(MoffatPSF(1.0, 3.0)) == 1


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: MoffatPSF(0.8, 0.9), "beta"),
        (lambda: MoffatPSF(-1.0, 3.0), "fwhm"),
        (lambda: MoffatPSF([0.8, 0.9], [3.0, 3.0, 3.0]), "mismatch"),
        (lambda: GaussianPSF(float("nan")), "fwhm"),
        (lambda: ImagePSF(np.zeros((5, 5)), PIX), "sum"),
        (lambda: ImagePSF(np.ones(5), PIX), "shape"),
        (lambda: ImagePSF(np.ones((5, 5)), -1.0), "pixel_scale"),
    ],
)
def test_bad_psf_input_raises(make, word):
    with pytest.raises(ValueError, match=word):
        make()
