"""Every CUDA kernel, assembled by ptxas for sm_70, sm_80 and sm_90: no local-memory spill, occupancy above the floor.

``python -m nbsparse.bench --cuda-resources`` compiles each kernel to PTX for
each architecture and assembles it for sm_70, sm_80 and sm_90. Here, within the
test-time budget, one PTX per kernel and dtype (for sm_70, which later
architectures accept; on these kernels the PTX for sm_70 and sm_90 differ in
symbol names only) is assembled for the two ends, sm_70 and sm_90. Runs in a
child process with the real CUDA target, which needs the compiler wheels
(``numba-cuda[cu12]``) but no GPU; skipped without them.
"""

import json
import os
import subprocess
import sys

import pytest

from nbsparse.bench import resources

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")

CHILD = r"""
import json
from dataclasses import asdict
from nbsparse.bench import resources
from nbsparse._cuda import ptx
try:
    resources.find_ptxas()
except FileNotFoundError as exc:
    print(json.dumps({"skip": str(exc)}))
    raise SystemExit(0)
rows = resources.report(archs=("sm_70", "sm_90"), ptx_arch="sm_70")
print(json.dumps({"kernels": sorted(ptx.kernels()), "rows": [asdict(u) for u in rows]}))
"""


@pytest.fixture(scope="module")
def usage():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


def test_every_kernel_and_dtype_is_reported_for_both_ends(usage):
    seen = {(r["kernel"], r["dtype"], r["arch"]) for r in usage["rows"]}
    assert seen == {(k, d, a) for k in usage["kernels"] for d in ("float32", "float64") for a in ("sm_70", "sm_90")}
    assert all(r["registers"] > 0 and r["threads"] == resources.THREADS for r in usage["rows"])


def test_no_kernel_spills_to_local_memory(usage):
    spills = [r for r in usage["rows"] if r["spill_stores"] or r["spill_loads"]]
    assert spills == []


def test_every_kernel_reaches_the_occupancy_floor(usage):
    rows = [resources.Usage(**r) for r in usage["rows"]]
    assert resources.problems(rows) == []
    assert all(r.occupancy >= resources.floor(r.kernel) for r in rows)
    assert min(r.occupancy for r in rows if r.kernel not in resources.FLOOR_BY_KERNEL) >= resources.OCCUPANCY_FLOOR


PTXAS_OUTPUT = """ptxas info    : 8 bytes gmem
ptxas info    : Compiling entry function '_Z6kernel' for 'sm_80'
ptxas info    : Function properties for _Z6kernel
    24 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 1024 bytes smem, 776 bytes cmem[0]
"""


def test_ptxas_report_is_parsed():
    assert resources.parse_ptxas(PTXAS_OUTPUT) == {"registers": 72, "spill_stores": 16, "spill_loads": 8,
                                                   "stack": 24, "shared": 1024}
    with pytest.raises(ValueError, match="unexpected ptxas output"):
        resources.parse_ptxas("ptxas fatal : nothing")


@pytest.mark.parametrize(("arch", "registers", "shared", "expected"), [
    ("sm_80", 32, 0, (16, 1.0, "threads")),  # 2048 threads / 128
    ("sm_80", 64, 0, (8, 0.5, "registers")),  # 64 x 32 = 2048 registers a warp, 32 warps
    ("sm_70", 65, 0, (7, 0.4375, "registers")),  # rounded up to 2304 a warp: 28 warps, 7 blocks
    ("sm_90", 128, 2048, (4, 0.25, "registers")),
    ("sm_70", 16, 48 << 10, (2, 0.125, "shared")),  # 96 KiB / 48 KiB
    ("sm_80", 16, 50 << 10, (3, 0.1875, "shared")),  # 164 KiB / (50 + 1 reserved) KiB
])
def test_occupancy_follows_the_per_sm_limits(arch, registers, shared, expected):
    assert resources.occupancy(resources.ARCHS[arch], registers, shared) == expected


def test_a_spill_or_a_low_occupancy_is_a_problem():
    ok = resources.Usage("k", "float32", "sm_80", 32, 0, 0, 0, 0, 128, 16, 1.0, "threads")
    spilled = resources.Usage("k", "float64", "sm_90", 64, 8, 8, 8, 0, 128, 8, 0.5, "registers")
    low = resources.Usage("k", "float64", "sm_70", 160, 0, 0, 0, 0, 128, 3, 0.1875, "registers")
    assert resources.problems([ok]) == []
    assert resources.problems([spilled]) == ["k[float64] on sm_90: spills 8 bytes stored, 8 loaded"]
    assert resources.problems([low]) == ["k[float64] on sm_70: occupancy 19% < 25% (160 registers, "
                                         "0 bytes shared, limited by registers)"]
