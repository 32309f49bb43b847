"""NumPy peers of the block-sparse products: what a NumPy user can write without nbsparse.

Every function computes exactly what the nbsparse op of the same name computes
(the benchmark checks each against ``nbsparse._reference`` before timing it).
The outer updates work in place on ``o``, as ``sparse_block_outer(..., inplace=True)``.
"""

import numpy as np

# Largest temporary (elements) a gathering peer materialises at once: it works
# through the batch in chunks rather than needing GBs for the big workloads.
MAX_GATHER = 1 << 24


def _chunk(per_row, max_elements=MAX_GATHER):
    return max(1, max_elements // max(1, per_row))


def _pair_groups(x_idx, y_idx, y_blocks):
    """Flat ``(b, i, j)`` triples sorted by block pair: ``(order, sorted keys, group bounds)``."""
    keys = (x_idx[:, :, None] * y_blocks + y_idx[:, None, :]).ravel()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return order, sorted_keys, np.r_[starts, keys.size]


def _triple_parts(order, x_win, y_win):
    """``(b, i, j)`` of the flat triple indices ``order``."""
    return order // (x_win * y_win), (order // y_win) % x_win, order % y_win


# --------------------------------------------------------------------------- forward


def dot_theano_loop(W, h, input_idx, b, output_idx):
    """Theano's algorithm: one small ``np.dot`` per ``(b, j, i)`` from a Python loop."""
    out = b[output_idx]
    for n in range(h.shape[0]):
        for j in range(output_idx.shape[1]):
            acc = out[n, j]
            q = output_idx[n, j]
            for i in range(h.shape[1]):
                acc += np.dot(h[n, i], W[input_idx[n, i], q])
    return out


def dot_grouped(W, h, input_idx, b, output_idx):
    """Sort the triples by block pair, one BLAS matmul per pair, then sum over the input window."""
    batch, i_win, _ = h.shape
    o_win, o_blocks, o_size = output_idx.shape[1], W.shape[1], W.shape[3]
    order, keys, bounds = _pair_groups(input_idx, output_idx, o_blocks)
    rows, ins, _ = _triple_parts(order, i_win, o_win)
    gathered = h[rows, ins]
    products = np.empty((order.size, o_size), dtype=h.dtype)
    for g in range(bounds.size - 1):
        s, e = bounds[g], bounds[g + 1]
        p, q = divmod(int(keys[s]), o_blocks)
        np.matmul(gathered[s:e], W[p, q], out=products[s:e])
    unsorted = np.empty_like(products)
    unsorted[order] = products
    return unsorted.reshape(batch, i_win, o_win, o_size).sum(axis=1) + b[output_idx]


def dot_gather_matmul(W, h, input_idx, b, output_idx):
    """Gather every selected block, then one batched matmul (in batch chunks)."""
    batch, i_win, i_size = h.shape
    o_win, o_size = output_idx.shape[1], W.shape[3]
    out = b[output_idx]
    step = _chunk(i_win * o_win * i_size * o_size)
    for s in range(0, batch, step):
        e = min(batch, s + step)
        blocks = W[input_idx[s:e, None, :], output_idx[s:e, :, None]]  # (c, oWin, iWin, iSize, oSize)
        blocks = blocks.reshape(e - s, o_win, i_win * i_size, o_size)
        out[s:e] += np.matmul(h[s:e].reshape(e - s, 1, 1, i_win * i_size), blocks)[:, :, 0]
    return out


# --------------------------------------------------------------------------- outer (in place)


def outer_theano_loop(o, x, y, x_idx, y_idx, alpha):
    """Theano's algorithm: one ``np.outer`` per ``(b, i, j)``, added into ``o`` in place."""
    for n in range(x.shape[0]):
        for i in range(x.shape[1]):
            p = x_idx[n, i]
            for j in range(y.shape[1]):
                o[p, y_idx[n, j]] += alpha * np.outer(x[n, i], y[n, j])
    return o


def _outer_groups(o, x, y, x_idx, y_idx, alpha, groups):
    order, keys, bounds = groups
    rows, ins, outs = _triple_parts(order, x.shape[1], y.shape[1])
    xs, ys = x[rows, ins], alpha * y[rows, outs]
    y_blocks = o.shape[1]
    for g in range(bounds.size - 1):
        s, e = bounds[g], bounds[g + 1]
        p, q = divmod(int(keys[s]), y_blocks)
        o[p, q] += xs[s:e].T @ ys[s:e]
    return o


def outer_grouped(o, x, y, x_idx, y_idx, alpha):
    """Sort the triples by block pair; one BLAS ``X_g.T @ Y_g`` per pair, in place."""
    return _outer_groups(o, x, y, x_idx, y_idx, alpha, _pair_groups(x_idx, y_idx, o.shape[1]))


def outer_add_at(o, x, y, x_idx, y_idx, alpha):
    """Every outer product materialised (in batch chunks), scattered with ``np.add.at``."""
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    step = _chunk(x_win * y_win * x_size * y_size)
    for s in range(0, batch, step):
        e = min(batch, s + step)
        products = (alpha * x[s:e, :, None, :, None]) * y[s:e, None, :, None, :]
        np.add.at(o, (x_idx[s:e, :, None], y_idx[s:e, None, :]), products)
    return o


# --------------------------------------------------------------------------- gradient


def dot_grad_grouped(grad_output, W, h, input_idx, b, output_idx):
    """The three gradients from one pair grouping: BLAS per pair for ``dW`` and ``dh``."""
    batch, i_win, i_size = h.shape
    o_win = output_idx.shape[1]
    groups = _pair_groups(input_idx, output_idx, W.shape[1])
    dW = _outer_groups(np.zeros_like(W), h, grad_output, input_idx, output_idx, 1.0, groups)
    order, keys, bounds = groups
    rows, _, outs = _triple_parts(order, i_win, o_win)
    gs = grad_output[rows, outs]
    products = np.empty((order.size, i_size), dtype=h.dtype)
    for g in range(bounds.size - 1):
        s, e = bounds[g], bounds[g + 1]
        p, q = divmod(int(keys[s]), W.shape[1])
        np.matmul(gs[s:e], W[p, q].T, out=products[s:e])
    unsorted = np.empty_like(products)
    unsorted[order] = products
    dh = unsorted.reshape(batch, i_win, o_win, i_size).sum(axis=2)
    db = np.zeros_like(b)
    np.add.at(db, output_idx.ravel(), grad_output.reshape(-1, grad_output.shape[2]))
    return dW, dh, db
