"""Every CUDA kernel compiles to PTX for float32 and float64 (Numba's typing, as on a GPU).

The simulator runs kernels as Python and never types them, so this is the only
check that the kernels compile for real hardware. ``compile_ptx`` needs no GPU,
only the CUDA compiler wheels (``numba-cuda[cu12]``), but it does not exist in
the simulator, so the check runs in a child process with the real CUDA target
whatever this session uses. Skipped, with the reason, without the compiler.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")

CHILD = r"""
import json
from numba import cuda, types

def probe(a):
    a[0] = 1.0

try:  # a one-line kernel: if it fails, the toolchain is missing, not our kernels broken
    cuda.compile_ptx(probe, (types.float32[::1],), cc=(7, 0))
except Exception as exc:
    print(json.dumps({"skip": "no working CUDA compiler (pip install 'numba-cuda[cu12]'): "
                              f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)

from nbsparse._cuda import ptx

sizes = ptx.compile_all()
text = {key: ptx.compile_kernel(name, dtype) for name in ptx.kernels() for dtype in ptx.DTYPES
        for key in [f"{name}[{dtype}]"]}
print(json.dumps({
    "sizes": sizes,
    "f64_in_f32": sorted(k for k, t in text.items() if k.endswith("[float32]") and ".f64" in t),
    "atomics": sorted(k for k, t in text.items() if "atom.global.add" in t),
    "barriers": sorted(k for k, t in text.items() if "bar.sync" in t),
}))
"""


@pytest.fixture(scope="module")
def compiled():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    return report


def names(keys):
    return {key.split("[")[0] for key in keys}


def test_every_kernel_compiles_for_both_dtypes(compiled):
    sizes = compiled["sizes"]
    kernels = names(sizes)
    assert len(kernels) == 25  # the 16 of the ops, gather_rows and scatter_rows (block lists), 4 optimizer steps,
    # topk, logprob and sample (inference)
    assert set(sizes) == {f"{k}[{d}]" for k in kernels for d in ("float32", "float64")}
    assert all(size > 0 for size in sizes.values())


def test_float32_kernels_do_no_float64_arithmetic(compiled):
    # A float literal such as 0.0 would promote a float32 kernel to float64 (slow on most GPUs).
    # The sampler alone computes in float64 by contract: its inverse CDF runs over float64
    # probabilities, as on the CPU, so a seed draws the same outputs on both.
    assert compiled["f64_in_f32"] == ["sample[float32]"]


def test_only_the_atomic_kernels_use_atomics(compiled):
    assert names(compiled["atomics"]) == {"outer_atomic", "bias_grad_atomic"}


def test_only_the_shared_memory_kernels_use_barriers(compiled):
    assert names(compiled["barriers"]) == {"gemv_tiled", "softmax_rows", "softmax_grad_rows",
                                           "full_backward", "nll_forward", "nll_backward", "topk"}


DISPATCH_CHILD = r"""
import json
from numba import cuda, types
from nbsparse._cuda import arrays, hsoftmax

def compiles(func, argtypes):
    try:
        cuda.compile_ptx(func.py_func, argtypes, cc=(7, 0))
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:500]

report = {}
for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
    # the caller's index dtype reaches this kernel unconverted
    report[f"count_outside[{name}]"] = compiles(
        arrays._count_outside, (getattr(types, name)[::1], types.int64, types.int32[::1]))
for name in ("float32", "float64"):
    t = getattr(types, name)
    report[f"fill[{name}]"] = compiles(arrays._fill, (t[::1], t))
report["split_target"] = compiles(
    hsoftmax._split_target, (types.intp[::1], types.int64, types.intp[::1], types.intp[::1]))
print(json.dumps(report))
"""


def test_dispatch_kernels_compile_for_every_index_dtype(compiled):
    """The device backend's own kernels (fill, index range count, target split) compile too.

    ``ptx.kernels()`` lists the op kernels; these run in the dispatch layer, and
    ``count_outside`` is compiled for whatever integer dtype the caller's indices have.
    """
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run([sys.executable, "-c", DISPATCH_CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == 11
    assert {k: v for k, v in report.items() if v != "ok"} == {}
