"""``python -m nbsparse demo``: the corpora, the model's gradients and inference, budgeted runs, the CLI.

The training runs go through the real command line in a child process, which also
checks the console entry point end to end.
"""

import io
import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse.__main__ import main
from nbsparse.demo import Config, run, sources
from nbsparse.demo.corpus import UNK, Corpus, Vocabulary, balanced_classes, frequency_classes, split, tokenize
from nbsparse.demo.model import FeedForwardLM

# --------------------------------------------------------------------------- corpus


def test_tokenize_splits_words_numbers_and_punctuation():
    assert tokenize("The 2 dicts' keys: a.b() -- ok!") == [
        "the", "2", "dicts", "'", "keys", ":", "a", ".", "b", "(", ")", "--", "ok", "!"]
    assert tokenize("=====\n>>> Ünïcode café") == ["===", ">>>", "ünïcode", "café"]


def test_split_is_deterministic_interleaved_and_complete():
    tokens = [str(i) for i in range(1000)]
    train, valid = split(tokens)
    assert (train, valid) == split(tokens)
    assert sorted(train + valid, key=int) == tokens
    assert len(valid) == 100
    # pieces 9 and 19 of 20: from the middle and the end, not one block
    assert valid[0] == "450" and valid[50] == "950"


def test_vocabulary_orders_by_count_and_maps_rare_words_to_unk():
    vocab = Vocabulary.build("b a b c b a d e".split(), min_count=2)
    assert vocab.words == [UNK, "b", "a"]  # <unk> (c, d, e: 3) ties with b (3): by name, "<" < "b"
    assert list(vocab.counts) == [3, 3, 2]
    np.testing.assert_array_equal(vocab.encode(["a", "zzz", "b"]), [2, 0, 1])


def test_unk_has_a_count_even_when_no_training_word_is_rare():
    vocab = Vocabulary.build("a b a b".split(), min_count=1)
    assert vocab.words[-1] == UNK and vocab.counts[-1] == 1  # unseen words keep a probability


def _zipf_counts(V, seed=0):
    counts = np.maximum(1, (10_000 / np.arange(1, V + 1)).astype(np.int64))
    return np.sort(counts)[::-1]


@pytest.mark.parametrize("V", [1, 7, 100, 2000])
def test_frequency_classes_give_each_word_one_slot_and_about_equal_mass(V):
    counts = _zipf_counts(V)
    c = frequency_classes(counts)

    outputs = c.output
    assert len(set(outputs.tolist())) == V  # one word per output
    assert outputs.max() < c.n_classes * c.K
    assert (np.diff(c.cls) >= 0).all()  # classes are frequency bands, most frequent first
    assert (c.sizes >= 1).all() and (c.sizes <= c.K).all()
    if V >= 100:
        assert round(math.sqrt(V)) <= c.n_classes <= 2 * round(math.sqrt(V))
        mass = np.bincount(c.cls, weights=counts)[:-1] / counts.sum()  # the last: the remainder
        by_mass = (c.sizes < c.K)[:-1]  # classes closed by their mass, not by the cap
        several = (c.sizes > 1)[:-1]  # a frequent word alone may hold more than a share
        share = 1 / round(math.sqrt(V))
        assert by_mass.sum() >= c.n_classes // 3  # guard: the check below covers many classes
        assert (mass[by_mass & several] < 1.5 * share).all()
        assert (mass[by_mass & several] > 0.5 * share).all()


@pytest.mark.parametrize("V", [1, 2, 10, 99, 1000, 28_188, 10**6 + 7])
def test_balanced_classes_are_equal_bands_within_10_percent_of_V(V):
    c = balanced_classes(V)
    assert sorted(c.output.tolist()) == list(range(V))  # one word per output: only the last class has a tail
    assert V <= c.n_classes * c.K <= max(1.1 * V, V + 2)
    assert (c.sizes[:-1] == c.K).all() and 1 <= c.sizes[-1] <= c.K
    assert (np.diff(c.cls) >= 0).all()  # frequency bands: the most frequent words in class 0
    assert abs(c.n_classes - math.sqrt(V)) <= 1 + 0.01 * math.sqrt(V)


def test_code_tokens_keep_names_short_strings_numbers_and_drop_comments():
    src = (b"# a comment\nimport os\n\nclass A(B):  # another\n    '''The docstring of class A.'''\n"
           b"    x = f(0x1F, 'utf-8', 'a string longer than the cut', [1,\n 2])\n")
    assert sources.code_tokens(io.BytesIO(src).readline) == [
        "import", "os", "<nl>", "class", "A", "(", "B", ")", ":", "<nl>", "<indent>", "<str>", "<nl>",
        "x", "=", "f", "(", "0x1F", ",", "'utf-8'", ",", "<str>", ",", "[", "1", ",", "2", "]", ")", "<nl>",
        "<dedent>"]


def _source_tree(root):
    """A small standard library: two modules, a test suite and site-packages (skipped), a broken file."""
    (root / "pkg" / "test").mkdir(parents=True)
    (root / "site-packages").mkdir()
    (root / "alpha.py").write_text("def f(x):\n    return x + 1\n" * 30)
    (root / "pkg" / "beta.py").write_text("import os\nprint(os.sep, 'b')\n" * 30)
    (root / "pkg" / "test" / "test_beta.py").write_text("assert_never_read = 1\n")
    (root / "site-packages" / "other.py").write_text("never_read = 1\n")
    (root / "broken.py").write_text("s = 'unterminated\n")
    (root / "notes.txt").write_text("not python")
    return root


def test_stdlib_corpus_from_a_source_tree(tmp_path):
    root = _source_tree(tmp_path)
    assert sources.python_files(root) == [str(root / "alpha.py"), str(root / "broken.py"),
                                          str(root / "pkg" / "beta.py")]
    corpus = Corpus.load(stdlib_root=str(root))
    assert corpus.is_code and corpus.note is None
    assert "standard library source (2 files under" in corpus.description  # broken.py skipped
    words = set(corpus.vocab.words)
    assert {"def", "return", "+", "<indent>", "<dedent>", "<nl>", "import", "'b'", "print"} <= words
    assert not words & {"assert_never_read", "never_read", "unterminated"}
    # alpha: def f ( x ) : <nl> <indent> return x + 1 <nl> <dedent>, 14 tokens a copy; beta: 12
    assert corpus.n_tokens == 30 * 14 + 30 * 12


def test_stdlib_corpus_stops_reading_at_max_tokens():
    corpus = Corpus.load(max_tokens=5000)
    assert corpus.is_code and corpus.n_tokens == 5000 and len(corpus.train) + len(corpus.valid) == 5000
    assert corpus.train.max() < len(corpus.vocab)
    assert 1 < corpus.unigram_perplexity(corpus.valid) < len(corpus.vocab)


def test_missing_stdlib_source_falls_back_to_the_documentation(tmp_path):
    corpus = Corpus.load(max_tokens=3000, stdlib_root=str(tmp_path))
    assert not corpus.is_code and "pydoc_data.topics" in corpus.description
    assert corpus.note.startswith(f"the standard library's source is not installed here ({tmp_path} holds no .py")


def test_fallback_note_is_printed(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "stdlib_dir", lambda: str(tmp_path / "nowhere"))
    lines = []
    run(Config(max_tokens=3000, budget=600, epochs=1, sample=3, completions=1, hidden=8,
               output_layers=("hsoftmax",)), out=lines.append)
    assert lines[1].startswith("note    the standard library's source is not installed here")
    assert lines[2].startswith("corpus  pydoc_data.topics")


# --------------------------------------------------------------------------- model
def _tiny_model(layer, seed=0, classes=frequency_classes):
    counts = np.array([40, 20, 11, 9, 6, 5, 4, 3, 1, 1])
    model = FeedForwardLM(np, counts, classes(counts), output_layer=layer, context=3, embedding=4,
                          hidden=5, seed=seed, dtype=np.float64)
    return model, counts


@pytest.mark.parametrize("layer", ["hsoftmax", "full"])
def test_untrained_model_is_the_unigram_model(layer):
    model, counts = _tiny_model(layer)
    probs = model.probs(np.array([[0, 1, 2], [3, 4, 9]]))
    np.testing.assert_allclose(probs, np.tile(counts / counts.sum(), (2, 1)), rtol=1e-12)


def _dense(grad, param):
    return grad.to_dense(param.shape) if isinstance(grad, nbs.BlockGrad) else grad


@pytest.mark.parametrize("layer", ["hsoftmax", "full"])
def test_model_gradients_by_finite_differences(layer):
    model, counts = _tiny_model(layer)
    rng = np.random.default_rng(1)
    params = model.all_params()
    for a in params.values():  # move off the zero output weights, keep the -inf dead slots
        a += np.where(np.isfinite(a), 0.5 * rng.standard_normal(a.shape), 0.0)
    contexts = rng.integers(0, len(counts), (6, 3))
    contexts[1] = contexts[0]  # a repeated context: embedding gradients accumulate
    words = rng.integers(0, len(counts), 6)
    _, grads = model.loss_and_grads(contexts, words)
    assert set(grads) == set(params)
    sparse = {name for name, g in grads.items() if isinstance(g, nbs.BlockGrad)}
    assert sparse == ({"E", "out.W2", "out.b2"} if layer == "hsoftmax" else {"E"})
    assert set(grads["E"].index.ravel().tolist()) == set(contexts.ravel().tolist())  # only the batch's rows
    eps = 1e-6
    for name, a in params.items():
        dense = _dense(grads[name], a)
        for flat in rng.choice(a.size, size=min(a.size, 8), replace=False):
            i = np.unravel_index(flat, a.shape)
            if not np.isfinite(a[i]):
                assert dense[i] == 0.0  # a dead slot: no gradient, it never moves
                continue
            a[i] += eps
            up = model.loss_and_grads(contexts, words)[0]
            a[i] -= 2 * eps
            down = model.loss_and_grads(contexts, words)[0]
            a[i] += eps
            np.testing.assert_allclose(dense[i], (up - down) / (2 * eps), rtol=1e-5,
                                       atol=1e-8, err_msg=f"{name}{i}")


@pytest.mark.parametrize("layer", ["hsoftmax", "full"])
@pytest.mark.parametrize("classes", [frequency_classes, lambda counts: balanced_classes(len(counts))])
def test_topk_ranks_and_samples_follow_the_probabilities(layer, classes):
    model, counts = _tiny_model(layer, classes=classes)
    rng = np.random.default_rng(2)
    for a in model.all_params().values():
        a += np.where(np.isfinite(a), rng.standard_normal(a.shape), 0.0)
    contexts = rng.integers(0, len(counts), (5, 3))
    probs = model.probs(contexts)
    words, log_probs = model.topk(contexts, 3)
    np.testing.assert_array_equal(words, np.argsort(-probs, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(np.exp(log_probs), np.take_along_axis(probs, words, 1), rtol=1e-9)
    targets = rng.integers(0, len(counts), 5)
    expected = np.minimum((probs > probs[np.arange(5), targets][:, None]).sum(axis=1), 3)
    np.testing.assert_array_equal(model.ranks(contexts, targets, 3), expected)
    draws = np.stack([model.sample(contexts, seed=s) for s in range(400)])
    assert ((draws >= 0) & (draws < len(counts))).all()
    np.testing.assert_array_equal(draws[7], model.sample(contexts, seed=7))  # a seed repeats
    freq = (draws[:, 0, None] == np.arange(len(counts))).mean(axis=0)
    assert np.abs(freq - probs[0]).max() < 0.1  # 400 draws: a standard error of at most 0.025


# --------------------------------------------------------------------------- training runs
def _demo(*args, timeout=120):
    """``python -m nbsparse demo ARGS`` in a child process: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "nbsparse", "demo", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "error"})
    return proc.returncode, proc.stdout, proc.stderr


def _summary(stdout):
    """``{layer: (tokens, valid ppl, top-1 %, top-5 %)}`` of the summary table, and the unigram ppl."""
    rows = re.findall(r"^  (hsoftmax|full) +([\d,]+) +[\d,]+ +[\d.]+ +([\d.]+) +([\d.]+)% +([\d.]+)%$",
                      stdout, re.M)
    unigram = float(re.search(r"^  unigram +(\S+)$", stdout, re.M).group(1))
    return {r[0]: (int(r[1].replace(",", "")), *map(float, r[2:])) for r in rows}, unigram


def test_reduced_run_compares_both_layers_and_uses_the_model():
    status, out, err = _demo("--max-tokens", "20000", "--budget", "600", "--epochs", "2", "--sample", "12",
                             "--completions", "2")
    assert status == 0, err
    rows, unigram = _summary(out)
    assert list(rows) == ["hsoftmax", "full"]
    for layer, (tokens, valid, top1, top5) in rows.items():
        assert tokens == 2 * 18_000 - 2 * 4  # two passes over the training windows
        assert valid < 0.6 * unigram, layer  # a clear margin (about 17 against 58)
        assert 0 < top1 <= top5 <= 100
    checkpoints = re.findall(r"^ +[\d.]+ s +[\d,]+ tokens .* valid ppl +([\d.]+)$", out, re.M)
    assert len(checkpoints) == 8  # 4 a layer
    assert out.count("\n      -> ") == 2  # completions: 5 tokens with probabilities each
    best = out.split("\n      -> ")[1].splitlines()[0]
    assert len(re.findall(r"\S+ \d+%", best)) == 5
    assert "sample (hsoftmax model, 12 tokens through h_softmax_sample)" in out
    assert re.search(r"^wall time [\d.]+ s, peak memory [\d,]+ MiB$", out, re.M)


def test_same_seed_same_numbers():
    """Both layers train from the same initialisation and batches; a run with an epoch limit repeats exactly."""
    args = ["--max-tokens", "4000", "--budget", "600", "--epochs", "1", "--sample", "5", "--seed", "3"]
    first, second = _demo(*args), _demo(*args)
    assert first[0] == 0, first[2]
    rows, unigram = _summary(first[1])
    assert (rows, unigram) == _summary(second[1])  # tokens, perplexity, accuracy (not the tokens/s)

    def used(out):  # the completions and the sample
        return out.split("\ncompletions")[1].split("wall time")[0]

    assert used(first[1]) == used(second[1])
    assert rows["hsoftmax"][1:] != rows["full"][1:]  # guard: two different output layers were trained


def test_budget_ends_training(tmp_path):
    result = run(Config(max_tokens=6000, budget=0.3, sample=0, completions=0, hidden=8, checkpoints=2),
                 out=lambda line: None)
    for h in result.histories:
        assert h.train_seconds >= 0.3 and len(h.seconds) == len(h.valid_ppl) >= 1
        assert h.train_tokens == h.tokens[-1] > 0


def test_corpus_option_reads_any_utf8_file(tmp_path):
    path = tmp_path / "corpus.txt"
    words = "the cat sat on the mat . the dog sat on the log . ".split()
    path.write_text(" ".join(words * 60) + " café", encoding="utf-8")
    result = run(Config(corpus=str(path), budget=600, epochs=1, sample=4, hidden=8), out=lambda line: None)
    assert result.histories[0].valid_ppl[-1] < result.unigram_ppl
    assert len(result.sample) == 4 and len(result.completions) == 3
    assert not result.corpus.is_code


def test_pydoc_corpus_is_still_there():
    result = run(Config(corpus="pydoc", max_tokens=3000, budget=600, epochs=1, sample=0, completions=0,
                        hidden=8, output_layers=("full",)), out=lambda line: None)
    assert result.corpus.description.startswith("pydoc_data.topics")


# --------------------------------------------------------------------------- CLI errors
def _main_exit(argv, capsys):
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: 0 is not an integer >= 1"),
    (["--epochs", "-1"], "argument --epochs: -1 is not an integer >= 1"),
    (["--hidden", "0"], "argument --hidden: 0 is not an integer >= 1"),
    (["--hidden", "abc"], "argument --hidden: 'abc' is not an integer >= 1"),
    (["--max-tokens", "0"], "argument --max-tokens: 0 is not an integer >= 100"),
    (["--max-tokens", "45"], "argument --max-tokens: 45 is not an integer >= 100"),
    (["--sample", "-3"], "argument --sample: -3 is not an integer >= 0"),
    (["--completions", "-1"], "argument --completions: -1 is not an integer >= 0"),
    (["--seed", "-1"], "argument --seed: -1 is not an integer >= 0"),
    (["--budget", "0"], "argument --budget: 0 is not a number of seconds > 0"),
    (["--budget", "nan"], "argument --budget: nan is not a number of seconds > 0"),
    (["--classes", "round"], "argument --classes: invalid choice: 'round'"),
])
def test_bad_options_are_usage_errors(args, message, capsys):
    status, out, err = _main_exit(["demo", *args], capsys)
    assert status == 2 and out == ""
    assert err.splitlines()[-1] == f"nbsparse demo: error: {message}" or message in err.splitlines()[-1]
    assert "Traceback" not in err


def test_a_corpus_too_short_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "four.txt"
    path.write_text("just four words here")
    status, _, err = _main_exit(["demo", "--corpus", str(path)], capsys)
    assert status == 2
    assert err == (f"nbsparse demo: cannot use the corpus: {path}: 4 tokens are too few to split into "
                   "training and validation text (at least 100 needed)\n")


def test_device_cuda_without_cupy_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    status, out, err = _main_exit(["demo", "--device", "cuda"], capsys)
    assert status == 2
    assert err.startswith("nbsparse demo: --device cuda needs a CUDA GPU, CuPy and numba-cuda")
    assert "CuPy is not installed" in err and "nbsparse[cu12]" in err
    assert out == ""  # nothing ran


def test_device_cuda_without_a_gpu_is_a_clear_error(monkeypatch, capsys):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    status, out, err = _main_exit(["demo", "--device", "cuda"], capsys)
    assert status == 2
    assert "CuPy finds no GPU (RuntimeError: cudaErrorInsufficientDriver)" in err
    assert out == ""


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = _main_exit(["demo", "--plot", str(tmp_path / "curve.png")], capsys)
    assert status == 2
    assert err == ("nbsparse demo: --plot needs matplotlib, which is not installed: "
                   "pip install 'nbsparse[plot]' (or pip install matplotlib)\n")
    assert out == "" and not (tmp_path / "curve.png").exists()


def test_plot_into_a_missing_folder_is_a_clear_error(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    status, out, err = _main_exit(["demo", "--plot", str(tmp_path / "no" / "curve.png")], capsys)
    assert status == 2 and out == ""
    folder = tmp_path / "no"
    assert err == f"nbsparse demo: --plot {folder / 'curve.png'}: the folder {folder} does not exist\n"


def test_missing_corpus_file_is_a_clear_error(capsys, tmp_path):
    status, _, err = _main_exit(["demo", "--corpus", str(tmp_path / "nope.txt")], capsys)
    assert status == 2
    assert err.startswith("nbsparse demo: cannot use the corpus:") and "nope.txt" in err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    run(Config(max_tokens=3000, budget=600, epochs=2, sample=0, completions=0, hidden=8, plot=str(path)),
        out=lambda line: None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_vocabulary_smaller_than_five_still_reports(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("a b c " * 60, encoding="utf-8")  # 3 words and <unk>
    result = run(Config(corpus=str(path), budget=600, epochs=1, sample=3, completions=1, hidden=8),
                 out=lambda line: None)
    assert len(result.corpus.vocab) == 4
    assert all(h.top5 == 1.0 for h in result.histories)  # every word is among the 4 likeliest
    assert len(result.completions[0][1]) == 4
