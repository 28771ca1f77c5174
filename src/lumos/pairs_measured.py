"""Pairs of observations from real measurement tables (:func:`pairs_from_measurements`).

The tables of ``lumos measure`` on repeated exposures are matched by galaxy and band, the
stamps are cut again from the images they came from, and the pairs are returned as a
:class:`lumos.pairs.PairSet` with their zero points.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from tqdm.auto import tqdm

from .catalogue import read_catalogue
from .errors import LumosError
from .flags import UNUSABLE, Flag
from .imageio import image_metadata, read_image
from .manifest import MANIFEST_COLUMNS, read_manifest
from .measure import make_stamp_batch
from .pairs import PAIRINGS, PairSet
from .stamps import StampBatch
from .tableio import read_table

__all__ = ["pairs_from_measurements"]


_REQUIRED_COLUMNS = ("id", "band", "flags", "x", "y")
_TABLE_META_OVERRIDES = {  # table metadata key -> image_metadata item
    "BAND": "band",
    "PSFFWHM": "psf_fwhm",
    "PSFBETA": "psf_beta",
    "PIXSCALE": "pixel_scale",
    "CAMSTATE": "camera_state",
    "GAIN": "gain",
}
_IMAGE_META_KEYS = ("IMGPATH", "IMAGE")
_CATALOGUE_META_KEYS = ("CATPATH", "CATALOG", "CATALOGUE")


@dataclass
class _ImageRef:
    """Where an image is and how to read it."""

    path: Path
    catalogue: Any = None
    overrides: dict = field(default_factory=dict)


@dataclass
class _Observation:
    table: int
    row: int
    image: Path
    id_key: str
    id_value: Any
    band: str


def _filled(column, fill) -> np.ndarray:
    """A column as a plain array, masked entries replaced by ``fill``."""
    if hasattr(column, "filled") and np.ma.is_masked(column):
        return np.asarray(column.filled(fill))
    return np.asarray(column)


def _meta_get(meta: Mapping, keys: Sequence[str]):
    lower = {str(k).lower(): v for k, v in meta.items()}
    for k in keys:
        if k.lower() in lower and str(lower[k.lower()]).strip():
            return lower[k.lower()]
    return None


def _load_tables(tables) -> list[tuple[Table, str, Path | None]]:
    if isinstance(tables, (str, os.PathLike, Table)):
        tables = [tables]
    out = []
    for k, item in enumerate(tables):
        if isinstance(item, Table):
            table, label, folder = item, f"table {k}", None
        else:
            path = Path(item)
            table = read_table(path, "measurement table")
            label, folder = path.name, path.parent
        missing = [c for c in _REQUIRED_COLUMNS if c not in table.colnames]
        if missing:
            raise LumosError(
                f"{label} is not a lumos measurement table (missing column"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)})"
            )
        out.append((table, label, folder))
    if not out:
        raise LumosError("no measurement tables given")
    return out


def _image_registry(images, base: Path | None = None) -> dict[str, _ImageRef]:
    """Known images by name and by path: from a manifest (file or table) or a mapping."""
    if images is None:
        return {}
    registry: dict[str, _ImageRef] = {}
    if isinstance(images, Mapping):
        for key, value in images.items():
            ref = _ImageRef(Path(value))
            registry[str(key)] = ref
            registry.setdefault(Path(value).name, ref)
        return registry
    if isinstance(images, Table):
        manifest, folder = images, base or Path(".")
        if "path" not in manifest.colnames:
            raise LumosError("the images manifest needs a 'path' column")
    else:
        manifest, folder = read_manifest(images), Path(images).parent
    for row in manifest:
        raw = str(row["path"]).strip()
        path = Path(raw) if Path(raw).is_absolute() else folder / raw
        cat = None
        if "catalogue" in manifest.colnames and str(row["catalogue"]).strip() not in ("", "--"):
            c = Path(str(row["catalogue"]).strip())
            cat = c if c.is_absolute() else folder / c
        overrides = {}
        for name in MANIFEST_COLUMNS:
            if name in manifest.colnames and name != "zero_point":
                value = row[name]
                if np.ma.is_masked(value):
                    continue
                value = value.item() if hasattr(value, "item") else value
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                overrides[name] = value
        ref = _ImageRef(path, cat, overrides)
        registry[raw] = ref
        registry.setdefault(path.name, ref)
    return registry


def _resolve_image(key: str, registry: dict[str, _ImageRef], folder: Path | None,
                   label: str) -> _ImageRef:
    key = str(key).strip()
    if key in registry:
        return registry[key]
    if Path(key).name in registry:
        return registry[Path(key).name]
    candidates = [Path(key)] if Path(key).is_absolute() else (
        ([folder / key] if folder is not None else []) + [Path(key)])
    for c in candidates:
        if c.is_file():
            return _ImageRef(c)
    where = f" (looked next to {label})" if folder is not None else ""
    raise LumosError(
        f"image {key!r} measured in {label} not found{where}; list the images in a "
        "manifest (--images)"
    )


def _zero_point_rows(zero_points, image_names: np.ndarray, bands: np.ndarray):
    """Zero point and error per observation from a table keyed by image or band."""
    n = len(image_names)
    if zero_points is None:
        return np.ones(n), np.zeros(n)
    table = zero_points if isinstance(zero_points, Table) else read_table(zero_points,
                                                                           "zero points")
    if "zp" not in table.colnames:
        raise LumosError("the zero-point table needs a 'zp' column")
    if "image" in table.colnames:
        keys = [Path(str(v).strip()).name for v in table["image"]]
        wanted = [Path(str(v)).name for v in image_names]
    elif "band" in table.colnames:
        keys = [str(v).strip() for v in table["band"]]
        wanted = [str(v) for v in bands]
    else:
        raise LumosError("the zero-point table needs an 'image' or a 'band' column")
    zp = np.asarray(table["zp"], dtype=float)
    err = np.asarray(table["zp_err"], dtype=float) if "zp_err" in table.colnames else np.zeros(
        len(zp))
    lookup = {k: i for i, k in enumerate(keys)}
    missing = sorted({w for w in wanted if w not in lookup})
    if missing:
        raise LumosError(f"no zero point for {missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    idx = np.array([lookup[w] for w in wanted], dtype=np.int64)
    if not (np.all(np.isfinite(zp[idx]) & (zp[idx] > 0)) and np.all(err[idx] >= 0)):
        raise LumosError("zero points must be positive and their errors >= 0")
    return zp[idx], err[idx]


def _pair_observations(obs: list[_Observation], pairing: str,
                       max_pairs: int | None) -> list[tuple[int, int]]:
    """Pairs of observation indices: per (id, band), distinct images only."""
    groups: dict[tuple[str, str], list[int]] = {}
    for k, o in enumerate(obs):
        groups.setdefault((o.id_key, o.band), []).append(k)
    pairs = []
    for members in groups.values():
        seen, distinct = set(), []
        for k in members:  # first observation per image, in table order
            if obs[k].image not in seen:
                seen.add(obs[k].image)
                distinct.append(k)
        if len(distinct) < 2:
            continue
        if pairing == "consecutive":
            found = list(zip(distinct[:-1], distinct[1:], strict=True))
        else:
            found = list(combinations(distinct, 2))
        pairs.extend(found[:max_pairs] if max_pairs is not None else found)
    return pairs


def pairs_from_measurements(
    tables,
    images=None,
    catalogue=None,
    *,
    pairing: str = "consecutive",
    max_pairs: int | None = 4,
    zero_points=None,
    overrides: Mapping | None = None,
    keywords: Mapping | None = None,
    columns: Mapping | None = None,
    progress: bool = False,
) -> PairSet:
    """Pairs of observations of the same galaxy and band from measurement tables.

    Every (id, band) measured on two or more different images gives pairs; rows flagged
    with any of :data:`lumos.flags.UNUSABLE` (or without finite x, y) are skipped. The
    stamps and model profiles are cut again from the images with
    :func:`lumos.measure.make_stamp_batch`, exactly as ``lumos measure`` does.

    Which image a row was measured on: the table's ``image`` column (tables measured
    from a manifest), else its metadata ``IMGPATH`` or ``IMAGE`` (``lumos measure``
    writes the image's file name). The name is looked up in ``images`` (a manifest or
    a mapping), else next to the table file, else as a path. The catalogue of an image:
    the manifest's ``catalogue`` column, else ``catalogue``, else the table metadata
    ``CATPATH``/``CATALOG``. Image metadata: the FITS header, overridden by the table's
    metadata (BAND, PSFFWHM, PSFBETA, PIXSCALE, CAMSTATE, GAIN, as written by ``lumos
    measure``) and band column, then by the manifest row, then by ``overrides``.

    Parameters
    ----------
    tables : path, Table or sequence of them
        Measurement tables (output of ``lumos measure``): columns ``id, band, flags, x,
        y`` (and optionally ``image``).
    images : path, Table or mapping, optional
        A manifest (table with a ``path`` column, as for ``lumos measure``; relative paths
        from its folder) or a mapping from image name to path.
    catalogue : path or Table, optional
        Catalogue for images that have no other.
    pairing : {"consecutive", "all"}
        Pair consecutive observations (in table order) or all combinations.
    max_pairs : int or None
        At most this many pairs per galaxy and band (None: no limit).
    zero_points : path or Table, optional
        Table with ``zp`` (and ``zp_err``) per ``image`` (name) or per ``band``; the
        calibration of image-unit fluxes (default 1).
    overrides, keywords, columns : mapping, optional
        Image metadata, FITS keywords and catalogue column names, as for
        :func:`lumos.measure.measure_file`.
    progress : bool
        Progress bar over the images.

    Returns
    -------
    PairSet
        Zero points are ``zp / gain`` (stamps are in electrons).

    Raises
    ------
    LumosError
        For a table without the needed columns, an image or catalogue that cannot be
        found, ids missing from a catalogue, or no pairs at all.
    """
    if pairing not in PAIRINGS:
        raise LumosError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if max_pairs is not None and int(max_pairs) < 1:
        raise LumosError(f"max_pairs must be a positive integer, got {max_pairs}")
    loaded = _load_tables(tables)
    registry = _image_registry(images)

    refs: dict[Path, _ImageRef] = {}
    table_meta: dict[Path, dict] = {}
    obs: list[_Observation] = []
    n_rows = n_unusable = 0
    for t_index, (table, label, folder) in enumerate(loaded):
        n_rows += len(table)
        if len(table) == 0:
            continue
        if "image" in table.colnames:
            keys = np.array([str(v).strip() for v in table["image"]])
            meta_over: dict = {}
        else:
            key = _meta_get(table.meta, _IMAGE_META_KEYS)
            if key is None:
                raise LumosError(
                    f"{label}: cannot tell which image it was measured on (no 'image' column "
                    "and no IMAGE in its metadata)"
                )
            keys = np.full(len(table), str(key).strip())
            meta_over = {item: table.meta[k] for k in table.meta
                         for mk, item in _TABLE_META_OVERRIDES.items() if str(k).upper() == mk}
            cat = _meta_get(table.meta, _CATALOGUE_META_KEYS)
            if cat is not None:
                cat = Path(str(cat).strip())
                if not cat.is_absolute() and folder is not None:
                    cat = folder / cat
                meta_over["__catalogue__"] = cat
        flags = _filled(table["flags"], int(Flag.FAILED)).astype(np.int64)
        x = _filled(table["x"], np.nan).astype(float)
        y = _filled(table["y"], np.nan).astype(float)
        usable = ((flags & int(UNUSABLE)) == 0) & np.isfinite(x) & np.isfinite(y)
        n_unusable += int((~usable).sum())
        ids = np.asarray(table["id"])
        bands = np.array([str(b).strip() for b in table["band"]])
        resolved: dict[str, _ImageRef] = {}
        for row in np.flatnonzero(usable):
            key = keys[row]
            if key not in resolved:
                resolved[key] = _resolve_image(key, registry, folder, label)
            ref = resolved[key]
            image_path = ref.path.resolve()
            refs.setdefault(image_path, ref)
            tm = table_meta.setdefault(image_path, {})
            for k, v in meta_over.items():
                tm.setdefault(k, v)
            tm.setdefault("band", bands[row])
            obs.append(_Observation(t_index, int(row), image_path, str(ids[row]), ids[row],
                                    bands[row]))
    pair_idx = _pair_observations(obs, pairing, None if max_pairs is None else int(max_pairs))
    if not pair_idx:
        raise LumosError(
            f"no pairs found: no galaxy was measured on two different images in the same "
            f"band ({n_rows} rows in {len(loaded)} table(s), {n_unusable} unusable)"
        )

    # cut the stamps of every needed observation, image by image
    needed = sorted({k for p in pair_idx for k in p})
    by_image: dict[Path, list[int]] = {}
    for k in needed:
        by_image.setdefault(obs[k].image, []).append(k)
    batches, position, gains, names = [], {}, {}, {}
    offset = 0
    for image_path, members in tqdm(by_image.items(), desc="images", unit="img",
                                    disable=not progress):
        ref = refs[image_path]
        tm = table_meta.get(image_path, {})
        over = {k: v for k, v in tm.items() if k != "__catalogue__"}
        over.update(ref.overrides)
        over.update({k: v for k, v in (overrides or {}).items() if v is not None})
        data, header, wcs = read_image(image_path)
        meta = image_metadata(header, over, keywords, wcs)
        cat_source = ref.catalogue or catalogue or tm.get("__catalogue__")
        if cat_source is None:
            raise LumosError(
                f"no catalogue for image {image_path.name}: give --catalogue, a 'catalogue' "
                "column in the images manifest, or CATALOG in the table metadata"
            )
        cat = read_catalogue(cat_source, columns=columns, wcs=wcs, pixel_scale=meta.pixel_scale)
        lookup = {str(v): i for i, v in enumerate(np.asarray(cat["id"]))}
        missing = [obs[k].id_key for k in members if obs[k].id_key not in lookup]
        if missing:
            raise LumosError(
                f"catalogue for {image_path.name} has no row for id {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": is it the catalogue the image was measured with?"
            )
        wrong = [obs[k].band for k in members if obs[k].band != meta.band.name]
        if wrong:
            raise LumosError(f"{image_path.name}: the image's band {meta.band.name} differs from "
                             f"the table's {wrong[0]}")
        rows = np.array([lookup[obs[k].id_key] for k in members], dtype=np.int64)
        electrons = np.asarray(data, dtype=np.float32) * np.float32(meta.gain)
        batch = make_stamp_batch(electrons, cat[rows], meta)
        batches.append(batch)
        for j, k in enumerate(members):
            position[k] = offset + j
        offset += len(members)
        gains[image_path] = float(meta.gain)
        names[image_path] = image_path.name
    everything = StampBatch.concat(batches)
    i1 = np.array([position[a] for a, _ in pair_idx], dtype=np.int64)
    i2 = np.array([position[b] for _, b in pair_idx], dtype=np.int64)
    cut_flags = everything.flags.numpy()
    keep = ((cut_flags[i1] | cut_flags[i2]) & int(UNUSABLE)) == 0
    if not keep.any():
        raise LumosError("no pairs found: every paired stamp is unusable (off the image or "
                         "masked in the core)")
    pair_idx = [p for p, k in zip(pair_idx, keep, strict=True) if k]
    i1, i2 = i1[keep], i2[keep]
    image_names = np.array([[names[obs[a].image], names[obs[b].image]] for a, b in pair_idx])
    bands = np.array([obs[a].band for a, _ in pair_idx])
    gain = np.array([[gains[obs[a].image], gains[obs[b].image]] for a, b in pair_idx])
    zp1, e1 = _zero_point_rows(zero_points, image_names[:, 0], bands)
    zp2, e2 = _zero_point_rows(zero_points, image_names[:, 1], bands)
    zp = np.stack([zp1, zp2], axis=1) / gain
    zp_err = np.stack([e1, e2], axis=1) / gain
    ids = np.array([obs[a].id_value for a, _ in pair_idx])
    return PairSet(
        first=everything[torch.from_numpy(i1)],
        second=everything[torch.from_numpy(i2)],
        zero_point=zp,
        zero_point_err=zp_err,
        ids=ids,
        bands=bands,
        images=image_names,
        source={
            "kind": "measurements",
            "tables": [label for _, label, _ in loaded],
            "images": sorted(names.values()),
            "n_pairs": len(pair_idx),
            "pairing": pairing,
            "max_pairs": max_pairs,
            "zero_points": None if zero_points is None else (
                "table" if isinstance(zero_points, Table) else str(zero_points)),
        },
    )


# =======================================================================================
# the frozen body and the trainable head


