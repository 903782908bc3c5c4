# C types for struct_page.py when setup.py compiles it (pcpd.core); see workers/pcp.pxd.
cimport cython

from workers.pcp cimport PerCpuPages
from workers.policies.base cimport Policy


cdef class _Page64Policy(Policy):
    cdef public list _pcp_flags, _alloc_flags
    @cython.locals(pcp=PerCpuPages, pfn=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(head=Py_ssize_t, pcp=PerCpuPages, pindex=Py_ssize_t, base=Py_ssize_t,
                   old=Py_ssize_t, drain=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(flags=cython.longlong, tail=Py_ssize_t, pfn=Py_ssize_t, base=Py_ssize_t)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pfn=Py_ssize_t)
    cpdef list _leave(self, PerCpuPages pcp, Py_ssize_t index, Py_ssize_t order, list entries)


cdef class LegacyPolicy(_Page64Policy):
    pass


cdef class CompoundPolicy(_Page64Policy):
    @cython.locals(flags=cython.longlong, tail=Py_ssize_t, pfn=Py_ssize_t, base=Py_ssize_t)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pfn=Py_ssize_t)
    cpdef list _leave(self, PerCpuPages pcp, Py_ssize_t index, Py_ssize_t order, list entries)


# imported constants, held as C integers here
cdef Py_ssize_t HIT, PAGE_W, LINK_W, FREE_PCP, FREE_TYPE, W_LINK, W_PREV, W_REFCOUNT, PAGEBLOCK_ORDER
cdef long long NIL
