"""A fixed-context feed-forward language model (Bengio et al., 2003) in plain NumPy.

``P(w_t | w_{t-n} .. w_{t-1})``: the ``n`` context words' embeddings are
concatenated, pass one ``tanh`` layer, and an output layer gives the distribution
over the vocabulary. Two output layers with one interface:

- :class:`HSoftmaxOutput`: nbsparse's two-level ``h_softmax``, trained with the
  fused loss ``h_softmax_nll`` / ``h_softmax_nll_grad(..., sparse=True)``; each row
  touches ``n_classes + K`` output units instead of ``V``, and a step's ``W2``/``b2``
  gradient and Adam update cover only the classes of the batch's targets.
- :class:`FullSoftmaxOutput`: a ``(hidden, V)`` matmul and nbsparse's ``softmax``,
  whose every weight has a gradient at every step.

Both share the rest of the network, whose embedding gradient is sparse too: a
:class:`~nbsparse.BlockGrad` of the rows of the batch's context words, so a
step's cost does not grow with ``V`` except through a full output layer.
Parameters move by ``nbsparse.optim.adam`` (lazy on the blocks of a ``BlockGrad``).

Every array operation goes through ``xp`` (NumPy, or CuPy for ``--device cuda``),
so the same code runs on either; nbsparse picks its CPU or CUDA kernels from the
array kind. There is no autograd: each layer's backward pass is written out.
"""

import math

import numpy as np

import nbsparse as nbs
from nbsparse import optim


def to_host(a):
    """A NumPy array from a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def scatter_add(xp, out, index, values):
    """``out[index[i]] += values[i]``, repeated indices accumulating (embedding gradients)."""
    if xp is np:
        np.add.at(out, index, values)
    else:  # CuPy: ``cupyx.scatter_add`` is its ``add.at``
        import cupyx

        cupyx.scatter_add(out, index, values)


def unigram_log_probs(counts):
    """``log(counts / sum(counts))`` in float64 (every count is at least 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log(counts / counts.sum())


class HSoftmaxOutput:
    """The hierarchical-softmax output layer: word ``w`` is output ``cls[w] * K + slot[w]``.

    The weights start at zero and the biases at the unigram log-probabilities
    (``b1``: each class's mass, ``b2``: each word's share of its class), so the
    untrained model is the unigram model. Slots that hold no word have bias
    ``-inf``: their probability is exactly 0, so each class's softmax is over its
    words only; their gradient is exactly 0 too, so training never moves them.
    """

    name = "hsoftmax"

    def __init__(self, xp, hidden, counts, classes, dtype):
        self.xp, self.classes = xp, classes
        C, K = classes.n_classes, classes.K
        self.n_outputs = C * K
        logp = unigram_log_probs(counts)
        class_mass = np.bincount(classes.cls, weights=np.exp(logp), minlength=C)
        b2 = np.full((C, K), -np.inf)
        b2[classes.cls, classes.slot] = logp - np.log(class_mass[classes.cls])
        self.params = {
            "W1": xp.zeros((hidden, C), dtype),
            "b1": xp.asarray(np.log(class_mass).astype(dtype)),
            "W2": xp.zeros((C, hidden, K), dtype),
            "b2": xp.asarray(b2.astype(dtype)),
        }
        self.output_of_word = xp.asarray(classes.output)
        self.n_words = len(counts)
        self.word_of_output = np.zeros(self.n_outputs, dtype=np.intp)  # dead slots: never drawn
        self.word_of_output[classes.output] = np.arange(len(counts))

    def _args(self, h):
        p, c = self.params, self.classes
        return (h, h.shape[0], self.n_outputs, c.n_classes, c.K, p["W1"], p["b1"], p["W2"], p["b2"])

    def nll(self, h, words):
        """Per-row ``-log P(words | h)``."""
        return nbs.h_softmax_nll(*self._args(h), self.output_of_word[words])

    def loss_and_grads(self, h, words):
        """``(mean NLL, d mean / d h, {parameter name: gradient})``."""
        xp = self.xp
        target = self.output_of_word[words]
        nll = nbs.h_softmax_nll(*self._args(h), target)
        g = xp.full(h.shape[0], 1.0 / h.shape[0], dtype=h.dtype)
        grads = nbs.h_softmax_nll_grad(g, *self._args(h), target, sparse=True)  # W2, b2: BlockGrads
        return nll.mean(), grads.x, {"W1": grads.W1, "b1": grads.b1, "W2": grads.W2, "b2": grads.b2}

    def probs(self, h):
        """``(rows, V)`` word probabilities, from h_softmax's full mode."""
        return nbs.h_softmax(*self._args(h))[:, self.output_of_word]

    def topk(self, h, k):
        """``(words, log_probs)``, NumPy ``(rows, k)``: each row's ``k`` likeliest words, by ``h_softmax_topk``."""
        k = min(k, self.n_words)  # a vocabulary of fewer than k words
        best = nbs.h_softmax_topk(*self._args(h), k)  # on the model's device
        return self.word_of_output[to_host(best.indices)], to_host(best.log_probs)

    def ranks(self, h, words, k):
        """NumPy ``(rows,)``: each word's place among the row's ``k`` likeliest (0: the first), else ``k``."""
        best, _ = self.topk(h, k)
        hit = best == to_host(words)[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), k)

    def sample(self, h, seed):
        """NumPy ``(rows,)``: one word per row drawn by ``h_softmax_sample`` (a class, then a slot)."""
        return self.word_of_output[to_host(nbs.h_softmax_sample(*self._args(h), seed=seed))]


class FullSoftmaxOutput:
    """The flat output layer: ``softmax(h @ W + b)`` over the ``V`` words.

    Starts as :class:`HSoftmaxOutput` does: zero weights, unigram log-probability biases.
    """

    name = "full"

    def __init__(self, xp, hidden, counts, classes, dtype):
        self.xp = xp
        self.params = {
            "W": xp.zeros((hidden, len(counts)), dtype),
            "b": xp.asarray(unigram_log_probs(counts).astype(dtype)),
        }

    def _probs(self, h):
        return nbs.softmax(h @ self.params["W"] + self.params["b"])

    def _target_nll(self, p, words):
        rows = self.xp.arange(p.shape[0])
        # -log of the softmax output: finite while every target's probability is above
        # float32's smallest normal (1e-38, an NLL of 87); this model stays far from it.
        return -self.xp.log(self.xp.maximum(p[rows, words], np.finfo(p.dtype).tiny))

    def nll(self, h, words):
        return self._target_nll(self._probs(h), words)

    def loss_and_grads(self, h, words):
        xp = self.xp
        p = self._probs(h)
        nll = self._target_nll(p, words)
        # d mean(-log softmax(a)[t]) / d a = (softmax(a) - onehot(t)) / rows
        d = p
        d[xp.arange(h.shape[0]), words] -= 1.0
        d /= h.shape[0]
        grads = {"W": h.T @ d, "b": d.sum(axis=0)}
        return nll.mean(), d @ self.params["W"].T, grads

    def probs(self, h):
        return self._probs(h)

    def topk(self, h, k):
        """``(words, log_probs)``, NumPy ``(rows, k)``: each row's ``k`` likeliest words, from the full softmax."""
        p = to_host(self._probs(h))
        k = min(k, p.shape[1])  # a vocabulary of fewer than k words
        top = np.argpartition(-p, k - 1, axis=1)[:, :k]
        rows = np.arange(len(p))[:, None]
        top = top[rows, np.argsort(-p[rows, top], axis=1, kind="stable")]
        return top, np.log(p[rows, top])

    def ranks(self, h, words, k):
        """NumPy ``(rows,)``: how many words score above each row's word (0: it is the likeliest), at most ``k``.

        One comparison pass over the logits, cheaper than a top-k selection over ``V``.
        """
        logits = h @ self.params["W"] + self.params["b"]
        above = (logits > logits[self.xp.arange(h.shape[0]), words][:, None]).sum(axis=1)
        return np.minimum(to_host(above), k)

    def sample(self, h, seed):
        """NumPy ``(rows,)``: one word per row drawn from the full softmax (inverse CDF in float64)."""
        p = to_host(self._probs(h)).astype(np.float64)
        u = np.random.default_rng(seed).random(len(p))
        cdf = np.cumsum(p, axis=1)
        return np.minimum((cdf < (u * cdf[:, -1])[:, None]).sum(axis=1), p.shape[1] - 1)


OUTPUT_LAYERS = {"hsoftmax": HSoftmaxOutput, "full": FullSoftmaxOutput}


class FeedForwardLM:
    """Embeddings of ``context`` words, concatenated, ``tanh`` hidden layer, an output layer."""

    def __init__(self, xp, vocab_counts, classes, *, output_layer="hsoftmax", context=4,
                 embedding=64, hidden=128, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        V, fan_in = len(vocab_counts), context * embedding
        self.xp, self.context = xp, context
        self.params = {
            "E": xp.asarray((0.1 * rng.standard_normal((V, embedding))).astype(dtype)),
            "Wh": xp.asarray((rng.standard_normal((fan_in, hidden)) / math.sqrt(fan_in))
                             .astype(dtype)),
            "bh": xp.zeros(hidden, dtype),
        }
        self.output = OUTPUT_LAYERS[output_layer](xp, hidden, vocab_counts, classes, dtype)

    def all_params(self):
        """Every trainable array by name, the output layer's included."""
        return {**self.params, **{f"out.{k}": v for k, v in self.output.params.items()}}

    def _hidden(self, contexts):
        e = self.params["E"][contexts].reshape(contexts.shape[0], -1)
        return e, self.xp.tanh(e @ self.params["Wh"] + self.params["bh"])

    def nll(self, contexts, words):
        """Per-row NLL of ``words`` after ``contexts`` (``(rows, context)`` word ids)."""
        return self.output.nll(self._hidden(contexts)[1], words)

    def loss_and_grads(self, contexts, words):
        """``(mean NLL, {name: gradient})`` for one minibatch, names as in :meth:`all_params`."""
        e, h = self._hidden(contexts)
        loss, dh, out_grads = self.output.loss_and_grads(h, words)
        dz = dh * (1.0 - h * h)  # tanh' = 1 - tanh^2
        de = dz @ self.params["Wh"].T  # (rows, context * embedding): each context word's row gradient
        grads = {"E": self._embedding_grad(contexts, de), "Wh": e.T @ dz, "bh": dz.sum(axis=0)}
        grads.update({f"out.{k}": v for k, v in out_grads.items()})
        return loss, grads

    def _embedding_grad(self, contexts, de):
        """The rows of ``E`` that the batch's context words use, as a :class:`~nbsparse.BlockGrad`.

        A word that occurs several times in the batch gets the sum of its gradients; the
        other ``V - rows`` rows are not listed (their gradient is zero), so neither this
        nor Adam's step touches them.
        """
        xp, ids, rows = self.xp, contexts.ravel(), de.reshape(contexts.size, -1)
        if xp is np:  # sorted runs summed by reduceat: about 5x faster than unique + add.at here
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            words, values = ids[starts], np.add.reduceat(rows[order], starts, axis=0)
        else:
            words, where = xp.unique(ids, return_inverse=True)  # sorted: BlockGrad's order
            values = xp.zeros((len(words), rows.shape[1]), rows.dtype)
            scatter_add(xp, values, where.ravel(), rows)
        return nbs.BlockGrad(words.reshape(-1, 1).astype(np.intp), values)

    def probs(self, contexts):
        """``(rows, V)`` next-word probabilities."""
        return self.output.probs(self._hidden(contexts)[1])

    def topk(self, contexts, k):
        """``(words, log_probs)``, NumPy ``(rows, k)``: the ``k`` likeliest next words, likeliest first."""
        return self.output.topk(self._hidden(contexts)[1], k)

    def ranks(self, contexts, words, k):
        """NumPy ``(rows,)``: the rank of each next word among the model's predictions (0: its first), at most ``k``."""
        return self.output.ranks(self._hidden(contexts)[1], words, k)

    def sample(self, contexts, seed):
        """NumPy ``(rows,)``: a next word per row, drawn from the model."""
        return self.output.sample(self._hidden(contexts)[1], seed)


class Adam:
    """Adam (Kingma & Ba, 2015) on a dict of arrays, in place, by ``nbsparse.optim.adam``.

    A dense gradient moves every element; a :class:`~nbsparse.BlockGrad` moves only
    its blocks and leaves the other blocks' moments as they are (lazy Adam). An
    element whose gradient is exactly zero does not move (its moments stay 0), so
    h_softmax's dead slots keep their ``-inf`` bias.
    """

    def __init__(self, params, lr=3e-3):
        self.params, self.lr = params, lr
        self.states = {k: optim.AdamState.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        for k, g in grads.items():
            optim.adam(self.params[k], g, self.states[k], lr=self.lr)
