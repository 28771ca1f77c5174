"""Weight maps and masks: reading them, the flags on both paths, and the classical noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from lumos.bands import get_band
from lumos.catalogue import read_catalogue
from lumos.cli import main
from lumos.errors import LumosError
from lumos.flags import Flag
from lumos.imageio import ImageMeta
from lumos.instrument import PIXEL_SCALE
from lumos.measure import make_stamp_batch, measure_image
from lumos.network import LumosNet, NetworkConfig
from lumos.pixelmaps import bad_pixels, read_pixel_map, variance_from_weight
from lumos.profiles import render_sersic
from lumos.psf import MoffatPSF

SKY = 400.0  # electrons per pixel
READ_NOISE = 5.0
SHAPE = (260, 300)


@pytest.fixture(scope="module")
def scene():
    """Six faint galaxies on a flat sky with Gaussian noise of known variance."""
    rng = np.random.default_rng(21)
    ny, nx = SHAPE
    x = np.array([60.3, 150.7, 240.2, 60.6, 150.1, 240.5])
    y = np.array([70.4, 69.8, 70.1, 190.2, 189.6, 190.7])
    n = x.size
    cat = Table({"id": np.arange(n), "x": x, "y": y, "r50": np.full(n, 0.5),
                 "sersic_n": np.full(n, 1.0), "q": np.full(n, 0.7), "pa": np.full(n, 30.0),
                 "i_mag": np.full(n, 22.0)})  # fmt: skip
    image = np.full(SHAPE, SKY)
    stamps = render_sersic(cat["r50"], cat["sersic_n"], cat["q"], cat["pa"],
                           MoffatPSF(0.9, 3.5), size=60).double().numpy() * 3000.0
    for i in range(n):
        i0, j0 = int(round(x[i])) - 30, int(round(y[i])) - 30
        image[j0:j0 + 60, i0:i0 + 60] += stamps[i]
    variance = SKY + READ_NOISE**2 + np.clip(image - SKY, 0, None)
    image = image + rng.normal(size=SHAPE) * np.sqrt(variance)
    meta = ImageMeta(band=get_band("NB685"), psf_fwhm=0.9, psf_beta=3.5, pixel_scale=PIXEL_SCALE,
                     gain=1.0, read_noise=READ_NOISE)  # fmt: skip
    return image.astype(np.float32), read_catalogue(cat), meta


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LumosNet(NetworkConfig.tiny())


def test_masked_core_reaches_the_network_path(scene, tiny_model):
    """The mask zeroes the network's stamp pixels and flags MASKED_CORE (issue 14 item 13)."""
    image, cat, meta = scene
    mask = np.zeros(SHAPE, dtype=bool)
    xi, yi = int(round(cat["x"][1])), int(round(cat["y"][1]))
    mask[yi - 1 : yi + 2, xi - 1 : xi + 2] = True  # core of galaxy 1
    xi, yi = int(round(cat["x"][4])), int(round(cat["y"][4]))
    mask[yi + 20, xi + 20] = True  # far from galaxy 4: zeroed, but no light of it there
    mask[yi - 12 : yi + 13, xi + 10 : xi + 13] = True  # a bad patch 10-12 pixels from galaxy 3
    cat = cat.copy()
    cat["x"][3], cat["y"][3], cat["r50"][3] = cat["x"][4], cat["y"][4], 2.0
    batch = make_stamp_batch(image, cat, meta, mask=mask)
    assert float(batch.pixels[1, 28:32, 28:32].abs().min()) == 0.0
    assert float(batch.pixels[0].abs().min()) > 0.0
    out = measure_image(image, cat, meta, model=tiny_model, mask=mask, workers=1)
    flags = np.asarray(out["flags"])
    assert flags[1] & Flag.MASKED_CORE
    assert not flags[4] & (Flag.MASKED | Flag.MASKED_CORE)  # only far from its light
    assert flags[3] & Flag.MASKED and not flags[3] & Flag.MASKED_CORE  # in its light
    assert not flags[0] & (Flag.MASKED | Flag.MASKED_CORE)
    # a weight of 0 is a bad pixel too, on both paths
    weight = np.where(mask, 0.0, 1.0 / (SKY + READ_NOISE**2)).astype(np.float32)
    for method in ("lumos", "aperture"):
        by_weight = measure_image(image, cat, meta, method=method, model=tiny_model,
                                  weight=weight, workers=1)  # fmt: skip
        assert by_weight["flags"][1] & Flag.MASKED_CORE, method
        assert by_weight["flags"][3] & Flag.MASKED, method
        assert by_weight["flags"][4] & Flag.MASKED == 0, method
        assert by_weight["flags"][0] & (Flag.MASKED | Flag.MASKED_CORE) == 0, method


@pytest.mark.parametrize("method", ["aperture", "modelfit", "weighted"])
def test_classical_methods_take_their_noise_from_the_weights(scene, method):
    image, cat, meta = scene
    true_weight = np.full(SHAPE, 1.0 / (SKY + READ_NOISE**2), dtype=np.float32)
    plain = measure_image(image, cat, meta, method=method, workers=1)
    exact = measure_image(image, cat, meta, method=method, weight=true_weight, workers=1)
    # the true weights describe the same noise as the annulus estimate
    ratio = np.asarray(exact["flux_err"]) / np.asarray(plain["flux_err"])
    np.testing.assert_allclose(ratio, 1.0, atol=0.1)
    # four times the variance in the lower half (y < 130): twice the sky noise there
    noisy = true_weight.copy()
    noisy[:130] /= 4.0
    out = measure_image(image, cat, meta, method=method, weight=noisy, workers=1)
    err = np.asarray(out["flux_err"]) / np.asarray(exact["flux_err"])
    assert np.all(err[:3] > 1.5), err
    np.testing.assert_allclose(err[3:], 1.0, atol=0.02)
    assert np.all(np.isfinite(out["flux"]))


def test_bad_pixels_and_variance_from_weight():
    weight = np.array([[1.0, 0.0], [np.nan, 4.0]])
    mask = np.array([[0, 0], [0, 8]])
    bad = bad_pixels((2, 2), mask, weight)
    np.testing.assert_array_equal(bad, [[False, True], [True, True]])
    assert bad_pixels((2, 2)) is None
    np.testing.assert_array_equal(bad_pixels((2, 2), np.array([[np.nan, 0], [0, 0]])),
                                  [[True, False], [False, False]])  # fmt: skip
    np.testing.assert_allclose(variance_from_weight(weight, 2.0), [[4.0, 0.0], [0.0, 1.0]])
    with pytest.raises(LumosError, match="weight map shape"):
        bad_pixels((3, 2), None, weight)


def test_read_pixel_map_checks_the_shape(tmp_path):
    path = tmp_path / "w.fits"
    fits.writeto(path, np.ones((4, 5), dtype=np.float32))
    assert read_pixel_map(path, (4, 5), "weight map").shape == (4, 5)
    with pytest.raises(LumosError, match="has shape 5 x 4") as info:
        read_pixel_map(path, (5, 4), "weight map")
    assert "\n" not in str(info.value)
    with pytest.raises(LumosError, match="mask file not found"):
        read_pixel_map(tmp_path / "none.fits", (4, 5), "mask")


@pytest.fixture(scope="module")
def files(scene, tmp_path_factory):
    image, cat, _ = scene
    directory = tmp_path_factory.mktemp("maps")
    header = fits.Header({"FILTER": "NB685", "PSFFWHM": 0.9, "GAIN": 1.0, "RDNOISE": 5.0})
    fits.writeto(directory / "image.fits", image, header)
    cat.write(directory / "cat.fits")
    fits.writeto(directory / "weight.fits", np.full(SHAPE, 1 / 425.0, dtype=np.float32))
    mask = np.zeros(SHAPE, dtype=np.int16)
    mask[int(round(cat["y"][2])), int(round(cat["x"][2]))] = 4
    fits.writeto(directory / "mask.fits", mask)
    fits.writeto(directory / "small.fits", np.ones((100, 100), dtype=np.float32))
    return directory


def test_weight_and_mask_on_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "out.fits"
    status = main(["measure", str(files / "image.fits"), str(files / "cat.fits"), "--out",
                   str(out), "--method", "aperture", "--weight", str(files / "weight.fits"),
                   "--mask", str(files / "mask.fits")])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    table = Table.read(out)
    assert table["flags"][2] & Flag.MASKED_CORE
    assert table.meta["WGHTFILE"] == "weight.fits" and table.meta["MASKFILE"] == "mask.fits"


@pytest.mark.parametrize(
    ("option", "message"),
    [("--weight", "weight map small.fits has shape 100 x 100"),
     ("--mask", "mask small.fits has shape 100 x 100")],
)
def test_weight_or_mask_of_the_wrong_shape_is_a_one_line_error(files, tmp_path, capsys,
                                                               option, message):  # fmt: skip
    out = tmp_path / "out.fits"
    status = main(["measure", str(files / "image.fits"), str(files / "cat.fits"), "--out",
                   str(out), "--method", "aperture", option, str(files / "small.fits")])
    err = capsys.readouterr().err
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_manifest_file_columns_and_one_image_options(files, tmp_path, capsys):
    from lumos.manifest import _jobs

    manifest = Table({"path": ["image.fits", "image.fits"], "weight": ["weight.fits", ""],
                      "mask": ["mask.fits", ""], "psf": ["", "/abs/psf.fits"]})  # fmt: skip
    jobs = _jobs(manifest, files, str(files / "cat.fits"))
    assert jobs[0].files == {"weight_path": str(files / "weight.fits"),
                             "mask_path": str(files / "mask.fits")}  # fmt: skip
    assert jobs[1].files == {"psf_path": "/abs/psf.fits"}
    path = tmp_path / "manifest.ecsv"
    manifest.write(path)
    status = main(["measure", str(path), str(files / "cat.fits"), "--out",
                   str(tmp_path / "o.fits"), "--mask", str(files / "mask.fits")])
    err = capsys.readouterr().err
    assert status == 1 and "manifest's psf, weight and mask columns" in err
