"""Launch configuration and the ``cuda.jit`` decorators shared by the CUDA kernels.

The module globals are read at every launch, so tests can monkeypatch them
(small blocks give several blocks and a ragged last one on tiny inputs). Every
kernel is grid-stride, so any grid size is correct; ``MAX_BLOCKS`` only bounds
the launch.
"""

from numba import cuda

#: Threads per block of the element-wise kernels; the reduction kernels use the
#: largest power of two not above it.
THREADS_PER_BLOCK = 128
#: Elements of ``h`` staged in shared memory per step of the tiled gemv.
TILE = 32
#: Upper bound on the blocks of one launch (grid-stride loops cover the rest).
MAX_BLOCKS = 4096

#: True under ``NUMBA_ENABLE_CUDASIM=1``, decided from the module actually loaded
#: (``config.ENABLE_CUDASIM`` can change after import).
SIM = cuda.jit.__module__.startswith("numba.cuda.simulator")

# lineinfo maps SASS back to source lines for profilers at no run-time cost; the
# simulator's ``cuda.jit`` raises TypeError for it.
JIT_OPTIONS = {} if SIM else {"lineinfo": True}


def kernel(func):
    """``cuda.jit`` with the options above: lazy, nothing compiles until the first launch."""
    return cuda.jit(**JIT_OPTIONS)(func)


#: Resident blocks per SM that the register-heavy kernels are compiled for
#: (``launch_bounds``: ptxas then caps registers at 64K / (blocks x threads)).
#: ``python -m nbsparse.bench --cuda-resources`` measured, at 128 threads: the
#: tiled gemv and grad_h used 66-76 registers on sm_70 (38-44% occupancy), and 56-64
#: without spills when asked for 8 blocks (50%); the row-reduction kernels (softmax,
#: full backward, the loss) used 70-141 registers (19-44%), and 45-80 without spills
#: when asked for 6 blocks (37.5-50%). 8 blocks spilled 8-40 bytes in several of them.
#: The loss backward spills in float64 on sm_90 at 6 or 5 blocks (24-32 bytes); at 4
#: it uses 116-128 registers without spills (25%, from 19-25% unbounded).
RESIDENT_BLOCKS_PRODUCTS = 8
RESIDENT_BLOCKS_ROWS = 6
RESIDENT_BLOCKS_LOSS_BACKWARD = 4


def bounded(threads, resident_blocks):
    """``kernel``, compiled for blocks of at most ``threads`` threads with ``resident_blocks`` per SM.

    A launch with more than ``threads`` threads per block fails on hardware. The
    bounds are kept on the Python function too (``launch_bounds``), so that
    :mod:`.ptx` compiles the same PTX without a GPU; the simulator ignores them.
    """

    def decorate(func):
        func.launch_bounds = (threads, resident_blocks)
        options = JIT_OPTIONS if SIM else {**JIT_OPTIONS, "launch_bounds": func.launch_bounds}
        return cuda.jit(**options)(func)

    return decorate


def device(func):
    """``cuda.jit(device=True)``, inlined into the calling kernel's Numba IR before typing.

    The function is typed and compiled as part of each kernel that calls it, with
    the kernel's options. A device function compiled on its own is built for the
    current device, which would stop ``compile_ptx`` (:mod:`.ptx`) from working on
    a machine without a GPU.
    """
    return cuda.jit(device=True, inline="always")(func)


def threads():
    """Threads per block of the element-wise kernels (``THREADS_PER_BLOCK``, at least 1)."""
    return max(1, int(THREADS_PER_BLOCK))


def reduction_threads(n):
    """Power-of-two block size for kernels that reduce rows of length ``n`` in shared memory.

    At most ``THREADS_PER_BLOCK`` (rounded down to a power of two); short rows get a
    smaller block, but not below one warp, since a partial warp saves nothing.
    """
    cap = 1 << (threads().bit_length() - 1)
    fit = 1 << max(0, n - 1).bit_length()
    return min(cap, max(fit, 32))


def blocks_for(n, per_block=None):
    """Blocks for ``n`` work items of ``per_block`` each (default: one per thread), capped.

    Never 0 (a zero-block launch is an error), but callers should not launch at
    all when ``n`` is 0.
    """
    per_block = threads() if per_block is None else per_block
    return max(1, min(MAX_BLOCKS, -(-n // per_block)))
