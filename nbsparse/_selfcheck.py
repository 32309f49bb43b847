"""``python -m nbsparse check``: run every public op once and compare it with the reference."""

import time

import numpy as np

from . import _reference
from .blocksparse import (
    sparse_block_dot,
    sparse_block_dot_grad,
    sparse_block_gemv,
    sparse_block_outer,
)
from .hsoftmax import h_softmax, h_softmax_grad, h_softmax_nll, h_softmax_nll_grad
from .softmax import softmax, softmax_grad

_TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _cases(dtype, rng):
    """(name, public function, reference function, args) for every op, on a small problem."""
    def f(*shape):
        return rng.standard_normal(shape).astype(dtype)

    batch, i_win, o_win, i_blocks, o_blocks, i_size, o_size = 32, 3, 2, 8, 16, 24, 40
    W, h, b = f(i_blocks, o_blocks, i_size, o_size), f(batch, i_win, i_size), f(o_blocks, o_size)
    o, g = f(batch, o_win, o_size), f(batch, o_win, o_size)
    input_idx = rng.integers(0, i_blocks, (batch, i_win))
    output_idx = rng.integers(0, o_blocks, (batch, o_win))
    n_in, n_classes, K, n_outputs = 48, 12, 16, 180
    x, W1, b1 = f(batch, n_in), f(n_in, n_classes), f(n_classes)
    W2, b2 = f(n_classes, n_in, K), f(n_classes, K)
    target = rng.integers(0, n_outputs, batch)
    hsm = (x, batch, n_outputs, n_classes, K, W1, b1, W2, b2)
    scores = f(batch, 1000)
    return [
        ("sparse_block_gemv", sparse_block_gemv, _reference.sparse_block_gemv,
         (o, W, h, input_idx, output_idx)),
        ("sparse_block_dot", sparse_block_dot, _reference.sparse_block_dot,
         (W, h, input_idx, b, output_idx)),
        ("sparse_block_outer", sparse_block_outer, _reference.sparse_block_outer,
         (W, h, g, input_idx, output_idx, 0.5)),
        ("sparse_block_dot_grad", sparse_block_dot_grad,
         _reference.sparse_block_dot_grad, (g, W, h, input_idx, b, output_idx)),
        ("softmax", softmax, _reference.softmax, (scores,)),
        ("softmax_grad", softmax_grad, _reference.softmax_grad,
         (scores, _reference.softmax(scores))),
        ("h_softmax (full)", h_softmax, _reference.h_softmax, hsm),
        ("h_softmax (target)", h_softmax, _reference.h_softmax, hsm + (target,)),
        ("h_softmax_grad (full)", h_softmax_grad, _reference.h_softmax_grad,
         (f(batch, n_outputs),) + hsm),
        ("h_softmax_grad (target)", h_softmax_grad, _reference.h_softmax_grad,
         (f(batch),) + hsm + (target,)),
        ("h_softmax_nll", h_softmax_nll, _reference.h_softmax_nll, hsm + (target,)),
        ("h_softmax_nll_grad", h_softmax_nll_grad, _reference.h_softmax_nll_grad,
         (f(batch),) + hsm + (target,)),
    ]


def _time(func, args, repeat=20):
    start = time.perf_counter()
    for _ in range(repeat):
        func(*args)
    return (time.perf_counter() - start) / repeat


def run(print=print):
    """Run the check; return True when every op matched the reference.

    ``max err`` is the largest absolute difference from the reference divided by
    the largest reference magnitude; ``reference`` times the NumPy loops.
    """
    import numba

    print(f"nbsparse self-check: numba {numba.__version__}, numpy {np.__version__}, "
          f"{numba.get_num_threads()} threads")
    print(f"{'op':26s} {'dtype':8s} {'first call':>11s} {'warm call':>10s} "
          f"{'reference':>10s} {'max err':>10s}")
    ok = True
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for name, func, reference, args in _cases(dtype, rng):
            start = time.perf_counter()
            result = func(*args)
            first = time.perf_counter() - start
            expected = reference(*args)
            pairs = zip(result, expected) if isinstance(result, tuple) else [(result, expected)]
            err = 0.0
            for got, want in pairs:
                scale = float(np.max(np.abs(want), initial=0.0)) or 1.0
                err = max(err, float(np.max(np.abs(got - want), initial=0.0)) / scale)
                ok &= bool(np.allclose(got, want, **_TOLERANCE[dtype]))
            print(f"{name:26s} {np.dtype(dtype).name:8s} {first * 1e3:9.1f}ms "
                  f"{_time(func, args) * 1e3:8.3f}ms {_time(reference, args, 3) * 1e3:8.2f}ms "
                  f"{err:10.1e}")
    print("all ops match the NumPy reference" if ok else "MISMATCH: see the rows above")
    return ok
