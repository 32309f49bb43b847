"""The oracle itself against independent formulations, so that a wrong oracle cannot
pass the kernel tests.

The block-sparse ops are recomputed as dense matrix products on block-expanded
operands: row ``n`` of the dense input scatter-adds ``h[n, i]`` into the slot of
block ``input_idx[n, i]``, the dense weight places ``W[p, q]`` at block ``(p, q)``.
Softmax is recomputed without the max shift (moderate inputs only) and its
gradient through the explicit Jacobian. All in float64.
"""

import numpy as np
import pytest

from nbsparse import _reference
from tests.support.assertions import assert_matches
from tests.support.cases import HSOFTMAX_CASES, PRODUCT_CASES, SOFTMAX_CASES

F64 = np.float64


def _scatter(vectors, idx, n_blocks):
    """Dense ``(batch, n_blocks * size)``: each vector added into the slot of its block."""
    batch, win, size = vectors.shape
    dense = np.zeros((batch, n_blocks, size))
    for n in range(batch):
        for i in range(win):
            dense[n, idx[n, i]] += vectors[n, i]
    return dense.reshape(batch, n_blocks * size)


def _gather(dense, idx, n_blocks, size):
    """``(batch, win, size)``: for each ``(n, j)`` the slot of block ``idx[n, j]`` of row ``n``."""
    blocks = dense.reshape(dense.shape[0], n_blocks, size)
    return blocks[np.arange(idx.shape[0])[:, None], idx]


def _dense_weight(W):
    """``(iBlocks * iSize, oBlocks * oSize)`` with ``W[p, q]`` at block ``(p, q)``."""
    i_blocks, o_blocks, i_size, o_size = W.shape
    return W.transpose(0, 2, 1, 3).reshape(i_blocks * i_size, o_blocks * o_size)


def _blocks_of(dense, shape):
    i_blocks, o_blocks, i_size, o_size = shape
    return dense.reshape(i_blocks, i_size, o_blocks, o_size).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_reference_block_products_equal_dense_products(case):
    a = case.make(F64)
    ii, oi = np.asarray(a.input_idx, np.intp), np.asarray(a.output_idx, np.intp)
    h_dense = _scatter(a.h, ii, case.i_blocks)  # (batch, iBlocks * iSize)
    products = _gather(h_dense @ _dense_weight(a.W), oi, case.o_blocks, case.o_size)

    assert_matches(_reference.sparse_block_gemv(*a.gemv()), a.o + products, F64)
    assert_matches(_reference.sparse_block_dot(*a.dot()), a.b[oi] + products, F64)


@pytest.mark.parametrize("alpha", [1.0, -0.5])
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_reference_outer_equals_dense_outer_products(case, alpha):
    # Row n adds outer(x_dense[n], y_dense[n]): block (p, q) of it is the sum of
    # outer(x[n, i], y[n, j]) over the pairs with x_idx = p and y_idx = q.
    a = case.make(F64)
    ii, oi = np.asarray(a.input_idx, np.intp), np.asarray(a.output_idx, np.intp)
    x_dense = _scatter(a.h, ii, case.i_blocks)
    y_dense = _scatter(a.grad, oi, case.o_blocks)
    expected = a.outer_o + alpha * _blocks_of(x_dense.T @ y_dense, case.W_shape)

    assert_matches(_reference.sparse_block_outer(*a.outer(), alpha=alpha), expected, F64)


@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_reference_dot_grad_equals_dense_backpropagation(case):
    a = case.make(F64)
    ii, oi = np.asarray(a.input_idx, np.intp), np.asarray(a.output_idx, np.intp)
    h_dense = _scatter(a.h, ii, case.i_blocks)
    g_dense = _scatter(a.grad, oi, case.o_blocks)  # (batch, oBlocks * oSize)

    grads = _reference.sparse_block_dot_grad(*a.dot_grad())

    assert_matches(grads.W, _blocks_of(h_dense.T @ g_dense, case.W_shape), F64)
    dh_dense = g_dense @ _dense_weight(a.W).T  # (batch, iBlocks * iSize)
    assert_matches(grads.h, _gather(dh_dense, ii, case.i_blocks, case.i_size), F64)
    assert_matches(grads.b, g_dense.sum(axis=0).reshape(a.b.shape), F64)


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_reference_softmax_equals_unshifted_exp_over_sum(case):
    x, _ = case.make(F64)  # |x| < 20 or so: exp without the shift is safe
    e = np.exp(x)

    assert_matches(_reference.softmax(x, axis=case.axis),
                   e / e.sum(axis=case.axis, keepdims=True), F64)


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_reference_softmax_grad_equals_the_jacobian_product(case):
    x, g = case.make(F64)
    y = _reference.softmax(x, axis=case.axis)
    y_rows = np.moveaxis(y, case.axis, -1).reshape(-1, x.shape[case.axis])
    g_rows = np.moveaxis(g, case.axis, -1).reshape(y_rows.shape)
    # J[r] = diag(y[r]) - outer(y[r], y[r]) is symmetric, so J^T g = J g.
    jacobians = np.stack([np.diag(r) - np.outer(r, r) for r in y_rows])
    rows = np.einsum("rkl,rl->rk", jacobians, g_rows)
    expected = np.moveaxis(rows.reshape(np.moveaxis(y, case.axis, -1).shape), -1, case.axis)

    assert_matches(_reference.softmax_grad(g, y, axis=case.axis), expected, F64)


def test_reference_softmax_subtracts_the_max():
    np.testing.assert_array_equal(_reference.softmax(np.array([0.0, 1000.0])), [0.0, 1.0])


def _h_softmax_by_loops(a):
    """Output ``c * K + k`` = P(c) * P(k | c) with unshifted softmaxes, one row at a time."""
    batch, K = a.x.shape[0], a.K
    out = np.zeros((batch, a.n_classes * K))
    for n in range(batch):
        e_class = np.exp(a.x[n] @ a.W1 + a.b1)
        for c in range(a.n_classes):
            e_slot = np.exp(a.x[n] @ a.W2[c] + a.b2[c])
            for k in range(K):
                out[n, c * K + k] = e_class[c] / e_class.sum() * e_slot[k] / e_slot.sum()
    return out[:, :a.n_outputs]


@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_reference_h_softmax_full_equals_the_product_of_two_softmaxes(case):
    a = case.make(F64)

    full = _reference.h_softmax(*a.call())

    assert_matches(full, _h_softmax_by_loops(a), F64)
    row_sums = full.sum(axis=1)
    assert (row_sums < 1.0 - 1e-12).all() == case.truncated
    assert (np.abs(row_sums - 1.0) < 1e-12).all() == (not case.truncated)


@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_reference_h_softmax_target_is_the_full_mode_column(case):
    a = case.make(F64)

    for target in (a.target, a.target.reshape(-1, 1)):
        assert_matches(_reference.h_softmax(*a.call(), target=target),
                       _reference.h_softmax(*a.call())[np.arange(case.batch), a.target], F64)


@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_reference_h_softmax_grad_target_is_full_mode_with_a_one_hot_gradient(case):
    # sum(g * h_softmax(target)) == sum(G * h_softmax(full)) with G[n, target[n]] = g[n].
    a = case.make(F64)
    g = np.random.default_rng(case.seed).standard_normal(case.batch)
    G = np.zeros((case.batch, case.n_outputs))
    G[np.arange(case.batch), a.target] = g

    target_grads = _reference.h_softmax_grad(g, *a.call(), target=a.target)
    full_grads = _reference.h_softmax_grad(G, *a.call())

    for got, want in zip(target_grads, full_grads):
        assert_matches(got, want, F64)


@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_reference_h_softmax_nll_is_minus_log_of_the_target_probability(case):
    a = case.make(F64)  # unit-normal weights: no probability underflows, so -log is exact here

    for target in (a.target, a.target.reshape(-1, 1)):
        assert_matches(_reference.h_softmax_nll(*a.call(), target),
                       -np.log(_h_softmax_by_loops(a)[np.arange(case.batch), a.target]), F64)


@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_reference_h_softmax_nll_grad_is_the_chain_rule_through_minus_log(case):
    # d(-log p)/dp = -1/p: the NLL gradient is h_softmax_grad with grad_output -g / p.
    a = case.make(F64)
    g = np.random.default_rng(case.seed).standard_normal(case.batch)
    p = _reference.h_softmax(*a.call(), target=a.target)

    nll_grads = _reference.h_softmax_nll_grad(g, *a.call(), a.target)
    chained = _reference.h_softmax_grad(-g / p, *a.call(), target=a.target)

    for got, want in zip(nll_grads, chained):
        assert_matches(got, want, F64)
