# C types for memdesc.py when setup.py compiles it (pcpd.core); see workers/pcp.pxd.
cimport cython

from pcpd.model.lines cimport LineCharges
from pcpd.model.slab cimport DescriptorSlab
from workers.pcp cimport PerCpuPages
from workers.policies.base cimport Policy


cdef class _MemdescPolicy(Policy):
    cdef public Py_ssize_t mw
    cdef public long long[::1] d, _held
    cdef public list _dstate_inuse, _dstate_pcp
    @cython.locals(w=Py_ssize_t, n=Py_ssize_t)
    cpdef _set_memdesc(self, Py_ssize_t pfn, Py_ssize_t order, long long value, LineCharges lines=*)
    @cython.locals(idx=Py_ssize_t, base=Py_ssize_t, dstate=list, large=bint)
    cpdef Py_ssize_t _new_desc(self, Py_ssize_t t, Py_ssize_t order, Py_ssize_t pfn, Py_ssize_t state,
                               LineCharges lines=*) except? -2
    cpdef Py_ssize_t _desc_pfn(self, Py_ssize_t idx) except? -2
    cpdef Py_ssize_t _desc_of(self, Py_ssize_t pfn) except? -2
    @cython.locals(base=Py_ssize_t, old=Py_ssize_t)
    cpdef _desc_push(self, object lst, Py_ssize_t idx)
    @cython.locals(idx=Py_ssize_t, head=Py_ssize_t)
    cpdef Py_ssize_t _desc_pop(self, object lst, LineCharges lines=*) except? -2
    @cython.locals(base=Py_ssize_t)
    cpdef _desc_link_tail(self, Py_ssize_t idx, Py_ssize_t tail)
    cpdef Py_ssize_t _old_tail(self, object lst) except? -2
    @cython.locals(idx=Py_ssize_t, mtype=Py_ssize_t)
    cpdef _make_allocated(self, Py_ssize_t pfn, Py_ssize_t t, Py_ssize_t order, LineCharges lines=*)


cdef class MemdescPcpdescPolicy(_MemdescPolicy):
    cdef public list _dstate_pcpdesc
    @cython.locals(idx=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t _new_pcpdesc(self, Py_ssize_t pfn, Py_ssize_t order, LineCharges lines=*) except? -2
    @cython.locals(pcp=PerCpuPages, pidx=Py_ssize_t, pfn=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(pcp=PerCpuPages, pidx=Py_ssize_t, pindex=Py_ssize_t, drain=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pfn=Py_ssize_t, idx=Py_ssize_t, tail=Py_ssize_t, entries=list)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(pidx=Py_ssize_t, pfn=Py_ssize_t, out=list)
    cpdef list _leave(self, PerCpuPages pcp, Py_ssize_t index, Py_ssize_t order, list entries)


cdef class MemdescPolicy(_MemdescPolicy):
    cdef public list _pcp_by_type, _free_list
    @cython.locals(pcp=PerCpuPages, pfn=Py_ssize_t, idx=Py_ssize_t, base=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Py_ssize_t t, Py_ssize_t order) except? -2
    @cython.locals(pcp=PerCpuPages, index=Py_ssize_t, idx=Py_ssize_t, base=Py_ssize_t,
                   old=Py_ssize_t, drain=Py_ssize_t)
    cpdef free(self, Py_ssize_t pfn, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(old=Py_ssize_t)
    cpdef _misc_push(self, object lst, Py_ssize_t pfn)
    @cython.locals(pfn=Py_ssize_t)
    cpdef Py_ssize_t _misc_pop(self, object lst) except? -2
    @cython.locals(pfn=Py_ssize_t, idx=Py_ssize_t, tail=Py_ssize_t, entries=list, lines=LineCharges,
                   mtype=Py_ssize_t)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    @cython.locals(t=Py_ssize_t, pfns=list, entry=Py_ssize_t, pfn=Py_ssize_t)
    cpdef list _leave(self, PerCpuPages pcp, Py_ssize_t index, Py_ssize_t order, list entries)


# imported constants, held as C integers here
cdef Py_ssize_t PAGEBLOCK_ORDER, DESC_WORDS, D_STATE, D_PFN, D_REFCOUNT, D_MAPPING, D_NEXT, D_PREV
cdef Py_ssize_t D_MAPCOUNT, D_ENTIRE_MAPCOUNT, D_NR_PAGES_MAPPED, D_DEFERRED, DS_INUSE, DS_PCP
cdef Py_ssize_t HIT, FREE_PCP, FREE_TYPE, DESC_R, DESC_W, MD_W, DATA_W, T_KERNEL
cdef long long NIL, MEMDESC_PCPDESC, MEMDESC_BUDDY, MEMDESC_MISC
cdef tuple MEMDESC_OF
