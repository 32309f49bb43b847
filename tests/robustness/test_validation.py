"""Every error of the contract (docs/API.md, "Errors"), for every public function.

Each test checks three things: the exception type, the useful parts of the
message (the argument, the bad value, the allowed range or expected shape), and
that nothing was written: every argument, ``o`` with ``inplace=True`` included,
still equals a copy taken before the call.

The error cases are one table (tests/support/errors.py): an op of the op table
with valid keyword arguments, a mutation of those arguments, the exception and
the message fragments. Validation runs before any kernel, so almost every test
is instant; the only kernels compiled here are those of the few "this is *not*
an error" checks at the end.
"""

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nbsparse as nbs
from tests.support.errors import (
    BATCH,
    FIRST_BAD_ARGS,
    GEMV,
    GEMV_INPLACE,
    HSM_GRAD_T,
    HSM_T,
    I_BLOCKS,
    I_WIN,
    N_OUTPUTS,
    O_BLOCKS,
    O_WIN,
    OUTER,
    OUTER_INPLACE,
    TABLE,
    _astype,
    _read_only_o,
    _reshaped,
    assert_raises_and_writes_nothing,
    assert_unchanged,
    case,
    fingerprint,
    index_message,
    index_params,
    layouts,
)


def test_table_ids_are_unique():
    ids = [p.id for p in TABLE]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize(("op", "case"), TABLE)
def test_error(op, case):
    args = case.apply(op.args())
    assert_raises_and_writes_nothing(op, args, case.exc, case.parts)


@pytest.mark.parametrize(("op", "name", "n", "what", "dtype", "value"), list(index_params()))
def test_index_out_of_range(op, name, n, what, dtype, value):
    args = op.args()
    idx = args[name].astype(dtype)
    position = (2,) if idx.ndim == 1 else (2, 1)  # not the first element: the position is real
    idx[position] = value
    args[name] = idx
    assert idx[position] == value  # the value is representable, not wrapped by the assignment
    before = fingerprint(args)
    with pytest.raises(IndexError, match="^" + re.escape(index_message(name, position, value, n, what))
                       + "$"):
        op.func(**args)
    assert_unchanged(args, before)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "negative-stride"])
@pytest.mark.parametrize(("op", "name", "n", "what"), FIRST_BAD_ARGS,
                         ids=[f"{op.name}-{name}" for op, name, *_ in FIRST_BAD_ARGS])
def test_first_bad_position_in_c_order_is_reported(op, name, n, what, layout):
    args = op.args()
    idx = args[name].copy()
    if idx.ndim == 1:
        idx[1], idx[2] = n + 3, -1
        first = ((1,), n + 3)  # memory order of the reversed view would find [2] first
    else:
        # C order meets (0, 1) first; F order (and a column-major walk) meets (1, 0) first.
        idx[0, 1], idx[1, 0], idx[2, 1] = n + 3, -1, n
        first = ((0, 1), n + 3)
    args[name] = layouts(idx)[layout]
    before = fingerprint(args)
    with pytest.raises(IndexError, match="^" + re.escape(index_message(name, *first[:1], first[1], n,
                                                                  what))):
        op.func(**args)
    assert_unchanged(args, before)


@settings(max_examples=60, deadline=None)
@given(
    idx=hnp.arrays(np.int16, (BATCH, I_WIN), elements=st.integers(-3, I_BLOCKS + 2)),
    fortran=st.booleans(),
)
def test_first_bad_position_property(idx, fortran):
    """Any pattern of bad input_idx values: the message names the first one in C order."""
    bad = [(pos, int(idx[pos])) for pos in np.ndindex(idx.shape)
           if not 0 <= idx[pos] < I_BLOCKS]
    assume(bad)  # an all-valid array would run the kernel; that is not this test's business
    args = GEMV_INPLACE.args()
    args["input_idx"] = np.asfortranarray(idx) if fortran else idx
    before = fingerprint(args)
    position, value = bad[0]
    expected = index_message("input_idx", position, value, I_BLOCKS, "W has 5 input blocks")
    with pytest.raises(IndexError, match="^" + re.escape(expected) + "$"):
        nbs.sparse_block_gemv(**args)
    assert_unchanged(args, before)


def test_target_column_shape_reports_two_dimensional_position():
    """A (batch, 1) target (accepted like Theano's column) reports positions as [row, 0]."""
    args = HSM_T.args()
    args["target"] = np.array([[0], [N_OUTPUTS], [1]], dtype=np.int32)
    before = fingerprint(args)
    expected = index_message("target", (1, 0), N_OUTPUTS, N_OUTPUTS, "n_outputs = 9")
    with pytest.raises(IndexError, match="^" + re.escape(expected)):
        nbs.h_softmax(**args)
    assert_unchanged(args, before)


def test_target_beyond_n_outputs_but_inside_a_class_is_refused():
    """n_outputs = 9 < 5 * 2 slots: target 9 names a real slot but is not an output."""
    args = HSM_GRAD_T.args()
    args["target"] = np.array([0, 8, 9])
    before = fingerprint(args)
    with pytest.raises(IndexError, match=re.escape("target[2] = 9 is outside [0, 9)")):
        nbs.h_softmax_grad(**args)
    assert_unchanged(args, before)


# --------------------------------------------------------------------------- precedence
# Checks on metadata (kind, dtype, shape) come before checks on values (index
# ranges), so a wrong shape is reported as such and not as an index error at a
# position that means nothing; in every combination nothing is written.
def _bad_index(name, value):
    def change(a):
        idx = a[name].copy()
        idx.flat[-1] = value
        return idx

    return change


PRECEDENCE = [
    case("bad-index+inplace-dtype", TypeError, ("inplace=True", "o", "float64", "float32"),
         input_idx=_bad_index("input_idx", 99), o=_astype("o", np.float32), inplace=True),
    case("bad-index+read-only", ValueError, ("inplace=True", "o", "read-only"),
         output_idx=_bad_index("output_idx", -1), o=_read_only_o,
         inplace=True),
    case("bad-index+wrong-shape", ValueError, ("o", "(3, 4, 9)", "(3, 4, 8)"),
         input_idx=_bad_index("input_idx", 99), o=_reshaped("o", (BATCH, O_WIN, 9)),
         inplace=True),
    case("bad-index+non-float", TypeError, ("h", "dtype int64"),
         input_idx=_bad_index("input_idx", 99), h=_astype("h", np.int64), inplace=True),
    case("wrong-shape+non-float", TypeError, ("W", "dtype int32"),
         W=_astype("W", np.int32), h=_reshaped("h", (BATCH, I_WIN, 1)), inplace=True),
    case("non-array+non-float", TypeError, ("W", "got list"),
         W=lambda a: a["W"].tolist(), o=_astype("o", np.int32), inplace=True),
]


@pytest.mark.parametrize("case", PRECEDENCE, ids=[c.id for c in PRECEDENCE])
def test_precedence_gemv_inplace(case):
    args = case.apply(GEMV.args())
    assert_raises_and_writes_nothing(GEMV, args, case.exc, case.parts)


def test_precedence_outer_inplace_bad_index_and_bad_alpha():
    args = OUTER_INPLACE.args()
    args["alpha"] = "2"
    args["y_idx"] = _bad_index("y_idx", O_BLOCKS)(args)
    assert_raises_and_writes_nothing(OUTER_INPLACE, args, TypeError, ("alpha", "got str"))


def test_precedence_h_softmax_grad_bad_target_before_grad_output_shape():
    """Both the target and grad_output are wrong: either error is fine, nothing is written."""
    args = HSM_GRAD_T.args()
    args["target"] = np.array([0, -1, 2])
    args["grad_output"] = np.zeros((BATCH, N_OUTPUTS))
    before = fingerprint(args)
    with pytest.raises((IndexError, ValueError), match=r"^(target|grad_output)(?!\w)"):
        nbs.h_softmax_grad(**args)
    assert_unchanged(args, before)


# --------------------------------------------------------------------------- not errors
def test_read_only_arguments_are_fine_without_inplace():
    """Read-only inputs (also ``o``) are only refused when ``inplace=True`` would write them."""
    args = GEMV.args()
    for a in args.values():
        a.setflags(write=False)
    before = fingerprint(args)
    result = nbs.sparse_block_gemv(**args)
    assert type(result) is np.ndarray and result.flags.writeable
    assert_unchanged(args, before)


@pytest.mark.parametrize("alpha", [2, np.float32(0.5), np.array(1.5), np.int64(3)],
                         ids=["int", "float32", "0-d-array", "int64"])
def test_real_scalars_are_accepted_as_alpha(alpha):
    args = OUTER.args()
    args["alpha"] = alpha
    expected = nbs.sparse_block_outer(**{**args, "alpha": float(alpha)})
    np.testing.assert_array_equal(nbs.sparse_block_outer(**args), expected)


def test_fingerprint_sees_bytes_strides_flags_and_gaps():
    """Guard: the "writes nothing" check notices what assert_array_equal would not."""
    memory = np.zeros(8)
    args = {"a": memory[::2], "b": np.zeros(3), "c": np.zeros((2, 2)), "d": np.ones(2)}
    before = fingerprint(args)
    assert_unchanged(args, before)
    changes = [
        lambda: memory.__setitem__(1, 1.0),  # a gap of the strided view a
        lambda: args["b"].__setitem__(0, -0.0),  # equal to 0.0, different bytes
        lambda: args.__setitem__("c", args["c"].T.copy().T),  # same values, F strides
        lambda: args["d"].setflags(write=False),
    ]
    for change in changes:
        args = {"a": memory[::2], "b": np.zeros(3), "c": np.zeros((2, 2)), "d": np.ones(2)}
        memory[...] = 0.0
        before = fingerprint(args)
        change()
        with pytest.raises(AssertionError, match="changed"):
            assert_unchanged(args, before)
