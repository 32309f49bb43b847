"""One training step of the h_softmax output layer (loss, gradient, Adam), dense against sparse.

The steps of ``python -m nbsparse.bench --scaling`` at V = 10^4 and 10^5
(float32): the dense gradient and NumPy's Adam over every element, against
``sparse=True`` and ``nbsparse.optim.adam`` over the touched blocks. The larger
vocabularies (10^6, 4x10^6: gigabytes of weights) are for the one-run command.
"""

from nbsparse.bench import scaling


class TrainingStep:
    param_names = ["vocabulary"]
    params = [[10**4, 10**5]]
    timeout = 300

    def setup(self, vocabulary):
        self.layer = scaling.Layer(vocabulary, "float32")
        self.states = self.layer.adam_states()
        self.layer.sparse_step(self.states)  # compile outside the timing
        self.layer.dense_step()

    def time_sparse_step(self, vocabulary):
        self.layer.sparse_step(self.states)

    def time_dense_step(self, vocabulary):
        self.layer.dense_step()
