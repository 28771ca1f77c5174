"""``lumos prior``: a flux-prior table, from the simulation population or learnt from tables."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import LumosError


def run(args: argparse.Namespace) -> int:
    from ..bayes import LIKELIHOOD_COLUMNS
    from ..flags import UNUSABLE
    from ..prior import EMPIRICAL_COMPONENTS, EMPIRICAL_FORM, empirical_prior, population_prior
    from ..tableio import announce_overwrite, check_output_path, read_table

    out = check_output_path(args.out)
    if args.n < 1000:
        raise LumosError("--n must be at least 1000")
    components = EMPIRICAL_COMPONENTS if args.components is None else args.components
    if components < 1 or components > 5:
        raise LumosError(f"--components must be 1 to 5, got {components}")
    if (args.components is not None or args.form is not None) and not args.tables:
        option = "--components" if args.components is not None else "--form"
        raise LumosError(f"{option} applies to a prior learnt from tables; the population "
                         "prior has its own")
    form = args.form or EMPIRICAL_FORM
    if form == "smooth" and components != 1:
        raise LumosError(f"--form smooth has one component per band, got --components "
                         f"{components}")
    announce_overwrite("prior", out)
    if not args.tables:
        prior = population_prior(n=args.n, seed=args.seed)
        what = f"the TEAHUPOO population ({args.n} galaxies, seed {args.seed})"
    else:
        cols: dict[str, list] = {"flux": [], "flux_err": [], "i_mag": [], "band": []}
        for path in args.tables:
            t = read_table(path, "measurement table")
            missing = [c for c in ("band", "i_mag", "flags") + LIKELIHOOD_COLUMNS[:3]
                       if c not in t.colnames]  # fmt: skip
            if missing:
                raise LumosError(f"{path} lacks column(s) {', '.join(missing)} (measure with a "
                                 "likelihood model)")  # fmt: skip
            ok = (np.asarray(t["flags"], np.int64) & int(UNUSABLE)) == 0
            cols["flux"].append(np.where(ok, np.asarray(t["flux_like"], float), np.nan))
            cols["flux_err"].append(np.hypot(np.asarray(t["flux_like_err"], float),
                                             np.nan_to_num(np.asarray(t["flux_shared_err"],
                                                                      float))))
            cols["i_mag"].append(np.asarray(t["i_mag"], float))
            cols["band"].append(np.asarray(t["band"]).astype(str))
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        prior = empirical_prior(arrays["flux"], arrays["flux_err"], arrays["i_mag"],
                                arrays["band"], k=components, seed=args.seed,
                                form=form)  # fmt: skip
        what = (f"{len(arrays['flux'])} measured rows of {len(args.tables)} table(s), "
                f"form {form}")
    prior.write(out)
    print(f"lumos prior: {prior.kind} prior from {what}: {len(prior.bands)} band(s), "
          f"{len(prior.i_edges) - 1} i bin(s) -> {out}")
    return 0
