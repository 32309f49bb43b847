"""``python -m nbsparse demo``: train a next-token language model whose output layer is h_softmax, then use it.

A fixed-context feed-forward language model (Bengio et al., 2003), not an Elman
RNN: both need the same output layer, which is what this demo is about, but the
feed-forward model trains on minibatches of independent windows (a handful of
matrix products and nbsparse calls per step, shuffled batches, nothing carried
between them), while an RNN's truncated back-propagation through time is a
Python loop over time steps, each a few small products and nbsparse calls, with
the per-call overhead paid once per time step instead of once per batch. The
default run must finish in under three minutes on two cores, and the feed-forward
model's forward and backward passes are short enough to read in one sitting.

Modules: ``sources`` (the corpora: the standard library's source by ``tokenize``,
the documentation topics, a file), ``corpus`` (tokens, split, vocabulary, word
classes), ``model`` (the network, both output layers, sparse gradients, Adam
through ``nbsparse.optim``), ``train`` (the budgeted loop, perplexity and
accuracy, completions and sampling), ``report`` (the printed tables, code
rendering, the plot), ``cli`` (options, checks, the run).
"""

from .cli import add_arguments, run
from .train import Config

__all__ = ["Config", "add_arguments", "run"]
