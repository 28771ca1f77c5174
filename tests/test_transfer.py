"""Tests of unsupervised transfer learning: pairs, the frozen body, the pair loss, resume."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from lumos.consistency import DReference, d_reference, pair_consistency
from lumos.errors import LumosError
from lumos.flags import Flag
from lumos.instrument import CCD_SIZE, PIXEL_SCALE
from lumos.mixture import GaussianMixture
from lumos.model_io import load_model, save_model
from lumos.network import LumosNet, NetworkConfig
from lumos.pairs import PairSet, PairSimulation, simulate_pairs
from lumos.pairs_measured import pairs_from_measurements
from lumos.stamps import StampBatch, cut_stamps
from lumos.stats import sigma68
from lumos.training import TrainingConfig, derive_seed, train
from lumos.transfer import TransferConfig, transfer

S = 60


# --------------------------------------------------------------------------- toy data
def _blobs(flux, width, offset, g, jitter=0.0):
    """Gaussian galaxies on a 150 e- sky with Poisson-like noise; profile = true shape."""
    n = flux.shape[0]
    c = (S - 1) / 2
    a = torch.arange(S, dtype=torch.float32) - c
    dx = a[None, None, :] - offset[:, 0, None, None]
    dy = a[None, :, None] - offset[:, 1, None, None]
    prof = torch.exp(-0.5 * (dx**2 + dy**2) / width[:, None, None] ** 2)
    prof = prof / prof.sum(dim=(1, 2), keepdim=True)
    gain = 1.0 + jitter * torch.randn(n, generator=g)
    mean = 150.0 + (flux * gain)[:, None, None] * prof
    pixels = mean + torch.sqrt(mean + 25.0) * torch.randn(n, S, S, generator=g)
    return pixels.float(), prof.float()


def synth_batch(n: int, seed: int) -> StampBatch:
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    flux = 10 ** (2.5 + 2.0 * torch.rand(n, generator=g))
    width = 1.5 + 1.5 * torch.rand(n, generator=g)
    offset = torch.rand(n, 2, generator=g) - 0.5
    pixels, prof = _blobs(flux, width, offset, g)
    return StampBatch(
        pixels=pixels, profile=prof,
        i_mag=(24.5 - 2.5 * torch.log10(flux / 90.0)).float(),
        ccd_xy=torch.rand(n, 2, generator=g) * torch.tensor(CCD_SIZE, dtype=torch.float32),
        band_idx=torch.randint(0, 80, (n,), generator=g),
        flags=torch.zeros(n, dtype=torch.int64), offset=offset.float(), truth=flux.float(),
    )  # fmt: skip


def factory(seed: int, batch_size: int):
    k = 0
    while True:
        yield synth_batch(batch_size, derive_seed(seed, k))
        k += 1


def synth_pairs(n: int, seed: int, jitter: float = 0.0) -> PairSet:
    """The same galaxies twice: independent noise, offsets and widths; ``jitter`` is a
    per-exposure multiplicative flux error the network cannot see."""
    g = torch.Generator().manual_seed(seed)
    flux = 10 ** (2.5 + 2.0 * torch.rand(n, generator=g))
    i_mag = (24.5 - 2.5 * torch.log10(flux / 90.0)).float()
    band = torch.randint(0, 80, (n,), generator=g)
    sides = []
    for _ in range(2):
        width = 1.5 + 1.5 * torch.rand(n, generator=g)
        offset = torch.rand(n, 2, generator=g) - 0.5
        pixels, prof = _blobs(flux, width, offset, g, jitter)
        sides.append(StampBatch(
            pixels=pixels, profile=prof, i_mag=i_mag,
            ccd_xy=torch.rand(n, 2, generator=g) * torch.tensor(CCD_SIZE, dtype=torch.float32),
            band_idx=band, flags=torch.zeros(n, dtype=torch.int64), offset=offset.float(),
            truth=flux.float(),
        ))  # fmt: skip
    return PairSet(sides[0], sides[1], ids=np.arange(n))


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> LumosNet:
    """A tiny network trained for a few steps on the toy galaxies."""
    torch.manual_seed(0)
    model = LumosNet(NetworkConfig.tiny())
    cfg = TrainingConfig(n_epochs=2, samples_per_epoch=64, batch_size=32, learning_rate=3e-3,
                         ema_decay=0.0, num_threads=1)
    result = train(model, factory, synth_batch(32, 999), cfg,
                   checkpoint_dir=tmp_path_factory.mktemp("train"), progress=False)
    return result.model


def fresh(model: LumosNet) -> LumosNet:
    clone = LumosNet(model.config)
    clone.load_state_dict(model.state_dict())
    clone.metadata = {"trainer": "test"}
    return clone.eval()


def quick_config(**changes) -> TransferConfig:
    base = dict(n_epochs=3, batch_size=16, learning_rate=1e-2, lr_step_epochs=2,
                holdout_fraction=0.25, sim_pool=32, seed=3, num_threads=1)
    base.update(changes)
    return TransferConfig(**base)


# --------------------------------------------------------------------------- the head
@pytest.mark.parametrize("sigma_scale", [1.0, 0.9])
def test_head_of_the_body_is_forward_raw(trained_model, sigma_scale):
    """The body/head API transfer uses: ``head_raw(body(batch)) == forward_raw(batch)``,
    also in chunks and with a temperature-scaled model (the shipped one has
    sigma_scale != 1)."""
    model = LumosNet(dataclasses.replace(trained_model.config, sigma_scale=sigma_scale))
    model.load_state_dict(trained_model.state_dict())
    model.eval()
    batch = synth_batch(12, 5)
    with torch.no_grad():
        want = model.forward_raw(batch)
        got = model.head_raw(model.body_in_chunks(batch, chunk_size=5))
        whole = model.head_raw(model.body(batch))
        chunked = model.raw_in_chunks(batch, chunk_size=5)
    for a, b, c, d in zip(want, got, whole, chunked, strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)
        assert torch.equal(a, c) and torch.allclose(a.float(), d.float(), rtol=1e-5, atol=1e-6)


def test_only_the_last_layer_changes(trained_model, tmp_path):
    model = fresh(trained_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = synth_pairs(48, 1, jitter=0.1)
    out, history = transfer(model, pairs, factory, quick_config(n_epochs=2), tmp_path / "ck",
                            progress=False, out=tmp_path / "new")
    after = out.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.bias", "head.weight"]
    assert all(p.requires_grad for p in out.parameters())  # flags restored
    assert [h["epoch"] for h in history] == [0, 1, 2]
    saved = load_model(tmp_path / "new")
    assert torch.equal(saved.head.weight, after["head.weight"])
    meta = saved.metadata["transfer"]
    assert meta["n_pairs"] == 48 and meta["n_train_pairs"] + meta["n_holdout_pairs"] == 48
    assert saved.metadata["trainer"] == "test"  # the earlier metadata is kept
    assert (tmp_path / "ck" / "history.jsonl").is_file()


def test_pair_loss_decreases_on_toy_problem(trained_model, tmp_path):
    """Per-exposure flux errors the network cannot see: the pair loss widens the PDFs."""
    pairs = synth_pairs(96, 2, jitter=0.15)
    model = fresh(trained_model)
    start = pair_consistency(model, pairs)
    assert start["sigma68_D"] > 1.5  # over-confident on the shifted data
    _, history = transfer(model, pairs, factory, quick_config(n_epochs=6), tmp_path,
                          progress=False)
    assert history[-1]["val_pair_loss"] < history[0]["val_pair_loss"] - 0.2
    assert history[-1]["pair_loss"] < history[1]["pair_loss"]
    assert abs(history[-1]["val_sigma68_D"] - 1) < abs(history[0]["val_sigma68_D"] - 1)
    end = pair_consistency(model, pairs)
    assert abs(end["sigma68_D"] - 1) < abs(start["sigma68_D"] - 1)


def test_resume_is_exact(trained_model, tmp_path):
    pairs = synth_pairs(40, 3, jitter=0.1)
    cfg = quick_config(n_epochs=3, sim_pool=None, sim_batch_size=8)
    full, hist_full = transfer(fresh(trained_model), pairs, factory, cfg, tmp_path / "a",
                               progress=False)
    first = quick_config(n_epochs=2, sim_pool=None, sim_batch_size=8)
    transfer(fresh(trained_model), pairs, factory, first, tmp_path / "b", progress=False)
    resumed, hist_res = transfer(fresh(trained_model), pairs, factory, cfg, tmp_path / "b",
                                 progress=False)
    assert torch.equal(full.head.weight, resumed.head.weight)
    assert torch.equal(full.head.bias, resumed.head.bias)

    def strip(h):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in h]

    assert strip(hist_full) == strip(hist_res)
    # a checkpoint of another starting model is refused
    other = fresh(trained_model)
    with torch.no_grad():
        other.dense[0].weight.add_(0.01)
    with pytest.raises(ValueError, match="different starting model"):
        transfer(other, pairs, factory, cfg, tmp_path / "b", progress=False)


def test_training_checkpoints_are_not_resumed(trained_model, tmp_path):
    cfg = TrainingConfig(n_epochs=1, samples_per_epoch=8, batch_size=8, ema_decay=0.0,
                         num_threads=1)
    train(fresh(trained_model), factory, synth_batch(8, 1), cfg, checkpoint_dir=tmp_path,
          progress=False)
    with pytest.raises(ValueError, match="not transfer ones"):
        transfer(fresh(trained_model), synth_pairs(8, 1), factory, quick_config(), tmp_path,
                 progress=False)


def test_transfer_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_epochs"):
        TransferConfig(n_epochs=0)
    with pytest.raises(ValueError, match="holdout_fraction"):
        TransferConfig(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="both 0"):
        TransferConfig(pair_weight=0.0, sim_weight=0.0)
    assert TransferConfig.from_dict(TransferConfig().to_dict()) == TransferConfig()


# --------------------------------------------------------------------------- metric, sets
class _Stub:
    """predict() returns fixed single-Gaussian mixtures, one per call in turn."""

    def __init__(self, *mixtures):
        self.mixtures = list(mixtures)

    def predict(self, batch, chunk_size=2048):
        return self.mixtures.pop(0)


def _gauss(mean, sigma, truncated=None):
    mean = torch.as_tensor(mean, dtype=torch.float64)[:, None]
    return GaussianMixture(torch.zeros_like(mean), mean, torch.full_like(mean, sigma),
                           truncated=truncated)


def test_pair_consistency_values():
    pairs = synth_pairs(4, 0)
    f1 = torch.tensor([100.0, 100.0, 100.0, 100.0])
    f2 = torch.tensor([103.0, 96.0, 100.0, 108.0])  # D = (f1 - f2) / 5
    stub = _Stub(_gauss(f1, 3.0), _gauss(f2, 4.0))
    out = pair_consistency(stub, pairs)
    d = np.array([-0.6, 0.8, 0.0, -1.6])
    assert out["n_pairs"] == 4
    assert out["median_D"] == pytest.approx(np.median(d))
    assert out["sigma68_D"] == pytest.approx(sigma68(d))
    assert "bias" in out  # simulated pairs have truth
    assert out["n_pairs_untruncated"] == 4 and out["n_pairs_truncated"] == 0
    # pairs of truncated PDFs (means far above zero here) are reported separately
    trunc = torch.tensor([False, False, True, True])
    out = pair_consistency(_Stub(_gauss(f1, 3.0, trunc), _gauss(f2, 4.0, trunc)), pairs)
    assert out["n_pairs_untruncated"] == 2 and out["n_pairs_truncated"] == 2
    assert out["median_D_untruncated"] == pytest.approx(0.1)
    assert out["median_D_truncated"] == pytest.approx(-0.8)
    assert out["median_D"] == pytest.approx(np.median(d))
    # zero points calibrate both sides before comparing
    pairs.zero_point[:, 1] = 0.5
    out = pair_consistency(_Stub(_gauss(f1, 3.0), _gauss(2 * f2, 8.0)), pairs)
    assert out["median_D"] == pytest.approx(np.median(d))


def test_d_reference_standardises_d_by_magnitude():
    rng = np.random.default_rng(3)
    n = 4000
    pairs = synth_pairs(n, 0)
    pairs.first.i_mag = torch.as_tensor(np.where(np.arange(n) < n // 2, 19.0, 22.5),
                                        dtype=torch.float32)  # fmt: skip
    # shared information: D has width 0.5 at i = 22.5 and 0.9 at i = 19 (sigma 1 each side)
    width = np.where(np.arange(n) < n // 2, 0.9, 0.5)
    f1 = torch.as_tensor(1000.0 + rng.normal(size=n) * width * np.sqrt(2.0))
    f2 = torch.full((n,), 1000.0, dtype=torch.float64)
    ref = d_reference(_Stub(_gauss(f1, 1.0), _gauss(f2, 1.0)), pairs, edges=(17, 20.5, 23))
    assert ref.n_pairs == (n // 2, n // 2)
    np.testing.assert_allclose(ref.width, (0.9, 0.5), rtol=0.06)
    w19, w22 = ref.width
    np.testing.assert_array_equal(ref([15.0, 19.0, 22.0, 30.0]), [w19, w19, w22, w22])
    assert DReference.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    # new pairs whose D is twice as wide as the reference: sigma68_Dref ~ 2 in both bins
    f1b = torch.as_tensor(1000.0 + rng.normal(size=n) * 2 * width * np.sqrt(2.0))
    out = pair_consistency(_Stub(_gauss(f1b, 1.0), _gauss(f2, 1.0)), pairs, reference=ref)
    assert out["sigma68_Dref"] == pytest.approx(2.0, rel=0.08)
    assert out["sigma68_D"] < 1.9  # the raw width mixes the two magnitudes
    # empty bins borrow the nearest populated bin; bad edges and widths are refused
    ref3 = d_reference(_Stub(_gauss(f1, 1.0), _gauss(f2, 1.0)), pairs, edges=(17, 20, 21, 23))
    assert ref3.n_pairs[1] == 0 and ref3.width[1] in ref3.width[::2]
    with pytest.raises(ValueError, match="edges"):
        d_reference(_Stub(), pairs, edges=(20, 19))
    with pytest.raises(ValueError, match="positive"):
        DReference((17.0, 20.0), (0.0,), (5,))


def test_simulated_pairs_share_an_erroneous_catalogue():
    from lumos.simulate import CatalogueErrors, SimulationConfig
    from lumos.training import training_simulation

    errors = CatalogueErrors.realistic()
    sim = SimulationConfig(catalogue_errors=errors, chunk_size=16)
    pairs = simulate_pairs(16, seed=3, config=PairSimulation(simulation=sim))
    exact = simulate_pairs(16, seed=3, config=PairSimulation(simulation=SimulationConfig(
        chunk_size=16)))  # fmt: skip
    # one catalogue for both exposures; its i magnitudes carry the 0.03 mag error
    torch.testing.assert_close(pairs.first.i_mag, pairs.second.i_mag)
    delta = (pairs.first.i_mag - exact.first.i_mag).numpy()
    assert 0 < np.std(delta) < 0.1
    torch.testing.assert_close(pairs.first.truth, exact.first.truth)
    # a model records the simulation it was trained on; the default when it does not
    model = LumosNet(NetworkConfig.tiny())
    assert training_simulation(model) == SimulationConfig()
    model.metadata = {"simulation_config": json.loads(json.dumps(sim.to_dict()))}
    assert training_simulation(model).catalogue_errors == errors


def test_split_keeps_galaxies_together():
    pairs = synth_pairs(12, 0)
    pairs.ids = np.repeat(np.arange(4), 3)
    train_set, held = pairs.split(0.25, seed=1)
    assert len(train_set) + len(held) == 12 and len(held) == 3
    assert not set(train_set.ids) & set(held.ids)
    again, _ = pairs.split(0.25, seed=1)
    assert np.array_equal(again.ids, train_set.ids)


def test_simulate_pairs_same_galaxy_twice():
    from lumos.simulate import FlatSky, SimulationConfig

    sim = SimulationConfig(psf_beta_range=(2.0, 2.2), random_neighbours=0.0,
                           close_neighbour_fraction=0.0)
    cfg = PairSimulation(simulation=sim, profile_psf_beta=3.5)
    pairs = simulate_pairs(4, seed=7, config=cfg, background=FlatSky())
    assert len(pairs) == 4
    assert torch.equal(pairs.first.truth, pairs.second.truth)
    assert torch.equal(pairs.first.i_mag, pairs.second.i_mag)
    assert torch.equal(pairs.first.band_idx, pairs.second.band_idx)
    assert not torch.equal(pairs.first.pixels, pairs.second.pixels)
    assert not torch.equal(pairs.first.offset, pairs.second.offset)
    sums = pairs.first.profile.sum(dim=(1, 2))
    assert torch.all((sums > 0.9) & (sums <= 1.0 + 1e-4))
    again = simulate_pairs(4, seed=7, config=cfg, background=FlatSky())
    assert torch.equal(again.second.pixels, pairs.second.pixels)
    # a perfect PSF model: same pixels, but the profile channel follows the broad true
    # PSF (beta 2-2.2), less concentrated than the nominal beta = 3.5 profile
    exact = simulate_pairs(4, seed=7, config=PairSimulation(simulation=sim),
                           background=FlatSky())
    assert torch.equal(exact.first.pixels, pairs.first.pixels)
    c = slice(S // 2 - 3, S // 2 + 3)
    core_nominal = pairs.first.profile[:, c, c].sum(dim=(1, 2))
    core_true = exact.first.profile[:, c, c].sum(dim=(1, 2))
    assert torch.all(core_nominal > core_true)


# --------------------------------------------------------------------------- real tables
def _write_image(path, seed, band="NB685"):
    rng = np.random.default_rng(seed)
    data = (170.0 + 13.0 * rng.standard_normal((160, 160))).astype(np.float32)
    hdr = fits.Header({"FILTER": band, "PSFFWHM": 0.9, "PIXSCALE": PIXEL_SCALE, "GAIN": 2.0,
                       "EXPTIME": 90.0})
    fits.PrimaryHDU(data / 2.0, hdr).writeto(path)
    return data


@pytest.fixture
def field(tmp_path):
    """Three images of one field, a catalogue and one measurement table per image."""
    cat = Table({
        "id": [11, 12, 13, 14, 15],
        "x": [40.0, 80.3, 120.0, 60.0, 150.0],
        "y": [40.0, 90.0, 50.2, 120.0, 150.0],
        "r50": [0.5, 0.6, 0.7, 0.4, 0.5], "sersic_n": [1.0, 2.0, 1.5, 1.0, 4.0],
        "q": [0.8, 0.5, 0.9, 0.7, 0.6], "pa": [10.0, 50.0, 90.0, 0.0, 30.0],
        "i_mag": [20.0, 21.0, 22.0, 19.5, 20.5],
    })  # fmt: skip
    cat.write(tmp_path / "cat.fits")
    images = {name: _write_image(tmp_path / f"{name}.fits", k)
              for k, name in enumerate(("a", "b", "c"))}
    tables = []
    for name in ("a", "b", "c"):
        t = Table({"id": cat["id"], "x": cat["x"], "y": cat["y"],
                   "band": ["NB685"] * 5, "flags": np.zeros(5, dtype=np.int64),
                   "flux": np.ones(5)})  # fmt: skip
        t.meta.update({"IMAGE": f"{name}.fits", "CATALOG": "cat.fits", "BAND": "NB685"})
        tables.append(t)
    tables[1]["flags"][2] = int(Flag.MASKED_CORE)  # id 13 unusable on image b
    tables[2]["flags"][3] = int(Flag.OFF_IMAGE)  # id 14 unusable on image c
    tables[1].remove_row(4)  # id 15 only on a and c
    tables[2].remove_row(4)  # ... and now only on a
    paths = []
    for name, t in zip(("a", "b", "c"), tables, strict=True):
        t.write(tmp_path / f"meas-{name}.fits")
        paths.append(tmp_path / f"meas-{name}.fits")
    return tmp_path, paths, images, cat


def _pair_keys(pairs):
    return sorted((int(i), a, b) for i, (a, b) in zip(pairs.ids, pairs.images, strict=True))


def test_pairs_from_measurements_pairs_the_right_rows(field):
    folder, paths, images, cat = field
    pairs = pairs_from_measurements(paths)
    assert _pair_keys(pairs) == [
        (11, "a.fits", "b.fits"), (11, "b.fits", "c.fits"),
        (12, "a.fits", "b.fits"), (12, "b.fits", "c.fits"),
        (13, "a.fits", "c.fits"),  # the unusable row on b is skipped
        (14, "a.fits", "b.fits"),  # the off-image row on c is skipped; 15 has one image
    ]  # fmt: skip
    # the stamps are those of the images (in electrons: gain 2), cut at the catalogue position
    k = [i for i, (g, a) in enumerate(zip(pairs.ids, pairs.images[:, 0], strict=True))
         if g == 12 and a == "b.fits"][0]
    want = cut_stamps(images["b"], np.array([80.3]), np.array([90.0])).pixels[0]
    assert np.allclose(pairs.first.pixels[k].numpy(), want, rtol=1e-6)
    assert torch.all(pairs.first.profile.sum(dim=(1, 2)) > 0.9)
    assert torch.allclose(pairs.zero_point, torch.full((6, 2), 0.5, dtype=torch.float64))
    assert set(pairs.bands) == {"NB685"}

    every = pairs_from_measurements(paths, pairing="all")
    assert (11, "a.fits", "c.fits") in _pair_keys(every) and len(every) == 8
    capped = pairs_from_measurements(paths, pairing="all", max_pairs=1)
    assert len(capped) == 4


def test_pairs_from_a_manifest_table_and_zero_points(field):
    folder, paths, _, _ = field
    from astropy.table import vstack

    parts = []
    for name, p in zip(("a", "b", "c"), paths, strict=True):
        t = Table.read(p)
        t.meta.clear()
        t["image"] = f"{name}.fits"
        parts.append(t)
    stacked = vstack(parts)
    manifest = Table({"path": ["a.fits", "b.fits", "c.fits"],
                      "catalogue": ["cat.fits"] * 3, "gain": [2.0, 2.0, 1.0]})
    manifest.write(folder / "manifest.ecsv")
    zps = Table({"image": ["a.fits", "b.fits", "c.fits"], "zp": [1.0, 1.2, 0.8],
                 "zp_err": [0.0, 0.01, 0.02]})
    pairs = pairs_from_measurements([stacked], images=folder / "manifest.ecsv",
                                    zero_points=zps)
    assert len(pairs) == 6
    k = [i for i, im in enumerate(pairs.images) if tuple(im) == ("b.fits", "c.fits")][0]
    assert pairs.zero_point[k].tolist() == pytest.approx([1.2 / 2.0, 0.8 / 1.0])
    assert pairs.zero_point_err[k].tolist() == pytest.approx([0.01 / 2.0, 0.02 / 1.0])


def test_pairs_from_measurements_bad_input(field):
    folder, paths, _, _ = field
    bad = Table.read(paths[0])
    bad.remove_column("flags")
    with pytest.raises(LumosError, match="missing column flags"):
        pairs_from_measurements([bad, paths[1]])
    with pytest.raises(LumosError, match="no pairs found"):
        pairs_from_measurements([paths[0]])
    t = Table.read(paths[0])
    t.meta.pop("IMAGE")
    with pytest.raises(LumosError, match="which image"):
        pairs_from_measurements([t, paths[1]])
    (folder / "c.fits").unlink()
    with pytest.raises(LumosError, match="'c.fits'.*not found"):
        pairs_from_measurements(paths)
    t = Table.read(paths[0])
    t.meta.pop("CATALOG")
    t.meta["IMAGE"] = str(folder / "a.fits")
    u = Table.read(paths[1])
    u.meta.pop("CATALOG")
    u.meta["IMAGE"] = str(folder / "b.fits")
    with pytest.raises(LumosError, match="no catalogue"):
        pairs_from_measurements([t, u])
    with pytest.raises(LumosError, match="pairing"):
        pairs_from_measurements(paths[:2], pairing="random")


# --------------------------------------------------------------------------- command line
def test_cli_transfer(field, trained_model, tmp_path):
    from lumos.commands.transfer import run

    folder, paths, _, _ = field
    save_model(trained_model, tmp_path / "start")
    args = argparse.Namespace(tables=[str(p) for p in paths], model=str(tmp_path / "start"),
                              out=str(tmp_path / "new.safetensors"), epochs=1, batch_size=2,
                              sim_pool=4, holdout=0.4, reference_pairs=200)
    assert run(args) == 0
    model = load_model(tmp_path / "new")
    assert model.metadata["transfer"]["n_pairs"] == 6
    history = (tmp_path / "new-transfer-checkpoints" / "history.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in history]
    assert [e["epoch"] for e in entries] == [0, 1]
    # D is also reported relative to its width on simulated training-domain pairs
    assert all(np.isfinite(e["val_sigma68_Dref"]) and e["val_sigma68_Dref"] > 0
               for e in entries)  # fmt: skip


def test_cli_transfer_errors(field, trained_model, tmp_path, capsys):
    from lumos.cli import main

    folder, paths, _, _ = field
    save_model(trained_model, tmp_path / "start")
    bad = Table({"id": [1], "band": ["NB685"]})
    bad.write(tmp_path / "bad.fits")
    code = main(["transfer", str(tmp_path / "bad.fits"), "--model", str(tmp_path / "start"),
                 "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "missing columns flags, x, y" in err and len(err.splitlines()) == 1
    code = main(["transfer", str(paths[0]), "--model", str(tmp_path / "start"),
                 "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no pairs found" in err
    code = main(["transfer", str(paths[0]), "--model", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "new")])
    assert code == 1 and "not found" in capsys.readouterr().err
    code = main(["transfer", *map(str, paths), "--model", str(tmp_path / "start"),
                 "--out", str(tmp_path / "nodir" / "new")])
    assert code == 1 and "does not exist" in capsys.readouterr().err
    # too few reference pairs for any magnitude bin: one line, no model written
    code = main(["transfer", *map(str, paths), "--model", str(tmp_path / "start"),
                 "--out", str(tmp_path / "few"), "--reference-pairs", "3", "--epochs", "1"])
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line.strip() and not line.startswith("images:")]  # progress bars aside
    assert code == 1 and len(err) == 1 and "--reference-pairs 3" in err[0], err
    assert not list(tmp_path.glob("few*"))


def test_reference_edges_follow_the_model_magnitude_range(trained_model):
    from lumos.consistency import D_REFERENCE_EDGES, reference_edges

    paus = trained_model.with_config(trained_model.config.replace(i_mag_range=(17.0, 23.0)))
    assert reference_edges(paus) == D_REFERENCE_EDGES
    deep = trained_model.with_config(trained_model.config.replace(i_mag_range=(16.0, 24.5)))
    assert reference_edges(deep) == (16.0, *D_REFERENCE_EDGES, 24.5)
    shallow = trained_model.with_config(trained_model.config.replace(i_mag_range=(18.0, 22.2)))
    assert reference_edges(shallow) == (18.0, 18.5, 19.5, 20.5, 21.0, 21.5, 22.0, 22.2)


def test_reference_pairs_is_an_option_of_lumos_transfer():
    from lumos.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["transfer", "t.fits", "--out", "m", "--reference-pairs", "0"])
    assert args.reference_pairs == 0
    assert parser.parse_args(["transfer", "t.fits", "--out", "m"]).reference_pairs == 2000
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--out", "m", "--reference-pairs", "0"])
