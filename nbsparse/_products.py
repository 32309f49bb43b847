"""The block-sparse product and its gradients on validated arguments, for any backend.

``sparse_block_dot`` and ``sparse_block_dot_grad`` are built from these, and so are
both levels of the hierarchical softmax (``nbsparse._hierarchy``), which is why
they live apart from the public functions: every argument here is already
checked, and every array is of the ``backend``'s kind.
"""


def dot(backend, dtype, W, h, input_idx, b, output_idx):
    """``sparse_block_dot`` on validated arguments; returns a new backend array.

    Floats are converted to ``dtype`` and indices to ``intp`` here (no copy when
    they already are).
    """
    o = backend.empty((h.shape[0], output_idx.shape[1], W.shape[3]), dtype)
    output_idx = backend.indices(output_idx)
    backend.set_bias(o, backend.floats(dtype, b), output_idx)
    backend.gemv(o, backend.floats(dtype, W), backend.floats(dtype, h),
                 backend.indices(input_idx), output_idx)
    return o


def dot_grads(backend, dh, db, grad_output, W, h, input_idx, output_idx):
    """The new ``W`` gradient of ``sparse_block_dot``; its ``h`` and ``b`` gradients are added into ``dh``, ``db``.

    All arguments are validated and normalised (floats of ``dh.dtype``, ``intp`` indices).
    """
    dW = backend.weight_gradient(W.shape, h, grad_output, input_idx, output_idx)
    backend.grad_h(dh, W, grad_output, input_idx, output_idx)
    backend.bias_grad(db, grad_output, output_idx)
    return dW


def dot_grads_blocks(backend, dh, grad_output, W, h, input_idx, output_idx):
    """The ``W`` and ``b`` gradients of ``sparse_block_dot`` as block lists; the ``h`` gradient is added into ``dh``.

    Returns ``((W index, W values), (b index, b values))`` (see
    ``Backend.weight_gradient_blocks`` and ``bias_grad_blocks``): each block the
    same bits as in :func:`dot_grads`' dense results, and nothing of ``W``'s size
    allocated.
    """
    dW = backend.weight_gradient_blocks(W.shape[:2], h, grad_output, input_idx, output_idx)
    backend.grad_h(dh, W, grad_output, input_idx, output_idx)
    return dW, backend.bias_grad_blocks(grad_output, output_idx)
