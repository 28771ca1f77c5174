"""The pretrained model shipped inside the package loads and measures sensibly."""

import numpy as np
import torch

from lumos.bayes import predict_posterior
from lumos.model_io import default_model_path, load_default_model
from lumos.simulate import Simulator
from lumos.stats import sigma68


def test_shipped_model_is_small_loads_and_is_accurate_on_fresh_simulations():
    weights = default_model_path().with_suffix(".safetensors")
    assert weights.is_file()
    assert weights.stat().st_size < 20 * 1024**2
    model = load_default_model().eval()
    assert model.config.n_components == 5
    assert model.config.likelihood and 0.0 < model.config.shared_error < 0.2
    batch = Simulator(seed=31_000_001).sample(300)  # a seed training never used
    with torch.inference_mode():
        mixture = predict_posterior(model, batch)  # likelihood x population prior
        like = model(batch)
        shifted = model(batch.replace(i_mag=batch.i_mag + 0.5))
    # the likelihood never sees the catalogue magnitude
    assert torch.equal(like.means, shifted.means) and torch.equal(like.sigmas, shifted.sigmas)
    summary = mixture.summaries()
    truth = batch.truth.numpy()
    rel = (summary["flux"] - truth) / truth
    bright = batch.i_mag.numpy() < 20.0
    assert bright.sum() > 30
    assert abs(np.median(rel[bright])) < 0.03
    assert sigma68(rel[bright]) < 0.08
    inside = (truth >= summary["flux_q16"]) & (truth <= summary["flux_q84"])
    assert 0.55 < inside.mean() < 0.82
