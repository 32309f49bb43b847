"""The table of bad inputs: every error of the contract (docs/API.md, "Errors") for every op.

Each row of the op table (``nbsparse._optable``), with ``inplace=True`` as a
second row for the ops that write into ``o``, gets valid keyword arguments; a
case is a mutation of those arguments, the exception and the message fragments.
Used on host arrays by tests/robustness/test_validation.py and on device arrays
by tests/device/test_validation_device.py.

Shapes are chosen pairwise different (batch 3, iWin 2, oWin 4, iBlocks 5,
oBlocks 6, iSize 7, oSize 8: the defaults of ``Sizes``) so that a message
quoting a number is unambiguous.
"""

import copy
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from nbsparse import _optable as optable
from nbsparse._optable import OP, Sizes, problem

SIZES = Sizes()
BATCH, I_WIN, O_WIN, I_BLOCKS, O_BLOCKS, I_SIZE, O_SIZE = (
    SIZES.batch, SIZES.i_win, SIZES.o_win, SIZES.i_blocks, SIZES.o_blocks, SIZES.i_size, SIZES.o_size)
N_IN, N_CLASSES, PER_CLASS, N_OUTPUTS = (  # n_classes * per_class = 10 > 9: truncated
    SIZES.n_in, SIZES.n_classes, SIZES.n_outputs_per_class, SIZES.n_outputs)
SEED = 0


@dataclass(frozen=True)
class Op:
    """A row of the op table, maybe with ``inplace=True``, and its valid keyword arguments."""

    row: object
    extra: dict = field(default_factory=dict)  # e.g. inplace=True

    @property
    def name(self):
        return self.row.name + "".join(f"-{k}" for k in self.extra)

    @property
    def func(self):
        return self.row.func

    def args(self):
        """Fresh valid keyword arguments: floats in float64, indices in int64."""
        return {**self.row.kwargs(problem(SIZES, np.float64, np.random.default_rng(SEED))),
                **self.extra}


GEMV = Op(OP["sparse_block_gemv"])
GEMV_INPLACE = Op(OP["sparse_block_gemv"], {"inplace": True})
DOT = Op(OP["sparse_block_dot"])
DOT_GRAD = Op(OP["sparse_block_dot_grad"])
OUTER = Op(OP["sparse_block_outer"])
OUTER_INPLACE = Op(OP["sparse_block_outer"], {"inplace": True})
SOFTMAX = Op(OP["softmax"])
SOFTMAX_GRAD = Op(OP["softmax_grad"])
HSM = Op(OP["h_softmax"])
HSM_T = Op(OP["h_softmax[target]"])
HSM_GRAD = Op(OP["h_softmax_grad"])
HSM_GRAD_T = Op(OP["h_softmax_grad[target]"])
NLL = Op(OP["h_softmax_nll"])
NLL_GRAD = Op(OP["h_softmax_nll_grad"])
TOPK = Op(OP["h_softmax_topk"])
LOGPROB = Op(OP["h_softmax_logprob"])
SAMPLE = Op(OP["h_softmax_sample"])


# --------------------------------------------------------------------------- checking
def message_pattern(parts):
    """A regex: the message starts with ``parts[0]`` (a whole word) and has the rest in order."""
    first, *rest = parts
    return "^" + re.escape(first) + r"(?!\w)" + "".join(".*?" + re.escape(p) for p in rest)


def _memory(a):
    """What a call must not change about the array ``a``, down to the bytes.

    The values as bytes (so -0.0, NaN payloads and the bytes of a non-float dtype
    count), dtype, shape, strides and writeability, and the bytes of the whole
    buffer a view looks into (a write into the gaps of a strided view shows).
    """
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    return {"type": type(a), "dtype": a.dtype, "shape": a.shape, "strides": a.strides,
            "writeable": a.flags.writeable, "bytes": a.tobytes(), "buffer": base.tobytes()}


def fingerprint(args):
    """Everything about ``args`` that a failed call must leave as it was (see ``_memory``)."""
    return {name: _memory(a) if isinstance(a, np.ndarray) else copy.deepcopy(a)
            for name, a in args.items()}


def assert_unchanged(after, before):
    """Every argument matches its :func:`fingerprint` from before the call."""
    assert after.keys() == before.keys()
    now = fingerprint(after)
    for name, original in before.items():
        if isinstance(original, dict) and "buffer" in original:
            for what, value in original.items():
                assert now[name][what] == value, f"{name}: {what} changed"
        else:
            assert type(after[name]) is type(original) and after[name] == original, name


def assert_raises_and_writes_nothing(op, args, exc, parts):
    before = fingerprint(args)
    with pytest.raises(exc, match=message_pattern(parts)):
        op.func(**args)
    assert_unchanged(args, before)


@dataclass(frozen=True)
class Case:
    id: str
    changes: dict  # name -> new value, or a callable(args) -> new value
    exc: type
    parts: tuple

    def apply(self, args):
        for name, change in self.changes.items():
            args[name] = change(args) if callable(change) else change
        return args


def case(id, exc, parts, **changes):
    return Case(id, changes, exc, tuple(parts))


def _astype(name, dtype):
    return lambda a: a[name].astype(dtype)


def _reshaped(name, shape):
    return lambda a: np.zeros(shape, dtype=a[name].dtype)


def _shape_str(shape):
    return str(tuple(shape))


# --------------------------------------------------------------------------- TypeError
NON_ARRAYS = [  # (id, make from the valid array, type name in the message)
    ("list", lambda a: a.tolist(), "list"),
    ("tuple", lambda a: tuple(a.tolist()), "tuple"),
    ("scalar", lambda a: a.flat[0].item(), None),  # a Python float, or int for indices
    ("string", lambda a: "abc", "str"),
    ("numpy-scalar", lambda a: a.flat[0], None),  # np.float64 / np.int64: not an array either
]
NON_FLOAT_DTYPES = [np.int32, np.int64, np.bool_, np.complex64, np.complex128, object, np.float16]
NON_INT_DTYPES = [np.float32, np.float64, np.bool_]


def non_array_cases(floats, indices):
    """Anything that is not an array is a TypeError naming the argument and what it got."""
    for name in floats + indices:
        for kind, make, type_name in NON_ARRAYS:
            # Bind loop variables now; the table is built before any test runs.
            def change(a, name=name, make=make):
                return make(a[name])

            if kind == "numpy-scalar":
                shown = "int64" if name in indices else "float64"
            else:
                shown = type_name or ("int" if name in indices else "float")
            yield case(f"{name}-{kind}", TypeError, (name, f"got {shown}"), **{name: change})


def none_cases(names):
    """None where an array is required is a TypeError naming the argument (not AttributeError)."""
    for name in names:
        yield case(f"{name}-None", TypeError, (name, "None"), **{name: None})


def non_float_cases(names):
    for name in names:
        for dtype in NON_FLOAT_DTYPES:
            dt = np.dtype(dtype)
            yield case(f"{name}-{dt}", TypeError, (name, "float32", "float64", f"dtype {dt}"),
                       **{name: _astype(name, dt)})


def non_int_cases(names):
    for name in names:
        for dtype in NON_INT_DTYPES:
            dt = np.dtype(dtype)
            yield case(f"{name}-{dt}", TypeError, (name, "integer", f"dtype {dt}"),
                       **{name: _astype(name, dt)})


def axis_type_cases():
    for value, type_name in [(1.0, "float"), ("0", "str"), (None, "NoneType"), (True, "bool"),
                             (np.float64(0.0), "float64")]:
        yield case(f"axis-{value!r}", TypeError, ("axis", "integer", f"got {type_name}"),
                   axis=value)


def size_type_cases():
    for name in ("batch_size", "n_outputs", "n_classes", "n_outputs_per_class"):
        for value, type_name in [(2.0, "float"), (True, "bool"), ("3", "str"), (None, "NoneType")]:
            yield case(f"{name}-{value!r}", TypeError, (name, "integer", f"got {type_name}"),
                       **{name: value})


def inplace_dtype_cases(o_name, others):
    """inplace=True with a float32 o whose result dtype is float64: o cannot hold the result."""
    for other in others:
        yield case(f"inplace-o32-{other}64", TypeError,
                   ("inplace=True", o_name, "float64", "float32"),
                   **{o_name: _astype(o_name, np.float32), "inplace": True})


def alpha_cases():
    for value, type_name in [("1.0", "str"), (np.array([1.0, 2.0]), "ndarray"), (None, "NoneType"),
                             (1j, "complex")]:
        yield case(f"alpha-{type_name}", TypeError, ("alpha", "real scalar", f"got {type_name}"),
                   alpha=value)


# --------------------------------------------------------------------------- ValueError
def ndim_cases(layouts):
    """One dimension too many and one too few, for arguments checked with a ``k-D`` message.

    ``layouts`` maps the name to the expected shape; the message gives the expected
    number of dimensions, the number received and the shape received.
    """
    for name, shape in layouts.items():
        for label, bad in [("extra-dim", (*shape, 1)), ("missing-dim", shape[:-1])]:
            parts = (name, f"{len(shape)}-D", f"{len(bad)}-D", _shape_str(bad))
            yield case(f"{name}-{label}", ValueError, parts, **{name: _reshaped(name, bad)})


def shape_cases(name, expected, bad_shapes):
    """Arguments whose whole shape is fixed by the others: the message gives both shapes."""
    for bad in bad_shapes:
        parts = (name, _shape_str(bad), _shape_str(expected))
        yield case(f"{name}-shape{_shape_str(bad)}", ValueError, parts,
                   **{name: _reshaped(name, bad)})


def product_shape_cases(with_o):
    """Shape relations of gemv, dot and dot_grad (W, h, input_idx, output_idx, and o)."""
    B, IW, OW, IS, OS = BATCH, I_WIN, O_WIN, I_SIZE, O_SIZE
    yield from ndim_cases({
        "W": (I_BLOCKS, O_BLOCKS, IS, OS), "h": (B, IW, IS),
        "input_idx": (B, IW), "output_idx": (B, OW),
    })
    # iSize: h vs W, either side wrong.
    yield case("h-iSize", ValueError, ("h.shape[2]", "6", "W.shape[2]", "7"),
               h=_reshaped("h", (B, IW, 6)))
    yield case("W-iSize", ValueError, ("h.shape[2]", "7", "W.shape[2]", "6"),
               W=_reshaped("W", (I_BLOCKS, O_BLOCKS, 6, OS)))
    # batch and iWin: input_idx must be h.shape[:2].
    yield case("input_idx-batch", ValueError, ("input_idx", "(4, 2)", "(3, 2)"),
               input_idx=_reshaped("input_idx", (4, IW)))
    yield case("input_idx-iWin", ValueError, ("input_idx", "(3, 3)", "(3, 2)"),
               input_idx=_reshaped("input_idx", (B, 3)))
    yield case("h-batch", ValueError, ("input_idx", "(3, 2)", "(4, 2)"),
               h=_reshaped("h", (4, IW, IS)))
    yield case("h-iWin", ValueError, ("input_idx", "(3, 2)", "(3, 3)"),
               h=_reshaped("h", (B, 3, IS)))
    # batch: output_idx vs h.
    yield case("output_idx-batch", ValueError, ("output_idx.shape[0]", "4", "h.shape[0]", "3"),
               output_idx=_reshaped("output_idx", (4, OW)))
    if with_o:
        yield from ndim_cases({"o": (B, OW, OS)})
        yield from shape_cases("o", (B, OW, OS), [(4, OW, OS), (B, 5, OS), (B, OW, 9)])
        # oWin and oSize taken from output_idx and W: o is then the odd one out.
        yield case("output_idx-oWin", ValueError, ("o", "(3, 4, 8)", "(3, 5, 8)"),
                   output_idx=_reshaped("output_idx", (B, 5)))
        yield case("W-oSize", ValueError, ("o", "(3, 4, 8)", "(3, 4, 9)"),
                   W=_reshaped("W", (I_BLOCKS, O_BLOCKS, IS, 9)))


def bias_shape_cases():
    yield from shape_cases("b", (O_BLOCKS, O_SIZE),
                           [(O_BLOCKS + 1, O_SIZE), (O_BLOCKS, O_SIZE + 1), (O_SIZE,),
                            (O_BLOCKS, O_SIZE, 1), (O_SIZE, O_BLOCKS)])


def outer_shape_cases():
    B, XW, YW, XS, YS = BATCH, I_WIN, O_WIN, I_SIZE, O_SIZE
    yield from ndim_cases({
        "o": (I_BLOCKS, O_BLOCKS, XS, YS), "x": (B, XW, XS), "y": (B, YW, YS),
        "x_idx": (B, XW), "y_idx": (B, YW),
    })
    yield case("x-xSize", ValueError, ("x.shape[2]", "6", "o.shape[2]", "7"),
               x=_reshaped("x", (B, XW, 6)))
    yield case("y-ySize", ValueError, ("y.shape[2]", "9", "o.shape[3]", "8"),
               y=_reshaped("y", (B, YW, 9)))
    yield case("o-xSize", ValueError, ("x.shape[2]", "7", "o.shape[2]", "6"),
               o=_reshaped("o", (I_BLOCKS, O_BLOCKS, 6, YS)))
    yield case("o-ySize", ValueError, ("y.shape[2]", "8", "o.shape[3]", "9"),
               o=_reshaped("o", (I_BLOCKS, O_BLOCKS, XS, 9)))
    yield case("y-batch", ValueError, ("y.shape[0]", "4", "x.shape[0]", "3"),
               y=_reshaped("y", (4, YW, YS)))
    yield case("x-batch", ValueError, ("y.shape[0]", "3", "x.shape[0]", "4"),
               x=_reshaped("x", (4, XW, XS)))
    yield from shape_cases("x_idx", (B, XW), [(B, 3), (4, XW)])
    yield from shape_cases("y_idx", (B, YW), [(B, 5), (2, YW)])


def _read_only_o(a):
    o = a["o"].copy()
    o.setflags(write=False)
    return o


def read_only_case():
    yield case("inplace-read-only-o", ValueError, ("inplace=True", "o", "read-only"),
               o=_read_only_o, inplace=True)
    # A broadcast view is read-only too (its elements share memory): never written.
    yield case("inplace-broadcast-o", ValueError, ("inplace=True", "o", "read-only"),
               o=lambda a: np.broadcast_to(a["o"][:1], a["o"].shape), inplace=True)


def zero_d_cases(names):
    """A 0-D array where an array of dimensions is needed: ValueError naming it and its shape."""
    for name in names:
        yield case(f"{name}-0-D", ValueError, (name, "()"),
                   **{name: lambda a, name=name: np.array(a[name].flat[0])})


def axis_range_cases(ndim):
    for axis in (ndim, ndim + 5, -ndim - 1):
        yield case(f"axis={axis}", ValueError, ("axis", str(axis), f"{ndim}-D"), axis=axis)


def softmax_value_cases(names):
    yield from axis_range_cases(2)
    zero_d = {name: (lambda a, name=name: np.array(1.0)) for name in names}
    yield case("0-D", ValueError, ("axis", "-1", "0-D"), **zero_d)
    yield case("0-D-axis0", ValueError, ("axis", "0", "0-D"), axis=0, **zero_d)


def hsm_value_cases(grad, target):
    B, C, K, N = BATCH, N_CLASSES, PER_CLASS, N_OUTPUTS
    yield case("x-1-D", ValueError, ("x", "2-D", "1-D", "(4,)"), x=_reshaped("x", (N_IN,)))
    yield case("x-3-D", ValueError, ("x", "2-D", "3-D", "(3, 4, 1)"),
               x=_reshaped("x", (B, N_IN, 1)))
    yield case("batch_size-mismatch", ValueError, ("batch_size", "4", "x", "3"), batch_size=4)
    yield case("batch_size-negative", ValueError, ("batch_size", ">= 0", "-1"), batch_size=-1)
    yield case("too-few-slots", ValueError,
               ("n_classes * n_outputs_per_class", "10", "n_outputs", "11"), n_outputs=11)
    # Sizes far beyond the arrays (and beyond 32 bits) are shape errors, never allocations.
    yield case("n_classes-huge", ValueError, ("W1", "(4, 5)", f"(4, {2**40})"), n_classes=2**40)
    yield case("n_outputs_per_class-huge", ValueError, ("W2", "(5, 4, 2)", f"(5, 4, {2**33})"),
               n_outputs_per_class=2**33)
    for name in ("n_outputs", "n_classes", "n_outputs_per_class"):
        for value in (0, -1):
            yield case(f"{name}={value}", ValueError, (name, ">= 1", str(value)), **{name: value})
    yield from shape_cases("W1", (N_IN, C), [(N_IN, C + 1), (N_IN + 1, C), (C, N_IN), (N_IN,),
                                            (N_IN, C, 1)])
    yield from shape_cases("b1", (C,), [(C + 1,), (1, C), (C, 1), ()])
    yield from shape_cases("W2", (C, N_IN, K), [(C, N_IN, K + 1), (C + 1, N_IN, K), (N_IN, C, K),
                                               (C, N_IN * K), (1, C, N_IN, K)])
    yield from shape_cases("b2", (C, K), [(C, K + 1), (K, C), (C * K,), (1, C, K)])
    if target:
        for bad in [(B + 1,), (B - 1,), (B, 2), (1, B), ()]:
            parts = ("target", _shape_str(bad), f"({B},)")
            yield case(f"target-shape{_shape_str(bad)}", ValueError, parts,
                       target=lambda a, bad=bad: np.zeros(bad, dtype=np.int64))
    if grad:
        expected = (B,) if target else (B, N)
        wrong = [(B, 1), (B, N), (B + 1,)] if target else [(B, C * K), (B,), (B + 1, N), (N, B)]
        yield from shape_cases("grad_output", expected, wrong)


def inference_cases(op):
    """The arguments of the inference functions beyond the model: ``k``, ``candidates``, ``seed``."""
    if op == TOPK:
        for k in (0, -1):
            yield case(f"k={k}", ValueError, ("k", ">= 1", str(k)), k=k)
        yield case("k-past-n_outputs", ValueError, ("k", "<= n_outputs = 9", "10"), k=N_OUTPUTS + 1)
        yield case("k-float", TypeError, ("k", "integer", "float"), k=2.0)
    if op == LOGPROB:
        m = SIZES.n_candidates
        yield case("candidates-1-D", ValueError, ("candidates", "2-D", "1-D"),
                   candidates=lambda a: a["candidates"][:, 0])
        yield case("candidates-rows", ValueError, ("candidates", f"{BATCH + 1} rows", f"x has {BATCH}"),
                   candidates=lambda a: np.zeros((BATCH + 1, m), np.int64))
    if op == SAMPLE:
        yield case("seed-negative", ValueError, ("seed = -1", "outside [0, 2**64)"), seed=-1)
        yield case("seed-2**64", ValueError, (f"seed = {2**64}", "outside [0, 2**64)"), seed=2**64)
        yield case("seed-str", TypeError, ("seed", "integer or None", "str"), seed="7")
        yield case("seed-float", TypeError, ("seed", "integer or None", "float"), seed=1.0)


# --------------------------------------------------------------------------- the table
PRODUCT_FLOATS = ("W", "h")
PRODUCT_INDICES = ("input_idx", "output_idx")


def common_type_cases(floats, indices):
    yield from non_array_cases(floats, indices)
    # target=None is h_softmax's full mode, not a missing array.
    yield from none_cases(tuple(n for n in floats + indices if n != "target"))
    yield from non_float_cases(floats)
    yield from non_int_cases(indices)


def cases_for(op):
    """Every bad-input case of ``op``: the type checks of its arrays (by their roles in the op
    table), then the op's own shape and value relations."""
    yield from common_type_cases(op.row.floats, op.row.indices)
    if op in (GEMV, GEMV_INPLACE):
        yield from inplace_dtype_cases("o", ["W", "h"])
        yield from product_shape_cases(with_o=True)
        yield from zero_d_cases(("o", *PRODUCT_FLOATS, *PRODUCT_INDICES))
        yield from read_only_case()
    elif op == DOT:
        yield from product_shape_cases(with_o=False)
        yield from bias_shape_cases()
        yield from zero_d_cases((*PRODUCT_FLOATS, *PRODUCT_INDICES))
    elif op == DOT_GRAD:
        yield from product_shape_cases(with_o=False)
        yield from bias_shape_cases()
        yield from zero_d_cases(("grad_output", *PRODUCT_FLOATS, *PRODUCT_INDICES))
        yield from ndim_cases({"grad_output": (BATCH, O_WIN, O_SIZE)})
        yield from shape_cases("grad_output", (BATCH, O_WIN, O_SIZE),
                               [(BATCH, O_WIN, O_SIZE + 1), (BATCH, O_WIN + 1, O_SIZE),
                                (BATCH + 1, O_WIN, O_SIZE)])
    elif op in (OUTER, OUTER_INPLACE):
        yield from inplace_dtype_cases("o", ["x", "y"])
        yield from alpha_cases()
        yield from outer_shape_cases()
        yield from zero_d_cases(("o", "x", "y", "x_idx", "y_idx"))
        yield from read_only_case()
    elif op == SOFTMAX:
        yield from axis_type_cases()
        yield from softmax_value_cases(("x",))
    elif op == SOFTMAX_GRAD:
        yield from axis_type_cases()
        yield from softmax_value_cases(("grad_output", "y"))
        yield from shape_cases("grad_output", (3, 4), [(3, 5), (4, 3), (3, 4, 1), (12,)])
    else:
        grad, target = op.row.gradient, "target" in op.row.indices
        if not target and "target" in op.row.sources:  # target=None is the full mode, not a missing array
            yield case("target-list", TypeError, ("target", "got list"), target=[0, 1, 2])
        if op in (NLL, NLL_GRAD):  # the loss has no full mode: the target is required
            yield case("target-None", TypeError, ("target", "got None", "h_softmax_nll"),
                       target=None)
        yield from size_type_cases()
        yield from hsm_value_cases(grad, target)
        yield from inference_cases(op)
        yield from zero_d_cases(("x", "W1", "W2", "b2") + (("grad_output",) if grad else ()))


OPS = [Op(row, extra) for row in optable.OPS for extra in ([{}, {"inplace": True}] if row.inplace else [{}])]
"""Every row of the op table; the ops that write into ``o`` once more with ``inplace=True``."""

TABLE = [pytest.param(op, c, id=f"{op.name}-{c.exc.__name__}-{c.id}")
         for op in OPS for c in cases_for(op)]


# --------------------------------------------------------------------------- IndexError
SIGNED = [np.int8, np.int16, np.int32, np.int64]
UNSIGNED = [np.uint8, np.uint16, np.uint32, np.uint64]

INDEX_ARGS = [  # (op, argument, allowed range [0, n), the message's explanation)
    (GEMV, "input_idx", I_BLOCKS, "W has 5 input blocks"),
    (GEMV, "output_idx", O_BLOCKS, "W has 6 output blocks"),
    (GEMV_INPLACE, "input_idx", I_BLOCKS, "W has 5 input blocks"),
    (GEMV_INPLACE, "output_idx", O_BLOCKS, "W has 6 output blocks"),
    (DOT, "input_idx", I_BLOCKS, "W has 5 input blocks"),
    (DOT, "output_idx", O_BLOCKS, "W has 6 output blocks"),
    (DOT_GRAD, "input_idx", I_BLOCKS, "W has 5 input blocks"),
    (DOT_GRAD, "output_idx", O_BLOCKS, "W has 6 output blocks"),
    (OUTER, "x_idx", I_BLOCKS, "o has 5 x blocks"),
    (OUTER, "y_idx", O_BLOCKS, "o has 6 y blocks"),
    (OUTER_INPLACE, "x_idx", I_BLOCKS, "o has 5 x blocks"),
    (OUTER_INPLACE, "y_idx", O_BLOCKS, "o has 6 y blocks"),
    (HSM_T, "target", N_OUTPUTS, "n_outputs = 9"),
    (HSM_GRAD_T, "target", N_OUTPUTS, "n_outputs = 9"),
    (NLL, "target", N_OUTPUTS, "n_outputs = 9"),
    (NLL_GRAD, "target", N_OUTPUTS, "n_outputs = 9"),
    (LOGPROB, "candidates", N_OUTPUTS, "n_outputs = 9"),
]


def bad_values(dtype, n):
    """Out-of-range values representable in ``dtype``: negative (Theano wrapped them), n, huge."""
    info = np.iinfo(dtype)
    values = [n, n + 1, int(info.max)]
    if info.min < 0:
        values += [-1, int(info.min)]
    if np.dtype(dtype).itemsize == 8:
        # Past 32 bits: 2**32 + 1 and -2**32 + 1 truncate to 1 (a valid block) in int32.
        values += [2**31, 2**32 + 1] + ([-(2**32) + 1] if info.min < 0 else [])
    if np.dtype(dtype) == np.uint64:
        values += [2**63 + 1]  # above int64's range: must not wrap to a negative intp
    return values


def index_params():
    for op, name, n, what in INDEX_ARGS:
        for dtype in SIGNED + UNSIGNED:
            for value in bad_values(dtype, n):
                dt = np.dtype(dtype)
                yield pytest.param(op, name, n, what, dt, value,
                                   id=f"{op.name}-{name}-{dt}-{value}")


def index_message(name, position, value, n, what):
    where = ", ".join(str(p) for p in position)
    return f"{name}[{where}] = {value} is outside [0, {n}) ({what})"



def layouts(a):
    """The same logical index array C-ordered, F-ordered, strided, and with a negative stride."""
    base = np.zeros((a.shape[0] * 2, *a.shape[1:]), dtype=a.dtype)
    base[::2] = a
    reversed_copy = a[::-1].copy()
    layouts = {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a), "strided": base[::2],
               "negative-stride": reversed_copy[::-1]}
    for view in layouts.values():
        np.testing.assert_array_equal(view, a, strict=True)
    return layouts


FIRST_BAD_ARGS = [(op, name, n, what) for op, name, n, what in INDEX_ARGS
                  if op in (GEMV, DOT_GRAD, OUTER_INPLACE, HSM_T)]


