"""Policies of the memdesc stages: ``memdesc-pcpdesc`` and ``memdesc``.

Pages carry a memdesc word; descriptors come from the slab (pcpd.model.slab).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcpd.kernel import MIGRATE_PCPTYPES, PAGE_ORDERS, PAGEBLOCK_ORDER
from pcpd.model import memmap
from pcpd.model.arena import DESC_WORDS
from pcpd.model.lines import LineCharges, lines_spanned
from pcpd.model.linetrace import untraced
from pcpd.model.pagewords import MEMDESC_BUDDY, MEMDESC_MISC, MEMDESC_PCPDESC, NIL
from pcpd.model.slab import (
    D_DEFERRED,
    D_ENTIRE_MAPCOUNT,
    D_MAPCOUNT,
    D_MAPPING,
    D_NEXT,
    D_NR_PAGES_MAPPED,
    D_PFN,
    D_PREV,
    D_REFCOUNT,
    D_STATE,
    DS_INFLIGHT,
    DS_INUSE,
    DS_PCP,
    DescriptorSlab,
    desc_state,
)
from workers.pcp import PerCpuPages
from workers.policies.base import (
    BUDDY,
    DATA_W,
    DESC_R,
    DESC_W,
    FOLIO_OF,
    FREE_BUDDY,
    FREE_PCP,
    FREE_TYPE,
    HIT,
    MD_W,
    MEMDESC_OF,
    T_KERNEL,
    TYPES,
    Policy,
)


class _MemdescPolicy(Policy):
    """Pages carry a memdesc word; descriptors come from the slab.

    Any record size works: in 64- and 32-byte pages the memdesc word is word
    1, where the plan points the old compound_head (section 6.3).
    """

    if TYPE_CHECKING:
        slab: DescriptorSlab      # never None: __init__ refuses a policy without one

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.slab is None:
            raise ValueError(f"policy {self.name} needs a descriptor slab")
        self.mw = memmap.memdesc_word(self.rb)
        self.d = self.arena.descq
        # page->memdesc read only to find the folio the caller holds (folio_put() is
        # handed the folio; pcpd's workloads hand pfns around): not a memmap access,
        # so neither charged nor traced
        self._held = untraced(self.arena).memq
        self._dstate_inuse = [[desc_state(MEMDESC_OF[t], DS_INUSE, o, self.cpu) for o in PAGE_ORDERS]
                              for t in range(len(TYPES))]
        self._dstate_pcp = [[desc_state(MEMDESC_OF[t], DS_PCP, o, self.cpu) for o in PAGE_ORDERS]
                            for t in range(len(TYPES))]

    # The helpers below serve hits and misses both: ``lines`` is None on a hit (see Policy).
    def _set_memdesc(self, pfn: int, order: int, value: int, lines: LineCharges | None = None) -> None:
        """Store the memdesc word into every page of the block."""
        w = self.w
        if not order:                                  # one record: one line
            self.mem[pfn * w + self.mw] = value
            if lines is None:
                self.v[MD_W] += 1
            else:
                lines.page(MD_W, pfn)
            return
        n = 1 << order
        self.np_mem[pfn * w + self.mw:(pfn + n) * w:w] = value
        if lines is None:
            self.v[MD_W] += lines_spanned(pfn, n, self.rb)
        else:
            lines.pages(MD_W, pfn, n)

    def _misc_word(self, state: int, order: int) -> int:
        return MEMDESC_MISC | (state << 4) | (order << 8) | ((self.cpu + 1) << 16)

    def _new_desc(self, t: int, order: int, pfn: int, state: int, lines: LineCharges | None = None) -> int:
        """slab_alloc() a descriptor and fill it in (section 6.4)."""
        idx = self.slab.alloc()
        base = idx * DESC_WORDS
        dstate = self._dstate_inuse if state == DS_INUSE else self._dstate_pcp   # by type, order
        self.d[base + D_STATE] = dstate[t][order]
        self.d[base + D_PFN] = pfn
        self.d[base + D_REFCOUNT] = 1 if state == DS_INUSE else 0
        self.d[base + D_MAPPING] = 0
        self.d[base + D_MAPCOUNT] = -1
        large = order and FOLIO_OF[t]
        if large:                                      # large folios use the second line
            self.d[base + D_ENTIRE_MAPCOUNT] = -1
            self.d[base + D_NR_PAGES_MAPPED] = 0
            self.d[base + D_DEFERRED] = NIL
        if lines is None:
            self.v[DESC_W] += 2 if large else 1
        else:
            lines.desc(DESC_W, base + D_STATE)
            if large:
                lines.desc(DESC_W, base + D_ENTIRE_MAPCOUNT)
        return idx

    def _desc_of(self, pfn: int) -> int:
        """page->memdesc -> descriptor index (the caller holds the folio already)."""
        return self._held[pfn * self.w + self.mw] >> 4

    def _desc_pfn(self, idx: int) -> int:
        self.zone.lines.desc(DESC_R, idx * DESC_WORDS + D_PFN)
        return self.d[idx * DESC_WORDS + D_PFN]

    def _desc_push(self, lst, idx: int) -> None:
        base = idx * DESC_WORDS
        old = lst[-1] if lst else NIL
        self.d[base + D_NEXT] = old
        self.d[base + D_PREV] = NIL
        if old != NIL:                                 # only ever a free's hit part
            self.d[old * DESC_WORDS + D_PREV] = idx
            self.v[DESC_W] += 1
        lst.append(idx)

    def _desc_pop(self, lst, lines: LineCharges | None = None) -> int:
        idx = lst.pop()
        if lst:                                        # the new head's prev link
            head = lst[-1]
            self.d[head * DESC_WORDS + D_PREV] = NIL
            if lines is None:
                self.v[DESC_W] += 1
            else:
                lines.desc(DESC_W, head * DESC_WORDS + D_PREV)
        return idx

    def _desc_link_tail(self, idx: int, tail: int) -> None:
        """list_add_tail() of a new descriptor idx after ``tail`` (NIL: the list is
        empty); the caller puts idx on its deque, a refill's whole batch at once.

        Its stores land in idx's line, which the descriptor's initialisation charged,
        and in the tail's: a descriptor of the same batch, charged likewise, or the
        list's old tail, whose line the caller charges once (the refill's only extra
        descriptor line, as in the kernel's list_add_tail() loop)."""
        base = idx * DESC_WORDS
        self.d[base + D_NEXT] = NIL
        self.d[base + D_PREV] = tail
        if tail != NIL:
            self.d[tail * DESC_WORDS + D_NEXT] = idx

    def _old_tail(self, lst) -> int:
        """The descriptor a refill links its batch after (NIL: none), its line charged."""
        if not lst:
            return NIL
        self.zone.lines.desc(DESC_W, lst[0] * DESC_WORDS + D_NEXT)
        return lst[0]

    def _alloc_buddy(self, t: int, order: int) -> int:
        """rmqueue_buddy() and the block made type t; one operation, each line charged once."""
        with self.zone.lines.operation():
            pfn = self.zone.rmqueue_buddy(order, self.migratetypes[t], self.nofragment)
            if pfn != NIL:
                self.v[BUDDY] += 1
                self._make_allocated(pfn, t, order, self.zone.lines)
        if pfn == NIL:
            self._count_fail()
        return pfn

    def _make_allocated(self, pfn: int, t: int, order: int, lines: LineCharges | None = None) -> None:
        """Buddy memory becomes type t: a descriptor (unless Misc) in every page."""
        if t == T_KERNEL:
            self._set_memdesc(pfn, order, self._misc_word(DS_INUSE, order), lines)
            return
        idx = self._new_desc(t, order, pfn, DS_INUSE, lines)
        mtype = MEMDESC_OF[t]                          # the type nibble (a C integer, compiled)
        self._set_memdesc(pfn, order, (idx << 4) | mtype, lines)

    def _free_to_buddy(self, pfn: int, order: int, t: int) -> None:
        """free_one_page() of a block the PCP does not keep; one operation, each line
        charged once."""
        with self.zone.lines.operation():
            if t != T_KERNEL:
                self.slab.free(self._desc_of(pfn))
            self._set_memdesc(pfn, order, MEMDESC_BUDDY, self.zone.lines)
            self.zone.free_one_page(pfn, order)
        self.v[FREE_BUDDY] += 1

    def send(self, pfn, order, t, dst) -> None:
        self._set_owner_state(pfn, order, t, DS_INFLIGHT)

    def receive(self, pfn, order, t) -> None:
        self._set_owner_state(pfn, order, t, DS_INUSE)

    def _set_owner_state(self, pfn: int, order: int, t: int, state: int) -> None:
        if t == T_KERNEL:
            self.mem[pfn * self.w + self.mw] = self._misc_word(state, order)
            self.zone.lines.page(MD_W, pfn)
            return
        idx = self._desc_of(pfn)
        self.d[idx * DESC_WORDS + D_STATE] = desc_state(MEMDESC_OF[t], state, order, self.cpu)
        self.zone.lines.desc(DESC_W, idx * DESC_WORDS + D_STATE)


class MemdescPcpdescPolicy(_MemdescPolicy):
    """Memdescs without descriptor caching: swap to a struct pcpdesc on free."""

    name = "memdesc-pcpdesc"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # D_STATE of a new pcpdesc, by order: _new_pcpdesc() runs on every free
        self._dstate_pcpdesc = [desc_state(MEMDESC_PCPDESC, DS_PCP, o, self.cpu) for o in PAGE_ORDERS]

    def _new_pcpdesc(self, pfn: int, order: int, lines: LineCharges | None = None) -> int:
        idx = self.slab.alloc()
        base = idx * DESC_WORDS
        self.d[base + D_STATE] = self._dstate_pcpdesc[order]
        self.d[base + D_PFN] = pfn
        if lines is None:
            self.v[DESC_W] += 1
        else:
            lines.desc(DESC_W, base + D_STATE)
        self._set_memdesc(pfn, order, (idx << 4) | MEMDESC_PCPDESC, lines)
        return idx

    def alloc(self, t: int, order: int) -> int:
        self.v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self.pcp
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if not lst:
            return self._alloc_miss(pcp, lst, t, order)
        self.v[HIT] += 1
        pidx = self._desc_pop(lst)                     # _take_first(), inline: one call fewer
        pcp.count -= 1 << order
        pfn = self.d[pidx * DESC_WORDS + D_PFN]
        self.v[DESC_R] += 1
        self._make_allocated(pfn, t, order)            # new descriptor, every memdesc word
        self.slab.free(pidx)
        return pfn

    def _take_first(self, pcp, lst, t: int, order: int) -> int:
        """The list's first pcpdesc off, its block made type t, the pcpdesc freed, as
        alloc() takes it on a hit."""
        lines = self.zone.lines
        pidx = self._desc_pop(lst, lines)
        pcp.count -= 1 << order
        pfn = self._desc_pfn(pidx)
        self._make_allocated(pfn, t, order, lines)     # new descriptor, every memdesc word
        self.slab.free(pidx)
        return pfn

    def free(self, pfn: int, order: int, t: int) -> None:
        self.v[FREE_TYPE + t] += 1
        pcp = self.pcp
        if not pcp.allowed[order]:
            self._free_to_buddy(pfn, order, t)
            return
        if t != T_KERNEL:
            self.slab.free(self._desc_of(pfn))
        pidx = self._new_pcpdesc(pfn, order)           # swap every memdesc word
        pindex = pcp.pindex[order][self.pbq[pfn >> PAGEBLOCK_ORDER]]
        lst = pcp.lists[pindex]
        self._desc_push(lst, pidx)
        pcp.count += 1 << order
        self.v[FREE_PCP] += 1
        drain = pcp.free_check(order, self.zone_words)
        if drain:
            self._drain_after_free(pcp, drain, pindex, self._freed_lines, lst, pfn, order, t)

    def _freed_lines(self, lst, pfn, order, t) -> None:
        # _new_pcpdesc()'s descriptor line and memdesc words, _desc_push()'s link
        lines = self.zone.lines
        lines.desc(DESC_W, lst[-1] * DESC_WORDS + D_STATE)
        lines.pages(MD_W, pfn, 1 << order)
        if len(lst) > 1:
            lines.desc(DESC_W, lst[-2] * DESC_WORDS + D_PREV)

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        entries = []
        tail = self._old_tail(lst)
        for pfn in blocks:
            idx = self._new_pcpdesc(pfn, order, self.zone.lines)
            self._desc_link_tail(idx, tail)
            entries.append(idx)
            tail = idx
        lst.extendleft(entries)

    def _leave(self, pcp, index, order, entries):
        out = []
        for pidx in entries:
            pfn = self._desc_pfn(pidx)                 # each pcpdesc's pfn
            self._set_memdesc(pfn, order, MEMDESC_BUDDY, self.zone.lines)
            self.slab.free(pidx)
            out.append(pfn)
        return out


class MemdescPolicy(_MemdescPolicy):
    """One PCP per memdesc type, keeping descriptor and memory together.

    ``policy.memdesc_high`` is the budget the types' lists live under:

    shared (default)
        One per_cpu_pages per CPU, as the kernel's: each type has its own
        lists, but one count, one high and one tuning state (free_count,
        alloc_factor) cover them all, so free_frozen_page_commit() compares
        the CPU's total with nr_pcp_high() and free_pcppages_bulk() drains
        round-robin across every type's lists (pcp.py says in which order).
        The CPU may hold what legacy may: the fair comparison.
    per-type
        One per_cpu_pages per type, each with the full high and its own
        tuning: up to six times the pages legacy may hold.
    split
        One per type, each with a sixth of the limits (zone_highsize()'s floor
        of 4 * batch kept).
    """

    name = "memdesc"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pcp_by_type = self._pcp_of_type()
        # (type, order, pageblock migratetype) -> the list a free pushes on
        self._free_list = [[[pcp.list_index(o, mt, t % pcp.nr_types) for mt in range(MIGRATE_PCPTYPES)]
                            for o in PAGE_ORDERS] for t, pcp in enumerate(self._pcp_by_type)]

    def _make_pcps(self) -> list[PerCpuPages]:
        budget = self.options.memdesc_high
        if budget == "shared":
            return [self.tuning.new_pcp(nr_types=len(TYPES))]
        divide = len(TYPES) if budget == "split" else 1
        return [self.tuning.new_pcp(divide) for _ in TYPES]

    def pcp_pages_by_type(self) -> list[int]:
        if self.pcp.nr_types > 1:                  # shared: one PCP, a slot per type
            return self.pcp.pages_by_slot()
        return [p.count for p in self.pcps]

    def _pcp_of_type(self) -> list[PerCpuPages]:
        return self.pcps * len(TYPES) if self.pcps[0].nr_types > 1 else self.pcps

    def alloc(self, t: int, order: int) -> int:
        self.v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self._pcp_by_type[t]
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if not lst:
            return self._alloc_miss(pcp, lst, t, order)
        self.v[HIT] += 1
        pcp.count -= 1 << order                        # _take_first(), inline: one call fewer
        if t == T_KERNEL:
            pfn = self._misc_pop(lst)
            self.mem[pfn * self.w + self.mw] = self._misc_word(DS_INUSE, order)
            self.v[MD_W] += 1
            return pfn
        idx = lst.pop()
        if lst:                                        # the new head's prev link
            self.d[lst[-1] * DESC_WORDS + D_PREV] = NIL
        base = idx * DESC_WORDS                        # the folio comes back ready
        self.d[base + D_STATE] = self._dstate_inuse[t][order]
        self.d[base + D_REFCOUNT] = 1
        self.v[DESC_W] += 2 if lst else 1
        self.v[DESC_R] += 1                                 # the pfn, as memdesc-pcpdesc reads it
        return self.d[base + D_PFN]

    def _take_first(self, pcp, lst, t: int, order: int) -> int:
        """The list's first block (a Misc pfn, or a folio's descriptor) off and in use,
        as alloc() takes it on a hit."""
        pcp.count -= 1 << order
        lines = self.zone.lines
        if t == T_KERNEL:
            pfn = lst.pop()
            if lst:
                self.arena.freelinksq[lst[-1] * 2 + 1] = NIL
                lines.free_memory(lst[-1])
            self.mem[pfn * self.w + self.mw] = self._misc_word(DS_INUSE, order)
            lines.page(MD_W, pfn)
            return pfn
        idx = self._desc_pop(lst, lines)
        base = idx * DESC_WORDS
        self.d[base + D_STATE] = self._dstate_inuse[t][order]
        self.d[base + D_REFCOUNT] = 1
        lines.desc(DESC_W, base + D_STATE)
        return self._desc_pfn(idx)

    def free(self, pfn: int, order: int, t: int) -> None:
        self.v[FREE_TYPE + t] += 1
        pcp = self._pcp_by_type[t]
        if not pcp.allowed[order]:
            self._free_to_buddy(pfn, order, t)
            return
        index = self._free_list[t][order][self.pbq[pfn >> PAGEBLOCK_ORDER]]
        lst = pcp.lists[index]
        if t == T_KERNEL:
            self.mem[pfn * self.w + self.mw] = self._misc_word(DS_PCP, order)
            self.v[MD_W] += 1
            self._misc_push(lst, pfn)
        else:
            idx = self._held[pfn * self.w + self.mw] >> 4   # the folio the caller holds
            base = idx * DESC_WORDS
            old = lst[-1] if lst else NIL
            self.d[base + D_STATE] = self._dstate_pcp[t][order]
            self.d[base + D_REFCOUNT] = 0
            self.d[base + D_NEXT] = old
            self.d[base + D_PREV] = NIL
            if old != NIL:
                self.d[old * DESC_WORDS + D_PREV] = idx
                self.v[DESC_W] += 2
            else:
                self.v[DESC_W] += 1
            lst.append(idx)
        pcp.count += 1 << order
        self.v[FREE_PCP] += 1
        drain = pcp.free_check(order, self.zone_words)
        if drain:
            self._drain_after_free(pcp, drain, index, self._freed_lines, lst, pfn, order, t)

    def _freed_lines(self, lst, pfn, order, t) -> None:
        lines = self.zone.lines
        if t == T_KERNEL:                              # the memdesc word, _misc_push()'s links
            lines.page(MD_W, pfn)
            lines.free_memory(pfn)
            if len(lst) > 1:
                lines.free_memory(lst[-2])
            return
        lines.desc(DESC_W, lst[-1] * DESC_WORDS + D_STATE)     # state, refcount, links: one line
        if len(lst) > 1:
            lines.desc(DESC_W, lst[-2] * DESC_WORDS + D_PREV)

    # Misc memory has no descriptor: its PCP links live in the free memory.
    def _misc_push(self, lst, pfn: int) -> None:
        links = self.arena.freelinksq
        old = lst[-1] if lst else NIL
        links[pfn * 2] = old
        links[pfn * 2 + 1] = NIL
        self.v[DATA_W] += 1
        if old != NIL:
            links[old * 2 + 1] = pfn
            self.v[DATA_W] += 1
        lst.append(pfn)

    def _misc_pop(self, lst) -> int:
        pfn = lst.pop()
        if lst:
            self.arena.freelinksq[lst[-1] * 2 + 1] = NIL
            self.v[DATA_W] += 1
        return pfn

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        lines = self.zone.lines
        if t == T_KERNEL:                              # Misc: pfns, linked in the free memory
            links = self.arena.freelinksq
            tail = lst[0] if lst else NIL
            for pfn in blocks:
                self._set_memdesc(pfn, order, self._misc_word(DS_PCP, order), lines)
                links[pfn * 2], links[pfn * 2 + 1] = NIL, tail
                lines.free_memory(pfn)
                if tail != NIL:                        # the old tail's next link
                    links[tail * 2] = pfn
                    lines.free_memory(tail)
                tail = pfn
            lst.extendleft(blocks)
            return
        entries = []
        tail = self._old_tail(lst)
        mtype = MEMDESC_OF[t]
        for pfn in blocks:
            idx = self._new_desc(t, order, pfn, DS_PCP, lines)
            self._set_memdesc(pfn, order, (idx << 4) | mtype, lines)
            self._desc_link_tail(idx, tail)
            entries.append(idx)
            tail = idx
        lst.extendleft(entries)

    def _leave(self, pcp, index, order, entries):
        """Over typed lists, each list's entries leave as its type's blocks."""
        t = self.pcps.index(pcp) + index % pcp.nr_types     # per-type PCPs: the PCP's own type
        if t == T_KERNEL:                          # Misc entries are pfns, others descriptors
            pfns = entries
        else:
            pfns = []
            for entry in entries:
                pfns.append(self._desc_pfn(entry))            # each descriptor's pfn
                self.slab.free(entry)
        for pfn in pfns:
            self._set_memdesc(pfn, order, MEMDESC_BUDDY, self.zone.lines)
        return pfns
