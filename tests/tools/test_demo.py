"""``python -m nbsparse demo``: the corpus pipeline, the model's gradients, a short training run, the CLI.

The training runs go through the real command line in a child process, which also
checks the console entry point end to end.
"""

import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from nbsparse.__main__ import main
from nbsparse.demo import Config, run
from nbsparse.demo.corpus import UNK, Corpus, Vocabulary, frequency_classes, split, tokenize
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


def test_default_corpus_ships_with_python():
    corpus = Corpus.load(max_tokens=5000)
    assert "pydoc_data.topics" in corpus.description
    assert corpus.n_tokens == 5000 and len(corpus.train) + len(corpus.valid) == 5000
    assert corpus.train.max() < len(corpus.vocab)
    assert 1 < corpus.unigram_perplexity(corpus.valid) < len(corpus.vocab)


# --------------------------------------------------------------------------- model
def _tiny_model(layer, seed=0):
    counts = np.array([40, 20, 11, 9, 6, 5, 4, 3, 1, 1])
    classes = frequency_classes(counts)
    model = FeedForwardLM(np, counts, classes, output_layer=layer, context=3, embedding=4,
                          hidden=5, seed=seed, dtype=np.float64)
    return model, counts, classes


@pytest.mark.parametrize("layer", ["hsoftmax", "full"])
def test_untrained_model_is_the_unigram_model(layer):
    model, counts, _ = _tiny_model(layer)
    probs = model.probs(np.array([[0, 1, 2], [3, 4, 9]]))
    np.testing.assert_allclose(probs, np.tile(counts / counts.sum(), (2, 1)), rtol=1e-12)


@pytest.mark.parametrize("layer", ["hsoftmax", "full"])
def test_model_gradients_by_finite_differences(layer):
    model, counts, _ = _tiny_model(layer)
    rng = np.random.default_rng(1)
    params = model.all_params()
    for a in params.values():  # move off the zero output weights, keep the -inf dead slots
        a += np.where(np.isfinite(a), 0.5 * rng.standard_normal(a.shape), 0.0)
    contexts = rng.integers(0, len(counts), (6, 3))
    contexts[1] = contexts[0]  # a repeated context: embedding gradients accumulate
    words = rng.integers(0, len(counts), 6)
    _, grads = model.loss_and_grads(contexts, words)
    assert set(grads) == set(params)
    eps = 1e-6
    for name, a in params.items():
        for flat in rng.choice(a.size, size=min(a.size, 8), replace=False):
            i = np.unravel_index(flat, a.shape)
            if not np.isfinite(a[i]):
                assert grads[name][i] == 0.0  # a dead slot: no gradient, it never moves
                continue
            a[i] += eps
            up = model.loss_and_grads(contexts, words)[0]
            a[i] -= 2 * eps
            down = model.loss_and_grads(contexts, words)[0]
            a[i] += eps
            np.testing.assert_allclose(grads[name][i], (up - down) / (2 * eps), rtol=1e-5,
                                       atol=1e-8, err_msg=f"{name}{i}")


# --------------------------------------------------------------------------- training runs
def _demo(*args, timeout=120):
    """``python -m nbsparse demo ARGS`` in a child process: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "nbsparse", "demo", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "error"})
    return proc.returncode, proc.stdout, proc.stderr


def _report(stdout):
    """``{layer: (running losses of the progress lines, valid ppl per epoch)}``, the unigram ppl."""
    runs = {}
    sections = re.split(r"^\[(\w+)\] output layer.*$", stdout, flags=re.M)
    for layer, body in zip(sections[1::2], sections[2::2]):
        losses = [float(x) for x in re.findall(r"^  epoch \d+ \[.*\]  loss (\S+)", body, re.M)]
        valid = [float(x) for x in re.findall(r"^  epoch \d+: .*valid ppl +(\S+)", body, re.M)]
        runs[layer] = (losses, valid)
    unigram = float(re.search(r"^unigram +(\S+)", stdout, re.M).group(1))
    return runs, unigram


def test_reduced_run_learns_and_beats_unigram_clearly():
    status, out, err = _demo("--max-tokens", "20000", "--epochs", "2", "--sample", "5",
                             "--output-layer", "hsoftmax")
    assert status == 0, err
    runs, unigram = _report(out)
    assert list(runs) == ["hsoftmax"]
    losses, valid = runs["hsoftmax"]
    assert len(losses) == 8 and len(valid) == 2
    assert losses[-1] < losses[0] - 0.5  # the running training loss falls
    assert valid[1] < valid[0]
    assert valid[-1] < 0.6 * unigram  # a clear margin (about 63 against 133)
    assert re.search(r"^hsoftmax +[\d.]+ +[\d.]+ +[\d,]+ +[\d.]+ s$", out, re.M)  # the summary row
    sample = out.split("through h_softmax full mode):\n")[1].splitlines()[0].split()
    assert len(sample) == 5
    assert "wall time" in out


def test_full_output_layer_runs_alone():
    status, out, err = _demo("--max-tokens", "6000", "--epochs", "1", "--sample", "3",
                             "--output-layer", "full")
    assert status == 0, err
    runs, unigram = _report(out)
    assert list(runs) == ["full"]
    assert runs["full"][1][-1] < unigram
    assert "through softmax" in out and "h_softmax full mode" not in out


def test_same_seed_same_numbers_both_layers(tmp_path):
    """``both`` trains each layer from the same initialisation and batches; runs repeat exactly."""
    args = ["--max-tokens", "4000", "--epochs", "1", "--sample", "0", "--seed", "3"]
    first, second = _demo(*args), _demo(*args)
    assert first[0] == 0, first[2]
    runs, _ = _report(first[1])
    assert list(runs) == ["hsoftmax", "full"]
    assert _report(second[1]) == _report(first[1])  # every running loss and perplexity
    assert runs["hsoftmax"] != runs["full"]  # guard: two different output layers were trained


def test_corpus_option_reads_any_utf8_file(tmp_path):
    path = tmp_path / "corpus.txt"
    words = "the cat sat on the mat . the dog sat on the log . ".split()
    path.write_text(" ".join(words * 60) + " café", encoding="utf-8")
    result = run(Config(corpus=str(path), epochs=1, sample=4, hidden=8), out=lambda line: None)
    assert result.histories[0].valid_ppl[-1] < result.unigram_ppl
    assert len(result.sample) == 4


# --------------------------------------------------------------------------- CLI errors
def _main_exit(argv, capsys, monkeypatch):
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_device_cuda_without_cupy_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    status, out, err = _main_exit(["demo", "--device", "cuda"], capsys, monkeypatch)
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
    status, out, err = _main_exit(["demo", "--device", "cuda"], capsys, monkeypatch)
    assert status == 2
    assert "CuPy finds no GPU (RuntimeError: cudaErrorInsufficientDriver)" in err
    assert out == ""


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = _main_exit(["demo", "--plot", str(tmp_path / "curve.png")], capsys, monkeypatch)
    assert status == 2
    assert err == ("nbsparse demo: --plot needs matplotlib, which is not installed: "
                   "pip install 'nbsparse[plot]' (or pip install matplotlib)\n")
    assert out == "" and not (tmp_path / "curve.png").exists()


def test_missing_corpus_file_is_a_clear_error(monkeypatch, capsys, tmp_path):
    status, _, err = _main_exit(["demo", "--corpus", str(tmp_path / "nope.txt")], capsys,
                                monkeypatch)
    assert status == 2
    assert err.startswith("nbsparse demo: cannot use the corpus:") and "nope.txt" in err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    run(Config(max_tokens=3000, epochs=2, sample=0, hidden=8, plot=str(path)),
        out=lambda line: None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

