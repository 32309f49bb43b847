"""One description of each public op's array arguments, and the routing it drives.

A public function is written as an implementation taking a keyword-only
``backend`` and decorated with :func:`array_op`, which names the array
parameters. The decorator builds the public function: a call with a Dask array
among them goes to the function of the same name in ``nbsparse._dask`` (given
the public function to run on each chunk); any other call gets its backend from
the kinds of its arrays (``nbsparse._backend.select``) and runs the
implementation with it. The public function keeps the implementation's name,
docstring (with its doctests) and signature, less ``backend``.
"""

import functools
import inspect
import operator

from ._backend import select
from ._kinds import any_dask_array

_ABSENT = object()


def array_op(*arrays, optional=(), first=None):
    """Decorator: the public function of the implementation it decorates.

    Parameters
    ----------
    *arrays : str
        The names of the array parameters, in the order the kind errors list them.
    optional : tuple of str
        Array parameters that may be None (then skipped by the kind checks).
    first : callable, optional
        A check that runs before any other, even on the Dask path, given the
        dict of the array arguments (e.g. a loss refusing ``target=None``).

    Returns
    -------
    callable
        A decorator. The implementation it takes has the public signature plus a
        keyword-only ``backend`` parameter; a ``deterministic`` parameter, when
        the op has one, is passed on to the backend selection too.

    Notes
    -----
    Calls with missing, surplus or unknown arguments are passed straight to the
    implementation, so they raise Python's own TypeError before any check.
    """

    def decorate(impl):
        return _ArrayOp(impl, arrays, optional, first).public

    return decorate


class _ArrayOp:
    """The public function of one op, and what it needs to route a call."""

    def __init__(self, impl, arrays, optional, first):
        signature = inspect.signature(impl)
        params = [p for name, p in signature.parameters.items() if name != "backend"]
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        self.n_positional = len(positional)
        self.keywords = frozenset(p.name for p in params)
        # (name, position or None if keyword-only, default or _ABSENT) per array parameter
        self.where = tuple(
            (name, positional.index(name) if name in positional else None,
             _ABSENT if signature.parameters[name].default is inspect.Parameter.empty
             else signature.parameters[name].default)
            for name in arrays)
        # The common call passes every array positionally and only keyword-only
        # options by keyword: then one C-level getter picks the arrays (about 1 us
        # less per call than the general path, on calls of 20 to 40 us).
        positions = [position for _, position, _ in self.where]
        if None in positions:
            self.fast_from = self.n_positional + 1  # never taken
        else:
            self.fast_from = max(positions) + 1
            self.pick = (operator.itemgetter(*positions) if len(positions) > 1
                         else lambda args, at=positions[0]: (args[at],))
        self.keyword_only = frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY)

        @functools.wraps(impl)
        def public(*args, **kwargs):
            found = self.arrays(args, kwargs)
            if found is None:  # a malformed call: Python's own TypeError (about the public parameters)
                return impl(*args, **kwargs)
            if first is not None:
                first(dict(zip(arrays, found)))
            if any_dask_array(found):
                from . import _dask  # imports Dask, which the caller has imported already

                return getattr(_dask, impl.__name__)(public, *args, **kwargs)
            backend = select(arrays, found, optional, kwargs.get("deterministic", False))
            return impl(*args, **kwargs, backend=backend)

        public.__signature__ = signature.replace(parameters=params)
        self.public = public

    def arrays(self, args, kwargs):
        """The array arguments of a call, in the order of the op's names; None if the call is malformed."""
        if self.fast_from <= len(args) <= self.n_positional and (
                not kwargs or kwargs.keys() <= self.keyword_only):
            return self.pick(args)
        if len(args) > self.n_positional or (kwargs and not kwargs.keys() <= self.keywords):
            return None
        found = []
        for name, position, default in self.where:
            if position is not None and position < len(args):
                if kwargs and name in kwargs:  # given twice
                    return None
                found.append(args[position])
            else:
                value = kwargs.get(name, default)
                if value is _ABSENT:
                    return None
                found.append(value)
        return found
