"""Every public op and mode in one table, the problems their arguments come from, and the tolerances.

``python -m nbsparse check`` runs each row of :data:`OPS` on a :func:`problem`
and compares it with the row's reference; the tests draw their "every op"
sweeps (device, Dask, validation, fuzzing, dispatch) from the same rows, each
with the sizes it needs. Adding an op means adding a row here (and its
reference in ``_reference``); every sweep then covers it.

A problem is a dict of named arrays and sizes shared by all ops: the
block-sparse arrays (``o``, ``W``, ``h``, ``input_idx``, ``b``, ``output_idx``,
``grad_output``, ``outer_o``, ``alpha``), a softmax input (``logits``,
``logits_grad``, ``probs``, ``axis``) and an ``h_softmax`` problem (``x``, the
four sizes, ``W1``, ``b1``, ``W2``, ``b2``, ``target``, ``hsm_grad_output``,
``hsm_target_grad_output``) and the inference functions' ``k``,
``candidates`` and ``seed``. A row's :attr:`Op.sources` names, for each
argument, the entry of the problem it takes.

Imports only the public functions and ``_reference``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _reference
from .blocksparse import sparse_block_dot, sparse_block_dot_grad, sparse_block_gemv, sparse_block_outer
from .hsoftmax import h_softmax, h_softmax_grad, h_softmax_nll, h_softmax_nll_grad
from .inference import h_softmax_logprob, h_softmax_sample, h_softmax_topk
from .softmax import softmax, softmax_grad

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

TOLERANCE = {
    # A public function against its reference (nbsparse._reference), on the same inputs.
    "reference": {_F32: {"rtol": 1e-5, "atol": 1e-5}, _F64: {"rtol": 1e-12, "atol": 1e-12}},
    # The same on fuzzed calls: float32 mixed with float64 arguments, logits up to 300 times a
    # standard normal and sizes of 0-5 per axis, so a float32 result may take more roundings
    # on the way than on the fixed problems; float32 gets twice the room.
    "fuzzed": {_F32: {"rtol": 2e-5, "atol": 2e-5}, _F64: {"rtol": 1e-12, "atol": 1e-12}},
    # A CUDA launcher against the CPU kernel (not the reference): both sides round, in different
    # orders (atomics, tiles), so float32 gets twice the relative room; the absolute floors are
    # ten times smaller since these inputs are O(1) and nothing cancels to zero.
    "kernels": {_F32: {"rtol": 2e-5, "atol": 2e-6}, _F64: {"rtol": 1e-12, "atol": 1e-13}},
}
"""``numpy.testing.assert_allclose`` keywords by purpose and result dtype."""


def tolerance(dtype, purpose="reference"):
    """The ``assert_allclose`` keywords for results of ``dtype`` compared for ``purpose``: exact for
    integer results (output indices, draws)."""
    if np.dtype(dtype).kind in "iu":
        return {"rtol": 0, "atol": 0}
    return TOLERANCE[purpose][np.dtype(dtype)]


SCALARS = frozenset({"alpha", "axis", "batch_size", "n_outputs", "n_classes", "n_outputs_per_class", "k", "seed"})
"""Problem entries that are numbers, not arrays."""


@dataclass(frozen=True)
class Op:
    """One public function in one mode (``h_softmax[target]``: ``h_softmax`` with a target).

    ``sources`` maps each argument, in signature order, to the problem entry it
    takes (``None``: the argument is ``None``, the full mode of ``target``).
    ``batch`` lists the arrays with the batch on axis 0 (the axis a Dask array
    may be chunked along); ``indices`` the integer index arrays.
    """

    name: str
    func: Callable
    reference: Callable
    sources: dict
    batch: tuple
    indices: tuple = ()
    inplace: bool = False
    """Takes ``o`` and ``inplace=True``."""
    accumulates: bool = False
    """Sums over the batch (atomics on the device); takes ``deterministic=True``."""
    gradient: bool = False
    """Returns a named tuple of gradients (``sparse_block_dot_grad``, ``h_softmax*_grad``)."""
    index_results: tuple = ()
    """The result fields that are ``intp`` output indices, not floats (None: the result itself)."""

    def __str__(self):
        return self.name

    @property
    def arguments(self):
        return tuple(self.sources)

    @property
    def arrays(self):
        """The array arguments, in signature order."""
        return tuple(a for a, s in self.sources.items() if s is not None and s not in SCALARS)

    @property
    def floats(self):
        return tuple(a for a in self.arrays if a not in self.indices)

    @property
    def weights(self):
        """Float arrays used whole by every row (``W``, ``b``, ``W1``...): not batch-wise, not ``o``."""
        return tuple(a for a in self.floats if a not in self.batch and a != "o")

    @property
    def summed(self):
        """The result fields summed over the batch: the weights' gradients, or the result itself."""
        if not self.accumulates:
            return ()
        return self.weights if self.gradient else (None,)

    @property
    def label(self):
        """The name shown by ``python -m nbsparse check``: ``h_softmax (full)``, ``h_softmax (target)``."""
        if "target" not in self.sources or self.func in (h_softmax_nll, h_softmax_nll_grad):
            return self.name
        return self.name.replace("[target]", "") + (" (full)" if self.sources["target"] is None
                                                     else " (target)")

    def kwargs(self, problem):
        """This op's keyword arguments, taken from ``problem`` (see the module docstring)."""
        return {a: None if s is None else problem[s] for a, s in self.sources.items()}


_PRODUCT = {"W": "W", "h": "h", "input_idx": "input_idx"}
_HSM = {"x": "x", "batch_size": "batch_size", "n_outputs": "n_outputs", "n_classes": "n_classes",
        "n_outputs_per_class": "n_outputs_per_class", "W1": "W1", "b1": "b1", "W2": "W2", "b2": "b2"}
_BLOCK_INDICES = ("input_idx", "output_idx")

OPS = (
    Op("sparse_block_gemv", sparse_block_gemv, _reference.sparse_block_gemv,
       {"o": "o", **_PRODUCT, "output_idx": "output_idx"},
       batch=("o", "h", "input_idx", "output_idx"), indices=_BLOCK_INDICES, inplace=True),
    Op("sparse_block_dot", sparse_block_dot, _reference.sparse_block_dot,
       {**_PRODUCT, "b": "b", "output_idx": "output_idx"},
       batch=("h", "input_idx", "output_idx"), indices=_BLOCK_INDICES),
    Op("sparse_block_outer", sparse_block_outer, _reference.sparse_block_outer,
       {"o": "outer_o", "x": "h", "y": "grad_output", "x_idx": "input_idx", "y_idx": "output_idx",
        "alpha": "alpha"},
       batch=("x", "y", "x_idx", "y_idx"), indices=("x_idx", "y_idx"), inplace=True,
       accumulates=True),
    Op("sparse_block_dot_grad", sparse_block_dot_grad, _reference.sparse_block_dot_grad,
       {"grad_output": "grad_output", **_PRODUCT, "b": "b", "output_idx": "output_idx"},
       batch=("grad_output", "h", "input_idx", "output_idx"), indices=_BLOCK_INDICES,
       accumulates=True, gradient=True),
    Op("softmax", softmax, _reference.softmax, {"x": "logits", "axis": "axis"}, batch=("x",)),
    Op("softmax_grad", softmax_grad, _reference.softmax_grad,
       {"grad_output": "logits_grad", "y": "probs", "axis": "axis"}, batch=("grad_output", "y")),
    Op("h_softmax", h_softmax, _reference.h_softmax, {**_HSM, "target": None}, batch=("x",)),
    Op("h_softmax[target]", h_softmax, _reference.h_softmax, {**_HSM, "target": "target"},
       batch=("x", "target"), indices=("target",)),
    Op("h_softmax_grad", h_softmax_grad, _reference.h_softmax_grad,
       {"grad_output": "hsm_grad_output", **_HSM, "target": None},
       batch=("grad_output", "x"), accumulates=True, gradient=True),
    Op("h_softmax_grad[target]", h_softmax_grad, _reference.h_softmax_grad,
       {"grad_output": "hsm_target_grad_output", **_HSM, "target": "target"},
       batch=("grad_output", "x", "target"), indices=("target",), accumulates=True,
       gradient=True),
    Op("h_softmax_nll", h_softmax_nll, _reference.h_softmax_nll, {**_HSM, "target": "target"},
       batch=("x", "target"), indices=("target",)),
    Op("h_softmax_nll_grad", h_softmax_nll_grad, _reference.h_softmax_nll_grad,
       {"grad_output": "hsm_target_grad_output", **_HSM, "target": "target"},
       batch=("grad_output", "x", "target"), indices=("target",), accumulates=True,
       gradient=True),
    Op("h_softmax_topk", h_softmax_topk, _reference.h_softmax_topk, {**_HSM, "k": "k"}, batch=("x",),
       index_results=("indices",)),
    Op("h_softmax_logprob", h_softmax_logprob, _reference.h_softmax_logprob, {**_HSM, "candidates": "candidates"},
       batch=("x", "candidates"), indices=("candidates",)),
    Op("h_softmax_sample", h_softmax_sample, _reference.h_softmax_sample, {**_HSM, "seed": "seed"}, batch=("x",),
       index_results=(None,)),
)
"""Every public function and mode."""

OP = {op.name: op for op in OPS}


@dataclass(frozen=True)
class Sizes:
    """The sizes of one problem. The defaults are pairwise different where they can be
    (batch 3, iWin 2, oWin 4, iBlocks 5, oBlocks 6, iSize 7, oSize 8), so that an error
    message quoting a number names one size; ``n_outputs`` 9 < 5 classes x 2 truncates
    the last class."""

    batch: int = 3
    i_win: int = 2
    o_win: int = 4
    i_blocks: int = 5
    o_blocks: int = 6
    i_size: int = 7
    o_size: int = 8
    n_in: int = 4
    n_classes: int = 5
    n_outputs_per_class: int = 2
    n_outputs: int = 9
    softmax_width: int = 4
    """``logits`` is ``(batch, softmax_width)``."""
    k: int = 3
    """``h_softmax_topk``'s ``k``."""
    n_candidates: int = 2
    """``h_softmax_logprob``'s ``candidates`` is ``(batch, n_candidates)``."""
    axis: int = -1
    alpha: float = 0.5


def problem(sizes, dtype, rng, index_dtype=np.int64):
    """Every problem entry for ``sizes``: floats of ``dtype`` drawn from ``rng``'s normal
    distribution, indices of ``index_dtype`` uniform over their ranges."""
    s = sizes

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def indices(n, *shape):
        return rng.integers(0, n, shape).astype(index_dtype)

    W_shape = (s.i_blocks, s.o_blocks, s.i_size, s.o_size)
    logits = normal(s.batch, s.softmax_width)
    return {
        "o": normal(s.batch, s.o_win, s.o_size), "W": normal(*W_shape),
        "h": normal(s.batch, s.i_win, s.i_size), "input_idx": indices(s.i_blocks, s.batch, s.i_win),
        "b": normal(s.o_blocks, s.o_size), "output_idx": indices(s.o_blocks, s.batch, s.o_win),
        "grad_output": normal(s.batch, s.o_win, s.o_size), "outer_o": normal(*W_shape),
        "alpha": s.alpha,
        "logits": logits, "logits_grad": normal(s.batch, s.softmax_width),
        "probs": _reference.softmax(logits, s.axis).astype(dtype), "axis": s.axis,
        "x": normal(s.batch, s.n_in), "batch_size": s.batch, "n_outputs": s.n_outputs,
        "n_classes": s.n_classes, "n_outputs_per_class": s.n_outputs_per_class,
        "W1": normal(s.n_in, s.n_classes), "b1": normal(s.n_classes),
        "W2": normal(s.n_classes, s.n_in, s.n_outputs_per_class),
        "b2": normal(s.n_classes, s.n_outputs_per_class),
        "target": indices(s.n_outputs, s.batch), "k": s.k,
        "candidates": indices(s.n_outputs, s.batch, s.n_candidates), "seed": 2024,
        "hsm_grad_output": normal(s.batch, s.n_outputs), "hsm_target_grad_output": normal(s.batch),
    }
