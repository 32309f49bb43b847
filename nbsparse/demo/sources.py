"""Where the demo's tokens come from: Python's own source, its documentation, or any text file.

The default corpus is the installed Python's standard library, ``sysconfig``'s
``stdlib`` folder: every ``.py`` file outside the test suites (``test``,
``tests``, ``idle_test`` folders) and ``site-packages``, in sorted path order,
about 1.5 million tokens with CPython 3.11. Each file is cut by the ``tokenize``
module, the tokenizer of Python itself, and its tokens are kept as follows:

- names (identifiers and keywords) and operators: as written, case kept;
- numbers: as written (``0``, ``1``, ``2`` are frequent; a rare one becomes ``<unk>``
  through the vocabulary's count cut, as any rare token does);
- string literals: as written (prefix and quotes included) when at most
  :data:`MAX_STRING` characters on one line (``'utf-8'``, ``'__main__'``, ``""``),
  else the one token ``<str>`` (docstrings, messages);
- comments, blank lines and line continuations inside brackets: dropped;
- the end of a logical line, an indent and a dedent: the tokens ``<nl>``,
  ``<indent>`` and ``<dedent>``, so the model learns the code's layout too.

A file that ``tokenize`` cannot read (bad encoding, an unterminated string) is
skipped whole. ``pydoc`` names the previous default: the documentation topics that
``help("topics")`` shows (``pydoc_data.topics``, about 100,000 English tokens,
cut into lowercase words by :func:`nbsparse.demo.corpus.tokenize`).
"""

import os
import sys
import sysconfig
import tokenize

MAX_STRING = 24  # longer string literals become <str>: 90 % of them occur once
SKIPPED_FOLDERS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})

STDLIB, PYDOC = "stdlib", "pydoc"
NEWLINE, INDENT, DEDENT, STRING = "<nl>", "<indent>", "<dedent>", "<str>"

_DROPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_MARKERS = {tokenize.NEWLINE: NEWLINE, tokenize.INDENT: INDENT, tokenize.DEDENT: DEDENT}
# Python 3.12 cuts f-strings into pieces: their literal text is treated as a string's.
_STRINGS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


class SourceMissing(Exception):
    """The standard library's source is not installed (only compiled files, or no folder)."""


def python_version():
    return ".".join(map(str, sys.version_info[:3]))


def stdlib_dir():
    """The folder of the running Python's standard library, as ``sysconfig`` reports it."""
    return sysconfig.get_paths()["stdlib"]


def python_files(root):
    """The ``.py`` files under ``root``, outside test suites and ``site-packages``, in sorted order."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS)
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))
    return found


def code_tokens(readline):
    """The tokens of one Python file (``readline`` of the file opened in binary), as described above.

    >>> import io
    >>> src = b"def f(x):  # add one\\n    return x + 1.5, 'a', '''a documentation string'''\\n"
    >>> code_tokens(io.BytesIO(src).readline)  # doctest: +NORMALIZE_WHITESPACE
    ['def', 'f', '(', 'x', ')', ':', '<nl>', '<indent>', 'return', 'x', '+', '1.5', ',', "'a'", ',',
     '<str>', '<nl>', '<dedent>']
    """
    tokens = []
    for tok in tokenize.tokenize(readline):
        kind, text = tok.type, tok.string
        if kind in _DROPPED:
            continue
        if kind == tokenize.ERRORTOKEN:  # Python 3.11 reports an unterminated '...' string this way
            raise SyntaxError(f"cannot tokenize {text!r} at line {tok.start[0]}")
        if kind in _MARKERS:
            text = _MARKERS[kind]
        elif kind in _STRINGS and (len(text) > MAX_STRING or "\n" in text):
            text = STRING
        tokens.append(text)
    return tokens


def stdlib_tokens(root=None, max_tokens=None):
    """``(tokens, description)`` of the standard library's source under ``root`` (default: this Python's).

    Stops reading files once ``max_tokens`` are in hand. Raises :class:`SourceMissing`
    when ``root`` holds no ``.py`` file.
    """
    root = stdlib_dir() if root is None else root
    files = python_files(root) if os.path.isdir(root) else []
    if not files:
        raise SourceMissing(f"the standard library's source is not installed here ({root} holds no .py file)")
    tokens, read = [], 0
    for path in files:
        if max_tokens and len(tokens) >= max_tokens:
            break
        try:
            with open(path, "rb") as f:
                tokens.extend(code_tokens(f.readline))
            read += 1
        except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
            continue  # not valid Python 3 (a deliberately broken file): skipped whole
    return tokens, f"Python {python_version()} standard library source ({read:,} files under {root})"


def pydoc_text():
    """``(text, description)`` of the documentation topics that ship with Python (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))  # sorted: the same order everywhere
    return text, f"pydoc_data.topics (Python {python_version()} documentation topics)"


def file_text(path):
    """``(text, description)`` of a UTF-8 file."""
    with open(path, encoding="utf-8") as f:
        return f.read(), str(path)
