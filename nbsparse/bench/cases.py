"""One benchmark case per (op, workload, dtype): nbsparse, its peers, the reference and the bounds.

A case holds callables without arguments. ``ours`` and every peer compute the same
result, which is checked against ``nbsparse._reference`` before any of them is
timed; the ``yardsticks`` (a dense GEMM with the same FLOPs, the flat softmax
layer) compute something else and are timed only, as a scale.
"""

from dataclasses import dataclass, field

import numpy as np

import nbsparse as nbs
from nbsparse import _reference

from . import peers_blocks as pb
from . import peers_hsoftmax as ph
from . import peers_torch, workloads

BLOCK_OPS = ("dot", "outer", "dot_grad")
HSOFTMAX_OPS = ("h_softmax", "h_softmax_grad")
OPS = BLOCK_OPS + HSOFTMAX_OPS

# Relative to the largest reference magnitude: the peers and nbsparse sum in other
# orders than the reference loop (float32 over up to 2048 terms).
CHECK_TOLERANCE = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


@dataclass
class Case:
    op: str
    workload: str
    dtype: str
    flops: float
    min_bytes: float
    dense_flops: float
    ours: object
    peers: dict
    yardsticks: dict
    expected: object  # () -> the reference result (a tuple for the gradients)
    reset: object = None  # () -> None, before a checked call of an in-place op
    result: object = None  # () -> the result of the last call, for in-place ops
    notes: list = field(default_factory=list)


class CheckError(AssertionError):
    """A timed implementation disagrees with the reference."""


def check(name, got, want, dtype):
    """Raise ``CheckError`` unless ``got`` matches ``want`` (arrays, or tuples of arrays)."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    if len(got) != len(want):
        raise CheckError(f"{name}: {len(got)} results, expected {len(want)}")
    tol = CHECK_TOLERANCE[np.dtype(dtype)]
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            raise CheckError(f"{name}[{k}]: shape {g.shape}, expected {w.shape}")
        scale = float(np.max(np.abs(w), initial=0.0)) or 1.0
        err = float(np.max(np.abs(g - w), initial=0.0)) / scale
        if not err <= tol:  # also catches NaN
            raise CheckError(f"{name}[{k}]: max error {err:.2e} of the largest value, allowed {tol:.0e}")


def _dense(shape, dtype):
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    return lambda: np.matmul(a, b, out=out)


def _distinct_pairs(x_idx, y_idx, y_blocks):
    return np.unique((x_idx[:, :, None] * y_blocks + y_idx[:, None, :]).ravel()).size


def block_case(op, w, dtype):
    """The case of block op ``op`` ("dot", "outer" or "dot_grad") on ``BlockWorkload`` ``w``."""
    a = w.arrays(dtype)
    W, h, b, g, ii, oi = a["W"], a["h"], a["b"], a["grad"], a["input_idx"], a["output_idx"]
    item = np.dtype(dtype).itemsize
    block = w.i_size * w.o_size
    pairs = _distinct_pairs(ii, oi, w.o_blocks)
    dense_shape = w.dense_shape()
    common = dict(op=op, workload=w.name, dtype=np.dtype(dtype).name,
                  dense_flops=2.0 * np.prod(dense_shape, dtype=float))
    yard = {"dense_gemm": _dense(dense_shape, dtype)}
    torch = peers_torch.available()
    if op == "dot":
        args = (W, h, ii, b, oi)
        peers = {"theano_loop": lambda: pb.dot_theano_loop(*args),
                 "grouped": lambda: pb.dot_grouped(*args),
                 "gather_matmul": lambda: pb.dot_gather_matmul(*args)}
        if torch:
            peers.update(peers_torch.dot_peers(*args))
        return Case(flops=w.flops, min_bytes=item * (pairs * block + h.size + g.size),
                    ours=lambda: nbs.sparse_block_dot(*args), peers=peers, yardsticks=yard,
                    expected=lambda: _reference.sparse_block_dot(*args), **common)
    if op == "outer":
        o = np.zeros_like(W)  # one buffer for every implementation: it is reset before each check
        args = (h, g, ii, oi, 0.5)

        def in_place(func):
            return lambda: func(o, *args)

        peers = {"theano_loop": in_place(pb.outer_theano_loop),
                 "grouped": in_place(pb.outer_grouped),
                 "add_at": in_place(pb.outer_add_at)}
        if torch:
            peers.update(peers_torch.outer_peers(o, *args))
        return Case(flops=w.flops, min_bytes=item * (2 * pairs * block + h.size + g.size),
                    ours=lambda: nbs.sparse_block_outer(o, *args, inplace=True),
                    peers=peers, yardsticks=yard, reset=lambda: o.fill(0), result=lambda: o,
                    expected=lambda: _reference.sparse_block_outer(np.zeros_like(W), *args),
                    **common)
    if op == "dot_grad":
        args = (g, W, h, ii, b, oi)
        peers = {"theano_loop": lambda: tuple(_reference.sparse_block_dot_grad(*args)),
                 "grouped": lambda: pb.dot_grad_grouped(*args)}
        return Case(flops=2 * w.flops, min_bytes=item * (pairs * block + W.size + 2 * h.size + g.size),
                    ours=lambda: tuple(nbs.sparse_block_dot_grad(*args)), peers=peers, yardsticks=yard,
                    expected=lambda: tuple(_reference.sparse_block_dot_grad(*args)), **common)
    raise ValueError(f"unknown block op {op!r}")


def hsoftmax_case(op, w, dtype):
    """The case of ``h_softmax`` or ``h_softmax_grad`` on ``HSoftmaxWorkload`` ``w``."""
    a = w.arrays(dtype)
    x, W1, b1, W2, b2, target, g = (a[k] for k in ("x", "W1", "b1", "W2", "b2", "target", "grad"))
    sizes = (x, w.batch, w.n_outputs, w.n_classes, w.K, W1, b1, W2, b2)
    item = np.dtype(dtype).itemsize
    classes = w.n_classes if target is None else np.unique(target // w.K).size
    out_size = w.batch if w.target else w.batch * w.n_outputs
    w2_read = classes * w.n_in * w.K
    dense_shape = w.dense_shape()
    common = dict(op=op, workload=w.name, dtype=np.dtype(dtype).name,
                  dense_flops=2.0 * np.prod(dense_shape, dtype=float))
    W_flat = np.ascontiguousarray(W2.transpose(1, 0, 2).reshape(w.n_in, w.n_outputs))
    b_flat = b2.reshape(-1)
    tgt = () if target is None else (target,)
    yard = {"dense_gemm": _dense(dense_shape, dtype),
            "flat_layer": lambda: ph.flat_layer(x, W_flat, b_flat, target)}
    if op == "h_softmax":
        peers = {"theano_graph": lambda: _reference.h_softmax(*sizes, *tgt)}
        if target is None:
            peers["two_level"] = lambda: ph.two_level_full(*sizes)
        else:
            peers["two_level"] = lambda: ph.two_level_target(*sizes, target)
        return Case(flops=w.flops, min_bytes=item * (w2_read + W1.size + x.size + out_size),
                    ours=lambda: nbs.h_softmax(*sizes, *tgt), peers=peers, yardsticks=yard,
                    expected=lambda: _reference.h_softmax(*sizes, *tgt), **common)
    if op == "h_softmax_grad":
        notes = []
        if target is None:
            # Theano's graph by hand uses np.einsum without BLAS here (about 5 s a call):
            # it is the check, but not timed.
            peers = {"two_level": lambda: ph.two_level_grad_full(g, *sizes)}
            notes.append("theano_graph: check only, not timed")
        else:
            peers = {"theano_graph": lambda: tuple(_reference.h_softmax_grad(g, *sizes, target)),
                     "two_level": lambda: ph.two_level_grad_target(g, *sizes, target)}
        return Case(flops=3 * w.flops,
                    min_bytes=item * (w2_read + W2.size + 2 * x.size + g.size),
                    ours=lambda: tuple(nbs.h_softmax_grad(g, *sizes, *tgt)), peers=peers,
                    yardsticks=yard, notes=notes,
                    expected=lambda: tuple(_reference.h_softmax_grad(g, *sizes, *tgt)), **common)
    raise ValueError(f"unknown h_softmax op {op!r}")


def make(op, workload_name, dtype, quick=False):
    """The case, or None when the op does not apply to the workload."""
    w = workloads.get(workload_name, quick)
    if op in BLOCK_OPS and isinstance(w, workloads.BlockWorkload):
        return block_case(op, w, dtype)
    if op in HSOFTMAX_OPS and isinstance(w, workloads.HSoftmaxWorkload):
        return hsoftmax_case(op, w, dtype)
    return None
