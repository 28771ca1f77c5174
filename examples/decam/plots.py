"""Figures of the DECam example: stamps with their model profiles, and the likelihoods.

``stamps.png``: for a few catalogue galaxies, the 60 x 60 stamp of each r exposure and the
PSF-convolved single-Sersic model profile lumos draws from the catalogue with that exposure's
PSFEx PSF (:func:`lumos.stamps.cut_stamps`, :func:`lumos.profiles.render_sersic`).
``pdfs.png``: per galaxy and band, each exposure's likelihood L(f) (``like_*`` columns,
in nanomaggies) beside the aperture flux and its error.

Usage::

    python plots.py OUT [--ids 1,3,6]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.wcs import FITSFixedWarning  # noqa: E402

from lumos.imageio import read_image  # noqa: E402
from lumos.profiles import render_sersic  # noqa: E402
from lumos.psfex import read_psfex  # noqa: E402
from lumos.psfsource import PSFExSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from combine import read_exposures  # noqa: E402

PIXEL_SCALE = 0.262
SIZE = 60


def _stamp(image: np.ndarray, x: float, y: float) -> np.ndarray:
    half = SIZE // 2
    out = np.zeros((SIZE, SIZE))
    x0, y0 = int(round(x)) - half, int(round(y)) - half
    ys = slice(max(y0, 0), min(y0 + SIZE, image.shape[0]))
    xs = slice(max(x0, 0), min(x0 + SIZE, image.shape[1]))
    out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = image[ys, xs]
    return out


def stamps_figure(out: Path, ids: list[int], band: str = "r") -> Path:
    """Stamps and model profiles of galaxies ``ids`` in every exposure of ``band``."""
    lumos = Table.read(out / "lumos.fits")
    cat = Table.read(out / "catalogue.fits")
    exps = [e for e in read_exposures(out) if e["band"] == band]
    fig, axes = plt.subplots(len(ids), 2 * len(exps), figsize=(2 * 2 * len(exps), 2.1 * len(ids)),
                             squeeze=False)  # fmt: skip
    for j, e in enumerate(exps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            image, _, _ = read_image(e["image"])
        psf = PSFExSource(read_psfex(e["psf"]), image.shape, PIXEL_SCALE)
        for i, gid in enumerate(ids):
            row = lumos[(lumos["id"] == gid) & (lumos["image"] == Path(e["image"]).name)][0]
            c = cat[cat["id"] == gid][0]
            data = _stamp(image, row["x"], row["y"])
            data = data - np.median(data)
            dx, dy = row["x"] - round(row["x"]), row["y"] - round(row["y"])
            model = render_sersic([c["r50"]], [c["sersic_n"]], [c["q"]], [c["pa"]],
                                  psf.at([row["x"]], [row["y"]]), offset=[[dx + 0.5, dy + 0.5]],
                                  size=SIZE, pixel_scale=PIXEL_SCALE)[0].numpy()  # fmt: skip
            vmax = max(data[22:38, 22:38].max(), 1e-6)  # the galaxy, not its neighbours
            axes[i, 2 * j].imshow(data, origin="lower", cmap="gray", vmin=-0.2 * vmax, vmax=vmax)
            axes[i, 2 * j + 1].imshow(model, origin="lower", cmap="gray")
            axes[i, 2 * j].set_title(f"id {gid} {Path(e['image']).name[4:17]}\nflags "
                                     f"{int(row['flags'])}", fontsize=7)  # fmt: skip
            axes[i, 2 * j + 1].set_title("model profile", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(out) / "stamps.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def _mixture(x, w, m, s):
    w = np.asarray(w, float) / np.sum(w)
    return np.sum(w[:, None] * np.exp(-0.5 * ((x[None] - np.asarray(m)[:, None])
                                                / np.asarray(s)[:, None]) ** 2)
                  / (np.sqrt(2 * np.pi) * np.asarray(s)[:, None]), axis=0)  # fmt: skip


def pdfs_figure(out: Path, ids: list[int]) -> Path:
    """Per galaxy and band, each exposure's likelihood and the aperture measurement."""
    lumos = Table.read(out / "lumos.fits")
    aper = Table.read(out / "aperture.fits")
    bands = ("g", "r", "z")
    fig, axes = plt.subplots(len(ids), 3, figsize=(11, 2.3 * len(ids)), squeeze=False)
    for i, gid in enumerate(ids):
        for k, band in enumerate(bands):
            ax = axes[i, k]
            sel = (lumos["id"] == gid) & (lumos["band"] == band) & (lumos["flags"] == 0)
            rows = lumos[sel]
            if len(rows) == 0:
                ax.set_axis_off()
                continue
            f = rows["flux_like"] * rows["to_nmgy"]
            s = rows["flux_like_err"] * rows["to_nmgy"]
            x = np.linspace(np.min(f - 4 * s), np.max(f + 4 * s), 400)
            for r, colour in zip(rows, plt.cm.tab10.colors, strict=False):
                scale = r["to_nmgy"]
                y = _mixture(x, np.exp(r["like_weight"]) if np.any(r["like_weight"] < 0)
                             else r["like_weight"], r["like_mean"] * scale,
                             r["like_sigma"] * scale)  # fmt: skip
                ax.plot(x, y, color=colour, lw=1.2, label=r["image"][4:17])
                a = aper[(aper["id"] == gid) & (aper["image"] == r["image"])][0]
                ax.errorbar(a["flux"] * scale, 0.05 * y.max(), xerr=a["flux_err"] * scale,
                            fmt="o", color=colour, ms=3)  # fmt: skip
            ax.set_title(f"id {gid}, {band}", fontsize=8)
            ax.set_xlabel("flux [nanomaggies]", fontsize=8)
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(out) / "pdfs.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``plots.py OUT [--ids 1,3,6]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--ids", default="1,3,6")
    args = parser.parse_args(argv)
    ids = [int(v) for v in args.ids.split(",")]
    out = Path(args.out)
    print(stamps_figure(out, ids), pdfs_figure(out, ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
