# C types for pcp.py when setup.py compiles it (pcpd.core): the rules stay in
# pcp.py, and this file says only which values are machine integers.
cimport cython


cdef class PerCpuPages:
    cdef public list lists, allowed, pindex, list_orders
    cdef public Py_ssize_t count, high, high_min, high_max, batch, flags, alloc_factor
    cdef public Py_ssize_t free_count, scale_max, free_cap, nr_types
    cdef public object era, drain_cause
    cdef public bint tuned, reclaim_limit
    cpdef Py_ssize_t list_order(self, Py_ssize_t index) except? -1
    @cython.locals(batch=Py_ssize_t, n=Py_ssize_t, room=Py_ssize_t)
    cpdef Py_ssize_t nr_pcp_alloc(self, Py_ssize_t order, bint zone_below_high) except? -1
    cpdef bint free_commit(self, Py_ssize_t order) except -1
    @cython.locals(zone_flags=Py_ssize_t, free_high=bint, high=Py_ssize_t)
    cpdef Py_ssize_t free_check(self, Py_ssize_t order, long long[::1] zone_words) except -1
    @cython.locals(high=Py_ssize_t, need=Py_ssize_t)
    cpdef Py_ssize_t nr_pcp_high(self, bint free_high, bint zone_below_high, bint reclaim_active) except? -1
    @cython.locals(batch=Py_ssize_t)
    cpdef Py_ssize_t nr_pcp_free(self, Py_ssize_t high, bint free_high) except? -1
    @cython.locals(last=Py_ssize_t, index=Py_ssize_t, order=Py_ssize_t, n=Py_ssize_t, out=list)
    cpdef list take_runs(self, Py_ssize_t count, Py_ssize_t start)


# imported constants, held as C integers here
cdef Py_ssize_t HPAGE_PMD_ORDER, PAGE_ALLOC_COSTLY_ORDER, Z_FLAGS
cdef long long BELOW_HIGH, RECLAIM_ACTIVE
