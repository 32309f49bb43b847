"""Session set-up shared by every test module.

The CUDA simulator must be chosen before Numba is first imported:
setting ``NUMBA_ENABLE_CUDASIM`` after ``import numba`` is ignored. conftest is
imported before any test module, so CPU tests and simulator tests can share one
session. The simulator does not change the CPU kernels. On a GPU machine run
``NUMBA_ENABLE_CUDASIM=0 pytest`` to test the real device.
"""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import sys  # noqa: E402  (the environment must be set before anything can import numba)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

SEED = 20240611
"""The one seed of the ``rng`` fixture; every test starts from the same stream."""

# Hypothesis profiles. "ci" (the default) is reproducible: derandomize draws the
# same examples every run from a seed fixed per test, and no example database is
# read or written. "long" (``pytest --hypothesis-profile=long``) runs 20x the
# examples from fresh random seeds and keeps a database of failures in
# .hypothesis/. Tests that size their runs from ``settings.default.max_examples``
# (tests/support/fuzzing.py) follow the profile; tests with an explicit ``max_examples``
# keep it. The hypothesis plugin loads ``--hypothesis-profile`` after this file.
_COMMON = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=800, **_COMMON)
settings.load_profile("ci")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs CUDA kernels (simulator or GPU)")
    config.addinivalue_line("markers", "gpu: needs real hardware (CuPy, streams, perf)")


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if "cuda" in item.keywords or "gpu" in item.keywords]
    if not marked:
        return  # CPU-only selection: do not pay for importing numba.cuda
    from numba import cuda

    sim = cuda.jit.__module__.startswith("numba.cuda.simulator")
    real = not sim and cuda.is_available()
    for item in marked:
        if "gpu" in item.keywords and not real:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "cuda" in item.keywords and not (sim or real):
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU and the simulator is off"))


@pytest.fixture(scope="session", autouse=True)
def _fast_simulator():
    """Shorter GIL switch interval: simulated ``syncthreads`` busy-polls (about 5x faster)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def small_blocks(monkeypatch):
    """8 CUDA threads per block: fewer simulated threads, grids of several blocks and a ragged last one.

    Returns ``monkeypatch``, so a test can set another size. Imports numba.cuda only when asked for.
    """
    from nbsparse._cuda import launch

    monkeypatch.setattr(launch, "THREADS_PER_BLOCK", 8)
    return monkeypatch


@pytest.fixture
def rng():
    """A fresh generator with the fixed seed, so each test sees the same numbers every run."""
    return np.random.default_rng(SEED)
