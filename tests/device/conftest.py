"""Fixtures of the device tests: the strict simulator, the fake CuPy, the launch recorder.

None is autouse: a module asks for the strict simulator with
``pytest.mark.usefixtures("strict_device_arrays", "small_blocks")``.
"""

import sys

import pytest

from tests.support.device import SIM, make_fake_cupy, make_strict, record_launches


@pytest.fixture
def strict_device_arrays(monkeypatch):
    """Simulated device arrays answer only the real ``DeviceNDArray`` API (tests/support/device.py)."""
    make_strict(monkeypatch)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A fake ``cupy`` module in ``sys.modules`` for the test."""
    cp = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


@pytest.fixture
def launches(monkeypatch):
    """``(kernel name, stream)`` of every simulated kernel launch from now on."""
    if not SIM:
        pytest.skip("records the simulator's launches")
    return record_launches(monkeypatch)
