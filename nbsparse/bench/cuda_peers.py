"""GPU peers of the benchmark: what a CuPy or PyTorch user writes without nbsparse.

Each builder takes the case's device arrays (CuPy arrays) and returns
``{name: callable}``; every callable returns the op's result, which the
benchmark copies to the host and checks against ``nbsparse._reference`` before
timing it. Outer updates work on a copy of ``o``, as ``sparse_block_outer``
with ``inplace=False`` does. :func:`unavailable` says, for each peer that cannot
run here, why: the report lists them as skipped.
"""

import importlib.util

# PyTorch's AdaptiveLogSoftmaxWithLoss is not the same computation as h_softmax: its
# head scores a shortlist of outputs beside the clusters, and each tail projects the
# input to a smaller size first. It is not timed, and the report says so.
ADAPTIVE_NOTE = ("torch AdaptiveLogSoftmaxWithLoss: not the same computation (a shortlist in the head, "
                 "projected tails), not timed")

CUPY_PEERS = {
    "dot": ("cupy_gather_matmul", "cupy_grouped"),
    "outer": ("cupyx_scatter_add", "cupy_grouped"),
    "h_softmax": ("cupy_two_level",),
}
TORCH_PEERS = {"dot": ("torch_gather_bmm",), "outer": ("torch_index_add",), "h_softmax": ("torch_two_level",)}


def torch_cuda():
    """``torch`` when it is importable and sees a GPU, else None."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def unavailable(op, cupy, torch):
    """``{peer name: reason}`` for the peers of ``op`` that cannot run (no CuPy, no PyTorch CUDA)."""
    out = {}
    if cupy is None:
        out.update({name: "needs CuPy on a GPU" for name in CUPY_PEERS.get(op, ())})
    if torch is None:
        out.update({name: "needs PyTorch with CUDA" for name in TORCH_PEERS.get(op, ())})
    return out


def _pair_groups(cp, x_idx, y_idx, y_blocks):
    """Flat triples sorted by block pair: ``(order, first key of each group, group bounds on the host)``."""
    keys = (x_idx[:, :, None] * y_blocks + y_idx[:, None, :]).ravel()
    order = cp.argsort(keys)
    sorted_keys = keys[order]
    starts = cp.flatnonzero(cp.concatenate((cp.ones(1, bool), sorted_keys[1:] != sorted_keys[:-1])))
    bounds = cp.asnumpy(cp.concatenate((starts, cp.array([keys.size])))).tolist()
    return order, cp.asnumpy(sorted_keys[starts]).tolist(), bounds


def dot_peers(cp, W, h, input_idx, b, output_idx):
    batch, i_win, i_size = h.shape
    o_win, o_blocks, o_size = output_idx.shape[1], W.shape[1], W.shape[3]

    def gather_matmul():
        blocks = W[input_idx[:, None, :], output_idx[:, :, None]].reshape(batch, o_win, i_win * i_size, o_size)
        return cp.matmul(h.reshape(batch, 1, 1, i_win * i_size), blocks)[:, :, 0] + b[output_idx]

    def grouped():
        order, keys, bounds = _pair_groups(cp, input_idx, output_idx, o_blocks)
        rows, ins = order // (i_win * o_win), (order // o_win) % i_win
        gathered = h[rows, ins]
        products = cp.empty((order.size, o_size), h.dtype)
        for g, key in enumerate(keys):
            s, e = bounds[g], bounds[g + 1]
            cp.matmul(gathered[s:e], W[key // o_blocks, key % o_blocks], out=products[s:e])
        unsorted = cp.empty_like(products)
        unsorted[order] = products
        return unsorted.reshape(batch, i_win, o_win, o_size).sum(axis=1) + b[output_idx]

    return {"cupy_gather_matmul": gather_matmul, "cupy_grouped": grouped}


def outer_peers(cp, o, x, y, x_idx, y_idx, alpha):
    import cupyx

    x_win, y_win = x.shape[1], y.shape[1]

    def scatter_add():
        out = o.copy()
        products = (alpha * x[:, :, None, :, None]) * y[:, None, :, None, :]
        cupyx.scatter_add(out, (x_idx[:, :, None], y_idx[:, None, :]), products)
        return out

    def grouped():
        out = o.copy()
        order, keys, bounds = _pair_groups(cp, x_idx, y_idx, o.shape[1])
        rows, ins, outs = order // (x_win * y_win), (order // y_win) % x_win, order % y_win
        xs, ys = x[rows, ins], alpha * y[rows, outs]
        for g, key in enumerate(keys):
            s, e = bounds[g], bounds[g + 1]
            out[key // o.shape[1], key % o.shape[1]] += xs[s:e].T @ ys[s:e]
        return out

    return {"cupyx_scatter_add": scatter_add, "cupy_grouped": grouped}


def hsoftmax_peers(cp, x, K, W1, b1, W2, b2, target, n_outputs):
    """Two levels by hand: the class softmax, then the target class's block (or every block)."""

    def softmax(a):
        e = cp.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def two_level():
        p_class = softmax(x @ W1 + b1)
        if target is None:
            slots = softmax(cp.einsum("ni,cik->nck", x, W2) + b2)
            return (p_class[:, :, None] * slots).reshape(x.shape[0], -1)[:, :n_outputs]
        classes, slots = target // K, target % K
        a = cp.matmul(x[:, None, :], W2[classes])[:, 0] + b2[classes]
        rows = cp.arange(x.shape[0])
        return p_class[rows, classes] * softmax(a)[rows, slots]

    return {"cupy_two_level": two_level}


def torch_peers(op, torch, arrays):
    """``{name: callable}`` of the PyTorch CUDA peers of ``op`` on ``arrays`` (CuPy arrays, shared via DLPack)."""
    t = {k: torch.from_dlpack(v) if hasattr(v, "__dlpack__") else v for k, v in arrays.items()}
    if op == "dot":
        W, h, b, ii, oi = t["W"], t["h"], t["b"], t["input_idx"], t["output_idx"]
        batch, i_win, i_size = h.shape
        o_win, o_size = oi.shape[1], W.shape[3]

        def gather_bmm():
            blocks = W[ii[:, None, :], oi[:, :, None]].reshape(batch * o_win, i_win * i_size, o_size)
            rows = h.reshape(batch, 1, 1, -1).expand(batch, o_win, 1, i_win * i_size)
            return torch.bmm(rows.reshape(batch * o_win, 1, -1), blocks).reshape(batch, o_win, o_size) + b[oi]

        return {"torch_gather_bmm": gather_bmm}
    if op == "outer":
        o, x, y, xi, yi, alpha = (t[k] for k in ("o", "x", "y", "x_idx", "y_idx", "alpha"))
        y_blocks = o.shape[1]
        keys = (xi[:, :, None] * y_blocks + yi[:, None, :]).reshape(-1)

        def index_add():
            out = o.clone()
            flat = out.view(o.shape[0] * y_blocks, o.shape[2], o.shape[3])
            products = alpha * x[:, :, None, :, None] * y[:, None, :, None, :]
            flat.index_add_(0, keys, products.reshape(-1, o.shape[2], o.shape[3]))
            return out

        return {"torch_index_add": index_add}
    if op == "h_softmax" and t.get("target") is not None:
        x, W1, b1, W2, b2, target, K = (t[k] for k in ("x", "W1", "b1", "W2", "b2", "target", "K"))

        def two_level():
            p_class = torch.softmax(x @ W1 + b1, dim=-1)
            classes, slots = target // K, target % K
            a = torch.bmm(x[:, None, :], W2[classes])[:, 0] + b2[classes]
            rows = torch.arange(x.shape[0], device=x.device)
            return p_class[rows, classes] * torch.softmax(a, dim=-1)[rows, slots]

        return {"torch_two_level": two_level}
    return {}
