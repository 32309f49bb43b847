"""Property tests: random small problems (zero sizes, repeated indices, every index dtype
and layout) against the NumPy oracle.

Hypothesis draws the sizes and a seed; the array values come from a NumPy
generator with that seed, which is far faster than drawing every element.
``derandomize=True`` makes the examples the same on every run, so CI is reproducible.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import INDEX_DTYPE_NAMES, assert_empty, assert_matches
from tests.support.cases import LAYOUTS, HSoftmaxCase, ProductCase, SoftmaxCase

SETTINGS = settings(
    max_examples=25,
    deadline=None,  # the first example of a dtype compiles (or loads) the kernels
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

float_dtypes = st.sampled_from([np.float32, np.float64])
index_dtypes = st.sampled_from(list(INDEX_DTYPE_NAMES.values()))
seeds = st.integers(0, 2**32 - 1)


@st.composite
def product_cases(draw):
    """A ProductCase with 0-4 rows, 0-3 wide windows, 1-4 blocks of 0-6 per side."""
    i_win, o_win = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    patterns = ["random", "same_block"] + (["duplicates"] if min(i_win, o_win) >= 2 else [])
    return ProductCase(
        "drawn",
        batch=draw(st.integers(0, 4)),
        i_blocks=draw(st.integers(1, 4)),
        o_blocks=draw(st.integers(1, 4)),
        i_size=draw(st.integers(0, 6)),
        o_size=draw(st.integers(0, 6)),
        i_win=i_win,
        o_win=o_win,
        indices=draw(st.sampled_from(patterns)),
        layout=draw(st.sampled_from(LAYOUTS)),
        seed=draw(seeds),
    )


@SETTINGS
@given(case=product_cases(), dtype=float_dtypes, index_dtype=index_dtypes)
def test_sparse_block_gemv(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).gemv()

    assert_matches(nbs.sparse_block_gemv(*args), _reference.sparse_block_gemv(*args), dtype)


@SETTINGS
@given(case=product_cases(), dtype=float_dtypes, index_dtype=index_dtypes)
def test_sparse_block_dot(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).dot()

    assert_matches(nbs.sparse_block_dot(*args), _reference.sparse_block_dot(*args), dtype)


@SETTINGS
@given(case=product_cases(), dtype=float_dtypes, index_dtype=index_dtypes,
       alpha=st.sampled_from([1.0, 0.0, -1.0]) | st.floats(-3.0, 3.0))
def test_sparse_block_outer(case, dtype, index_dtype, alpha):
    args = case.make(dtype, index_dtype).outer()

    assert_matches(nbs.sparse_block_outer(*args, alpha=alpha),
                   _reference.sparse_block_outer(*args, alpha=alpha), dtype)


@SETTINGS
@given(case=product_cases(), dtype=float_dtypes, index_dtype=index_dtypes)
def test_sparse_block_dot_grad(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).dot_grad()

    for got, want in zip(nbs.sparse_block_dot_grad(*args), _reference.sparse_block_dot_grad(*args)):
        assert_matches(got, want, dtype)


@st.composite
def softmax_cases(draw):
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    return SoftmaxCase("drawn", shape, axis=draw(st.integers(-len(shape), len(shape) - 1)),
                       layout=draw(st.sampled_from(LAYOUTS)),
                       scale=draw(st.sampled_from([1.0, 30.0, 300.0])), seed=draw(seeds))


@SETTINGS
@given(case=softmax_cases(), dtype=float_dtypes)
def test_softmax_and_its_grad(case, dtype):
    x, g = case.make(dtype)
    # The oracle's max has no identity over an empty axis; the result is then empty anyway.
    has_rows = x.shape[case.axis] > 0
    y = _reference.softmax(x, axis=case.axis) if has_rows else np.empty(x.shape, dtype)
    dx = _reference.softmax_grad(g, y, axis=case.axis)

    assert_matches(nbs.softmax(x, axis=case.axis), y, dtype)
    assert_matches(nbs.softmax_grad(g, y, axis=case.axis), dx, dtype)


@st.composite
def hsoftmax_cases(draw):
    n_classes, K = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return HSoftmaxCase("drawn", batch=draw(st.integers(1, 4)), n_in=draw(st.integers(1, 4)),
                        n_classes=n_classes, K=K,
                        n_outputs=draw(st.integers(1, n_classes * K)), seed=draw(seeds))


@SETTINGS
@given(case=hsoftmax_cases(), dtype=float_dtypes, index_dtype=index_dtypes,
       target_column=st.booleans())
def test_h_softmax_and_its_grad(case, dtype, index_dtype, target_column):
    a = case.make(dtype, index_dtype)
    target = a.target.reshape(-1, 1) if target_column else a.target
    rng = np.random.default_rng(case.seed)
    g_full = rng.standard_normal((case.batch, case.n_outputs)).astype(dtype)
    g_target = rng.standard_normal(case.batch).astype(dtype)

    assert_matches(nbs.h_softmax(*a.call()), _reference.h_softmax(*a.call()), dtype)
    assert_matches(nbs.h_softmax(*a.call(), target=target),
                   _reference.h_softmax(*a.call(), target=target), dtype)
    for got, want in zip(nbs.h_softmax_grad(g_full, *a.call()),
                         _reference.h_softmax_grad(g_full, *a.call())):
        assert_matches(got, want, dtype)
    for got, want in zip(nbs.h_softmax_grad(g_target, *a.call(), target=target),
                         _reference.h_softmax_grad(g_target, *a.call(), target=target)):
        assert_matches(got, want, dtype)


@SETTINGS
@given(n_in=st.integers(1, 4), n_classes=st.integers(1, 4), K=st.integers(1, 4),
       dtype=float_dtypes, data=st.data())
def test_h_softmax_of_batch_0(n_in, n_classes, K, dtype, data):
    # The oracle cannot reshape a full-mode batch of 0, so the expectation is the shape alone.
    n_outputs = data.draw(st.integers(1, n_classes * K))
    a = HSoftmaxCase("drawn", batch=0, n_in=n_in, n_classes=n_classes, K=K,
                     n_outputs=n_outputs).make(dtype)

    assert_empty(nbs.h_softmax(*a.call()), (0, n_outputs), dtype)
    assert_empty(nbs.h_softmax(*a.call(), target=a.target), (0,), dtype)
