"""``python -m nbsparse demo``: train a word-level language model whose output layer is h_softmax.

A fixed-context feed-forward language model (Bengio et al., 2003), not an Elman
RNN: both need the same output layer, which is what this demo is about, but the
feed-forward model trains on minibatches of independent windows, a few large
matrix products per step, while an RNN's truncated back-propagation through time
is a Python loop of small products per time step. In plain NumPy on two cores
that is several times fewer tokens per second for the RNN, and the default run
must finish in under two minutes.

Modules: ``corpus`` (text, tokens, vocabulary, word classes), ``model`` (the
network, both output layers, Adam), ``train`` (the loop, perplexities, sampling,
the plot), ``cli`` (options, checks, the printed report).
"""

from .cli import add_arguments, run
from .train import Config

__all__ = ["Config", "add_arguments", "run"]
