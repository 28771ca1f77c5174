"""Fit the sigma scale of a trained model on a held-out calibration set and save the result.

Temperature scaling: every component sigma is multiplied by one number ``s`` chosen by maximum
likelihood (the mixture negative log-likelihood, truncated at zero for faint galaxies, as in
training) on fresh simulations from a seed that neither training nor validation uses. The
network weights are unchanged; ``s`` is stored in the model's configuration.

Usage::

    .venv/bin/python scripts/calibrate_model.py --model runs/ckpt-default/final \\
        --out src/lumos/data/model/lumos-default --n 8000 --seed 20000001 \\
        [--catalogue-errors realistic]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.optimize import minimize_scalar


def main() -> None:
    from lumos.mixture import GaussianMixture, mixture_nll
    from lumos.model_io import load_model, read_model_description, save_model
    from lumos.network import LumosNet
    from lumos.simulate import CatalogueErrors, SimulationConfig, Simulator
    from lumos.stats import P16, P84

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=20_000_001)
    parser.add_argument("--catalogue-errors", choices=("none", "realistic"), default="none",
                        help="profile-channel errors of the calibration simulations (as trained)")
    parser.add_argument("--two-component-fraction", type=float, default=0.0,
                        help="bulge + disk fraction of the calibration simulations (as trained)")
    args = parser.parse_args()

    model = load_model(args.model).eval()
    if model.config.sigma_scale != 1.0:
        raise SystemExit("the model is already calibrated")
    errors = CatalogueErrors.realistic() if args.catalogue_errors == "realistic" else None
    sim_config = SimulationConfig(catalogue_errors=errors or CatalogueErrors(),
                                  two_component_fraction=args.two_component_fraction)
    batch = Simulator(sim_config, seed=args.seed).sample(args.n)
    raws = []
    with torch.inference_mode():
        for start in range(0, args.n, 1000):
            raws.append(model.forward_raw(batch[start : start + 1000]))
    lw = torch.cat([r.log_weights for r in raws]).double()
    mu = torch.cat([r.means for r in raws]).double()
    sg = torch.cat([r.sigmas for r in raws]).double()
    ref = torch.cat([r.reference for r in raws]).double()
    trunc = torch.cat([r.truncated for r in raws])
    target = batch.truth.double() / ref

    def nll(s: float) -> float:
        mixture = GaussianMixture(lw, mu, sg * s, truncated=trunc)
        return float(mixture_nll(mixture, target, truncate=trunc).mean())

    fit = minimize_scalar(nll, bounds=(0.3, 3.0), method="bounded", options={"xatol": 1e-4})
    scale = float(fit.x)

    def coverage(s: float) -> float:
        m = GaussianMixture(lw, mu, sg * s, truncated=trunc)
        lo, hi = m.quantile(P16), m.quantile(P84)
        return float(((target >= lo) & (target <= hi)).double().mean())

    print(f"calibration set: {args.n} stamps, seed {args.seed}")
    print(f"sigma scale {scale:.4f}: mean NLL {nll(1.0):.4f} -> {nll(scale):.4f}; "
          f"68% coverage {coverage(1.0):.3f} -> {coverage(scale):.3f}")  # fmt: skip
    calibrated = LumosNet(model.config.replace(sigma_scale=scale))
    calibrated.load_state_dict(model.state_dict())
    training = dict(read_model_description(args.model).get("training") or {})
    training["calibration"] = {
        "method": "temperature scaling of component sigmas, maximum likelihood",
        "n": args.n,
        "seed": args.seed,
        "catalogue_errors": args.catalogue_errors,
        "two_component_fraction": args.two_component_fraction,
        "sigma_scale": scale,
        "nll_before": nll(1.0),
        "nll_after": nll(scale),
        "coverage68_before": coverage(1.0),
        "coverage68_after": coverage(scale),
        "source_model": str(args.model),
    }
    save_model(calibrated.eval(), args.out, training=training)
    print(f"wrote {args.out}")
    np.set_printoptions(precision=4)


if __name__ == "__main__":
    main()
