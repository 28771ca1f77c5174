"""The shared error's table form, the profile size it reads, and its fit on pairs."""

import numpy as np
import pytest
import torch

from lumos.bayes import split_shared
from lumos.mixture import GaussianMixture
from lumos.shared_error import SharedError, profile_half_light_radius


def _mixtures(means, sigmas) -> GaussianMixture:
    means = torch.tensor(np.asarray(means, float)[:, None])
    sigmas = torch.tensor(np.asarray(sigmas, float)[:, None])
    return GaussianMixture(torch.zeros_like(means), means, sigmas)


def test_a_table_is_a_step_in_profile_size_and_width_and_validates():
    table = SharedError(0.04, size_edges=(3.0,), width_edges=(0.1, 0.5),
                        table=(0.01, 0.02, 0.03, 0.04, 0.05, 0.06))  # fmt: skip
    assert table.needs_size and not SharedError(0.04).needs_size
    # widths 0.05, 0.1 (an edge: the bin above), 0.8; sizes 2 and 3 (an edge) px
    mix = _mixtures([100.0] * 6, [5.0, 10.0, 80.0, 5.0, 10.0, 80.0])
    size = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(table.relative(mix, size).numpy(),
                               [0.01, 0.02, 0.03, 0.04, 0.05, 0.06])  # fmt: skip
    _, shared = split_shared(mix.to(torch.float64), table, size)
    np.testing.assert_allclose(shared.numpy(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="depends on the profile size: pass size"):
        split_shared(mix.to(torch.float64), table)
    with pytest.raises(ValueError, match="size has 2 rows for 6"):
        table.relative(mix, size[:2])
    for bad, match in ((dict(size_edges=(3.0,), table=(0.1,)), "1 values for 2 cells"),
                       (dict(width_edges=(0.5, 0.1), table=(0.1,) * 3), "width edges"),
                       (dict(size_edges=(-1.0,), table=(0.1,) * 2), "size edges"),
                       (dict(table=(1.5,)), r"in \[0, 1\)"),
                       (dict(widths=(0.1,), values=(0.1,), table=(0.1,)), "not both")):
        with pytest.raises(ValueError, match=match):
            SharedError(**bad)


def test_a_model_configuration_records_its_table():
    from lumos.network import NetworkConfig

    cfg = NetworkConfig.tiny().replace(likelihood=True, shared_error=0.03,
                                       shared_error_size_edges=(3.0,),
                                       shared_error_width_edges=(0.2,),
                                       shared_error_table=(0.01, 0.02, 0.03, 0.04))
    assert SharedError.of(cfg) == SharedError(0.03, size_edges=(3.0,), width_edges=(0.2,),
                                              table=(0.01, 0.02, 0.03, 0.04))  # fmt: skip
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.uncalibrated().shared_error_table == ()
    with pytest.raises(ValueError, match="shared_error_table has 3 values for 4 cells"):
        cfg.replace(shared_error_table=(0.1, 0.1, 0.1)).validate()


def test_profile_half_light_radius_of_a_gaussian():
    """A circular Gaussian of sigma s holds half its light within s sqrt(2 ln 2)."""
    size = 61
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    radii = []
    for s in (2.0, 4.0):
        radii.append(np.exp(-(x**2 + y**2) / (2 * s**2)))
    radii.append(np.zeros((size, size)))
    got = profile_half_light_radius(torch.tensor(np.stack(radii)))
    np.testing.assert_allclose(got[:2], np.array([2.0, 4.0]) * np.sqrt(2 * np.log(2)), atol=0.5)
    assert np.isnan(got[2])
    assert SharedError(0.02).sizes_of(torch.tensor(np.stack(radii))) is None


def test_shared_error_table_recovers_a_shared_error_that_depends_on_size():
    """Compact galaxies share 2% of their flux, large ones 8%, at every precision: the table's
    rows tell them apart, and D has unit width in its cells."""
    from lumos.calibration import pair_d, shared_error_table
    from lumos.stats import sigma68

    rng = np.random.default_rng(5)
    n = 9000
    f = 100.0
    small = rng.random(n) < 0.5
    size = np.where(small, 2.0, 5.0) + rng.uniform(-0.5, 0.5, n)  # px, as both exposures'
    w = np.exp(rng.uniform(np.log(0.1), np.log(0.4), n))
    c = np.where(small, 0.02, 0.08)
    shared = c * f * rng.standard_normal(n)
    own = np.sqrt(w**2 - c**2)
    mixes = [_mixtures(f + shared + own * f * rng.standard_normal(n), w * f) for _ in range(2)]
    table, cells = shared_error_table(*mixes, size, size, size_bins=2, width_bins=3)
    rows = np.asarray(table.table).reshape(2, 3)
    # 2% of the flux under a 10-40% width is within the noise of 1500 pairs per cell
    assert np.all(rows[0] <= 0.045) and abs(rows[0, 0] - 0.02) < 0.015, rows
    np.testing.assert_allclose(rows[1], 0.08, atol=0.025)
    assert np.all(rows[1] > rows[0])
    assert all(0.9 < v < 1.1 for v in cells), cells
    d = pair_d(*mixes, table, (size, size))
    assert 0.95 < sigma68(d) < 1.05
    with pytest.raises(ValueError, match="bin counts must be at least 1"):
        shared_error_table(*mixes, size, size, size_bins=0)


def test_lumos_measure_splits_a_table_model_with_each_profile_size(tmp_path):
    """A likelihood model with a table: ``lumos measure`` gives every row the c of its own
    profile size and width (measured with the profile half-light radius of its stamp)."""
    from lumos.catalogue import read_catalogue
    from lumos.field import simulate_field
    from lumos.imageio import image_metadata, read_image
    from lumos.measure import measure_image
    from lumos.network import LumosNet, NetworkConfig

    field = simulate_field(n_galaxies=12, shape=(300, 300), seed=3)
    field.write(tmp_path)
    image, header, _ = read_image(tmp_path / "image.fits")
    meta, cat = image_metadata(header), read_catalogue(tmp_path / "catalogue.fits")
    torch.manual_seed(1)
    config = NetworkConfig.tiny().replace(likelihood=True, shared_error_size_edges=(3.0,),
                                          shared_error_width_edges=(1e6,),
                                          shared_error_table=(0.01, 0.0, 0.05, 0.0))
    out = measure_image(image, cat, meta, model=LumosNet(config).eval())
    ok = np.isfinite(np.asarray(out["flux_like"], float))
    c = np.asarray(out["flux_shared_err"], float)[ok] / np.abs(np.asarray(out["flux_like"],
                                                                          float)[ok])
    assert ok.sum() >= 6
    assert set(np.round(c, 6)) <= {0.01, 0.05} and len(set(np.round(c, 6))) == 2
