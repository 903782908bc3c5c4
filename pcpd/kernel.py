"""The modelled kernel's constants: x86-64, 4 KiB pages, CONFIG_TRANSPARENT_HUGEPAGE=y.

Every number or name that pcpd takes from the kernel (or from the memdesc
plan) is defined here once, under the kernel's own name where it has one, and
imported by whatever needs it: config validation, the model, the workers,
the replay and the analysis.  Standard library only, so the config loader can
import it without pulling in numpy.
"""

from __future__ import annotations

# --- pages and orders (include/linux/mmzone.h, arch/x86/include/asm/page_types.h)
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10                      # largest buddy block: 1 << 10 pages (MAX_ORDER before 6.8)
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1      # free_area[0..MAX_PAGE_ORDER]
PAGE_ORDERS = range(NR_PAGE_ORDERS)
PAGE_ALLOC_COSTLY_ORDER = 3
PAGEBLOCK_ORDER = 9                      # pageblock_order
PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER
HPAGE_PMD_ORDER = 9                      # a PMD-mapped THP; the PCP's THP lists hold this order
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER

# --- migratetypes (enum migratetype); only the PCP types are modelled
MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE = 0, 1, 2
MIGRATE_PCPTYPES = 3
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable")    # as /proc/pagetypeinfo spells them

# --- per-CPU pages
NR_PCP_LISTS = 14                        # 3 migratetypes x orders 0-3, plus two THP lists (6.11+)
PCP_BATCH_SCALE_MAX = 5                  # CONFIG_PCP_BATCH_SCALE_MAX default
# vm.percpu_pagelist_high_fraction (5.14+), and vm.percpu_pagelist_fraction
# before it, reject 1..7.
MIN_PERCPU_PAGELIST_HIGH_FRACTION = 8

# --- kernel eras whose PCP sizing and behaviour pcpd follows (pcpd.model.sizing)
ERAS = ("4.18", "5.13", "5.14", "6.7")
DEFAULT_ERA = "6.7"
# Eras that auto-tune pcp->high between high_min and high_max (6.7+): a zone's
# PCP limits are high_min/high_max there, a fixed high before.
HIGH_BOUNDS_ERAS = ("6.7",)
# Eras whose nr_pcp_high() limits the PCP while kswapd reclaims (ZONE_RECLAIM_ACTIVE,
# c49c2c47dab6, 5.14) and whose fast path sets ALLOC_NOFRAGMENT (6bb154504f8b, 5.0).
RECLAIM_ACTIVE_ERAS = ("5.14", "6.7")
ALLOC_NOFRAGMENT_ERAS = ("5.13", "5.14", "6.7")
# How decay_pcp_high() frees the excess over high: in batch-sized chunks, the pcp
# lock taken per chunk (fc4b909c368f, Oct 2025: v6.19, and 6.12.y/6.18.y stable), or
# in one free_pcppages_bulk() call (6.7 up to then).
DECAY_DRAINS = ("batched", "one-call")

# --- struct page records
STRUCT_PAGE_BYTES = 64                   # sizeof(struct page) today
# Record sizes the arena models: the memdesc stages (8: memdesc word only,
# 16: the buddy-embedded page of January 2024, 32: the "2025 world"), then today's 64.
RECORD_BYTES = (8, 16, 32, STRUCT_PAGE_BYTES)

# --- memdesc types a pcpd allocation carries.  anon and file are folios;
# kernel is non-compound alloc_pages() memory (memdesc type Misc, no descriptor).
MEMDESC_TYPES = ("anon", "file", "slab", "pagetable", "netpool", "kernel")
