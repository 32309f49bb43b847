"""Inference through the hierarchy: top-10 against full mode + ``argpartition``, logprob, sample.

The cases of ``python -m nbsparse.bench --topk`` at V = 10^4 and 10^5 (batch 256,
``n_in`` 256, ``n_classes = K = sqrt(V)``, float32) on the flat and the peaked
class distributions; V = 10^6 (1 GB of ``W2`` in float32) is for the
one-run command. ``h_softmax_logprob`` scores 5 candidates per row and
``h_softmax_sample`` draws one output per row on the same models.
"""

import numpy as np

from nbsparse import h_softmax_logprob, h_softmax_sample, h_softmax_topk
from nbsparse.bench import topk


class TopK:
    param_names = ["vocabulary", "classes"]
    params = [[10**4, 10**5], list(topk.SPREADS)]
    timeout = 300

    def setup(self, vocabulary, classes):
        self.args = topk.problem(vocabulary, topk.SPREADS[classes])
        self.candidates = np.random.default_rng(1).integers(0, self.args[2], (topk.BATCH, 5))
        h_softmax_topk(*self.args, topk.TOP)  # compile outside the timing
        h_softmax_logprob(*self.args, self.candidates)
        h_softmax_sample(*self.args, seed=0)

    def time_topk(self, vocabulary, classes):
        h_softmax_topk(*self.args, topk.TOP)

    def time_full_then_argpartition(self, vocabulary, classes):
        topk.full_then_argpartition(self.args)

    def time_logprob_5_candidates(self, vocabulary, classes):
        h_softmax_logprob(*self.args, self.candidates)

    def time_sample(self, vocabulary, classes):
        h_softmax_sample(*self.args, seed=0)
