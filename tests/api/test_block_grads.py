"""``sparse=True``: weight gradients as ``BlockGrad`` block lists, the same bits as the dense ones.

Every case of the gradient tests (products: every kernel path, empty batches;
``h_softmax`` target and full mode, ``h_softmax_nll``), both dtypes: the listed
blocks rebuilt by ``to_dense`` equal the ``sparse=False`` result bit for bit,
the index lists exactly the touched blocks in increasing order, and the dense
fields are unchanged. Then what the sparse path allocates, the kinds it
refuses for now, and ``BlockGrad.to_dense``'s own checks.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbsparse as nbs
from nbsparse import _hugepages
from tests.blocksparse.test_kernel_paths import IDLE_CASE, ODD_ROWS_CASE, PATH_CASES
from tests.support.assertions import FLOAT_DTYPES
from tests.support.cases import EMPTY_PRODUCT_CASES, HSOFTMAX_CASES, PRODUCT_CASES, HSoftmaxCase, ProductCase

PRODUCTS = [*PRODUCT_CASES, *EMPTY_PRODUCT_CASES, *PATH_CASES, IDLE_CASE, ODD_ROWS_CASE,
            # many terms per block of the grid, but some (input, output) block pairs never meet:
            # the touched pairs are gathered out of the touched rows x columns
            ProductCase("unmet_pairs", batch=40, i_blocks=2, o_blocks=2, i_size=5, o_size=7, i_win=1,
                        o_win=1, indices="same_block", seed=41)]


def assert_same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def assert_lists_touched_blocks(grad, touched):
    """``grad.index`` is exactly the sorted distinct rows of ``touched`` (an ``(m, d)`` array)."""
    assert isinstance(grad, nbs.BlockGrad)
    assert grad.index.dtype == np.intp and grad.index.ndim == 2
    expected = np.unique(touched.reshape(-1, touched.shape[-1]), axis=0) if touched.size else touched[:0]
    np.testing.assert_array_equal(grad.index, expected.reshape(-1, touched.shape[-1]))
    assert grad.values.shape[0] == grad.index.shape[0]


def assert_matches_dense(sparse, dense, block_fields):
    for field in dense._fields:
        got, want = getattr(sparse, field), getattr(dense, field)
        if field in block_fields:
            assert_same_bits(got.to_dense(want.shape), want)
            assert got.values.dtype == want.dtype
        else:
            assert_same_bits(got, want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCTS, ids=str)
def test_sparse_block_dot_grad_lists_the_dense_blocks_bit_for_bit(case, dtype):
    a = case.make(dtype)
    dense = nbs.sparse_block_dot_grad(*a.dot_grad())
    sparse = nbs.sparse_block_dot_grad(*a.dot_grad(), sparse=True)
    assert_matches_dense(sparse, dense, ("W", "b"))
    pairs = np.stack(np.broadcast_arrays(a.input_idx[:, :, None], a.output_idx[:, None, :]), axis=-1)
    assert_lists_touched_blocks(sparse.W, pairs.astype(np.intp))
    assert_lists_touched_blocks(sparse.b, a.output_idx.reshape(-1, 1).astype(np.intp))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
@pytest.mark.parametrize("func", [nbs.h_softmax_grad, nbs.h_softmax_nll_grad], ids=lambda f: f.__name__)
def test_h_softmax_gradients_list_the_target_classes_bit_for_bit(func, case, dtype):
    a = case.make(dtype)
    g = np.random.default_rng(1).standard_normal(a.x.shape[0]).astype(dtype)
    dense = func(g, *a.call(), a.target)
    sparse = func(g, *a.call(), a.target, sparse=True)
    assert_matches_dense(sparse, dense, ("W2", "b2"))
    classes = (a.target // a.K).reshape(-1, 1).astype(np.intp)
    assert_lists_touched_blocks(sparse.W2, classes)
    assert_lists_touched_blocks(sparse.b2, classes)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_full_mode_lists_every_class(case, dtype):
    a = case.make(dtype)
    g = np.random.default_rng(2).standard_normal((a.x.shape[0], a.n_outputs)).astype(dtype)
    dense = nbs.h_softmax_grad(g, *a.call())
    sparse = nbs.h_softmax_grad(g, *a.call(), sparse=True)
    assert_matches_dense(sparse, dense, ("W2", "b2"))
    every = np.arange(a.n_classes).reshape(-1, 1)
    np.testing.assert_array_equal(sparse.W2.index, every)
    np.testing.assert_array_equal(sparse.b2.index, every)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_an_empty_batch_lists_no_block(dtype):
    a = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    sparse = nbs.h_softmax_nll_grad(np.zeros(0, dtype), *a.call(), a.target, sparse=True)
    assert sparse.W2.index.shape == (0, 1) and sparse.W2.values.shape == (0, a.W2.shape[1], a.K)
    assert sparse.b2.index.shape == (0, 1) and sparse.b2.values.shape == (0, a.K)
    assert_same_bits(sparse.W2.to_dense(a.W2.shape), np.zeros_like(a.W2))


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(0, 12), i_blocks=st.integers(1, 5), o_blocks=st.integers(1, 5),
       i_win=st.integers(1, 3), o_win=st.integers(1, 3), i_size=st.integers(1, 6), o_size=st.integers(1, 9),
       seed=st.integers(0, 2**16), dtype=st.sampled_from(FLOAT_DTYPES))
def test_any_product_lists_its_dense_blocks(batch, i_blocks, o_blocks, i_win, o_win, i_size, o_size, seed, dtype):
    a = ProductCase("drawn", batch=batch, i_blocks=i_blocks, o_blocks=o_blocks, i_size=i_size, o_size=o_size,
                    i_win=i_win, o_win=o_win, seed=seed).make(dtype)
    assert_matches_dense(nbs.sparse_block_dot_grad(*a.dot_grad(), sparse=True),
                         nbs.sparse_block_dot_grad(*a.dot_grad()), ("W", "b"))


# --------------------------------------------------------------------------- what it allocates

def test_the_sparse_path_allocates_nothing_of_the_weights_size(monkeypatch):
    import tracemalloc

    C, n_in, K, batch = 1000, 32, 32, 16  # W2: 4 MB float32, 16 targets touch at most 16 classes
    a = HSoftmaxCase("wide", batch=batch, n_in=n_in, n_classes=C, K=K, n_outputs=C * K, seed=7).make(np.float32)
    g = np.ones(batch, np.float32)
    requested = []
    for name in ("empty", "zeros"):
        real = getattr(_hugepages, name)
        monkeypatch.setattr(_hugepages, name, lambda shape, dtype, real=real: (
            requested.append(int(np.prod(shape)) * np.dtype(dtype).itemsize), real(shape, dtype))[1])
    nbs.h_softmax_nll_grad(g, *a.call(), a.target, sparse=True)  # compile outside the measurement
    requested.clear()
    tracemalloc.start()
    nbs.h_softmax_nll_grad(g, *a.call(), a.target, sparse=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert max(requested, default=0) < a.W2.nbytes / 8
    assert peak < a.W2.nbytes / 8
    # The dense path does ask for W2's size: the recording sees it.
    requested.clear()
    nbs.h_softmax_nll_grad(g, *a.call(), a.target)
    assert max(requested) >= a.W2.nbytes


# --------------------------------------------------------------------------- refused for now

@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dask_block_lists_merge_to_the_dense_dask_sum_bit_for_bit(chunk, dtype):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    a = ProductCase("chunked", batch=13, i_blocks=4, o_blocks=5, i_size=3, o_size=4, i_win=2, o_win=3,
                    seed=1).make(dtype)
    args = list(a.dot_grad())
    lazy = [da.from_array(x, chunks=(chunk, *x.shape[1:])) if k in (0, 2, 3, 5) else x for k, x in enumerate(args)]
    sparse = nbs.sparse_block_dot_grad(*lazy, sparse=True)
    dense = nbs.sparse_block_dot_grad(*lazy)
    assert isinstance(sparse.W, nbs.BlockGrad) and np.isnan(sparse.W.index.shape[0])  # known once computed
    W, b, dW, db, index = dask.compute(sparse.W.to_dense(a.W.shape), sparse.b.to_dense(a.b.shape),
                                       dense.W, dense.b, sparse.W.index)
    assert_same_bits(W, dW)
    assert_same_bits(b, db)
    np.testing.assert_array_equal(index, nbs.sparse_block_dot_grad(*args, sparse=True).W.index)


@pytest.mark.parametrize("func", [nbs.h_softmax_grad, nbs.h_softmax_nll_grad], ids=lambda f: f.__name__)
def test_dask_h_softmax_block_lists_merge_to_the_dense_dask_sum(func):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    h = HSoftmaxCase("chunked", batch=9, n_in=4, n_classes=5, K=3, n_outputs=14, seed=2).make(np.float64)
    g = da.from_array(np.linspace(0.5, 1.5, 9), chunks=3)
    call = (g, da.from_array(h.x, chunks=(3, 4)), *h.call()[1:], da.from_array(h.target, chunks=3))
    sparse, dense = func(*call, sparse=True), func(*call)
    W2, b2, dW2, db2, W1, dW1 = dask.compute(sparse.W2.to_dense(h.W2.shape), sparse.b2.to_dense(h.b2.shape),
                                             dense.W2, dense.b2, sparse.W1, dense.W1)
    assert_same_bits(W2, dW2)
    assert_same_bits(b2, db2)
    assert_same_bits(W1, dW1)


def test_a_merged_block_list_holds_only_the_touched_blocks():
    from nbsparse._dask_graph import merge_blocks

    first = nbs.BlockGrad(np.array([[0, 1], [2, 0]], np.intp), np.ones((2, 2, 3)))
    second = nbs.BlockGrad(np.array([[2, 0], [3, 3]], np.intp), np.full((2, 2, 3), 2.0))
    third = nbs.BlockGrad(np.zeros((0, 2), np.intp), np.zeros((0, 2, 3)))
    merged = merge_blocks([first, second, third])
    np.testing.assert_array_equal(merged.index, [[0, 1], [2, 0], [3, 3]])
    np.testing.assert_array_equal(merged.values[:, 0, 0], [1.0, 3.0, 2.0])
    assert merge_blocks([first]) is first


# --------------------------------------------------------------------------- BlockGrad.to_dense

def test_to_dense_places_each_block_and_zeroes_the_rest():
    grad = nbs.BlockGrad(np.array([[0, 1], [2, 0]], np.intp), np.arange(12.0).reshape(2, 2, 3))
    dense = grad.to_dense((3, 2, 2, 3))
    np.testing.assert_array_equal(dense[0, 1], grad.values[0])
    np.testing.assert_array_equal(dense[2, 0], grad.values[1])
    dense[0, 1] = dense[2, 0] = 0
    assert not dense.any()


@pytest.mark.parametrize(("index", "values", "shape", "match"), [
    (np.zeros((2, 1), np.intp), np.zeros((2, 3)), (2, 4), "does not fit"),  # other block shape
    (np.zeros((1, 3), np.intp), np.zeros((1, 3)), (2, 3), "does not fit"),  # more index columns than axes
    (np.array([[2]], np.intp), np.zeros((1, 3)), (2, 3), "outside the block grid"),
    (np.array([[-1]], np.intp), np.zeros((1, 3)), (2, 3), "outside the block grid"),
    (np.zeros((2, 1), np.intp), np.zeros((3, 3)), (2, 3), "do not list the same blocks"),
    (np.zeros(2, np.intp), np.zeros((2, 3)), (2, 3), "do not list the same blocks"),
])
def test_to_dense_refuses_blocks_that_do_not_fit(index, values, shape, match):
    with pytest.raises(ValueError, match=match):
        nbs.BlockGrad(index, values).to_dense(shape)


@pytest.mark.parametrize("name", ["sparse_block_dot_grad", "h_softmax_grad", "h_softmax_nll_grad"])
def test_sparse_is_a_keyword_only_option_defaulting_to_false(name):
    import inspect

    param = inspect.signature(getattr(nbs, name)).parameters["sparse"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is False
