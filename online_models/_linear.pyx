# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled inner loops of :class:`online_models.linear.ScaledLogisticRegression`.

They work on the model's own state (``{feature: [count, mean, m2, weight, 1/std]}``, plain
lists of floats, so pickles and snapshots are unchanged) and do exactly the arithmetic of the
Python they replace, in the same order, so scores are the same bits. Values must be numbers
(``int``, ``float`` or ``bool``) or ``None`` (missing).

Also compiled here: the prior's terms and log-odds (:class:`online_models.prior.RulePrior`), and
:class:`VectorPacker`, which keeps scored vectors that wait for their labels as C doubles
(:class:`online_models.labels.SnapshotStore` with ``packed=True``, the backtest's).
"""

from libc.math cimport sqrt, log1p, isfinite
from cpython.dict cimport PyDict_Next, PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_SET_ITEM
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.float cimport PyFloat_AS_DOUBLE

__all__ = ["raw", "raw_and_contributions", "contributions", "learn", "top_positive",
           "prior_terms", "prior_logit", "VectorPacker", "PackedVector"]


cdef inline double _item(PyObject* s, Py_ssize_t i) except? -1.0:
    return <double><object>PyList_GET_ITEM(<object>s, i)   # exact floats take the fast path


cdef inline double _clip(double z, double clip) noexcept nogil:
    """The standardised value clipped to ``[-clip, clip]``."""
    if z > clip:
        return clip
    if z < -clip:
        return -clip
    return z


cdef extern from "Python.h":
    ctypedef struct PyFloatObject:
        double ob_fval
    Py_ssize_t _refcnt "Py_REFCNT" (PyObject* o)
    bint _float_exact "PyFloat_CheckExact" (PyObject* o)


cdef inline void _set(object s, Py_ssize_t i, double v):
    cdef PyObject* old = PyList_GET_ITEM(s, i)
    if _refcnt(old) == 1 and _float_exact(old):
        # Only this list holds the float: give it the new value instead of replacing it by a
        # new object (learning sets four per feature; the value is the same double).
        (<PyFloatObject*>old).ob_fval = v
        return
    cdef object f = v
    Py_INCREF(f)
    PyList_SET_ITEM(s, i, f)
    Py_DECREF(<object>old)


def raw(dict state, dict x, double dot, double clip) -> float:
    """``dot`` plus ``weight * clip(standardised value)`` over the features of ``x``."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* s
    cdef double z
    while PyDict_Next(x, &pos, &k, &v):
        if <object>v is None:
            continue
        s = PyDict_GetItem(state, <object>k)
        if s == NULL:
            continue
        dot += _item(s, 3) * _clip((<double><object>v - _item(s, 1)) * _item(s, 4), clip)
    return dot


def raw_and_contributions(dict state, dict x, double dot, double clip, dict out, object skip):
    """:func:`raw`, also adding each feature's ``weight * z`` to ``out[feature]`` (features whose
    ``1/std`` is 0 and ``skip`` are left out of ``out``, not of the sum)."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* s
    cdef PyObject* prev
    cdef double z, c, inv
    while PyDict_Next(x, &pos, &k, &v):
        if <object>v is None:
            continue
        s = PyDict_GetItem(state, <object>k)
        if s == NULL:
            continue
        inv = _item(s, 4)
        c = _item(s, 3) * _clip((<double><object>v - _item(s, 1)) * inv, clip)
        dot += c
        if inv != 0.0 and not (<object>k is skip or (skip is not None and <object>k == skip)):
            prev = PyDict_GetItem(out, <object>k)
            PyDict_SetItem(out, <object>k, c if prev == NULL else <double><object>prev + c)
    return dot


def contributions(dict state, dict x, double clip) -> dict:
    """``weight * clip(standardised value)`` per feature of ``x`` with a defined std."""
    cdef dict out = {}
    raw_and_contributions(state, x, 0.0, clip, out, None)
    return out


def learn(dict state, dict x, double sg, double decay, double clip) -> None:
    """One SGD step (``sg``: step times gradient) with the standardisation as it was, then fold
    ``x`` into the running means and variances (Welford)."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* sp
    cdef object s
    cdef double val, mean, d, z, n, m2
    while PyDict_Next(x, &pos, &k, &v):
        if <object>v is None:
            continue
        sp = PyDict_GetItem(state, <object>k)
        if sp == NULL:
            s = [0.0, 0.0, 0.0, 0.0, 0.0]
            PyDict_SetItem(state, <object>k, s)
        else:
            s = <object>sp
        val = <double><object>v
        mean = _item(<PyObject*>s, 1)
        d = val - mean
        z = _clip(d * _item(<PyObject*>s, 4), clip)
        _set(s, 3, _item(<PyObject*>s, 3) * decay - sg * z)
        n = _item(<PyObject*>s, 0) + 1.0
        mean += d / n
        m2 = _item(<PyObject*>s, 2) + d * (val - mean)
        _set(s, 0, n)
        _set(s, 1, mean)
        _set(s, 2, m2)
        if m2 > 0.0:
            _set(s, 4, 1.0 / sqrt(m2 / n))


def top_positive(dict d, Py_ssize_t k) -> list:
    """The ``k`` entries of ``d`` with the largest positive values, largest first, as
    ``(key, value)``; equal values ordered by key, larger first: exactly
    ``[(f, c) for c, f in sorted(((c, f) for f, c in d.items() if c > 0.0), reverse=True)[:k]]``."""
    cdef list best = []          # (value, key), descending, at most k
    cdef Py_ssize_t pos = 0, i
    cdef PyObject* key
    cdef PyObject* val
    cdef object item
    if k <= 0:
        return []
    while PyDict_Next(d, &pos, &key, &val):
        if not <double><object>val > 0.0:
            continue
        item = (<object>val, <object>key)
        if len(best) == k and not item > best[k - 1]:
            continue
        i = len(best)
        while i > 0 and item > best[i - 1]:
            i -= 1
        best.insert(i, item)
        if len(best) > k:
            best.pop()
    return [(f, c) for c, f in best]


cdef inline bint _prior_value(object value, bint scaled, double* out) except -1:
    """The transformed value of one weighted feature of the prior into ``out``; False when it
    counts for nothing (``None``, a boolean, a non-finite value that is not log-scaled)."""
    cdef double v
    if value is None or type(value) is bool:
        return False
    if type(value) is float or type(value) is int:
        v = <double>value
    else:
        v = float(value)
    if scaled:
        if not (0.0 > v):   # max(v, 0.0), NaN kept as Python's max keeps it
            v = log1p(v)
        else:
            v = log1p(0.0)
    elif not isfinite(v):
        return False
    out[0] = v
    return True


def prior_logit(tuple terms, dict x, double bias, double clip) -> float:
    """``online_models.prior.RulePrior.logit`` without building the terms: ``bias`` plus the
    contributions :func:`prior_terms` gives, summed in their order, then clipped to
    ``[-clip, clip]`` as ``max(-clip, min(clip, z))`` does (a NaN sum gives ``clip``)."""
    cdef PyObject* ptr
    cdef double v, z = bias
    for name, weight, scaled in terms:
        ptr = PyDict_GetItem(x, name)
        if ptr != NULL and _prior_value(<object>ptr, scaled, &v):
            z += <double>weight * v
    if not (z < clip):
        z = clip
    if not (z > -clip):
        z = -clip
    return z


def prior_terms(tuple terms, dict x) -> list:
    """``online_models.prior.RulePrior.terms``: ``(feature, value, weight * transformed value)``
    for each ``(feature, weight, log_scaled)`` of ``terms`` present in ``x`` (``None`` and
    booleans skipped; ``log1p(max(v, 0))`` when log-scaled, else ``v`` if finite)."""
    cdef list out = []
    cdef PyObject* ptr
    cdef double v
    for name, weight, scaled in terms:
        ptr = PyDict_GetItem(x, name)
        if ptr != NULL and _prior_value(<object>ptr, scaled, &v):
            out.append((name, <object>ptr, <double>weight * v))
    return out


# ---------------------------------------------------------------------- packed vectors
# A scored vector waits in memory for its label, in a backtest for weeks of event time: as a
# dict it is ~1.6 kB plus a float object per value, scattered over the heap and cold by the time
# the label comes. Packed, it is its values as C doubles in one block, with the keys and value
# types in a layout shared by every vector of that shape; unpacking rebuilds an equal dict (same
# keys in the same order, values of the same types and bits).

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    object PyLong_FromLongLong(long long v)
    object PyFloat_FromDouble(double v)
    void* PyMem_Malloc(size_t n)
    void PyMem_Free(void* p)

# Value kinds in a layout: exactly these types; any other value leaves the vector a dict.
cdef enum:
    _FLOAT = 0
    _INT = 1
    _BOOL = 2
    _NONE = 3
# Integers that a double holds exactly.
cdef long long _INT_LIMIT = 9007199254740992


cdef class Layout:
    """The keys (in order) and value kinds of packed vectors of one shape."""
    cdef readonly tuple keys
    cdef readonly bytes kinds

    def __init__(self, tuple keys, bytes kinds):
        self.keys = keys
        self.kinds = kinds


cdef class PackedVector:
    """A vector packed by :func:`pack_vector` (in-memory only: it does not pickle)."""
    cdef readonly Layout layout
    cdef double* values

    def __dealloc__(self):
        PyMem_Free(self.values)

    def __reduce__(self):
        raise TypeError("a PackedVector lives in memory only; unpack it to store it")


cdef class VectorPacker:
    """Packs dicts of numbers (``float``, ``int`` within +-2**53, ``bool``, ``None``) keyed by
    ``str``: :meth:`pack` returns a :class:`PackedVector`, or the dict itself when a value is of
    another type; :meth:`unpack` returns an equal new dict (a dict is returned as it is).

    >>> p = VectorPacker()
    >>> v = {"a": 1.5, "n": 3, "f": True, "x": None}
    >>> u = p.unpack(p.pack(v))
    >>> u == v and list(u) == list(v)
    True
    >>> [type(x).__name__ for x in u.values()]
    ['float', 'int', 'bool', 'NoneType']
    >>> p.pack({"s": "text"})
    {'s': 'text'}
    """
    cdef dict _layouts      # (keys, kinds) -> Layout
    cdef Layout _last

    def __init__(self):
        self._layouts = {}
        self._last = None

    cdef Layout _layout_of(self, dict x, unsigned char* kinds, Py_ssize_t n):
        cdef Layout last = self._last
        cdef Py_ssize_t pos = 0, i = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef const unsigned char* lk
        if last is not None and len(last.keys) == n:
            lk = last.kinds
            while PyDict_Next(x, &pos, &k, &v):
                if <object>k is not <object>PyTuple_GET_ITEM(last.keys, i) or lk[i] != kinds[i]:
                    break
                i += 1
            if i == n:
                return last
        keys = tuple(x)
        kb = (<char*>kinds)[:n]
        layout = self._layouts.get((keys, kb))
        if layout is None:
            layout = self._layouts[(keys, kb)] = Layout(keys, kb)
        self._last = layout
        return layout

    def pack(self, dict x):
        cdef Py_ssize_t n = len(x), pos = 0, i = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef int overflow
        cdef long long iv
        cdef PackedVector out
        cdef bytearray kinds = bytearray(n)
        cdef unsigned char* kp = kinds
        cdef double* vals = <double*>PyMem_Malloc((n if n else 1) * sizeof(double))
        if vals == NULL:
            raise MemoryError()
        try:
            while PyDict_Next(x, &pos, &k, &v):
                if type(<object>k) is not str:
                    return x
                if type(<object>v) is float:
                    kp[i] = _FLOAT
                    vals[i] = PyFloat_AS_DOUBLE(<object>v)
                elif type(<object>v) is int:
                    iv = PyLong_AsLongLongAndOverflow(<object>v, &overflow)
                    if overflow or iv > _INT_LIMIT or iv < -_INT_LIMIT:
                        return x
                    kp[i] = _INT
                    vals[i] = <double>iv
                elif type(<object>v) is bool:
                    kp[i] = _BOOL
                    vals[i] = 1.0 if <object>v is True else 0.0
                elif <object>v is None:
                    kp[i] = _NONE
                    vals[i] = 0.0
                else:
                    return x
                i += 1
            out = PackedVector.__new__(PackedVector)
            out.layout = self._layout_of(x, kp, n)
            out.values = vals
            vals = NULL
            return out
        finally:
            PyMem_Free(vals)

    def unpack(self, object packed):
        if type(packed) is not PackedVector:
            return packed
        cdef PackedVector p = <PackedVector>packed
        cdef tuple keys = p.layout.keys
        cdef const unsigned char* kinds = p.layout.kinds
        cdef Py_ssize_t n = len(keys), i
        cdef dict out = {}
        cdef double d
        for i in range(n):
            d = p.values[i]
            if kinds[i] == _FLOAT:
                value = PyFloat_FromDouble(d)
            elif kinds[i] == _INT:
                value = PyLong_FromLongLong(<long long>d)
            elif kinds[i] == _BOOL:
                value = d != 0.0
            else:
                value = None
            PyDict_SetItem(out, <object>PyTuple_GET_ITEM(keys, i), value)
        return out
