"""One definition of each quantity: sigma68, D, the profile-validity rule and the PAUCam
geometry are defined once and every module uses that one (checked on the sources and on
the behaviour)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
from astropy.table import Table

from lumos.catalogue import validate_catalogue
from lumos.classical import ContextCutouts
from lumos.classical.common import bad_shape
from lumos.flags import Flag
from lumos.imageio import ImageMeta
from lumos.instrument import CCD_SIZE, PIXEL_SCALE
from lumos.network import NetworkConfig
from lumos.profiles import SersicRenderer, valid_profile_parameters
from lumos.simulate import SimulationConfig
from lumos.validation.scenes import CONTEXT, Targets, clean_sky, make_observation

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("src", "bench", "tests", "scripts") for p in (ROOT / d).rglob("*.py"))

# r50, n, q, pa and whether the rule accepts them
ROWS = [
    (0.5, 1.0, 0.7, 30.0, True),
    (0.5, 1.0, 0.05, 30.0, True),
    (20.0, 6.2, 1.0, 0.0, True),
    (0.5, 0.3, 0.03, 30.0, False),  # the q = 0.03 galaxy of the issue
    (25.0, 1.0, 0.7, 30.0, False),
    (0.0, 1.0, 0.7, 30.0, False),
    (np.nan, 1.0, 0.7, 30.0, False),
    (0.5, 0.2, 0.7, 30.0, False),
    (0.5, 6.3, 0.7, 30.0, False),
    (0.5, 1.0, 1.2, 30.0, False),
    (0.5, 1.0, 0.7, np.nan, False),
]


def _columns():
    r50, n, q, pa, ok = (np.array(c) for c in zip(*ROWS, strict=True))
    return r50, n, q, pa, ok.astype(bool)


def test_the_rule():
    r50, n, q, pa, ok = _columns()
    np.testing.assert_array_equal(valid_profile_parameters(r50, n, q, pa).numpy(), ok)


def test_catalogue_flags_bad_profile_by_the_rule():
    r50, n, q, pa, ok = _columns()
    m = len(ok)
    table = Table({"x": np.zeros(m), "y": np.zeros(m), "r50": r50, "sersic_n": n, "q": q,
                   "pa": pa, "i_mag": np.full(m, 20.0)})  # fmt: skip
    flagged = (validate_catalogue(table) & int(Flag.BAD_PROFILE)) != 0
    np.testing.assert_array_equal(flagged, ~ok)


def _profiles(m: int, size: int = CONTEXT) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    g = np.exp(-(x**2 + y**2) / 8.0)
    return np.broadcast_to(g / g.sum(), (m, size, size)).astype(np.float32)


def test_classical_methods_reject_shapes_by_the_rule():
    r50, n, q, pa, ok = _columns()
    m = len(ok)
    cut = ContextCutouts(pixels=np.zeros((m, CONTEXT, CONTEXT)),
                         valid=np.ones((m, CONTEXT, CONTEXT), bool), offset=np.zeros((m, 2)),
                         r50=r50, n=n, q=q, pa=pa, profile=_profiles(m))  # fmt: skip
    np.testing.assert_array_equal(bad_shape(cut), ~ok)


def test_validation_scenes_flag_bad_profile_by_the_rule():
    r50, n, q, pa, ok = _columns()
    m = len(ok)
    ones = np.ones(m)
    targets = Targets(r50=ones * 0.5, n=ones, q=ones * 0.7, pa=ones * 30.0, flux=ones * 1e3,
                      i_mag=ones * 20.0, band=np.full(m, 23), camera_state=np.zeros(m, int),
                      psf_fwhm=ones * 0.9, psf_beta=ones * 3.5, offset=np.zeros((m, 2)),
                      ccd_xy=np.tile(np.asarray(CCD_SIZE, float) / 2, (m, 1)))  # fmt: skip
    prof = _profiles(m)
    obs = make_observation(targets, np.zeros((m, CONTEXT, CONTEXT), np.float32), prof, prof,
                           clean_sky(), np.random.default_rng(0),
                           catalogue={"r50": r50, "n": n, "q": q, "pa": pa})  # fmt: skip
    flagged = (obs.batch.flags.numpy() & int(Flag.BAD_PROFILE)) != 0
    np.testing.assert_array_equal(flagged, ~ok)
    np.testing.assert_array_equal((obs.cutouts.flags & int(Flag.BAD_PROFILE)) != 0, ~ok)


def test_one_pixel_scale_and_ccd_size():
    assert SimulationConfig().pixel_scale == PIXEL_SCALE
    assert tuple(SimulationConfig().ccd_size) == CCD_SIZE
    assert tuple(NetworkConfig.tiny().ccd_size) == CCD_SIZE
    assert SersicRenderer(size=16).pixel_scale == PIXEL_SCALE
    assert ImageMeta.__dataclass_fields__["pixel_scale"].default == PIXEL_SCALE
    assert ContextCutouts.__dataclass_fields__["pixel_scale"].default == PIXEL_SCALE


# ----------------------------------------------------------------------- source checks
def _code_constants(tree: ast.AST) -> list[ast.Constant]:
    """Numeric constants of the code (docstrings and other strings excluded)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, int | float) and not isinstance(n.value, bool)]  # fmt: skip


_LEVELS = {16, 84, 15.865, 84.135, 0.16, 0.84, 0.158655, 0.841345}
_QUANTILE_CALLS = {"percentile", "nanpercentile", "quantile", "nanquantile"}
_D_PATTERN = re.compile(r"\)\s*/\s*(np|torch)\.sqrt\(\s*\w+\s*\*\*\s*2\s*\+\s*\w+\s*\*\*\s*2\s*\)")


def _problems(rel: str, text: str) -> list[str]:
    tree = ast.parse(text)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in _QUANTILE_CALLS:
            levels = sorted({c.value for c in _code_constants(node)} & _LEVELS)
            if levels:
                out.append(f"line {node.lineno}: quantiles at {levels} (lumos.stats.P16, P84)")
        if isinstance(node, ast.FunctionDef) and re.search("sigma68|s68", node.name):
            calls = {c.func.attr for c in ast.walk(node) if isinstance(c, ast.Call)
                     and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)
                     and c.func.value.id in ("np", "numpy", "torch")}  # fmt: skip
            if calls & _QUANTILE_CALLS and rel != "src/lumos/stats.py":
                out.append(f"line {node.lineno}: {node.name} computes quantiles "
                           "(use lumos.stats.sigma68)")  # fmt: skip
        if isinstance(node, ast.Tuple | ast.List) and rel != "src/lumos/instrument.py":
            if {4096, 2048} <= {c.value for c in node.elts if isinstance(c, ast.Constant)}:
                out.append(f"line {node.lineno}: CCD size literal (lumos.instrument.CCD_SIZE)")
    if rel != "src/lumos/instrument.py":
        out += [f"line {c.lineno}: 0.263 (lumos.instrument.PIXEL_SCALE)"
                for c in _code_constants(tree) if c.value == 0.263]  # fmt: skip
    if rel != "src/lumos/stats.py" and _D_PATTERN.search(text):
        out.append("D = (f1 - f2) / sqrt(s1^2 + s2^2) (use lumos.stats.pair_pull)")
    return out


def test_no_second_definition_in_the_sources():
    """No second sigma68, quantile convention, D, pixel scale or CCD size in src, bench,
    tests or scripts."""
    found = {}
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel != "tests/test_definitions.py":
            problems = _problems(rel, path.read_text())
            if problems:
                found[rel] = problems
    assert not found, "\n".join(f"{k}: {'; '.join(v)}" for k, v in found.items())


def test_the_source_check_finds_copies():
    copy = (
        "import numpy as np\n"
        "PIX = 0.263\n"
        "def _sigma68(x):\n"
        "    q16, q84 = np.percentile(x, [16, 84])\n"
        "    return (q84 - q16) / 2\n"
        "xy = np.array([4096.0, 2048.0])\n"
        "d = (f1 - f2) / np.sqrt(s1**2 + s2**2)\n"
    )
    assert len(_problems("src/lumos/x.py", copy)) == 5
