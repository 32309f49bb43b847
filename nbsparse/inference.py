"""Inference through the hierarchy: exact top-k, candidate log-probabilities and sampling.

Each reads only the class blocks of ``W2`` it needs: ``h_softmax_topk`` reads a
row's classes only while they are at least as likely as a bound on its k-th
best output (``P(c) * P(k | c) <= P(c)``);
``h_softmax_logprob`` reads the candidates' classes; ``h_softmax_sample`` one
class per row. The class level (``x @ W1 + b1``, ``n_classes`` wide) is computed
for every row; the slot level per visited class. NumPy arrays run the CPU
kernels (``_cpu/topk.py``, ``_cpu/inference.py``), GPU arrays (CuPy, Numba
device arrays) their CUDA twins (``_cuda/topk.py``, ``_cuda/inference.py``),
with results of the input's kind; Dask arrays are computed chunk-wise along the batch.
"""

from ._checks import check_candidates, check_hsoftmax, check_seed, check_topk_count
from ._dispatch import array_op
from ._hierarchy import Problem
from ._results import HSoftmaxTopK


@array_op("x", "W1", "b1", "W2", "b2", "candidates")
def h_softmax_logprob(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
                      candidates, *, backend):
    """Log-probabilities of given candidate outputs under the hierarchical softmax.

    Parameters
    ----------
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2
        As for :func:`h_softmax`; only the ``W2``/``b2`` blocks of the candidates'
        classes are read.
    candidates : integer array, shape (batch, m)
        ``m`` outputs per row in ``[0, n_outputs)``; repeats are allowed.

    Returns
    -------
    array, shape (batch, m)
        ``log P(candidates[n, j] | x[n])``, dtype ``np.result_type(x, W1, b1, W2, b2)``,
        of the kind of ``x``.

    Raises
    ------
    TypeError
        Non-array or non-float arguments, non-integer ``candidates`` or sizes, host
        and device arrays mixed.
    ValueError
        As for :func:`h_softmax`, and ``candidates`` not 2-D with one row per row of ``x``.
    IndexError
        A candidate outside ``[0, n_outputs)``.

    See Also
    --------
    h_softmax_nll, h_softmax_sample, h_softmax

    Notes
    -----
    In log space like :func:`h_softmax_nll`: with ``a1 = x @ W1 + b1``, the
    candidate's class ``c = t // K``, slot ``k = t % K`` and
    ``a2 = x @ W2[c] + b2[c]``, ``log_softmax(a1)[c] + log_softmax(a2)[k]``, so for
    one candidate per row it is ``-h_softmax_nll(..., target=candidates[:, 0])`` to
    rounding, and finite where the probability underflows. The slot activations of
    a class are computed once per row, however many of its candidates share it.
    With a truncated last class the slot softmax still runs over all ``K`` slots,
    as in :func:`h_softmax`.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.zeros(2)
    >>> W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    >>> np.exp(nbs.h_softmax_logprob(x, 1, 4, 2, 2, W1, b1, W2, b2, np.array([[0, 3]])))
    array([[0.25, 0.25]])
    """
    dtype, n_outputs, n_classes, K = check_hsoftmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                                                    W1, b1, W2, b2, None)
    check_candidates(candidates, x.shape[0])
    backend.check_index_range("candidates", candidates, n_outputs, f"n_outputs = {n_outputs}")
    p = Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, None)
    return backend.wrap(backend.h_softmax_logprob(p, backend.indices(candidates)))


@array_op("x", "W1", "b1", "W2", "b2")
def h_softmax_sample(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, *,
                     seed=None, backend):
    """Draw one output per row from the hierarchical softmax.

    Parameters
    ----------
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2
        As for :func:`h_softmax`.
    seed : int, optional
        In ``[0, 2**64)``: the same seed gives the same draws on the same backend,
        whatever the number of threads; the GPU draws what the CPU draws, unless
        the backends' activations round apart across a draw's boundary. None (the
        default) takes a fresh seed from ``np.random.default_rng()``.

    Returns
    -------
    array of intp, shape (batch,)
        One output in ``[0, n_outputs)`` per row, of the kind of ``x`` (NumPy,
        CuPy or Numba device array).

    Raises
    ------
    TypeError
        Non-array or non-float arguments, non-integer sizes or ``seed``, host and
        device arrays mixed.
    ValueError
        As for :func:`h_softmax`, and a ``seed`` outside ``[0, 2**64)``.

    See Also
    --------
    h_softmax, h_softmax_logprob

    Notes
    -----
    Draws from ``h_softmax(x, ...)`` renormalised over ``[0, n_outputs)``: a class
    from the class softmax, then a slot from that class's slot softmax, both by
    inverse CDF over float64 probabilities, so each row reads one class block of
    ``W2``/``b2``. Classes wholly past ``n_outputs`` are never drawn; a slot past
    ``n_outputs`` in a truncated last class is rejected, and the class and slot are
    redrawn from the distribution of a draw accepted after any number of
    rejections (which reads at most one more class block). Row ``n`` uses the
    uniforms SplitMix64 gives for ``(seed, n, counter)``, so the draws do not depend
    on the thread count, and the GPU kernel (a thread per row) repeats the CPU's
    float64 arithmetic. A row whose activations are NaN gets output 0.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((3, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.array([0.0, -1e4])  # class 1 never drawn
    >>> W2, b2 = np.zeros((2, 2, 2)), np.array([[-1e4, 0.0], [0.0, 0.0]])  # nor slot 0
    >>> nbs.h_softmax_sample(x, 3, 4, 2, 2, W1, b1, W2, b2, seed=0)
    array([1, 1, 1])
    """
    seed = check_seed(seed)
    dtype, n_outputs, n_classes, K = check_hsoftmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                                                    W1, b1, W2, b2, None)
    p = Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, None)
    return backend.wrap(backend.h_softmax_sample(p, seed))


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

    Notes
    -----
    ``P(output) = P(class) * P(slot | class) <= P(class)``, so a class less likely
    than a row's k-th best output cannot hold one of its top ``k``. A first pass
    reads each row's likeliest classes until they hold ``k`` outputs; its k-th
    output bounds the final one, and a second pass reads the row's other classes
    at least that likely. Each pass is one block-sparse product over the (row,
    class) pairs, so a class block is read once per pass for all the rows that
    need it. Only those classes' blocks of ``W2`` are read: a few per row on a
    trained model's peaked class distribution, most on a flat one. On the GPU a
    thread block per row visits the row's classes one at a time in decreasing
    probability, with the same bound. The truncated last class is
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
    k = check_topk_count(k, n_outputs)
    p = Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, None)
    indices, log_probs, _ = backend.h_softmax_topk(p, k)
    return HSoftmaxTopK(backend.wrap(indices), backend.wrap(log_probs))
