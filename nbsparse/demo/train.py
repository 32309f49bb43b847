"""The training loop: minibatch Adam, progress lines, per-epoch perplexities, sampling."""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .model import Adam, FeedForwardLM


@dataclass
class Config:
    """Everything a run depends on; the command-line options map onto these fields."""

    output_layers: tuple = ("hsoftmax", "full")
    device: str = "cpu"
    seed: int = 0
    epochs: int = 4
    hidden: int = 128
    max_tokens: int = None
    corpus: str = None  # None: pydoc_data.topics
    plot: str = None
    sample: int = 30
    context: int = 4
    embedding: int = 64
    batch: int = 256
    lr: float = 3e-3
    min_count: int = 3
    progress_lines: int = 4  # per epoch


@dataclass
class History:
    """What one output layer's run measured."""

    layer: str
    interval_loss: list = field(default_factory=list)  # running mean NLL per progress line
    train_ppl: list = field(default_factory=list)  # per epoch
    valid_ppl: list = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def tokens_per_second(self):
        return self.train_tokens / self.train_seconds if self.train_seconds else float("nan")


def windows(ids, context):
    """``(contexts, words)``: each position from ``context`` on, with the ``context`` words before it."""
    positions = np.arange(context, len(ids))
    contexts = np.stack([ids[positions - context + j] for j in range(context)], axis=1)
    return contexts, ids[positions]


def to_host(a):
    """A NumPy array from a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def perplexity(model, xp, contexts, words, batch=1024):
    """``exp(mean NLL)`` of ``words`` after ``contexts``, in batches, summed in float64."""
    total = 0.0
    for start in range(0, len(words), batch):
        nll = model.nll(xp.asarray(contexts[start:start + batch]), xp.asarray(words[start:start + batch]))
        total += float(to_host(nll).astype(np.float64).sum())
    return math.exp(total / len(words))


def train(corpus, layer, cfg, xp, out=print):
    """Train one model with output layer ``layer``; return ``(model, History)``."""
    history = History(layer)
    model = FeedForwardLM(xp, corpus.vocab.counts, corpus.classes, output_layer=layer,
                          context=cfg.context, embedding=cfg.embedding, hidden=cfg.hidden,
                          seed=cfg.seed)
    optimizer = Adam(xp, model.all_params(), lr=cfg.lr)
    train_x, train_y = windows(corpus.train, cfg.context)
    valid_x, valid_y = windows(corpus.valid, cfg.context)

    start = time.perf_counter()  # the first calls compile nbsparse's kernels (cached on disk)
    model.loss_and_grads(xp.asarray(train_x[:2]), xp.asarray(train_y[:2]))
    model.nll(xp.asarray(valid_x[:2]), xp.asarray(valid_y[:2]))
    history.compile_seconds = time.perf_counter() - start
    out(f"  first calls (kernel compile or cache load): {history.compile_seconds:.1f} s")

    rng = np.random.default_rng(cfg.seed)  # the same batches for every output layer
    n_batches = math.ceil(len(train_y) / cfg.batch)
    every = max(1, math.ceil(n_batches / cfg.progress_lines))
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(len(train_y))
        epoch_loss, interval_loss, interval_tokens = 0.0, 0.0, 0
        interval_start = epoch_start = time.perf_counter()
        for b in range(n_batches):
            rows = order[b * cfg.batch:(b + 1) * cfg.batch]
            loss, grads = model.loss_and_grads(xp.asarray(train_x[rows]), xp.asarray(train_y[rows]))
            optimizer.step(grads)
            loss = float(loss) * len(rows)
            epoch_loss += loss
            interval_loss += loss
            interval_tokens += len(rows)
            if (b + 1) % every == 0 or b + 1 == n_batches:
                now = time.perf_counter()
                history.interval_loss.append(interval_loss / interval_tokens)
                out(f"  epoch {epoch} [{100 * (b + 1) // n_batches:3d}%]  "
                    f"loss {history.interval_loss[-1]:.3f}  "
                    f"{interval_tokens / (now - interval_start):8,.0f} tok/s")
                interval_loss, interval_tokens, interval_start = 0.0, 0, now
        seconds = time.perf_counter() - epoch_start
        history.train_seconds += seconds
        history.train_tokens += len(train_y)
        history.train_ppl.append(math.exp(epoch_loss / len(train_y)))
        history.valid_ppl.append(perplexity(model, xp, valid_x, valid_y))
        out(f"  epoch {epoch}: train ppl {history.train_ppl[-1]:7.1f}  "
            f"valid ppl {history.valid_ppl[-1]:7.1f}  ({seconds:.1f} s, "
            f"{len(train_y) / seconds:,.0f} tok/s)")
    return model, history


def sample(model, corpus, n, xp, seed):
    """``n`` words drawn one at a time from the model, starting after the first validation words.

    Each draw uses the whole next-word distribution: for an h_softmax model that is
    h_softmax's full mode (every class times every slot), dead slots exactly 0.
    """
    rng = np.random.default_rng(seed)
    ids = list(corpus.valid[:model.context])
    words = []
    for _ in range(n):
        p = to_host(model.probs(xp.asarray(np.array([ids[-model.context:]]))))[0]
        p = p.astype(np.float64)
        word = int(rng.choice(len(p), p=p / p.sum()))  # the sum is 1 up to float32 rounding
        ids.append(word)
        words.append(corpus.vocab.words[word])
    return words


def plot(histories, unigram, path):
    """Write the learning curves (perplexity per epoch) of every run to the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for h in histories:
        epochs = range(1, len(h.valid_ppl) + 1)
        line, = ax.plot(epochs, h.valid_ppl, marker="o", label=f"{h.layer} valid")
        ax.plot(epochs, h.train_ppl, ls="--", color=line.get_color(), label=f"{h.layer} train")
    ax.axhline(unigram, color="gray", ls=":", label="unigram valid")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("perplexity")
    ax.set_ylim(0, None)
    ax.legend()
    ax.set_title("nbsparse demo: feed-forward LM")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
