"""Shared test fixtures: the package from src/, the shared real-data folder, seeded RNGs,
torch thread settings, and helpers for synthetic stamp batches (``from conftest import ...``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# one BLAS/OpenMP thread per test process (set before numpy loads its BLAS): the tests run
# side by side in processes, and idle BLAS threads spinning on a shared core cost CPU time
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_xdist_auto_num_workers(config) -> int:
    """Worker processes for ``-n auto`` (pyproject's default): one per idle core.

    Idle cores are the CPU count minus the 1-minute load average; with fewer than two the
    tests run in this process (0 workers), since extra processes only add start-up time
    on a busy machine. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` or an explicit ``-n N`` override it.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idle = int((cpus or 1) - os.getloadavg()[0] + 0.5)
    return idle if idle >= 2 else 0

#: Side of the synthetic test stamps, pixels.
S = 60


@pytest.fixture
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy random generator."""
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread per test process: the suite runs in parallel processes
    (pytest-xdist), and oversubscribed torch threads are many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def restore_band_registry():
    """Survey files register bands globally: forget them after the test
    (``pytestmark = pytest.mark.usefixtures("restore_band_registry")``)."""
    from lumos import bands
    from lumos.survey import clear_population_tables

    saved = dict(bands._REGISTRY)
    yield
    bands._REGISTRY.clear()
    bands._REGISTRY.update(saved)
    clear_population_tables()


@pytest.fixture
def one_intra_op_thread():
    """One intra-op thread during each test, whatever earlier tests set (for modules of tiny
    tensors: much faster, and immune to CPU contention); use with
    ``pytestmark = pytest.mark.usefixtures("one_intra_op_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def stamp_coordinates(offset):
    """Pixel coordinates of S x S stamps: ``a`` [S] from the stamp centre, and ``dx``
    [n, 1, S] and ``dy`` [n, S, 1] from each galaxy's centre (``offset`` [n, 2], pixels)."""
    import torch

    c = (S - 1) / 2
    a = torch.arange(S, dtype=torch.float32) - c
    dx = a[None, None, :] - offset[:, 0, None, None]
    dy = a[None, :, None] - offset[:, 1, None, None]
    return a, dx, dy


def noisy_stamp_batch(mean, profile, flux, offset, g):
    """A StampBatch of the expected images ``mean`` [n, S, S] with Gaussian noise of variance
    ``mean + 25``; i magnitudes from ``flux`` (0.2 mag scatter), random CCD positions and
    band indices, all drawn from the torch generator ``g``; truth = ``flux``."""
    import torch

    from lumos.instrument import CCD_SIZE
    from lumos.stamps import StampBatch

    n = flux.shape[0]
    pixels = mean + torch.sqrt(mean + 25.0) * torch.randn(n, S, S, generator=g)
    i_mag = 24.5 - 2.5 * torch.log10(flux / 90.0) + 0.2 * torch.randn(n, generator=g)
    return StampBatch(
        pixels=pixels.float(),
        profile=profile.float(),
        i_mag=i_mag.float(),
        ccd_xy=torch.rand(n, 2, generator=g) * torch.tensor(CCD_SIZE, dtype=torch.float32),
        band_idx=torch.randint(0, 80, (n,), generator=g),
        flags=torch.zeros(n, dtype=torch.int64),
        offset=offset.float(),
        truth=flux.float(),
    )
