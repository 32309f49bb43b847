"""Smoke tests of ``python -m nbsparse.bench`` at its reduced sizes: it runs, checks, reports.

No timing is asserted here: speed claims live in the benchmark's output only.
"""

import json

import numpy as np
import pytest

from nbsparse import bench
from nbsparse._optable import OPS
from nbsparse.bench import cases, load, summary, workloads


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
    legend = next(line for line in lines if line.startswith("columns:"))
    assert all(f"\n         {name} " in "\n" + legend.split("\n", 1)[1] for name in ("xGEMM", "xroof", "xTheano"))
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


# --------------------------------------------------------------------------- --load


def test_busy_processes_run_while_the_block_runs_and_are_gone_after():
    with load.busy_processes(2) as procs:
        assert len(procs) == 2
        assert all(p.poll() is None for p in procs)  # still running
    assert all(p.poll() is not None for p in procs)


@pytest.mark.parametrize("n", [-1, load.MAX_LOAD + 1])
def test_the_load_is_bounded(n):
    with pytest.raises(ValueError, match="--load must be between 0 and"):
        with load.busy_processes(n):
            pass


def test_a_busy_process_stops_by_itself_at_its_limit():
    with load.busy_processes(1, limit_s=0.2) as procs:
        assert procs[0].wait(timeout=30) == 0


def test_time_pair_times_both_team_sizes_and_restores_the_thread_count():
    import numba

    before = numba.get_num_threads()
    seen = []
    ours, single = load.time_pair(lambda: seen.append(numba.get_num_threads()), repeat=3)
    assert ours > 0 and single > 0
    assert seen == [before, 1] + [before, 1] * 3  # the warm-up pair, then alternating
    assert numba.get_num_threads() == before


def test_load_cli_times_the_selfcheck_ops_and_the_cases_and_writes_json(tmp_path, capsys):
    path = tmp_path / "load.json"
    assert bench.main(["--load", "1", "--quick", "--op", "dot", "--workload", "layer", "--dtype", "float32",
                       "--repeat", "2", "--json", str(path)]) == 0
    out = json.loads(path.read_text())
    assert out["load"] == 1 and out["repeat"] == 2
    rows = out["rows"]
    assert [r["workload"] for r in rows].count("self-check") == len(OPS)
    assert [(r["op"], r["workload"]) for r in rows if r["workload"] != "self-check"] == [("dot", "layer")]
    for r in rows:
        assert r["threads_s"] > 0 and r["one_thread_s"] > 0
        assert r["ratio"] == pytest.approx(r["threads_s"] / r["one_thread_s"])
    assert "worst ratio" in capsys.readouterr().out


def test_load_cli_refuses_a_load_out_of_bounds(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--load", str(load.MAX_LOAD + 1)])
    assert "--load must be between 0 and" in capsys.readouterr().err


# --------------------------------------------------------------------------- --scaling


def test_scaling_times_both_paths_and_reports_the_bounds():
    from nbsparse.bench import scaling

    lines = []
    out = scaling.run(repeat=1, vocabularies=((400, ("float32", "float64")),), print=lines.append)
    rows = out["rows"]
    assert [(r["dtype"], r["path"]) for r in rows] == [("float32", "dense"), ("float32", "sparse"),
                                                         ("float64", "dense"), ("float64", "sparse")]
    for r in rows:
        assert r["V"] == 400 and r["ms"] > 0 and r["x_roofline"] > 0
        assert r["must_move_MB"] == pytest.approx(7 * r["touched_MB"])
        assert r["touched_MB"] <= r["W2_MB"] + 4 * 256 * 20 * 8 / 1e6  # W2's touched blocks, plus W1 and b1
        if r["path"] == "sparse":
            assert r["x_sparse"] == 1.0


def test_one_sparse_step_moves_the_parameters_as_one_dense_step():
    from nbsparse.bench import scaling

    dense, sparse = scaling.Layer(900, "float64"), scaling.Layer(900, "float64")
    dense.dense_step()
    sparse.sparse_step(sparse.adam_states())
    for name in dense.params:
        np.testing.assert_allclose(sparse.params[name], dense.params[name], rtol=1e-12, atol=1e-15)
        for m_sparse, m_dense in zip(sparse.moments[name], dense.moments[name]):
            np.testing.assert_allclose(m_sparse, m_dense, rtol=1e-12, atol=1e-300)
    assert not np.array_equal(sparse.W2, scaling.Layer(900, "float64").W2)  # it did move


# --------------------------------------------------------------------------- --topk


def test_topk_bench_checks_and_times_both_distributions():
    from nbsparse.bench import topk

    out = topk.run(repeat=1, vocabularies=(400,), print=lambda *a, **k: None)
    rows = {r["classes"]: r for r in out["rows"]}
    assert set(rows) == {"flat", "peaked"}
    for r in rows.values():
        assert r["V"] == 400 and r["n_classes"] == 20 and 1 <= r["classes_read"] <= 20
        assert r["topk_ms"] > 0 and r["full_argpartition_ms"] > 0 and r["dense_argpartition_ms"] > 0
    assert rows["peaked"]["classes_read"] < rows["flat"]["classes_read"]


def test_asv_inference_cases_run_at_a_small_vocabulary():
    """The asv suite's inference cases run (at V = 400): their setup compiles and every timed call works."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "asv_bench" / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suite = module.TopK()
    timed = [name for name in dir(suite) if name.startswith("time_")]
    assert len(timed) == 4
    for classes in suite.params[1]:
        suite.setup(400, classes)
        for name in timed:
            getattr(suite, name)(400, classes)


def test_unsteady_limits_raise_a_warning():
    from nbsparse.bench import machine

    start = machine.limits(30e9, {"float32": 21e9, "float64": 100e9})
    end = machine.limits(31e9, {"float32": 144e9, "float64": 101e9})
    warning = machine.unsteady_warning(start, end)
    assert warning.startswith("WARNING: the machine was busy")
    assert "float32 GEMM peak (GFLOP/s) 21 at the start, 144 at the end" in warning
    assert "read bandwidth" not in warning and "float64" not in warning  # steady ones are not named
    assert machine.unsteady_warning(start, start) is None
