"""The ``demo`` command: options, the checks that come before any work, the printed report."""

import contextlib
import importlib.util
import sys
import time
from dataclasses import dataclass

import numpy as np

from .corpus import UNK, Corpus
from .train import Config, plot, sample, train

EXIT_UNAVAILABLE = 2  # like argparse's usage errors: the run cannot start as asked


class Unavailable(Exception):
    """A requested option cannot work here (no GPU, no matplotlib, unreadable corpus)."""


def add_arguments(parser):
    """The demo's options, on an ``argparse`` (sub)parser."""
    d = Config()
    parser.add_argument("--output-layer", choices=["hsoftmax", "full", "both"], default="both",
                        help="hsoftmax: nbsparse's h_softmax trained with h_softmax_nll; full: "
                             "a NumPy matmul and nbsparse's softmax; both: the same model with "
                             "each, to compare (default: both)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=d.device,
                        help="cuda: CuPy arrays and nbsparse's CUDA kernels (needs a GPU, CuPy "
                             "and numba-cuda: pip install 'nbsparse[cu12]')")
    parser.add_argument("--seed", type=int, default=d.seed, help="initialisation, batch order "
                        "and sampling (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="(default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=d.hidden,
                        help="tanh hidden units (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens, metavar="N",
                        help="use only the first N tokens of the corpus (default: all)")
    parser.add_argument("--corpus", metavar="PATH", default=d.corpus,
                        help="a UTF-8 text file (default: the Python documentation topics that "
                             "ship with Python, pydoc_data.topics)")
    parser.add_argument("--plot", metavar="PATH", default=d.plot,
                        help="write the learning curves to a PNG (needs matplotlib: "
                             "pip install 'nbsparse[plot]')")
    parser.add_argument("--sample", type=int, default=d.sample, metavar="N",
                        help="after training, print N words sampled from the model "
                             "(default: %(default)s; 0: none)")


def config_from(args):
    layers = ("hsoftmax", "full") if args.output_layer == "both" else (args.output_layer,)
    return Config(output_layers=layers, device=args.device, seed=args.seed, epochs=args.epochs,
                  hidden=args.hidden, max_tokens=args.max_tokens, corpus=args.corpus,
                  plot=args.plot, sample=args.sample)


def array_module(device):
    """``numpy``, or ``cupy`` for ``device="cuda"``; Unavailable saying what is missing."""
    if device == "cpu":
        return np
    need = "--device cuda needs a CUDA GPU, CuPy and numba-cuda (pip install 'nbsparse[cu12]')"
    try:
        import cupy
    except ImportError:
        raise Unavailable(f"{need}: CuPy is not installed") from None
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises its CUDARuntimeError when there is no driver
        raise Unavailable(f"{need}: CuPy finds no GPU ({type(e).__name__}: {e})") from None
    if n_gpus == 0:
        raise Unavailable(f"{need}: CuPy finds no GPU")
    if importlib.util.find_spec("numba_cuda") is None:
        raise Unavailable(f"{need}: numba-cuda is not installed")
    return cupy


def check_plot(path):
    """Unavailable unless matplotlib imports, when a plot is asked for (before any training)."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Unavailable("--plot needs matplotlib, which is not installed: "
                          "pip install 'nbsparse[plot]' (or pip install matplotlib)") from None


@dataclass
class Result:
    """What :func:`run` measured: a History per output layer, the unigram baseline, the sample."""

    histories: list
    unigram_ppl: float
    wall_seconds: float
    sample: list


def blas_one_thread():
    """``(context manager, description)``: NumPy's BLAS limited to one thread while it is open.

    The model alternates small NumPy matmuls (OpenBLAS threads) and nbsparse kernels
    (Numba's OpenMP threads), and both pools busy-wait after their work: on 2 cores
    they steal each other's cores, and a training step was 5-30x slower than with
    one BLAS thread, measured on a 2-core VM shared with other jobs, for both output
    layers. (Sleeping OpenMP workers, ``OMP_WAIT_POLICY=PASSIVE``, are no cure: the
    dynamically scheduled kernels then wake them per work unit, about 20x slower.)
    """
    import numba

    numba_threads = f"Numba {numba.get_num_threads()} threads"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), (
            f"{numba_threads}, BLAS threads not limited: pip install threadpoolctl "
            "(or set OPENBLAS_NUM_THREADS=1) if this runs slowly")
    return threadpool_limits(limits=1, user_api="blas"), f"{numba_threads}, BLAS 1 thread"


def run(cfg, out=print):
    """Train the model(s) of ``cfg``, print the report, return a :class:`Result`.

    Raises :class:`Unavailable` before any work when an option cannot be honoured.
    """
    start = time.perf_counter()
    xp = array_module(cfg.device)
    check_plot(cfg.plot)
    if xp is np:
        threads, threads_note = blas_one_thread()
    else:
        threads, threads_note = contextlib.nullcontext(), "GPU"
    try:
        corpus = Corpus.load(cfg.corpus, cfg.max_tokens, cfg.min_count)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Unavailable(f"cannot use the corpus: {e}") from None

    vocab, classes = corpus.vocab, corpus.classes
    unk_share = vocab.counts[vocab.index[UNK]] / vocab.counts.sum()
    out("nbsparse demo: a word-level language model with a hierarchical-softmax output layer")
    out(f"corpus  {corpus.description}: {corpus.n_tokens:,} tokens, "
        f"{len(corpus.train):,} train / {len(corpus.valid):,} valid")
    out(f"vocab   {len(vocab):,} words (min count {cfg.min_count}, <unk> {unk_share:.1%} of train); "
        f"h_softmax: {classes.n_classes} classes x {classes.K} slots, frequency-binned")
    out(f"model   {cfg.context}-word context, {cfg.embedding}-d embeddings, {cfg.hidden} tanh "
        f"units; Adam lr {cfg.lr:g}, batch {cfg.batch}, {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}")
    out(f"device  {cfg.device}, float32 ({threads_note})")

    histories, models = [], {}
    with threads:
        for layer in cfg.output_layers:
            per_row = (f"{classes.n_classes} + {classes.K}" if layer == "hsoftmax"
                       else f"{len(vocab):,}")
            out(f"\n[{layer}] output layer: {per_row} output units a row")
            models[layer], history = train(corpus, layer, cfg, xp, out)
            histories.append(history)

    unigram = corpus.unigram_perplexity(corpus.valid)
    out("\noutput layer   valid ppl   train ppl   tokens/s   train time")
    for h in histories:
        out(f"{h.layer:12s} {h.valid_ppl[-1]:11.1f} {h.train_ppl[-1]:11.1f} "
            f"{h.tokens_per_second:10,.0f} {h.train_seconds:10.1f} s")
    out(f"{'unigram':12s} {unigram:11.1f}")

    words = []
    if cfg.sample > 0:
        layer = cfg.output_layers[0]
        through = "h_softmax full mode" if layer == "hsoftmax" else "softmax"
        words = sample(models[layer], corpus, cfg.sample, xp, cfg.seed)
        out(f"\nsample ({layer} model, through {through}):\n  " + " ".join(words))
    if cfg.plot:
        plot(histories, unigram, cfg.plot)
        out(f"\nlearning curves written to {cfg.plot}")
    wall = time.perf_counter() - start
    out(f"\nwall time {wall:.1f} s")
    return Result(histories, unigram, wall, words)


def main(args):
    """The ``demo`` command; returns the exit status."""
    try:
        run(config_from(args), out=lambda line: print(line, flush=True))
    except Unavailable as e:
        print(f"nbsparse demo: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0
