# C types for base.py when setup.py compiles it (pcpd.core); see workers/pcp.pxd.
# Policy has no instance dict: a policy written in Python subclasses it as usual
# and gets one of its own, while a compiled policy's calls to its own cpdef
# methods go straight to C (with a dict, Cython checks each such call for a
# Python override, and 3.0 found none cheaply: every call went through Python).
# A compiled policy declares every attribute it sets, in its .pxd.
cimport cython

from pcpd.model.slab cimport DescriptorSlab
from pcpd.model.zone cimport Zone
from workers.pcp cimport PerCpuPages


cdef class Policy:
    cdef public object arena, tuning, options, np_mem
    cdef public DescriptorSlab slab
    cdef public long long[::1] mem, zone_words
    cdef public signed char[::1] pbq
    cdef public Zone zone
    cdef public tuple migratetypes
    cdef public long long[::1] v
    cdef public list pcps, _lists, _alloc_ctr
    cdef public Py_ssize_t cpu, rb, w
    cdef public bint nofragment
    cdef public PerCpuPages pcp
    cdef object __weakref__
    @cython.locals(zone=Zone, mt=Py_ssize_t, n=Py_ssize_t, pages=Py_ssize_t, blocks=list)
    cpdef bint _refill(self, PerCpuPages pcp, object lst, Py_ssize_t order, Py_ssize_t t) except -1
    @cython.locals(runs=list, pages=Py_ssize_t, order=Py_ssize_t, pfns=list)
    cpdef Py_ssize_t _drain(self, PerCpuPages pcp, Py_ssize_t count, Py_ssize_t start_pindex, object cause) except -1
    @cython.locals(runs=list, index=Py_ssize_t, order=Py_ssize_t, entries=list)
    cpdef list _take_for_drain(self, PerCpuPages pcp, Py_ssize_t count, Py_ssize_t start)
    cpdef list _leave(self, PerCpuPages pcp, Py_ssize_t index, Py_ssize_t order, list entries)
    cpdef _enter(self, PerCpuPages pcp, object lst, list blocks, Py_ssize_t order, Py_ssize_t t)
    cpdef Py_ssize_t _alloc_miss(self, PerCpuPages pcp, object lst, Py_ssize_t t, Py_ssize_t order) except? -2
    cpdef Py_ssize_t _take_first(self, PerCpuPages pcp, object lst, Py_ssize_t t, Py_ssize_t order) except? -2
    cpdef Py_ssize_t _alloc_buddy(self, Py_ssize_t t, Py_ssize_t order) except? -2
    cpdef _clear_below_high(self, object cause)
