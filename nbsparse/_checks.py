"""The argument checks of each public op, shared by the NumPy/CUDA path and the Dask path.

Every ``check_*`` function here reads only ``dtype``, ``ndim`` and ``shape``, so it
checks Dask arrays too, before any graph is built, with the messages of the
direct path. The index range checks need the values and run through a backend
(:func:`check_product_ranges`; ``check_hsoftmax`` when given one).
"""

import numbers

import numpy as np

from . import _validate as v

_W_LAYOUT = "(iBlocks, oBlocks, iSize, oSize)"


def _check_types(floats, indices):
    for name, a in floats.items():
        v.check_float(name, a)
    for name, a in indices.items():
        v.check_integer(name, a)
    return np.result_type(*(a.dtype for a in floats.values()))


def _check_product(W, h, input_idx, output_idx):
    """Shape relations shared by gemv, dot and dot_grad (dtypes already checked)."""
    v.check_ndim("W", W, 4, _W_LAYOUT)
    v.check_ndim("h", h, 3, "(batch, iWin, iSize)")
    v.check_ndim("input_idx", input_idx, 2, "(batch, iWin)")
    v.check_ndim("output_idx", output_idx, 2, "(batch, oWin)")
    v.check_dim("h", h, 2, W.shape[2], "W.shape[2] (iSize)")
    v.check_shape("input_idx", input_idx, h.shape[:2], "h.shape[:2], (batch, iWin)")
    v.check_dim("output_idx", output_idx, 0, h.shape[0], "h.shape[0] (batch)")


def _check_bias(b, W):
    v.check_shape("b", b, (W.shape[1], W.shape[3]), "(oBlocks, oSize) from W.shape[1], W.shape[3]")


def check_product_ranges(backend, W, input_idx, output_idx):
    """IndexError unless ``input_idx`` and ``output_idx`` select blocks of ``W``."""
    backend.check_index_range("input_idx", input_idx, W.shape[0],
                              f"W has {W.shape[0]} input blocks")
    backend.check_index_range("output_idx", output_idx, W.shape[1],
                              f"W has {W.shape[1]} output blocks")


def check_inplace(name, o, dtype, backend):
    """TypeError unless ``o`` has the result ``dtype``; ValueError if ``o`` is read-only."""
    if o.dtype != dtype:
        raise TypeError(
            f"inplace=True needs {name} to have the result dtype {dtype}, but {name} is {o.dtype}; "
            f"pass a {dtype} {name} or use inplace=False"
        )
    if not backend.is_writeable(o):
        raise ValueError(f"inplace=True but {name} is read-only")


def check_gemv(o, W, h, input_idx, output_idx):
    """Dtypes and shapes of a ``sparse_block_gemv`` call; returns the result dtype."""
    dtype = _check_types({"o": o, "W": W, "h": h}, {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    v.check_ndim("o", o, 3, "(batch, oWin, oSize)")
    v.check_shape("o", o, (h.shape[0], output_idx.shape[1], W.shape[3]),
                  "(batch, oWin, oSize) from h.shape[0], output_idx.shape[1], W.shape[3]")
    return dtype


def check_dot(W, h, input_idx, b, output_idx):
    """Dtypes and shapes of a ``sparse_block_dot`` call; returns the result dtype."""
    dtype = _check_types({"W": W, "h": h, "b": b}, {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    _check_bias(b, W)
    return dtype


def check_outer(o, x, y, x_idx, y_idx, alpha):
    """Dtypes, ``alpha`` and shapes of a ``sparse_block_outer`` call; returns ``(dtype, alpha)``."""
    dtype = _check_types({"o": o, "x": x, "y": y}, {"x_idx": x_idx, "y_idx": y_idx})
    alpha = v.check_scalar("alpha", alpha)
    v.check_ndim("o", o, 4, "(xBlocks, yBlocks, xSize, ySize)")
    v.check_ndim("x", x, 3, "(batch, xWin, xSize)")
    v.check_ndim("y", y, 3, "(batch, yWin, ySize)")
    v.check_ndim("x_idx", x_idx, 2, "(batch, xWin)")
    v.check_ndim("y_idx", y_idx, 2, "(batch, yWin)")
    v.check_dim("x", x, 2, o.shape[2], "o.shape[2] (xSize)")
    v.check_dim("y", y, 2, o.shape[3], "o.shape[3] (ySize)")
    v.check_dim("y", y, 0, x.shape[0], "x.shape[0] (batch)")
    v.check_shape("x_idx", x_idx, x.shape[:2], "x.shape[:2], (batch, xWin)")
    v.check_shape("y_idx", y_idx, y.shape[:2], "y.shape[:2], (batch, yWin)")
    return dtype, alpha


def check_dot_grad(grad_output, W, h, input_idx, b, output_idx):
    """Dtypes and shapes of a ``sparse_block_dot_grad`` call; returns the result dtype."""
    dtype = _check_types({"grad_output": grad_output, "W": W, "h": h, "b": b},
                         {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    _check_bias(b, W)
    v.check_ndim("grad_output", grad_output, 3, "(batch, oWin, oSize)")
    v.check_shape("grad_output", grad_output, (h.shape[0], output_idx.shape[1], W.shape[3]),
                  "the sparse_block_dot result, (batch, oWin, oSize)")
    return dtype


def check_softmax(x, axis):
    """Dtype of ``x`` and ``axis``; returns ``axis`` in ``[0, x.ndim)``."""
    v.check_float("x", x)
    return v.check_axis(axis, x.ndim)


def check_softmax_grad(grad_output, y, axis):
    """Check dtypes, shapes and ``axis``; return ``(axis in [0, ndim), result dtype)``."""
    v.check_float("grad_output", grad_output)
    v.check_float("y", y)
    v.check_shape("grad_output", grad_output, y.shape, "the shape of y")
    return v.check_axis(axis, y.ndim), np.result_type(grad_output.dtype, y.dtype)


def check_nll_target(arrays):
    """TypeError when ``h_softmax_nll`` or its gradient gets no target (``arrays``: the call's array arguments).

    Runs before any other check and before a Dask call is routed (``array_op``'s ``first``).
    """
    if arrays["target"] is None:
        raise TypeError(
            "target must be an integer array (one output per row of x), got None: h_softmax_nll is "
            "the loss of each row's target (h_softmax(x, ...) gives every probability)"
        )


def check_hsoftmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
                   grad_output=None, *, backward=False, backend=None, loss=None):
    """Check dtypes, sizes and shapes of an ``h_softmax*`` call; return ``(dtype, n_outputs, n_classes, K)``.

    ``backward`` says the call is a gradient, whose ``grad_output`` is required;
    ``loss`` names the loss function for the messages. The ``target`` range check
    runs through ``backend`` and is skipped when ``backend`` is None (Dask arrays:
    each chunk checks its own targets).
    """
    arrays = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
    floats = {"grad_output": grad_output, **arrays} if backward else arrays
    for name, a in floats.items():
        v.check_float(name, a)
    if target is not None:
        v.check_integer("target", target)
    dtype = np.result_type(*(a.dtype for a in floats.values()))

    batch_size = v.check_count("batch_size", batch_size, minimum=0)
    n_outputs = v.check_count("n_outputs", n_outputs)
    n_classes = v.check_count("n_classes", n_classes)
    K = v.check_count("n_outputs_per_class", n_outputs_per_class)
    v.check_ndim("x", x, 2, "(batch, n_in)")
    if x.shape[0] != batch_size:
        raise ValueError(f"batch_size = {batch_size} but x has {x.shape[0]} rows (x.shape = {x.shape})")
    if n_classes * K < n_outputs:
        raise ValueError(
            f"n_classes * n_outputs_per_class = {n_classes} * {K} = {n_classes * K} is less than "
            f"n_outputs = {n_outputs}: the classes cannot hold every output"
        )
    n_in = x.shape[1]
    v.check_shape("W1", W1, (n_in, n_classes), "(n_in, n_classes)")
    v.check_shape("b1", b1, (n_classes,), "(n_classes,)")
    v.check_shape("W2", W2, (n_classes, n_in, K), "(n_classes, n_in, n_outputs_per_class)")
    v.check_shape("b2", b2, (n_classes, K), "(n_classes, n_outputs_per_class)")
    if target is not None:
        if target.shape not in ((batch_size,), (batch_size, 1)):
            raise ValueError(
                f"target has shape {tuple(target.shape)} but must be ({batch_size},) "
                f"(or ({batch_size}, 1)), one output per row of x"
            )
        if backend is not None:
            backend.check_index_range("target", target, n_outputs, f"n_outputs = {n_outputs}")
    if backward:
        expected = (batch_size, n_outputs) if target is None else (batch_size,)
        v.check_shape("grad_output", grad_output, expected,
                      f"the shape of the {loss or 'h_softmax'} result")
    return dtype, n_outputs, n_classes, K


def check_topk_count(k, n_outputs):
    """``k`` of ``h_softmax_topk`` as an int in ``[1, n_outputs]``."""
    k = v.check_count("k", k)
    if k > n_outputs:
        raise ValueError(f"k must be <= n_outputs = {n_outputs}, got {k}")
    return k


def check_candidates(candidates, batch):
    """Dtype and shape of ``h_softmax_logprob``'s ``candidates``: integers, ``(batch, m)``.

    The range check runs through the backend (on Dask arrays, in each chunk).
    """
    v.check_integer("candidates", candidates)
    v.check_ndim("candidates", candidates, 2, "(batch, m)")
    if candidates.shape[0] != batch:
        raise ValueError(f"candidates has {candidates.shape[0]} rows (shape {tuple(candidates.shape)}) "
                         f"but x has {batch}: one row of candidates per row of x")


def check_seed(seed):
    """The seed as an int in ``[0, 2**64)``; a fresh one from NumPy's entropy for None."""
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**63))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed = {seed} is outside [0, 2**64)")
    return int(seed)
