"""The training loop under a wall-clock budget, the validation measures, and the model's use.

Each output layer trains for the same ``budget`` seconds of training steps (the
kernels' first calls and the validation passes are not counted), on the same
batches in the same order from the same initialisation, so the comparison is of
what each layer learns in the same time.
"""

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .corpus import UNK, balanced_classes
from .model import Adam, FeedForwardLM, to_host


@dataclass
class Config:
    """Everything a run depends on; the command-line options map onto these fields."""

    output_layers: tuple = ("hsoftmax", "full")
    device: str = "cpu"
    seed: int = 0
    budget: float = 40.0  # seconds of training steps per output layer
    epochs: int = None  # at most this many passes over the training windows (None: the budget decides)
    hidden: int = 128
    max_tokens: int = None
    corpus: str = "stdlib"  # "stdlib", "pydoc" or a path
    classes: str = "balanced"
    plot: str = None
    sample: int = 40
    completions: int = 3
    context: int = 4
    embedding: int = 64
    batch: int = 256
    lr: float = 3e-3
    min_count: int = 2
    eval_tokens: int = 5_000  # validation windows measured, spread over the whole split
    checkpoints: int = 4  # validation passes per budget, the last at its end
    progress_bar: bool = False  # redraw a bar on the terminal between checkpoints


@dataclass
class History:
    """What one output layer's run measured."""

    layer: str
    seconds: list = field(default_factory=list)  # training seconds at each checkpoint
    tokens: list = field(default_factory=list)  # training tokens processed by then
    train_ppl: list = field(default_factory=list)  # exp(mean loss of the batches since the last checkpoint)
    valid_ppl: list = field(default_factory=list)
    compile_seconds: float = 0.0
    top1: float = float("nan")  # next-token accuracy on the validation windows, at the end
    top5: float = float("nan")

    @property
    def train_tokens(self):
        return self.tokens[-1] if self.tokens else 0

    @property
    def train_seconds(self):
        return self.seconds[-1] if self.seconds else 0.0

    @property
    def tokens_per_second(self):
        return self.train_tokens / self.train_seconds if self.train_seconds else float("nan")


def windows(ids, context):
    """``(contexts, words)``: each position from ``context`` on, with the ``context`` words before it."""
    positions = np.arange(context, len(ids))
    contexts = np.stack([ids[positions - context + j] for j in range(context)], axis=1)
    return contexts, ids[positions]


def spread(contexts, words, n):
    """At most ``n`` of the windows, evenly spaced over the whole split (every file contributes)."""
    if len(words) <= n:
        return contexts, words
    rows = np.linspace(0, len(words) - 1, n).astype(np.intp)
    return contexts[rows], words[rows]


def eval_windows(corpus, cfg):
    """The validation windows every measure uses: at most ``cfg.eval_tokens``, spread over the split."""
    return spread(*windows(corpus.valid, cfg.context), cfg.eval_tokens)


def perplexity(model, xp, contexts, words, batch=1024):
    """``exp(mean NLL)`` of ``words`` after ``contexts``, in batches, summed in float64."""
    total = 0.0
    for start in range(0, len(words), batch):
        nll = model.nll(xp.asarray(contexts[start:start + batch]), xp.asarray(words[start:start + batch]))
        total += float(to_host(nll).astype(np.float64).sum())
    return math.exp(total / len(words))


def accuracy(model, xp, contexts, words, batch=1024):
    """``(top-1, top-5)``: the share of ``words`` that are the model's likeliest next word, or among its 5."""
    ranks = np.concatenate([model.ranks(xp.asarray(contexts[start:start + batch]),
                                        xp.asarray(words[start:start + batch]), 5)
                            for start in range(0, len(words), batch)])
    return float((ranks < 1).mean()), float((ranks < 5).mean())


def warm_up(layer, cfg, xp):
    """Seconds of the kernels' first calls (compile, or the disk cache's load), on a 10-word model."""
    start = time.perf_counter()
    counts = np.arange(10, 0, -1)
    model = FeedForwardLM(xp, counts, balanced_classes(10), output_layer=layer, context=cfg.context,
                          embedding=cfg.embedding, hidden=cfg.hidden, seed=cfg.seed)
    contexts, words = xp.asarray(np.zeros((2, cfg.context), np.intp)), xp.asarray(np.arange(2))
    Adam(model.all_params(), lr=cfg.lr).step(model.loss_and_grads(contexts, words)[1])
    model.nll(contexts, words)
    model.topk(contexts, 5)
    model.ranks(contexts, words, 5)
    model.sample(contexts, seed=0)
    return time.perf_counter() - start


class Progress:
    """A bar redrawn on the terminal at most every 0.2 s: the budget spent, tokens, tok/s, running loss."""

    def __init__(self, layer, budget, enabled, stream=sys.stdout):
        self.layer, self.budget, self.enabled, self.stream = layer, budget, enabled, stream
        self.drawn = 0.0

    def draw(self, fraction, seconds, tokens, loss):
        now = time.perf_counter()
        if not self.enabled or now - self.drawn < 0.2:
            return
        self.drawn = now
        filled = round(24 * min(fraction, 1.0))
        self.stream.write(f"\r  [{'#' * filled}{'.' * (24 - filled)}] {seconds:5.1f}/{self.budget:g} s  "
                          f"{tokens:,} tok  {tokens / max(seconds, 1e-9):,.0f} tok/s  loss {loss:.3f}\x1b[K")
        self.stream.flush()

    def clear(self):
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def train(corpus, layer, cfg, xp, out=print):
    """Train one model with output layer ``layer`` for ``cfg.budget`` seconds; return ``(model, History)``."""
    history = History(layer)
    history.compile_seconds = warm_up(layer, cfg, xp)
    out(f"  first calls (kernel compile or cache load): {history.compile_seconds:.1f} s")
    model = FeedForwardLM(xp, corpus.vocab.counts, corpus.classes, output_layer=layer,
                          context=cfg.context, embedding=cfg.embedding, hidden=cfg.hidden,
                          seed=cfg.seed)
    optimizer = Adam(model.all_params(), lr=cfg.lr)
    train_x, train_y = windows(corpus.train, cfg.context)
    valid_x, valid_y = eval_windows(corpus, cfg)

    rng = np.random.default_rng(cfg.seed)  # the same batches for every output layer
    n_batches = math.ceil(len(train_y) / cfg.batch)
    max_steps = cfg.epochs * n_batches if cfg.epochs else math.inf
    bar = Progress(layer, cfg.budget, cfg.progress_bar)
    seconds, tokens, steps = 0.0, 0, 0
    loss_sum, loss_tokens = 0.0, 0
    checkpoint = 1
    while True:
        if steps % n_batches == 0:
            order = rng.permutation(len(train_y))
        rows = order[(steps % n_batches) * cfg.batch:(steps % n_batches + 1) * cfg.batch]
        start = time.perf_counter()
        loss, grads = model.loss_and_grads(xp.asarray(train_x[rows]), xp.asarray(train_y[rows]))
        optimizer.step(grads)
        loss = float(loss)  # waits for the step on a GPU
        seconds += time.perf_counter() - start
        steps, tokens = steps + 1, tokens + len(rows)
        loss_sum, loss_tokens = loss_sum + loss * len(rows), loss_tokens + len(rows)
        fraction = max(seconds / cfg.budget, steps / max_steps)
        bar.draw(fraction, seconds, tokens, loss_sum / loss_tokens)
        if fraction >= checkpoint / cfg.checkpoints or fraction >= 1:
            bar.clear()
            history.seconds.append(seconds)
            history.tokens.append(tokens)
            history.train_ppl.append(math.exp(loss_sum / loss_tokens))
            history.valid_ppl.append(perplexity(model, xp, valid_x, valid_y))
            out(f"  {seconds:5.1f} s  {tokens:10,} tokens  {tokens / seconds:8,.0f} tok/s  "
                f"loss {loss_sum / loss_tokens:.3f}  train ppl {history.train_ppl[-1]:8.1f}  "
                f"valid ppl {history.valid_ppl[-1]:8.1f}")
            loss_sum, loss_tokens = 0.0, 0
            checkpoint = math.floor(fraction * cfg.checkpoints) + 1
            if fraction >= 1:
                break
    history.top1, history.top5 = accuracy(model, xp, valid_x, valid_y)
    return model, history


def generate(model, corpus, n, xp, seed):
    """``n`` word ids drawn one at a time from the model, after the first validation context."""
    ids = list(corpus.valid[:model.context])
    for i in range(n):
        context = xp.asarray(np.array([ids[-model.context:]], dtype=np.intp))
        ids.append(int(model.sample(context, seed=seed + i)[0]))
    return ids[model.context:]


def completion_points(corpus, n, context, look=2000):
    """``n`` validation positions spread over the split, each moved to the next one that reads well.

    A position reads well when its context holds no ``<unk>`` and, in code, follows
    ``.`` or ``(`` (an attribute or an argument to complete), as an editor would ask.
    """
    valid, index = corpus.valid, corpus.vocab.index
    unk, triggers = index[UNK], {index[t] for t in (".", "(") if t in index} if corpus.is_code else None
    points = []
    for p in np.linspace(context, len(valid) - 1, n + 2).astype(np.intp)[1:-1]:
        for q in range(p, min(p + look, len(valid))):
            if unk not in valid[q - context:q] and (triggers is None or valid[q - 1] in triggers):
                p = q
                break
        points.append(p)
    return points


def completions(model, corpus, n, xp, k=5, shown=12):
    """``[(preceding ids, [(word id, probability)] * k)]`` at ``n`` validation positions (:func:`completion_points`).

    The model sees the last ``context`` of the ``shown`` preceding tokens.
    """
    valid = corpus.valid
    points = completion_points(corpus, n, model.context)
    contexts = np.stack([valid[p - model.context:p] for p in points])
    best, log_probs = model.topk(xp.asarray(contexts), k)
    return [(valid[max(0, p - shown):p].tolist(), list(zip(b.tolist(), np.exp(lp).tolist())))
            for p, b, lp in zip(points, best, log_probs)]
