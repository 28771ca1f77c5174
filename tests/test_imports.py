"""The import graph of lumos: layered, without cycles.

The graph is built by parsing the sources with :mod:`ast` (nothing is imported): every
``import`` and ``from ... import`` of a lumos module, at module level or inside a function,
is an edge; importing a module of another package also imports that package's
``__init__``. Each module belongs to one layer of :data:`LAYERS`; a module may import its
own layer (as long as there is no cycle) and the layers below, never a layer above. A new
module needs an entry here: put it in the lowest layer its imports allow.

Imports sit at module level. Only the command modules (``lumos/commands/``, loaded one at a
time by the CLI) import lumos inside functions; elsewhere a function may import only one of
the heavy third-party packages of :data:`LAZY_IMPORTS`. No module imports another module's
private (``_``-prefixed) names.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layers, lowest first. ``"pkg.*"`` is the package ``pkg`` and all its submodules.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundations": ("lumos", "lumos.errors", "lumos.flags", "lumos.instrument", "lumos.stats",
                    "lumos.chunks", "lumos.truncated_normal", "lumos.mixture_summaries",
                    "lumos.psf_base", "lumos.devices", "lumos.interrupts", "lumos.settings",
                    "lumos.rows"),
    "values": ("lumos.bands", "lumos.tableio", "lumos.stamps", "lumos.gaussian_mixture",
               "lumos.mixture", "lumos.psf", "lumos.image_psf", "lumos.sersic",
               "lumos.wraparound", "lumos.grid_product", "lumos.deconvolution",
               "lumos.sky.noise", "lumos.classical.geometry", "lumos.shared_error"),
    "physics": ("lumos.profiles", "lumos.spectra", "lumos.population", "lumos.bulgedisk",
                "lumos.sky.*", "lumos.backgrounds", "lumos.imageio", "lumos.psfex",
                "lumos.psfsource", "lumos.pixelmaps", "lumos.measure_table", "lumos.simconfig",
                "lumos.scene", "lumos.observe", "lumos.simfile"),
    "methods": ("lumos.catalogue", "lumos.classical.*", "lumos.network_config",
                "lumos.network_inputs", "lumos.network_ranges", "lumos.network",
                "lumos.model_io", "lumos.checkpoint", "lumos.loss", "lumos.evaluation",
                "lumos.training_config",
                "lumos.coadd", "lumos.prior", "lumos.bayes"),
    "simulation and measurement": ("lumos.simulate", "lumos.measure", "lumos.field",
                                   "lumos.manifest", "lumos.survey", "lumos.survey_description",
                                   "lumos.survey_file", "lumos.survey_models",
                                   "lumos.survey_sky", "lumos.psf_pool",
                                   "lumos.background_manifest"),
    "learning": ("lumos.streams", "lumos.data_pipeline", "lumos.training", "lumos.pairs",
                 "lumos.pairs_measured", "lumos.consistency", "lumos.transfer",
                 "lumos.calibration"),
    "validation": ("lumos.validation.*", "lumos.report"),
    "interface": ("lumos.commands.*", "lumos.cli"),
}

#: Third-party packages that a function outside ``lumos/commands/`` may import when called:
#: slow to import, and needed only by the few calls that read or draw with them.
LAZY_IMPORTS = ("astropy.io.fits", "dask.distributed", "galsim", "h5py", "matplotlib",
                "pyarrow")  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "lumos").rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The lumos modules that importing ``name`` imports directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # "from pkg import submodule" imports the submodule
                targets.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    out = set()
    for t in targets:
        if t not in modules:
            continue
        out.add(t)
        parts = t.split(".")
        for k in range(1, len(parts)):  # a foreign package's __init__ runs too
            parent = ".".join(parts[:k])
            if not (name == parent or name.startswith(parent + ".")):
                out.add(parent)
    out.discard(name)
    return out


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer_of(name: str) -> int | None:
    for level, entries in enumerate(LAYERS.values()):
        for entry in entries:
            if entry == name or (entry.endswith(".*") and
                                 (name == entry[:-2] or name.startswith(entry[:-1]))):  # fmt: skip
                return level
    return None


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_has_one_layer_and_every_entry_exists():
    modules = _modules()
    assert [m for m in modules if _layer_of(m) is None] == [], "add these modules to LAYERS"
    stale = [e for entries in LAYERS.values() for e in entries
             if (e[:-2] if e.endswith(".*") else e) not in modules]  # fmt: skip
    assert stale == []


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_imports():
    names = list(LAYERS)
    upward = [f"{src} ({names[_layer_of(src)]}) imports {dst} ({names[_layer_of(dst)]})"
              for src, dsts in _graph().items() for dst in sorted(dsts)
              if _layer_of(dst) > _layer_of(src)]  # fmt: skip
    assert upward == [], "\n".join(upward)


def test_the_former_cycles_are_gone():
    graph = _graph()
    assert "lumos.model_io" not in graph["lumos.network"]
    assert "lumos.profiles" not in graph["lumos.psf"]


def test_the_checks_see_cycles_and_upward_imports():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _layer_of("lumos.stats") < _layer_of("lumos.mixture") < _layer_of("lumos.cli")
    assert _layer_of("lumos.classical.aperture") == _layer_of("lumos.classical")


def _is_lumos(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "lumos"
    return any(a.name.split(".")[0] == "lumos" for a in node.names)


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements inside function bodies (methods and nested functions too)."""
    found = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found[(node.lineno, node.col_offset)] = node
    return [found[k] for k in sorted(found)]


def _misplaced_imports(tree: ast.AST) -> list[str]:
    """Imports inside functions that are not of a package of :data:`LAZY_IMPORTS`."""
    out = []
    for node in _function_imports(tree):
        if isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{a.name}" for a in node.names] if not node.level else []
        else:
            names = [a.name for a in node.names]
        lazy = names and all(any(n == p or n.startswith(p + ".") for p in LAZY_IMPORTS)
                             for n in names)  # fmt: skip
        if _is_lumos(node) or not lazy:
            out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


def _private_imports(tree: ast.AST) -> list[str]:
    """``from <lumos module> import _name`` statements, anywhere in the module."""
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and _is_lumos(node)
            and any(a.name.startswith("_") and not a.name.startswith("__")
                    for a in node.names)]  # fmt: skip


def test_imports_inside_functions_only_in_commands_or_of_heavy_packages():
    bad = [f"{name}, {line}" for name, path in _modules().items()
           if not name.startswith("lumos.commands.")
           for line in _misplaced_imports(ast.parse(path.read_text()))]  # fmt: skip
    assert bad == [], "move these imports to module level:\n" + "\n".join(bad)


def test_no_private_names_imported_across_modules():
    bad = [f"{name}, {line}" for name, path in _modules().items()
           for line in _private_imports(ast.parse(path.read_text()))]  # fmt: skip
    assert bad == [], "\n".join(bad)


def test_the_checks_see_misplaced_and_private_imports():
    source = (
        "import numpy\n"
        "from .stats import _helper, sigma68\n"
        "from . import __version__\n"
        "def f():\n"
        "    from .bands import get_band\n"
        "    import lumos.stats\n"
        "    import json\n"
        "    import matplotlib.pyplot as plt\n"
        "    from astropy.io import fits\n"
        "    class C:\n"
        "        def g(self):\n"
        "            from lumos.mixture import _roots\n"
    )
    tree = ast.parse(source)
    assert _misplaced_imports(tree) == [
        "line 5: from .bands import get_band", "line 6: import lumos.stats",
        "line 7: import json", "line 12: from lumos.mixture import _roots"]  # fmt: skip
    assert _private_imports(tree) == ["line 2: from .stats import _helper, sigma68",
                                      "line 12: from lumos.mixture import _roots"]  # fmt: skip
