"""Two-level hierarchical softmax (Theano's ``h_softmax``), its gradient, and its
negative log-likelihood loss (``h_softmax_nll``) with that loss's gradient.

Both levels are block-sparse products (``nbsparse._hierarchy``). Target mode
touches only each row's target class and runs here, step by step; full mode
touches every class, and each backend runs it its own fastest way
(``Backend.h_softmax_full`` and ``h_softmax_full_grad``).
"""

import numpy as np

from ._checks import check_hsoftmax, check_nll_target
from ._dispatch import array_op
from ._hierarchy import Problem
from ._results import BlockGrad, HSoftmaxGrad

_FORWARD_ARRAYS = ("x", "W1", "b1", "W2", "b2", "target")
_BACKWARD_ARRAYS = ("grad_output", *_FORWARD_ARRAYS)


def _prepare(backend, x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
             target, grad_output=None, *, backward=False, loss=None):
    """Check every argument (nothing runs before this returns) and build the problem.

    ``backward`` says the call is a gradient, whose ``grad_output`` is required.
    ``loss`` names the loss function (``"h_softmax_nll"``) when the call is one.
    """
    dtype, n_outputs, n_classes, K = check_hsoftmax(
        x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
        grad_output, backward=backward, backend=backend, loss=loss)
    return Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, target)


def _wrap_grads(backend, grads):
    """``HSoftmaxGrad`` in the caller's kind; ``(index, values)`` pairs (``sparse=True``) become ``BlockGrad``."""
    return HSoftmaxGrad(*(BlockGrad(backend.wrap(backend.from_host_index(a[0])), backend.wrap(a[1]))
                          if isinstance(a, tuple) else backend.wrap(a) for a in grads))


def _all_classes(grads):
    """Full-mode dense gradients with ``W2``/``b2`` as block lists of every class (a host index)."""
    dx, dW1, db1, dW2, db2 = grads
    classes = np.arange(dW2.shape[0], dtype=np.intp).reshape(-1, 1)
    return dx, dW1, db1, (classes, dW2), (classes, db2)


@array_op(*_FORWARD_ARRAYS, optional=("target",))
def h_softmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
              target=None, *, backend):
    """Two-level hierarchical softmax (Theano's ``h_softmax``, same argument order).

    Parameters
    ----------
    x : array, shape (batch, n_in)
        The inputs.
    batch_size : int
        Must equal ``x.shape[0]`` (kept for Theano compatibility).
    n_outputs : int
        Number of outputs; at most ``n_classes * n_outputs_per_class``.
    n_classes : int
        Number of classes of the first level.
    n_outputs_per_class : int
        Outputs per class (``K``) of the second level.
    W1 : array, shape (n_in, n_classes)
    b1 : array, shape (n_classes,)
        Weights and bias of the class level.
    W2 : array, shape (n_classes, n_in, n_outputs_per_class)
    b2 : array, shape (n_classes, n_outputs_per_class)
        Weights and biases of the within-class level, one block per class.
    target : integer array, shape (batch,) or (batch, 1), optional
        One output per row in ``[0, n_outputs)``; then only its probability is
        computed, and only the target's class block of ``W2``/``b2`` is read.

    Returns
    -------
    array
        ``(batch, n_outputs)`` probabilities without a target, ``(batch,)`` with
        one; dtype ``np.result_type(x, W1, b1, W2, b2)``.

    Raises
    ------
    TypeError
        Non-array or non-float arguments, non-integer ``target`` or sizes, host and
        device arrays mixed.
    ValueError
        ``batch_size != x.shape[0]``, ``n_classes * n_outputs_per_class < n_outputs``,
        a non-positive size, or weights of the wrong shape.
    IndexError
        A ``target`` outside ``[0, n_outputs)``.

    See Also
    --------
    h_softmax_grad, sparse_block_dot, softmax

    Notes
    -----
    Output ``m = c * K + k`` is ``P(c | x) * P(k | c, x)`` with
    ``P(. | x) = softmax(x @ W1 + b1)`` and ``P(. | c, x) = softmax(x @ W2[c] + b2[c])``.
    Without a target the first ``n_outputs`` columns are returned: rows sum to 1
    when ``n_classes * K == n_outputs`` and to less when the tail is truncated, as
    in Theano. With a target ``t``: class ``t // K``, slot ``t % K``.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.zeros(2)
    >>> W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    >>> nbs.h_softmax(x, 1, 4, 2, 2, W1, b1, W2, b2)
    array([[0.25, 0.25, 0.25, 0.25]])
    >>> nbs.h_softmax(x, 1, 3, 2, 2, W1, b1, W2, b2, target=np.array([2]))
    array([0.25])
    """
    p = _prepare(backend, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                 W1, b1, W2, b2, target)
    if target is None:
        return backend.wrap(backend.h_softmax_full(p))
    p_class, p_slot = p.class_probs(), p.slot_probs()
    out = backend.empty((p.batch,), p.dtype)
    backend.target_forward(p_class, p_slot, p.classes, p.slots, out)
    return backend.wrap(out)


@array_op(*_BACKWARD_ARRAYS, optional=("target",))
def h_softmax_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                   W1, b1, W2, b2, target=None, *, deterministic=False, sparse=False, backend):
    """Gradients of ``sum(grad_output * h_softmax(x, ..., target))``.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to the :func:`h_softmax` result:
        ``(batch, n_outputs)`` without a target, ``(batch,)`` with one.
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target
        The arguments of the forward :func:`h_softmax` call.
    deterministic : bool, optional
        Bit-identical weight and bias gradients run to run on the GPU (see
        :func:`sparse_block_outer`); the CPU kernels always are.
    sparse : bool, optional
        Return ``W2`` and ``b2`` as :class:`BlockGrad` block lists of the target
        classes (every class in full mode), each block the same bits as in the
        dense result; nothing of ``W2``'s size is allocated in target mode. Not
        yet for Dask arrays.

    Returns
    -------
    HSoftmaxGrad
        Named tuple ``(x, W1, b1, W2, b2)`` of gradients, each shaped like its
        argument, of dtype ``np.result_type`` of all float arguments. With a target,
        the ``W2``/``b2`` blocks of classes that no target selects are exactly zero
        and are never read.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for :func:`h_softmax`, and ValueError if ``grad_output`` does not have
        the shape of the forward result.

    See Also
    --------
    h_softmax

    Notes
    -----
    Both levels are recomputed, then back-propagated through their softmaxes
    (``softmax_grad``, no Jacobian) and through the two block-sparse products
    (``sparse_block_dot_grad``); the input gradient sums both paths.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.zeros(2)
    >>> W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    >>> g = nbs.h_softmax_grad(np.ones((1, 4)), x, 1, 4, 2, 2, W1, b1, W2, b2)
    >>> g.b1  # the full distribution sums to 1 whatever b1 is
    array([0., 0.])
    """
    p = _prepare(backend, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                 W1, b1, W2, b2, target, grad_output, backward=True)
    g = backend.floats(p.dtype, grad_output)
    if target is None:
        grads = backend.h_softmax_full_grad(p, g)
        return _wrap_grads(backend, _all_classes(grads) if sparse else grads)
    p_class, p_slot = p.class_probs(), p.slot_probs()
    d_class = backend.empty(p_class.shape, p.dtype)
    d_slot = backend.empty(p_slot.shape, p.dtype)
    backend.target_backward(g, p_class, p_slot, p.classes, p.slots, d_class, d_slot)
    return _wrap_grads(backend, p.backward_through_products(d_class, d_slot, sparse))


@array_op(*_FORWARD_ARRAYS, optional=("target",), first=check_nll_target)
def h_softmax_nll(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
                  target, *, backend):
    """Negative log-likelihood of each row's target under the hierarchical softmax.

    The training loss of an ``h_softmax`` output layer, ``-log h_softmax(..., target)``,
    computed in log space so that it stays finite where the probability underflows.

    Parameters
    ----------
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2
        As for :func:`h_softmax`; only the ``W2``/``b2`` blocks of the targets'
        classes are read.
    target : integer array, shape (batch,) or (batch, 1)
        One output per row in ``[0, n_outputs)``; required.

    Returns
    -------
    array, shape (batch,)
        ``-log P(target[n] | x[n])``, dtype ``np.result_type(x, W1, b1, W2, b2)``.

    Raises
    ------
    TypeError
        Non-array or non-float arguments, a non-integer or missing (None) ``target``,
        non-integer sizes, host and device arrays mixed.
    ValueError
        As for :func:`h_softmax`: ``batch_size != x.shape[0]``,
        ``n_classes * n_outputs_per_class < n_outputs``, a non-positive size, weights
        or ``target`` of the wrong shape.
    IndexError
        A ``target`` outside ``[0, n_outputs)``.

    See Also
    --------
    h_softmax_nll_grad, h_softmax

    Notes
    -----
    With ``a1 = x @ W1 + b1``, the target's class ``c = t // K``, slot ``k = t % K``
    and ``a2 = x @ W2[c] + b2[c]``::

        nll = (logsumexp(a1) - a1[c]) + (logsumexp(a2) - a2[k])

    each ``logsumexp`` taken after subtracting the row maximum. This equals
    ``-log(h_softmax(..., target))`` wherever that is finite, but no probability is
    formed, so a target whose probability is below the float range (about 1e-38 in
    float32, 1e-308 in float64) still gets a finite loss and a useful gradient.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.array([0.0, 800.0])  # class 0: probability exp(-800)
    >>> W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    >>> nbs.h_softmax(x, 1, 4, 2, 2, W1, b1, W2, b2, target=np.array([1]))
    array([0.])
    >>> nbs.h_softmax_nll(x, 1, 4, 2, 2, W1, b1, W2, b2, np.array([1]))  # 800 + log(2)
    array([800.69314718])
    """
    p = _prepare(backend, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                 W1, b1, W2, b2, target, loss="h_softmax_nll")
    out = backend.empty((p.batch,), p.dtype)
    backend.nll_forward(p.class_activations(), p.slot_activations(), p.classes, p.slots, out)
    return backend.wrap(out)


@array_op(*_BACKWARD_ARRAYS, optional=("target",), first=check_nll_target)
def h_softmax_nll_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                       W1, b1, W2, b2, target, *, deterministic=False, sparse=False, backend):
    """Gradients of ``sum(grad_output * h_softmax_nll(x, ..., target))``.

    Parameters
    ----------
    grad_output : array, shape (batch,)
        Gradient of the loss with respect to each row's NLL, e.g. ``1 / batch``
        everywhere for the mean NLL.
    x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target
        The arguments of the forward :func:`h_softmax_nll` call.
    deterministic : bool, optional
        Bit-identical weight and bias gradients run to run on the GPU (see
        :func:`sparse_block_outer`); the CPU kernels always are.
    sparse : bool, optional
        Return ``W2`` and ``b2`` as :class:`BlockGrad` block lists of the target
        classes, each block the same bits as in the dense result; nothing of
        ``W2``'s size is allocated. Not yet for Dask arrays.

    Returns
    -------
    HSoftmaxGrad
        Named tuple ``(x, W1, b1, W2, b2)`` of gradients, each shaped like its
        argument, of dtype ``np.result_type`` of all float arguments. The ``W2``/``b2``
        blocks of classes that no target selects are exactly zero and are never read.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for :func:`h_softmax_nll`, and ValueError if ``grad_output`` is not
        ``(batch,)``.

    See Also
    --------
    h_softmax_nll, h_softmax_grad

    Notes
    -----
    The activation gradients are ``grad_output[n] * (softmax(a) - onehot)`` at each
    level (``a1`` against the target's class, ``a2`` against its slot), computed from
    the activations in log space like the loss; they are then back-propagated through
    the two block-sparse products (``sparse_block_dot_grad``), and the input gradient
    sums both paths. One call recomputes the forward activations: the loss itself is
    not needed.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x = np.ones((1, 2))
    >>> W1, b1 = np.zeros((2, 2)), np.zeros(2)
    >>> W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    >>> g = nbs.h_softmax_nll_grad(np.ones(1), x, 1, 4, 2, 2, W1, b1, W2, b2, np.array([2]))
    >>> g.b1  # softmax(a1) - onehot(class 1)
    array([ 0.5, -0.5])
    >>> g.b2  # class 0 is no target's class: exactly zero
    array([[ 0. ,  0. ],
           [-0.5,  0.5]])
    """
    p = _prepare(backend, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                 W1, b1, W2, b2, target, grad_output, backward=True, loss="h_softmax_nll")
    g = backend.floats(p.dtype, grad_output)
    a_class, a_slot = p.class_activations(), p.slot_activations()
    d_class = backend.empty(a_class.shape, p.dtype)
    d_slot = backend.empty(a_slot.shape, p.dtype)
    backend.nll_backward(g, a_class, a_slot, p.classes, p.slots, d_class, d_slot)
    return _wrap_grads(backend, p.backward_through_products(d_class, d_slot, sparse))
