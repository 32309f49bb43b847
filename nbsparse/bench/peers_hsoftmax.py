"""NumPy peers of ``h_softmax``: two-level ones that compute the same result, and the flat layer.

``theano_graph`` is ``nbsparse._reference.h_softmax`` (Theano's graph, op for op).
The ``two_level`` peers are the same maths written for speed in NumPy: BLAS for
every product, in-place softmaxes, no copy of ``W2``. ``flat_layer`` is what the
hierarchical softmax replaces: one dense softmax over all outputs (a different
result, so it is a yardstick, not a peer).
"""

import numpy as np


def _softmax_inplace(a):
    a -= a.max(axis=-1, keepdims=True)
    np.exp(a, out=a)
    a /= a.sum(axis=-1, keepdims=True)
    return a


def _class_probs(x, W1, b1):
    act = x @ W1
    act += b1
    return _softmax_inplace(act)


def two_level_full(x, batch_size, n_outputs, n_classes, K, W1, b1, W2, b2):
    """All outputs: ``x @ W2[c]`` for every class as one stacked matmul ``(C, batch, K)``."""
    p_class = _class_probs(x, W1, b1)
    act = np.matmul(x, W2)  # (C, batch, K): W2 is read in place, never transposed
    act += b2[:, None, :]
    _softmax_inplace(act)
    act *= p_class.T[:, :, None]
    return act.transpose(1, 0, 2).reshape(batch_size, n_classes * K)[:, :n_outputs]


def _target_groups(x, K, W1, b1, W2, b2, target):
    """``(p_class, slots, groups)`` of the target mode, rows grouped by target class.

    ``groups`` yields ``(rows, c, probs)`` for each target class ``c``: the rows
    whose target is in ``c`` and their slot probabilities ``softmax(x[rows] @
    W2[c] + b2[c])``, one BLAS matmul per class.
    """
    target = np.asarray(target).reshape(-1)
    classes, slots = target // K, target % K
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    starts = np.flatnonzero(np.r_[True, sorted_classes[1:] != sorted_classes[:-1]])
    bounds = np.r_[starts, classes.size]

    def groups():
        for g in range(bounds.size - 1):
            rows, c = order[bounds[g]:bounds[g + 1]], sorted_classes[bounds[g]]
            probs = x[rows] @ W2[c]
            probs += b2[c]
            yield rows, c, _softmax_inplace(probs)

    return _class_probs(x, W1, b1), slots, groups()


def two_level_target(x, batch_size, n_outputs, n_classes, K, W1, b1, W2, b2, target):
    """Each row's target: rows grouped by target class, one BLAS matmul per class."""
    p_class, slots, groups = _target_groups(x, K, W1, b1, W2, b2, target)
    out = np.empty(batch_size, dtype=p_class.dtype)
    for rows, c, probs in groups:
        out[rows] = p_class[rows, c] * probs[np.arange(rows.size), slots[rows]]
    return out


def two_level_grad_full(grad_output, x, batch_size, n_outputs, n_classes, K, W1, b1, W2, b2):
    """Gradients of ``two_level_full`` by the chain rule, BLAS for every product."""
    p_class = _class_probs(x, W1, b1)
    probs = np.matmul(x, W2)  # (C, batch, K)
    probs += b2[:, None, :]
    _softmax_inplace(probs)
    g = np.zeros((batch_size, n_classes * K), dtype=p_class.dtype)
    g[:, :n_outputs] = grad_output
    g = g.reshape(batch_size, n_classes, K).transpose(1, 0, 2)  # (C, batch, K)
    g_class = np.einsum("cnk,cnk->nc", g, probs)
    d_class = p_class * (g_class - np.sum(g_class * p_class, axis=1, keepdims=True))
    d_act = g * p_class.T[:, :, None]
    d_act -= np.sum(d_act * probs, axis=2, keepdims=True)
    d_act *= probs
    dx = np.matmul(d_act, W2.transpose(0, 2, 1)).sum(axis=0) + d_class @ W1.T
    dW2 = np.matmul(x.T, d_act)  # (C, n_in, K)
    return dx, x.T @ d_class, d_class.sum(axis=0), dW2, d_act.sum(axis=1)


def two_level_grad_target(grad_output, x, batch_size, n_outputs, n_classes, K, W1, b1, W2, b2, target):
    """Gradients of ``two_level_target``: rows grouped by class, BLAS per class."""
    p_class, slots, groups = _target_groups(x, K, W1, b1, W2, b2, target)
    dx = np.zeros_like(x)
    dW2, db2 = np.zeros_like(W2), np.zeros_like(b2)
    g_class = np.zeros_like(p_class)
    for rows, c, probs in groups:
        picked = np.arange(rows.size), slots[rows]
        g_rows = grad_output[rows]
        g_class[rows, c] = g_rows * probs[picked]
        g_slot = g_rows * p_class[rows, c]
        d_act = -probs * (g_slot * probs[picked])[:, None]
        d_act[picked] += g_slot * probs[picked]
        dx[rows] += d_act @ W2[c].T
        dW2[c] += x[rows].T @ d_act
        db2[c] += d_act.sum(axis=0)
    d_class = p_class * (g_class - np.sum(g_class * p_class, axis=1, keepdims=True))
    dx += d_class @ W1.T
    return dx, x.T @ d_class, d_class.sum(axis=0), dW2, db2


def flat_layer(x, W, b, target=None, rows_per_chunk=256):
    """A dense softmax layer over all outputs (``W`` is ``(n_in, n_outputs)``).

    With ``target``, the probability of each row's target (the whole row is still
    computed, in chunks of rows to bound the temporary).
    """
    if target is None:
        return _softmax_inplace(x @ W + b)
    out = np.empty(x.shape[0], dtype=x.dtype)
    for s in range(0, x.shape[0], rows_per_chunk):
        e = min(x.shape[0], s + rows_per_chunk)
        probs = _softmax_inplace(x[s:e] @ W + b)
        out[s:e] = probs[np.arange(e - s), target[s:e]]
    return out
