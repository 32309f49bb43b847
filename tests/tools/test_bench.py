"""Smoke tests of ``python -m nbsparse.bench`` at its reduced sizes: it runs, checks, reports.

No timing is asserted here: speed claims live in the benchmark's output only.
"""

import json

import numpy as np
import pytest

from nbsparse import bench
from nbsparse.bench import cases, summary, workloads


def test_quick_run_checks_every_op_and_peer_and_reports_each_case():
    lines = []
    out = bench.run(dtypes=("float64",), quick=True, repeat=1, pause=0, print=lines.append)
    expected = {(op, name) for op in cases.OPS for name in workloads.WORKLOADS
                if cases.make(op, name, "float64", quick=True) is not None}
    assert {(r["op"], r["workload"]) for r in out["results"]} == expected
    for r in out["results"]:
        assert r["ours_ms"] > 0 and r["x_roofline"] > 0 and r["x_dense_gemm"] > 0
        assert r["best_peer"] in r["peers_ms"] and r["speedup_best_peer"] > 0
        assert len(r["samples_s"]["ours"]) == 1
    assert out["read_bandwidth"] > 0 and out["gemm_peak"]["float64"] > 0
    assert any(line.startswith("op ") for line in lines)
    rows = [line for line in lines if line.split()[0] in cases.OPS and not line.endswith("its forward")]
    assert len(rows) == len(expected)


def test_cli_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = bench.main(["--quick", "--op", "dot", "--workload", "tiny_blocks", "--dtype", "float32",
                       "--repeat", "1", "--json", str(path)])
    assert code == 0
    data = json.loads(path.read_text())
    assert [(r["op"], r["workload"], r["dtype"]) for r in data["results"]] == [("dot", "tiny_blocks", "float32")]
    assert "tiny_blocks" in capsys.readouterr().out

    lines = summary.table([path, path], before=[path])
    assert lines[0].startswith("| op |") and len(lines) == 3
    assert lines[2].startswith("| dot | tiny_blocks | float32 |") and lines[2].endswith("| 1.00 |")


def test_a_wrong_result_fails_the_check():
    case = cases.make("dot", "layer", "float32", quick=True)
    right = case.ours()
    case.ours = lambda: right * 1.01
    with pytest.raises(cases.CheckError, match="max error"):
        bench.run_case(case, bandwidth=1e10, peak=1e10, repeat=1, pause=0)


def test_a_wrong_peer_fails_the_check_and_the_cli_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(bench.cases.pb, "dot_grouped", lambda *args: np.zeros(1))
    assert bench.main(["--quick", "--op", "dot", "--workload", "layer", "--dtype", "float32",
                       "--repeat", "1"]) == 1
    assert "CHECK FAILED: grouped" in capsys.readouterr().out


def test_check_refuses_nan_and_wrong_shapes():
    want = np.ones((2, 3))
    with pytest.raises(cases.CheckError, match="max error"):
        cases.check("x", np.full((2, 3), np.nan), want, "float64")
    with pytest.raises(cases.CheckError, match="shape"):
        cases.check("x", np.ones((3, 2)), want, "float64")
    cases.check("x", want + 1e-12, want, "float64")
