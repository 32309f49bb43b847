"""Two-level hierarchical softmax (Theano's ``h_softmax``), its gradient, and its
negative log-likelihood loss (``h_softmax_nll``) with that loss's gradient.

Both levels are block-sparse products: the class layer is ``x @ W1 + b1`` as a
single-block ``sparse_block_dot``; the output layer treats ``W2`` as
``(1, n_classes, n_in, K)`` blocks and selects every class (full mode) or only
each row's target class (target mode), so target mode never reads a class block
that no target selects.
"""

import numpy as np

from . import _hugepages
from . import _validate as v
from ._backend import dask_module, select
from ._results import HSoftmaxGrad
from .blocksparse import _dot, _dot_grads
from .softmax import softmax_rows


class _Problem:
    """Validated, normalised arguments of one ``h_softmax``/``h_softmax_grad`` call."""

    def __init__(self, backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, target):
        self.backend, self.dtype = backend, dtype
        self.batch, self.n_in = x.shape
        self.n_outputs, self.n_classes, self.K = n_outputs, n_classes, K
        floats = backend.floats
        # Views as block-sparse operands: h is (batch, 1, n_in), W1 one (n_in, C) block.
        self.h = floats(dtype, x).reshape(self.batch, 1, self.n_in)
        self.W1 = floats(dtype, W1).reshape(1, 1, self.n_in, n_classes)
        self.b1 = floats(dtype, b1).reshape(1, n_classes)
        self.W2 = floats(dtype, W2).reshape(1, n_classes, self.n_in, K)
        self.b2 = floats(dtype, b2)
        self.first_block = backend.indices(np.zeros((self.batch, 1), dtype=np.intp))
        if target is None:
            self.classes = self.slots = None
            all_classes = np.broadcast_to(np.arange(n_classes), (self.batch, n_classes))
            self.class_idx = backend.indices(all_classes)
        else:
            self.classes = backend.empty((self.batch,), np.intp)
            self.slots = backend.empty((self.batch,), np.intp)
            backend.kernels.hsoftmax.split_target(
                backend.indices(target).reshape(self.batch), K, self.classes, self.slots)
            self.class_idx = self.classes.reshape(self.batch, 1)

    def class_activations(self):
        """``x @ W1 + b1``, shape ``(batch, n_classes)``."""
        return _dot(self.backend, self.dtype, self.W1, self.h, self.first_block, self.b1,
                    self.first_block).reshape(self.batch, self.n_classes)

    def slot_activations(self):
        """``x @ W2[c] + b2[c]``: ``(batch, n_classes, K)``, or ``(batch, K)`` (c = the target's class)."""
        act = _dot(self.backend, self.dtype, self.W2, self.h, self.first_block, self.b2,
                   self.class_idx)
        return act if self.classes is None else act.reshape(self.batch, self.K)

    def class_probs(self):
        """``softmax(x @ W1 + b1)``, shape ``(batch, n_classes)``."""
        return self._softmax(self.class_activations())

    def slot_probs(self):
        """Within-class probabilities: ``(batch, n_classes, K)``, or ``(batch, K)`` with a target."""
        act = self.slot_activations()
        return self._softmax(act.reshape(-1, self.K)).reshape(act.shape)

    def dense_products(self):
        """Host, full mode: ``(x @ W1, x @ W2)`` by NumPy's BLAS, ``(batch, C)`` and ``(C, batch, K)``.

        Every class block meets every row, so these are dense GEMMs: BLAS runs them
        about 5x faster than the block-sparse kernels, and ``np.matmul`` reads ``W2``
        in place (no transposed copy, unlike ``tensordot``).
        """
        x = self.h.reshape(self.batch, self.n_in)
        a_slot = _hugepages.empty((self.n_classes, self.batch, self.K), self.dtype)
        with np.errstate(all="ignore"):  # NaN and inf propagate, as in the kernels: no warning
            np.matmul(x, self.W2.reshape(self.n_classes, self.n_in, self.K), out=a_slot)
            return x @ self.W1.reshape(self.n_in, self.n_classes), a_slot

    def _softmax(self, rows):
        out = self.backend.empty(rows.shape, self.dtype)
        softmax_rows(self.backend, rows, out)
        return out


def _prepare(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
             grad_output=None, *, backward=False, deterministic=False, loss=None):
    """Check every argument (nothing runs before this returns) and build the problem.

    ``backward`` says the call is a gradient, whose ``grad_output`` is required.
    ``loss`` names the loss function (``"h_softmax_nll"``) when the call is one:
    then ``target`` is required.
    """
    check_loss_target(loss, target)
    arrays = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
    floats = {"grad_output": grad_output, **arrays} if backward else arrays
    backend = select(optional=("target",), deterministic=deterministic, **floats, target=target)
    dtype, n_outputs, n_classes, K = check_args(
        x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
        grad_output, backward=backward, backend=backend, loss=loss)
    problem = _Problem(backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, target)
    return backend, problem


def check_loss_target(loss, target):
    """TypeError when ``loss`` (a loss function's name, or None) is called without a target."""
    if loss is not None and target is None:
        raise TypeError(
            f"target must be an integer array (one output per row of x), got None: {loss} is "
            f"the loss of each row's target (h_softmax(x, ...) gives every probability)"
        )


def check_args(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, target,
               grad_output=None, *, backward=False, backend=None, loss=None):
    """Check dtypes, sizes and shapes; return ``(dtype, n_outputs, n_classes, K)``.

    Reads only ``dtype``, ``ndim`` and ``shape`` (so Dask arrays can be checked
    before any graph is built), except the ``target`` range check, which runs
    through ``backend`` and is skipped when ``backend`` is None.
    """
    arrays = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
    floats = {"grad_output": grad_output, **arrays} if backward else arrays
    for name, a in floats.items():
        v.check_float(name, a)
    if target is not None:
        v.check_integer("target", target)
    dtype = np.result_type(*(a.dtype for a in floats.values()))

    batch_size = v.check_count("batch_size", batch_size, minimum=0)
    n_outputs = v.check_count("n_outputs", n_outputs)
    n_classes = v.check_count("n_classes", n_classes)
    K = v.check_count("n_outputs_per_class", n_outputs_per_class)
    v.check_ndim("x", x, 2, "(batch, n_in)")
    if x.shape[0] != batch_size:
        raise ValueError(f"batch_size = {batch_size} but x has {x.shape[0]} rows (x.shape = {x.shape})")
    if n_classes * K < n_outputs:
        raise ValueError(
            f"n_classes * n_outputs_per_class = {n_classes} * {K} = {n_classes * K} is less than "
            f"n_outputs = {n_outputs}: the classes cannot hold every output"
        )
    n_in = x.shape[1]
    v.check_shape("W1", W1, (n_in, n_classes), "(n_in, n_classes)")
    v.check_shape("b1", b1, (n_classes,), "(n_classes,)")
    v.check_shape("W2", W2, (n_classes, n_in, K), "(n_classes, n_in, n_outputs_per_class)")
    v.check_shape("b2", b2, (n_classes, K), "(n_classes, n_outputs_per_class)")
    if target is not None:
        if target.shape not in ((batch_size,), (batch_size, 1)):
            raise ValueError(
                f"target has shape {tuple(target.shape)} but must be ({batch_size},) "
                f"(or ({batch_size}, 1)), one output per row of x"
            )
        if backend is not None:
            backend.check_index_range("target", target, n_outputs, f"n_outputs = {n_outputs}")
    if backward:
        expected = (batch_size, n_outputs) if target is None else (batch_size,)
        v.check_shape("grad_output", grad_output, expected,
                      f"the shape of the {loss or 'h_softmax'} result")
    return dtype, n_outputs, n_classes, K


def h_softmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
              target=None):
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
    if (lazy := dask_module(x, W1, b1, W2, b2, target)) is not None:
        return lazy.h_softmax(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                              W1, b1, W2, b2, target)
    backend, p = _prepare(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                          W1, b1, W2, b2, target)
    kernels = backend.kernels.hsoftmax
    if target is None and backend.name == "cpu":
        out = backend.empty((p.batch, p.n_outputs), p.dtype)
        a_class, a_slot = p.dense_products()
        kernels.full_dense(a_class, p.b1.reshape(-1), a_slot, p.b2, out)
        return backend.wrap(out)
    p_class, p_slot = p.class_probs(), p.slot_probs()
    if target is None:
        out = backend.empty((p.batch, p.n_outputs), p.dtype)
        kernels.full_forward(p_class, p_slot, out)
    else:
        out = backend.empty((p.batch,), p.dtype)
        kernels.target_forward(p_class, p_slot, p.classes, p.slots, out)
    return backend.wrap(out)


def h_softmax_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                   W1, b1, W2, b2, target=None, *, deterministic=False):
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
    if (lazy := dask_module(grad_output, x, W1, b1, W2, b2, target)) is not None:
        return lazy.h_softmax_grad(grad_output, x, batch_size, n_outputs, n_classes,
                                   n_outputs_per_class, W1, b1, W2, b2, target,
                                   deterministic=deterministic)
    backend, p = _prepare(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                          W1, b1, W2, b2, target, grad_output, backward=True,
                          deterministic=deterministic)
    kernels = backend.kernels.hsoftmax
    g = backend.floats(p.dtype, grad_output)
    if target is None and backend.name == "cpu":
        return _dense_full_grad(p, kernels, g, x, W1, b1, W2)
    p_class, p_slot = p.class_probs(), p.slot_probs()
    d_class = backend.empty(p_class.shape, p.dtype)
    d_slot = backend.empty(p_slot.shape, p.dtype)
    if target is None:
        kernels.full_backward(g, p_class, p_slot, d_class, d_slot)
    else:
        kernels.target_backward(g, p_class, p_slot, p.classes, p.slots, d_class, d_slot)

    return _backward_through_products(backend, p, d_class, d_slot, x, W1, b1, W2)


def _backward_through_products(backend, p, d_class, d_slot, x, W1, b1, W2):
    """The ``HSoftmaxGrad`` from the activation gradients of both levels.

    ``d_class`` is ``(batch, n_classes)``; ``d_slot`` is ``(batch, n_classes, K)``
    (full mode) or ``(batch, K)`` (the target's class only).
    """
    dx = backend.zeros(p.h.shape, p.dtype)
    db1 = backend.zeros(p.b1.shape, p.dtype)
    db2 = backend.zeros(p.b2.shape, p.dtype)
    dW1 = _dot_grads(backend, dx, db1, d_class.reshape(p.batch, 1, p.n_classes),
                     p.W1, p.h, p.first_block, p.first_block)
    dW2 = _dot_grads(backend, dx, db2, d_slot.reshape(p.batch, p.class_idx.shape[1], p.K),
                     p.W2, p.h, p.first_block, p.class_idx)
    return HSoftmaxGrad(*(backend.wrap(a) for a in (
        dx.reshape(x.shape), dW1.reshape(W1.shape), db1.reshape(b1.shape),
        dW2.reshape(W2.shape), db2,
    )))


def h_softmax_nll(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2,
                  target):
    """Negative log-likelihood of each row's target under the hierarchical softmax.

    The training loss of an ``h_softmax`` output layer, ``-log h_softmax(..., target)``,
    computed in log space so that it stays finite where the probability underflows.

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
        Weights and biases of the within-class level, one block per class; only the
        blocks of the targets' classes are read.
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
    if (lazy := dask_module(x, W1, b1, W2, b2, target)) is not None:
        return lazy.h_softmax_nll(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                                  W1, b1, W2, b2, target)
    backend, p = _prepare(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                          W1, b1, W2, b2, target, loss="h_softmax_nll")
    out = backend.empty((p.batch,), p.dtype)
    backend.kernels.hsoftmax.nll_forward(p.class_activations(), p.slot_activations(),
                                         p.classes, p.slots, out)
    return backend.wrap(out)


def h_softmax_nll_grad(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                       W1, b1, W2, b2, target, *, deterministic=False):
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
    if (lazy := dask_module(grad_output, x, W1, b1, W2, b2, target)) is not None:
        return lazy.h_softmax_nll_grad(grad_output, x, batch_size, n_outputs, n_classes,
                                       n_outputs_per_class, W1, b1, W2, b2, target,
                                       deterministic=deterministic)
    backend, p = _prepare(x, batch_size, n_outputs, n_classes, n_outputs_per_class,
                          W1, b1, W2, b2, target, grad_output, backward=True,
                          deterministic=deterministic, loss="h_softmax_nll")
    g = backend.floats(p.dtype, grad_output)
    a_class, a_slot = p.class_activations(), p.slot_activations()
    d_class = backend.empty(a_class.shape, p.dtype)
    d_slot = backend.empty(a_slot.shape, p.dtype)
    backend.kernels.hsoftmax.nll_backward(g, a_class, a_slot, p.classes, p.slots,
                                          d_class, d_slot)
    return _backward_through_products(backend, p, d_class, d_slot, x, W1, b1, W2)


def _dense_full_grad(p, kernels, g, x, W1, b1, W2):
    """``h_softmax_grad`` in full mode on the host: BLAS products around one fused kernel."""
    a_class, a_slot = p.dense_products()
    d_class = np.empty(a_class.shape, p.dtype)
    d_slot = _hugepages.empty(a_slot.shape, p.dtype)  # (C, batch, K)
    kernels.full_dense_backward(g, a_class, p.b1.reshape(-1), a_slot, p.b2, d_class, d_slot)
    xs = p.h.reshape(p.batch, p.n_in)
    W1s = p.W1.reshape(p.n_in, p.n_classes)
    W2s = p.W2.reshape(p.n_classes, p.n_in, p.K)
    with np.errstate(all="ignore"):  # NaN and inf propagate, as in the kernels: no warning
        dx = d_class @ W1s.T
        for c in range(p.n_classes):  # one GEMM per class: no (C, batch, n_in) temporary
            dx += d_slot[c] @ W2s[c].T
        return HSoftmaxGrad(dx.reshape(x.shape), (xs.T @ d_class).reshape(W1.shape),
                            d_class.sum(axis=0).reshape(b1.shape),
                            np.matmul(xs.T, d_slot, out=_hugepages.empty(W2.shape, p.dtype)),
                            d_slot.sum(axis=1))
