"""Dask arrays in, Dask arrays out: each public function as a lazy graph over batch chunks.

``nbsparse._dispatch`` sends a call here when one of its array arguments is a
``dask.array.Array`` (Dask is then imported already; ``import nbsparse`` never
imports it). Each function has the signature of its public function, with that
public function (``public``) in front: it runs on each chunk. Each function

1. checks kinds, dtypes and shapes at once, from metadata, with the NumPy path's
   messages; the kind of a Dask argument is its chunk type (NumPy or CuPy);
2. aligns the arguments: those with a batch axis (axis 0) share one chunking of
   it and may be chunked along it only; the others (weights, biases, the ``o`` of
   ``sparse_block_outer``) must be one chunk, and a NumPy one becomes one graph
   key that every task refers to;
3. builds one task per batch chunk calling the public function on the chunk,
   which checks the chunk's indices before any kernel runs (an IndexError names
   the row in the whole batch) and picks the CPU or GPU kernels from the chunk type;
4. returns results with a batch axis chunk-wise, and sums the weight-shaped ones
   (outer updates, weight and bias gradients) over the chunks in a tree.
"""

import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array

from . import _checks
from ._cpu.inference import seed_for_rows
from ._dask_graph import ROWS, START, Call, check_kinds, common_chunks, single_chunk
from ._results import HSoftmaxGrad, HSoftmaxTopK, SparseBlockDotGrad


def _refuse_inplace(inplace):
    if inplace:
        raise ValueError(
            "inplace=True cannot write into a Dask array (Dask arrays are immutable): "
            "use inplace=False and keep the returned array"
        )


def _block_lists(sparse):
    """The chunk calls' keyword for ``sparse=True``; none otherwise (the dense calls stay as they were)."""
    return {"sparse": True} if sparse else {}


def sparse_block_gemv(public, o, W, h, input_idx, output_idx, *, inplace=False):
    """:func:`nbsparse.sparse_block_gemv` on Dask arrays: chunk-wise over the batch."""
    arrays = {"o": o, "W": W, "h": h, "input_idx": input_idx, "output_idx": output_idx}
    meta = check_kinds(**arrays)
    dtype = _checks.check_gemv(o, W, h, input_idx, output_idx)
    _refuse_inplace(inplace)
    call = Call("sparse_block_gemv", arrays, ("o", "h", "input_idx", "output_idx"), meta)
    return call.chunkwise(public, list(arrays), o.shape[1:], dtype)


def sparse_block_dot(public, W, h, input_idx, b, output_idx):
    """:func:`nbsparse.sparse_block_dot` on Dask arrays: chunk-wise over the batch."""
    arrays = {"W": W, "h": h, "input_idx": input_idx, "b": b, "output_idx": output_idx}
    meta = check_kinds(**arrays)
    dtype = _checks.check_dot(W, h, input_idx, b, output_idx)
    call = Call("sparse_block_dot", arrays, ("h", "input_idx", "output_idx"), meta)
    return call.chunkwise(public, list(arrays), (output_idx.shape[1], W.shape[3]), dtype)


def _outer_partial(x, y, x_idx, y_idx, *, outer, shape, dtype, alpha, deterministic):
    """One chunk's outer products (``outer``: the public function) summed into zeros of ``shape``."""
    zeros = np.zeros_like(x, shape=shape, dtype=dtype)
    return outer(zeros, x, y, x_idx, y_idx, alpha, inplace=True, deterministic=deterministic)


def sparse_block_outer(public, o, x, y, x_idx, y_idx, alpha=1.0, *, inplace=False,
                       deterministic=False):
    """:func:`nbsparse.sparse_block_outer` on Dask arrays: per-chunk updates added in a tree, then to ``o``."""
    arrays = {"o": o, "x": x, "y": y, "x_idx": x_idx, "y_idx": y_idx}
    meta = check_kinds(**arrays)
    dtype, alpha = _checks.check_outer(o, x, y, x_idx, y_idx, alpha)
    _refuse_inplace(inplace)
    call = Call("sparse_block_outer", arrays, ("x", "y", "x_idx", "y_idx"), meta)
    parts = call.parts(_outer_partial, ["x", "y", "x_idx", "y_idx"], outer=public,
                       shape=tuple(o.shape), dtype=dtype, alpha=alpha, deterministic=deterministic)
    return call.field_sum(parts, None, "sum", o.shape, dtype, first="o")


def sparse_block_dot_grad(public, grad_output, W, h, input_idx, b, output_idx, *,
                          deterministic=False, sparse=False):
    """:func:`nbsparse.sparse_block_dot_grad` on Dask arrays.

    ``h`` chunk-wise; ``W`` and ``b`` summed over the chunks in a tree (with
    ``sparse=True``, block lists merged in the tree: ``BlockGrad``s of Dask arrays
    whose length is known once computed). The three share one task per chunk:
    compute them together (``dask.compute(*grads)``).
    """
    arrays = {"grad_output": grad_output, "W": W, "h": h, "input_idx": input_idx, "b": b,
              "output_idx": output_idx}
    meta = check_kinds(**arrays)
    dtype = _checks.check_dot_grad(grad_output, W, h, input_idx, b, output_idx)
    call = Call("sparse_block_dot_grad", arrays, ("grad_output", "h", "input_idx", "output_idx"), meta)
    parts = call.parts(public, list(arrays), deterministic=deterministic, **_block_lists(sparse))
    if sparse:  # each chunk's W and b are BlockGrads: merged in the tree, touched blocks only
        return SparseBlockDotGrad(
            W=call.blocks_sum(parts, 0, "W", W.shape[2:], 2, dtype),
            h=call.field(parts, 1, "h", h.shape[1:], dtype),
            b=call.blocks_sum(parts, 2, "b", b.shape[1:], 1, dtype),
        )
    return SparseBlockDotGrad(
        W=call.field_sum(parts, 0, "W", W.shape, dtype),
        h=call.field(parts, 1, "h", h.shape[1:], dtype),
        b=call.field_sum(parts, 2, "b", b.shape, dtype),
    )


def softmax(public, x, axis=-1):
    """:func:`nbsparse.softmax` on a Dask array, chunked along any axis but ``axis``."""
    meta = check_kinds(x=x)
    axis = _checks.check_softmax(x, axis)
    single_chunk("x", x, [axis], f"the softmax normalises along axis {axis}")
    return x.map_blocks(public, axis=axis, dtype=x.dtype,
                        meta=meta_from_array(meta, x.ndim, x.dtype))


def softmax_grad(public, grad_output, y, axis=-1):
    """:func:`nbsparse.softmax_grad` on Dask arrays, chunked along any axis but ``axis``."""
    meta = check_kinds(grad_output=grad_output, y=y)
    axis, dtype = _checks.check_softmax_grad(grad_output, y, axis)
    arrays = {"grad_output": grad_output, "y": y}
    lazy = {name: a for name, a in arrays.items() if isinstance(a, da.Array)}
    for name, a in lazy.items():
        single_chunk(name, a, [axis], f"the softmax normalises along axis {axis}")
    chunks = tuple(common_chunks([a.chunks[k] for a in lazy.values()]) for k in range(y.ndim))
    arrays = {name: a.rechunk(chunks) if name in lazy else da.from_array(a, chunks=chunks)
              for name, a in arrays.items()}
    return da.map_blocks(public, *arrays.values(), axis=axis, dtype=dtype,
                         meta=meta_from_array(meta, y.ndim, dtype))


def _h_softmax_forward(func, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                       W1, b1, W2, b2, target, loss=None):
    """``func`` (``h_softmax`` or ``h_softmax_nll``) on Dask arrays: chunk-wise over the rows of ``x``."""
    dtype, n_outputs, n_classes, K, call = _hsoftmax_call(
        func.__name__, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target=target)
    items = [*_model_items(n_outputs, n_classes, K), "target"]
    return call.chunkwise(func, items, (n_outputs,) if target is None else (), dtype)


def _h_softmax_backward(func, grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                        W1, b1, W2, b2, target, deterministic, sparse=False, loss=None):
    """``func`` (``h_softmax_grad`` or ``h_softmax_nll_grad``) on Dask arrays.

    ``x`` chunk-wise; ``W1``, ``b1``, ``W2``, ``b2`` summed over the chunks in a tree
    (``W2``, ``b2`` as merged block lists with ``sparse``).
    """
    arrays = {"grad_output": grad_output, "x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2,
              "target": target}
    meta = check_kinds(optional=("target",), **arrays)
    dtype, n_outputs, n_classes, K = _checks.check_hsoftmax(
        x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
        grad_output, backward=True, loss=loss)
    call = Call(func.__name__, arrays, ("grad_output", "x", "target"), meta)
    items = ["grad_output", "x", ROWS, n_outputs, n_classes, K, "W1", "b1", "W2", "b2", "target"]
    parts = call.parts(func, items, deterministic=deterministic, **_block_lists(sparse))
    sums = {name: call.field_sum(parts, k, name, arrays[name].shape, dtype)
            for k, name in enumerate(["W1", "b1", "W2", "b2"], start=1) if not (sparse and name in ("W2", "b2"))}
    if sparse:
        sums["W2"] = call.blocks_sum(parts, 3, "W2", W2.shape[1:], 1, dtype)
        sums["b2"] = call.blocks_sum(parts, 4, "b2", b2.shape[1:], 1, dtype)
    return HSoftmaxGrad(x=call.field(parts, 0, "x", x.shape[1:], dtype), **sums)


def h_softmax(public, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
              target=None):
    """:func:`nbsparse.h_softmax` on Dask arrays: chunk-wise over the rows of ``x``."""
    return _h_softmax_forward(public, x, batch_size, n_outputs, n_classes,
                              n_outputs_per_class, W1, b1, W2, b2, target)


def h_softmax_grad(public, grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                   W1, b1, W2, b2, target=None, *, deterministic=False, sparse=False):
    """:func:`nbsparse.h_softmax_grad` on Dask arrays (weight gradients tree-summed)."""
    return _h_softmax_backward(public, grad_output, x, batch_size, n_outputs,
                               n_classes, n_outputs_per_class, W1, b1, W2, b2, target, deterministic, sparse)


def h_softmax_nll(public, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2,
                  b2, target):
    """:func:`nbsparse.h_softmax_nll` on Dask arrays: chunk-wise over the rows of ``x``."""
    return _h_softmax_forward(public, x, batch_size, n_outputs, n_classes,
                              n_outputs_per_class, W1, b1, W2, b2, target, loss="h_softmax_nll")


def h_softmax_nll_grad(public, grad_output, x, batch_size, n_outputs, n_classes,
                       n_outputs_per_class, W1, b1, W2, b2, target, *, deterministic=False, sparse=False):
    """:func:`nbsparse.h_softmax_nll_grad` on Dask arrays (weight gradients tree-summed)."""
    return _h_softmax_backward(public, grad_output, x, batch_size, n_outputs,
                               n_classes, n_outputs_per_class, W1, b1, W2, b2, target, deterministic,
                               sparse, loss="h_softmax_nll")


def _hsoftmax_call(op, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, *,
                   target=None, candidates=None):
    """The checked sizes and the :class:`Call` of a forward ``h_softmax*`` call: the model, and a ``target``
    or ``candidates`` per row when given."""
    arrays = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "target": target, "candidates": candidates}
    meta = check_kinds(optional=("target", "candidates"), **arrays)
    dtype, n_outputs, n_classes, K = _checks.check_hsoftmax(
        x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target)
    if candidates is not None:
        _checks.check_candidates(candidates, x.shape[0])
    return dtype, n_outputs, n_classes, K, Call(op, arrays, ("x", "target", "candidates"), meta)


def _model_items(n_outputs, n_classes, K):
    """A chunk call's arguments up to ``b2``: the chunk of ``x``, its row count, the sizes, the weights."""
    return ["x", ROWS, n_outputs, n_classes, K, "W1", "b1", "W2", "b2"]


def h_softmax_topk(public, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, k):
    """:func:`nbsparse.h_softmax_topk` on Dask arrays: chunk-wise over the rows of ``x``."""
    dtype, n_outputs, n_classes, K, call = _hsoftmax_call(
        "h_softmax_topk", x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2)
    k = _checks.check_topk_count(k, n_outputs)
    parts = call.parts(public, [*_model_items(n_outputs, n_classes, K), k])
    return HSoftmaxTopK(call.field(parts, 0, "indices", (k,), np.intp),
                        call.field(parts, 1, "log_probs", (k,), dtype))


def h_softmax_logprob(public, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
                      candidates):
    """:func:`nbsparse.h_softmax_logprob` on Dask arrays: chunk-wise over the rows of ``x`` and ``candidates``."""
    dtype, n_outputs, n_classes, K, call = _hsoftmax_call(
        "h_softmax_logprob", x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
        candidates=candidates)
    return call.chunkwise(public, [*_model_items(n_outputs, n_classes, K), "candidates"],
                          (candidates.shape[1],), dtype)


def _sample_rows(public, first_row, *args, seed):
    """``public(*args)`` drawing for the rows ``first_row, ...`` of the whole batch under ``seed``."""
    return public(*args, seed=seed_for_rows(seed, first_row))


def h_softmax_sample(public, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, *,
                     seed=None):
    """:func:`nbsparse.h_softmax_sample` on Dask arrays: chunk-wise, each chunk drawing its rows' draws.

    The result is the NumPy path's for the same seed, however ``x`` is chunked;
    ``seed=None`` takes one fresh seed for the whole graph, here.
    """
    seed = _checks.check_seed(seed)
    _, n_outputs, n_classes, K, call = _hsoftmax_call(
        "h_softmax_sample", x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2)
    return call.chunkwise(_sample_rows, [public, START, *_model_items(n_outputs, n_classes, K)], (),
                          np.intp, seed=seed)
