"""Model files: safetensors weights plus a JSON description, never a pickle.

A lumos model is a pair of files sharing one stem::

    NAME.safetensors   the weights (safetensors; loaded without unpickling anything)
    NAME.json          {"format": "lumos-model", "format_version": 1, "lumos_version": ...,
                        "network_config": {...}, "normalisation": {...},
                        "weights_file": "NAME.safetensors", "weights_sha256": "...",
                        "training": {...free-form metadata...}}

``save_model(model, "dir/NAME")`` (or ``"dir/NAME.safetensors"`` / ``"dir/NAME.json"``)
writes both; ``load_model`` accepts any of the three spellings. Anything else -- a
PyTorch ``.pt``/``.pth``/``.ckpt`` file, a pickle, a file that is not safetensors, a
missing or unreadable JSON, a wrong format version -- raises :class:`ModelFileError` with
a one-line message. ``torch.load`` is never called on a user file.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import LumosError
from .network import LumosNet, NetworkConfig
from .tableio import replace_file

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ModelFileError",
    "model_paths",
    "save_model",
    "load_model",
    "read_model_description",
    "default_model_path",
    "load_default_model",
    "sha256_file",
]

FORMAT_NAME = "lumos-model"
#: Version of the model-file layout; bump when the meaning of a stored field changes.
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "lumos-default"
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar", ".joblib"}


class ModelFileError(LumosError):
    """A model file cannot be used (not safetensors, missing config, wrong version, ...)."""


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The (weights, description) paths of a model given by stem or either file.

    Parameters
    ----------
    path : str or path-like
        ``NAME``, ``NAME.safetensors`` or ``NAME.json``.

    Returns
    -------
    (Path, Path)
        ``NAME.safetensors`` and ``NAME.json``.
    """
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sniff(path: Path) -> str:
    """'safetensors', 'pickle', 'zip' or 'unknown' from a file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def write_tensors(tensors: dict[str, torch.Tensor], path: Path,
                     metadata: dict[str, str] | None = None) -> None:
    """Write tensors with safetensors via a temporary file and an atomic rename (the file
    gets the permissions of a new file under the umask)."""
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(clean, str(tmp), metadata=metadata)
    replace_file(tmp, path)


def _json_to_file(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=json_default)
        f.write("\n")
    replace_file(tmp, path)


def json_default(value: Any):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model description")


def save_model(model: LumosNet, path: str | os.PathLike,
               training: dict[str, Any] | None = None) -> Path:
    """Write a model as ``NAME.safetensors`` + ``NAME.json``.

    Parameters
    ----------
    model : LumosNet
        The model (a DistributedDataParallel wrapper is unwrapped).
    path : str or path-like
        ``NAME``, ``NAME.safetensors`` or ``NAME.json``; the folder is created.
    training : dict, optional
        Free-form training metadata (JSON-serialisable); default ``model.metadata``.

    Returns
    -------
    Path
        Path of the JSON description.
    """
    model = getattr(model, "module", model)
    weights_path, json_path = model_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    write_tensors(state, weights_path,
                     metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    meta = dict(getattr(model, "metadata", {}) or {}) if training is None else dict(training)
    description = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lumos_version": __version__,
        "network_config": model.config.to_dict(),
        "normalisation": model.normalisation_constants(),
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        "n_parameters": model.n_parameters(),
        "training": meta,
    }
    _json_to_file(description, json_path)
    return json_path


def _check_not_pickle(path: Path) -> None:
    """Refuse pickles and PyTorch files, naming what a file is (or is not) from its bytes."""
    kind = _sniff(path) if path.is_file() else None
    if kind in ("pickle", "zip"):
        raise ModelFileError(
            f"{path}: is a {kind} file (PyTorch or pickle), not safetensors; lumos model files "
            "are NAME.safetensors + NAME.json and pickles are never loaded"
        )
    if path.suffix.lower() not in _PICKLE_SUFFIXES:
        return
    if kind is None:
        raise ModelFileError(
            f"{path}: a PyTorch/pickle file name; lumos model files are "
            "NAME.safetensors + NAME.json and pickles are never loaded"
        )
    what = ("a safetensors file without its NAME.json description" if kind == "safetensors"
            else "not a lumos model file (neither safetensors nor a pickle)")  # fmt: skip
    raise ModelFileError(f"{path}: {what}; lumos model files are NAME.safetensors + NAME.json")


def read_model_description(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the JSON description of a model file.

    Pickles are refused; the weights file must exist next to the description, and the
    description must be a lumos model description of the supported format version with a
    ``network_config``.

    Parameters
    ----------
    path : str or path-like
        The model, in any form :func:`model_paths` accepts.

    Returns
    -------
    dict
        The description.

    Raises
    ------
    ModelFileError
        The model is missing, is a pickle, or its description is missing or invalid.
    """
    p = Path(path)
    _check_not_pickle(p)
    if p.suffix not in ("", ".safetensors", ".json") and p.is_file():
        raise ModelFileError(f"{p}: not a lumos model file (expected NAME.safetensors + NAME.json)")
    weights_path, json_path = model_paths(p)
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: model weights file not found")
    if not json_path.is_file():
        raise ModelFileError(
            f"{json_path}: model description (config) not found next to {weights_path.name}"
        )
    try:
        with open(json_path) as f:
            description = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{json_path}: unreadable model description ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{json_path}: not a lumos model description")
    version = description.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path}: model format version {version!r} is not supported "
            f"(this lumos {__version__} reads version {FORMAT_VERSION})"
        )
    if not isinstance(description.get("network_config"), dict):
        raise ModelFileError(f"{json_path}: the model description has no network_config")
    return description


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               verify_checksum: bool = True) -> LumosNet:
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like
        The model, in any form :func:`model_paths` accepts.
    device : str or torch.device
        Where to put the model.
    verify_checksum : bool
        Check the weights' SHA-256 against the description.

    Returns
    -------
    LumosNet
        In ``eval()`` mode, with the description's ``training`` dict as ``metadata``.

    Raises
    ------
    ModelFileError
        For a pickle or non-safetensors file, a missing config, a wrong format version,
        or weights that do not match the config.
    """
    description = read_model_description(path)
    weights_path, json_path = model_paths(path)
    if _sniff(weights_path) != "safetensors":
        raise ModelFileError(f"{weights_path}: not a safetensors file")
    expected = description.get("weights_sha256")
    if verify_checksum and expected and sha256_file(weights_path) != expected:
        raise ModelFileError(f"{weights_path}: checksum does not match {json_path.name}")
    try:
        config = NetworkConfig.from_dict(description["network_config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{json_path}: invalid network_config ({exc})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    model = LumosNet(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFileError(f"{weights_path}: weights do not match the config ({first})") from None
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    model.metadata = dict(description.get("training") or {})
    model.to(device)
    model.eval()
    return model


def default_model_path() -> Path:
    """Path (stem) of the pretrained model shipped inside the package.

    Returns
    -------
    Path
        ``.../lumos/data/model/lumos-default`` (files ``.safetensors`` and ``.json``).
    """
    return Path(str(resources.files("lumos"))) / "data" / "model" / DEFAULT_MODEL_NAME


def load_default_model(device: str | torch.device = "cpu") -> LumosNet:
    """Load the shipped pretrained model.

    Raises
    ------
    ModelFileError
        While no pretrained model is shipped.
    """
    stem = default_model_path()
    weights, description = model_paths(stem)
    if not (weights.is_file() and description.is_file()):
        raise ModelFileError(
            f"no pretrained lumos model is shipped yet (expected {weights}); "
            "train one with `lumos train` and pass it with --model"
        )
    return load_model(stem, device=device)
