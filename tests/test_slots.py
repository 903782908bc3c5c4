"""pcpd.daemon.slots: whether a slot's worker still runs, asked of the process itself."""

from __future__ import annotations

import multiprocessing
import os
import time

import psutil

from pcpd.daemon.slots import Slot, exit_status, exited, process_alive

FORK = multiprocessing.get_context("fork")


def _exit(code: int) -> None:
    os._exit(code)


def _zombie() -> int:
    """A child that has exited and is not reaped yet."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid


def test_a_running_process_has_not_exited():
    slot = Slot(0, 0, process=multiprocessing.current_process(), handle=psutil.Process())
    assert not exited(slot)
    assert process_alive(os.getpid())
    assert slot.pid == os.getpid()


def test_a_zombie_counts_as_dead_before_it_is_reaped():
    pid = _zombie()
    try:
        assert exited(Slot(0, 0, handle=psutil.Process(pid)))
        assert not process_alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert not process_alive(pid)


def test_a_reaped_process_and_a_slot_without_one_are_dead():
    process = FORK.Process(target=_exit, args=(3,))
    process.start()
    handle = psutil.Process(process.pid)
    process.join()
    slot = Slot(0, 0, process=process, handle=handle)
    assert exited(slot)
    assert exit_status(process) == "exit code 3"
    assert exited(Slot(1, 1))
    assert Slot(1, 1).pid == 0
