# C types for slab.py when setup.py compiles it (pcpd.core); see memmap.pxd.
cimport cython


cdef class DescriptorSlab:
    cdef public object free_stack, header, lock
    cdef public long long[::1] d, entry
    cdef public long long[::1] v
    cdef public Py_ssize_t cpu, _cached, avail
    cpdef Py_ssize_t alloc(self) except? -1
    cpdef free(self, Py_ssize_t idx)
    @cython.locals(give=list, i=Py_ssize_t)
    cpdef _flush(self, Py_ssize_t count)


# private constants, held as C integers here
cdef Py_ssize_t _SLAB_ALLOC, _SLAB_FREE, _DESC_WORDS, _D_STATE, _SLAB_BATCH, _SLAB_LOCAL_MAX
