"""The CPU kernels' disk cache: loaded across processes, never stale after an edit of another module.

Numba keys its cache on the kernel's own file only (numba/numba#1833), so an
edit of a helper that a kernel inlines from another module would leave the old
machine code in use. Each case runs a kernel in fresh processes on a copy of
the package with its own ``NUMBA_CACHE_DIR``.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import nbsparse

# bias_grad (in grads.py) inlines scheduling.buckets: rows of output block 0
# and 1 are summed into db[0] and db[1].
RUN = """
import json
import numpy as np
from nbsparse._cpu import grads
db = np.zeros((2, 3))
grads.bias_grad(db, np.array([[[1.0, 1.0, 1.0]], [[2.0, 2.0, 2.0]]]), np.array([[0], [1]]))
stats = grads.bias_grad.stats
print(json.dumps({"db": db[:, 0].tolist(), "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
"""

BUCKETS_RETURN = "    return order, starts\n"
# Every bucket gets another bucket's rows: the two rows swap places in db.
BUCKETS_REVERSED = "    return order[::-1].copy(), starts\n"


@pytest.fixture
def package_copy(tmp_path):
    source = pathlib.Path(nbsparse.__file__).parent
    shutil.copytree(source, tmp_path / "copy" / "nbsparse", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "copy" / "nbsparse"


def run_kernel(package, cache_dir):
    env = {**os.environ, "PYTHONPATH": str(package.parent), "NUMBA_CACHE_DIR": str(cache_dir)}
    env.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=package.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def replace_once(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def test_an_edit_of_a_helper_in_another_module_takes_effect_and_the_unedited_package_still_loads(
        package_copy, tmp_path):
    cache = tmp_path / "cache"
    assert run_kernel(package_copy, cache) == {"db": [1.0, 2.0], "hits": 0, "misses": 1}
    assert run_kernel(package_copy, cache) == {"db": [1.0, 2.0], "hits": 1, "misses": 0}

    helper = package_copy / "_cpu" / "scheduling.py"
    replace_once(helper, BUCKETS_RETURN, BUCKETS_REVERSED)
    assert run_kernel(package_copy, cache) == {"db": [2.0, 1.0], "hits": 0, "misses": 1}

    replace_once(helper, BUCKETS_REVERSED, BUCKETS_RETURN)  # as shipped again: its entry is still there
    assert run_kernel(package_copy, cache) == {"db": [1.0, 2.0], "hits": 1, "misses": 0}


def test_another_nbsparse_version_compiles_afresh(package_copy, tmp_path):
    cache = tmp_path / "cache"
    assert run_kernel(package_copy, cache)["misses"] == 1
    version = package_copy / "_version.py"
    replace_once(version, f'"{nbsparse.__version__}"', f'"{nbsparse.__version__}.post1"')
    assert run_kernel(package_copy, cache) == {"db": [1.0, 2.0], "hits": 0, "misses": 1}
