"""PSFEx models and PSF images as the PSF of a measurement (lumos.psfex, lumos.psfsource)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from lumos.cli import main
from lumos.errors import LumosError
from lumos.profiles import draw_psf
from lumos.psf import BasisImagePSF, ImagePSF, MoffatPSF
from lumos.psfex import is_psfex_file, read_psfex
from lumos.psfsource import ImageSource, PSFExSource, fwhm_pixels, load_psf

PIX = 0.262
DECAM = "decam-testcase4/calib"


def _decam_psfex(shared_data):
    files = sorted((shared_data / DECAM).rglob("*-psfex.fits"))
    if not files:
        pytest.skip("no DECam PSFEx files in ../shared/data")
    return files


def _galsim_hdu(path, sampling=None):
    """The PSFEx table with the keywords GalSim requires (Legacy Surveys files omit some)."""
    with fits.open(path) as hdul:
        hdu = hdul[1].copy()
    t, h, w = hdu.data.field(0)[0].shape
    hdu.header.update({"POLNAXIS": 2, "PSFNAXIS": 3, "PSFAXIS1": w, "PSFAXIS2": h,
                       "PSFAXIS3": t})  # fmt: skip
    if sampling is not None:
        hdu.header["PSF_SAMP"] = sampling
    return hdu


def _gaussian(h, w, cx, cy, sx, sy=None):
    sy = sx if sy is None else sy
    y, x = np.mgrid[0:h, 0:w]
    return np.exp(-0.5 * ((x - cx) ** 2 / sx**2 + (y - cy) ** 2 / sy**2))


def write_psfex(path, basis, zero=(101.0, 81.0), scale=(60.0, 50.0), degree=2,
                sampling=1.0):  # fmt: skip
    """Write a PSFEx file (PSF_DATA table) with the given basis (T, H, W)."""
    t, h, w = basis.shape
    col = fits.Column(name="PSF_MASK", format=f"{basis.size}E", dim=f"({w},{h},{t})",
                      array=basis[None].astype(np.float32))  # fmt: skip
    hdu = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
    hdu.header.update({
        "POLNAXIS": 2, "POLGRP1": 1, "POLGRP2": 1, "POLNAME1": "X_IMAGE", "POLNAME2": "Y_IMAGE",
        "POLZERO1": zero[0], "POLZERO2": zero[1], "POLSCAL1": scale[0], "POLSCAL2": scale[1],
        "POLNGRP": 1, "POLDEG1": degree, "PSFNAXIS": 3, "PSFAXIS1": w, "PSFAXIS2": h,
        "PSFAXIS3": t, "PSF_SAMP": sampling,
    })  # fmt: skip
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path


def strong_basis(size=25, sigma=2.0):
    """A degree-2 basis whose PSF moves and widens strongly with position."""
    c = size // 2
    g = _gaussian(size, size, c, c, sigma)
    gx = _gaussian(size, size, c + 0.5, c, sigma) - _gaussian(size, size, c - 0.5, c, sigma)
    gy = _gaussian(size, size, c, c + 0.5, sigma) - _gaussian(size, size, c, c - 0.5, sigma)
    wide = _gaussian(size, size, c, c, 1.3 * sigma, sigma) - g
    tall = _gaussian(size, size, c, c, sigma, 1.3 * sigma) - g
    # order (x^i y^j, j slow): 1, x, x^2, y, xy, y^2
    return np.stack([g, 0.8 * gx, 0.5 * wide, 0.8 * gy, 0.2 * wide, 0.5 * tall])


def test_decam_psfex_agrees_with_galsim_at_several_positions(shared_data):
    pytest.importorskip("galsim")
    import galsim
    import galsim.des

    positions = [(0.0, 0.0), (124.6, 97.2), (240.0, 10.5), (15.3, 180.0)]
    for path in _decam_psfex(shared_data)[:4]:
        model = read_psfex(path)
        assert model.degree == 2 and model.basis.shape == (6, 63, 63)
        ref = galsim.des.DES_PSFEx(_galsim_hdu(path))
        x, y = np.array(positions).T
        ours = model.evaluate(x, y)
        np.testing.assert_allclose(ours.sum(axis=(1, 2)), 1.0, rtol=1e-12)
        for i, (xi, yi) in enumerate(positions):
            theirs = ref.getPSFArray(galsim.PositionD(xi + 1, yi + 1)).astype(float)
            theirs /= theirs.sum()
            assert np.abs(ours[i] - theirs).max() < 1e-4 * theirs.max()


def test_position_convention_and_resampling_match_galsim(tmp_path):
    """A model varying strongly with position: 0-based x is PSFEx's X_IMAGE - 1, and
    PSF_SAMP != 1 is resampled to the image grid as GalSim draws it (no extra pixel)."""
    pytest.importorskip("galsim")
    import galsim
    import galsim.des

    positions = [(70.0, 60.0), (101.3, 80.7), (130.0, 95.5)]
    x, y = np.array(positions).T
    for sampling in (1.0, 0.6):
        path = write_psfex(tmp_path / f"s{sampling}.psf", strong_basis(), sampling=sampling)
        ours = read_psfex(path).evaluate(x, y)
        ref = galsim.des.DES_PSFEx(str(path))
        size = ours.shape[1]
        for i, (xi, yi) in enumerate(positions):
            psf = ref.getPSF(galsim.PositionD(xi + 1, yi + 1))
            theirs = psf.drawImage(nx=size, ny=size, scale=1.0, method="no_pixel").array
            theirs = theirs / theirs.sum()
            assert np.abs(ours[i] - theirs).max() < 1e-4 * theirs.max(), (sampling, i)
            if sampling == 1.0:  # the check would catch a 1-pixel shift of the coordinates
                shifted = ref.getPSFArray(galsim.PositionD(xi, yi))
                assert np.abs(ours[i] - shifted / shifted.sum()).max() > 1e-3 * theirs.max()
    assert ours.shape[1] == 2 * int(12 * 0.6) + 1


def test_psfex_file_not_covering_the_image_is_an_error(tmp_path):
    model = read_psfex(write_psfex(tmp_path / "m.psf", strong_basis()))
    (xl, xh), (yl, yh) = model.valid_range()
    assert (xl, xh) == (101 - 30 - 1, 101 + 30 - 1) and (yl, yh) == (81 - 25 - 1, 81 + 25 - 1)
    with pytest.raises(LumosError, match="does not cover the image"):
        model.check_covers((80, 90))  # x 0..89 but the model starts at x = 70
    covering = replace(model, zero=(45.0, 40.0), scale=(90.0, 80.0))
    covering.check_covers((80, 90))
    with pytest.raises(LumosError, match="does not cover"):
        PSFExSource(model, (80, 90), PIX)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"POLDEG1": 3}, "needs 10 basis images"),
        ({"POLNAME1": "FLUX_AUTO"}, "only models in the image coordinates"),
        ({"POLNGRP": 2}, "one context group"),
        ({"PSF_SAMP": -1.0}, "PSF_SAMP must be positive"),
    ],
)
def test_unusable_psfex_headers_are_one_line_errors(tmp_path, edit, message):
    path = write_psfex(tmp_path / "m.psf", strong_basis())
    with fits.open(path, mode="update") as hdul:
        hdul[1].header.update(edit)
    with pytest.raises(LumosError, match=message) as info:
        read_psfex(path)
    assert "\n" not in str(info.value)


def test_constant_psfex_model_and_file_detection(tmp_path):
    basis = _gaussian(21, 21, 10, 10, 2.0)[None]
    path = write_psfex(tmp_path / "c.psf", basis, degree=0)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["POLNAXIS"] = 0
    model = read_psfex(path)
    assert model.degree == 0
    model.check_covers((5000, 5000))
    img = model.evaluate([0.0, 4000.0], [0.0, 10.0])
    np.testing.assert_allclose(img[0], img[1])
    assert is_psfex_file(path)
    image = tmp_path / "psf.fits"
    fits.writeto(image, basis[0])
    assert not is_psfex_file(image)


def test_basis_psf_transform_is_the_combination_of_the_basis(tmp_path):
    model = read_psfex(write_psfex(tmp_path / "m.psf", strong_basis()))
    x, y = np.array([75.0, 100.0, 128.0]), np.array([60.0, 90.0, 70.0])
    psf = PSFExSource(replace(model, zero=(45.0, 40.0), scale=(300.0, 300.0)), (200, 200),
                      PIX).at(x, y)  # fmt: skip
    kx = torch.linspace(-10.0, 10.0, 9, dtype=torch.float64)
    ky = torch.linspace(-8.0, 11.0, 7, dtype=torch.float64)
    ref = ImagePSF(psf.images(), PIX).kvalue_grid(kx, ky)
    np.testing.assert_allclose(psf.kvalue_grid(kx, ky).numpy(), ref.numpy(), atol=1e-6)
    sub = psf[torch.tensor([2, 0])]
    np.testing.assert_allclose(sub.images().numpy(), psf.images().numpy()[[2, 0]])


def test_psfex_profiles_agree_with_galsim_interpolated_image(shared_data):
    """Sersic x (the PSFEx PSF at each galaxy) drawn by lumos and by GalSim.

    GalSim convolves with an InterpolatedImage of the same PSF image (a high-order Lanczos,
    close to the band-limited interpolation lumos uses) drawn without a second pixel.
    """
    galsim = pytest.importorskip("galsim")
    from lumos.profiles import SersicRenderer

    path = _decam_psfex(shared_data)[1]
    source = PSFExSource(read_psfex(path), (250, 250), PIX)
    rng = np.random.default_rng(3)
    n = 5
    x, y = rng.uniform(0, 250, n), rng.uniform(0, 250, n)
    r50 = np.array([0.1, 0.25, 0.7, 1.2, 0.4])
    sersic_n = np.array([0.5, 4.0, 1.0, 2.5, 1.5])
    q, pa = rng.uniform(0.3, 1.0, n), rng.uniform(0, 180, n)
    offset = rng.uniform(-0.5, 0.5, (n, 2))
    ours = SersicRenderer(size=60, pixel_scale=PIX).render(
        r50, sersic_n, q, pa, source.at(x, y), offset=offset).double().numpy()
    images = source.images(x, y)
    gsp = galsim.GSParams(folding_threshold=1e-4, maxk_threshold=1e-5, kvalue_accuracy=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            gal = galsim.Sersic(float(sersic_n[i]), half_light_radius=float(r50[i]),
                                gsparams=gsp)
            gal = gal.shear(q=float(q[i]), beta=float(pa[i]) * galsim.degrees)
            psf = galsim.InterpolatedImage(galsim.Image(images[i], scale=PIX),
                                           x_interpolant="lanczos15", gsparams=gsp)  # fmt: skip
            ref = galsim.Convolve(gal, psf, gsparams=gsp).drawImage(
                nx=60, ny=60, scale=PIX, offset=tuple(offset[i]), method="no_pixel").array
            assert abs(ours[i].sum() / ref.sum() - 1) < 1e-4, i
            assert np.abs(ours[i] - ref).max() < 5e-4 * ref.max(), i


@pytest.mark.parametrize("size", [31, 32])
def test_psf_image_odd_or_even_is_centred_on_its_geometric_centre(tmp_path, size):
    """A FITS PSF image renders like GalSim's InterpolatedImage of it (same centre)."""
    galsim = pytest.importorskip("galsim")
    from lumos.profiles import SersicRenderer

    c = (size - 1) / 2
    image = _gaussian(size, size, c, c, 1.8, 2.2) + 0.3 * _gaussian(size, size, c + 1, c, 1.2)
    path = tmp_path / "psf.fits"
    fits.writeto(path, image.astype(np.float32))
    source = load_psf(path, (100, 100), PIX)
    assert isinstance(source, ImageSource) and source.kind == "image"
    ours = SersicRenderer(size=40, pixel_scale=PIX).render(
        [0.3], [1.0], [0.7], [30.0], source.at([5.0], [5.0]), offset=[[0.2, -0.1]])[0]
    gsp = galsim.GSParams(folding_threshold=1e-4, maxk_threshold=1e-5, kvalue_accuracy=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gal = galsim.Sersic(1.0, half_light_radius=0.3, gsparams=gsp).shear(
            q=0.7, beta=30.0 * galsim.degrees)
        psf = galsim.InterpolatedImage(galsim.Image(image / image.sum(), scale=PIX),
                                       x_interpolant="lanczos15", gsparams=gsp)  # fmt: skip
        ref = galsim.Convolve(gal, psf, gsparams=gsp).drawImage(
            nx=40, ny=40, scale=PIX, offset=(0.2, -0.1), method="no_pixel").array
    assert np.abs(ours.double().numpy() - ref).max() < 5e-4 * ref.max()


def test_psf_image_of_a_moffat_gives_the_moffat_profiles_and_fwhm(tmp_path):
    from lumos.profiles import render_sersic

    moffat = MoffatPSF(0.9, 3.5)
    image = draw_psf(moffat, 64, PIX)[0].double().numpy()
    path = tmp_path / "moffat.fits"
    fits.writeto(path, image)
    source = load_psf(path, (300, 300), PIX)
    # the FWHM of the pixel-integrated image: a little above the Moffat's own 0.9 arcsec
    assert 0.9 < source.fwhm() < 0.9 * 1.05
    args = ([0.2, 0.8], [1.0, 4.0], [0.6, 0.9], [10.0, 100.0])
    ref = render_sersic(*args, moffat, offset=[[0.1, 0.2], [-0.3, 0.4]], pixel_scale=PIX)
    got = render_sersic(*args, source.at([1.0, 2.0], [3.0, 4.0]),
                        offset=[[0.1, 0.2], [-0.3, 0.4]], pixel_scale=PIX)  # fmt: skip
    err = (got - ref).abs().amax(dim=(1, 2)) / ref.amax(dim=(1, 2))
    assert torch.all(err < 2e-3), err


def test_fwhm_pixels_of_a_gaussian():
    sigma = 1.7
    image = _gaussian(41, 41, 20, 20, sigma)
    assert fwhm_pixels(image) == pytest.approx(2.3548 * sigma, rel=0.01)


def test_psf_image_with_its_own_pixel_scale_and_bad_psf_images(tmp_path):
    image = _gaussian(21, 21, 10, 10, 3.0)
    path = tmp_path / "psf.fits"
    hdu = fits.PrimaryHDU(image)
    hdu.header["PIXSCALE"] = 0.1
    hdu.writeto(path)
    source = load_psf(path, (50, 50), PIX)
    assert source.pixel_scale == 0.1
    assert source.fwhm() == pytest.approx(2.3548 * 3.0 * 0.1, rel=0.02)
    bad = tmp_path / "nan.fits"
    fits.writeto(bad, np.full((9, 9), np.nan))
    with pytest.raises(LumosError, match="NaN"):
        load_psf(bad, (50, 50), PIX)
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1]}))]).writeto(table)
    with pytest.raises(LumosError, match="neither a PSFEx model nor a FITS image"):
        load_psf(table, (50, 50), PIX)
    with pytest.raises(LumosError, match="not found"):
        load_psf(tmp_path / "missing.fits", (50, 50), PIX)


def test_off_image_and_nan_positions_use_the_psf_at_the_edge(tmp_path):
    model = replace(read_psfex(write_psfex(tmp_path / "m.psf", strong_basis())),
                    zero=(50.0, 50.0), scale=(100.0, 100.0))  # fmt: skip
    source = PSFExSource(model, (100, 100), PIX)
    psf = source.at([np.nan, -500.0, 99.0], [np.nan, 10.0, 10.0])
    images = psf.images().numpy()
    assert np.all(np.isfinite(images))
    np.testing.assert_allclose(images[0], source.images([49.5], [49.5])[0])
    np.testing.assert_allclose(images[1], source.images([0.0], [10.0])[0])


# ---------------------------------------------------------------- measurement with a PSF


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    from lumos.field import simulate_field

    directory = tmp_path_factory.mktemp("psf-field")
    simulate_field(n_galaxies=12, shape=(200, 220), seed=5).write(directory)
    return directory


def test_profile_channel_and_classical_methods_use_the_given_psf(field, tmp_path):
    from lumos.catalogue import read_catalogue
    from lumos.imageio import image_metadata, read_image
    from lumos.measure import make_stamp_batch, measure_image
    from lumos.profiles import render_sersic
    from lumos.stamps import STAMP_SIZE, cut_stamps

    image, header, _ = read_image(field / "image.fits")
    meta = image_metadata(header)
    catalogue = read_catalogue(field / "catalogue.fits")
    wide = draw_psf(MoffatPSF(2.0 * meta.psf_fwhm, 3.0), 64, meta.pixel_scale)[0].numpy()
    source = ImageSource(wide, meta.pixel_scale)
    batch = make_stamp_batch(image, catalogue, meta, psf=source)
    plain = make_stamp_batch(image, catalogue, meta)
    cut = cut_stamps(image, catalogue["x"], catalogue["y"], size=STAMP_SIZE)
    expected = render_sersic(np.asarray(catalogue["r50"]), np.asarray(catalogue["sersic_n"]),
                             np.asarray(catalogue["q"]), np.asarray(catalogue["pa"]),
                             ImagePSF(wide, meta.pixel_scale), offset=cut.offset,
                             size=STAMP_SIZE, pixel_scale=meta.pixel_scale)  # fmt: skip
    torch.testing.assert_close(batch.profile, expected, atol=2e-5, rtol=0)
    assert (batch.profile - plain.profile).abs().max() > 1e-3
    # the classical methods draw their profiles (hence apertures) with it too
    one = measure_image(image, catalogue, meta, method="aperture", workers=1)
    two = measure_image(image, catalogue, meta, method="aperture", workers=1, psf=source)
    assert two.meta["PSFTYPE"] == "image" and one.meta["PSFTYPE"] == "moffat"
    assert np.nanmedian(np.asarray(two["flux_err"]) / np.asarray(one["flux_err"])) > 1.2


def test_measure_with_a_psfex_file_on_the_command_line(field, tmp_path, capsys):
    model = replace(read_psfex(write_psfex(tmp_path / "m.psf", strong_basis(31, 1.5))),
                    zero=(110.0, 100.0), scale=(220.0, 200.0))  # fmt: skip
    write_psfex(tmp_path / "ok.psf", model.basis, zero=model.zero, scale=model.scale)
    out = tmp_path / "out.fits"
    status = main(["measure", str(field / "image.fits"), str(field / "catalogue.fits"), "--out",
                   str(out), "--method", "aperture", "--psf", str(tmp_path / "ok.psf")])
    assert status == 0, capsys.readouterr().err
    table = Table.read(out)
    assert table.meta["PSFTYPE"] == "psfex" and table.meta["PSFFILE"] == "ok.psf"
    assert 0.5 < table.meta["PSFFWHM"] < 2.0
    assert np.isfinite(table["flux"]).sum() >= 6


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("psfex not covering", "does not cover the image"),
        ("psf and fwhm", "either --psf FILE or --psf-fwhm"),
        ("psf missing", "PSF file not found"),
    ],
)
def test_bad_psf_input_one_line_error_no_output(field, tmp_path, capsys, case, message):
    psf = write_psfex(tmp_path / "small.psf", strong_basis())  # valid for x 70..130 only
    argv = ["measure", str(field / "image.fits"), str(field / "catalogue.fits"), "--out",
            str(tmp_path / "out.fits"), "--method", "aperture", "--psf", str(psf)]
    if case == "psf and fwhm":
        argv += ["--psf-fwhm", "0.9"]
    elif case == "psf missing":
        argv[-1] = str(tmp_path / "missing.psf")
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out.fits").exists()


def test_basis_psf_rejects_non_positive_sums():
    with pytest.raises(ValueError, match="positive sum"):
        BasisImagePSF(np.stack([np.ones((5, 5)), np.ones((5, 5))]), [[1.0, -1.0]], PIX)
