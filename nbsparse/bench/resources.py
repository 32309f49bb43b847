"""``python -m nbsparse.bench --cuda-resources``: what each CUDA kernel costs an SM, read without a GPU.

Every kernel and specialisation that nbsparse launches (the table of
:func:`nbsparse._cuda.ptx.kernels`, so a kernel added there is included) is
compiled to PTX by Numba for each architecture, then assembled by ``ptxas -v``
from the CUDA 12 compiler wheel (``pip install "numba-cuda[cu12]"``). Its report
gives registers per thread, local-memory spill stores and loads, the stack
frame and the static shared memory; from those and the per-SM limits of the
architecture, the theoretical occupancy at the block size nbsparse launches
with (the fraction of the SM's warp slots that resident blocks can fill).

Needs the real CUDA target (``NUMBA_ENABLE_CUDASIM=0`` or unset), no GPU and no
driver.
"""

import concurrent.futures
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass

from nbsparse._cuda import launch, ptx


@dataclass(frozen=True)
class Arch:
    """The per-SM limits of one GPU architecture (CUDA C Programming Guide, compute capabilities table)."""

    name: str
    gpu: str
    cc: tuple
    smem_per_sm: int
    """Shared memory an SM can give to blocks, bytes."""
    smem_reserved_per_block: int
    """Shared memory the driver reserves for each resident block (CUDA 11+, sm_80 on), bytes."""
    registers_per_sm: int = 64 * 1024
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    register_granularity: int = 256
    """Registers are given to a warp in units of this many."""


ARCHS = {
    "sm_70": Arch("sm_70", "V100", (7, 0), smem_per_sm=96 << 10, smem_reserved_per_block=0),
    "sm_80": Arch("sm_80", "A100", (8, 0), smem_per_sm=164 << 10, smem_reserved_per_block=1 << 10),
    "sm_90": Arch("sm_90", "H100", (9, 0), smem_per_sm=228 << 10, smem_reserved_per_block=1 << 10),
}

#: The block size every kernel of the table is compiled for and launched with
#: (``launch.THREADS_PER_BLOCK``; the row-reduction kernels use it for rows of
#: 65 or more elements, a smaller power of two, at least 32, for shorter rows).
THREADS = launch.THREADS_PER_BLOCK

#: The lowest theoretical occupancy the CI test accepts: 4 resident blocks of 128
#: threads (16 of 64 warps, 4 per scheduler). The element-wise kernels reach 50-100%;
#: the one-block-per-row reductions 25-56% (``launch.RESIDENT_BLOCKS_*``). The lowest
#: is the loss backward (``nll_backward``, 25%): in float64 it needs 116-128 registers
#: to run without spills, which allows no more than 4 blocks, and a spill (a
#: local-memory round trip per use) costs more than the occupancy it buys. A kernel that falls below 25% has
#: lost registers to a change, not to a choice.
OCCUPANCY_FLOOR = 0.25

#: Kernels allowed a lower floor, each with its reason. ``topk`` holds a row's walk
#: over its classes in registers: 136-212 registers (2 resident blocks, 12.5%
#: occupancy) unbounded; launch bounds of 4 blocks spill 40-512 bytes, of 3 blocks
#: 24 bytes in float64 on sm_70. It runs one block per row, so at the batches
#: inference uses (256 rows over 80-132 SMs) an SM holds 2-3 of its blocks whatever
#: the registers allow: its occupancy is bounded by the grid, not the registers.
FLOOR_BY_KERNEL = {"topk": 0.125}


def floor(kernel):
    """The lowest occupancy the CI test accepts for ``kernel``."""
    return FLOOR_BY_KERNEL.get(kernel, OCCUPANCY_FLOOR)


@dataclass(frozen=True)
class Usage:
    """One kernel, dtype and architecture: ``ptxas -v``'s figures and the occupancy they allow."""

    kernel: str
    dtype: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int
    threads: int
    blocks_per_sm: int
    occupancy: float
    limit: str
    """What bounds the resident blocks: "threads", "blocks", "registers" or "shared"."""


def find_ptxas():
    """Path of ``ptxas``: the ``nvidia-cuda-nvcc-cu12`` wheel's, else ``$CUDA_HOME/bin``'s, else ``PATH``'s.

    Raises FileNotFoundError naming the wheel to install.
    """
    candidates = []
    if importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.cuda_nvcc"):
        spec = importlib.util.find_spec("nvidia.cuda_nvcc")
        candidates += [os.path.join(p, "bin", "ptxas") for p in spec.submodule_search_locations]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "ptxas"))
    on_path = shutil.which("ptxas")
    candidates += [on_path] if on_path else []
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("ptxas not found: pip install 'numba-cuda[cu12]' (it brings nvidia-cuda-nvcc-cu12), "
                            "or set CUDA_HOME to a CUDA 12 toolkit")


_USED = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text):
    """``{registers, spill_stores, spill_loads, stack, shared}`` from ``ptxas -v`` output of one kernel."""
    used, spills, smem = _USED.search(text), _SPILLS.search(text), _SMEM.search(text)
    if used is None or spills is None:
        raise ValueError(f"unexpected ptxas output:\n{text}")
    stack, stores, loads = (int(v) for v in spills.groups())
    return {"registers": int(used.group(1)), "spill_stores": stores, "spill_loads": loads,
            "stack": stack, "shared": int(smem.group(1)) if smem else 0}


def assemble(ptx_text, arch, ptxas=None):
    """``ptxas -v --gpu-name arch`` on ``ptx_text``; its parsed report (see :func:`parse_ptxas`)."""
    ptxas = ptxas or find_ptxas()
    with tempfile.TemporaryDirectory(prefix="nbsparse-ptxas-") as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx_text)
        proc = subprocess.run([ptxas, "-v", "--gpu-name", arch, source, "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"ptxas failed for {arch}:\n{proc.stderr[-2000:]}")
    return parse_ptxas(proc.stderr + proc.stdout)


def occupancy(arch, registers, shared, threads=THREADS):
    """``(resident blocks per SM, occupancy, limiting resource)`` of a kernel on ``arch``.

    As CUDA's occupancy calculator: each warp's registers are rounded up to the
    allocation granularity; each block's shared memory includes the driver's
    reservation.

    >>> occupancy(ARCHS["sm_80"], registers=32, shared=0)
    (16, 1.0, 'threads')
    >>> occupancy(ARCHS["sm_80"], registers=128, shared=0)
    (4, 0.25, 'registers')
    """
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // arch.register_granularity) * arch.register_granularity
    limits = {
        "threads": arch.threads_per_sm // (warps * 32),
        "blocks": arch.blocks_per_sm,
        "registers": (arch.registers_per_sm // per_warp) // warps,
        "shared": arch.smem_per_sm // (shared + arch.smem_reserved_per_block)
        if shared + arch.smem_reserved_per_block else arch.blocks_per_sm,
    }
    limit = min(limits, key=limits.get)
    blocks = limits[limit]
    return blocks, blocks * warps * 32 / arch.threads_per_sm, limit


def usage(name, dtype, arch, ptx_text, ptxas=None):
    """The :class:`Usage` of kernel ``name`` in ``dtype`` on ``arch`` (a key of :data:`ARCHS`), from its PTX."""
    report = assemble(ptx_text, arch, ptxas)
    blocks, occ, limit = occupancy(ARCHS[arch], report["registers"], report["shared"])
    return Usage(name, dtype, arch, threads=THREADS, blocks_per_sm=blocks, occupancy=occ, limit=limit,
                 **report)


def report(kernels=None, dtypes=ptx.DTYPES, archs=tuple(ARCHS), ptx_arch=None):
    """:class:`Usage` of every kernel (default: all of ``ptx.kernels()``), dtype and architecture.

    The PTX is Numba's for each architecture (what it compiles on such a GPU), or
    for ``ptx_arch`` alone when given: PTX is forward compatible, so one PTX per
    kernel assembled for every architecture saves the compile time of the others.
    Numba compiles one kernel at a time; the ``ptxas`` processes run side by side.
    """
    tool = find_ptxas()
    names = list(ptx.kernels()) if kernels is None else list(kernels)
    jobs = [(name, dtype, arch, ptx.compile_kernel(name, dtype, ARCHS[ptx_arch or arch].cc))
            for name in names for dtype in dtypes for arch in archs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: usage(*job, ptxas=tool), jobs))


def problems(rows):
    """Lines naming each row with a local-memory spill or an occupancy below its kernel's :func:`floor`."""
    out = []
    for u in rows:
        where = f"{u.kernel}[{u.dtype}] on {u.arch}"
        lowest = floor(u.kernel)
        if u.spill_stores or u.spill_loads:
            out.append(f"{where}: spills {u.spill_stores} bytes stored, {u.spill_loads} loaded")
        if u.occupancy < lowest:
            out.append(f"{where}: occupancy {u.occupancy:.0%} < {lowest:.0%} ({u.registers} registers, "
                       f"{u.shared} bytes shared, limited by {u.limit})")
    return out


def table(rows):
    """Markdown lines: one row per kernel and dtype, registers / spills / smem / occupancy per architecture."""
    archs = list(dict.fromkeys(u.arch for u in rows))
    head = ("| kernel | dtype | " + " | ".join(f"{a} ({ARCHS[a].gpu}) regs, spills, smem B, occupancy"
                                               for a in archs) + " |")
    lines = [head, "|---|---|" + "---|" * len(archs)]
    by_key = {}
    for u in rows:
        by_key.setdefault((u.kernel, u.dtype), {})[u.arch] = u
    for (kernel, dtype), per_arch in by_key.items():
        cells = []
        for a in archs:
            u = per_arch[a]
            cells.append(f"{u.registers}, {u.spill_stores + u.spill_loads}, {u.shared}, {u.occupancy:.0%}")
        lines.append(f"| {kernel} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def run(print=print, ptx_arch=None):
    """Print the table and any problem; return the JSON-ready result (``rows``, ``problems``)."""
    rows = report(ptx_arch=ptx_arch)
    print(f"CUDA kernels at {THREADS} threads per block: registers per thread, spilled bytes "
          "(stores + loads), static shared memory, theoretical occupancy")
    for line in table(rows):
        print(line)
    found = problems(rows)
    for line in found:
        print("problem: " + line)
    print(f"{len(rows)} kernel builds; "
          + (f"{len(found)} problems" if found else
             f"no spills, every occupancy >= {OCCUPANCY_FLOOR:.0%} (topk >= {floor('topk'):.1%})"))
    return {"threads": THREADS, "floor": OCCUPANCY_FLOOR, "rows": [asdict(u) for u in rows], "problems": found}
