"""Inference through the hierarchy: exact top-k, candidate log-probabilities and sampling.

Each reads only the class blocks of ``W2`` it needs: ``h_softmax_topk`` visits
classes in decreasing class probability and stops once a class's probability
falls below the row's current k-th best output (``P(c) * P(k | c) <= P(c)``);
``h_softmax_logprob`` reads the candidates' classes; ``h_softmax_sample`` one
class per row. The class level (``x @ W1 + b1``, ``n_classes`` wide) is computed
for every row; the slot level per visited class. CPU kernels; GPU and Dask
arrays raise ``NotImplementedError`` for now.
"""

from ._checks import check_hsoftmax
from ._dispatch import array_op
from ._hierarchy import Problem
from ._results import HSoftmaxTopK
from ._validate import check_count


@array_op("x", "W1", "b1", "W2", "b2")
def h_softmax_topk(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, k, *, backend):
    """The ``k`` most likely outputs of each row under the hierarchical softmax, exactly.

    Parameters
    ----------
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2
        As for :func:`h_softmax` (without a target).
    k : int
        How many outputs per row, in ``[1, n_outputs]``.

    Returns
    -------
    HSoftmaxTopK
        Named tuple ``(indices, log_probs)``, both ``(batch, k)``: each row's ``k``
        outputs in ``[0, n_outputs)`` of highest probability, by decreasing
        probability (ties by increasing output index), as ``intp`` indices, and their
        log-probabilities (in log space, as :func:`h_softmax_nll`) in the result dtype.

    Raises
    ------
    TypeError, ValueError
        As for :func:`h_softmax`; TypeError if ``k`` is not an integer, ValueError if
        it is outside ``[1, n_outputs]``.
    NotImplementedError
        GPU or Dask arrays (not yet).

    Notes
    -----
    ``P(output) = P(class) * P(slot | class) <= P(class)``: a row's classes are
    visited in decreasing class probability, and the visit stops at the first
    class less likely than the row's current k-th best output. Only the visited
    classes' blocks of ``W2`` are read: usually a few on a trained model's peaked
    class distribution, every class on a flat one. The truncated last class is
    handled as in :func:`h_softmax` (its slot softmax is over all
    ``n_outputs_per_class`` slots; outputs past ``n_outputs`` are never listed).

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.array([0.0, 2.0])   # class 1 is the likelier
    >>> W2, b2 = np.zeros((2, 2, 3)), np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> top = nbs.h_softmax_topk(x, 1, 6, 2, 3, W1, b1, W2, b2, k=2)
    >>> top.indices
    array([[4, 3]])
    >>> np.exp(top.log_probs).round(3)
    array([[0.507, 0.187]])
    """
    dtype, n_outputs, n_classes, K = check_hsoftmax(
        x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, None, backend=backend)
    k = check_count("k", k)
    if k > n_outputs:
        raise ValueError(f"k must be <= n_outputs = {n_outputs}, got {k}")
    p = Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, None)
    indices, log_probs, _ = backend.h_softmax_topk(p, k)
    return HSoftmaxTopK(backend.wrap(indices), backend.wrap(log_probs))
