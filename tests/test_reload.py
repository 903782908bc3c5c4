"""pcpd.daemon.reload: which configs may replace a running one, and stopping a worker for it."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from pathlib import Path

import pytest

from pcpd.config.load import load_settings, parse_settings, replace_path
from pcpd.daemon.reload import Reload, load_reload, reload_problem, stop_for_reload
from pcpd.daemon.slots import Slot, WorkerSlots
from pcpd.model.arena import C_STATE, C_STOP, Arena, Geometry
from workers.cpu import SharedLocks
from workers.worker import STATE_EXITED

MIXED = Path(__file__).parent / "data" / "configs" / "mixed.toml"


def test_reload_problems():
    base = load_settings(str(MIXED))
    same = dataclasses.replace(base, seed=99)
    assert reload_problem(base, same, "legacy", None) == ""
    assert reload_problem(base, replace_path(base, "policy.name", "compound"), "legacy", None) == ""
    bigger = replace_path(base, "arena.memory", "32MiB")
    assert "needs a restart" in reload_problem(base, bigger, "legacy", None)
    one_cpu = parse_settings(MIXED.read_text().replace("cpus = [0, 1]", "cpus = [0]"), "x.toml")
    assert "cpus changed" in reload_problem(base, one_cpu, "legacy", None)
    memdesc = replace_path(base, "policy.name", "memdesc")
    assert "page array" in reload_problem(base, memdesc, "legacy", None)
    # --policy memdesc on the command line outranks the file's policy
    assert reload_problem(base, replace_path(base, "policy.name", "compound"), "memdesc", "memdesc") == ""


def test_one_memdesc_policy_may_replace_another():
    base = replace_path(load_settings(str(MIXED)), "policy.name", "memdesc")
    other = replace_path(base, "policy.name", "memdesc-pcpdesc")
    assert reload_problem(base, other, "memdesc", None) == ""
    assert "page array" in reload_problem(base, replace_path(base, "policy.name", "legacy"), "memdesc", None)


def test_a_valid_config_is_accepted_with_its_policy(tmp_path):
    running = load_settings(str(MIXED))
    path = tmp_path / "run.toml"
    path.write_text(MIXED.read_text().replace("seed = 3", "seed = 4") + '\n[policy]\nname = "compound"\n')
    accepted = load_reload(str(path), running, "legacy", None)
    assert accepted == Reload(load_settings(str(path)), "compound")
    assert accepted.settings.seed == 4
    # the command line's --policy stays in force
    forced = load_reload(str(path), running, "legacy", "legacy")
    assert forced is not None and forced.policy == "legacy"


@pytest.mark.parametrize("change, logged", [
    ({"": "\n[pcp]\nbach = 4\n"}, "pcp.bach"),                           # a misspelt key
    ({'memory = "16MiB"': 'memory = "32MiB"'}, "needs a restart"),
    ({"cpus = [0, 1]": "cpus = [0]"}, "cpus changed"),
])
def test_a_rejected_config_is_logged_in_one_line(tmp_path, caplog, change, logged):
    running = load_settings(str(MIXED))
    text = MIXED.read_text()
    for old, new in change.items():
        text = text + new if not old else text.replace(old, new)
    path = tmp_path / "run.toml"
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="pcpd.daemon"):
        assert load_reload(str(path), running, "legacy", None) is None
    (record,) = caplog.records
    assert record.getMessage().startswith("reload rejected, the running config stays: ")
    assert logged in record.getMessage() and "\n" not in record.getMessage()


def test_a_missing_file_is_rejected(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="pcpd.daemon"):
        assert load_reload(str(tmp_path / "gone.toml"), load_settings(str(MIXED)), "legacy", None) is None
    assert "reload rejected" in caplog.text and "gone.toml" in caplog.text


def test_the_built_in_config_has_nothing_to_reload(caplog):
    with caplog.at_level(logging.WARNING, logger="pcpd.daemon"):
        assert load_reload(None, load_settings(str(MIXED)), "legacy", None) is None
    assert "nothing to reload" in caplog.text


def _exit_with(name: str, code: int) -> None:
    """A worker's end: a clean one says so in its C_STATE word first."""
    arena = Arena.attach(name)
    if code == 0:
        arena.cpuctl[0, C_STATE] = STATE_EXITED
    arena.close()
    raise SystemExit(code)


@pytest.fixture
def arena():
    a = Arena.create(Geometry(512, 64, 1, ring_slots=16))
    yield a
    try:
        a.close()
    finally:
        a.unlink()


def _workers(arena: Arena, slot: Slot) -> WorkerSlots:
    return WorkerSlots([slot], multiprocessing.get_context("fork"), arena, SharedLocks.local())


@pytest.mark.parametrize("code, clean", [(0, True), (3, False)])
def test_stop_for_reload_says_whether_the_worker_left_cleanly(arena, code, clean):
    process = multiprocessing.get_context("fork").Process(target=_exit_with, args=(arena.name, code))
    process.start()
    slot = Slot(0, 0, process=process)
    assert stop_for_reload(_workers(arena, slot), slot, timeout=30.0) is clean
    assert arena.cpuctl[0, C_STOP] == 1                 # the worker was asked to stop


def test_the_workers_own_word_decides_not_a_lost_forkservers_exit_code(arena):
    """A worker whose forkserver died reads exitcode 255 while it still runs: joining it
    waits for the process itself, and its C_STATE says how it ended."""
    process = multiprocessing.get_context("fork").Process(target=_exit_with, args=(arena.name, 0))
    slot = Slot(0, 0, process=process)
    process.start()
    process.join = lambda timeout=None: None                # what a dead forkserver's join does
    assert stop_for_reload(_workers(arena, slot), slot, timeout=30.0) is True
    assert arena.cpuctl[0, C_STATE] == STATE_EXITED


def test_a_worker_that_does_not_stop_is_killed(arena, caplog):
    process = multiprocessing.get_context("fork").Process(target=_sleep_forever)
    process.start()
    slot = Slot(0, 5, process=process)
    with caplog.at_level(logging.ERROR, logger="pcpd.daemon"):
        assert stop_for_reload(_workers(arena, slot), slot, timeout=0.2) is False
    process.join(10)
    assert process.exitcode is not None
    assert "cpu5: did not exit; killing it" in caplog.text


def _sleep_forever() -> None:
    while True:
        time.sleep(1)
