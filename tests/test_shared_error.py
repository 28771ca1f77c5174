"""The shared error's dependence on the profile size, the size it reads, and its fit on pairs."""

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


def test_shared_error_curve_interpolates_in_log_width_and_validates():
    curve = SharedError(0.04, (0.02, 0.08), (0.01, 0.05))
    # relative widths 0.01 (below the first node), 0.04 (half-way in log), 0.2 (above)
    mix = GaussianMixture(torch.zeros(3, 1), torch.tensor([[100.0], [100.0], [100.0]]),
                          torch.tensor([[1.0], [4.0], [20.0]]))  # fmt: skip
    c = curve.relative(mix).numpy()
    np.testing.assert_allclose(c, [0.01, 0.03, 0.05], rtol=1e-12)
    per, shared = split_shared(mix.to(torch.float64), curve)
    np.testing.assert_allclose(shared.numpy(), [1.0, 3.0, 5.0])
    np.testing.assert_allclose(per.sigmas[:, 0].numpy(), [0.3, np.sqrt(7.0), np.sqrt(375.0)])
    # a float is the constant shared error, as before
    _, s = split_shared(mix.to(torch.float64), 0.02)
    np.testing.assert_allclose(s.numpy(), [2.0, 2.0, 2.0])
    for bad in (dict(constant=1.5), dict(widths=(0.1,), values=()),
                dict(widths=(0.2, 0.1), values=(0.1, 0.1)), dict(widths=(0.1,), values=(1.2,))):
        with pytest.raises(ValueError, match="shared"):
            SharedError(**bad)


def test_shared_error_of_a_model_configuration():
    from lumos.network import NetworkConfig

    cfg = NetworkConfig.tiny().replace(likelihood=True, shared_error=0.03)
    assert SharedError.of(cfg) == SharedError(0.03)
    cfg = cfg.replace(shared_error_widths=(0.05, 0.1), shared_error_values=(0.02, 0.04))
    assert SharedError.of(cfg).values == (0.02, 0.04)
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="curve has 2 widths and 1 values"):
        cfg.replace(shared_error_values=(0.1,)).validate()


def test_size_factors_multiply_the_curve_by_the_profile_size_bin_and_validate():
    shared = SharedError(0.04, widths=(0.02, 0.08), values=(0.01, 0.05), size_edges=(3.0,),
                         size_factors=(0.5, 2.0))  # fmt: skip
    assert shared.needs_size and not SharedError(0.04, (0.02,), (0.01,)).needs_size
    # widths 0.01 (below the first node), 0.04 (half-way in log), 0.2 (above); sizes 2 and
    # 3 px (an edge: the bin above)
    mix = _mixtures([100.0] * 6, [1.0, 4.0, 20.0] * 2)
    size = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(shared.relative(mix, size).numpy(),
                               [0.005, 0.015, 0.025, 0.02, 0.06, 0.1], rtol=1e-12)  # fmt: skip
    _, sigma = split_shared(mix.to(torch.float64), shared, size)
    np.testing.assert_allclose(sigma.numpy(), [0.5, 1.5, 2.5, 2.0, 6.0, 10.0])
    with pytest.raises(ValueError, match="depends on the profile size: pass size"):
        split_shared(mix.to(torch.float64), shared)
    with pytest.raises(ValueError, match="size has 2 rows for 6"):
        shared.relative(mix, size[:2])
    # a constant times the factors; the factors never make c reach 1
    big = SharedError(0.5, size_edges=(3.0,), size_factors=(1.0, 3.0))
    np.testing.assert_allclose(big.relative(mix, size).numpy(), [0.5] * 3 + [0.99] * 3)
    for bad, match in ((dict(size_edges=(3.0,), size_factors=(0.1,)), "1 size factors for 2"),
                       (dict(size_edges=(4.0, 3.0), size_factors=(1.0,) * 3), "size edges"),
                       (dict(size_factors=(-1.0,)), "finite and >= 0")):
        with pytest.raises(ValueError, match=match):
            SharedError(**bad)


def test_a_model_configuration_records_its_size_factors():
    from lumos.network import NetworkConfig

    cfg = NetworkConfig.tiny().replace(likelihood=True, shared_error=0.03,
                                       shared_error_size_edges=(3.0,),
                                       shared_error_size_factors=(0.8, 1.2))
    assert SharedError.of(cfg) == SharedError(0.03, size_edges=(3.0,), size_factors=(0.8, 1.2))
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.uncalibrated().shared_error_size_factors == ()
    with pytest.raises(ValueError, match="shared error has 1 size factors for 2 size bins"):
        cfg.replace(shared_error_size_factors=(0.8,)).validate()


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


def test_size_factors_recover_a_shared_error_that_depends_on_size():
    """Compact galaxies share 2% of their flux, large ones 8%, at every precision: from a
    curve of 4% the factors come out about 0.5 and 2, and D has unit width in both bins."""
    from lumos.calibration import pair_d, shared_error_size_factors
    from lumos.stats import sigma68

    rng = np.random.default_rng(5)
    n = 9000
    f = 100.0
    small = rng.random(n) < 0.5
    size = np.where(small, 2.0, 5.0) + rng.uniform(-0.5, 0.5, n)  # px, as both exposures'
    w = np.exp(rng.uniform(np.log(0.05), np.log(0.2), n))
    c = np.where(small, 0.02, 0.08)
    shared = c * f * rng.standard_normal(n)
    own = np.sqrt(w**2 - c**2)
    mixes = [_mixtures(f + shared + own * f * rng.standard_normal(n), w * f) for _ in range(2)]
    curve = SharedError(0.04, widths=(0.05, 0.2), values=(0.04, 0.04))
    fitted, by_size = shared_error_size_factors(*mixes, size, size, curve, bins=2)
    np.testing.assert_allclose(fitted.size_factors, [0.5, 2.0], atol=0.25)
    assert fitted.widths == curve.widths and fitted.values == curve.values
    assert all(0.95 < v < 1.05 for v in by_size), by_size
    d = pair_d(*mixes, fitted, (size, size))
    assert 0.95 < sigma68(d) < 1.05
    with pytest.raises(ValueError, match="bins must be at least 1"):
        shared_error_size_factors(*mixes, size, size, curve, bins=0)


def test_lumos_measure_splits_a_size_dependent_model_with_each_profile_size(tmp_path):
    """A likelihood model whose shared error depends on size: ``lumos measure`` gives every
    row the c of its own stamp's profile half-light radius."""
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
    config = NetworkConfig.tiny().replace(likelihood=True, shared_error=0.02,
                                          shared_error_size_edges=(3.0,),
                                          shared_error_size_factors=(0.5, 2.5))
    out = measure_image(image, cat, meta, model=LumosNet(config).eval())
    ok = np.isfinite(np.asarray(out["flux_like"], float))
    c = np.asarray(out["flux_shared_err"], float)[ok] / np.abs(np.asarray(out["flux_like"],
                                                                          float)[ok])
    assert ok.sum() >= 6
    assert set(np.round(c, 6)) <= {0.01, 0.05} and len(set(np.round(c, 6))) == 2, set(c)
