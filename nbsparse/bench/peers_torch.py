"""PyTorch CPU peers, used only when torch is importable (it is never required).

Not exercised by the test suite, where torch is not installed. Each peer returns
NumPy arrays so the benchmark checks it like the NumPy peers.
"""

import importlib.util


def available():
    return importlib.util.find_spec("torch") is not None


def dot_peers(W, h, input_idx, b, output_idx):
    """``{"torch_gather_bmm": f}``: gather the blocks, one batched matmul."""
    import torch

    Wt, ht, bt = torch.from_numpy(W), torch.from_numpy(h), torch.from_numpy(b)
    ii, oi = torch.from_numpy(input_idx), torch.from_numpy(output_idx)
    batch, i_win, i_size = h.shape
    o_win, o_size = output_idx.shape[1], W.shape[3]

    def gather_bmm():
        blocks = Wt[ii[:, None, :], oi[:, :, None]].reshape(batch * o_win, i_win * i_size, o_size)
        rows = ht.reshape(batch, 1, 1, i_win * i_size).expand(batch, o_win, 1, i_win * i_size)
        out = torch.bmm(rows.reshape(batch * o_win, 1, -1), blocks).reshape(batch, o_win, o_size)
        return (out + bt[oi]).numpy()

    return {"torch_gather_bmm": gather_bmm}


def outer_peers(o, x, y, x_idx, y_idx, alpha):
    """``{"torch_index_add": f}``: every outer product, scattered with ``index_add_`` in place."""
    import torch

    ot = torch.from_numpy(o)  # shares memory with o: the update is in place
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    y_blocks = o.shape[1]
    flat = ot.view(o.shape[0] * y_blocks, o.shape[2], o.shape[3])
    keys = torch.from_numpy((x_idx[:, :, None] * y_blocks + y_idx[:, None, :]).ravel())

    def index_add():
        products = alpha * xt[:, :, None, :, None] * yt[:, None, :, None, :]
        flat.index_add_(0, keys, products.reshape(-1, o.shape[2], o.shape[3]))
        return o

    return {"torch_index_add": index_add}
