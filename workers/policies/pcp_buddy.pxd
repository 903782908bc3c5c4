# C types for pcp_buddy.py when setup.py compiles it (pcpd.core); see workers/pcp.pxd.
cimport cython

from pcpd.model.lines cimport LineCharges
from workers.pcp cimport PerCpuPages
from workers.policies.struct_page cimport LegacyPolicy


cdef class PcpBuddyPolicy(LegacyPolicy):
    cdef public Py_ssize_t me, owned_pages
    cdef public object owner_of, _outbox, _states
    cdef public list free_lists, _piece_flags
    cdef public set owned, fragmented
    @cython.locals(old=Py_ssize_t)
    cpdef _piece_add(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t mt)
    @cython.locals(lst=dict, old=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t _piece_link(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t mt) except? -2
    @cython.locals(base=Py_ssize_t, nxt=Py_ssize_t, prev=Py_ssize_t)
    cpdef _piece_del(self, dict lst, Py_ssize_t pfn, Py_ssize_t order)
    @cython.locals(cur=Py_ssize_t, lst=dict, pfn=Py_ssize_t, first=Py_ssize_t)
    cpdef Py_ssize_t _piece_take(self, Py_ssize_t order, Py_ssize_t mt, LineCharges lines=*) except? -2
    @cython.locals(mt=Py_ssize_t, pfn=Py_ssize_t, pcp=PerCpuPages, base=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(owner=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pcp=PerCpuPages, old=Py_ssize_t, drain=Py_ssize_t)
    cpdef _free_owned(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)


# imported constants, held as C integers here
cdef Py_ssize_t HIT, PAGE_W, LINK_W, FREE_PCP, FREE_TYPE, W_LINK, W_PREV, W_REFCOUNT, _PB
cdef long long NIL
