"""asv benchmarks for nbsparse: run from ``asv_bench/`` with ``asv run --python=same``."""

import numpy as np


def block_problem(dtype, batch, i_win, o_win, i_blocks, o_blocks, i_size, o_size, seed=0):
    """Seeded arguments of ``sparse_block_dot``: ``(W, h, input_idx, b, output_idx)``."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((i_blocks, o_blocks, i_size, o_size)).astype(dtype)
    h = rng.standard_normal((batch, i_win, i_size)).astype(dtype)
    b = rng.standard_normal((o_blocks, o_size)).astype(dtype)
    input_idx = rng.integers(0, i_blocks, (batch, i_win))
    output_idx = rng.integers(0, o_blocks, (batch, o_win))
    return W, h, input_idx, b, output_idx
