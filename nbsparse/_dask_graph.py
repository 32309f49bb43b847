"""Graph building for ``nbsparse._dask``: aligned arguments, one task per batch chunk, tree sums.

The graphs are plain task dictionaries (the documented Dask graph specification)
rather than ``blockwise`` layers: ``blockwise`` hands every argument axis that is
not an output axis over as a list of blocks or concatenates it, which would copy
``h`` and the weights in every task. Here each task names exactly one block of
each batch argument and the one key of each shared argument.
"""

import itertools
import math
import operator
import re
from functools import partial

import dask
import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ._kinds import check_sides

SPLIT_EVERY = 8
"""Default fan-in of the reduction trees; ``dask.config.set({"nbsparse.split_every": k})`` changes it.

Lower than Dask's 16 because the partial sums are dense weight-sized arrays: a
combining task holds ``split_every`` of them at once.
"""

ROWS = object()
"""In a task's argument list: the number of rows of the task's batch chunk."""

START = object()
"""In a task's argument list: the index in the whole batch of the chunk's first row."""


def check_kinds(optional=(), **arrays):
    """The NumPy path's kind checks, applied to the chunk type of Dask arrays.

    Returns a prototype of the chunk type (a NumPy or CuPy array), from which the
    results' ``meta`` is made.

    Raises
    ------
    TypeError
        An argument is neither a Dask nor a NumPy/CUDA array, or host and device
        chunks are mixed (the message of the NumPy path).
    ValueError
        A Dask argument has unknown chunk sizes, so its shape cannot be checked.
    """
    chunk_types = {name: a._meta if isinstance(a, da.Array) else a for name, a in arrays.items()}
    check_sides(list(chunk_types), list(chunk_types.values()), optional)
    for name, a in arrays.items():
        if isinstance(a, da.Array) and any(math.isnan(s) for s in a.shape):
            raise ValueError(
                f"{name} has unknown chunk sizes (shape {a.shape}); nbsparse checks shapes before "
                f"building the graph: call {name}.compute_chunk_sizes() first"
            )
    return next(a for a in chunk_types.values() if a is not None)


def single_chunk(name, a, axes, why):
    """ValueError unless the Dask array ``a`` is one chunk along every axis in ``axes``."""
    for axis in axes:
        if len(a.chunks[axis]) > 1:
            raise ValueError(
                f"{name} is chunked along axis {axis} (chunks {a.chunks[axis]}), but {why}: "
                f"rechunk it first, e.g. {name}.rechunk({{{axis}: -1}})"
            )


def common_chunks(chunkings):
    """The coarsest chunking of one axis that refines every chunking in ``chunkings``."""
    if all(c == chunkings[0] for c in chunkings):
        return chunkings[0]
    bounds = sorted(set().union(*(itertools.accumulate(c) for c in chunkings)))
    return tuple(b - a for a, b in zip([0, *bounds[:-1]], bounds))


def split_every():
    """The fan-in of the reduction trees (see ``SPLIT_EVERY``)."""
    k = dask.config.get("nbsparse.split_every", SPLIT_EVERY)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"the Dask config value nbsparse.split_every must be an integer >= 2, got {k!r}")
    return k


class Call:
    """The array arguments of one call as Dask arrays sharing one chunking of the batch axis.

    Parameters
    ----------
    op : str
        The public function's name, the prefix of the graph's key names.
    arrays : dict
        Argument name -> Dask, NumPy or CuPy array, or None for an absent optional one.
    batch : tuple of str
        The arguments whose axis 0 is the batch. They may be chunked along it
        (only); the others are shared by every task and must be one chunk.
    meta : array
        The chunk type, from :func:`check_kinds`.
    """

    def __init__(self, op, arrays, batch, meta):
        self.op, self.meta, self.batch = op, meta, batch
        for name, a in arrays.items():
            if isinstance(a, da.Array):
                if name in batch:
                    single_chunk(name, a, range(1, a.ndim), "only the batch axis (0) may be chunked")
                else:
                    single_chunk(name, a, range(a.ndim), "it is used whole by every batch chunk")
        chunkings = [a.chunks[0] for n, a in arrays.items() if n in batch and isinstance(a, da.Array)]
        rows = next(a.shape[0] for n, a in arrays.items() if n in batch and a is not None)
        self.chunks = common_chunks(chunkings) if chunkings else (rows,)
        self.arrays = {name: self._as_dask(name, a) for name, a in arrays.items()}

    def _name(self, label, public, items, kwargs):
        """A key name unique to this call: the arrays, the literal arguments and keywords."""
        names = {n: a.name for n, a in self.arrays.items() if a is not None}
        literals = ["<rows>" if it is ROWS else "<start>" if it is START else it for it in items]
        return f"{self.op}{label}-{tokenize(public.__qualname__, names, literals, kwargs)}"

    def _as_dask(self, name, a):
        if a is None:
            return None
        if name not in self.batch:
            # A NumPy argument becomes one graph key holding it: every task refers
            # to that key, so it is sent once per worker, not once per task.
            return a if isinstance(a, da.Array) else da.from_array(a, chunks=-1)
        chunks = (self.chunks, *((s,) for s in a.shape[1:]))
        if not isinstance(a, da.Array):
            return da.from_array(a, chunks=chunks)
        return a if a.chunks == chunks else a.rechunk(chunks)

    def _key(self, name, i):
        a = self.arrays[name]
        if a is None:
            return None
        if name in self.batch:
            return (a.name, i, *(0,) * (a.ndim - 1))
        return (a.name, *(0,) * a.ndim)

    def _tasks(self, name, func, items, ndim):
        """``{(name, i, 0...): (func, start_i, *items)}``, one task per batch chunk.

        ``items`` are argument names (replaced by the chunk's block key, or the
        shared array's key), ``ROWS`` (the chunk's row count), ``START`` (its first
        row's index in the batch) or literal values.
        """
        starts = itertools.accumulate(self.chunks, initial=0)
        tasks = {}
        for i, (start, rows) in enumerate(zip(starts, self.chunks)):
            args = [self._key(it, i) if isinstance(it, str) else rows if it is ROWS
                    else start if it is START else it for it in items]
            tasks[(name, i, *(0,) * (ndim - 1))] = (func, start, *args)
        return tasks

    def _graph(self, name, tasks, dependencies=None):
        deps = dependencies or [a for a in self.arrays.values() if a is not None]
        return HighLevelGraph.from_collections(name, tasks, dependencies=deps)

    def chunkwise(self, public, items, tail, dtype, **kwargs):
        """A Dask array ``(batch, *tail)`` whose chunk ``i`` is ``public(*items of chunk i, **kwargs)``."""
        name = self._name("", public, items, kwargs)
        tasks = self._tasks(name, partial(run_chunk, public, **kwargs), items, 1 + len(tail))
        return da.Array(self._graph(name, tasks), name, (self.chunks, *((s,) for s in tail)),
                        meta=meta_from_array(self.meta, 1 + len(tail), dtype))

    def parts(self, public, items, **kwargs):
        """A Dask collection whose block ``i`` is the tuple ``public(*items of chunk i, **kwargs)``.

        Not an array to compute: :meth:`field` and :meth:`field_sum` take its fields apart.
        """
        name = self._name("-parts", public, items, kwargs)
        tasks = self._tasks(name, partial(run_chunk, public, **kwargs), items, 1)
        return da.Array(self._graph(name, tasks), name, ((1,) * len(self.chunks),),
                        meta=meta_from_array(self.meta, 1, object))

    def field(self, parts, k, label, tail, dtype):
        """Field ``k`` of every tuple of ``parts``, a chunk-wise array ``(batch, *tail)``."""
        name = f"{self.op}-{label}-{tokenize(parts.name, k)}"
        pad = (0,) * len(tail)
        tasks = {(name, i, *pad): (operator.getitem, (parts.name, i), k) for i in range(len(self.chunks))}
        return da.Array(self._graph(name, tasks, [parts]), name, (self.chunks, *((s,) for s in tail)),
                        meta=meta_from_array(self.meta, 1 + len(tail), dtype))

    def field_sum(self, parts, k, label, shape, dtype, first=None):
        """The sum over the chunks of field ``k`` of ``parts`` (``k=None``: of the blocks
        themselves), plus the shared argument named ``first``.

        A tree: each task adds at most ``split_every()`` arrays, so no task waits
        for (or holds) the partial sums of every chunk.
        """
        fan_in = split_every()
        added = None if first is None else self.arrays[first].name
        name = f"{self.op}-{label}-{tokenize(parts.name, k, added, fan_in)}"
        if k is None:
            leaves, tasks = [(parts.name, i) for i in range(len(self.chunks))], {}
        else:
            leaves = [(f"{name}-chunk", i) for i in range(len(self.chunks))]
            tasks = {leaf: (operator.getitem, (parts.name, i), k) for i, leaf in enumerate(leaves)}
        deps = [parts]
        root = []
        if first is not None:
            root = [self._key(first, 0)]
            deps.append(self.arrays[first])
        tasks.update(tree_sum(name, leaves, len(shape), fan_in, root))
        return da.Array(self._graph(name, tasks, deps), name, tuple((s,) for s in shape),
                        meta=meta_from_array(self.meta, len(shape), dtype))


    def blocks_sum(self, parts, k, label, values_tail, d, dtype):
        """The sum over the chunks of field ``k`` of ``parts``, each a ``BlockGrad``, as a ``BlockGrad`` of
        two Dask arrays: ``index`` ``(n, d)`` and ``values`` ``(n, *values_tail)``, ``n`` unknown (NaN)
        until computed.

        The same tree as :meth:`field_sum`, merging block lists (:func:`merge_blocks`): a task moves
        and holds only the blocks its chunks touched.
        """
        from ._results import BlockGrad

        fan_in = split_every()
        name = f"{self.op}-{label}-{tokenize(parts.name, k, fan_in)}"
        leaves = [(f"{name}-chunk", i) for i in range(len(self.chunks))]
        tasks = {leaf: (operator.getitem, (parts.name, i), k) for i, leaf in enumerate(leaves)}
        tasks.update(tree_sum(name, leaves, 0, fan_in, add=merge_blocks))
        merged = da.Array(self._graph(name, tasks, [parts]), name, (), meta=meta_from_array(self.meta, 0, object))
        index_name, values_name = f"{name}-index", f"{name}-values"
        index = da.Array(self._graph(index_name, {(index_name, 0, 0): (operator.getitem, (name,), 0)}, [merged]),
                         index_name, ((np.nan,), (d,)), meta=meta_from_array(self.meta, 2, np.intp))
        values_key = (values_name, 0, *(0,) * len(values_tail))
        values = da.Array(self._graph(values_name, {values_key: (operator.getitem, (name,), 1)}, [merged]),
                          values_name, ((np.nan,), *((s,) for s in values_tail)),
                          meta=meta_from_array(self.meta, 1 + len(values_tail), dtype))
        return BlockGrad(index, values)


def tree_sum(name, leaves, ndim, fan_in, root=(), add=None):
    """Tasks adding the arrays at ``leaves`` in groups of ``fan_in``; the total is ``(name, 0, ...)``.

    The keys in ``root`` are added in the last task only (its fan-in grows by as
    many), so they travel to one worker and add no level to the tree.
    """
    add = add_all if add is None else add
    tasks = {}
    for level in itertools.count():
        groups = [leaves[j:j + fan_in] for j in range(0, len(leaves), fan_in)]
        if len(groups) == 1:
            tasks[(name, *(0,) * ndim)] = (add, [*root, *groups[0]])
            return tasks
        leaves = [(f"{name}-sum{level}", j) for j in range(len(groups))]
        tasks.update((key, (add, group)) for key, group in zip(leaves, groups))


def add_all(arrays):
    """The sum of ``arrays`` (NumPy or CuPy) in a new array; a single array is returned as it is."""
    if len(arrays) == 1:
        return arrays[0]
    total = arrays[0] + arrays[1]
    for a in arrays[2:]:
        total += a
    return total


def merge_blocks(grads):
    """The sum of the ``BlockGrad``s ``grads`` (NumPy or CuPy) as one ``BlockGrad``; one is returned as it is.

    Adds as :func:`add_all` adds the dense arrays, so the blocks come out the
    same bits: over the union of the listed blocks, the first two lists added
    with zeros where a list lacks a block, then each further list, zeros
    included (``-0.0 + 0.0`` is ``+0.0``, as in the dense sum).
    """
    from ._results import BlockGrad

    if len(grads) == 1:
        return grads[0]
    xp = _array_module(grads[0].values)
    host_index = [_to_numpy(g.index) for g in grads]
    union = np.unique(np.concatenate(host_index), axis=0) if any(i.size for i in host_index) \
        else host_index[0]
    block_shape = grads[0].values.shape[1:]

    def expanded(k):
        out = xp.zeros((union.shape[0], *block_shape), grads[0].values.dtype)
        if host_index[k].shape[0]:
            rows = _rows_in(union, host_index[k])
            out[xp.asarray(rows)] = grads[k].values
        return out

    total = expanded(0) + expanded(1)
    for k in range(2, len(grads)):
        total += expanded(k)
    return BlockGrad(xp.asarray(union.astype(np.intp)), total)


def _rows_in(union, rows):
    """Positions of the rows of ``rows`` in the sorted, unique ``union`` (each present)."""
    keys = np.ravel_multi_index(tuple(union.T), union.max(axis=0) + 1)
    return np.searchsorted(keys, np.ravel_multi_index(tuple(rows.T), union.max(axis=0) + 1))


def _array_module(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy  # CuPy chunks: CuPy is imported already

    return cupy


def _to_numpy(a):
    return a if isinstance(a, np.ndarray) else a.get()


_POSITION = re.compile(r"^(\w+)\[(\d+)")


def run_chunk(public, start, *args, **kwargs):
    """``public(*args, **kwargs)`` on the batch chunk whose first row is ``start``.

    An IndexError names a position within the chunk; it is re-raised with the
    row counted in the whole batch, so the message is the NumPy path's.
    """
    try:
        return public(*args, **kwargs)
    except IndexError as error:
        match = _POSITION.match(str(error))
        if match is None or start == 0:
            raise
        message = f"{match[1]}[{int(match[2]) + start}{str(error)[match.end():]}"
        raise IndexError(message) from None
