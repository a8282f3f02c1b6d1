"""A task beside the caller: run in a forked child when that is safe, in the caller otherwise, and never lost."""

import os
import threading
import time

import pytest

from synccl._beside import Beside, can_fork, map_beside

needs_fork = pytest.mark.skipif(not can_fork(), reason="forking a helper needs Linux, a second CPU and no other Python thread")


@needs_fork
def test_the_task_runs_in_a_child_and_its_value_comes_back():
    parent = os.getpid()
    with Beside(lambda: (os.getpid(), list(range(5)))) as helper:
        pid, value = helper.result()
    assert pid != parent and value == [0, 1, 2, 3, 4]


@needs_fork
def test_a_task_that_raises_in_the_child_raises_in_the_caller():
    def task():
        raise KeyError("chunk 7")

    with Beside(task) as helper, pytest.raises(KeyError, match="chunk 7"):
        helper.result()


@needs_fork
def test_a_child_that_dies_is_replaced_by_the_caller():
    parent = os.getpid()

    def task():
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return "computed here"

    with Beside(task) as helper:
        assert helper.result() == "computed here"


@needs_fork
def test_leaving_the_block_early_stops_the_child():
    with pytest.raises(RuntimeError, match="caller failed"), Beside(lambda: time.sleep(60)) as helper:
        child = helper._pid
        raise RuntimeError("caller failed")
    assert child is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # already reaped: no zombie, no stray process


def test_no_fork_while_another_python_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not can_fork()
        with Beside(os.getpid) as helper:
            assert helper.result() == os.getpid()
    finally:
        stop.set()
        thread.join()


@needs_fork
def test_a_child_reaped_by_someone_else_is_replaced_by_the_caller():
    import signal

    def reap_everything(*_):
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass

    previous = signal.signal(signal.SIGCHLD, reap_everything)
    try:
        with Beside(lambda: (time.sleep(0.2), "done")[1]) as helper:
            time.sleep(0.5)  # the child exits meanwhile and the handler reaps it
            assert helper.result() == "done"
    finally:
        signal.signal(signal.SIGCHLD, previous)


#: One object in every value: the child's values keep it shared (one pickle stream, one memo).
SHARED = ["chunk table"]


@needs_fork
def test_map_beside_is_the_map_and_both_processes_take_a_share():
    parent = os.getpid()

    def work(i):
        time.sleep(0.002)
        return i * i, os.getpid(), SHARED

    values = map_beside(work, 300)
    assert [v[0] for v in values] == [i * i for i in range(300)]
    mine = [i for i, v in enumerate(values) if v[1] == parent]
    theirs = [i for i, v in enumerate(values) if v[1] != parent]
    assert mine and theirs and max(mine) < min(theirs)  # the caller from the front, the child from the back
    assert len({id(v[2]) for i, v in enumerate(values) if i in theirs}) == 1


@needs_fork
def test_map_beside_makes_the_share_of_a_child_that_dies_or_raises():
    parent = os.getpid()

    def dies(i):
        if os.getpid() != parent and i < 90:
            os.kill(os.getpid(), 9)
        return i, os.getpid()

    def raises(i):
        if os.getpid() != parent:
            raise KeyError(i)
        return i, os.getpid()

    for work in (dies, raises):
        values = map_beside(work, 100)
        assert [v[0] for v in values] == list(range(100))
        assert all(pid == parent for _, pid in values[:90])


@needs_fork
def test_map_beside_raises_what_the_work_raises():
    def work(i):
        if i == 3:
            raise ValueError("rank 3 has no channel")
        return i

    with pytest.raises(ValueError, match="rank 3 has no channel"):
        map_beside(work, 10)


def test_map_beside_runs_in_the_caller_where_it_cannot_fork():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert map_beside(lambda i: (i, os.getpid()), 4) == [(i, os.getpid()) for i in range(4)]
    finally:
        stop.set()
        thread.join()
