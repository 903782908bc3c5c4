# C types for memdesc.py when setup.py compiles it (pcpd.core); see workers/pcp.pxd.
cimport cython

from pcpd.model.slab cimport DescriptorSlab
from workers.pcp cimport PerCpuPages
from workers.policies.base cimport Policy


cdef class _MemdescPolicy(Policy):
    cdef public Py_ssize_t mw
    cdef public long long[::1] d, _held
    cdef public list _dstate_inuse, _dstate_pcp
    cdef public dict _dstate_new
    @cython.locals(w=Py_ssize_t, n=Py_ssize_t)
    cpdef _set_memdesc(self, Py_ssize_t pfn, Py_ssize_t order, long long value, object lines=*)
    @cython.locals(idx=Py_ssize_t, base=Py_ssize_t, large=bint)
    cpdef Py_ssize_t _new_desc(self, Py_ssize_t t, Py_ssize_t order, Py_ssize_t pfn, Py_ssize_t state,
                               object lines=*) except? -2
    cpdef Py_ssize_t _desc_pfn(self, Py_ssize_t idx) except? -2
    cpdef Py_ssize_t _desc_of(self, Py_ssize_t pfn) except? -2
    @cython.locals(base=Py_ssize_t, old=Py_ssize_t)
    cpdef _desc_push(self, object lst, Py_ssize_t idx)
    @cython.locals(idx=Py_ssize_t)
    cpdef Py_ssize_t _desc_pop(self, object lst, object lines=*) except? -2
    @cython.locals(tail=Py_ssize_t, base=Py_ssize_t)
    cpdef _desc_append_tail(self, object lst, Py_ssize_t idx)
    @cython.locals(idx=Py_ssize_t)
    cpdef _make_allocated(self, Py_ssize_t pfn, Py_ssize_t t, Py_ssize_t order, object lines=*)


cdef class MemdescPcpdescPolicy(_MemdescPolicy):
    @cython.locals(idx=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t _new_pcpdesc(self, Py_ssize_t pfn, Py_ssize_t order, object lines=*) except? -2
    @cython.locals(v=list, pcp=PerCpuPages, pidx=Py_ssize_t, pfn=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(v=list, pcp=PerCpuPages, pidx=Py_ssize_t, pindex=Py_ssize_t, drain=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pfn=Py_ssize_t)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pidx=Py_ssize_t, order=Py_ssize_t, pfn=Py_ssize_t, out=list)
    cpdef list _leave(self, PerCpuPages pcp, list entries)


cdef class MemdescPolicy(_MemdescPolicy):
    cdef public list _pcp_by_type, _free_list
    @cython.locals(v=list, pcp=PerCpuPages, pfn=Py_ssize_t, idx=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(v=list, pcp=PerCpuPages, index=Py_ssize_t, idx=Py_ssize_t, base=Py_ssize_t,
                   old=Py_ssize_t, drain=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(old=Py_ssize_t)
    cpdef _misc_push(self, object lst, Py_ssize_t pfn)
    @cython.locals(pfn=Py_ssize_t)
    cpdef Py_ssize_t _misc_pop(self, object lst) except? -2
    @cython.locals(pfn=Py_ssize_t, idx=Py_ssize_t, tail=Py_ssize_t)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(misc=bint, entry=Py_ssize_t, pfn=Py_ssize_t)
    cpdef _leave_run(self, Py_ssize_t t, list entries, Py_ssize_t order, list out)


# imported constants, held as C integers here
cdef Py_ssize_t PAGEBLOCK_ORDER, DESC_WORDS, D_STATE, D_PFN, D_REFCOUNT, D_MAPPING, D_NEXT, D_PREV
cdef Py_ssize_t D_MAPCOUNT, D_ENTIRE_MAPCOUNT, D_NR_PAGES_MAPPED, D_DEFERRED, DS_INUSE, DS_PCP
cdef Py_ssize_t HIT, FREE_PCP, FREE_TYPE, DESC_R, DESC_W, MD_W, DATA_W, T_KERNEL
cdef long long NIL
