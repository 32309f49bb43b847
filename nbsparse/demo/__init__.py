"""``python -m nbsparse demo``: train a word-level language model whose output layer is h_softmax.

A fixed-context feed-forward language model (Bengio et al., 2003), not an Elman
RNN: both need the same output layer, which is what this demo is about, but the
feed-forward model trains on minibatches of independent windows (a handful of
matrix products and nbsparse calls per step, shuffled batches, nothing carried
between them), while an RNN's truncated back-propagation through time is a
Python loop over time steps, each a few small products and nbsparse calls, with
the per-call overhead paid once per time step instead of once per batch. The
default run must finish in under two minutes on two cores, and the feed-forward
model's forward and backward passes are short enough to read in one sitting.

Modules: ``corpus`` (text, tokens, vocabulary, word classes), ``model`` (the
network, both output layers, Adam), ``train`` (the loop, perplexities, sampling,
the plot), ``cli`` (options, checks, the printed report).
"""

from .cli import add_arguments, run
from .train import Config

__all__ = ["Config", "add_arguments", "run"]
