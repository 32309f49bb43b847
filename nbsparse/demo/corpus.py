"""The demo's data: the tokens, the train/valid split, the vocabulary and the word classes.

The corpora themselves (the standard library's source, the documentation topics,
a file) are read by :mod:`nbsparse.demo.sources`; text that is not Python source
is cut into words by :func:`tokenize`.
"""

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from . import sources

UNK = "<unk>"
# The fewest validation tokens (a twentieth of the corpus) that give the model some
# windows of context + 1 tokens to be measured on.
MIN_WINDOWS = 10
MIN_TOKENS = 10 * MIN_WINDOWS

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


def balanced_classes(V):
    """Classes of equal size: the words by decreasing count, dealt in bands of ``K`` to classes.

    ``n_classes = ceil(sqrt(V))`` and ``K = ceil(V / n_classes)``: class 0 holds the
    ``K`` most frequent words, class 1 the next ``K``, and so on; only the last class
    may be short, so ``n_classes * K - V < n_classes`` (within ``1 / sqrt(V)`` of ``V``).
    Each row's cost is ``n_classes + K`` (about ``2 sqrt(V)``) output units, and
    ``W2`` holds ``n_classes * K`` slots. Against :func:`frequency_classes` (classes of
    equal mass, padded to the largest) the class level carries less of the
    prediction: the frequent words crowd into the first classes, whose slot softmax
    then does the work.

    >>> c = balanced_classes(10)
    >>> c.n_classes, c.K, c.cls.tolist(), c.slot.tolist()
    (4, 3, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    """
    n_classes = max(1, math.ceil(math.sqrt(V)))
    K = math.ceil(V / n_classes)
    words = np.arange(V)
    return Classes(words // K, words % K, math.ceil(V / K), K)


CLASS_SCHEMES = {"balanced": lambda counts: balanced_classes(len(counts)), "frequency": frequency_classes}


@dataclass
class Corpus:
    """Everything the training loop needs from the text."""

    description: str
    vocab: Vocabulary
    classes: Classes
    train: np.ndarray  # token ids
    valid: np.ndarray
    n_tokens: int  # before the split
    is_code: bool = False  # Python tokens (the standard library's source): printed as code
    note: str = None  # why the corpus is not the one asked for, if it is not

    @classmethod
    def load(cls, source=sources.STDLIB, max_tokens=None, min_count=2, classes="balanced", stdlib_root=None):
        """The corpus ``source``: ``"stdlib"``, ``"pydoc"`` or the path of a UTF-8 text file.

        ``"stdlib"`` falls back to ``"pydoc"``, with a :attr:`note` saying why, where the
        standard library's source is not installed. Raises ``OSError`` or
        ``UnicodeDecodeError`` for an unreadable file, ``ValueError`` for a text too short
        to train on.
        """
        note, is_code = None, False
        if source == sources.STDLIB:
            try:
                tokens, description = sources.stdlib_tokens(stdlib_root, max_tokens)
                is_code = True
            except sources.SourceMissing as e:
                note = f"{e}; the documentation topics instead (a vocabulary of about 2,000 words)"
                source = sources.PYDOC
        if not is_code:
            text, description = sources.pydoc_text() if source == sources.PYDOC else sources.file_text(source)
            tokens = tokenize(text)
        if max_tokens:
            tokens = tokens[:max_tokens]
        train, valid = split(tokens)
        if len(train) < 2 * MIN_WINDOWS or len(valid) < MIN_WINDOWS:
            raise ValueError(f"{description}: {len(tokens):,} tokens are too few to split into training "
                             f"and validation text (at least {MIN_TOKENS} needed)")
        vocab = Vocabulary.build(train, min_count)
        return cls(description, vocab, CLASS_SCHEMES[classes](vocab.counts), vocab.encode(train),
                   vocab.encode(valid), len(tokens), is_code, note)

    def unigram_perplexity(self, ids):
        """Perplexity of the training unigram distribution on ``ids``."""
        logp = np.log(self.vocab.counts / self.vocab.counts.sum())
        return float(np.exp(-logp[ids].mean()))
