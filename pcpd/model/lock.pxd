# C types for lock.py when setup.py compiles it (pcpd.core); see memmap.pxd.  The
# virtual-time lock (pcpd.simulate.clock) subclasses ZoneLock in Python.
cimport cython


cdef class ZoneLock:
    cdef public object raw, cpuctl
    cdef public long long[::1] header
    cdef public long long[::1] v
    cdef public Py_ssize_t cpu, pid, _op
    cdef public long long _since
    cpdef acquire(self, Py_ssize_t op=*)
    cpdef _wait(self)
    @cython.locals(held=cython.longlong)
    cpdef release(self)


# imported constants, held as C integers here
cdef Py_ssize_t H_LOCK_HOLDER_CPU, H_LOCK_HOLDER_PID, H_LOCK_LAST_CPU, H_LOCK_OP
cdef Py_ssize_t _ACQ, _UNCONT, _HOLD, _HOLD_MAX, _SWITCH
