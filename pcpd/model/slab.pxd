# C types for slab.py when setup.py compiles it (pcpd.core); see memmap.pxd.
cimport cython


cdef class DescriptorSlab:
    cdef public object free_stack, header, lock
    cdef public long long[::1] d
    cdef public list v, local
    cdef public Py_ssize_t cpu, _cached
    cpdef Py_ssize_t alloc(self) except? -1
    cpdef free(self, Py_ssize_t idx)


# private constants, held as C integers here
cdef Py_ssize_t _SLAB_ALLOC, _SLAB_FREE, _DESC_WORDS
