"""Block-sparse products (forward, outer update, gradient) beside their NumPy peers."""

from nbsparse.bench import workloads

from . import DTYPES, make_case

WORKLOADS = list(workloads.BLOCK_WORKLOADS)


class _Op:
    op = None
    param_names = ["workload", "dtype"]
    params = [WORKLOADS, DTYPES]
    timeout = 300

    def setup(self, workload, dtype):
        self.case = make_case(self.op, workload, dtype)

    def time_nbsparse(self, workload, dtype):
        self.case.ours()

    def time_numpy_theano_loop(self, workload, dtype):
        self.case.peers["theano_loop"]()

    def time_numpy_grouped(self, workload, dtype):
        self.case.peers["grouped"]()

    def time_dense_gemm_same_flops(self, workload, dtype):
        self.case.yardsticks["dense_gemm"]()


class SparseBlockDot(_Op):
    op = "dot"

    def time_numpy_gather_matmul(self, workload, dtype):
        self.case.peers["gather_matmul"]()


class SparseBlockOuter(_Op):
    op = "outer"

    def time_numpy_add_at(self, workload, dtype):
        self.case.peers["add_at"]()


class SparseBlockDotGrad(_Op):
    op = "dot_grad"

    def peakmem_nbsparse(self, workload, dtype):
        self.case.ours()

    def peakmem_numpy_grouped(self, workload, dtype):
        self.case.peers["grouped"]()
