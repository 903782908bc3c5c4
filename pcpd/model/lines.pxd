# C types for lines.py when setup.py compiles it (pcpd.core); see memmap.pxd.
# Read-only from Python: the module runs without bounds checks, and its
# indices are safe only as its own methods keep these (lines.py).
cimport cython


@cython.final
cdef class LineCharges:
    cdef readonly long long[::1] v
    cdef readonly long long[::1] _base, _rank, _lines, _counter, _pending
    cdef readonly Py_ssize_t rb, depth, _shift, _begun, _now, _last
    cdef readonly bint exact, prepaying
    cdef readonly object _shared, _sizes
    cdef readonly Py_ssize_t _thread
    cdef readonly int[::1] _marks
    cpdef LineCharges operation(self)
    cpdef begin(self)
    @cython.locals(r=Py_ssize_t)
    cpdef abort(self)
    @cython.locals(r=Py_ssize_t)
    cpdef settle(self)
    cdef int _next_settle(self) except -1
    @cython.locals(i=Py_ssize_t)
    cdef int _renumber(self) except -1
    cpdef fold(self)
    cpdef int record(self, Py_ssize_t ctr, Py_ssize_t line) except -1
    cdef int _refuse(self, Py_ssize_t ctr, Py_ssize_t line) except -1
    cpdef int updated(self, Py_ssize_t loaded, Py_ssize_t stored, Py_ssize_t line) except -1
    @cython.locals(stamp=Py_ssize_t, mark=Py_ssize_t)
    cdef inline void _mark(self, Py_ssize_t i, Py_ssize_t rank) noexcept
    cpdef page(self, Py_ssize_t ctr, Py_ssize_t pfn)
    @cython.locals(pfn=Py_ssize_t, base=Py_ssize_t, rank=Py_ssize_t, lines=Py_ssize_t, line=Py_ssize_t)
    cpdef each(self, Py_ssize_t ctr, list pfns)
    @cython.locals(line=Py_ssize_t)
    cpdef pages(self, Py_ssize_t ctr, Py_ssize_t first, Py_ssize_t count)
    cpdef desc(self, Py_ssize_t ctr, Py_ssize_t word)
    cpdef free_memory(self, Py_ssize_t pfn)


# imported and module constants, held as C integers here
cdef Py_ssize_t DATA_W, PAID, RANKED, _STATES
