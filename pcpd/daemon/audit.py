"""Conservation audit: classify every page from the page array alone.

free in buddy + on PCPs + allocated + in flight = total, where each term is
computed from page (and descriptor) state, never from a process's counters.
Every page must be covered by exactly one block: an uncovered page is an
orphan (lost), a page covered twice an overlap.  The zone's lists and
counters are checked against the same page state.

The audit reads without locks; run it when the writers are quiescent (the
daemon pauses workers first) or it will see operations half done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from pcpd.kernel import MIGRATE_PCPTYPES, PAGE_ORDERS
from pcpd.model.arena import DESC_WORDS, H_AUDIT_FAILURES, H_AUDIT_OK, H_AUDIT_RUNS, H_MEMDESC, Arena
from pcpd.model.memmap import memdesc_word, memmap_for
from pcpd.model.pagewords import (
    FLAG_CPU_SHIFT,
    FLAG_ORDER_SHIFT,
    MEMDESC_ANON,
    MEMDESC_BUDDY,
    MEMDESC_FILE,
    MEMDESC_MISC,
    MEMDESC_NETPOOL,
    MEMDESC_PAGETABLE,
    MEMDESC_PCPDESC,
    MEMDESC_SLAB,
    NIL,
    PG_ALLOC,
    PG_BUDDY,
    PG_INFLIGHT,
    PG_PCP,
    W_PRIVATE64,
)
from pcpd.model.slab import D_PFN, D_STATE, DS_INFLIGHT, DS_INUSE, DS_PCP
from pcpd.model.zonewords import Z_FREE_PAGES, Z_HEAD, Z_NR_FREE, Z_TAIL

STATES = ("buddy", "pcp", "allocated", "inflight")

log = logging.getLogger("pcpd.daemon")


@dataclass
class Blocks:
    """Block heads of one state: pfn, order and owning CPU (-1 for none)."""

    pfn: np.ndarray
    order: np.ndarray
    cpu: np.ndarray

    @property
    def pages(self) -> int:
        return int((np.int64(1) << self.order).sum()) if len(self.order) else 0


@dataclass
class AuditResult:
    total: int
    blocks: dict[str, Blocks]
    orphans: np.ndarray                      # pfns in no block
    overlaps: np.ndarray                     # pfns in more than one block
    problems: list[str] = field(default_factory=list)

    def pages(self, state: str) -> int:
        return self.blocks[state].pages

    @property
    def ok(self) -> bool:
        return not self.problems and not len(self.orphans) and not len(self.overlaps)

    def summary(self) -> str:
        parts = [f"{s} {self.pages(s)}" for s in STATES]
        verdict = "ok" if self.ok else "VIOLATED"
        return f"audit {verdict}: " + " + ".join(parts) + f" = {self.total}"

    def describe_problems(self, limit: int = 16) -> list[str]:
        out = list(self.problems)
        if len(self.orphans):
            out.append(f"{len(self.orphans)} orphan pages, first pfns {self.orphans[:limit].tolist()}")
        if len(self.overlaps):
            out.append(f"{len(self.overlaps)} pages in two blocks, first pfns "
                       f"{self.overlaps[:limit].tolist()}")
        return out


def _flag_blocks(arena: Arena) -> dict[str, Blocks]:
    """64-byte pages: state in the flags word (pcpd bookkeeping bits)."""
    mem = arena.mem
    flags = mem[0::8]
    out = {}
    buddy = np.flatnonzero(flags & PG_BUDDY)
    out["buddy"] = Blocks(buddy, mem[buddy * 8 + W_PRIVATE64], np.full(len(buddy), -1))
    for state, bit in (("pcp", PG_PCP), ("allocated", PG_ALLOC), ("inflight", PG_INFLIGHT)):
        pfn = np.flatnonzero(flags & bit)
        f = flags[pfn]
        out[state] = Blocks(pfn, (f >> FLAG_ORDER_SHIFT) & 0xF,
                            ((f >> FLAG_CPU_SHIFT) & 0xFF) - 1)
    return out


_DESC_TYPES = (MEMDESC_FILE, MEMDESC_ANON, MEMDESC_SLAB, MEMDESC_PAGETABLE,
               MEMDESC_NETPOOL, MEMDESC_PCPDESC)
_DESC_STATE = {"pcp": DS_PCP, "allocated": DS_INUSE, "inflight": DS_INFLIGHT}


def _memdesc_blocks(arena: Arena) -> tuple[dict[str, Blocks], list[str]]:
    """Memdesc pages: buddy state per layout, the rest through the memdesc word."""
    memmap = memmap_for(arena)
    w = arena.record_bytes // 8
    mw = memdesc_word(arena.record_bytes)
    heads, orders = memmap.buddy_heads(0, arena.pages)
    out = {"buddy": Blocks(heads, orders, np.full(len(heads), -1))}
    word = arena.mem[mw::w].copy()
    word[heads] = MEMDESC_BUDDY                  # a 32 B free head's union holds links
    mtype = word & 0xF
    pfns = np.arange(arena.pages)

    described = np.isin(mtype, _DESC_TYPES)
    idx = word[described] >> 4
    owner_pfn = arena.descs[idx * DESC_WORDS + D_PFN]
    is_head = owner_pfn == pfns[described]
    head_pfn = pfns[described][is_head]
    dstate = arena.descs[idx[is_head] * DESC_WORDS + D_STATE]

    misc = mtype == MEMDESC_MISC
    mword = word[misc]
    morder = (mword >> 8) & 0xF
    mstate = (mword >> 4) & 0xF
    mhead = (mstate != 0) & ((pfns[misc] & ((np.int64(1) << morder) - 1)) == 0)
    misc_pfn, misc_word = pfns[misc][mhead], mword[mhead]

    for state, code in _DESC_STATE.items():
        sel = ((dstate >> 4) & 0xF) == code
        msel = ((misc_word >> 4) & 0xF) == code
        out[state] = Blocks(
            np.concatenate([head_pfn[sel], misc_pfn[msel]]),
            np.concatenate([(dstate[sel] >> 8) & 0xF, (misc_word[msel] >> 8) & 0xF]),
            np.concatenate([((dstate[sel] >> 16) & 0xFF) - 1, ((misc_word[msel] >> 16) & 0xFF) - 1]),
        )
    # every described page must lie inside the block its descriptor owns
    owner_order = (arena.descs[idx * DESC_WORDS + D_STATE] >> 8) & 0xF
    inside = (owner_pfn <= pfns[described]) & (pfns[described] < owner_pfn + (np.int64(1) << owner_order))
    problems = []
    live = ((arena.descs[D_STATE::DESC_WORDS] >> 4) & 0xF)
    live_descs = int(np.isin(live, (DS_INUSE, DS_PCP, DS_INFLIGHT)).sum())
    if live_descs != len(head_pfn):
        problems.append(f"{live_descs} descriptors in use but {len(head_pfn)} blocks own one "
                        f"(leaked or lost descriptors)")
    if not inside.all():
        bad = pfns[described][~inside]
        problems.append(f"{len(bad)} pages point to a descriptor of another block, "
                        f"first pfns {bad[:16].tolist()}")
    return out, problems


def _coverage(total: int, blocks: dict[str, Blocks]) -> tuple[np.ndarray, np.ndarray]:
    delta = np.zeros(total + 1, np.int64)
    for b in blocks.values():
        if len(b.pfn):
            np.add.at(delta, b.pfn, 1)
            np.add.at(delta, np.minimum(b.pfn + (np.int64(1) << b.order), total), -1)
    cover = np.cumsum(delta[:-1])
    return np.flatnonzero(cover == 0), np.flatnonzero(cover > 1)


def _check_zone(arena: Arena, buddy: Blocks) -> list[str]:
    """The zone's counters and lists must agree with the buddy pages found."""
    z = arena.zone
    problems = []
    if int(z[Z_FREE_PAGES]) != buddy.pages:
        problems.append(f"NR_FREE_PAGES {int(z[Z_FREE_PAGES])} but buddy pages {buddy.pages}")
    memmap = memmap_for(arena)
    for order in PAGE_ORDERS:
        for mt in range(MIGRATE_PCPTYPES):
            i = MIGRATE_PCPTYPES * order + mt
            expect = int(z[Z_NR_FREE + i])
            seen, pfn, prev = 0, int(z[Z_HEAD + i]), NIL
            while pfn != NIL and seen <= expect:
                if memmap.buddy_order(pfn) != order or memmap.prev(pfn) != prev:
                    problems.append(f"free_area[{order}][{mt}]: bad block at pfn {pfn}")
                    break
                seen, prev, pfn = seen + 1, pfn, memmap.next(pfn)
            if seen != expect:
                problems.append(f"free_area[{order}][{mt}]: nr_free {expect}, list has {seen}")
            elif int(z[Z_TAIL + i]) != prev:
                problems.append(f"free_area[{order}][{mt}]: tail {int(z[Z_TAIL + i])}, list ends {prev}")
    return problems


def audit(arena: Arena) -> AuditResult:
    """Classify every page; see the module docstring for what is checked."""
    problems: list[str]
    if not arena.header[H_MEMDESC]:
        blocks, problems = _flag_blocks(arena), []
    else:
        blocks, problems = _memdesc_blocks(arena)
    problems += _check_zone(arena, blocks["buddy"])
    orphans, overlaps = _coverage(arena.pages, blocks)
    return AuditResult(arena.pages, blocks, orphans, overlaps, problems)


def publish(arena: Arena, result: AuditResult) -> None:
    """Record an audit in the arena header (for the exporter) and log a violation loudly."""
    header = arena.header
    header[H_AUDIT_RUNS] += 1
    header[H_AUDIT_OK] = int(result.ok)
    if result.ok:
        return
    header[H_AUDIT_FAILURES] += 1
    log.error("CONSERVATION VIOLATED: %s", result.summary())
    for problem in result.describe_problems():
        log.error("  %s", problem)
