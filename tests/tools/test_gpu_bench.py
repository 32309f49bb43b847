"""``python -m nbsparse.bench --device cuda`` and ``python -m nbsparse check --device cuda`` under the simulator.

The harness (device arrays, checks against the reference, the report, the
skipped peers) runs at tiny sizes; the times mean nothing here. The CuPy peers
run with NumPy standing in for CuPy, which has the same array API, so their
arithmetic is checked against the reference too.
"""

import sys
import types

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import __main__ as cli
from nbsparse import _reference, _selfcheck
from nbsparse._optable import OP
from nbsparse.bench import cases, cuda_peers
from nbsparse.bench import cuda as gpu_bench

pytestmark = pytest.mark.cuda


def test_device_bench_checks_each_case_and_lists_the_skipped_peers():
    lines = []
    out = gpu_bench.run(ops=("dot", "outer", "h_softmax"), names=("layer", "hsm_target_full"),
                        dtypes=("float32",), size="tiny", repeat=2, print=lines.append)
    assert [(r["op"], r["workload"]) for r in out["results"]] == [
        ("dot", "layer"), ("outer", "layer"), ("h_softmax", "hsm_target_full")]
    for r in out["results"]:
        assert r["ours_ms"] > 0 and r["first_call_ms"] > 0 and r["x_roofline"] > 0
    assert out["bandwidth"] > 0
    dev = gpu_bench.Device()  # under the simulator: no CuPy, no PyTorch, every peer skipped
    skipped = {}
    for op in ("dot", "outer", "h_softmax"):
        skipped.update(cuda_peers.unavailable(op, dev.cp, dev.torch))
    assert out["skipped_peers"] == skipped
    assert [line for line in lines if line.startswith("skipped peer ")] == [
        f"skipped peer {name}: {reason}" for name, reason in skipped.items()]
    assert any("AdaptiveLogSoftmaxWithLoss" in line for line in lines)


def test_a_wrong_device_result_fails_the_check():
    dev = gpu_bench.Device()
    case = gpu_bench.make_case(dev, "dot", "tiny_blocks", "float64", size="tiny")
    right = dev.get(case.ours())
    case.ours = lambda: right * 1.01
    with pytest.raises(cases.CheckError, match="max error"):
        gpu_bench.run_case(dev, case, bandwidth=1e9, peak=None, repeat=1)


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    cp = types.ModuleType("cupy_stand_in")
    cp.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    cp.asnumpy = np.asarray
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(scatter_add=np.add.at))
    return cp


@pytest.mark.parametrize("op", ["dot", "outer"])
def test_cupy_block_peers_compute_the_op(numpy_as_cupy, op):
    w = gpu_bench._workload("layer", "tiny")
    a = w.arrays("float64")
    W, h, b, g, ii, oi = (a[k] for k in ("W", "h", "b", "grad", "input_idx", "output_idx"))
    if op == "dot":
        peers = cuda_peers.dot_peers(numpy_as_cupy, W, h, ii, b, oi)
        expected = _reference.sparse_block_dot(W, h, ii, b, oi)
    else:
        o = np.zeros_like(W)
        peers = cuda_peers.outer_peers(numpy_as_cupy, o, h, g, ii, oi, 0.5)
        expected = _reference.sparse_block_outer(np.zeros_like(W), h, g, ii, oi, 0.5)
    assert set(peers) == set(cuda_peers.CUPY_PEERS[op])
    for name, peer in peers.items():
        cases.check(name, peer(), expected, "float64")


@pytest.mark.parametrize("name", ["hsm_full", "hsm_target_full"])
def test_cupy_two_level_peer_computes_h_softmax(numpy_as_cupy, name):
    w = gpu_bench._workload(name, "tiny")
    a = w.arrays("float64")
    x, W1, b1, W2, b2, target = (a[k] for k in ("x", "W1", "b1", "W2", "b2", "target"))
    peer = cuda_peers.hsoftmax_peers(numpy_as_cupy, x, w.K, W1, b1, W2, b2, target, w.n_outputs)
    tgt = () if target is None else (target,)
    expected = _reference.h_softmax(x, w.batch, w.n_outputs, w.n_classes, w.K, W1, b1, W2, b2, *tgt)
    cases.check("cupy_two_level", peer["cupy_two_level"](), expected, "float64")


def test_every_peer_is_either_built_or_reported_skipped():
    assert cuda_peers.unavailable("dot", None, None) == {
        "cupy_gather_matmul": "needs CuPy on a GPU", "cupy_grouped": "needs CuPy on a GPU",
        "torch_gather_bmm": "needs PyTorch with CUDA"}
    assert cuda_peers.unavailable("dot", object(), object()) == {}


def test_device_selfcheck_runs_the_ops_on_device_arrays(monkeypatch, capsys):
    monkeypatch.setattr(_selfcheck, "other_runnable_tasks", lambda: 0)
    monkeypatch.setattr(_selfcheck, "OPS", (OP["sparse_block_gemv"], OP["softmax"], OP["h_softmax_nll"]))
    assert cli.main(["check", "--device", "cuda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nbsparse self-check on the GPU: ")
    rows = [line.split()[:2] for line in lines[2:-1]]
    assert rows == [[op, dtype] for dtype in ("float32", "float64")
                    for op in ("sparse_block_gemv", "softmax", "h_softmax_nll")]
    assert lines[-1] == "all ops match the NumPy reference"


def test_resource_report_refuses_the_simulator(capsys):
    from nbsparse import bench

    assert bench.main(["--cuda-resources"]) == 2
    assert "cannot run: compile_ptx is not available in the CUDA simulator" in capsys.readouterr().out


def test_device_commands_without_a_gpu_say_so():
    """With the real CUDA target and no GPU (this machine), both commands exit 2 with the reason."""
    import os
    import subprocess

    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    code = ("from numba import cuda; print(cuda.is_available()); "
            "from nbsparse import __main__ as m; from nbsparse import bench; "
            "print(m.main(['check', '--device', 'cuda']), bench.main(['--device', 'cuda', '--quick']))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    if lines[0] == "True":
        pytest.skip("a CUDA GPU is available here")
    assert lines[1:] == ["cannot run: no CUDA GPU is available to Numba (numba.cuda.is_available() is False): "
                         "see numba.cuda.detect(), and pip install 'nbsparse[cu12]'"] * 2 + ["2 2"]


def test_device_topk_bench_checks_both_distributions_and_lists_the_skipped_peer():
    from nbsparse.bench import cuda_topk

    lines = []
    out = cuda_topk.run(repeat=1, print=lines.append)
    assert [(r["V"], r["classes"]) for r in out["rows"]] == [(16, "flat"), (16, "peaked")]
    assert all(r["topk_ms"] > 0 and r["x_faster"] is None for r in out["rows"])
    assert out["skipped_peers"] == {"full + cupy.argpartition": "needs CuPy on a GPU"}
    assert "skipped peer full + cupy.argpartition: needs CuPy on a GPU" in lines


def test_topk_peer_gives_the_cpu_top_k_and_a_wrong_one_fails(numpy_as_cupy):
    from nbsparse.bench import cuda_topk, topk

    dev = gpu_bench.Device()
    host = topk.problem(64, topk.SPREADS["flat"], batch=5, n_in=6)
    want = nbs.h_softmax_topk(*host, topk.TOP)
    cuda_topk._check("peer", dev, cuda_topk._full_then_argpartition(numpy_as_cupy, host), want)
    with pytest.raises(cases.CheckError, match="indices differ"):
        cuda_topk._check("peer", dev, want.indices[:, ::-1], want)
