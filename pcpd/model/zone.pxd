# C types for zone.py when setup.py compiles it (pcpd.core): the buddy's per-block
# work under zone->lock.  The rules stay in zone.py; see memmap.pxd.  Public
# module constants stay Python ints (other modules import them).
cimport cython

from pcpd.model.lock cimport ZoneLock
from pcpd.model.lines cimport LineCharges
from pcpd.model.memmap cimport Memmap


@cython.final
cdef class Zone:
    cdef public object arena
    cdef public ZoneLock lock
    cdef public LineCharges lines
    cdef object __weakref__
    cdef public long long[::1] z
    cdef public signed char[::1] _flag, pb
    cdef public Memmap mm
    cdef public Py_ssize_t pages, _shift, _rmqm, _op
    cdef public long long[::1] v
    cdef public bint _links_in_free_memory, _prev_link_loads
    @cython.locals(free=cython.longlong, o=Py_ssize_t)
    cpdef bint watermark_ok(self, Py_ssize_t order, long long mark) except -1
    cpdef bint test_flag(self, Py_ssize_t flag) except -1
    cdef int _set_flag(self, Py_ssize_t flag, bint on) except -1
    cpdef check_watermarks(self, Py_ssize_t order)
    cpdef check_next_watermarks(self)
    cpdef clear_below_high(self)
    cdef int _kswapd_balanced(self) except -1
    @cython.locals(pfn=Py_ssize_t)
    cpdef list rmqueue_bulk(self, Py_ssize_t order, Py_ssize_t mt, Py_ssize_t count, bint nofragment)
    cpdef free_pcppages_bulk(self, list runs)
    @cython.locals(line=Py_ssize_t)
    cdef int _link_stored(self, Py_ssize_t pfn, bint prev) except -1
    @cython.locals(i=Py_ssize_t, neighbour=Py_ssize_t)
    cdef int _add(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t mt, bint to_tail=*) except -1
    @cython.locals(i=Py_ssize_t, line=Py_ssize_t, nxt=Py_ssize_t, prev=Py_ssize_t)
    cdef int _del(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t mt) except -1
    cdef int _expand(self, Py_ssize_t pfn, Py_ssize_t low, Py_ssize_t high, Py_ssize_t mt) except -1
    @cython.locals(buddy=Py_ssize_t, buddy_mt=Py_ssize_t, shift=Py_ssize_t, pages=Py_ssize_t)
    cdef int _free_one_page(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t mt) except -1
    @cython.locals(pfn=Py_ssize_t)
    cdef int _free_run(self, Py_ssize_t order, list pfns) except -1
    @cython.locals(higher=Py_ssize_t, higher_buddy=Py_ssize_t)
    cdef bint _buddy_merge_likely(self, Py_ssize_t pfn, Py_ssize_t order) except -1
    @cython.locals(cur=Py_ssize_t, pfn=Py_ssize_t)
    cdef Py_ssize_t _rmqueue_smallest(self, Py_ssize_t order, Py_ssize_t mt) except? -2
    @cython.locals(pfn=Py_ssize_t)
    cdef Py_ssize_t _rmqueue(self, Py_ssize_t order, Py_ssize_t mt, bint nofragment) except? -2
    @cython.locals(pfn=Py_ssize_t)
    cdef list _rmqueue_count(self, Py_ssize_t order, Py_ssize_t mt, Py_ssize_t count, bint nofragment)

# imported constants, held as C integers here
cdef Py_ssize_t MAX_PAGE_ORDER, MIGRATE_PCPTYPES, PAGEBLOCK_ORDER, PAGEBLOCK_NR_PAGES, NIL
cdef Py_ssize_t _BW, _BR, DATA_W
cdef Py_ssize_t FLAG_AT, Z_HEAD, Z_TAIL, Z_NR_FREE, Z_FREE_PAGES, Z_CLAIMS, Z_STEALS, Z_WMARK_HIGH, Z_WMARK_LOW
cdef Py_ssize_t ZONE_BELOW_HIGH, ZONE_RECLAIM_ACTIVE
# the module's own
cdef Py_ssize_t RMQUEUE_NORMAL, RMQUEUE_CLAIM, RMQUEUE_STEAL
