"""Named, seeded argument builders (in the spirit of numbagg's ``test/util.py``).

A case is a frozen dataclass whose ``str`` is its name, so it makes a readable
pytest id (``test_x[strided-float32-uint8]``); its ``repr`` lists every field for
failure reports. ``make(dtype, index_dtype)`` builds the host arrays, always the
same for the same case, dtype and index dtype.

Layouts (``layout``), applied to every array of a case, indices included:

``"C"``
    C-contiguous.
``"F"``
    Fortran-ordered copies.
``"strided"``
    Every other element of a larger array (offset by one), whose other elements
    are NaN (floats) or 0 (indices): reading outside the view shows up as NaN.
``"reversed"``
    Views with negative strides along every axis.
"""

from dataclasses import dataclass, replace

import numpy as np

LAYOUTS = ("C", "F", "strided", "reversed")


def relayout(a, layout):
    """An array equal to ``a`` (values, dtype, shape) in the memory ``layout``."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        fill = np.nan if a.dtype.kind == "f" else 0
        big = np.full(tuple(2 * n + 1 for n in a.shape), fill, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "reversed":
        return np.flip(np.flip(a).copy())
    raise ValueError(f"unknown layout {layout!r}")


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------------------
# Block-sparse products


@dataclass(frozen=True)
class ProductArgs:
    """The arrays of one block-sparse case; the methods give each op's positional arguments.

    ``outer_o`` is shaped like ``W`` and ``grad`` like the ``sparse_block_dot``
    result, so ``sparse_block_outer(outer_o, h, grad, input_idx, output_idx)`` is the
    weight-gradient product of the same case.
    """

    o: np.ndarray
    W: np.ndarray
    h: np.ndarray
    input_idx: np.ndarray
    b: np.ndarray
    output_idx: np.ndarray
    grad: np.ndarray
    outer_o: np.ndarray

    def gemv(self):
        return self.o, self.W, self.h, self.input_idx, self.output_idx

    def dot(self):
        return self.W, self.h, self.input_idx, self.b, self.output_idx

    def outer(self):
        return self.outer_o, self.h, self.grad, self.input_idx, self.output_idx

    def dot_grad(self):
        return self.grad, self.W, self.h, self.input_idx, self.b, self.output_idx


@dataclass(frozen=True)
class ProductCase:
    """Shapes, index pattern and layout of one block-sparse test case.

    ``indices``: ``"random"``; ``"same_block"`` (every row of every batch selects
    the last input block and the last output block); ``"duplicates"`` (within each
    row, window positions 0 and 1 select the same block).
    """

    name: str
    batch: int = 3
    i_blocks: int = 4
    o_blocks: int = 5
    i_size: int = 7
    o_size: int = 9
    i_win: int = 2
    o_win: int = 3
    indices: str = "random"
    layout: str = "C"
    seed: int = 0

    def __str__(self):
        return self.name

    @property
    def out_shape(self):
        """Shape of the gemv/dot result."""
        return (self.batch, self.o_win, self.o_size)

    @property
    def W_shape(self):
        return (self.i_blocks, self.o_blocks, self.i_size, self.o_size)

    def _indices(self, rng, n_blocks, window):
        shape = (self.batch, window)
        if self.indices == "random":
            return rng.integers(0, n_blocks, size=shape)
        if self.indices == "same_block":
            return np.full(shape, n_blocks - 1)
        if self.indices == "duplicates":
            idx = rng.integers(0, n_blocks, size=shape)
            idx[:, 1] = idx[:, 0]
            return idx
        raise ValueError(f"unknown index pattern {self.indices!r}")

    def make(self, dtype, index_dtype=np.intp, rng=None):
        """Build the arrays in float ``dtype`` and integer ``index_dtype``."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        input_idx = self._indices(rng, self.i_blocks, self.i_win).astype(index_dtype)
        output_idx = self._indices(rng, self.o_blocks, self.o_win).astype(index_dtype)
        arrays = ProductArgs(
            o=_normal(rng, self.out_shape, dtype),
            W=_normal(rng, self.W_shape, dtype),
            h=_normal(rng, (self.batch, self.i_win, self.i_size), dtype),
            input_idx=input_idx,
            b=_normal(rng, (self.o_blocks, self.o_size), dtype),
            output_idx=output_idx,
            grad=_normal(rng, self.out_shape, dtype),
            outer_o=_normal(rng, self.W_shape, dtype),
        )
        return ProductArgs(**{name: relayout(a, self.layout) for name, a in vars(arrays).items()})


PRODUCT_CASES = [
    ProductCase("basic"),
    ProductCase("windows_of_1", batch=4, i_win=1, o_win=1, seed=1),
    ProductCase("size_33", batch=2, i_blocks=3, o_blocks=3, i_size=33, o_size=33, o_win=2, seed=2),
    ProductCase("same_block_pair", batch=6, i_win=2, o_win=2, indices="same_block", seed=3),
    ProductCase("duplicates_in_row", batch=4, i_win=3, o_win=3, indices="duplicates", seed=4),
    ProductCase("batch_1", batch=1, seed=5),
    ProductCase("batch_0", batch=0, seed=6),
    ProductCase("iwin_0", i_win=0, seed=7),
    ProductCase("owin_0", o_win=0, seed=8),
    ProductCase("isize_0", i_size=0, seed=9),
    ProductCase("osize_0", o_size=0, seed=10),
    ProductCase("single_block", i_blocks=1, o_blocks=1, i_win=3, o_win=2, seed=11),
    ProductCase("many_blocks_few_used", batch=2, i_blocks=20, o_blocks=30, i_size=3, o_size=2,
                seed=12),
    ProductCase("fortran", layout="F", seed=13),
    ProductCase("strided", layout="strided", seed=14),
    ProductCase("negative_strides", layout="reversed", seed=15),
    ProductCase("strided_same_block_pair", batch=5, indices="same_block", layout="strided",
                seed=16),
]
"""Every block-sparse case; all block counts fit int8, so every index dtype can hold them."""

EMPTY_PRODUCT_CASES = [
    c for c in PRODUCT_CASES if 0 in (c.batch, c.i_win, c.o_win, c.i_size, c.o_size)
]


# ---------------------------------------------------------------------------
# Softmax


@dataclass(frozen=True)
class SoftmaxCase:
    """An input shape, axis and layout for ``softmax``/``softmax_grad``."""

    name: str
    shape: tuple
    axis: int = -1
    layout: str = "C"
    scale: float = 3.0
    seed: int = 0

    def __str__(self):
        return self.name

    def make(self, dtype, rng=None):
        """``(x, grad_output)``: logits and an upstream gradient, both of ``dtype``."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        x = _normal(rng, self.shape, dtype, self.scale)
        g = _normal(rng, self.shape, dtype)
        return relayout(x, self.layout), relayout(g, self.layout)


def _softmax_cases():
    shapes = {"1d": (7,), "2d": (4, 9), "3d": (3, 5, 6), "4d": (2, 3, 1, 5)}
    cases = []
    for label, shape in shapes.items():
        for axis in range(-len(shape), len(shape)):
            cases.append(SoftmaxCase(f"{label}_axis{axis}", shape, axis, seed=len(cases)))
    for layout in LAYOUTS[1:]:
        for axis in (0, -1):
            cases.append(SoftmaxCase(f"{layout}_3d_axis{axis}", (3, 5, 6), axis, layout,
                                     seed=len(cases)))
    cases.append(SoftmaxCase("long_row", (2, 1000), seed=len(cases)))
    return cases


SOFTMAX_CASES = _softmax_cases()
"""Every axis (negative too) of 1-D to 4-D inputs, each non-C layout, and a long row."""


# ---------------------------------------------------------------------------
# Two-level hierarchical softmax


@dataclass(frozen=True)
class HSoftmaxArgs:
    x: np.ndarray
    n_outputs: int
    n_classes: int
    K: int
    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    target: np.ndarray

    def call(self):
        """Positional arguments of ``h_softmax`` (Theano's order), without ``target``."""
        return (self.x, self.x.shape[0], self.n_outputs, self.n_classes, self.K,
                self.W1, self.b1, self.W2, self.b2)


@dataclass(frozen=True)
class HSoftmaxCase:
    """Sizes of one ``h_softmax`` problem; ``n_outputs <= n_classes * K``."""

    name: str
    batch: int = 5
    n_in: int = 4
    n_classes: int = 3
    K: int = 4
    n_outputs: int = 12
    seed: int = 0

    def __str__(self):
        return self.name

    @property
    def truncated(self):
        return self.n_outputs < self.n_classes * self.K

    def make(self, dtype, index_dtype=np.intp, rng=None):
        """Weights, inputs and one random target per row in ``[0, n_outputs)``."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        return HSoftmaxArgs(
            x=_normal(rng, (self.batch, self.n_in), dtype),
            n_outputs=self.n_outputs,
            n_classes=self.n_classes,
            K=self.K,
            W1=_normal(rng, (self.n_in, self.n_classes), dtype),
            b1=_normal(rng, (self.n_classes,), dtype),
            W2=_normal(rng, (self.n_classes, self.n_in, self.K), dtype),
            b2=_normal(rng, (self.n_classes, self.K), dtype),
            target=rng.integers(0, self.n_outputs, size=self.batch).astype(index_dtype),
        )


HSOFTMAX_CASES = [
    HSoftmaxCase("exact"),
    HSoftmaxCase("truncated", n_outputs=10, seed=1),
    HSoftmaxCase("truncated_whole_class", n_outputs=5, seed=2),
    HSoftmaxCase("one_per_class", n_classes=6, K=1, n_outputs=6, seed=3),
    HSoftmaxCase("one_class", n_classes=1, K=7, n_outputs=7, seed=4),
    HSoftmaxCase("batch_1", batch=1, n_classes=4, K=3, n_outputs=11, seed=5),
    HSoftmaxCase("odd_sizes", batch=7, n_in=9, n_classes=5, K=7, n_outputs=33, seed=6),
]
"""Non-empty ``h_softmax`` problems (batch 0 is tested on its own: the oracle cannot reshape it)."""


def flat_hsoftmax(case, dtype):
    """``case``'s problem with every output equally likely: class and slot logits all zero."""
    a = case.make(dtype)
    return replace(a, W1=np.zeros_like(a.W1), b1=np.zeros_like(a.b1), W2=np.zeros_like(a.W2),
                   b2=np.zeros_like(a.b2))


def peaked_hsoftmax(case, dtype, leader, margin=12.0):
    """``case``'s problem with class ``leader`` far ahead of the others, as a trained model's:
    ``margin`` on its logit (through ``x[:, 0] = 1``), every other class logit zero."""
    a = case.make(dtype)
    x = a.x.copy()
    x[:, 0] = 1.0
    W1 = np.zeros_like(a.W1)
    W1[0, leader] = margin
    return replace(a, x=x, W1=W1, b1=np.zeros_like(a.b1))


def bound_tie_hsoftmax(dtype):
    """A class exactly as likely as the k-th output of the likelier class before it (k = 2).

    Class 1 (probability 2/3) holds outputs 2 and 3 at 1/3 each; class 0 (1/3) puts all
    its mass on output 0, also at 1/3 (its slot 1 has logit -inf). Reading class 1 first
    bounds the 2nd output at log(1/3), exactly class 0's probability: class 0 must still be
    read, since output 0 wins the tie with output 3 by its lower index. The top 2 are 0 and 2.
    """
    return (np.ones((1, 1), dtype), 1, 4, 2, 2, np.zeros((1, 2), dtype), np.array([0.0, np.log(2.0)], dtype),
            np.zeros((2, 1, 2), dtype), np.array([[0.0, -np.inf], [0.0, 0.0]], dtype))
