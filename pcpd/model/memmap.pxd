# C types for memmap.py when setup.py compiles it (pcpd.core): the rules stay in
# memmap.py, and this file says only which values are machine integers.  A
# method listed here keeps the argument list it has here; one that is not
# listed needs no entry.  The page words are a typed memoryview, so a
# TracedArena's recording views need the interpreted build.
# Methods index typed memoryviews through self (self.q[i]), never a local copy
# (q = self.q): a copy costs two atomic acquisition-count updates (README).
cimport cython


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
cdef Py_ssize_t W_LINK, W_PREV, W_PRIVATE64
