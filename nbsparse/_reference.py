"""Plain NumPy implementations of every public op: the spec in code.

These are the test oracle and the benchmark baseline. They are written to be
obviously right, not fast: the block-sparse ops are the literal loops of
Theano's documentation. They do no input validation beyond what NumPy itself
does and must never import Numba.
"""

import numpy as np

from ._results import BlockGrad, HSoftmaxGrad, HSoftmaxTopK, SparseBlockDotGrad


def _float_dtype(*arrays):
    return np.result_type(*arrays)


def _cast(dtype, *arrays):
    """The float arrays in the result dtype, so every product is computed in it."""
    return tuple(np.asarray(a, dtype=dtype) for a in arrays)


def sparse_block_gemv(o, W, h, input_idx, output_idx):
    """``o'[b, j] = o[b, j] + sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``."""
    dtype = _float_dtype(o, W, h)
    out = np.array(o, dtype=dtype)
    W, h = _cast(dtype, W, h)
    for b in range(h.shape[0]):
        for j in range(out.shape[1]):
            for i in range(h.shape[1]):
                out[b, j] += np.dot(h[b, i], W[input_idx[b, i], output_idx[b, j]])
    return out


def sparse_block_dot(W, h, input_idx, b, output_idx):
    """``b[output_idx[n, j]] + sum_i h[n, i] @ W[input_idx[n, i], output_idx[n, j]]``."""
    dtype = _float_dtype(W, h, b)
    W, h, b = _cast(dtype, W, h, b)
    o = b[np.asarray(output_idx, dtype=np.intp)]
    return sparse_block_gemv(o.reshape(h.shape[0], output_idx.shape[1], W.shape[3]),
                             W, h, input_idx, output_idx)


def sparse_block_outer(o, x, y, x_idx, y_idx, alpha=1.0):
    """``o'[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])`` for every b, i, j."""
    dtype = _float_dtype(o, x, y)
    out = np.array(o, dtype=dtype)
    x, y = _cast(dtype, x, y)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            for j in range(y.shape[1]):
                out[x_idx[b, i], y_idx[b, j]] += alpha * np.outer(x[b, i], y[b, j])
    return out


def sparse_block_dot_grad(grad_output, W, h, input_idx, b, output_idx):
    """Gradients of ``sum(grad_output * sparse_block_dot(W, h, input_idx, b, output_idx))``."""
    dtype = _float_dtype(grad_output, W, h, b)
    grad_output, W, h = _cast(dtype, grad_output, W, h)
    dW = np.zeros(W.shape, dtype=dtype)
    dh = np.zeros(h.shape, dtype=dtype)
    db = np.zeros(b.shape, dtype=dtype)
    for n in range(h.shape[0]):
        for j in range(output_idx.shape[1]):
            g = grad_output[n, j]
            db[output_idx[n, j]] += g
            for i in range(h.shape[1]):
                block = (input_idx[n, i], output_idx[n, j])
                dW[block] += np.outer(h[n, i], g)
                dh[n, i] += W[block] @ g
    return SparseBlockDotGrad(dW, dh, db)


def softmax(x, axis=-1):
    """Numerically stable softmax along ``axis``; the result has the shape of ``x``."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_grad(grad_output, y, axis=-1):
    """``y * (grad_output - sum(grad_output * y, axis, keepdims=True))``."""
    return y * (grad_output - np.sum(grad_output * y, axis=axis, keepdims=True))


def h_softmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
              W1, b1, W2, b2, target=None):
    """Theano's two-level hierarchical softmax, written as its graph in NumPy."""
    x, W1, b1, W2, b2 = _cast(_float_dtype(x, W1, b1, W2, b2), x, W1, b1, W2, b2)
    class_probs = softmax(x @ W1 + b1)
    if target is None:
        activations = np.tensordot(x, W2, (1, 1)) + b2
        output_probs = softmax(activations.reshape(-1, n_outputs_per_class))
        output_probs = output_probs.reshape(batch_size, n_classes, n_outputs_per_class)
        output_probs = class_probs[:, :, None] * output_probs
        return output_probs.reshape(batch_size, -1)[:, :n_outputs]
    target = np.asarray(target).ravel()
    target_classes = target // n_outputs_per_class
    target_outputs_in_class = target % n_outputs_per_class
    rows = np.arange(batch_size)
    activations = np.einsum("nd,ndk->nk", x, W2[target_classes]) + b2[target_classes]
    output_probs = softmax(activations)
    return class_probs[rows, target_classes] * output_probs[rows, target_outputs_in_class]


def h_softmax_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                   W1, b1, W2, b2, target=None):
    """Gradients of ``sum(grad_output * h_softmax(...))`` by the chain rule, by hand."""
    K = n_outputs_per_class
    dtype = _float_dtype(grad_output, x, W1, b1, W2, b2)
    grad_output, x, W1, b1, W2, b2 = _cast(dtype, grad_output, x, W1, b1, W2, b2)
    class_probs = softmax(x @ W1 + b1)
    dW2 = np.zeros(W2.shape, dtype=dtype)
    db2 = np.zeros(b2.shape, dtype=dtype)
    if target is None:
        probs = softmax(np.tensordot(x, W2, (1, 1)) + b2)  # (batch, n_classes, K)
        g = np.zeros((batch_size, n_classes * K), dtype=dtype)
        g[:, :n_outputs] = grad_output
        g = g.reshape(batch_size, n_classes, K)
        d_class = softmax_grad(np.sum(g * probs, axis=2), class_probs)
        d_act = softmax_grad(g * class_probs[:, :, None], probs)
        dx = np.einsum("nck,cdk->nd", d_act, W2)
        dW2 += np.einsum("nd,nck->cdk", x, d_act)
        db2 += d_act.sum(axis=0)
    else:
        target = np.asarray(target).ravel()
        classes, slots = target // K, target % K
        rows = np.arange(batch_size)
        probs = softmax(np.einsum("nd,ndk->nk", x, W2[classes]) + b2[classes])
        g_class = np.zeros(class_probs.shape, dtype=dtype)
        g_class[rows, classes] = grad_output * probs[rows, slots]
        g_probs = np.zeros(probs.shape, dtype=dtype)
        g_probs[rows, slots] = grad_output * class_probs[rows, classes]
        d_class = softmax_grad(g_class, class_probs)
        d_act = softmax_grad(g_probs, probs)
        dx = np.einsum("nk,ndk->nd", d_act, W2[classes])
        for n in range(batch_size):
            dW2[classes[n]] += np.outer(x[n], d_act[n])
            db2[classes[n]] += d_act[n]
    dx = dx + d_class @ W1.T
    dW1 = x.T @ d_class
    db1 = d_class.sum(axis=0)
    return HSoftmaxGrad(*(np.asarray(a, dtype=dtype) for a in (dx, dW1, db1, dW2, db2)))


def _log_softmax(a):
    """``a - logsumexp(a)`` along the last axis, the maximum subtracted first."""
    shifted = a - np.max(a, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _nll_activations(x, n_outputs_per_class, W1, b1, W2, b2, target):
    """Both levels' activations for the targets: ``(a1, a2, classes, slots)``."""
    target = np.asarray(target).ravel()
    classes, slots = target // n_outputs_per_class, target % n_outputs_per_class
    a1 = x @ W1 + b1
    a2 = np.einsum("nd,ndk->nk", x, W2[classes]) + b2[classes]
    return a1, a2, classes, slots


def h_softmax_nll(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                  W1, b1, W2, b2, target):
    """``-log h_softmax(..., target)`` as the sum of the two levels' negative log-softmax."""
    x, W1, b1, W2, b2 = _cast(_float_dtype(x, W1, b1, W2, b2), x, W1, b1, W2, b2)
    a1, a2, classes, slots = _nll_activations(x, n_outputs_per_class, W1, b1, W2, b2, target)
    rows = np.arange(batch_size)
    return -_log_softmax(a1)[rows, classes] - _log_softmax(a2)[rows, slots]


def h_softmax_logprob(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                      W1, b1, W2, b2, candidates):
    """``log h_softmax(...)[n, candidates[n, j]]`` in log space: class plus slot log-softmax."""
    x, W1, b1, W2, b2 = _cast(_float_dtype(x, W1, b1, W2, b2), x, W1, b1, W2, b2)
    candidates = np.asarray(candidates)
    classes, slots = candidates // n_outputs_per_class, candidates % n_outputs_per_class
    log_class = _log_softmax(x @ W1 + b1)                                        # (batch, C)
    log_slot = _log_softmax(np.einsum("nd,cdk->nck", x, W2) + b2)                # (batch, C, K)
    rows = np.arange(batch_size)[:, None]
    return log_class[rows, classes] + log_slot[rows, classes, slots]

def h_softmax_nll_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                       W1, b1, W2, b2, target):
    """Gradients of ``sum(grad_output * h_softmax_nll(...))``: ``g * (softmax - onehot)`` per level."""
    dtype = _float_dtype(grad_output, x, W1, b1, W2, b2)
    grad_output, x, W1, b1, W2, b2 = _cast(dtype, grad_output, x, W1, b1, W2, b2)
    a1, a2, classes, slots = _nll_activations(x, n_outputs_per_class, W1, b1, W2, b2, target)
    rows = np.arange(batch_size)
    d_class = softmax(a1)
    d_class[rows, classes] -= 1.0
    d_class *= grad_output[:, None]
    d_act = softmax(a2)
    d_act[rows, slots] -= 1.0
    d_act *= grad_output[:, None]
    dx = d_class @ W1.T + np.einsum("nk,ndk->nd", d_act, W2[classes])
    dW2 = np.zeros(W2.shape, dtype=dtype)
    db2 = np.zeros(b2.shape, dtype=dtype)
    for n in range(batch_size):
        dW2[classes[n]] += np.outer(x[n], d_act[n])
        db2[classes[n]] += d_act[n]
    return HSoftmaxGrad(*(np.asarray(a, dtype=dtype) for a in (
        dx, x.T @ d_class, d_class.sum(axis=0), dW2, db2)))


def _dense_gradient(grad, shape):
    """``(g, listed)``: the dense gradient of a ``shape`` weight, and a boolean array, broadcastable
    to ``shape``, that is True where a step may change the weight (everywhere for a dense ``grad``)."""
    if not isinstance(grad, BlockGrad):
        return np.asarray(grad), np.True_
    index = np.asarray(grad.index, dtype=np.intp)
    d = index.shape[1]
    listed = np.zeros(shape[:d], dtype=bool)
    listed[tuple(index.T)] = True
    return grad.to_dense(shape), listed.reshape(listed.shape + (1,) * (len(shape) - d))


def sgd(param, grad, lr):
    """A new array: ``param - lr * grad``, on the listed blocks only when ``grad`` is a ``BlockGrad``."""
    param = np.asarray(param)
    g, listed = _dense_gradient(grad, param.shape)
    with np.errstate(all="ignore"):  # NaN and inf propagate: no warning
        return np.where(listed, param - lr * g, param)


def adam(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step on copies: new ``(param, m, v, step + 1)``.

    With a ``BlockGrad``, the lazy step of PyTorch's ``SparseAdam``: ``param``,
    ``m`` and ``v`` change on the listed blocks only.
    """
    param, m, v = np.asarray(param), np.asarray(m), np.asarray(v)
    t = step + 1
    g, listed = _dense_gradient(grad, param.shape)
    with np.errstate(all="ignore"):  # NaN and inf propagate: no warning
        m_new = beta1 * m + (1 - beta1) * g
        v_new = beta2 * v + (1 - beta2) * g * g
        p_new = param - lr * (m_new / (1 - beta1**t)) / (np.sqrt(v_new / (1 - beta2**t)) + eps)
    return (np.where(listed, p_new, param), np.where(listed, m_new, m), np.where(listed, v_new, v), t)


def h_softmax_topk(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, k):
    """Full mode, each row sorted by decreasing probability (ties: increasing index): ``(indices, log_probs)``."""
    if batch_size == 0:
        dtype = _float_dtype(x, W1, b1, W2, b2)
        return HSoftmaxTopK(np.zeros((0, k), np.intp), np.zeros((0, k), dtype))
    with np.errstate(divide="ignore"):
        log_probs = np.log(h_softmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2))
    order = np.stack([np.lexsort((np.arange(n_outputs), -row)) for row in log_probs])
    order = order[:, :k].astype(np.intp)
    return HSoftmaxTopK(order, np.take_along_axis(log_probs, order, axis=1))


_MASK64 = 2**64 - 1


def _uniform(seed, row, counter):
    """SplitMix64 (Steele, Lea, Flood 2014) of ``seed * G + row * R + counter + G`` mod 2**64: its top 53 bits
    as a float in [0, 1). Python integers, so every step is written mod 2**64."""
    z = (seed * 0x9E3779B97F4A7C15 + row * 0xD1B54A32D192ED03 + counter + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / 2**53


def _inverse_cdf(weights, u):
    """The first ``i`` with ``u * sum(weights) < cumsum(weights)[i]`` (the last positive weight if rounding
    leaves none); -1 without a positive weight."""
    positive = np.flatnonzero(weights > 0)
    if not positive.size:
        return -1
    below = np.flatnonzero(u * weights.sum() < np.cumsum(weights))
    return int(below[0]) if below.size else int(positive[-1])


def h_softmax_sample(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, *, seed):
    """The draws of ``h_softmax_sample``: class then slot by inverse CDF over float64 weights.

    Row ``n`` draws its class with uniform ``(seed, n, 0)`` among the classes
    holding an output, then a slot with ``(seed, n, 1)``. A slot past
    ``n_outputs`` is rejected; the class is then redrawn with ``(seed, n, 2)``,
    the rejected class weighted by its valid slots' share, and a valid slot with
    ``(seed, n, 3)``: the distribution of the draw accepted after any number of
    rejections.
    """
    x, W1, b1, W2, b2 = _cast(_float_dtype(x, W1, b1, W2, b2), x, W1, b1, W2, b2)
    K = n_outputs_per_class
    a_class = (x @ W1 + b1).astype(np.float64)
    a_slot = (np.einsum("nd,cdk->nck", x, W2) + b2).astype(np.float64)
    n_used = (n_outputs - 1) // K + 1
    out = np.zeros(batch_size, np.intp)
    for n in range(batch_size):
        class_w = np.exp(a_class[n, :n_used] - a_class[n].max())
        c = _inverse_cdf(class_w, _uniform(seed, n, 0))
        slot_w = np.exp(a_slot[n, c] - a_slot[n, c].max()) if c >= 0 else None
        k = _inverse_cdf(slot_w, _uniform(seed, n, 1)) if c >= 0 else -1
        if k < 0:
            continue
        if c * K + k < n_outputs:
            out[n] = c * K + k
            continue
        valid = n_outputs - c * K
        class_w[c] *= slot_w[:valid].sum() / slot_w.sum()
        c = _inverse_cdf(class_w, _uniform(seed, n, 2))
        if c < 0:
            continue
        slot_w = np.exp(a_slot[n, c] - a_slot[n, c].max())[:valid if c == n_used - 1 else K]
        k = _inverse_cdf(slot_w, _uniform(seed, n, 3))
        if k >= 0:
            out[n] = c * K + k
    return out
