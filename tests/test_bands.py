import json

import numpy as np
import pytest

from lumos import bands


def test_forty_paus_bands_with_centres_and_trays():
    names = list(bands.PAUS_BANDS)
    assert len(names) == 40
    assert names[0] == "NB455" and names[-1] == "NB845"
    centres = np.array([b.wavelength for b in bands.PAUS_BANDS.values()])
    np.testing.assert_allclose(np.diff(centres), 100.0)
    assert centres[0] == 4550.0
    assert all(b.fwhm == 130.0 for b in bands.PAUS_BANDS.values())


@pytest.mark.parametrize(
    "name, tray, exptime",
    [("NB455", 0, 70), ("NB525", 0, 70), ("NB535", 1, 80), ("NB605", 1, 80),
     ("NB615", 2, 90), ("NB685", 2, 90), ("NB695", 3, 110), ("NB775", 4, 130), ("NB845", 4, 130)],
)
def test_tray_exposure_times(name, tray, exptime):
    band = bands.get_band(name)
    assert band.tray == tray
    assert band.exposure_time == exptime


def test_every_band_round_trips_through_the_index():
    seen = set()
    for name in bands.PAUS_BANDS:
        for state in (0, 1):
            idx = bands.band_index(name, state)
            assert 0 <= idx < 80
            band, back_state = bands.band_from_index(idx)
            assert band.name == name and back_state == state
            seen.add(idx)
    assert seen == set(range(80))


def test_lookup_is_case_insensitive_and_unknown_lists_valid_names():
    assert bands.get_band("nb685").name == "NB685"
    with pytest.raises(ValueError, match="unknown band 'NB686'.*NB455.*NB845"):
        bands.get_band("NB686")
    with pytest.raises(ValueError, match="camera_state"):
        bands.band_index("NB685", 2)
    with pytest.raises(ValueError, match="0..79"):
        bands.band_from_index(80)


def test_register_other_survey_band():
    band = bands.register_band("TEST_r", 6230.0, exposure_time=45.0, fwhm=1400.0)
    try:
        assert bands.get_band("test_r") is band
        assert bands.get_band("NB625").number == band.number  # nearest PAUS band
        assert band.index(1) == band.number + 40
        with pytest.raises(ValueError, match="already registered"):
            bands.register_band("TEST_r", 6200.0, 45.0)
        with pytest.raises(ValueError, match="positive"):
            bands.register_band("TEST_bad", 6200.0, 0.0)
    finally:
        bands._REGISTRY.pop("TEST_r", None)


def test_response_model_matches_measured_paus_curves(shared_data):
    curves = json.loads((shared_data / "paus" / "PAUS_filter_response.json").read_text())
    for name in ("NB455", "NB685", "NB845"):
        wl = np.asarray(curves[name]["wavelength"]) * 10.0  # nm -> Angstrom
        resp = np.asarray(curves[name]["response"])
        # the measured curve's response-weighted centre agrees with the nominal centre
        centre = np.sum(wl * resp) / np.sum(resp)
        assert abs(centre - bands.get_band(name).wavelength) < 30.0
        # and its equivalent width (normalised to the peak) is close to the model's
        model = bands.band_response(name, wl)
        width_measured = np.trapezoid(resp / resp.max(), wl)
        width_model = np.trapezoid(model, wl)
        assert width_model == pytest.approx(width_measured, rel=0.2)
