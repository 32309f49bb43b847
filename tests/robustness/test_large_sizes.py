"""No 32-bit overflow in index arithmetic, for arrays of more than 2**31 (and 2**32) elements.

Nothing here allocates more than a few MiB:

- Numba's own typing of every CPU kernel (for every signature the public
  functions compile) and of every CUDA kernel (the real CUDA target, in a child
  process): every integer the kernels compute (loop counters, flat indices,
  products, quotients) is a signed 64-bit integer; on the GPU only the thread
  and block registers (``threadIdx.x`` etc.) are 32-bit, and they are widened
  before any arithmetic with sizes.
- A CPU kernel run on a weight array of 4.3e9 elements that is an overlapping
  view of 1 MiB, read at block positions whose flat index is past 2**32.
- The device index check counts out-of-range values in an int32: it checks at
  most 2**31 - 1 indices per launch, so the count can neither overflow nor wrap
  to 0 (tested with a chunk of 4).
"""

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import nbsparse as nbs
from nbsparse import _cpu, optim

CPU_MODULES = tuple(importlib.import_module(f"nbsparse._cpu.{m.name}")
                    for m in pkgutil.iter_modules(_cpu.__path__))
"""Every module of the CPU kernel package, found on disk (a new one is checked too)."""


def narrow_integers(typemap, allowed=()):
    """``{variable: type}`` of every integer that is not a plain signed 64-bit one.

    Literal integers (compile-time constants) are fine; range iterators must
    yield int64; names in ``allowed`` are skipped.
    """
    from numba.core import types

    bad = {}
    for name, ty in typemap.items():
        if name in allowed:
            continue
        if isinstance(ty, types.RangeIteratorType):
            ty = ty.yield_type
        if isinstance(ty, types.Integer) and not isinstance(ty, types.Literal) and ty != types.int64:
            bad[name] = str(ty)
    return bad


def run_every_op_once():
    """Compile (or load) the CPU kernels through the public API, float32 and float64."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        W = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
        h = rng.standard_normal((3, 2, 4)).astype(dtype)
        idx_in, idx_out = rng.integers(0, 2, (3, 2)), rng.integers(0, 3, (3, 2))
        b, g = rng.standard_normal((3, 5)).astype(dtype), np.ones((3, 2, 5), dtype)
        nbs.sparse_block_gemv(g, W, h, idx_in, idx_out)
        nbs.sparse_block_outer(np.zeros_like(W), h, g, idx_in, idx_out)
        nbs.sparse_block_dot_grad(g, W, h, idx_in, b, idx_out)
        nbs.softmax_grad(g, nbs.softmax(g))
        x, W1, b1 = (rng.standard_normal(s).astype(dtype) for s in ((3, 4), (4, 2), (2,)))
        W2, b2 = rng.standard_normal((2, 4, 3)).astype(dtype), np.zeros((2, 3), dtype)
        args = (x, 3, 5, 2, 3, W1, b1, W2, b2)
        nbs.h_softmax(*args)
        nbs.h_softmax(*args, target=np.array([0, 4, 2]))
        nbs.h_softmax_grad(np.ones((3, 5), dtype), *args)
        nbs.h_softmax_grad(np.ones(3, dtype), *args, target=np.array([0, 4, 2]))
        nbs.h_softmax_nll(*args, np.array([0, 4, 2]))
        nbs.h_softmax_nll_grad(np.ones(3, dtype), *args, np.array([0, 4, 2]))
        # Block lists: many terms per block (the outer update on touched rows and columns) and few.
        nbs.h_softmax_nll_grad(np.ones(3, dtype), *args, np.array([0, 4, 2]), sparse=True)
        W_wide = rng.standard_normal((20, 30, 4, 5)).astype(dtype)
        nbs.sparse_block_dot_grad(g, W_wide, h, idx_in, rng.standard_normal((30, 5)).astype(dtype), idx_out,
                                  sparse=True)
        nbs.h_softmax_topk(*args, 4)
        nbs.h_softmax_logprob(*args, np.array([[0, 4], [2, 2], [1, 3]]))
        nbs.h_softmax_sample(*args, seed=0)
        state = optim.AdamState.zeros_like(W)
        for grad in (np.ones_like(W), nbs.BlockGrad(np.array([[0, 1]]), np.ones((1, 4, 5), dtype))):
            optim.sgd(W, grad, 0.1)
            optim.adam(W, grad, state)


def infer_types(func, signature):
    """Numba's types for ``func`` at argument types ``signature``: ``(typemap, calltypes)``."""
    from numba.core import compiler
    from numba.core.registry import cpu_target
    from numba.core.typed_passes import type_inference_stage

    cpu_target.typing_context.refresh()  # registers prange & co. for the typing below
    cpu_target.target_context.refresh()
    ir = compiler.run_frontend(func)
    typemap, _, calltypes, _ = type_inference_stage(cpu_target.typing_context,
                                                    cpu_target.target_context, ir, signature, None)
    return typemap, calltypes


def typed_cpu_kernels():
    """``{label: typemap}`` for every signature of every CPU kernel, and of every jitted
    helper they call (a helper compiled into its caller's cache entry has no signature of
    its own: it is typed at the argument types its caller passes)."""
    from numba.core import types
    from numba.core.registry import CPUDispatcher

    run_every_op_once()
    names = {}
    todo = []
    for module in CPU_MODULES:
        for name, kernel in vars(module).items():
            if isinstance(kernel, CPUDispatcher):
                names[kernel] = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
                todo += [(kernel, signature) for signature in kernel.signatures]
    typed = {}
    while todo:
        kernel, signature = todo.pop()
        label = f"{names.get(kernel, kernel.py_func.__qualname__)}{tuple(signature)}"
        if label in typed:
            continue
        typemap, calltypes = infer_types(kernel.py_func, signature)
        typed[label] = typemap
        for call, call_signature in calltypes.items():
            if getattr(call, "op", None) != "call":  # getitem, binop, setitem, ...
                continue
            callee = typemap.get(call.func.name)
            if isinstance(callee, types.Dispatcher):
                todo.append((callee.dispatcher, tuple(call_signature.args)))
    never = sorted(label for kernel, label in names.items()
                   if not any(t.startswith(label + "(") for t in typed))
    assert never == [], f"never typed (add a call to run_every_op_once): {never}"
    return typed


def test_the_narrow_integer_check_bites():
    """Guard: 32-bit index arithmetic, as a careless kernel would write it, is reported."""
    from numba import types

    def careless(a, n):
        total = 0.0
        for t in range(np.int32(n)):  # a 32-bit loop counter: wraps past 2**31
            total += a[t * np.int32(2)]
        return total

    bad = narrow_integers(infer_types(careless, (types.float64[::1], types.int64))[0])
    assert "t" in bad and bad["t"] == "int32"


def _without_chunksize(typemap, bad):
    """Drop the parallel chunk size a kernel saves and restores: Numba's API makes it a
    uint64 (the returned temporary and ``caller_chunksize``); it is never an index."""
    if "caller_chunksize" not in typemap:
        return bad
    return {name: ty for name, ty in bad.items()
            if not (ty == "uint64" and (name == "caller_chunksize" or "call" in name))}


def _without_hash_state(label, bad):
    """Drop the uint64 words of h_softmax_sample's SplitMix64 (``inference._uniform``, and the
    ``seed`` that ``inference.sample`` passes it): a 64-bit unsigned hash of (seed, row, counter),
    never an index; narrower integers there still count."""
    if label.startswith("inference._uniform("):
        return {name: ty for name, ty in bad.items() if ty != "uint64"}
    if label.startswith("inference.sample("):
        return {name: ty for name, ty in bad.items() if not (ty == "uint64" and name in ("seed", "arg.seed"))}
    return bad


def test_cpu_kernels_compute_every_index_in_64_bits():
    typed = typed_cpu_kernels()
    checked = list(typed)
    narrow = {label: bad for label, typemap in typed.items()
              if (bad := _without_hash_state(label, _without_chunksize(typemap, narrow_integers(typemap))))}
    assert narrow == {}
    modules = {label.split(".")[0] for label in checked}
    assert {"products", "outer", "grads", "softmax", "hsoftmax"} <= modules, checked  # guard: kernels were found


CUDA_CHILD = r"""
import json
from numba import cuda, types

def probe(a):
    a[0] = 1.0

try:  # a one-line kernel: if it fails, the toolchain is missing, not our kernels broken
    cuda.compile_ptx(probe, (types.float32[::1],), cc=(7, 0))
except Exception as exc:
    print(json.dumps({"skip": f"no working CUDA compiler: {type(exc).__name__}: {exc}"}))
    raise SystemExit(0)

from numba.cuda.compiler import compile_cuda
from nbsparse._cuda import arrays, hsoftmax, ptx

table = {f"{name}[{dt}]": (func, argtypes(getattr(types, dt)))
         for name, (func, argtypes) in ptx.kernels().items() for dt in ptx.DTYPES}
for dt in ("float32", "float64"):
    t = getattr(types, dt)
    table[f"fill[{dt}]"] = (arrays._fill.py_func, (t[::1], t))
for dt in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
    table[f"count_outside[{dt}]"] = (arrays._count_outside.py_func,
                                     (getattr(types, dt)[::1], types.int64, types.int32[::1]))
table["split_target"] = (hsoftmax._split_target.py_func,
                         (types.intp[::1], types.int64, types.intp[::1], types.intp[::1]))
report = {}
for key, (func, argtypes) in table.items():
    typemap = compile_cuda(func, types.void, argtypes, cc=(7, 0)).type_annotation.typemap
    report[key] = {name: str(ty) for name, ty in typemap.items()
                   if isinstance(ty, (types.Integer, types.RangeIteratorType))}
print(json.dumps({"types": report}))
"""

# The 32-bit special registers: threadIdx.x (bound to ``tid``, also as the ``tid``
# parameter of the inlined device functions (``_cuda.launch.device``), which Numba
# renames ``<function>_v<n>_tid``) and the loads of blockIdx.x, gridDim.x, ...
# (Numba names those temporaries ``$<n>load_attr.<m>``).
GPU_REGISTER = re.compile(r"(\w+_v\d+_)?tid")


@pytest.fixture(scope="module")
def cuda_integer_types():
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run([sys.executable, "-c", CUDA_CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    return report["types"]


def _allowed_in_count_outside(name, ty):
    """``value`` is one index of the caller's dtype, only compared with 0 and n; the ``call``
    is ``cuda.atomic.add``'s return on the int32 counter (unused; see INDEX_CHECK_CHUNK)."""
    return name == "value" or ("call" in name and ty == "int32")


def _allowed_in_sample(name, ty):
    """The uint64 words of the CUDA sampler's SplitMix64 (``_cuda.inference._splitmix_uniform``,
    inlined, and the ``seed`` passed to it), as on the CPU (:func:`_without_hash_state`)."""
    return ty == "uint64" and (name in ("seed", "arg.seed") or name.startswith("_splitmix_uniform_"))


def test_cuda_kernels_compute_every_index_in_64_bits(cuda_integer_types):
    assert len(cuda_integer_types) == 2 * 25 + 2 + 8 + 1  # PTX table x 2 dtypes, fill, count_outside, split
    narrow = {}
    for kernel, typemap in cuda_integer_types.items():
        registers = {n for n, ty in typemap.items()
                     if (GPU_REGISTER.fullmatch(n) or "load_attr" in n) and ty in ("int32", "uint32")}
        bad = {n: ty for n, ty in typemap.items() if n not in registers
               and ty not in ("int64", "range_iter_int64") and not ty.startswith("Literal[int]")
               and not (kernel.startswith("count_outside") and _allowed_in_count_outside(n, ty))
               and not (kernel.startswith("sample[") and _allowed_in_sample(n, ty))}
        if bad:
            narrow[kernel] = bad
    assert narrow == {}


def test_register_temporaries_are_only_thread_and_block_coordinates(cuda_integer_types):
    """Guard for the allowance above: 32-bit values appear only in kernels that use them."""
    with_registers = {k.split("[")[0] for k, typemap in cuda_integer_types.items()
                      if any(ty == "int32" and "load_attr" in n for n, ty in typemap.items())}
    assert with_registers == {"gemv_tiled", "softmax_rows", "softmax_grad_rows", "full_backward",
                              "nll_forward", "nll_backward", "topk"}


# --------------------------------------------------------------------------- run, no allocation
def test_cpu_gemv_reads_a_weight_array_of_more_than_2_32_elements():
    """W is 65537 x 65537 blocks of 1 x 1 (4.3e9 elements) over 1 MiB: W[i, j] = memory[i + j]."""
    n = 2**16 + 1
    memory = np.random.default_rng(7).standard_normal(2 * n)
    W = as_strided(memory, shape=(n, n, 1, 1), strides=(8, 8, 8, 8), writeable=False)
    assert W.size > 2**32
    input_idx = np.array([[n - 1, 3], [n - 2, n - 1]])  # flat block index (n-1)*n + n-1 > 2**32
    output_idx = np.array([[n - 1], [7]])
    h, o = np.array([[[1.0], [2.0]], [[-1.0], [0.5]]]), np.zeros((2, 1, 1))

    _cpu.products.gemv(o, W, h, input_idx, output_idx)  # the kernel itself: the API would copy W

    expected = np.einsum("bi,bij->bj", h[:, :, 0], memory[input_idx[:, :, None] + output_idx[:, None, :]])
    np.testing.assert_allclose(o[:, :, 0], expected, rtol=1e-15)


@pytest.mark.cuda
def test_device_index_check_counts_at_most_a_chunk_per_launch(monkeypatch):
    from nbsparse import _cuda, _device

    assert _device.INDEX_CHECK_CHUNK <= 2**31 - 1  # the counter is an int32
    sizes = []
    count_outside = _cuda.arrays.count_outside

    def recording(idx, n, **kw):
        sizes.append(idx.size)
        return count_outside(idx, n, **kw)

    monkeypatch.setattr(_device, "INDEX_CHECK_CHUNK", 4)
    monkeypatch.setattr(_cuda.arrays, "count_outside", recording)
    from numba import cuda

    rng = np.random.default_rng(3)
    W, h = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((5, 2, 2))
    input_idx, output_idx = rng.integers(0, 3, (5, 2)), rng.integers(0, 2, (5, 1))
    args = [cuda.to_device(a) for a in (W, h, input_idx, output_idx)]

    result = nbs.sparse_block_dot(args[0], args[1], args[2], cuda.to_device(np.zeros((2, 2))),
                                  args[3])
    assert sizes == [4, 4, 2, 4, 1]  # input_idx (10 values) in chunks, then output_idx (5)
    np.testing.assert_allclose(result.copy_to_host(),
                               nbs.sparse_block_dot(W, h, input_idx, np.zeros((2, 2)), output_idx))

    sizes.clear()
    input_idx[4, 1] = 3  # the very last value, in the last chunk
    with pytest.raises(IndexError, match=r"^input_idx\[4, 1\] = 3 is outside \[0, 3\)"):
        nbs.sparse_block_gemv(cuda.to_device(np.zeros((5, 1, 2))), args[0], args[1],
                              cuda.to_device(input_idx), args[3])
    assert sizes == [4, 4, 2]
