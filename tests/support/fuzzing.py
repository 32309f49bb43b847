"""Hypothesis strategies that attack every public function, and the checks applied to each call.

A drawn :class:`Fuzzed` call holds the arguments exactly as the caller passes
them (each array in its own dtype, memory layout and writeability, maybe
containing NaN or +-inf, maybe sharing memory with another argument) and the
backing buffer of every array. :func:`check_host_call` runs it and checks:

- the result's kind, dtype (``np.result_type`` of the float arguments) and shape;
- its values against ``nbsparse._reference`` computed on C-ordered copies of the
  arguments taken just before the call, NaN and +-inf in the same places;
- every backing buffer byte for byte afterwards: unchanged, except the elements
  of ``o`` with ``inplace=True`` (checked against the oracle like a result; the
  gaps of a strided ``o`` stay untouched), and the shape, strides and
  writeability of every argument;
- with ``inplace=True`` the call returns ``o`` itself; otherwise the result
  shares no memory with any argument.

What is drawn: sizes from 0 (every dimension, windows included) to a few, index
patterns (random, one block everywhere, each row a permutation, a whole row on
one block, only the first and last block), every integer dtype for indices,
float32/float64 per argument, C/F/strided/negative-stride layouts per argument,
read-only arguments, up to three NaN/+-inf values, ``alpha``, ``axis``, and
two arguments sharing memory (for the ops with an ``o``: ``o`` and any other
argument, index arrays included, in place or not). Values
come from a NumPy generator seeded by a drawn seed (drawing every element
would be slow and shrink no better).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

import nbsparse as nbs
from nbsparse import _optable as optable
from nbsparse import _reference
from nbsparse._optable import tolerance

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                           np.uint32, np.int64, np.uint64))
LAYOUTS = ("C", "F", "strided", "reversed")
SPECIAL_VALUES = (np.nan, np.inf, -np.inf)
INDEX_PATTERNS = ("random", "one_block", "permuted", "row_on_one_block", "extremes")

OPS = tuple(op.name for op in optable.OPS if op.func not in (nbs.h_softmax_nll, nbs.h_softmax_nll_grad))
"""The rows of the op table the fuzz tests are parametrised over: all but the loss
(``h_softmax_nll*``), which has no strategy here."""

WEIGHTS = frozenset(name for op in optable.OPS for name in op.weights)
"""Float arguments used whole by every row: read-only in the "weights" mode."""


def examples(fraction=1):
    """``max_examples`` for a fuzz test: a ``fraction`` of the loaded profile's (at least 3)."""
    return max(3, int(settings.default.max_examples * fraction))


# --------------------------------------------------------------------------- presenting arrays
@dataclass(frozen=True)
class Look:
    """How one array argument is handed over: dtype, memory layout, writeability."""

    dtype: np.dtype
    layout: str = "C"
    readonly: bool = False


@dataclass
class Presented:
    """An argument as passed (``view``) and the buffer that holds it (``backing``).

    ``viewer(backing)`` gives ``view``: applied to a copy of the backing it tells
    which bytes of the backing belong to the argument.
    """

    view: np.ndarray
    backing: np.ndarray
    viewer: Callable

    def snapshot(self):
        return self.backing.tobytes()


def _same(b):
    return b


def _fill_value(dtype):
    return np.nan if dtype.kind == "f" else np.iinfo(dtype).max


def present(values, look):
    """``values`` (any dtype) as a :class:`Presented` array of ``look``'s dtype and layout."""
    a = np.asarray(values).astype(look.dtype)
    if look.layout == "C":
        backing, viewer = a.copy(), _same
    elif look.layout == "F":
        backing, viewer = np.ascontiguousarray(a.T), np.transpose
    elif look.layout == "strided":
        # Every other element, offset by one; the gaps hold NaN (or an index out of
        # every range), so a kernel reading them, or a write into them, shows.
        backing = np.full(tuple(2 * n + 1 for n in a.shape), _fill_value(a.dtype), a.dtype)
        viewer = itemgetter(tuple(slice(1, None, 2) for _ in a.shape))
        viewer(backing)[...] = a
    elif look.layout == "reversed":
        viewer = itemgetter(tuple(slice(None, None, -1) for _ in a.shape))
        backing = np.ascontiguousarray(viewer(a))
    else:
        raise ValueError(look.layout)
    if look.readonly:
        backing.setflags(write=False)
    view = viewer(backing)
    assert view.dtype == look.dtype and view.shape == a.shape  # guard of the helper itself
    np.testing.assert_array_equal(view, a)
    return Presented(view, backing, viewer)


def shared(values_by_name, dtypes_by_name, order, offset_fraction):
    """Arrays that live in one byte buffer and overlap: ``Presented`` by name.

    The arrays are laid out at the start of one buffer, the second at an offset of
    ``offset_fraction`` of the first's size (rounded to 8 bytes), and written in
    ``order``: where they overlap, the one written last holds its values. So the
    arguments are whatever the shared memory holds when the call is made.
    """
    first, second = order
    sizes = {n: np.asarray(values_by_name[n]).size * dtypes_by_name[n].itemsize for n in order}
    offset = 8 * int(offset_fraction * (sizes[first] // 8))
    offsets = {first: 0, second: offset}
    total = max(offsets[n] + sizes[n] for n in order)
    buffer = np.zeros(-(-total // 8) + 1, np.float64).view(np.uint8)
    out = {}
    for name in order:
        start, shape = offsets[name], np.shape(values_by_name[name])

        def viewer(b, start=start, size=sizes[name], dtype=dtypes_by_name[name], shape=shape):
            return b[start:start + size].view(dtype).reshape(shape)

        viewer(buffer)[...] = np.asarray(values_by_name[name]).astype(dtypes_by_name[name])
        out[name] = Presented(viewer(buffer), buffer, viewer)
    return out


# --------------------------------------------------------------------------- one call
@dataclass
class Fuzzed:
    """One drawn call: the function, its arguments and how to get the expected result."""

    op: str
    func: Callable
    arrays: dict  # name -> Presented
    others: dict = field(default_factory=dict)  # sizes, axis, alpha, a None target
    inplace: bool = False
    specials: int = 0  # NaN/inf values placed in the float arguments
    alias: str = ""  # "a~b" when arguments a and b share memory

    def __repr__(self):  # hypothesis prints this for a failing example
        looks = {n: (str(p.view.dtype), p.view.shape, p.view.strides,
                     not p.view.flags.writeable) for n, p in self.arrays.items()}
        return (f"Fuzzed({self.op}, inplace={self.inplace}, alias={self.alias!r}, "
                f"specials={self.specials}, others={self.others}, arrays={looks})")

    def kwargs(self):
        out = {name: p.view for name, p in self.arrays.items()}
        out.update(self.others)
        if self.inplace:
            out["inplace"] = True
        return out

    @property
    def result_dtype(self):
        return np.result_type(*(p.view.dtype for p in self.arrays.values()
                                if p.view.dtype.kind == "f"))

    def expected(self):
        """The oracle on C-ordered, writeable copies of the arguments (same dtypes)."""
        copies = {name: np.array(p.view, copy=True) for name, p in self.arrays.items()}
        args = {**copies, **self.others}
        dtype = self.result_dtype
        if self.op.startswith("softmax") and 0 in copies[_first_float(copies)].shape:
            return np.empty(copies[_first_float(copies)].shape, dtype)  # oracle's max needs rows
        if self.op == "h_softmax" and args["batch_size"] == 0:
            return np.empty((0, args["n_outputs"]), dtype)  # the oracle cannot reshape batch 0
        reference = optable.OP[self.op].reference
        with np.errstate(all="ignore"):  # NaN/inf inputs: NumPy warns, the values are the test
            result = reference(**args)
        def cast(r):  # floats to the result dtype; output indices (top-k, draws) stay intp
            r = np.asarray(r)
            return r if r.dtype.kind in "iu" else np.asarray(r, dtype)

        if isinstance(result, tuple):
            return type(result)(*(cast(r) for r in result))
        return cast(result)


def _first_float(arrays):
    return next(n for n, a in arrays.items() if a.dtype.kind == "f")


def as_tuple(value):
    return tuple(value) if isinstance(value, tuple) else (value,)


def assert_values(got, want, dtype, what):
    """Same dtype and shape; close values; NaN and +-inf exactly where the oracle has them.

    Integer results (output indices) have the oracle's dtype and values exactly.
    """
    if want.dtype.kind in "iu":
        dtype = want.dtype
    assert got.dtype == dtype, (what, got.dtype, dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{what}: -inf")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **tolerance(dtype, "fuzzed"), err_msg=what)


def backings_before(fz):
    """Copies of every distinct backing buffer, keyed by ``id``."""
    return {id(p.backing): p.backing.copy() for p in fz.arrays.values()}


def assert_backings(fz, before, o_now=None):
    """Every backing buffer holds its bytes from ``before``, except ``o``'s elements.

    With ``inplace=True`` those hold ``o_now`` (the values ``o`` has after the call,
    checked against the oracle separately): any other byte that changed, a gap of a
    strided ``o`` included, fails.
    """
    for name, p in fz.arrays.items():
        want = before[id(p.backing)]
        if o_now is not None and p.backing is fz.arrays["o"].backing:
            want = want.copy()
            fz.arrays["o"].viewer(want)[...] = o_now
        assert p.backing.tobytes() == want.tobytes(), f"{name}'s memory changed"


def check_host_call(fz):
    """Run the drawn call on NumPy arrays and check everything listed in the module docstring."""
    expected = fz.expected()
    before = backings_before(fz)
    frozen = {name: (p.view.shape, p.view.strides, p.view.flags.writeable)
              for name, p in fz.arrays.items()}

    result = fz.func(**fz.kwargs())

    dtype = fz.result_dtype
    assert isinstance(result, tuple) == isinstance(expected, tuple)
    if isinstance(expected, tuple):
        assert type(result) is type(expected), type(result)
    for position, (got, want) in enumerate(zip(as_tuple(result), as_tuple(expected), strict=True)):
        assert type(got) is np.ndarray, type(got)
        assert_values(got, want, dtype, f"{fz.op} result {position}")
        # In place: the result is o itself; otherwise it shares memory with no argument.
        o = fz.arrays["o"].view if fz.inplace else None
        sharing = [] if fz.inplace else [name for name, p in fz.arrays.items()
                                         if np.shares_memory(got, p.backing)]
        assert (got is o, sharing) == (fz.inplace, []), sharing
    for name, p in fz.arrays.items():
        assert (p.view.shape, p.view.strides, p.view.flags.writeable) == frozen[name], name
    assert_backings(fz, before, np.array(fz.arrays["o"].view) if fz.inplace else None)
    return result


# --------------------------------------------------------------------------- strategies
seeds = st.integers(0, 2**32 - 1)


@st.composite
def float_looks(draw, names):
    """A Look per float argument: all float32, all float64, or mixed; layouts; read-only."""
    mode = draw(st.sampled_from(["float32", "float64", "mixed"]))
    if mode == "mixed":
        dtypes = {n: draw(st.sampled_from(FLOAT_DTYPES)) for n in names}
    else:
        dtypes = dict.fromkeys(names, np.dtype(mode))
    # Read-only: none, every argument, or the weights only (frozen weights, fresh inputs).
    readonly = draw(st.sampled_from(["none", "all", "weights"]))
    return {n: Look(dtypes[n], draw(st.sampled_from(LAYOUTS)),
                    readonly == "all" or (readonly == "weights" and n in WEIGHTS))
            for n in names}


@st.composite
def index_looks(draw, names):
    return {n: Look(draw(st.sampled_from(INDEX_DTYPES)), draw(st.sampled_from(LAYOUTS)),
                    draw(st.booleans())) for n in names}


def _indices(rng, pattern, n_blocks, shape):
    batch, window = shape
    if pattern == "one_block":
        return np.full(shape, rng.integers(n_blocks), np.int64)
    if pattern == "row_on_one_block":
        return np.repeat(rng.integers(0, n_blocks, (batch, 1)), window, axis=1)
    if pattern == "permuted":  # each row a permutation prefix; wraps when window > blocks
        rows = [np.resize(rng.permutation(n_blocks), window) for _ in range(batch)]
        return np.array(rows, np.int64).reshape(shape)
    if pattern == "extremes":  # block 0 and the last block: the range boundaries
        return rng.choice([0, n_blocks - 1], size=shape).astype(np.int64)
    return rng.integers(0, n_blocks, shape)


def _place_specials(rng, arrays, count):
    """Put ``count`` NaN/+-inf values at random elements of the non-empty float arrays."""
    candidates = [n for n, a in arrays.items() if a.dtype.kind == "f" and a.size]
    placed = 0
    for _ in range(count if candidates else 0):
        a = arrays[candidates[rng.integers(len(candidates))]]
        a.flat[rng.integers(a.size)] = SPECIAL_VALUES[rng.integers(len(SPECIAL_VALUES))]
        placed += 1
    return placed


specials = st.sampled_from([0, 0, 1, 3])
"""How many NaN/inf values a call gets: half the calls none, so finite results are tested too."""


def _finish(draw, op, func, values, looks, others=None, inplace=False, alias_pairs=()):
    """Present ``values`` per ``looks`` as a Fuzzed call, maybe with two arguments sharing memory.

    ``alias_pairs`` lists the pairs of argument names that may be drawn to overlap.
    """
    others = others or {}
    pair = draw(st.sampled_from([None, *alias_pairs])) if alias_pairs else None
    if pair:
        # The pair shares one buffer: one dtype for every float (an in-place o must hold
        # the result dtype), an index dtype of the float's width, C order, writeable.
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
        width = {4: [np.int32, np.uint32], 8: [np.int64, np.uint64]}[dtype.itemsize]
        looks = {n: Look(dtype if lk.dtype.kind == "f" else
                         (np.dtype(draw(st.sampled_from(width))) if n in pair else lk.dtype))
                 for n, lk in looks.items()}
        fraction = draw(st.floats(0, 1))
        # Indices are written last: float bits over them would be an IndexError, not a test.
        index_last = looks[pair[1]].dtype.kind in "iu"
        order = list(pair) if index_last else draw(st.permutations(list(pair)))
        arrays = shared(values, {n: looks[n].dtype for n in pair}, order, fraction)
        arrays.update({n: present(v, looks[n]) for n, v in values.items() if n not in arrays})
        arrays = {n: arrays[n] for n in values}  # the argument order
    else:
        if inplace:  # o must be writeable and hold the result dtype
            dtype = np.result_type(*(lk.dtype for lk in looks.values() if lk.dtype.kind == "f"))
            looks = {**looks, "o": Look(dtype, looks["o"].layout, False)}
        arrays = {n: present(v, looks[n]) for n, v in values.items()}
    return Fuzzed(op, func, arrays, others, bool(inplace), alias="~".join(pair or ()))


@st.composite
def product_calls(draw, op):
    """A block-sparse call: sizes 0-4, windows 0-3, 1-4 blocks of 0-5 elements per side."""
    batch, i_win, o_win = draw(st.integers(0, 4)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    i_blocks, o_blocks = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    i_size, o_size = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    patterns = (draw(st.sampled_from(INDEX_PATTERNS)), draw(st.sampled_from(INDEX_PATTERNS)))
    rng = np.random.default_rng(draw(seeds))
    n_special = draw(specials)

    def normal(*shape):
        return rng.standard_normal(shape)

    idx_in = _indices(rng, patterns[0], i_blocks, (batch, i_win))
    idx_out = _indices(rng, patterns[1], o_blocks, (batch, o_win))
    W_shape = (i_blocks, o_blocks, i_size, o_size)
    if op == "sparse_block_gemv":
        values = {"o": normal(batch, o_win, o_size), "W": normal(*W_shape),
                  "h": normal(batch, i_win, i_size), "input_idx": idx_in, "output_idx": idx_out}
        others = {}
    elif op == "sparse_block_dot":
        values = {"W": normal(*W_shape), "h": normal(batch, i_win, i_size), "input_idx": idx_in,
                  "b": normal(o_blocks, o_size), "output_idx": idx_out}
        others = {}
    elif op == "sparse_block_outer":
        values = {"o": normal(*W_shape), "x": normal(batch, i_win, i_size),
                  "y": normal(batch, o_win, o_size), "x_idx": idx_in, "y_idx": idx_out}
        alpha = draw(st.sampled_from([1.0, 0.0, -1.0]) | st.floats(-3, 3))
        others = {"alpha": alpha}
    else:
        values = {"grad_output": normal(batch, o_win, o_size), "W": normal(*W_shape),
                  "h": normal(batch, i_win, i_size), "input_idx": idx_in,
                  "b": normal(o_blocks, o_size), "output_idx": idx_out}
        others = {}
    index_names, func = optable.OP[op].indices, optable.OP[op].func
    placed = _place_specials(rng, values, n_special)
    looks = {**draw(float_looks([n for n in values if n not in index_names])),
             **draw(index_looks(index_names))}
    inplace = "o" in values and draw(st.booleans())
    if "o" in values:  # o with any other argument, in place or not
        pairs = [("o", n) for n in values if n != "o"]
    else:
        pairs = [("W", "h"), ("h", "b")] + ([("grad_output", "W")] if "grad_output" in values else [])
    fz = _finish(draw, op, func, values, looks, others, inplace, pairs)
    fz.specials = placed
    return fz


@st.composite
def softmax_calls(draw, op):
    """softmax/softmax_grad of 1-3-D inputs of 0-5 per axis, any axis, large logits too."""
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(draw(seeds))
    scale = draw(st.sampled_from([1.0, 30.0, 300.0]))
    x = scale * rng.standard_normal(shape)
    if op == "softmax":
        values = {"x": x}
    else:
        with np.errstate(all="ignore"):
            y = _reference.softmax(x, axis) if x.shape[axis] else x
        values = {"grad_output": rng.standard_normal(shape), "y": y}
    placed = _place_specials(rng, values, draw(specials))
    pairs = [("grad_output", "y")] if op == "softmax_grad" else ()
    fz = _finish(draw, op, optable.OP[op].func, values, draw(float_looks(list(values))), {"axis": axis},
                 alias_pairs=pairs)
    fz.specials = placed
    return fz


INFERENCE = ("h_softmax_topk", "h_softmax_logprob", "h_softmax_sample")
"""Drawn without NaN or inf: which output a NaN activation yields is not in their contract."""

INFERENCE_SCALARS = {
    "h_softmax_topk": lambda draw, n_outputs: {"k": draw(st.integers(1, n_outputs))},
    "h_softmax_sample": lambda draw, n_outputs: {"seed": draw(st.integers(0, 2**64 - 1))},
}
"""The scalar arguments an inference function takes beyond the model, drawn."""


@st.composite
def h_softmax_calls(draw, op):
    """h_softmax(_grad), full or target mode, and the inference functions: batch 0-4, n_in 0-4,
    1-4 classes of 1-4 outputs; k in [1, n_outputs], 0-3 candidates per row, any seed."""
    batch, n_in = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    n_classes, K = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n_outputs = draw(st.integers(1, n_classes * K))  # < n_classes * K: Theano's truncation
    rng = np.random.default_rng(draw(seeds))
    with_target = op.endswith("[target]")
    values = {"x": rng.standard_normal((batch, n_in)),
              "W1": rng.standard_normal((n_in, n_classes)), "b1": rng.standard_normal(n_classes),
              "W2": rng.standard_normal((n_classes, n_in, K)),
              "b2": rng.standard_normal((n_classes, K))}
    if op.startswith("h_softmax_grad"):
        shape = (batch,) if with_target else (batch, n_outputs)
        values = {"grad_output": rng.standard_normal(shape), **values}
    others = {"batch_size": batch, "n_outputs": n_outputs, "n_classes": n_classes,
              "n_outputs_per_class": K}
    if op in INFERENCE_SCALARS:
        others.update(INFERENCE_SCALARS[op](draw, n_outputs))
    placed = _place_specials(rng, values, 0 if op in INFERENCE else draw(specials))
    looks = draw(float_looks(list(values)))
    if op == "h_softmax_logprob":
        pattern = draw(st.sampled_from(INDEX_PATTERNS))
        values["candidates"] = _indices(rng, pattern, n_outputs, (batch, draw(st.integers(0, 3))))
        looks.update(draw(index_looks(["candidates"])))
    if with_target:
        pattern = draw(st.sampled_from(INDEX_PATTERNS))
        target = _indices(rng, pattern, n_outputs, (batch, 1))
        values["target"] = target if draw(st.booleans()) else target.reshape(batch)
        looks.update(draw(index_looks(["target"])))
    elif op not in INFERENCE:
        others["target"] = None
    func = optable.OP[op].func
    pairs = [("x", "W1"), ("W1", "W2"), ("W2", "b2")] + (
        [("grad_output", "x")] if "grad_output" in values else [])
    if op == "h_softmax_grad":  # an overlap could carry NaN into a healed class block
        pairs = [pair for pair in pairs if not {"W2", "b2"} & set(pair)]
    fz = _finish(draw, op, func, values, looks, others, alias_pairs=pairs)
    fz.specials = placed
    return fz


def calls(op):
    """The strategy for ``op`` (one of :data:`OPS`)."""
    if op.startswith("sparse_block"):
        return product_calls(op)
    if op.startswith("softmax"):
        return softmax_calls(op)
    return h_softmax_calls(op)


def truncated_class_problem():
    """n_outputs = 2 of 2 classes x 4: class 1 is wholly truncated, and b2[1] holds +inf."""
    rng = np.random.default_rng(5)
    x, W1, b1 = rng.standard_normal((3, 2)), rng.standard_normal((2, 2)), rng.standard_normal(2)
    W2, b2 = rng.standard_normal((2, 2, 4)), rng.standard_normal((2, 4))
    b2[1, 2] = np.inf
    return rng.standard_normal((3, 2)), (x, 3, 2, 2, 4, W1, b1, W2, b2)
