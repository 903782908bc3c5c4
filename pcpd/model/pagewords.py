"""The words of a ``struct page`` record: flag bits, memdesc types, word offsets.

The record layouts that use them, per record size, are described in
``pcpd.model.memmap``.  The constants live in a module of their own because
the compiled core (``pcpd.core``) holds them as C integers inside
``pcpd.model.memmap``, where Python cannot import them.
"""

NIL = -1

PG_BUDDY = 1 << 0
PG_HEAD = 1 << 1
PG_PCP = 1 << 2
PG_INFLIGHT = 1 << 3
PG_LRU = 1 << 5
PG_ALLOC = 1 << 6
PG_LARGE_RMAPPABLE = 1 << 7   # in page[1]'s flags (folio->_flags_1), as the kernel keeps it
FLAG_CPU_SHIFT = 8       # cpu + 1, 8 bits
FLAG_ORDER_SHIFT = 16    # 4 bits
FLAG_TYPE_SHIFT = 24     # memdesc type nibble of the allocation
TAIL_MAPPING = 0x400     # the poison prep_compound_tail() stores in tail->mapping

# Memdesc type nibbles (Memdescs wiki, revision B, section 6.2).
MEMDESC_MISC = 0
MEMDESC_BUDDY = 1
MEMDESC_FILE = 2
MEMDESC_ANON = 3
MEMDESC_SLAB = 5
MEMDESC_PAGETABLE = 7
MEMDESC_NETPOOL = 8
MEMDESC_PCPDESC = 11     # unassigned in the wiki: the proposal's 'struct pcpdesc'

BUDDY_HEAD = 1 << 4      # 16 B: in w1
BUDDY_HEAD8 = 1 << 8     # 8 B: in w0

# Word indices shared by the layouts that have the field (word 0 is the flags word).
W_LINK = 1
W_PREV = 2
W_MAPPING = 3
W_PRIVATE64 = 5
W_REFCOUNT64 = 6
