"""Tests of training: loss falls, augmentation, checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from conftest import S, noisy_stamp_batch, stamp_coordinates

from lumos.data_pipeline import TrainingBatches
from lumos.model_io import load_model
from lumos.network import LumosNet, NetworkConfig
from lumos.stamps import StampBatch
from lumos.training import (
    TrainingConfig,
    augment_batch,
    derive_seed,
    evaluate,
    latest_checkpoint,
    simulator_stream,
    train,
    validation_seed,
)


def synth_batch(n: int, seed: int, mismatch: float = 1.0) -> StampBatch:
    """Gaussian galaxies (sub-pixel offsets, elongated) on sky with noise; truth = flux.

    The model profile given to the network is ``mismatch`` times wider than the galaxy.
    """
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    flux = 10 ** (2.5 + 2.0 * u(n))
    sx, sy = 1.5 + 1.5 * u(n), 1.5 + 1.0 * u(n)
    offset = u(n, 2) - 0.5
    _, dx, dy = stamp_coordinates(offset)
    prof = torch.exp(-0.5 * (dx**2 / sx[:, None, None] ** 2 + dy**2 / sy[:, None, None] ** 2))
    prof = prof / prof.sum(dim=(1, 2), keepdim=True)
    model = torch.exp(-0.5 * (dx**2 / sx[:, None, None] ** 2 + dy**2 / sy[:, None, None] ** 2)
                      / mismatch**2)
    model = model / model.sum(dim=(1, 2), keepdim=True)
    mean = 150.0 + flux[:, None, None] * prof
    return noisy_stamp_batch(mean, model, flux, offset, g)


def factory(seed: int, batch_size: int, mismatch: float = 1.0):
    """A resumable stream factory: batch k of a seed is fixed."""
    k = 0
    while True:
        yield synth_batch(batch_size, derive_seed(seed, k), mismatch)
        k += 1


def tiny_model(seed: int = 0, dropout: float = 0.0) -> LumosNet:
    torch.manual_seed(seed)
    return LumosNet(NetworkConfig.tiny().replace(dropout=dropout))


def fast_config(**changes) -> TrainingConfig:
    base = dict(n_epochs=3, samples_per_epoch=48, batch_size=16, learning_rate=3e-3,
                lr_step_epochs=2, lr_decay=0.5, ema_decay=0.0, num_threads=1)
    base.update(changes)
    return TrainingConfig(**base)


@pytest.fixture(scope="module")
def val_batch() -> StampBatch:
    return synth_batch(64, validation_seed(1))


def test_augmentation_keeps_flux_and_aligns_profile_and_offset():
    b = synth_batch(64, 4)
    out = augment_batch(b, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.pixels.sum(dim=(1, 2)), b.pixels.sum(dim=(1, 2)))
    torch.testing.assert_close(out.profile.sum(dim=(1, 2)), b.profile.sum(dim=(1, 2)))
    assert torch.equal(out.truth, b.truth) and torch.equal(out.i_mag, b.i_mag)
    # the profile centroid follows the transformed offset
    c = (S - 1) / 2
    a = torch.arange(S, dtype=torch.float32) - c
    cx = (out.profile * a[None, None, :]).sum(dim=(1, 2))
    cy = (out.profile * a[None, :, None]).sum(dim=(1, 2))
    torch.testing.assert_close(torch.stack([cx, cy], 1), out.offset, atol=1e-3, rtol=0)
    # every one of the 8 transformations is used and pixels move with the profile
    changed = (out.pixels != b.pixels).flatten(1).any(1)
    assert 0.7 < float(changed.float().mean()) < 1.0
    peak_pix = (out.pixels - 150.0).flatten(1).argmax(1)
    peak_prof = out.profile.flatten(1).argmax(1)
    bright = b.truth > 5000
    rp, cp = peak_pix // S, peak_pix % S
    rq, cq = peak_prof // S, peak_prof % S
    assert bool((((rp - rq).abs() <= 3) & ((cp - cq).abs() <= 3))[bright].all())
    # reproducible with the same generator
    again = augment_batch(b, torch.Generator().manual_seed(0))
    assert torch.equal(again.pixels, out.pixels) and torch.equal(again.offset, out.offset)


def test_seeds_are_deterministic_and_distinct():
    assert derive_seed(1, 0, 3, 0) == derive_seed(1, 0, 3, 0)
    seeds = {derive_seed(1, r, e, p) for r in range(2) for e in range(20) for p in range(3)}
    assert len(seeds) == 120 and validation_seed(1) not in seeds
    assert all(0 <= s < 2**63 for s in seeds)


def test_a_tiny_model_learns(tmp_path):
    # The model profile is 1.4 times too wide, so the optimal estimate the untrained
    # network starts from is biased by about +30%: the network must learn to correct it.
    val = synth_batch(64, validation_seed(1), mismatch=1.4)
    model = tiny_model()
    before = evaluate(model, val)
    config = fast_config(n_epochs=2, samples_per_epoch=192, batch_size=32, learning_rate=1e-2)
    stream = functools.partial(factory, mismatch=1.4)
    result = train(model, stream, val, config, tmp_path, progress=False)
    after = result.history[-1]
    assert result.epochs_completed == 2 and len(result.history) == 2
    assert before["val_bias"] > 0.2
    assert after["val_loss"] < before["val_loss"] - 5.0
    assert abs(after["val_bias"]) < 0.7 * before["val_bias"]
    assert result.history[1]["loss"] < result.history[0]["loss"]
    for key in ("val_bias", "val_sigma68", "val_coverage68", "lr", "samples"):
        assert key in after
    assert 0.0 <= after["val_coverage68"] <= 1.0
    assert after["samples"] == 384
    # files: checkpoints (no pickles), logs, loadable final and best models
    names = {p.name for p in tmp_path.iterdir()}
    assert {"epoch-0002.json", "epoch-0002.safetensors", "train.log", "history.jsonl",
            "final.json", "final.safetensors", "best.json"} <= names
    assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in names)
    loaded = load_model(result.final_model_path)
    assert loaded.metadata["epochs"] == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(val).means, result.model(val).means)
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 2
    assert "epoch 2/2" in (tmp_path / "train.log").read_text()


class _Interrupt(Exception):
    pass


def _interrupting_factory(at_epoch_seed: int, after: int):
    """The normal stream, but raising inside the epoch whose seed is given."""

    def f(seed, batch_size):
        for k, b in enumerate(factory(seed, batch_size)):
            if seed == at_epoch_seed and k == after:
                raise _Interrupt
            yield b

    return f


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, val_batch):
    config = fast_config(ema_decay=0.9, augment=True, keep_checkpoints=2)
    full = train(tiny_model(dropout=0.1), factory, val_batch, config, tmp_path / "a",
                 progress=False)

    # Interrupt in the middle of the third epoch, then resume in a fresh "process".
    third = derive_seed(config.seed, 0, 2, 0)
    with pytest.raises(_Interrupt):
        train(tiny_model(dropout=0.1), _interrupting_factory(third, 1), val_batch, config,
              tmp_path / "b", progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "epoch-0002.json"
    torch.manual_seed(12345)  # resume must not depend on the global RNG state
    resumed = train(tiny_model(seed=7, dropout=0.1), factory, val_batch, config,
                    tmp_path / "b", progress=False)
    assert resumed.resumed_from == 2 and resumed.epochs_completed == 3
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    # only the last `keep_checkpoints` remain
    assert sorted(p.name for p in (tmp_path / "b").glob("epoch-*.json")) == [
        "epoch-0002.json", "epoch-0003.json"]


def test_resume_extends_a_finished_run_and_checks_the_network(tmp_path, val_batch):
    config = fast_config(n_epochs=1)
    train(tiny_model(), factory, val_batch, config, tmp_path, progress=False)
    more = train(tiny_model(), factory, val_batch, fast_config(n_epochs=2), tmp_path,
                 progress=False)
    assert more.resumed_from == 1 and [h["epoch"] for h in more.history] == [1, 2]
    other = LumosNet(NetworkConfig.tiny().replace(dense=(8,)))
    with pytest.raises(ValueError, match="network configuration differs"):
        train(other, factory, val_batch, fast_config(n_epochs=3), tmp_path, progress=False)
    # a checkpoint whose tensors were not completely written is ignored
    ckpt = latest_checkpoint(tmp_path)
    ckpt.with_suffix(".safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path).name == "epoch-0001.json"
    meta = json.loads(latest_checkpoint(tmp_path).read_text())
    assert meta["stream"]["kind"] == "factory" and meta["global_step"] == 3


def test_plain_iterable_stream_and_bad_input(tmp_path, val_batch):
    stream = factory(5, 16)
    result = train(tiny_model(), stream, val_batch, fast_config(n_epochs=1), tmp_path,
                   progress=False)
    assert result.epochs_completed == 1
    with pytest.raises(ValueError, match="stream ended"):
        train(tiny_model(), [synth_batch(16, 1)], val_batch, fast_config(n_epochs=1),
              tmp_path / "short", progress=False)
    with pytest.raises(ValueError, match="truth"):
        train(tiny_model(), factory, val_batch.replace(truth=None), fast_config(),
              tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)


def test_train_command_checkpoints_follow_out_and_refuse_another_run(
    tmp_path, val_batch, capsys, monkeypatch
):
    """``lumos train``: checkpoints next to --out by default, a one-line refusal of another
    run's checkpoints, and "resuming from" when it resumes."""
    import lumos.simulate
    from lumos.cli import main
    from lumos.commands.train import checkpoint_dir

    assert checkpoint_dir("runs/m.safetensors") == checkpoint_dir("runs/m")
    assert str(checkpoint_dir("runs/m")) == "runs/m-checkpoints"
    assert str(checkpoint_dir("runs/m", "elsewhere")) == "elsewhere"
    # one epoch of the tiny network of `lumos train --config tiny --seed 1`
    torch.manual_seed(1)
    train(LumosNet(NetworkConfig.tiny()), factory, val_batch, fast_config(n_epochs=1, seed=1),
          tmp_path / "m-checkpoints", progress=False)  # fmt: skip

    class FastSimulator:  # the command's held-out stamps, without the simulator's cost
        def __init__(self, *args, seed=0, **kwargs):
            self.seed = seed

        def sample(self, n):
            return synth_batch(n, self.seed)

        def stream(self, batch_size):
            return factory(self.seed, batch_size)

        def file_chunk(self, n, k, context_size=None):
            return synth_batch(n, derive_seed(self.seed, k)), None

    monkeypatch.setattr(lumos.simulate, "Simulator", FastSimulator)
    base = ["train", "--config", "tiny", "--epochs", "1", "--samples-per-epoch", "16",
            "--batch-size", "16", "--val-size", "8", "--threads", "1"]  # fmt: skip
    for extra, why in [(["--seed", "2"], "seed 1, not 2"),
                       (["--config", "default"], "another network configuration")]:
        argv = base + extra if "--config" not in extra else base[:1] + base[3:] + extra
        status = main(argv + ["--out", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert status == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert why in err and "--checkpoints" in err and "--no-resume" in err
        assert not (tmp_path / "m.json").exists()
    # another --out has its own folder: a fresh run, not the other model's epoch 1
    status = main(base + ["--seed", "2", "--out", str(tmp_path / "other")])
    out = capsys.readouterr().out
    assert status == 0 and "resuming" not in out
    assert latest_checkpoint(tmp_path / "other-checkpoints").name == "epoch-0001.json"
    # the same run again resumes, and says from where
    status = main(base + ["--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert status == 0
    assert f"resuming from {tmp_path / 'm-checkpoints' / 'epoch-0001.json'} (epoch 1 of 1" in out
    # --no-resume starts afresh and removes the earlier run's checkpoints
    later = train(tiny_model(), factory, val_batch, fast_config(n_epochs=3, seed=1),
                  tmp_path / "stale", progress=False)  # fmt: skip
    assert later.epochs_completed == 3
    status = main(base + ["--out", str(tmp_path / "fresh"), "--checkpoints",
                          str(tmp_path / "stale"), "--no-resume"])  # fmt: skip
    assert status == 0 and "removing the checkpoints of an earlier run" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "stale").glob("epoch-*.json")) == [
        "epoch-0001.json"]


class IndexedFactory:
    """An indexable stream factory (``batch(seed, batch_size, k)``), as SimulatorStream."""

    def batch(self, seed, batch_size, k):
        return synth_batch(batch_size, derive_seed(seed, k))

    def __call__(self, seed, batch_size):
        k = 0
        while True:
            yield self.batch(seed, batch_size, k)
            k += 1


def test_data_workers_do_not_change_the_run_and_resume_exactly(tmp_path, val_batch):
    config = fast_config(n_epochs=3, ema_decay=0.9, augment=True)
    runs = {}
    for workers in (0, 2):
        runs[workers] = train(tiny_model(), IndexedFactory(), val_batch,
                              dataclasses.replace(config, data_workers=workers),
                              tmp_path / f"w{workers}", progress=False)  # fmt: skip
    # interrupted after one epoch, resumed with one worker
    train(tiny_model(), IndexedFactory(), val_batch,
          dataclasses.replace(config, n_epochs=1, data_workers=1), tmp_path / "r",
          progress=False)  # fmt: skip
    resumed = train(tiny_model(seed=3), IndexedFactory(), val_batch,
                    dataclasses.replace(config, data_workers=1), tmp_path / "r",
                    progress=False)  # fmt: skip
    assert resumed.resumed_from == 1
    for other in (runs[2], resumed):
        a, b = runs[0].model.state_dict(), other.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in other.history]
    assert all(h["data_wait_s"] >= 0 for h in runs[2].history)
    # the batches are those of the stream, epoch by epoch
    seed2 = derive_seed(config.seed, 0, 2, 0)
    with TrainingBatches(IndexedFactory(), 16, config.seed, 0, 3, 4, workers=1) as batches:
        batches.start_epoch(2, 0)  # a jump: the workers start at epoch 2
        got = [batches.next() for _ in range(3)]
        batches.start_epoch(3, 3)  # drawn ahead across the epoch boundary
        nxt = batches.next()
    for k, b in enumerate(got):
        assert torch.equal(b.pixels, synth_batch(16, derive_seed(seed2, k)).pixels)
    assert torch.equal(nxt.truth, synth_batch(16, derive_seed(derive_seed(config.seed, 0, 3, 0),
                                                              0)).truth)


def test_simulator_stream_batch_k_is_the_simulators_file_chunk():
    from lumos.simulate import Simulator

    stream = simulator_stream()
    it = stream(5, 3)
    next(it)
    second = next(it)
    direct = Simulator(seed=5).file_chunk(3, 1)[0]
    assert torch.equal(second.pixels, direct.pixels) and torch.equal(second.truth, direct.truth)
    assert torch.equal(stream.batch(5, 3, 1).pixels, direct.pixels)
    with pytest.raises(ValueError, match="data_workers"):
        TrainingConfig(data_workers=-1)

