"""SIGHUP: validate a new config against the running one, and stop workers for the swap.

A reload replaces the workers one at a time, each draining its PCPs before it
exits, so no page is lost.  What the page array or the set of worker slots
depends on (the arena, the CPUs, 64-byte pages versus memdesc words) cannot
change under running workers: such a config is refused with one log line and
the running one stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pcpd.config.load import load_settings
from pcpd.config.settings import Settings
from pcpd.daemon.slots import Slot, WorkerSlots
from pcpd.errors import ConfigError
from pcpd.model.arena import C_STOP
from pcpd.policies import policy_traits

STOP_TIMEOUT = 60.0

log = logging.getLogger("pcpd.daemon")


@dataclass(frozen=True)
class Reload:
    """A config accepted for reload, and the policy it runs under."""

    settings: Settings
    policy: str


def reload_problem(old: Settings, new: Settings, policy: str, forced_policy: str | None) -> str:
    """Why ``new`` cannot replace ``old`` (running ``policy``) in place, or ''.

    ``forced_policy`` is the command line's --policy, which outranks the file's.
    """
    if old.arena != new.arena:
        return "arena settings changed (memory or record_bytes): that needs a restart"
    if old.cpus != new.cpus:
        return "cpus changed: that needs a restart"
    new_policy = forced_policy or new.policy.name
    if policy_traits(policy).memdesc != policy_traits(new_policy).memdesc:
        return f"policy {policy} -> {new_policy} changes what the page array holds: that needs a restart"
    return ""


def load_reload(path: str | None, running: Settings, policy: str,
                forced_policy: str | None) -> Reload | None:
    """The config at ``path`` if it may replace ``running``; None, logged, if not."""
    if path is None:
        log.warning("SIGHUP: running the built-in config; nothing to reload")
        return None
    try:
        new = load_settings(path)
        problem = reload_problem(running, new, policy, forced_policy)
    except ConfigError as err:
        problem = str(err)
    if problem:
        log.error("reload rejected, the running config stays: %s", problem)
        return None
    return Reload(new, forced_policy or new.policy.name)


def stop_for_reload(workers: WorkerSlots, slot: Slot, timeout: float = STOP_TIMEOUT) -> bool:
    """Ask one worker to drain and exit; True if it did so cleanly.

    False means it failed or had to be killed: its pages need recovering
    before the slot is reused.
    """
    if slot.process is None:
        return True
    workers.arena.cpuctl[slot.index, C_STOP] = 1
    return workers.join(slot, timeout)
