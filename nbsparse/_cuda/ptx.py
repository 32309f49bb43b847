"""Compile every CUDA kernel to PTX without a GPU: Numba's typing check for real hardware.

The simulator runs kernels as plain Python, so it never sees a typing error, an
unsupported call or an accidental float64 promotion in a float32 kernel. This
module compiles each kernel for float32 and float64 with ``cuda.compile_ptx``,
which needs no GPU and no driver, only the CUDA compiler wheels
(``pip install "numba-cuda[cu12]"``), and the real CUDA target: it cannot run
under ``NUMBA_ENABLE_CUDASIM=1``. From a shell::

    NUMBA_ENABLE_CUDASIM=0 python -m nbsparse._cuda.ptx
"""

import functools
import sys
import time

from . import arrays, blocksparse, hsoftmax, inference, launch, optim, softmax, topk

DTYPES = ("float32", "float64")


def kernels(threads=128, tile=32):
    """``{name: (python function, argtypes builder)}`` for every kernel.

    The builder maps a Numba float type to the argument types of a launch with
    C-contiguous arrays of that dtype and ``intp`` indices. Factory kernels are
    built for blocks of ``threads`` (a power of two) and gemv tiles of ``tile``.
    """
    from numba import types

    i1, i2 = types.intp[::1], types.intp[:, ::1]
    f64_2 = types.float64[:, ::1]

    def a(dt, ndim):
        return types.Array(dt, ndim, "C")

    softmax_rows, softmax_grad_rows = softmax._kernels(threads)
    nll_forward, nll_backward = hsoftmax._nll_kernels(threads)
    table = {
        "gemv_flat": (blocksparse._gemv_flat,
                      lambda t: (a(t, 3), a(t, 4), a(t, 3), i2, i2)),
        "gemv_tiled": (blocksparse._gemv_tiled(threads, tile),
                       lambda t: (a(t, 3), a(t, 4), a(t, 3), i2, i2)),
        "set_bias": (blocksparse._set_bias, lambda t: (a(t, 3), a(t, 2), i2)),
        "outer_atomic": (blocksparse._outer_atomic,
                         lambda t: (a(t, 4), a(t, 3), a(t, 3), i2, i2, t)),
        "outer_segments": (blocksparse._outer_segments,
                           lambda t: (a(t, 4), a(t, 3), a(t, 3), i2, i2, t, i1, i1)),
        "grad_h": (blocksparse._grad_h(threads), lambda t: (a(t, 3), a(t, 4), a(t, 3), i2, i2)),
        "bias_grad_atomic": (blocksparse._bias_grad_atomic, lambda t: (a(t, 2), a(t, 3), i2)),
        "bias_grad_segments": (blocksparse._bias_grad_segments,
                               lambda t: (a(t, 2), a(t, 3), i2, i1, i1)),
        "softmax_rows": (softmax_rows, lambda t: (a(t, 2), a(t, 2))),
        "softmax_grad_rows": (softmax_grad_rows, lambda t: (a(t, 2), a(t, 2), a(t, 2))),
        "full_forward": (hsoftmax._full_forward, lambda t: (a(t, 2), a(t, 3), a(t, 2))),
        "target_forward": (hsoftmax._target_forward,
                           lambda t: (a(t, 2), a(t, 2), i1, i1, a(t, 1))),
        "full_backward": (hsoftmax._full_backward(threads),
                          lambda t: (a(t, 2), a(t, 2), a(t, 3), a(t, 2), a(t, 3))),
        "target_backward": (hsoftmax._target_backward,
                            lambda t: (a(t, 1), a(t, 2), a(t, 2), i1, i1, a(t, 2), a(t, 2))),
        "nll_forward": (nll_forward, lambda t: (a(t, 2), a(t, 2), i1, i1, a(t, 1))),
        "nll_backward": (nll_backward,
                         lambda t: (a(t, 1), a(t, 2), a(t, 2), i1, i1, a(t, 2), a(t, 2))),
        "gather_rows": (arrays._gather_rows, lambda t: (a(t, 2), a(t, 2), i1)),
        "scatter_rows": (arrays._scatter_rows, lambda t: (a(t, 2), i1, a(t, 2))),
        "topk": (topk._topk_kernel(threads),
                 lambda t: (a(t, 2), a(t, 2), a(t, 3), a(t, 2), types.int64, i2, a(t, 2), i1,
                            a(t, 2), a(t, 2), a(t, 2), i2, a(t, 2), i2)),
        "logprob": (inference._logprob,
                    lambda t: (a(t, 2), a(t, 2), a(t, 3), a(t, 2), i2, types.int64, a(t, 2))),
        "sample": (inference._sample,
                   lambda t: (a(t, 2), a(t, 2), a(t, 3), a(t, 2), types.int64, types.int64, types.uint64,
                              i1, f64_2)),
        "sgd_dense": (optim._sgd_dense, lambda t: (a(t, 1), a(t, 1), t)),
        "sgd_blocks": (optim._sgd_blocks, lambda t: (a(t, 2), i1, a(t, 2), t)),
        "adam_dense": (optim._adam_dense, lambda t: (a(t, 1), a(t, 1), a(t, 1), a(t, 1)) + (t,) * 8),
        "adam_blocks": (optim._adam_blocks,
                        lambda t: (a(t, 2), i1, a(t, 2), a(t, 2), a(t, 2)) + (t,) * 8),
    }
    return {name: (kernel.py_func, argtypes) for name, (kernel, argtypes) in table.items()}


@functools.cache
def compile_kernel(name, dtype, cc=(7, 0)):
    """PTX text of kernel ``name`` for ``dtype`` ("float32" or "float64"); memoised."""
    from numba import cuda, types

    if launch.SIM:
        raise RuntimeError(
            "compile_ptx is not available in the CUDA simulator; "
            "run with NUMBA_ENABLE_CUDASIM=0 (no GPU is needed)"
        )
    func, argtypes = kernels()[name]
    ptx, _ = cuda.compile_ptx(func, argtypes(getattr(types, dtype)), cc=cc,
                              launch_bounds=getattr(func, "launch_bounds", None))
    return ptx


def compile_all(cc=(7, 0)):
    """Compile every kernel for float32 and float64; ``{"name[dtype]": PTX size in characters}``.

    Raises RuntimeError under the simulator, and Numba's errors for a kernel that
    does not type-check or a missing CUDA compiler.
    """
    return {f"{name}[{dtype}]": len(compile_kernel(name, dtype, cc))
            for dtype in DTYPES for name in kernels()}


def main():
    start = time.perf_counter()
    sizes = compile_all()
    for key, size in sizes.items():
        print(f"{key:32s} {size:8d}")
    print(f"{len(sizes)} kernels compiled in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
