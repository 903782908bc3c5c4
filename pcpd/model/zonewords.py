"""The shared zone's words: where each list head, counter and flag lives.

Every process maps the same zone (``pcpd.model.zone``); these offsets are the
layout of the arena's ``zone`` region, in int64 words:

    [Z_HEAD + 3*order + mt]      first free block of free_area[order].free_list[mt]
    [Z_TAIL + 3*order + mt]      last free block
    [Z_NR_FREE + 3*order + mt]   free blocks on that list (nr_free is their sum)
    Z_FREE_PAGES                 NR_FREE_PAGES: buddy pages only, never PCP pages;
                                 accounted once per block freed or allocated, as
                                 account_freepages() is, not per list operation
    Z_MANAGED, Z_WMARK_MIN/LOW/HIGH, Z_CLAIMS, Z_STEALS
    Z_FLAGS                      zone->flags: ZONE_BELOW_HIGH and ZONE_RECLAIM_ACTIVE,
                                 one byte each (see "zone->flags" in pcpd.model.zone)

They live in a module of their own because the compiled core (``pcpd.core``)
keeps them as C integers inside ``pcpd.model.zone``, where Python cannot
import them.
"""

from __future__ import annotations

import sys

from pcpd.kernel import MIGRATE_PCPTYPES, NR_PAGE_ORDERS

# One list per (order, migratetype): index MIGRATE_PCPTYPES * order + mt.
FREE_LISTS = MIGRATE_PCPTYPES * NR_PAGE_ORDERS
Z_HEAD = 0
Z_TAIL = Z_HEAD + FREE_LISTS
Z_NR_FREE = Z_TAIL + FREE_LISTS
Z_FREE_PAGES = Z_NR_FREE + FREE_LISTS
Z_MANAGED = 100
Z_WMARK_MIN = 101
Z_WMARK_LOW = 102
Z_WMARK_HIGH = 103
Z_CLAIMS = 104
Z_STEALS = 105
Z_FLAGS = 106

# zone->flags bits the model keeps: each its byte of Z_FLAGS (1 when set), and
# its bit in the word as one load of Z_FLAGS sees it on this machine.
ZONE_BELOW_HIGH, ZONE_RECLAIM_ACTIVE = 0, 1


def _flag_bit(flag: int) -> int:
    return 1 << 8 * (flag if sys.byteorder == "little" else 7 - flag)


BELOW_HIGH = _flag_bit(ZONE_BELOW_HIGH)
RECLAIM_ACTIVE = _flag_bit(ZONE_RECLAIM_ACTIVE)

FLAG_AT = Z_FLAGS * 8                     # Z_FLAGS' first byte in the zone's bytes
