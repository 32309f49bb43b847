"""``python -m nbsparse check``: every row of the op table, in both dtypes, matches the reference."""

from nbsparse import _selfcheck
from nbsparse._optable import OPS


def test_selfcheck_runs_every_op_and_finds_them_matching():
    lines = []
    assert _selfcheck.run(print=lines.append)
    rows = [line.split()[0] for line in lines[2:-1]]
    labels = [op.label.split()[0] for op in OPS]
    assert rows == labels * 2  # float32, then float64
    assert lines[-1] == "all ops match the NumPy reference"
