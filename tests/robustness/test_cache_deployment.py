"""The kernels' disk cache where nbsparse is deployed: read-only, damaged, full. A call never fails for it.

Every case runs fresh processes (bounded in time) with their own cache
location. The read-only and full-disk cases need a read-only or full file
system: as root a private mount (``unshare --mount``), otherwise ``chmod`` and
a file-size limit.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import nbsparse

TIMEOUT_S = 120
WARNING = "KernelCacheWarning"

# Eight one-line kernels, each called with an integer and a float: two cache
# entries each, so that damage can hit the index or one entry's data.
N_KERNELS = 8
KERNELS = "from nbsparse._cpu.jit import cached_jit\n" + "".join(
    f"\n\n@cached_jit()\ndef add_{i}(x):\n    return x + {i}\n" for i in range(N_KERNELS))
CALL_KERNELS = f"""
import json, warnings
import cache_kernels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    kernels = []
    for i in range({N_KERNELS}):
        add = getattr(cache_kernels, f"add_{{i}}")
        kernels.append({{"right": [add(5), add(0.5)] == [5 + i, 0.5 + i],
                        "hits": sum(add.stats.cache_hits.values()),
                        "misses": sum(add.stats.cache_misses.values())}})
print(json.dumps({{"kernels": kernels, "warnings": [str(w.message) for w in caught]}}))
"""
# A public op: nbsparse.softmax, one parallel kernel.
CALL_SOFTMAX = """
import json
import numpy as np
import nbsparse
from nbsparse._cpu.softmax import softmax_rows
y = nbsparse.softmax(np.array([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]]))
stats = softmax_rows.stats
print(json.dumps({"right": bool(np.allclose(y.sum(axis=1), 1.0) and np.allclose(y[1], 1 / 3)),
                  "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def environment(**variables):
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "XDG_CACHE_HOME")}
    return {**env, **variables}


def run(prefix, code, env, cwd):
    """Run ``code`` under ``python -W error`` (after the command ``prefix``); its last line's JSON and its stderr."""
    done = subprocess.run([*prefix, sys.executable, "-W", "error", "-c", code], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def as_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def in_private_mounts(mounts):
    """A command prefix that runs the rest after the shell commands ``mounts`` in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount privately as root")
    script = " && ".join(mounts) + ' || exit 97; exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount privately here: {probe.stderr[-200:]}")
    return prefix


def quoted(path):
    return shlex.quote(str(path))


@pytest.fixture
def read_only():
    """``make(paths)``: a command prefix under which ``paths`` are read-only."""
    changed = []

    def make(paths):
        if as_root():  # root writes through any mode bits: bind-mount them read-only
            return in_private_mounts([f"mount --bind -o ro {quoted(p)} {quoted(p)}" for p in paths])
        for path in paths:
            subprocess.run(["chmod", "-R", "a-w", str(path)], check=True, timeout=30)
            changed.append(path)
        return []

    yield make
    for path in changed:
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True, timeout=30)


def install(site):
    """A copy of the package as an install leaves it (no compiled kernels) in the folder ``site``."""
    source = pathlib.Path(nbsparse.__file__).parent
    shutil.copytree(source, site / "nbsparse", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_a_read_only_install_uses_its_precompiled_cache_or_compiles_in_memory(tmp_path, read_only):
    home, precompiled, bare = tmp_path / "home", install(tmp_path / "precompiled"), install(tmp_path / "bare")
    home.mkdir()
    # Compiled where it is installed while that is writable (no NUMBA_CACHE_DIR): the package's __pycache__.
    compiled, _ = run([], CALL_SOFTMAX, environment(HOME=str(home), PYTHONPATH=str(precompiled)), tmp_path)
    assert compiled == {"right": True, "hits": 0, "misses": 1}
    before = {path: files_under(path) for path in (home, precompiled, bare)}
    prefix = read_only([home, precompiled, bare])

    loaded, stderr = run(prefix, CALL_SOFTMAX, environment(HOME=str(home), PYTHONPATH=str(precompiled)), tmp_path)
    assert loaded == {"right": True, "hits": 1, "misses": 0}
    assert WARNING not in stderr

    compiled, stderr = run(prefix, CALL_SOFTMAX, environment(HOME=str(home), PYTHONPATH=str(bare)), tmp_path)
    assert compiled == {"right": True, "hits": 0, "misses": 1}
    assert stderr.count(WARNING) == 1 and "NUMBA_CACHE_DIR" in stderr
    assert {path: files_under(path) for path in before} == before  # nothing written


def test_a_full_cache_disk_compiles_and_warns_once(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    if as_root():
        prefix = in_private_mounts([f"mount -t tmpfs -o size=64k tmpfs {quoted(cache)}",
                                    f"(head -c 1M /dev/zero > {quoted(cache / 'filler')} 2>/dev/null; true)"])
    else:  # no mount: a file-size limit of one block (Numba's semaphores fit, no cache entry does) refuses the
        # bytes as a full disk would
        prefix = ["sh", "-c", 'ulimit -f 1 && trap "" XFSZ && exec "$@"', "sh"]
    site = install(tmp_path / "site")  # no kernel in the package's own cache to load instead
    result, stderr = run(prefix, CALL_SOFTMAX, environment(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(site)), tmp_path)
    assert result == {"right": True, "hits": 0, "misses": 1}
    assert stderr.count(WARNING) == 1


def entry(cache, kernel, suffix):
    """The file ``suffix`` (``nbi``, ``1.nbc``, ...) of ``add_{kernel}``'s cache entry."""
    (path,) = cache.rglob(f"cache_kernels.add_{kernel}-*.{suffix}")
    return path


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def zero(path):
    path.write_bytes(bytes(path.stat().st_size))


def scramble(path):
    path.write_bytes(np.random.default_rng(7).bytes(path.stat().st_size))


def swap(a, b):
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)


def test_a_damaged_cache_is_replaced_with_one_warning_and_the_next_process_runs_clean(tmp_path):
    (tmp_path / "cache_kernels.py").write_text(KERNELS)
    cache = tmp_path / "cache"
    env = environment(NUMBA_CACHE_DIR=str(cache),
                      PYTHONPATH=os.pathsep.join([str(tmp_path), str(pathlib.Path(nbsparse.__file__).parents[1])]))
    warm, _ = run([], CALL_KERNELS, env, tmp_path)
    assert all(k == {"right": True, "hits": 0, "misses": 2} for k in warm["kernels"])

    for kernel, damage in enumerate([truncate, zero, scramble]):
        damage(entry(cache, kernel, "nbi"))  # kernels 0-2: the index, both entries lost
        damage(entry(cache, kernel + 3, "1.nbc"))  # kernels 3-5: the integer entry's data
    swap(entry(cache, 6, "1.nbc"), entry(cache, 6, "2.nbc"))  # each entry holds the other signature's code
    entry(cache, 7, "1.nbc").write_bytes(entry(cache, 3, "2.nbc").read_bytes())  # another kernel's code
    lost = [2, 2, 2, 1, 1, 1, 2, 1]

    repaired, stderr = run([], CALL_KERNELS, env, tmp_path)
    assert [k["right"] for k in repaired["kernels"]] == [True] * N_KERNELS
    assert [k["misses"] for k in repaired["kernels"]] == lost
    assert [k["hits"] for k in repaired["kernels"]] == [2 - n for n in lost]
    assert len(repaired["warnings"]) + stderr.count(WARNING) == 1, (repaired["warnings"], stderr)

    clean, stderr = run([], CALL_KERNELS, env, tmp_path)
    assert clean == {"kernels": [{"right": True, "hits": 2, "misses": 0}] * N_KERNELS, "warnings": []}
    assert WARNING not in stderr
