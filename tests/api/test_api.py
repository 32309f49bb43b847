"""The public surface of docs/API.md: names, signatures, result types, docstrings.

The signatures are copied here as literal strings (CI need not have the docs).
API.md allows added keywords, so the contract's parameters must form the prefix
of each signature, with exactly these names, order, kinds (``inplace`` is
keyword-only) and defaults; any parameter after them must be keyword-only and
have a default, so that no call written against the contract can break.
"""

import inspect
import re

import numpy as np
import pytest

import nbsparse as nbs

SIGNATURES = {
    "sparse_block_gemv": "(o, W, h, input_idx, output_idx, *, inplace=False)",
    "sparse_block_dot": "(W, h, input_idx, b, output_idx)",
    "sparse_block_outer": "(o, x, y, x_idx, y_idx, alpha=1.0, *, inplace=False)",
    "sparse_block_dot_grad": "(grad_output, W, h, input_idx, b, output_idx)",
    "softmax": "(x, axis=-1)",
    "softmax_grad": "(grad_output, y, axis=-1)",
    "h_softmax": "(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, "
                 "target=None)",
    "h_softmax_grad": "(grad_output, x, batch_size, n_outputs, n_classes, n_outputs_per_class, "
                      "W1, b1, W2, b2, target=None)",
    "h_softmax_nll": "(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, "
                     "target)",
    "h_softmax_nll_grad": "(grad_output, x, batch_size, n_outputs, n_classes, "
                          "n_outputs_per_class, W1, b1, W2, b2, target)",
    "h_softmax_logprob": "(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2, "
                         "candidates)",
    "h_softmax_sample": "(x, batch_size, n_outputs, n_classes, n_outputs_per_class, W1, b1, W2, b2)",
}
FUNCTIONS = list(SIGNATURES)
GRAD_FIELDS = {"SparseBlockDotGrad": ("W", "h", "b"),
               "HSoftmaxGrad": ("x", "W1", "b1", "W2", "b2")}

# Index arguments: their functions document an IndexError.
TAKES_INDICES = {"sparse_block_gemv", "sparse_block_dot", "sparse_block_outer",
                 "sparse_block_dot_grad", "h_softmax", "h_softmax_grad", "h_softmax_nll",
                 "h_softmax_nll_grad", "h_softmax_logprob"}

by_function = pytest.mark.parametrize("name", FUNCTIONS)


def _expected_signature(text):
    """An ``inspect.Signature`` parsed from the literal text (a def with that signature)."""
    namespace = {}
    exec(f"def f{text}: pass", namespace)  # the literal comes from this file
    return inspect.signature(namespace["f"])


# --------------------------------------------------------------------------- names
def test_all_lists_every_public_name():
    assert set(FUNCTIONS) <= set(nbs.__all__)
    assert set(GRAD_FIELDS) <= set(nbs.__all__)
    assert "__version__" in nbs.__all__
    assert len(nbs.__all__) == len(set(nbs.__all__))
    for name in nbs.__all__:
        assert hasattr(nbs, name), name


@by_function
def test_public_function_is_a_plain_function(name):
    assert inspect.isfunction(getattr(nbs, name))


# PEP 440, Appendix B ("canonical" versions; packaging's VERSION_PATTERN), anchored.
PEP440 = re.compile(
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*((a|b|rc)(0|[1-9][0-9]*))?"
    r"(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$"
)


def test_version_is_a_pep440_string():
    assert isinstance(nbs.__version__, str) and nbs.__version__
    assert PEP440.match(nbs.__version__), nbs.__version__


@pytest.mark.parametrize("version", ["0.1.0.dev0", "1.0", "2.3.1rc2", "1!2.0.post1", "1.0+g1a2b"])
def test_pep440_pattern_accepts_valid_versions(version):
    assert PEP440.match(version)


@pytest.mark.parametrize("version", ["", "v1.0", "1.0-dev", "01.2", "1.0 ", "latest"])
def test_pep440_pattern_rejects_invalid_versions(version):
    assert not PEP440.match(version)


# --------------------------------------------------------------------------- signatures
def _split(name):
    """The parameters of ``nbs.<name>``: (the contract's prefix, the ones added after it)."""
    actual = inspect.signature(getattr(nbs, name))
    params = list(actual.parameters.values())
    n = len(_expected_signature(SIGNATURES[name]).parameters)
    return actual.replace(parameters=params[:n]), params[n:]


@by_function
def test_signature_starts_with_the_api_parameters(name):
    prefix, _ = _split(name)
    expected = _expected_signature(SIGNATURES[name])
    assert str(prefix) == SIGNATURES[name]
    assert list(prefix.parameters) == list(expected.parameters)  # names and order
    for param, want in zip(prefix.parameters.values(), expected.parameters.values()):
        assert param.kind == want.kind, (param.name, param.kind, want.kind)
        assert param.default == want.default, (param.name, param.default, want.default)
        assert type(param.default) is type(want.default), param.name  # 1.0, not 1; -1, not -1.0


@by_function
def test_added_parameters_are_keyword_only_with_defaults(name):
    _, added = _split(name)
    for param in added:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, (param.name, param.kind)
        assert param.default is not inspect.Parameter.empty, f"{param.name} has no default"


DETERMINISTIC = ["sparse_block_outer", "sparse_block_dot_grad", "h_softmax_grad",
                 "h_softmax_nll_grad"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_is_an_added_keyword_defaulting_to_false(name):
    _, added = _split(name)
    param = {p.name: p for p in added}["deterministic"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is False


def test_split_finds_added_keywords():
    """Guard: the prefix comparison above really sees parameters added after the contract's."""
    prefix, added = _split("sparse_block_outer")
    assert list(prefix.parameters)[-1] == "inplace"
    assert "deterministic" in [p.name for p in added]


@pytest.mark.parametrize("name", ["sparse_block_gemv", "sparse_block_outer"])
def test_inplace_is_keyword_only_and_false_by_default(name):
    param = inspect.signature(getattr(nbs, name)).parameters["inplace"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is False


def test_expected_signatures_parse():
    """Guard: the literals above are valid and say what the test relies on."""
    outer = _expected_signature(SIGNATURES["sparse_block_outer"]).parameters
    assert outer["alpha"].default == 1.0 and outer["inplace"].kind is inspect.Parameter.KEYWORD_ONLY
    assert _expected_signature(SIGNATURES["softmax"]).parameters["axis"].default == -1
    assert _expected_signature(SIGNATURES["h_softmax_grad"]).parameters["target"].default is None


# --------------------------------------------------------------------------- gradient tuples
@pytest.mark.parametrize(("name", "fields"), GRAD_FIELDS.items())
def test_gradient_types_are_named_tuples(name, fields):
    cls = getattr(nbs, name)
    assert issubclass(cls, tuple)
    assert cls._fields == fields


def test_sparse_block_dot_grad_returns_named_tuple():
    W, h, b = np.ones((2, 3, 2, 2)), np.ones((1, 1, 2)), np.zeros((3, 2))
    grads = nbs.sparse_block_dot_grad(np.ones((1, 1, 2)), W, h, np.array([[1]]), b,
                                      np.array([[2]]))
    assert type(grads) is nbs.SparseBlockDotGrad
    assert grads._fields == ("W", "h", "b")
    assert (grads.W.shape, grads.h.shape, grads.b.shape) == (W.shape, h.shape, b.shape)


@pytest.mark.parametrize("target", [None, np.array([3])], ids=["full", "target"])
def test_h_softmax_grad_returns_named_tuple(target):
    x, W1, b1 = np.ones((1, 2)), np.zeros((2, 2)), np.zeros(2)
    W2, b2 = np.zeros((2, 2, 2)), np.zeros((2, 2))
    g = np.ones((1, 4)) if target is None else np.ones(1)
    grads = nbs.h_softmax_grad(g, x, 1, 4, 2, 2, W1, b1, W2, b2, target=target)
    assert type(grads) is nbs.HSoftmaxGrad
    assert grads._fields == ("x", "W1", "b1", "W2", "b2")
    assert [a.shape for a in grads] == [a.shape for a in (x, W1, b1, W2, b2)]


# --------------------------------------------------------------------------- docstrings
SECTIONS = ["Parameters", "Returns", "Raises", "See Also", "Notes", "Examples"]  # numpydoc order
REQUIRED = ["Parameters", "Returns", "Raises", "Notes", "Examples"]


def _sections(doc):
    """numpydoc sections: a title line underlined by dashes of the same length -> body."""
    lines = doc.splitlines()
    heads = [(i, lines[i].strip()) for i in range(len(lines) - 1)
             if lines[i].strip() and lines[i + 1].strip() == "-" * len(lines[i].strip())]
    bodies = {}
    for k, (i, title) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        bodies[title] = "\n".join(lines[i + 2:end])
    return [title for _, title in heads], bodies


@by_function
def test_docstring_has_numpydoc_sections_in_order(name):
    doc = inspect.getdoc(getattr(nbs, name))
    assert doc, f"{name} has no docstring"
    titles, bodies = _sections(doc)
    for section in REQUIRED:
        assert section in titles, f"{name}: no {section} section"
        assert bodies[section].strip(), f"{name}: empty {section} section"
    known = [t for t in titles if t in SECTIONS]
    assert known == sorted(known, key=SECTIONS.index), f"{name}: sections out of order {titles}"
    assert doc.splitlines()[0].strip(), f"{name}: no one-line summary"


@by_function
def test_docstring_documents_every_parameter(name):
    func = getattr(nbs, name)
    _, bodies = _sections(inspect.getdoc(func))
    documented = set()
    for line in bodies["Parameters"].splitlines():
        if line and not line[0].isspace():  # "a : type" or "a, b, c" entry lines
            documented.update(n.strip() for n in line.split(" : ")[0].split(","))
    assert set(inspect.signature(func).parameters) <= documented, (
        set(inspect.signature(func).parameters) - documented)


@by_function
def test_docstring_raises_names_the_contract_errors(name):
    _, bodies = _sections(inspect.getdoc(getattr(nbs, name)))
    expected = {"TypeError", "ValueError"} | ({"IndexError"} if name in TAKES_INDICES else set())
    raised = set(re.findall(r"\b(\w+Error)\b", bodies["Raises"]))
    assert expected <= raised, expected - raised


@by_function
def test_docstring_examples_are_doctests(name):
    _, bodies = _sections(inspect.getdoc(getattr(nbs, name)))
    assert re.search(rf"^>>> .*\bnbs\.{name}\(", bodies["Examples"], re.M), bodies["Examples"]
