"""The team size of each CPU kernel launch: sized to its work and to the free cores, within what the caller set.

No timing here: the tests check which team a launch gets (by a kernel that
reports the thread count it ran with, or by recording the sizes chosen), that
the caller's thread count is restored, and that results are the same bits for
every team size. What the sizing buys is measured by
``python -m nbsparse.bench --load N``.
"""

import dataclasses
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import BlockGrad, _host, _load, _team, _threads, optim
from nbsparse._cpu import tuning
from nbsparse._optable import OPS, problem
from nbsparse._selfcheck import SIZES

needs_two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                       reason="needs NUMBA_NUM_THREADS >= 2")


@numba.njit(parallel=True)
def threads_seen(out):
    """``out[:] =`` the thread count the launch ran with (the same in every iteration)."""
    for i in numba.prange(out.shape[0]):
        out[i] = numba.get_num_threads()


def launch_and_see(items):
    out = np.zeros(4, np.intp)
    _team.run(threads_seen, (out,), items, MIN)
    assert (out == out[0]).all()
    return int(out[0])


@pytest.fixture
def machine(monkeypatch):
    """Set the machine ``_team`` sees: ``machine(cores, runnable)``; adaptation on, no spinning workers."""
    monkeypatch.setattr(_team, "ADAPTIVE", True)
    monkeypatch.setattr(_team, "_last_team_end", float("-inf"))

    def set_machine(cores, runnable):
        monkeypatch.setattr(_load, "available_cores", lambda: cores)
        monkeypatch.setattr(_load, "runnable_tasks", lambda: runnable)

    set_machine(2, 1)
    return set_machine


@pytest.fixture
def callers_threads():
    """Run the test with the caller's thread count at 2; restored after."""
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield 2
    numba.set_num_threads(before)


MIN = tuning.MIN_ITEMS_PER_THREAD["gemv"]


# --------------------------------------------------------------------------- the size rule

@pytest.mark.parametrize(("items", "threads"), [(0, 1), (MIN, 1), (2 * MIN - 1, 1), (2 * MIN, 2),
                                                (3 * MIN, 3), (100 * MIN, 4)])
def test_an_idle_machine_gives_one_thread_per_min_items_up_to_the_callers_count(machine, items, threads):
    machine(8, 1)
    assert _team.size(4, items, MIN) == threads


@pytest.mark.parametrize(("cores", "runnable", "threads"), [
    (2, 1, 2),  # idle: only this thread runs
    (2, 2, 1),  # one other task: one core left
    (2, 3, 1),  # two others: none left, but a launch always has its own thread
    (4, 2, 3),
    (8, 3, 4),  # the caller's count still bounds it
])
def test_other_runnable_tasks_take_cores_from_the_team(machine, cores, runnable, threads):
    machine(cores, runnable)
    assert _team.size(4 if cores > 2 else 2, 100 * MIN, MIN) == threads


def test_the_callers_count_of_one_is_never_raised(machine):
    assert _team.size(1, 100 * MIN, MIN) == 1


def test_with_adaptation_off_every_launch_gets_the_callers_count(machine, monkeypatch):
    machine(2, 5)
    monkeypatch.setattr(_team, "ADAPTIVE", False)
    assert _team.size(2, 0, MIN) == 2
    assert _team.size(3, 100 * MIN, MIN) == 3


def test_this_processs_spinning_workers_are_not_counted_as_load(machine, monkeypatch):
    machine(2, 2)  # this thread and one more runnable
    monkeypatch.setattr(_team, "_last_team", 2)
    monkeypatch.setattr(_team, "_last_team_end", 100.0)
    assert _team.others_running(now=100.0 + _team.SPIN_S / 2) == 0  # the worker of the last launch
    assert _team.others_running(now=100.0 + 2 * _team.SPIN_S) == 1  # asleep by now: someone else's


def test_adaptation_is_read_from_the_environment():
    code = "from nbsparse import _team; print(_team.ADAPTIVE)"
    for value, expected in (("0", "False"), ("1", "True"), (None, "True")):
        env = {k: v for k, v in os.environ.items() if k != "NBSPARSE_ADAPT_THREADS"}
        if value is not None:
            env["NBSPARSE_ADAPT_THREADS"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == expected, value


# --------------------------------------------------------------------------- launches

@needs_two_threads
def test_a_small_launch_runs_on_one_thread_and_restores_the_callers_count(machine, callers_threads):
    assert launch_and_see(MIN) == 1
    assert numba.get_num_threads() == callers_threads


@needs_two_threads
def test_a_large_launch_on_an_idle_machine_runs_on_the_callers_count(machine, callers_threads):
    assert launch_and_see(100 * MIN) == 2
    assert numba.get_num_threads() == callers_threads


@needs_two_threads
def test_a_large_launch_on_a_busy_machine_runs_on_one_thread(machine, callers_threads):
    machine(2, 3)
    assert launch_and_see(100 * MIN) == 1
    assert numba.get_num_threads() == callers_threads


@needs_two_threads
def test_the_callers_set_num_threads_bounds_every_launch(machine, callers_threads):
    numba.set_num_threads(1)
    assert launch_and_see(100 * MIN) == 1
    assert numba.get_num_threads() == 1


@needs_two_threads
def test_the_callers_count_is_restored_when_the_kernel_raises(machine, callers_threads):
    def failing(*args):
        raise MemoryError

    with pytest.raises(MemoryError):
        _team.run(failing, (), MIN, MIN)  # on one thread: the count was lowered
    assert numba.get_num_threads() == callers_threads


def every_launch(monkeypatch):
    """Record ``(kernel name, items, parallel)`` of every ``_threads.launch`` while the test runs."""
    launches = []
    launch = _threads.launch

    def recording(kernel, *args, items=None, min_items_per_thread=None):
        options = getattr(kernel, "targetoptions", {})
        launches.append((kernel.__name__, items, bool(options.get("parallel"))))
        assert (items is None) == (min_items_per_thread is None)
        if items is not None:
            assert min_items_per_thread == tuning.MIN_ITEMS_PER_THREAD[kernel.__name__]
        return launch(kernel, *args, items=items, min_items_per_thread=min_items_per_thread)

    monkeypatch.setattr(_threads, "launch", recording)
    return launches


def optimizer_steps(dtype):
    """sgd and adam, on a dense gradient and on a BlockGrad: the launches of ``nbsparse.optim``."""
    param = np.ones((3, 4, 2), dtype)
    state = optim.AdamState.zeros_like(param)
    for grad in (np.ones_like(param), BlockGrad(np.array([[0], [2]]), np.ones((2, 4, 2), dtype))):
        optim.sgd(param, grad, 0.1)
        optim.adam(param, grad, state)


def inference(dtype):
    """h_softmax_logprob and h_softmax_sample: the launches of ``nbsparse.inference``."""
    rng = np.random.default_rng(0)
    x, W1, b1 = rng.normal(size=(4, 3)).astype(dtype), np.zeros((3, 2), dtype), np.zeros(2, dtype)
    W2, b2 = np.zeros((2, 3, 4), dtype), np.zeros((2, 4), dtype)
    nbs.h_softmax_logprob(x, 4, 7, 2, 4, W1, b1, W2, b2, np.array([[0, 6]] * 4))
    nbs.h_softmax_sample(x, 4, 7, 2, 4, W1, b1, W2, b2, seed=0)


def test_every_parallel_launch_states_its_work_and_has_an_entry(monkeypatch):
    launches = every_launch(monkeypatch)
    for dtype in (np.float32, np.float64):
        arrays = problem(SIZES, dtype, np.random.default_rng(0))
        for op in OPS:
            op.func(**op.kwargs(arrays))
            if op.gradient:  # and as block lists
                op.func(**op.kwargs(arrays), sparse=True)
        optimizer_steps(dtype)
        hsm = [arrays[name] for name in ("x", "batch_size", "n_outputs", "n_classes", "n_outputs_per_class",
                                         "W1", "b1", "W2", "b2")]
        nbs.h_softmax_topk(*hsm, 3)
        inference(dtype)
    parallel = {name for name, _, is_parallel in launches if is_parallel}
    with_items = {name for name, items, _ in launches if items is not None}
    assert parallel, "no parallel kernel was launched"
    assert parallel <= with_items, f"parallel kernels launched without items: {parallel - with_items}"
    assert with_items <= set(tuning.MIN_ITEMS_PER_THREAD)
    # Every entry is used: a kernel renamed or removed leaves no stale entry behind.
    assert set(tuning.MIN_ITEMS_PER_THREAD) == with_items
    assert all(items >= 0 for _, items, _ in launches if items is not None)


def test_the_host_counts_multiply_adds_of_a_block_product():
    a, b = np.zeros((3, 2, 5)), np.zeros((3, 4, 7))
    assert _host._multiply_adds(a, b) == 3 * 2 * 5 * 4 * 7


# --------------------------------------------------------------------------- results

@needs_two_threads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_op_gives_the_same_bits_on_any_team_size(monkeypatch, callers_threads, dtype):
    # Large enough that every kernel cuts its work into several units.
    sizes = dataclasses.replace(SIZES, batch=256, softmax_width=300)
    arrays = problem(sizes, dtype, np.random.default_rng(1))
    results = {}
    for threads in (1, 2):
        monkeypatch.setattr(_team, "size", lambda callers, items, min_items, t=threads: t)
        for op in OPS:
            args = op.kwargs(arrays)
            if op.inplace:
                args["o"] = args["o"].copy()
            result = op.func(**args)
            results.setdefault(op.name, []).append(tuple(result) if isinstance(result, tuple) else (result,))
    for name, (one, two) in results.items():
        for x, y in zip(one, two, strict=True):
            assert x.tobytes() == y.tobytes(), name


# --------------------------------------------------------------------------- reading the load

@pytest.fixture
def loadavg(monkeypatch, tmp_path):
    """Point ``_load`` at a file of ours: ``loadavg(text)`` writes it and forgets the last reading."""
    path = tmp_path / "loadavg"
    monkeypatch.setattr(_load, "LOADAVG", str(path))
    monkeypatch.setattr(_load, "_fd", None)
    monkeypatch.setattr(_load, "_sample_at", float("-inf"))

    monkeypatch.setattr(_load, "_last", 1 << 30)

    def write(text, forget=True):
        path.write_text(text)
        monkeypatch.setattr(_load, "_sample_at", float("-inf"))
        if forget:  # no earlier reading to take the lower of
            monkeypatch.setattr(_load, "_last", 1 << 30)

    yield write
    if _load._fd:
        os.close(_load._fd)


def test_the_runnable_count_is_the_fourth_field(loadavg):
    loadavg("0.43 0.78 0.91 5/108 2640\n")
    assert _load.runnable_tasks() == 5
    loadavg("1.00 1.00 1.00 12/300 77\n")  # the same descriptor, read again from the start
    assert _load.runnable_tasks() == 12


def test_a_task_counts_once_two_readings_have_seen_it(loadavg):
    loadavg("0 0 0 1/9 1")
    assert _load.runnable_tasks() == 1
    loadavg("0 0 0 2/9 1", forget=False)  # one reading sees a second task: not yet
    assert _load.runnable_tasks() == 1
    loadavg("0 0 0 1/9 1", forget=False)  # gone: it was a spike
    assert _load.runnable_tasks() == 1
    loadavg("0 0 0 3/9 1", forget=False)
    assert _load.runnable_tasks() == 1
    loadavg("0 0 0 3/9 1", forget=False)  # seen twice: counted
    assert _load.runnable_tasks() == 3
    loadavg("0 0 0 1/9 1", forget=False)  # fewer tasks count at once
    assert _load.runnable_tasks() == 1


@pytest.mark.parametrize("text", ["", "garbage", "0.1 0.2 0.3 x/4 5", "0.1 0.2"])
def test_an_unreadable_load_counts_as_none(loadavg, text):
    loadavg(text)
    assert _load.runnable_tasks() == 0


def test_a_missing_loadavg_counts_as_no_load(monkeypatch, tmp_path):
    monkeypatch.setattr(_load, "LOADAVG", str(tmp_path / "absent"))
    monkeypatch.setattr(_load, "_fd", None)
    monkeypatch.setattr(_load, "_sample_at", float("-inf"))
    assert _load.runnable_tasks() == 0
    assert _load._fd is False


def test_a_reading_is_reused_for_sample_s(loadavg, monkeypatch):
    loadavg("0 0 0 3/9 1")
    monkeypatch.setattr(_load, "SAMPLE_S", 3600.0)
    assert _load.runnable_tasks() == 3
    with open(_load.LOADAVG, "w") as f:
        f.write("0 0 0 7/9 1")
    assert _load.runnable_tasks() == 3  # within SAMPLE_S: the last reading
    monkeypatch.setattr(_load, "SAMPLE_S", 0.0)
    _load.runnable_tasks()
    assert _load.runnable_tasks() == 7  # seen by two readings


def test_available_cores_is_the_affinity():
    assert _load.available_cores() == len(os.sched_getaffinity(0))
