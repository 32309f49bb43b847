"""Block-sparse products beside their NumPy reference (a starting point; the
performance work extends it to the full workload table)."""

import nbsparse as nbs
from nbsparse import _reference

from . import block_problem

CASES = {
    # batch, iWin, oWin, iBlocks, oBlocks, iSize, oSize
    "layer_small": (128, 4, 4, 16, 16, 64, 64),
}


class SparseBlockDot:
    param_names = ["case", "dtype"]
    params = [list(CASES), ["float32", "float64"]]
    timeout = 120

    def setup(self, case, dtype):
        self.args = block_problem(dtype, *CASES[case])
        nbs.sparse_block_dot(*self.args)  # compile outside the timing

    def time_nbsparse(self, case, dtype):
        nbs.sparse_block_dot(*self.args)

    def time_numpy_reference(self, case, dtype):
        _reference.sparse_block_dot(*self.args)
