"""The demo's data: an English corpus, its tokens, the vocabulary and the word classes.

The default corpus ships with Python itself: ``pydoc_data.topics``, the text that
``help("topics")`` shows (the Python documentation's prose on the language, about
100,000 tokens, under the Python Software Foundation License). ``--corpus PATH``
reads any UTF-8 text file instead.
"""

import math
import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

UNK = "<unk>"

# Lowercased words (apostrophes inside, e.g. "don't"), numbers, and punctuation. A run
# of one repeated punctuation character is one token, cut to 3 characters: the corpus
# underlines its headings with "-----" and "*****", and ">>>" and "..." are prompts.
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+|([^\w\s]|_)\1*")


def tokenize(text):
    """The list of tokens of ``text``: lowercase words, numbers and punctuation.

    >>> tokenize("Don't panic -- it's >>> 42!!")
    ["don't", 'panic', '--', "it's", '>>>', '42', '!!']
    """
    return [m.group(0)[:3] if m.group(1) else m.group(0) for m in _TOKEN.finditer(text.lower())]


def default_text():
    """``(text, description)`` of the corpus that ships with Python: ``pydoc_data.topics``."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))  # sorted: the same order everywhere
    version = ".".join(map(str, sys.version_info[:3]))
    return text, f"pydoc_data.topics (Python {version} documentation topics)"


def read_text(path):
    """``(text, description)`` of a UTF-8 file."""
    with open(path, encoding="utf-8") as f:
        return f.read(), str(path)


def split(tokens, pieces=20, every=10):
    """``(train, valid)``: the stream cut into ``pieces`` equal parts, every ``every``-th to valid.

    Interleaved parts, not the tail, so that validation text comes from all over the
    corpus (pydoc topics are sorted by name: the tail is about a few statements only).
    Deterministic: no randomness involved.
    """
    bounds = np.linspace(0, len(tokens), pieces + 1).astype(int)
    train, valid = [], []
    for i in range(pieces):
        (valid if i % every == every - 1 else train).extend(tokens[bounds[i]:bounds[i + 1]])
    return train, valid


@dataclass
class Vocabulary:
    """Words by decreasing training count (ties alphabetical), ``<unk>`` among them by its count."""

    words: list
    counts: np.ndarray  # training count of each word; <unk>'s is that of every rare word

    @classmethod
    def build(cls, train_tokens, min_count):
        counts = Counter(train_tokens)
        kept = {w: n for w, n in counts.items() if n >= min_count}
        # At least 1: validation text may hold words that training text does not.
        kept[UNK] = max(1, kept.get(UNK, 0) + sum(n for n in counts.values() if n < min_count))
        words = sorted(kept, key=lambda w: (-kept[w], w))
        return cls(words, np.array([kept[w] for w in words], dtype=np.int64))

    def __len__(self):
        return len(self.words)

    @property
    def index(self):
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, tokens):
        """Token ids (``intp``), rare and unseen words as ``<unk>``."""
        index = self.index
        unk = index[UNK]
        return np.array([index.get(t, unk) for t in tokens], dtype=np.intp)


@dataclass
class Classes:
    """The two-level layout of h_softmax: word ``w`` is output ``cls[w] * K + slot[w]``.

    Slots of a class beyond its words are dead: the model pins their bias to -inf.
    """

    cls: np.ndarray  # (V,) class of each word
    slot: np.ndarray  # (V,) position of each word in its class
    n_classes: int
    K: int  # slots per class: n_outputs_per_class

    @property
    def output(self):
        """``(V,)`` the h_softmax output index of each word."""
        return self.cls * self.K + self.slot

    @property
    def sizes(self):
        return np.bincount(self.cls, minlength=self.n_classes)


def frequency_classes(counts, n_classes=None, cap=2.0):
    """Frequency binning: classes of about equal unigram mass, at most ``K`` words each.

    ``counts`` is sorted by decreasing count (a :class:`Vocabulary`'s). Words are
    taken in that order and a class is closed when it holds ``1 / n_classes`` of
    the mass (Mikolov et al., "Extensions of recurrent neural network language
    model", 2011), so the most frequent words get a class of their own and rare
    words share one. ``n_classes`` defaults to ``round(sqrt(V))``.

    h_softmax gives every class the same ``K`` slots, so a class is also closed at
    ``K = ceil(cap * V / n_classes)`` words: plain equal-mass binning would put the
    rare-word tail into a few classes of hundreds of words, and ``K`` (the cost of
    each row's second softmax) would be that size. The cap splits the tail into
    more classes instead, so there may be somewhat more than ``n_classes``.
    """
    V = len(counts)
    n_classes = n_classes or max(1, round(math.sqrt(V)))
    K = math.ceil(cap * V / n_classes)
    share = counts.sum() / n_classes
    cls = np.empty(V, dtype=np.intp)
    slot = np.empty(V, dtype=np.intp)
    c, size, mass = 0, 0, 0.0
    for w, n in enumerate(counts):
        # Close the class when it is full, or when this word would take it past its
        # share by more than half the word's own count (so it rounds to the nearer side).
        if size and (size == K or mass + n / 2 > share):
            c, size, mass = c + 1, 0, 0.0
        cls[w], slot[w] = c, size
        size, mass = size + 1, mass + n
    return Classes(cls, slot, c + 1, K)


@dataclass
class Corpus:
    """Everything the training loop needs from the text."""

    description: str
    vocab: Vocabulary
    classes: Classes
    train: np.ndarray  # token ids
    valid: np.ndarray
    n_tokens: int  # before the split

    @classmethod
    def load(cls, path=None, max_tokens=None, min_count=3):
        text, description = default_text() if path is None else read_text(path)
        tokens = tokenize(text)
        if max_tokens:
            tokens = tokens[:max_tokens]
        train, valid = split(tokens)
        if not train or not valid:
            raise ValueError(f"{description}: {len(tokens)} tokens are too few to split "
                             "into training and validation text")
        vocab = Vocabulary.build(train, min_count)
        return cls(description, vocab, frequency_classes(vocab.counts),
                   vocab.encode(train), vocab.encode(valid), len(tokens))

    def unigram_perplexity(self, ids):
        """Perplexity of the training unigram distribution on ``ids``."""
        logp = np.log(self.vocab.counts / self.vocab.counts.sum())
        return float(np.exp(-logp[ids].mean()))
