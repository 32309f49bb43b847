"""The two levels of the hierarchical softmax as block-sparse products, for any backend.

The class layer is ``x @ W1 + b1`` as a single-block ``sparse_block_dot``; the
output layer treats ``W2`` as ``(1, n_classes, n_in, K)`` blocks and selects every
class (full mode) or only each row's target class (target mode), so target mode
never reads a class block that no target selects. A :class:`Problem` holds one
call's validated arguments in those shapes; the public functions and the
backends' full-mode paths compose its steps.
"""

import functools

import numpy as np

from . import _products


class Problem:
    """Validated, normalised arguments of one ``h_softmax*`` call.

    Attributes
    ----------
    backend : Backend
        The backend of the call's arrays.
    dtype : numpy.dtype
        The result dtype.
    batch, n_in, n_outputs, n_classes, K : int
        The sizes.
    h, W1, b1, W2, b2 : backend arrays
        ``x`` as ``(batch, 1, n_in)``, ``W1`` as one ``(n_in, n_classes)`` block,
        ``b1`` as ``(1, n_classes)``, ``W2`` as ``(1, n_classes, n_in, K)`` blocks,
        ``b2`` as it is; all of ``dtype``, C-contiguous.
    first_block : backend array
        ``(batch, 1)`` zeros: the one block of ``W1``, the one block row of ``W2``.
    class_idx : backend array
        ``(batch, n_classes)`` every class (full mode) or ``(batch, 1)`` the target's.
    classes, slots : backend arrays or None
        ``target // K`` and ``target % K`` (target mode), else None.
    """

    def __init__(self, backend, dtype, x, n_outputs, n_classes, K, W1, b1, W2, b2, target):
        self.backend, self.dtype = backend, dtype
        self.batch, self.n_in = x.shape
        self.n_outputs, self.n_classes, self.K = n_outputs, n_classes, K
        floats = backend.floats
        self.h = floats(dtype, x).reshape(self.batch, 1, self.n_in)
        self.W1 = floats(dtype, W1).reshape(1, 1, self.n_in, n_classes)
        self.b1 = floats(dtype, b1).reshape(1, n_classes)
        self.W2 = floats(dtype, W2).reshape(1, n_classes, self.n_in, K)
        self.b2 = floats(dtype, b2)
        self.first_block = backend.indices(np.zeros((self.batch, 1), dtype=np.intp))
        if target is None:
            self.classes = self.slots = None  # class_idx: every class, built on first use
        else:
            self.classes = backend.empty((self.batch,), np.intp)
            self.slots = backend.empty((self.batch,), np.intp)
            backend.split_target(backend.indices(target).reshape(self.batch), K,
                                 self.classes, self.slots)
            self.class_idx = self.classes.reshape(self.batch, 1)

    @functools.cached_property
    def class_idx(self):
        """Every class for every row, ``(batch, n_classes)``: full mode's block indices.

        Built when first asked for (a target sets its own in ``__init__``): the
        inference functions never read it, and on the device it is an upload.
        """
        all_classes = np.broadcast_to(np.arange(self.n_classes), (self.batch, self.n_classes))
        return self.backend.indices(all_classes)

    def class_activations(self):
        """``x @ W1 + b1``, shape ``(batch, n_classes)``."""
        return _products.dot(self.backend, self.dtype, self.W1, self.h, self.first_block, self.b1,
                             self.first_block).reshape(self.batch, self.n_classes)

    def slot_activations(self):
        """``x @ W2[c] + b2[c]``: ``(batch, n_classes, K)``, or ``(batch, K)`` (c = the target's class)."""
        act = _products.dot(self.backend, self.dtype, self.W2, self.h, self.first_block, self.b2,
                            self.class_idx)
        return act if self.classes is None else act.reshape(self.batch, self.K)

    def class_probs(self):
        """``softmax(x @ W1 + b1)``, shape ``(batch, n_classes)``."""
        return self._softmax(self.class_activations())

    def slot_probs(self):
        """Within-class probabilities: ``(batch, n_classes, K)``, or ``(batch, K)`` with a target."""
        act = self.slot_activations()
        return self._softmax(act.reshape(-1, self.K)).reshape(act.shape)

    def _softmax(self, rows):
        out = self.backend.empty(rows.shape, self.dtype)
        self.backend.softmax_rows(rows, out)
        return out

    def backward_through_products(self, d_class, d_slot, sparse=False):
        """The gradients ``(x, W1, b1, W2, b2)`` from the activation gradients of both levels.

        ``d_class`` is ``(batch, n_classes)``; ``d_slot`` is ``(batch, n_classes, K)``
        (full mode) or ``(batch, K)`` (the target's class only). The results are new
        backend arrays shaped like the arguments; with ``sparse``, ``W2`` and ``b2``
        are ``(index, values)`` block lists of the touched classes instead.
        """
        backend, dtype = self.backend, self.dtype
        dx = backend.zeros(self.h.shape, dtype)
        db1 = backend.zeros(self.b1.shape, dtype)
        dW1 = _products.dot_grads(backend, dx, db1, d_class.reshape(self.batch, 1, self.n_classes),
                                  self.W1, self.h, self.first_block, self.first_block)
        d_slot = d_slot.reshape(self.batch, self.class_idx.shape[1], self.K)
        if sparse:
            (w_index, w_values), b_blocks = _products.dot_grads_blocks(
                backend, dx, d_slot, self.W2, self.h, self.first_block, self.class_idx)
            # W2 is one row of class blocks: its pairs (0, c) list the classes c.
            return (dx.reshape(self.batch, self.n_in), dW1.reshape(self.n_in, self.n_classes),
                    db1.reshape(self.n_classes), (w_index[:, 1:].copy(), w_values), b_blocks)
        db2 = backend.zeros(self.b2.shape, dtype)
        dW2 = _products.dot_grads(backend, dx, db2, d_slot, self.W2, self.h, self.first_block, self.class_idx)
        return (dx.reshape(self.batch, self.n_in), dW1.reshape(self.n_in, self.n_classes),
                db1.reshape(self.n_classes), dW2.reshape(self.n_classes, self.n_in, self.K), db2)
