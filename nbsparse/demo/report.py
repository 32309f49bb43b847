"""What the demo prints and draws: the summary table, tokens as code, completions, the plot, peak memory."""

import sys
from keyword import iskeyword

from .sources import DEDENT, INDENT, NEWLINE

_NO_SPACE_BEFORE = {")", "]", "}", ",", ":", ".", ";"}
_NO_SPACE_AFTER = {"(", "[", "{", ".", "~"}
_CALLS = {"(", "["}  # no space before these after a name or a closing bracket: f(x), a[i]


def _join(tokens):
    line, prev = "", None
    for t in tokens:
        call = t in _CALLS and prev is not None and (prev in ")]" or (prev.isidentifier() and not iskeyword(prev)))
        decorator = line == "@"  # @property, where a @ b keeps its spaces
        tight = prev is None or t in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER or call or decorator
        line, prev = line + (t if tight else " " + t), t
    return line


def as_code(words):
    """Python tokens back to source lines: ``<nl>`` ends a line, ``<indent>``/``<dedent>`` set its indent.

    >>> print("\\n".join(as_code("@ cache <nl> def f ( x ) : <nl> <indent> return x [ 0 ] @ y".split())))
    @cache
    def f(x):
        return x[0] @ y
    """
    lines, line, depth = [], [], 0
    for w in words:
        if w == NEWLINE:
            lines.append("    " * depth + _join(line))
            line = []
        elif w == INDENT:
            depth += 1
        elif w == DEDENT:
            depth = max(0, depth - 1)
        else:
            line.append(w)
    if line:
        lines.append("    " * depth + _join(line))
    return lines


def as_text(words, is_code):
    """One line: code tokens joined as source (a line end shown as `` <nl> ``), other words by spaces."""
    if not is_code:
        return " ".join(words)
    lines, line = [], []
    for w in words:
        if w == NEWLINE:
            lines.append(_join(line))
            line = []
        elif w not in (INDENT, DEDENT):
            line.append(w)
    return " <nl> ".join(lines + [_join(line)]).strip()


def summary(histories, unigram):
    """The table that compares the output layers at the end of their budgets."""
    lines = [f"{'output layer':12s} {'tokens':>11s} {'tokens/s':>9s} {'train ppl':>10s} {'valid ppl':>10s} "
             f"{'top-1':>6s} {'top-5':>6s}"]
    for h in histories:
        lines.append(f"{h.layer:12s} {h.train_tokens:11,} {h.tokens_per_second:9,.0f} {h.train_ppl[-1]:10.1f} "
                     f"{h.valid_ppl[-1]:10.1f} {h.top1:6.1%} {h.top5:6.1%}")
    lines.append(f"{'unigram':12s} {'':11s} {'':9s} {'':10s} {unigram:10.1f}")
    return lines


def peak_memory():
    """The process's peak resident memory in bytes (``getrusage``), or None where it is not known."""
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak  # bytes on macOS, KiB on Linux


def plot(histories, unigram, path, title):
    """Write validation perplexity against training time, one line per output layer, to the PNG ``path``.

    Each line starts at the unigram perplexity at 0 s: the untrained model is the unigram model.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for h in histories:  # both start as the unigram model (zero output weights, unigram biases)
        ax.plot([0.0, *h.seconds], [unigram, *h.valid_ppl], marker="o",
                label=f"{h.layer} output layer ({h.tokens_per_second:,.0f} tokens/s)")
    ax.axhline(unigram, color="gray", ls=":", label="unigram model")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(0, None)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
