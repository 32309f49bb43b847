"""The cache of large host arrays that nbsparse recycles (Linux).

Gradients and other results of 4 MiB or more live on huge-page mappings. When
the caller drops such an array (and every view of it), its mapping is kept for
the next request it fits (the same size, or up to half as large) instead of
being unmapped: a training loop asks for the same shapes every step, and a
fresh ``W``-sized array costs page faults that take about as long as the kernel
that fills it. The cache holds at most as many bytes as were in use on these
mappings at once (the least recently freed go first), and at most
:func:`cache_limit`: ``NBSPARSE_HOST_CACHE_MB`` MiB when that is set (0 turns
recycling off; anything but a finite number of 0 or more is a ``ValueError``),
else a quarter of the memory this process may use (the physical memory, or its
cgroup's limit when lower). When a new mapping cannot be made, the cache is
given back to the system and the allocation tried again.

Examples
--------
>>> import nbsparse.memory
>>> released = nbsparse.memory.free_cached_memory()  # bytes given back to the system
>>> nbsparse.memory.cached_bytes()
0
"""

from ._hugepages import cache_limit, cached_bytes, free_cached_memory

__all__ = ["cache_limit", "cached_bytes", "free_cached_memory"]
