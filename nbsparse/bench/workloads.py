"""The fixed workloads of the performance issue, their reduced (``--quick``) sizes and arrays.

Indices are drawn uniformly with a fixed seed, so every run times the same problem.
"""

from dataclasses import dataclass, replace

import numpy as np

SEED = 0


@dataclass(frozen=True)
class BlockWorkload:
    """A block-sparse product: ``W`` is ``(i_blocks, o_blocks, i_size, o_size)``."""

    name: str
    i_blocks: int
    o_blocks: int
    i_size: int
    o_size: int
    batch: int
    i_win: int
    o_win: int
    why: str = ""

    @property
    def triples(self):
        """Number of ``(b, i, j)`` block products."""
        return self.batch * self.i_win * self.o_win

    @property
    def flops(self):
        """Multiply-adds times two of one forward product (or one outer update)."""
        return 2.0 * self.triples * self.i_size * self.o_size

    def dense_shape(self):
        """``(M, K, N)`` of the dense GEMM with the same FLOPs: ``(batch, iWin*iSize) @ (iWin*iSize, oWin*oSize)``."""
        return self.batch, self.i_win * self.i_size, self.o_win * self.o_size

    def arrays(self, dtype, seed=SEED):
        """``dict`` of seeded arrays: ``W, h, b, grad, input_idx, output_idx``."""
        rng = np.random.default_rng(seed)

        def normal(*shape):
            return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)

        return {
            "W": normal(self.i_blocks, self.o_blocks, self.i_size, self.o_size),
            "h": normal(self.batch, self.i_win, self.i_size),
            "b": normal(self.o_blocks, self.o_size),
            "grad": normal(self.batch, self.o_win, self.o_size),
            "input_idx": rng.integers(0, self.i_blocks, (self.batch, self.i_win)),
            "output_idx": rng.integers(0, self.o_blocks, (self.batch, self.o_win)),
        }


@dataclass(frozen=True)
class HSoftmaxWorkload:
    """``h_softmax`` with ``n_classes`` classes of ``K`` outputs each, with or without a target."""

    name: str
    n_in: int
    n_classes: int
    K: int
    batch: int
    target: bool
    why: str = ""

    @property
    def n_outputs(self):
        return self.n_classes * self.K

    @property
    def flops(self):
        """GEMM FLOPs of the forward: the class level plus ``K`` (target) or all outputs per row."""
        width = self.n_classes + (self.K if self.target else self.n_outputs)
        return 2.0 * self.batch * self.n_in * width

    def dense_shape(self):
        width = self.n_classes + (self.K if self.target else self.n_outputs)
        return self.batch, self.n_in, width

    def arrays(self, dtype, seed=SEED):
        """``dict`` of seeded arrays: ``x, W1, b1, W2, b2, target`` (None without one), ``grad``."""
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(self.n_in)  # O(1) activations: the softmaxes stay well spread

        def normal(*shape, s=1.0):
            return (s * rng.standard_normal(shape, dtype=np.float32)).astype(dtype, copy=False)

        arrays = {
            "x": normal(self.batch, self.n_in),
            "W1": normal(self.n_in, self.n_classes, s=scale),
            "b1": normal(self.n_classes),
            "W2": normal(self.n_classes, self.n_in, self.K, s=scale),
            "b2": normal(self.n_classes, self.K),
            "target": rng.integers(0, self.n_outputs, self.batch) if self.target else None,
        }
        arrays["grad"] = normal(self.batch) if self.target else normal(self.batch, self.n_outputs)
        return arrays


BLOCK_WORKLOADS = {
    w.name: w for w in (
        BlockWorkload("hsm_target", 1, 256, 512, 256, 2048, 1, 1, "the product inside h_softmax target mode"),
        BlockWorkload("layer", 64, 64, 64, 64, 512, 8, 8, "a block-sparse hidden layer"),
        BlockWorkload("big_blocks", 16, 16, 256, 256, 256, 4, 4, "compute-bound end"),
        BlockWorkload("tiny_blocks", 1024, 1024, 8, 8, 1024, 16, 16, "overhead-bound end"),
    )
}
HSOFTMAX_WORKLOADS = {
    w.name: w for w in (
        HSoftmaxWorkload("hsm_full", 512, 256, 256, 256, False, "h_softmax without target"),
        HSoftmaxWorkload("hsm_target_full", 512, 256, 256, 2048, True, "h_softmax with target"),
    )
}

# Reduced sizes: the same shape of problem (rows per block pair, windows) at a
# few MB, for ``--quick``, the smoke test and the asv suite.
_QUICK = {
    "hsm_target": dict(o_blocks=32, i_size=128, o_size=64, batch=256),
    "layer": dict(i_blocks=16, o_blocks=16, i_size=32, o_size=32, batch=128, i_win=4, o_win=4),
    "big_blocks": dict(i_blocks=4, o_blocks=4, i_size=128, o_size=128, batch=64, i_win=2, o_win=2),
    "tiny_blocks": dict(i_blocks=128, o_blocks=128, batch=256, i_win=8, o_win=8),
    "hsm_full": dict(n_in=128, n_classes=32, K=32, batch=64),
    "hsm_target_full": dict(n_in=128, n_classes=32, K=32, batch=256),
}

WORKLOADS = {**BLOCK_WORKLOADS, **HSOFTMAX_WORKLOADS}


def get(name, quick=False):
    """The workload called ``name``, at reduced size when ``quick``."""
    workload = WORKLOADS[name]
    return replace(workload, **_QUICK[name]) if quick else workload
