# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled inner loops of :class:`online_models.linear.ScaledLogisticRegression`.

They work on the model's own state (``{feature: [count, mean, m2, weight, 1/std]}``, plain
lists of floats, so pickles and snapshots are unchanged) and do exactly the arithmetic of the
Python they replace, in the same order, so scores are the same bits. Values must be numbers
(``int``, ``float`` or ``bool``) or ``None`` (missing).
"""

from libc.math cimport sqrt, log1p, isfinite
from cpython.dict cimport PyDict_Next, PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_SET_ITEM
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF

__all__ = ["raw", "raw_and_contributions", "contributions", "learn", "top_positive",
           "prior_terms"]


cdef inline double _item(PyObject* s, Py_ssize_t i) except? -1.0:
    return <double><object>PyList_GET_ITEM(<object>s, i)   # exact floats take the fast path


cdef inline double _clip(double z, double clip) noexcept nogil:
    """The standardised value clipped to ``[-clip, clip]``."""
    if z > clip:
        return clip
    if z < -clip:
        return -clip
    return z


cdef inline void _set(object s, Py_ssize_t i, double v):
    cdef object f = v
    cdef PyObject* old = PyList_GET_ITEM(s, i)
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


def prior_terms(tuple terms, dict x) -> list:
    """``online_models.prior.RulePrior.terms``: ``(feature, value, weight * transformed value)``
    for each ``(feature, weight, log_scaled)`` of ``terms`` present in ``x`` (``None`` and
    booleans skipped; ``log1p(max(v, 0))`` when log-scaled, else ``v`` if finite)."""
    cdef list out = []
    cdef PyObject* ptr
    cdef object value
    cdef double v, w
    cdef bint log_scaled
    for name, weight, scaled in terms:
        ptr = PyDict_GetItem(x, name)
        if ptr == NULL:
            continue
        value = <object>ptr
        if value is None or type(value) is bool:
            continue
        if type(value) is float or type(value) is int:
            v = <double>value
        else:
            v = float(value)
        w = <double>weight
        if scaled:
            if not (0.0 > v):   # max(v, 0.0), NaN kept as Python's max keeps it
                v = log1p(v)
            else:
                v = log1p(0.0)
        elif not isfinite(v):
            continue
        out.append((name, value, w * v))
    return out
