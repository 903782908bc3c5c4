"""Test-side views of ``pcpd.daemon.audit`` results."""

from __future__ import annotations

from pcpd.daemon.audit import Blocks


def pages_by_cpu(blocks: Blocks) -> dict[int, int]:
    """Pages of ``blocks`` per owning CPU (-1: none)."""
    out: dict[int, int] = {}
    for cpu, order in zip(blocks.cpu.tolist(), blocks.order.tolist()):
        out[cpu] = out.get(cpu, 0) + (1 << order)
    return out
