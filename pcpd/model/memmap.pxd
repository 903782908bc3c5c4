# C types for memmap.py when setup.py compiles it (pcpd.core): the rules stay in
# memmap.py, and this file says only which values are machine integers.  A
# method listed here keeps the argument list it has here; one that is not
# listed needs no entry.  The page words are a typed memoryview, so a
# TracedArena's recording views need the interpreted build.
# Methods index typed memoryviews through self (self.q[i]), never a local copy
# (q = self.q): a copy costs two atomic acquisition-count updates (README).
cimport cython


@cython.final
cdef class LineCharges:
    cdef public long long[::1] v
    cdef public long long[::1] _base, _rank, _counter, _charged, _order
    cdef public Py_ssize_t rb, depth, _shift, _marked, _settled
    cdef public bint exact, prepaying
    cdef public object _shared, _sizes
    cdef public Py_ssize_t _thread
    cdef public unsigned char[::1] _marks
    cpdef LineCharges operation(self)
    cpdef begin(self)
    cpdef abort(self)
    @cython.locals(i=Py_ssize_t, mark=Py_ssize_t)
    cpdef settle(self)
    cpdef fold(self)
    @cython.locals(i=Py_ssize_t)
    cdef _unmark(self)
    cdef _grow_order(self)
    cpdef int record(self, Py_ssize_t ctr, Py_ssize_t line) except -1
    @cython.locals(mark=Py_ssize_t)
    cdef inline int _mark(self, Py_ssize_t i, Py_ssize_t rank) except -1
    cpdef page(self, Py_ssize_t ctr, Py_ssize_t pfn)
    cpdef int updated(self, Py_ssize_t loaded, Py_ssize_t stored, Py_ssize_t line) except -1
    @cython.locals(pfn=Py_ssize_t, base=Py_ssize_t, rank=Py_ssize_t)
    cpdef each(self, Py_ssize_t ctr, list pfns)
    @cython.locals(line=Py_ssize_t)
    cpdef pages(self, Py_ssize_t ctr, Py_ssize_t first, Py_ssize_t count)
    cpdef desc(self, Py_ssize_t ctr, Py_ssize_t word)
    cpdef free_memory(self, Py_ssize_t pfn)


cdef class Memmap:
    cdef public object mem, links, descs
    cdef public long long[::1] q, linksq
    cdef public Py_ssize_t w
    cdef public bint described
    cpdef long long buddy_order(self, Py_ssize_t pfn) except? -2
    cpdef add_buddy(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef del_buddy(self, Py_ssize_t pfn, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef Py_ssize_t next(self, Py_ssize_t pfn) except? -2
    cpdef Py_ssize_t prev(self, Py_ssize_t pfn) except? -2


cdef class Memmap64(Memmap):
    @cython.locals(base=Py_ssize_t)
    cpdef long long buddy_order(self, Py_ssize_t pfn) except? -2
    @cython.locals(base=Py_ssize_t)
    cpdef add_buddy(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t nxt, Py_ssize_t prev)
    @cython.locals(base=Py_ssize_t)
    cpdef del_buddy(self, Py_ssize_t pfn, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef Py_ssize_t next(self, Py_ssize_t pfn) except? -2
    cpdef Py_ssize_t prev(self, Py_ssize_t pfn) except? -2


cdef class Memmap32(Memmap64):
    @cython.locals(f=Py_ssize_t)
    cpdef long long buddy_order(self, Py_ssize_t pfn) except? -2
    @cython.locals(base=Py_ssize_t)
    cpdef add_buddy(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t nxt, Py_ssize_t prev)
    @cython.locals(base=Py_ssize_t)
    cpdef del_buddy(self, Py_ssize_t pfn, Py_ssize_t nxt, Py_ssize_t prev)


cdef class Memmap16(Memmap):
    @cython.locals(base=Py_ssize_t, w1=Py_ssize_t)
    cpdef long long buddy_order(self, Py_ssize_t pfn) except? -2
    @cython.locals(base=Py_ssize_t, i=Py_ssize_t)
    cpdef add_buddy(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t nxt, Py_ssize_t prev)
    @cython.locals(base=Py_ssize_t, i=Py_ssize_t)
    cpdef del_buddy(self, Py_ssize_t pfn, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef Py_ssize_t next(self, Py_ssize_t pfn) except? -2
    cpdef Py_ssize_t prev(self, Py_ssize_t pfn) except? -2


cdef class Memmap8(Memmap):
    @cython.locals(w=Py_ssize_t)
    cpdef long long buddy_order(self, Py_ssize_t pfn) except? -2
    cpdef add_buddy(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef del_buddy(self, Py_ssize_t pfn, Py_ssize_t nxt, Py_ssize_t prev)
    cpdef Py_ssize_t next(self, Py_ssize_t pfn) except? -2
    cpdef Py_ssize_t prev(self, Py_ssize_t pfn) except? -2


# imported constants, held as C integers here (pcpd.model.pagewords)
cdef long long NIL, PG_BUDDY, FLAG_ORDER_SHIFT, MEMDESC_BUDDY, BUDDY_HEAD, BUDDY_HEAD8
cdef Py_ssize_t DATA_W, UNTOUCHED, PAID, RANKED
cdef Py_ssize_t W_LINK, W_PREV, W_PRIVATE64
