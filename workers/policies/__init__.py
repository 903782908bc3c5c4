"""The PCP policies compared by pcpd, on one interface: the proposal's four below; the
variants and other designs in their own modules (``tailmask``, ``compound_variants``);
``pcpd policies`` lists them all, plug-ins included.

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
policy subclasses ``Policy`` in its own module, sets ``name``, implements
``alloc``, ``free``, ``send``, ``receive``, ``_enter`` (buddy blocks arriving
on a PCP list) and ``_leave`` (PCP blocks going back), or subclasses a
policy here and overrides its hooks.  The compiled core calls some hooks
from C with C types (``workers/policies/base.pxd``): ``_enter`` gets a
``PerCpuPages`` and a ``list`` of pfns, and ``_alloc_miss``, ``_take_first``
and ``_alloc_buddy`` return a pfn, an int (NIL for none), never None.  A
built-in gets one entry, with its traits and its class, in the registry
(``pcpd.policies.POLICIES``, re-exported here); a plug-in declares ``TRAITS``
on its class and one entry point in the ``pcpd.policies`` group of its
distribution (docs/policies.md, examples/pcpd-policy-example).
``policy_class`` finds the class a registered name runs.
"""

import importlib
from functools import cache

from pcpd.policies import POLICIES, policy_traits
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


@cache
def policy_class(name: str) -> type[Policy]:
    """The class that runs the registered policy ``name``; ValueError for an unknown name."""
    module, _, attribute = policy_traits(name).implementation.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    # a registry entry naming the wrong class would run one policy under another's name
    if not (isinstance(found, type) and issubclass(found, Policy) and found.name == name):
        raise TypeError(f"registry entry {name!r} names {module}.{attribute}, not a Policy called {name!r}")
    return found


__all__ = [
    "POLICIES", "policy_class", "Policy", "PolicyOptions", "PcpTuning", "TYPES", "T_ANON", "T_FILE",
    "T_SLAB", "T_PAGETABLE", "T_NETPOOL", "T_KERNEL", "MEMDESC_OF", "MIGRATETYPE_OF", "COMPOUND_OF", "FOLIO_OF",
]
