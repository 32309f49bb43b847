"""Inference through the hierarchy: exact top-k, candidate log-probabilities and sampling.

Each reads only the class blocks of ``W2`` it needs: ``h_softmax_topk`` visits
classes in decreasing class probability and stops once a class's probability
falls below the row's current k-th best output (``P(c) * P(k | c) <= P(c)``);
``h_softmax_logprob`` reads the candidates' classes; ``h_softmax_sample`` one
class per row. The class level (``x @ W1 + b1``, ``n_classes`` wide) is computed
for every row; the slot level per visited class. CPU kernels; GPU and Dask
arrays raise ``NotImplementedError`` for now.
"""
