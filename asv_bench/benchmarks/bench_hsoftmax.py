"""``h_softmax`` and its gradient beside the two-level NumPy peers and the flat softmax layer."""

from nbsparse.bench import workloads

from . import DTYPES, make_case

WORKLOADS = list(workloads.HSOFTMAX_WORKLOADS)


class _Op:
    op = None
    param_names = ["workload", "dtype"]
    params = [WORKLOADS, DTYPES]
    timeout = 300

    def setup(self, workload, dtype):
        self.case = make_case(self.op, workload, dtype)

    def time_nbsparse(self, workload, dtype):
        self.case.ours()

    def time_numpy_two_level(self, workload, dtype):
        self.case.peers["two_level"]()

    def time_numpy_flat_layer(self, workload, dtype):
        self.case.yardsticks["flat_layer"]()

    def time_dense_gemm_same_flops(self, workload, dtype):
        self.case.yardsticks["dense_gemm"]()


class HSoftmax(_Op):
    op = "h_softmax"

    def time_numpy_theano_graph(self, workload, dtype):
        self.case.peers["theano_graph"]()


class HSoftmaxGrad(_Op):
    op = "h_softmax_grad"

    def peakmem_nbsparse(self, workload, dtype):
        self.case.ours()

    def peakmem_numpy_two_level(self, workload, dtype):
        self.case.peers["two_level"]()
