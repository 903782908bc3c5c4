"""The four PCP policies compared by pcpd, on one interface.

``legacy``
    Today's kernel.  The PCP takes all comers.  Freeing a compound block
    undoes every tail (__free_pages_prepare -> free_tail_page_prepare);
    allocating one re-preps every tail (prep_compound_page).
``compound``
    The proposal before memdescs (linux-mm, January 2024): only compound
    memory lives on PCP lists and keeps its compound state there, so a hit
    touches the head and, for a large folio, the large-rmappable flag.  The
    tail work moves to the buddy boundary (refill preps, drain undoes).
    Non-compound multi-page frees either bypass to the buddy or are converted
    (``noncompound_free``); non-compound allocations either go straight to the
    buddy or take a compound block and undo it (``noncompound_alloc``).
``memdesc-pcpdesc``
    A memdesc world without descriptor caching: allocation slab-allocates the
    descriptor and sets the memdesc word of every page; freeing swaps every
    page's memdesc to a freshly allocated ``struct pcpdesc`` and frees the
    descriptor.  One PCP per CPU, as today.
``memdesc``
    The proposal with memdescs: one PCP per memdesc type; a freed folio stays
    on its type's PCP with its descriptor, and a hit hands both back without
    touching the memmap.  Misc (non-compound kernel) memory has no descriptor;
    its PCP links live in the free memory itself.

Every policy charges what it touches to the CPU's ``Counters``: struct page
lines by cause, descriptor lines, slab operations.  Extension point: a new
policy subclasses ``Policy``, implements ``alloc``, ``free``, ``_enter``
(buddy blocks arriving on a PCP list) and ``_leave`` (PCP blocks going back),
and registers in ``POLICIES``.
"""

from workers.policies.base import (
                                   COMPOUND_OF,
                                   FOLIO_OF,
                                   MEMDESC_OF,
                                   MIGRATETYPE_OF,
                                   T_ANON,
                                   T_FILE,
                                   T_KERNEL,
                                   T_NETPOOL,
                                   T_PAGETABLE,
                                   T_SLAB,
                                   TYPES,
                                   PcpTuning,
                                   Policy,
                                   PolicyOptions,
)
from workers.policies.memdesc import MemdescPcpdescPolicy, MemdescPolicy
from workers.policies.struct_page import CompoundPolicy, LegacyPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (LegacyPolicy, CompoundPolicy, MemdescPcpdescPolicy, MemdescPolicy)
}

__all__ = [
    "POLICIES", "Policy", "PolicyOptions", "PcpTuning", "LegacyPolicy", "CompoundPolicy",
    "MemdescPcpdescPolicy", "MemdescPolicy", "TYPES", "T_ANON", "T_FILE", "T_SLAB", "T_PAGETABLE",
    "T_NETPOOL", "T_KERNEL", "MEMDESC_OF", "MIGRATETYPE_OF", "COMPOUND_OF", "FOLIO_OF",
]
