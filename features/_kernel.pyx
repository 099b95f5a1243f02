# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True, infer_types=False
"""The feature engine's compiled kernel: per-entity window state in C memory and the functions
that fold events and labels into it and read features out of it.

One :class:`State` per entity holds the entity's latest event time, its ``last`` values and one
*ring* per window of its group (same length, delay and resolution). A ring keeps, per time
bucket, a count, label counts and for each numeric field its count, sum, sum of squares, min and
max, and for each distinct-count field the set of value hashes seen in the bucket; plus the
running total of the buckets inside the window seen from the head bucket (the bucket of the
latest event), where a distinct field holds ``{hash: number of window buckets containing it}``.
An in-order event therefore updates its bucket and the running total and reads its window in
O(1); expiring a bucket is a subtraction. Out-of-order events (within the grace period) update
their own bucket and read their own window by scanning buckets.

The state is plain C memory (no Python objects except the ``last`` values), so it costs the
cyclic garbage collector nothing, serialises with a few ``memcpy`` calls (:meth:`State.encode`)
and decodes without knowing its feature set: the encoding describes its own layout.

Distinct values are identified by a 64-bit hash of their text (``str(value)`` as UTF-8; FNV-1a
with a murmur3 finaliser, stable across runs and machines). Two different values collide with
probability about ``n**2 / 2**65`` for ``n`` values in a window: below 1e-13 for a thousand.
Past ``capacity`` values in a window the ring keeps only hashes whose low ``level`` bits are zero
and reports ``retained << level`` (distinct sampling; see docs/features.md for the error bound).

The numbers are IEEE doubles summed in a fixed order, so the same stream gives the same bits
whatever the batching, the cache or the backend. The encoding is native byte order
(little-endian on every machine fraudstream supports).
"""

cimport cython
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcpy, memmove, memset
from libc.math cimport sqrt, INFINITY, NAN, isnan
from libc.stdint cimport uint64_t, int64_t, uint32_t, uint16_t, uint8_t, int32_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_Next, PyDict_DelItem
from cpython.ref cimport PyObject
from cpython.exc cimport PyErr_NoMemory
from marshal import dumps as _mdumps, loads as _mloads

from features.exceptions import FeatureConfigError, FeatureError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

cdef extern from *:
    void __builtin_prefetch(const void*) noexcept nogil

__all__ = ["State", "GroupKernel", "hash_value", "sampled", "FORMAT", "AGG_CODES",
           "INDEX_FORMAT", "index_entry", "decode_index"]

#: First byte of an encoded :class:`State` (``features.store`` dispatches on it).
FORMAT = 2

# Slot layout of a bucket and of the running total.
DEF COUNT = 0
DEF LABELED = 1
DEF FRAUD = 2
DEF HEAD = 3
DEF VW = 5          # per numeric field: n, sum, sum of squares, min, max

AGG_CODES = {"count": 0, "fraud_count": 1, "fraud_rate": 2, "distinct": 3, "sum": 4,
             "mean": 5, "std": 6, "min": 7, "max": 8, "ratio_to_mean": 9, "zscore": 10}
DEF A_COUNT = 0
DEF A_FCOUNT = 1
DEF A_FRATE = 2
DEF A_DISTINCT = 3
DEF A_SUM = 4
DEF A_MEAN = 5
DEF A_STD = 6
DEF A_MIN = 7
DEF A_MAX = 8
DEF A_RATIO = 9
DEF A_ZSCORE = 10

# Variances below this fraction of the mean square are rounding noise (sum-of-squares formula).
DEF VAR_EPS = 1e-9


# ---------------------------------------------------------------------- hashing
cdef inline uint64_t _fmix(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= <uint64_t>0xff51afd7ed558ccd
    h ^= h >> 33
    h *= <uint64_t>0xc4ceb9fe1a85ec53
    h ^= h >> 33
    return h


cdef inline uint64_t _hash_bytes(const char* s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = <uint64_t>0xcbf29ce484222325
    cdef Py_ssize_t i
    for i in range(n):
        h ^= <uint8_t>s[i]
        h *= <uint64_t>0x100000001b3
    h = _fmix(h)
    return h if h else 1          # 0 marks an empty slot


cdef uint64_t _hash(object v) except 0:
    cdef Py_ssize_t n
    cdef const char* s
    if type(v) is not str:
        v = str(v)
    s = PyUnicode_AsUTF8AndSize(v, &n)
    return _hash_bytes(s, n)


def hash_value(value) -> int:
    """The 64-bit hash a distinct count identifies ``value`` by (never 0)."""
    return _hash(value)


cdef inline bint _sampled(uint64_t h, int level) noexcept nogil:
    return level == 0 or (h & ((<uint64_t>1 << level) - 1)) == 0


def sampled(value, int level) -> bool:
    """Whether ``value`` survives distinct sampling at ``level`` (deterministic across runs)."""
    return _sampled(_hash(value), level)


# ---------------------------------------------------------------------- small sets and maps
# A bucket's distinct values: an unsorted array of hashes (small; linear search). ``cap``'s top
# bit (``BORROWED``) marks an array inside its state's arena (see ``State``): never freed nor
# reallocated on its own; growing it moves it to a block of its own.
ctypedef struct HSet:
    uint32_t n
    uint32_t cap
    uint64_t* a

cdef extern from *:
    """
    #define FS_HSET_BORROWED 0x80000000u
    #define FS_HSET_CAPMASK 0x7fffffffu
    """
    const uint32_t BORROWED "FS_HSET_BORROWED"
    const uint32_t CAPMASK "FS_HSET_CAPMASK"


cdef inline bint _hs_has(HSet* s, uint64_t h) noexcept nogil:
    cdef uint32_t i
    for i in range(s.n):
        if s.a[i] == h:
            return True
    return False


cdef int _hs_add(HSet* s, uint64_t h) except -1:
    cdef uint32_t cap, held = s.cap & CAPMASK
    cdef uint64_t* a
    if s.n == held:
        cap = held * 2 if held else 4
        if s.cap & BORROWED:
            a = <uint64_t*>malloc(cap * sizeof(uint64_t))
            if a != NULL and s.n:
                memcpy(a, s.a, s.n * sizeof(uint64_t))
        else:
            a = <uint64_t*>realloc(s.a, cap * sizeof(uint64_t))
        if a == NULL:
            PyErr_NoMemory()
            return -1
        s.a, s.cap = a, cap
    s.a[s.n] = h
    s.n += 1
    return 0


cdef inline void _hs_free(HSet* s) noexcept nogil:
    if not (s.cap & BORROWED):
        free(s.a)
    s.a = NULL
    s.n = s.cap = 0


# The running total's distinct values: open addressing (linear probing, backward-shift delete),
# hash -> number of window buckets holding it. Capacity is a power of two, load <= 1/2. Keys and
# counts share one allocation (``vals`` follows ``keys``): one block to fetch and to free.
ctypedef struct HMap:
    uint32_t n
    uint32_t cap
    uint32_t borrowed     # keys and vals inside the state's arena: not freed on their own
    uint64_t* keys
    uint32_t* vals


cdef inline uint32_t _hm_slot(HMap* m, uint64_t h) noexcept nogil:
    cdef uint32_t mask = m.cap - 1
    cdef uint32_t i = <uint32_t>(h & mask)
    while m.keys[i] != 0 and m.keys[i] != h:
        i = (i + 1) & mask
    return i


cdef int _hm_resize(HMap* m, uint32_t cap) except -1:
    """Rehash into a table of ``cap`` slots (a power of two above twice the entries)."""
    cdef uint64_t* oldk = m.keys
    cdef uint32_t* oldv = m.vals
    cdef uint32_t oldcap = m.cap, i, j
    cdef char* mem = <char*>malloc(<size_t>cap * (sizeof(uint64_t) + sizeof(uint32_t)))
    if mem == NULL:
        PyErr_NoMemory()
        return -1
    m.keys = <uint64_t*>mem
    m.vals = <uint32_t*>(mem + <size_t>cap * sizeof(uint64_t))
    memset(m.keys, 0, cap * sizeof(uint64_t))
    m.cap = cap
    for i in range(oldcap):
        if oldk[i]:
            j = _hm_slot(m, oldk[i])
            m.keys[j] = oldk[i]
            m.vals[j] = oldv[i]
    if not m.borrowed:
        free(oldk)
    m.borrowed = 0
    return 0


cdef inline int _hm_grow(HMap* m) except -1:
    return _hm_resize(m, m.cap * 2 if m.cap else 8)


cdef inline uint32_t _hm_get(HMap* m, uint64_t h) noexcept nogil:
    if m.cap == 0:
        return 0
    cdef uint32_t i = _hm_slot(m, h)
    return m.vals[i] if m.keys[i] else 0


cdef int _hm_incr(HMap* m, uint64_t h) except -1:
    """Add one to ``h``'s count (inserting it at 1)."""
    cdef uint32_t i
    if (m.n + 1) * 2 > m.cap:
        _hm_grow(m)
    i = _hm_slot(m, h)
    if m.keys[i]:
        m.vals[i] += 1
    else:
        m.keys[i] = h
        m.vals[i] = 1
        m.n += 1
    return 0


cdef void _hm_remove_at(HMap* m, uint32_t i) noexcept nogil:
    """Empty slot ``i`` and shift later keys of its probe run back (no tombstones)."""
    cdef uint32_t mask = m.cap - 1
    cdef uint32_t j = i, k
    cdef bint home_between
    m.keys[i] = 0
    m.n -= 1
    while True:
        j = (j + 1) & mask
        if m.keys[j] == 0:
            return
        k = <uint32_t>(m.keys[j] & mask)
        # keys[j] may move back into the hole at i unless its home k lies cyclically in (i, j].
        if i <= j:
            home_between = i < k and k <= j
        else:
            home_between = k > i or k <= j
        if not home_between:
            m.keys[i] = m.keys[j]
            m.vals[i] = m.vals[j]
            m.keys[j] = 0
            i = j


cdef inline void _hm_decr(HMap* m, uint64_t h) noexcept nogil:
    """Subtract one from ``h``'s count, removing it at 0 (``h`` must be present)."""
    if m.cap == 0:
        return
    cdef uint32_t i = _hm_slot(m, h)
    if m.keys[i] == 0:
        return
    if m.vals[i] > 1:
        m.vals[i] -= 1
    else:
        _hm_remove_at(m, i)


cdef inline void _hm_clear(HMap* m) noexcept nogil:
    if m.cap:
        memset(m.keys, 0, m.cap * sizeof(uint64_t))
    m.n = 0


cdef inline void _hm_free(HMap* m) noexcept nogil:
    if not m.borrowed:
        free(m.keys)      # vals live in the same block
    m.keys = NULL
    m.vals = NULL
    m.n = m.cap = m.borrowed = 0


# ---------------------------------------------------------------------- rings
ctypedef struct Ring:
    int64_t head          # bucket of the latest event time (-1 before the first event)
    int32_t nb            # buckets held, sorted by index
    int32_t capb
    int32_t width         # slots per bucket
    int32_t nv            # numeric fields
    int32_t nd            # distinct fields
    int32_t lifetime
    int32_t flags         # RUN_BORROWED, BUCKETS_BORROWED: those blocks are in the state's arena
    # The buckets: one block of capb entries, indexes then slots then distinct sets.
    int64_t* bidx         # nb bucket indexes, ascending (the block's start)
    double* bs            # nb * width slots
    HSet* bset            # nb * nd distinct sets (NULL without distinct fields)
    # The ring's fixed part: one block, running total then maps then levels.
    double* run           # width slots; a NaN min marks min/max to recompute (the block's start)
    HMap* rmap            # nd maps
    uint8_t* levels       # nd sampling levels


cdef inline int64_t _fdiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline void _zero_slots(double* row, int nv) noexcept nogil:
    cdef int j, o
    row[COUNT] = 0
    row[LABELED] = 0
    row[FRAUD] = 0
    for j in range(nv):
        o = HEAD + VW * j
        row[o] = 0
        row[o + 1] = 0.0
        row[o + 2] = 0.0
        row[o + 3] = INFINITY
        row[o + 4] = -INFINITY


DEF RUN_BORROWED = 1
DEF BUCKETS_BORROWED = 2


cdef inline size_t _round8(size_t n) noexcept nogil:
    return (n + 7) & ~(<size_t>7)


cdef inline size_t _fixed_bytes(int nv, int nd) noexcept nogil:
    """Bytes of a ring's fixed part: running total, maps, levels (rounded up to 8)."""
    return _round8((HEAD + VW * nv) * sizeof(double) + nd * sizeof(HMap) + (nd or 1))


cdef inline size_t _bucket_bytes(int nv, int nd) noexcept nogil:
    return sizeof(int64_t) + (HEAD + VW * nv) * sizeof(double) + nd * sizeof(HSet)


cdef void _ring_setup(Ring* r, int nv, int nd, bint lifetime, char* mem) noexcept nogil:
    """Initialise an empty ring whose fixed part is ``mem`` (``_fixed_bytes`` long, in its
    state's arena)."""
    cdef size_t run_bytes, map_bytes
    memset(r, 0, sizeof(Ring))
    r.flags = RUN_BORROWED
    r.head = -1
    r.nv, r.nd, r.lifetime = nv, nd, lifetime
    r.width = HEAD + VW * nv
    run_bytes = r.width * sizeof(double)
    map_bytes = nd * sizeof(HMap)
    r.run = <double*>mem
    r.rmap = <HMap*>(mem + run_bytes)
    r.levels = <uint8_t*>(mem + run_bytes + map_bytes)
    _zero_slots(r.run, nv)
    memset(r.rmap, 0, map_bytes + (nd or 1))


cdef void _ring_place(Ring* r, char* mem, int32_t capb) noexcept nogil:
    """Give an empty ring room for ``capb`` buckets at ``mem`` (``capb * _bucket_bytes``), in
    its state's arena."""
    r.bidx = <int64_t*>mem
    r.bs = <double*>(mem + <size_t>capb * sizeof(int64_t))
    r.bset = (<HSet*>(mem + <size_t>capb * (sizeof(int64_t) + r.width * sizeof(double)))
              if r.nd else NULL)
    r.capb = capb
    r.flags |= BUCKETS_BORROWED


cdef void _ring_free(Ring* r) noexcept nogil:
    cdef int i, k
    for i in range(r.nb * r.nd):
        _hs_free(&r.bset[i])
    for k in range(r.nd):
        _hm_free(&r.rmap[k])
    if not (r.flags & BUCKETS_BORROWED):
        free(r.bidx)      # with bs and bset
    if not (r.flags & RUN_BORROWED):
        free(r.run)       # with rmap and levels
    memset(r, 0, sizeof(Ring))


cdef int _ring_reserve(Ring* r, int32_t want) except -1:
    """Room for ``want`` buckets: the indexes, slots and distinct sets move to one new block."""
    cdef int32_t cap
    cdef size_t idx_bytes, slot_bytes
    cdef char* mem
    if want <= r.capb:
        return 0
    cap = r.capb * 2 if r.capb else 4
    while cap < want:
        cap *= 2
    idx_bytes = <size_t>cap * sizeof(int64_t)
    slot_bytes = <size_t>cap * r.width * sizeof(double)
    mem = <char*>malloc(idx_bytes + slot_bytes + <size_t>cap * r.nd * sizeof(HSet))
    if mem == NULL:
        PyErr_NoMemory()
        return -1
    if r.nb:
        memcpy(mem, r.bidx, r.nb * sizeof(int64_t))
        memcpy(mem + idx_bytes, r.bs, <size_t>r.nb * r.width * sizeof(double))
        if r.nd:
            memcpy(mem + idx_bytes + slot_bytes, r.bset, <size_t>r.nb * r.nd * sizeof(HSet))
    if r.flags & BUCKETS_BORROWED:
        r.flags &= ~BUCKETS_BORROWED
    else:
        free(r.bidx)
    r.bidx = <int64_t*>mem
    r.bs = <double*>(mem + idx_bytes)
    r.bset = <HSet*>(mem + idx_bytes + slot_bytes) if r.nd else NULL
    r.capb = cap
    return 0


cdef inline int32_t _find(Ring* r, int64_t b) noexcept nogil:
    """Position of the first bucket whose index is >= ``b``."""
    cdef int32_t lo = 0, hi = r.nb, mid
    if hi and r.bidx[hi - 1] < b:        # the common case: appending at the end
        return hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if r.bidx[mid] < b:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int32_t _bucket(Ring* r, int64_t b) except -1:
    """Position of bucket ``b``, inserted empty if absent."""
    cdef int32_t p = _find(r, b), w = r.width, nd = r.nd
    if p < r.nb and r.bidx[p] == b:
        return p
    _ring_reserve(r, r.nb + 1)
    if p < r.nb:
        memmove(&r.bidx[p + 1], &r.bidx[p], (r.nb - p) * sizeof(int64_t))
        memmove(&r.bs[(p + 1) * w], &r.bs[p * w], (r.nb - p) * w * sizeof(double))
        if nd:
            memmove(&r.bset[(p + 1) * nd], &r.bset[p * nd], (r.nb - p) * nd * sizeof(HSet))
    r.bidx[p] = b
    _zero_slots(&r.bs[p * w], r.nv)
    if nd:
        memset(&r.bset[p * nd], 0, nd * sizeof(HSet))
    r.nb += 1
    return p


cdef void _drop_prefix(Ring* r, int32_t m) noexcept nogil:
    """Remove the first ``m`` buckets."""
    cdef int32_t i, w = r.width, nd = r.nd
    if m <= 0:
        return
    for i in range(m * nd):
        _hs_free(&r.bset[i])
    if m < r.nb:
        memmove(r.bidx, &r.bidx[m], (r.nb - m) * sizeof(int64_t))
        memmove(r.bs, &r.bs[m * w], (r.nb - m) * w * sizeof(double))
        if nd:
            memmove(r.bset, &r.bset[m * nd], (r.nb - m) * nd * sizeof(HSet))
    r.nb -= m


cdef inline void _add_slots(double* row, const double* b, int nv) noexcept nogil:
    """Add a bucket's slots into ``row`` (a NaN min in ``row`` marks extremes left stale)."""
    cdef int j, o
    row[COUNT] += b[COUNT]
    row[LABELED] += b[LABELED]
    row[FRAUD] += b[FRAUD]
    for j in range(nv):
        o = HEAD + VW * j
        if b[o]:
            row[o] += b[o]
            row[o + 1] += b[o + 1]
            row[o + 2] += b[o + 2]
            if not isnan(row[o + 3]):
                if b[o + 3] < row[o + 3]:
                    row[o + 3] = b[o + 3]
                if b[o + 4] > row[o + 4]:
                    row[o + 4] = b[o + 4]


cdef int _add(Ring* r, int32_t p) except -1:
    """Add bucket at position ``p`` into the running total."""
    cdef int k
    cdef uint32_t i
    cdef HSet* s
    _add_slots(r.run, &r.bs[p * r.width], r.nv)
    for k in range(r.nd):
        s = &r.bset[p * r.nd + k]
        for i in range(s.n):
            _hm_incr(&r.rmap[k], s.a[i])
    return 0


cdef void _sub(Ring* r, int32_t p) noexcept nogil:
    """Subtract bucket at position ``p`` from the running total."""
    cdef double* run = r.run
    cdef double* b = &r.bs[p * r.width]
    cdef double left
    cdef int j, o, k
    cdef uint32_t i
    cdef HSet* s
    run[COUNT] -= b[COUNT]
    run[LABELED] -= b[LABELED]
    run[FRAUD] -= b[FRAUD]
    for j in range(r.nv):
        o = HEAD + VW * j
        if b[o]:
            left = run[o] - b[o]
            run[o] = left
            if left:
                run[o + 1] -= b[o + 1]
                run[o + 2] -= b[o + 2]
                # The window's extremes may have left with this bucket: recompute lazily.
                if not isnan(run[o + 3]) and (b[o + 3] <= run[o + 3] or b[o + 4] >= run[o + 4]):
                    run[o + 3] = NAN
                    run[o + 4] = NAN
            else:  # an empty window sums to exactly zero, whatever rounding came before
                run[o + 1] = 0.0
                run[o + 2] = 0.0
                run[o + 3] = INFINITY
                run[o + 4] = -INFINITY
    for k in range(r.nd):
        s = &r.bset[p * r.nd + k]
        for i in range(s.n):
            _hm_decr(&r.rmap[k], s.a[i])


cdef int _clear_run(Ring* r) except -1:
    cdef int k
    _zero_slots(r.run, r.nv)
    for k in range(r.nd):
        _hm_clear(&r.rmap[k])
    return 0


cdef int _rebuild(Ring* r, int64_t n, int64_t d) except -1:
    cdef int32_t p
    _clear_run(r)
    for p in range(_find(r, r.head - d - n + 1), _find(r, r.head - d + 1)):
        _add(r, p)
    return 0


# ---------------------------------------------------------------------- ring specs
cdef class _Spec:
    """The window of one ring (lengths in buckets) and its readers."""
    cdef int64_t n, d, res, grace
    cdef bint lifetime, minmax
    cdef int nv, nd, capacity
    cdef list vfields, dfields          # field names (str)
    cdef list rnames                    # reader: output name
    cdef int[:] rcodes                  # reader: aggregation code
    cdef int[:] rargs                   # reader: numeric field or distinct field index
    cdef list rfields                   # reader: the event field (ratio_to_mean, zscore)
    cdef object _keep


cdef int _raise_level(_Spec sp, Ring* r, int k) except -1:
    cdef int level, biggest
    cdef uint32_t i, j
    cdef int32_t p
    cdef HSet* s
    cdef HMap* m
    cdef uint64_t h
    while True:
        r.levels[k] += 1
        level = r.levels[k]
        biggest = 0
        if sp.lifetime:
            m = &r.rmap[k]
            i = 0
            while i < m.cap:
                h = m.keys[i]
                if h and not _sampled(h, level):
                    _hm_remove_at(m, i)   # a shifted key may land at i: look at it again
                    continue
                i += 1
            biggest = m.n
        else:
            for p in range(r.nb):
                s = &r.bset[p * r.nd + k]
                j = 0
                for i in range(s.n):
                    if _sampled(s.a[i], level):
                        s.a[j] = s.a[i]
                        j += 1
                s.n = j
                if <int>j > biggest:
                    biggest = j
            _rebuild(r, sp.n, sp.d)
            if <int>r.rmap[k].n > biggest:
                biggest = r.rmap[k].n
        if biggest <= sp.capacity:
            return 0


cdef void _maybe_reset_levels(Ring* r) noexcept nogil:
    cdef int k
    cdef int32_t p
    cdef bint empty
    for k in range(r.nd):
        if r.levels[k] and r.rmap[k].n == 0:
            empty = True
            for p in range(r.nb):
                if r.bset[p * r.nd + k].n:
                    empty = False
                    break
            if empty:
                r.levels[k] = 0


cdef int _advance(_Spec sp, Ring* r, int64_t max_t) except -1:
    """Move the head to the bucket of ``max_t``, expiring and pruning buckets."""
    cdef int64_t new = _fdiv(max_t, sp.res), old = r.head, n = sp.n, d = sp.d, gap, i, horizon
    cdef int32_t p, dead
    if new <= old:
        return 0
    r.head = new
    if r.nb == 0:
        return 0
    gap = new - old
    if gap >= n + d:  # every existing bucket (all <= old) is behind the new window
        _clear_run(r)
    elif gap >= n:
        _rebuild(r, n, d)
    else:  # buckets are sorted: visit only those leaving or entering the window
        for p in range(_find(r, old - d - n + 1), _find(r, new - d - n + 1)):
            _sub(r, p)
        if d:
            for p in range(_find(r, old - d + 1), _find(r, new - d + 1)):
                _add(r, p)
    # Buckets no non-late event can read again.
    horizon = _fdiv(max_t - sp.grace, sp.res) - d - n
    dead = 0
    while dead < r.nb and r.bidx[dead] <= horizon:
        dead += 1
    _drop_prefix(r, dead)
    if r.nd and r.run[COUNT] == 0:
        _maybe_reset_levels(r)
    return 0


cdef int _recompute_minmax(_Spec sp, Ring* r, int64_t b) except -1:
    cdef int64_t lo = b - sp.d - sp.n, hi = b - sp.d
    cdef int j, o
    cdef int32_t p
    cdef double mn, mx
    cdef double* bk
    for j in range(r.nv):
        o = HEAD + VW * j
        if isnan(r.run[o + 3]):
            mn, mx = INFINITY, -INFINITY
            for p in range(_find(r, lo + 1), _find(r, hi + 1)):
                bk = &r.bs[p * r.width]
                if bk[o]:
                    if bk[o + 3] < mn:
                        mn = bk[o + 3]
                    if bk[o + 4] > mx:
                        mx = bk[o + 4]
            r.run[o + 3], r.run[o + 4] = mn, mx
    return 0


cdef int _scan(_Spec sp, Ring* r, int64_t b, double* row, int64_t* dcounts) except -1:
    """The window seen from bucket ``b`` by summing buckets: slots into ``row``, distinct
    counts (before scaling by the level) into ``dcounts``."""
    cdef int64_t lo = b - sp.d - sp.n, hi = b - sp.d
    cdef int j, o, k
    cdef int32_t p
    cdef uint32_t i
    cdef double* bk
    cdef HMap tmp
    cdef HSet* s
    cdef int32_t first = _find(r, lo + 1), last = _find(r, hi + 1)
    _zero_slots(row, r.nv)
    for p in range(first, last):
        _add_slots(row, &r.bs[p * r.width], r.nv)
    for k in range(r.nd):
        memset(&tmp, 0, sizeof(HMap))
        try:
            for p in range(first, last):
                s = &r.bset[p * r.nd + k]
                for i in range(s.n):
                    _hm_incr(&tmp, s.a[i])
            dcounts[k] = tmp.n
        finally:
            _hm_free(&tmp)
    return 0


cdef inline double _mean_std(double n, double s, double q, double* mean) noexcept nogil:
    """Writes the mean, returns the standard deviation (0 when within rounding noise)."""
    cdef double var
    if not n:
        mean[0] = 0.0
        return 0.0
    mean[0] = s / n
    var = q / n - mean[0] * mean[0]
    if var <= VAR_EPS * (q / n):
        return 0.0
    return sqrt(var)


cdef int _write(_Spec sp, Ring* r, double* row, int64_t* dcounts, dict vals, dict out) except -1:
    """Write the ring's features from ``row`` (a running total or a scan) into ``out``."""
    cdef int i, code, a, o
    cdef double n, s, q, mean, std, v
    cdef object x, val
    cdef PyObject* ptr
    for i in range(len(sp.rnames)):
        code = sp.rcodes[i]
        a = sp.rargs[i]
        if code == A_COUNT:
            val = <long long>row[COUNT]
        elif code == A_FCOUNT:
            val = <long long>row[FRAUD]
        elif code == A_FRATE:
            val = row[FRAUD] / row[LABELED] if row[LABELED] else 0.0
        elif code == A_DISTINCT:
            val = (dcounts[a] if dcounts != NULL else <long long>r.rmap[a].n) << r.levels[a]
        else:
            o = HEAD + VW * a
            n, s, q = row[o], row[o + 1], row[o + 2]
            if code == A_SUM:
                val = s
            elif code == A_MEAN:
                val = s / n if n else 0.0
            elif code == A_STD:
                val = _mean_std(n, s, q, &mean)
            elif code == A_MIN:
                val = row[o + 3] if n else 0.0
            elif code == A_MAX:
                val = row[o + 4] if n else 0.0
            else:
                ptr = PyDict_GetItem(vals, sp.rfields[i])
                if ptr == NULL or <object>ptr is None:
                    val = 0.0
                else:
                    v = <double><object>ptr
                    if code == A_RATIO:
                        val = v * n / s if n and s else 0.0
                    else:
                        std = _mean_std(n, s, q, &mean)
                        val = (v - mean) / std if std else 0.0
        PyDict_SetItem(out, sp.rnames[i], val)
    return 0


cdef int _read_write(_Spec sp, Ring* r, int64_t t, dict vals, dict out) except -1:
    """Write the features of the window seen from time ``t``, without folding."""
    cdef int64_t b
    cdef double* row
    cdef int64_t* dc
    if sp.lifetime:
        return _write(sp, r, r.run, NULL, vals, out)
    b = _fdiv(t, sp.res)
    if b == r.head:
        if sp.minmax:
            _recompute_minmax(sp, r, b)
        return _write(sp, r, r.run, NULL, vals, out)
    row = <double*>malloc(r.width * sizeof(double) + (r.nd or 1) * sizeof(int64_t))
    if row == NULL:
        PyErr_NoMemory()
        return -1
    dc = <int64_t*>&row[r.width]
    try:
        _scan(sp, r, b, row, dc)
        _write(sp, r, row, dc, vals, out)
    finally:
        free(row)
    return 0


cdef inline void _fold_value(double* row, int o, double v) noexcept nogil:
    """One value into a numeric field's slots (count, sum, sum of squares, min, max; a NaN min
    marks extremes left stale, to be recomputed when read)."""
    row[o] += 1
    row[o + 1] += v
    row[o + 2] += v * v
    if not isnan(row[o + 3]):
        if v < row[o + 3]:
            row[o + 3] = v
        if v > row[o + 4]:
            row[o + 4] = v


cdef int _fold(_Spec sp, Ring* r, int64_t t, int64_t max_t, double* xs, bint* has,
               uint64_t* hs) except -1:
    """Fold one event at ``t`` (numeric values ``xs`` where ``has``; distinct hashes ``hs``,
    0 = absent)."""
    cdef double* run = r.run
    cdef double* bk
    cdef double v, sq
    cdef int64_t b
    cdef int32_t p
    cdef int j, o, k, level
    cdef bint inrun
    cdef uint64_t h
    cdef HSet* s
    cdef HMap* m
    if sp.lifetime:
        run[COUNT] += 1
        for j in range(r.nv):
            if has[j]:
                _fold_value(run, HEAD + VW * j, xs[j])
        for k in range(r.nd):
            h = hs[k]
            if h and _hm_get(&r.rmap[k], h) == 0 and _sampled(h, r.levels[k]):
                _hm_incr(&r.rmap[k], h)
                if <int>r.rmap[k].n > sp.capacity:
                    _raise_level(sp, r, k)
        return 0
    if _fdiv(max_t, sp.res) > r.head:
        _advance(sp, r, max_t)
    b = _fdiv(t, sp.res)
    p = _bucket(r, b)
    bk = &r.bs[p * r.width]
    inrun = r.head - sp.d - sp.n < b <= r.head - sp.d
    bk[COUNT] += 1
    if inrun:
        run[COUNT] += 1
    for j in range(r.nv):
        if has[j]:
            _fold_value(bk, HEAD + VW * j, xs[j])
            if inrun:
                _fold_value(run, HEAD + VW * j, xs[j])
    for k in range(r.nd):
        h = hs[k]
        if not h:
            continue
        s = &r.bset[p * r.nd + k]
        level = r.levels[k]
        if _hs_has(s, h) or not _sampled(h, level):
            continue
        _hs_add(s, h)
        if inrun:
            m = &r.rmap[k]
            _hm_incr(m, h)
            if <int>m.n > sp.capacity:
                _raise_level(sp, r, k)
        elif <int>s.n > sp.capacity:
            _raise_level(sp, r, k)
    return 0


cdef int _fold_label(_Spec sp, Ring* r, int64_t event_t, int64_t max_t, double labeled,
                     double fraud) except -1:
    cdef int64_t b
    cdef int32_t p
    cdef double* bk
    if sp.lifetime:
        r.run[LABELED] += labeled
        r.run[FRAUD] += fraud
        return 0
    b = _fdiv(event_t, sp.res)
    if b <= _fdiv(max_t - sp.grace, sp.res) - sp.d - sp.n:
        return 0  # no window that can still be read contains this bucket
    p = _bucket(r, b)
    bk = &r.bs[p * r.width]
    bk[LABELED] += labeled
    bk[FRAUD] += fraud
    if r.head - sp.d - sp.n < b <= r.head - sp.d:
        r.run[LABELED] += labeled
        r.run[FRAUD] += fraud
    return 0


cdef int _PREFETCH = 3
cdef size_t _PREFETCH_BYTES = 1024


def _set_prefetch(int level, size_t arena_bytes=1024) -> None:
    """Set how deep :func:`_prefetch` reaches (0: off; 3: also the first ``arena_bytes`` of a
    state's arena), for paired measurements in one process."""
    global _PREFETCH, _PREFETCH_BYTES
    _PREFETCH = level
    _PREFETCH_BYTES = arena_bytes


cdef inline void _prefetch_block(const char* p, size_t n) noexcept nogil:
    """Ask for the first ``n`` bytes at ``p`` (at most ``_PREFETCH_BYTES``), a cache line at a
    time."""
    cdef size_t off
    if p == NULL:
        return
    if n > _PREFETCH_BYTES:
        n = _PREFETCH_BYTES
    for off in range(0, n, 64):
        __builtin_prefetch(p + off)


cdef inline void _prefetch(Ring* rings, int nr, int level) noexcept nogil:
    """Ask for the memory a fold of these rings reads, all at once, before the fold needs it:
    a state that has left the CPU caches then costs a round trip to memory per level of
    pointers (the rings; their running totals and newest buckets; the distinct sets and maps
    those point to) instead of one per block it touches, one after the other."""
    cdef int i, k
    cdef Ring* r
    cdef HSet* s
    for i in range(nr):
        r = &rings[i]
        __builtin_prefetch(r.run)
        if r.nb:
            __builtin_prefetch(&r.bidx[r.nb - 1])
            __builtin_prefetch(&r.bs[(r.nb - 1) * r.width])
            if r.nd:
                __builtin_prefetch(&r.bset[(r.nb - 1) * r.nd])
    if level < 2:
        return
    for i in range(nr):
        r = &rings[i]
        for k in range(r.nd):
            __builtin_prefetch(r.rmap[k].keys)
            if r.nb:
                s = &r.bset[(r.nb - 1) * r.nd + k]
                __builtin_prefetch(s.a)


# ---------------------------------------------------------------------- entity state
@cython.no_gc
cdef class State:
    """One entity's state: latest event time, ``last`` values (``None`` when its group has no
    ``last`` features) and one ring per window.

    Not tracked by the cyclic garbage collector: a state refers to no object but its ``last``
    values (event fields), so it can be part of no reference cycle, and a worker's millions of
    cached states would otherwise be traversed by every older-generation collection.

    ``dirty``: the engine changed the state and told its store (``touch``) since the store last
    wrote it. The engine touches a dirty state no more; a store with ``touch`` clears the flag
    whenever it encodes the state for writing. Not part of the encoding.

    ``ref``: free for a store's eviction policy (``stream.state``'s cache sets it on a hit and
    clears it when it gives the state a second chance). Not part of the encoding.
    """
    cdef readonly int64_t t
    cdef public list last
    cdef public bint dirty
    cdef public bint ref
    cdef Ring* rings
    cdef int nr
    # One block holding the rings and, as a state was made or decoded, their running totals,
    # buckets, distinct sets and maps (NULL: none, the rings are a block of their own). A part
    # that grows moves to a block of its own (its ``BORROWED`` flag cleared); the rest stays.
    # Decoding, making and freeing a state thus costs one ``malloc`` or ``free`` instead of one
    # per ring, map and distinct set, and a fold reads one contiguous stretch of memory.
    cdef char* arena
    cdef size_t arena_size

    def __dealloc__(self):
        cdef int i
        if self.rings != NULL:
            for i in range(self.nr):
                _ring_free(&self.rings[i])
            if self.arena != NULL:
                free(self.arena)   # the rings are its start
            else:
                free(self.rings)
            self.rings = NULL
            self.arena = NULL

    def __getitem__(self, int i):
        # ``state[0]`` is the entity's latest event time, as for every value in a state store.
        if i != 0:
            raise IndexError(i)
        return self.t

    def encode(self) -> bytes:
        """Serialise: format byte, event time (big-endian, like every stored value), layout and
        contents (native byte order)."""
        cdef Py_ssize_t size = 9 + 1 + 4
        cdef int i, k
        cdef int32_t p
        cdef Ring* r
        if _PREFETCH:
            # The encoding reads every block of the state, usually one that has left the CPU
            # caches (an eviction): ask for all of them before the first is needed.
            _prefetch_block(self.arena, self.arena_size)
            _prefetch(self.rings, self.nr, 2)
            for i in range(self.nr):
                r = &self.rings[i]
                for p in range(r.nb * r.nd - r.nd):  # the newest bucket's: in _prefetch
                    __builtin_prefetch(r.bset[p].a)
        cdef bytes lastb = _mdumps(self.last, 4) if self.last else b""
        size += len(lastb)
        for i in range(self.nr):
            r = &self.rings[i]
            size += 4 + 8 + 4 + r.nd + r.width * 8
            for k in range(r.nd):
                size += 4 + r.rmap[k].n * 12
            size += r.nb * (8 + r.width * 8 + 4 * r.nd)
            for p in range(r.nb * r.nd):
                size += r.bset[p].n * 8
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef char* w = PyBytes_AS_STRING(out)
        cdef uint64_t ut = <uint64_t>self.t
        cdef int j
        w[0] = FORMAT
        for j in range(8):
            w[1 + j] = <char>((ut >> (56 - 8 * j)) & 0xff)
        w += 9
        w[0] = <char>self.nr
        w += 1
        w = _put32(w, len(lastb))
        if lastb:
            memcpy(w, <char*>lastb, len(lastb))
            w += len(lastb)
        for i in range(self.nr):
            r = &self.rings[i]
            w[0] = <char>r.lifetime
            w[1] = <char>r.nv
            w[2] = <char>r.nd
            w[3] = 0
            w += 4
            memcpy(w, &r.head, 8)
            w += 8
            w = _put32(w, r.nb)
            if r.nd:
                memcpy(w, r.levels, r.nd)
                w += r.nd
            memcpy(w, r.run, r.width * 8)
            w += r.width * 8
            for k in range(r.nd):
                w = _put_map(w, &r.rmap[k])
            if r.nb:
                memcpy(w, r.bidx, r.nb * 8)
                w += r.nb * 8
                memcpy(w, r.bs, r.nb * r.width * 8)
                w += r.nb * r.width * 8
            for p in range(r.nb * r.nd):
                w = _put32(w, r.bset[p].n)
                if r.bset[p].n:
                    memcpy(w, r.bset[p].a, r.bset[p].n * 8)
                    w += r.bset[p].n * 8
        return out


cdef inline char* _put32(char* w, uint32_t x) noexcept nogil:
    memcpy(w, &x, 4)
    return w + 4


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


cdef char* _put_map(char* w, HMap* m) except NULL:
    """Entries in ascending hash order, so equal maps encode to equal bytes whatever their
    insertion history (which decides the slots of an open-addressing table)."""
    cdef uint32_t i, n = 0
    cdef uint64_t* keys
    w = _put32(w, m.n)
    if m.n == 0:
        return w
    keys = <uint64_t*>malloc(m.n * sizeof(uint64_t))
    if keys == NULL:
        PyErr_NoMemory()
        return NULL
    for i in range(m.cap):
        if m.keys[i]:
            keys[n] = m.keys[i]
            n += 1
    qsort(keys, n, sizeof(uint64_t), _cmp_u64)
    for i in range(n):
        memcpy(w, &keys[i], 8)
        memcpy(w + 8, &m.vals[_hm_slot(m, keys[i])], 4)
        w += 12
    free(keys)
    return w


cdef class _Reader:
    cdef const char* p
    cdef const char* end

    cdef const char* take(self, Py_ssize_t n) except NULL:
        cdef const char* q = self.p
        if n < 0 or self.end - self.p < n:
            raise ValueError("truncated feature state")
        self.p += n
        return q

    cdef uint32_t u32(self) except? 0xffffffff:
        cdef uint32_t x
        memcpy(&x, self.take(4), 4)
        return x


cdef inline int32_t _decoded_capb(uint32_t nb, int lifetime) noexcept nogil:
    """Buckets a decoded ring has room for: its own and at least one more (a power of two from
    4, as ``_ring_reserve`` grows them), none for a lifetime ring without buckets."""
    cdef int32_t capb = 4
    if nb == 0 and lifetime:
        return 0
    while <uint32_t>capb < nb + 1:
        capb *= 2
    return capb


cdef inline uint32_t _decoded_mapcap(uint32_t cnt) noexcept nogil:
    """Slots of a decoded map of ``cnt`` entries (load <= 1/2, as ``_hm_incr`` keeps it)."""
    cdef uint64_t cap = 8
    while cap < 2 * <uint64_t>cnt:
        cap *= 2
    return <uint32_t>cap


cdef uint32_t _skip_counted(const char** pp, const char* end, uint64_t each) except? 0xffffffff:
    """Read a count (uint32) at ``pp[0]`` and move past it and its ``count * each`` bytes."""
    cdef uint32_t cnt
    if end - pp[0] < 4:
        raise ValueError("truncated feature state")
    memcpy(&cnt, pp[0], 4)
    if <uint64_t>(end - pp[0] - 4) < cnt * each:
        raise ValueError("truncated feature state")
    pp[0] += 4 + <Py_ssize_t>(cnt * each)
    return cnt


cdef Py_ssize_t _arena_bytes(const char* p, const char* end) except -1:
    """Bytes of the arena :func:`decode_state` carves the state encoded in ``[p, end)`` into
    (it reads the counts only; every length is checked against the bytes left)."""
    cdef uint32_t nb, cnt
    cdef int nr, i, k, nv, nd, lt, width
    cdef uint64_t j, total
    if end - p < 10:
        raise ValueError("truncated feature state")
    nr = <uint8_t>p[9]
    p += 10
    _skip_counted(&p, end, 1)                     # the ``last`` values
    total = _round8(<size_t>(nr or 1) * sizeof(Ring))
    for i in range(nr):
        if end - p < 16:
            raise ValueError("truncated feature state")
        lt, nv, nd = <uint8_t>p[0], <uint8_t>p[1], <uint8_t>p[2]
        width = HEAD + VW * nv
        memcpy(&nb, p + 12, 4)
        p += 16
        if end - p < nd + <Py_ssize_t>width * 8:  # levels, running total
            raise ValueError("truncated feature state")
        p += nd + <Py_ssize_t>width * 8
        total += _fixed_bytes(nv, nd)
        for k in range(nd):                       # maps
            cnt = _skip_counted(&p, end, 12)
            if cnt:
                total += _round8(<size_t>_decoded_mapcap(cnt) * (sizeof(uint64_t) + sizeof(uint32_t)))
        if <uint64_t>(end - p) < <uint64_t>nb * (8 + <uint64_t>width * 8):  # buckets
            raise ValueError("truncated feature state")
        p += <Py_ssize_t>nb * (8 + width * 8)
        total += <uint64_t>_decoded_capb(nb, lt) * _bucket_bytes(nv, nd)
        for j in range(<uint64_t>nb * nd):       # distinct sets
            total += <uint64_t>_skip_counted(&p, end, 8) * 8
    return <Py_ssize_t>total


cdef char* _arena_start(State st, size_t size) except NULL:
    """Give ``st`` (``st.nr`` set) its arena of ``size`` bytes, the rings zeroed at its start;
    return where the rest of the arena begins."""
    st.arena = <char*>malloc(size)
    if st.arena == NULL:
        raise MemoryError()
    st.arena_size = size
    st.rings = <Ring*>st.arena
    memset(st.rings, 0, (st.nr or 1) * sizeof(Ring))
    return st.arena + _round8(<size_t>(st.nr or 1) * sizeof(Ring))


def decode_state(data) -> State:
    """Inverse of :meth:`State.encode` (``data``: bytes or a buffer)."""
    cdef const unsigned char[:] view
    cdef const char* start
    cdef Py_ssize_t n
    if type(data) is bytes:  # what a store hands back: no buffer view to build
        start = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    else:
        view = data
        n = view.shape[0]
        start = <const char*>&view[0] if n else NULL
    if n < 10 or <uint8_t>start[0] != FORMAT:
        raise ValueError(f"not a feature state (format {<uint8_t>start[0] if n else None!r})")
    cdef _Reader rd = _Reader()
    rd.p = start
    rd.end = rd.p + n
    cdef State st = State.__new__(State)
    cdef const char* q = rd.take(9)
    cdef uint64_t ut = 0
    cdef int j, i, k, nv, nd, lt
    cdef uint32_t nb, cnt, e
    cdef int32_t p
    cdef Ring* r
    cdef uint64_t key, cap
    cdef uint32_t val
    cdef const char* q2
    cdef Py_ssize_t arena_size = _arena_bytes(start, start + n)
    cdef char* bump
    cdef int32_t capb
    # Every length read from the data is checked against the bytes left (take) before anything
    # is allocated or copied: corrupt input is a ValueError, never a bad read or write.
    for j in range(8):
        ut = (ut << 8) | <uint8_t>q[1 + j]
    st.t = <int64_t>ut
    st.nr = <uint8_t>rd.take(1)[0]
    cdef uint32_t lastn = rd.u32()
    if lastn:
        try:
            st.last = list(_mloads(rd.take(lastn)[:lastn]))
        except (EOFError, TypeError) as exc:
            raise ValueError(f"corrupt last values: {exc}") from None
    else:
        st.last = None
    bump = _arena_start(st, arena_size)
    for i in range(st.nr):
        q = rd.take(4)
        lt, nv, nd = <uint8_t>q[0], <uint8_t>q[1], <uint8_t>q[2]
        r = &st.rings[i]
        _ring_setup(r, nv, nd, lt, bump)
        bump += _fixed_bytes(nv, nd)
        memcpy(&r.head, rd.take(8), 8)
        nb = rd.u32()
        if nd:
            memcpy(r.levels, rd.take(nd), nd)
        memcpy(r.run, rd.take(r.width * 8), r.width * 8)
        for k in range(nd):
            cnt = rd.u32()
            q = rd.take(<Py_ssize_t>cnt * 12)
            if cnt:  # sized once (load <= 1/2), not grown entry by entry, in the arena
                cap = _decoded_mapcap(cnt)
                r.rmap[k].keys = <uint64_t*>bump
                r.rmap[k].vals = <uint32_t*>(bump + cap * sizeof(uint64_t))
                r.rmap[k].cap = <uint32_t>cap
                r.rmap[k].borrowed = 1
                memset(bump, 0, cap * sizeof(uint64_t))
                bump += _round8(cap * (sizeof(uint64_t) + sizeof(uint32_t)))
            for e in range(cnt):
                memcpy(&key, q + <Py_ssize_t>12 * e, 8)
                memcpy(&val, q + <Py_ssize_t>12 * e + 8, 4)
                if key == 0 or val == 0:
                    raise ValueError("corrupt distinct map")
                _hm_incr(&r.rmap[k], key)
                r.rmap[k].vals[_hm_slot(&r.rmap[k], key)] = val
        q = rd.take(<Py_ssize_t>nb * 8)
        q2 = rd.take(<Py_ssize_t>nb * r.width * 8)
        capb = _decoded_capb(nb, lt)
        if capb:
            _ring_place(r, bump, capb)
            bump += <size_t>capb * _bucket_bytes(nv, nd)
        if nb:
            memcpy(r.bidx, q, nb * 8)
            memcpy(r.bs, q2, <Py_ssize_t>nb * r.width * 8)
        for p in range(1, <int32_t>nb):
            if r.bidx[p] <= r.bidx[p - 1]:
                raise ValueError("buckets out of order")
        r.nb = nb
        if nd:
            memset(r.bset, 0, nb * nd * sizeof(HSet))
        for p in range(<int32_t>(nb * nd)):
            cnt = rd.u32()
            q = rd.take(<Py_ssize_t>cnt * 8)
            if cnt:  # in the arena, of the exact size
                r.bset[p].a = <uint64_t*>bump
                memcpy(bump, q, <size_t>cnt * 8)
                bump += <size_t>cnt * 8
                r.bset[p].n = cnt
                r.bset[p].cap = cnt | BORROWED
    if rd.p != rd.end:
        raise ValueError("trailing bytes after feature state")
    if bump != st.arena + arena_size:  # a bug, not bad input: the two passes disagree
        raise SystemError("feature state arena size mismatch")
    return st


# ---------------------------------------------------------------------- groups
DEF MAXF = 64


cdef class GroupKernel:
    """The rings of one entity group and the features they produce.

    ``rings``: per ring ``(length_ms, delay_ms, resolution_ms, value_fields, distinct_fields,
    readers)`` with ``readers`` a list of ``(name, aggregation, field)``; ``last_fields``: fields
    whose previous value features read; ``prev_readers``: ``(name, index)`` with index -1 for the
    time since the previous event, else a position in ``last_fields``.
    """
    cdef list specs
    cdef int nr
    cdef int64_t grace
    cdef object types
    cdef list last_fields, prev_names
    cdef int[:] prev_idx
    cdef list label_rings
    cdef object _prev
    cdef size_t arena_bytes       # of a new state (see new_state)

    def __init__(self, rings: list, last_fields: list, prev_readers: list, types, int capacity,
                 int64_t grace_ms, label_rings: list):
        cdef _Spec sp
        self.specs = []
        for length, delay, res, vfields, dfields, readers in rings:
            if len(vfields) > MAXF or len(dfields) > MAXF:
                raise FeatureConfigError(
                    f"a window of one entity group aggregates at most {MAXF} numeric and {MAXF} "
                    f"distinct-count fields, got {len(vfields)} and {len(dfields)}")
            sp = _Spec()
            sp.lifetime = length == 0
            sp.res = res or 1
            sp.n = 0 if sp.lifetime else length // sp.res
            sp.d = 0 if sp.lifetime else delay // sp.res
            sp.grace = grace_ms
            sp.nv, sp.nd = len(vfields), len(dfields)
            sp.vfields, sp.dfields = list(vfields), list(dfields)
            sp.capacity = capacity
            sp.minmax = any(agg in ("min", "max") for _, agg, _ in readers)
            sp.rnames = [name for name, _, _ in readers]
            codes, args, fields = [], [], []
            for name, agg, field in readers:
                codes.append(AGG_CODES[agg])
                if agg == "distinct":
                    args.append(sp.dfields.index(field))
                elif field is not None and field in sp.vfields:
                    args.append(sp.vfields.index(field))
                else:
                    args.append(0)
                fields.append(field)
            import array
            sp._keep = (array.array("i", codes or [0]), array.array("i", args or [0]))
            sp.rcodes = sp._keep[0]
            sp.rargs = sp._keep[1]
            sp.rfields = fields
            self.specs.append(sp)
        self.nr = len(self.specs)
        if self.nr > 255:  # the encoding counts rings in one byte
            raise FeatureConfigError(f"an entity group has at most 255 distinct windows "
                                     f"(length, delay, resolution), got {self.nr}")
        self.grace = grace_ms
        self.types = frozenset(types) if types else None
        self.last_fields = list(last_fields)
        self.prev_names = [name for name, _ in prev_readers]
        import array
        self._prev = array.array("i", [i for _, i in prev_readers] or [0])
        self.prev_idx = self._prev
        self.label_rings = list(label_rings)
        self.arena_bytes = _round8(<size_t>(self.nr or 1) * sizeof(Ring))
        for sp in self.specs:
            self.arena_bytes += _fixed_bytes(sp.nv, sp.nd)
            if not sp.lifetime:
                self.arena_bytes += 4 * _bucket_bytes(sp.nv, sp.nd)

    def new_state(self) -> State:
        cdef State st = State.__new__(State)
        cdef _Spec sp
        cdef int i
        cdef char* bump
        cdef Ring* r
        st.t = -1
        st.last = [None] * len(self.last_fields) if self.last_fields else None
        # One block: the rings, their fixed parts and room for 4 buckets each (windowed rings).
        st.nr = self.nr
        bump = _arena_start(st, self.arena_bytes)
        for i in range(self.nr):
            sp = self.specs[i]
            r = &st.rings[i]
            _ring_setup(r, sp.nv, sp.nd, sp.lifetime, bump)
            bump += _fixed_bytes(sp.nv, sp.nd)
            if not sp.lifetime:
                _ring_place(r, bump, 4)
                bump += 4 * _bucket_bytes(sp.nv, sp.nd)
        return st

    cdef int _step(self, State st, dict vals, int64_t t, dict out) except -1:
        """Fold one event into ``st`` and write the group's features into ``out``.

        Returns 0 when the event was folded (the caller stores ``st``), 1 when its type is not
        one the group folds, 2 when it is late (beyond the grace period: scored with the current
        state, not folded).
        """
        cdef int64_t prev_t = st.t, max_t, read_t
        cdef int i, j, k
        cdef bint late, folds
        cdef _Spec sp
        cdef PyObject* ptr
        cdef double xs[MAXF]
        cdef bint has[MAXF]
        cdef uint64_t hs[MAXF]
        cdef object v
        if _PREFETCH:
            if _PREFETCH >= 3:
                _prefetch_block(st.arena, st.arena_size)
            _prefetch(st.rings, st.nr, _PREFETCH)
        if self.last_fields and (st.last is None or len(st.last) != len(self.last_fields)):
            raise FeatureError("feature state has the wrong number of last values")
        for i in range(len(self.prev_names)):
            j = self.prev_idx[i]
            if j >= 0:
                PyDict_SetItem(out, self.prev_names[i], st.last[j])
            elif prev_t >= 0:
                PyDict_SetItem(out, self.prev_names[i],
                               (t - prev_t) / 1000.0 if t > prev_t else 0.0)
        late = prev_t >= 0 and t < prev_t - self.grace
        folds = not late
        if folds and self.types is not None:
            ptr = PyDict_GetItem(vals, "event_type")
            folds = ptr != NULL and (<object>ptr) in self.types
        if not folds:
            read_t = prev_t if late else t
            for i in range(self.nr):
                _read_write(<_Spec>self.specs[i], &st.rings[i], read_t, vals, out)
            return 2 if late else 1
        if t >= prev_t:
            st.t = t
            for j in range(len(self.last_fields)):
                ptr = PyDict_GetItem(vals, self.last_fields[j])
                st.last[j] = <object>ptr if ptr != NULL else None
        max_t = st.t
        for i in range(self.nr):
            sp = <_Spec>self.specs[i]
            for j in range(sp.nv):
                ptr = PyDict_GetItem(vals, sp.vfields[j])
                if ptr == NULL or <object>ptr is None:
                    has[j] = False
                else:
                    has[j] = True
                    xs[j] = <double><object>ptr
            for k in range(sp.nd):
                ptr = PyDict_GetItem(vals, sp.dfields[k])
                hs[k] = 0 if ptr == NULL or <object>ptr is None else _hash(<object>ptr)
            _fold(sp, &st.rings[i], t, max_t, xs, has, hs)
            _read_write(sp, &st.rings[i], t, vals, out)
        return 0

    def fold_label(self, State st, int64_t event_t, int labeled, int fraud) -> None:
        """Add label counts (deltas) for an event at ``event_t`` to the label-aware rings."""
        cdef int i
        for i in self.label_rings:
            _fold_label(<_Spec>self.specs[i], &st.rings[i], event_t, st.t, labeled, fraud)

    def worst_case_state(self, int64_t t, str last_value) -> State:
        """A state as large as this group's can get at time ``t``: every bucket a ring can hold
        (window + delay + grace, plus one) present, every distinct set and running map at the
        sketch's capacity, every ``last`` value ``last_value``. For sizing (bench, docs)."""
        cdef State st = self.new_state()
        cdef _Spec sp
        cdef Ring* r
        cdef int i, k, x
        cdef int64_t keep, j
        cdef int32_t p
        cdef uint64_t h
        st.t = t
        st.last = [last_value] * len(self.last_fields) if self.last_fields else None
        for i in range(self.nr):
            sp = self.specs[i]
            r = &st.rings[i]
            keep = 0 if sp.lifetime else sp.n + sp.d + (sp.grace + sp.res - 1) // sp.res + 1
            r.head = _fdiv(t, sp.res)
            for j in range(keep):
                p = _bucket(r, r.head - j)
                r.bs[p * r.width] = 1
            for k in range(r.nd):
                for x in range(sp.capacity):
                    h = _fmix(<uint64_t>(x * 131 + k + 1)) | 1
                    _hm_incr(&r.rmap[k], h)
                    for p in range(r.nb):
                        _hs_add(&r.bset[p * r.nd + k], h)
        return st


# ---------------------------------------------------------------------- the engine's inner loop
cdef bytes _key(bytes prefix, tuple entity, dict vals):
    """``prefix`` + the entity's key (one field's text, or the fields' texts joined by 0x1f);
    None when a field is absent."""
    cdef PyObject* ptr
    cdef object v
    cdef Py_ssize_t n, total
    cdef const char* s
    cdef list parts
    cdef char* w
    cdef bytes out
    if len(entity) == 1:
        ptr = PyDict_GetItem(vals, entity[0])
        if ptr == NULL or <object>ptr is None:
            return None
        v = <object>ptr
        if type(v) is not str:
            v = str(v)
        s = PyUnicode_AsUTF8AndSize(v, &n)
        out = PyBytes_FromStringAndSize(NULL, len(prefix) + n)
        w = PyBytes_AS_STRING(out)
        memcpy(w, <char*>prefix, len(prefix))
        memcpy(w + len(prefix), s, n)
        return out
    parts = []
    for f in entity:
        ptr = PyDict_GetItem(vals, f)
        if ptr == NULL or <object>ptr is None:
            return None
        parts.append(str(<object>ptr))
    return prefix + "\x1f".join(parts).encode()


#: First byte of an encoded label-index entry (see :func:`index_entry`).
INDEX_FORMAT = 3
cdef enum:
    _IX_FORMAT = 3
    # The label byte: no label yet, or the verdict.
    _IX_NONE = 0
    _IX_LEGIT = 1
    _IX_FRAUD = 2
    _IX_HEAD = 10       # format byte, event time (big-endian int64), label byte
    _IX_PAIR = 6        # per entity: group index (uint16), key length (uint32), then the key


cdef inline void _put_head(char* w, int64_t t, uint8_t label) noexcept nogil:
    cdef uint64_t u = <uint64_t>t
    cdef int j
    w[0] = <char>_IX_FORMAT
    for j in range(8):  # big-endian, like the ``>Bq`` header of the other stored values
        w[8 - j] = <char>(u & 0xff)
        u >>= 8
    w[9] = <char>label


cdef inline char* _put_pair(char* w, int gi, const char* key, Py_ssize_t n) noexcept nogil:
    cdef uint16_t g = <uint16_t>gi
    cdef uint32_t m = <uint32_t>n
    memcpy(w, &g, 2)
    memcpy(w + 2, &m, 4)
    memcpy(w + _IX_PAIR, key, n)
    return w + _IX_PAIR + n


def index_entry(int64_t t, pairs, label) -> bytes:
    """The stored form of a label-index entry: the event's time, the ``(group, entity key)``
    pairs of the label-aware states it was folded into, and its label (``None``, ``False``,
    ``True``). :meth:`Groups.process` builds the same bytes without the pairs as objects.

    Layout (``INDEX_FORMAT`` 3)::

        byte 0      3
        bytes 1-8   event time, epoch ms, big-endian int64 (as in every stored value's header)
        byte 9      label: 0 none, 1 not fraud, 2 fraud
        then per pair: group index (uint16), key length (uint32), key bytes (little-endian)

    >>> blob = index_entry(1_767_225_600_000, [(0, b"us.ab/u1"), (2, b"me.cd/m1")], True)
    >>> decode_index(blob)
    [1767225600000, [(0, b'us.ab/u1'), (2, b'me.cd/m1')], True]
    """
    cdef Py_ssize_t size = _IX_HEAD
    cdef bytes key, out
    cdef char* w
    cdef list items = [(int(g), <bytes?>k) for g, k in pairs]
    for g, key in items:
        if not 0 <= g < 65536:
            raise FeatureError(f"label index group {g} out of range")
        size += _IX_PAIR + PyBytes_GET_SIZE(key)
    out = PyBytes_FromStringAndSize(NULL, size)
    w = PyBytes_AS_STRING(out)
    _put_head(w, t, _IX_NONE if label is None else (_IX_FRAUD if label else _IX_LEGIT))
    w += _IX_HEAD
    for g, key in items:
        w = _put_pair(w, g, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
    return out


def decode_index(data) -> list:
    """``[event time, [(group, entity key), ...], label]`` of an :func:`index_entry`."""
    cdef const uint8_t[:] v = data
    cdef Py_ssize_t n = v.shape[0], pos = _IX_HEAD, m
    cdef uint64_t u = 0
    cdef uint16_t g
    cdef uint32_t k
    cdef int j
    cdef list pairs = []
    if n < _IX_HEAD or v[0] != _IX_FORMAT or v[9] > _IX_FRAUD:
        raise FeatureError(f"corrupt label index entry ({n} bytes)")
    for j in range(1, 9):
        u = (u << 8) | v[j]
    while pos < n:
        if n - pos < _IX_PAIR:
            raise FeatureError(f"corrupt label index entry ({n} bytes)")
        memcpy(&g, &v[pos], 2)
        memcpy(&k, &v[pos + 2], 4)
        pos += _IX_PAIR
        m = k
        if m > n - pos:
            raise FeatureError(f"corrupt label index entry ({n} bytes)")
        pairs.append((g, bytes(v[pos:pos + m])))
        pos += m
    label = None if v[9] == _IX_NONE else v[9] == _IX_FRAUD
    return [<int64_t>u, pairs, label]


cdef tuple _EVENT_ID = ("event_id",)


cdef class Groups:
    """The engine's per-event loop over its entity groups, with the state store's ``get`` and
    ``put`` (the store stays a Python object: memory, RocksDB behind a cache, or a dict)."""
    cdef list kernels, prefixes, entities
    cdef int* label_idx           # per group: its index when it has label rings, else -1
    cdef int n
    cdef int64_t ttl
    cdef object get, put, touch
    cdef bint live
    cdef dict objects             # the store's live objects, or None (see __init__)
    cdef int64_t[:] counts        # the store's hit counter (counts[0]), or None
    cdef bint counted
    cdef bytes index_prefix
    cdef char* buf                # the label-index entry being built (grows, kept)
    cdef Py_ssize_t cap
    #: Whether the last :meth:`process` was late for any group.
    cdef public bint late

    def __cinit__(self):
        self.label_idx = NULL
        self.buf = NULL
        self.cap = 0

    def __dealloc__(self):
        free(self.label_idx)
        free(self.buf)

    def __init__(self, kernels: list, prefixes: list, entities: list, label_idx: list,
                 int64_t ttl_ms, get, put, touch=None, bint live=False,
                 bytes index_prefix=b"", dict objects=None, counts=None):
        self.kernels, self.prefixes, self.entities = list(kernels), list(prefixes), list(entities)
        self.n = len(self.kernels)
        free(self.label_idx)
        self.label_idx = <int*>malloc(max(self.n, 1) * sizeof(int))
        if self.label_idx == NULL:
            raise MemoryError()
        for i, g in enumerate(label_idx):
            if g is not None and not 0 <= g < 65536:
                raise FeatureConfigError(f"label-aware group index {g} out of range")
            self.label_idx[i] = -1 if g is None else g
        self.ttl = ttl_ms
        # ``touch(key)``: the store's "the object get() returned has changed" (cheaper than a
        # put of the same object), called only while the state's ``dirty`` flag is clear (the
        # store clears it when it writes the state); stores without one get a put each time.
        self.get, self.put, self.touch = get, put, touch
        # ``live``: the store hands out its objects themselves (an in-memory dict), so a state
        # changed in place needs neither a put nor a touch.
        self.live = live
        self.index_prefix = index_prefix
        # ``objects``: the dict in which the store keeps the objects its ``get`` returns (its
        # cache of live objects), for the loop to look into before it calls ``get``: a
        # feature state found there is a hit, served without a Python call, with the store's
        # bookkeeping of a hit done here (``state.ref`` set, ``counts[0]`` incremented). The
        # store keeps there every object its ``get`` would return for a key. Anything else (a
        # miss, another kind of object) goes to ``get``.
        self.objects = objects
        self.counted = counts is not None
        if self.counted:
            self.counts = counts

    cdef int _room(self, Py_ssize_t want) except -1:
        cdef char* b
        if want <= self.cap:
            return 0
        want = max(want, 2 * self.cap, 256)
        b = <char*>realloc(self.buf, want)
        if b == NULL:
            PyErr_NoMemory()
            return -1
        self.buf, self.cap = b, want
        return 0

    def process(self, dict vals, int64_t t, dict out, bint index):
        """Fold the event into every group's entity state and write the features into ``out``;
        sets :attr:`late` when the event was late for any group.

        With ``index``, returns the event's label-index entry, ``(index_prefix + event id,``
        :func:`index_entry` ``bytes)``, when the event has an id and was folded into any
        label-aware state; else ``None``."""
        cdef int i, r, gi
        cdef bint late = False, fresh
        cdef bytes key, ikey
        cdef object st
        cdef GroupKernel g
        cdef Py_ssize_t used = _IX_HEAD, n
        cdef dict objects = self.objects
        cdef PyObject* ptr
        for i in range(self.n):
            key = _key(<bytes>self.prefixes[i], <tuple>self.entities[i], vals)
            if key is None:
                continue
            g = <GroupKernel>self.kernels[i]
            # A cached feature state is a hit served here, as the store's ``get`` would
            # serve it (see __init__): no Python call.
            ptr = PyDict_GetItem(objects, key) if objects is not None else NULL
            if ptr != NULL and type(<object>ptr) is State:
                st = <object>ptr
                (<State>st).ref = True
                if self.counted:
                    self.counts[0] += 1
            else:
                st = self.get(key)
            # A checked cast: a value of another kind under this key is a TypeError, not a crash.
            fresh = st is None or t - (<State?>st).t > self.ttl
            if fresh:
                st = g.new_state()
            r = g._step(<State>st, vals, t, out)
            if r == 0:
                if fresh or (self.touch is None and not self.live):
                    self.put(key, st)
                    if self.touch is not None:
                        (<State>st).dirty = True
                elif not self.live and not (<State>st).dirty:
                    # Once per change since the store last wrote the state: a hot entity
                    # costs the store one dirty-set insertion per write, not one per event.
                    (<State>st).dirty = True
                    self.touch(key)
                gi = self.label_idx[i]
                if index and gi >= 0:
                    n = PyBytes_GET_SIZE(key)
                    self._room(used + _IX_PAIR + n)
                    _put_pair(self.buf + used, gi, PyBytes_AS_STRING(key), n)
                    used += _IX_PAIR + n
            elif r == 2:
                late = True
        self.late = late
        if used == _IX_HEAD:
            return None
        ikey = _key(self.index_prefix, _EVENT_ID, vals)
        if ikey is None:
            return None
        _put_head(self.buf, t, _IX_NONE)
        return ikey, PyBytes_FromStringAndSize(self.buf, used)


def clock_evict(dict live, Py_ssize_t count, set dirty, dict pending, dict changes,
                Py_ssize_t batch, encode, bint native, write_batch) -> None:
    """Remove ``count`` objects from the front of ``live`` (insertion order), a feature state
    whose ``ref`` flag is set going to the back instead with its flag cleared, among the first
    four times ``count`` looked at; what is left to remove then goes from the front in order,
    flagged or not. A removed feature state whose ``dirty`` flag is set (flag cleared), or
    another object whose key is in ``dirty`` (key removed), is encoded into ``pending`` (and
    ``changes`` unless None); whenever ``pending`` holds ``batch`` entries ``write_batch()`` is
    called and returns the buffer to go on with. ``native``: encode a feature state by its own
    ``encode`` (what ``features.store.encode`` does) rather than by calling ``encode``.

    ``stream.state.CachedStore``'s eviction (the policy is described there), compiled: the
    objects about to be looked at are asked for a few entries ahead, and each removed one is
    freed as it leaves, while its memory is still in the CPU's caches."""
    cdef bint second_chance = True
    cdef Py_ssize_t look, n, i, pos
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* ahead
    cdef list keys, values
    cdef object key, value, raw
    while count > 0 and live:
        look = 4 * count if second_chance else count
        keys, values = [], []
        pos = n = 0
        while n < look and PyDict_Next(live, &pos, &k, &v):
            keys.append(<object>k)
            values.append(<object>v)
            n += 1
        for i in range(n):
            if count == 0:
                break
            if i + 8 < n:
                ahead = <PyObject*>values[i + 8]
                __builtin_prefetch(ahead)
                __builtin_prefetch(<PyObject*>keys[i + 8])
            if i + 4 < n:
                ahead = <PyObject*>values[i + 4]
                if type(<object>ahead) is State and (<State>ahead).arena != NULL:
                    __builtin_prefetch((<State>ahead).arena - 16)   # malloc's header, for free
            key = keys[i]
            value = values[i]
            PyDict_DelItem(live, key)
            keys[i] = values[i] = None   # freed here once it is not kept
            if type(value) is State:
                if (<State>value).ref and second_chance:  # used since cached or last passed
                    (<State>value).ref = False
                    PyDict_SetItem(live, key, value)
                    continue
                count -= 1
                if not (<State>value).dirty:
                    continue
                (<State>value).dirty = False
                raw = (<State>value).encode() if native else encode(value)
            else:
                count -= 1
                if key not in dirty:
                    continue
                dirty.discard(key)
                raw = encode(value)
            PyDict_SetItem(pending, key, raw)
            if changes is not None:
                PyDict_SetItem(changes, key, raw)
            if len(pending) >= batch:
                pending = write_batch()
        second_chance = False


cdef enum:
    _EV_HOUR = 0
    _EV_WEEKDAY = 1
    _EV_WEEKEND = 2
    _EV_NIGHT = 3
    _EV_VALUE = 4

cdef dict _EV_CODES = {"hour_of_day": _EV_HOUR, "day_of_week": _EV_WEEKDAY,
                       "is_weekend": _EV_WEEKEND, "is_night": _EV_NIGHT, "value": _EV_VALUE}


cdef class EventReaders:
    """The features read from the event alone (calendar features in UTC, and ``value``), written
    into the feature dict without a Python call each.

    ``readers``: ``(name, aggregation, field)`` in output order; ``field`` for ``value`` only.

    >>> out = {}
    >>> EventReaders([("h", "hour_of_day", None), ("w", "is_weekend", None),
    ...               ("v", "value", "amount")]).fill({"event_time": -1, "amount": 2}, out)
    >>> out
    {'h': 23, 'w': 0, 'v': 2.0}
    """
    cdef list names, fields
    cdef int* codes
    cdef int n

    def __cinit__(self):
        self.codes = NULL

    def __dealloc__(self):
        free(self.codes)

    def __init__(self, readers: list):
        self.n = len(readers)
        self.names = [name for name, _, _ in readers]
        self.fields = [field for _, _, field in readers]
        self.codes = <int*>malloc(max(self.n, 1) * sizeof(int))
        if self.codes == NULL:
            raise MemoryError()
        for i, (_, agg, _) in enumerate(readers):
            if agg not in _EV_CODES:
                raise FeatureConfigError(f"{agg!r} is not read from the event alone")
            self.codes[i] = _EV_CODES[agg]

    def fill(self, dict vals, dict out) -> None:
        """Write each feature of ``vals`` (an :func:`extract` result: ``event_time`` an int)
        into ``out``."""
        cdef int i, code
        cdef int64_t t = vals["event_time"]
        cdef int64_t hour = _fdiv(t, 3_600_000) % 24, day = (_fdiv(t, 86_400_000) + 3) % 7
        cdef PyObject* ptr
        if hour < 0:   # a C remainder of a negative number (Python's % is never negative)
            hour += 24
        if day < 0:    # 1970-01-01 was a Thursday: Monday is 0
            day += 7
        for i in range(self.n):
            code = self.codes[i]
            if code == _EV_HOUR:
                PyDict_SetItem(out, self.names[i], hour)
            elif code == _EV_WEEKDAY:
                PyDict_SetItem(out, self.names[i], day)
            elif code == _EV_WEEKEND:
                PyDict_SetItem(out, self.names[i], 1 if day >= 5 else 0)
            elif code == _EV_NIGHT:
                PyDict_SetItem(out, self.names[i], 1 if hour < 6 else 0)
            else:
                ptr = PyDict_GetItem(vals, self.fields[i])
                PyDict_SetItem(out, self.names[i],
                               0.0 if ptr == NULL or <object>ptr is None else float(<object>ptr))


def extract(dict event, tuple fields, tuple numeric, tuple keyed):
    """The engine's view of a dict event: ``{field: value or None}`` for ``fields``, a field
    missing at top level read from ``event["attributes"]``; numeric fields must be int or float,
    keyed and distinct-counted fields str, int, float or bool (checked before any state
    changes). Raises ``FeatureError``."""
    cdef dict vals = {}
    cdef PyObject* ptr
    cdef object v, attrs, t
    ptr = PyDict_GetItem(event, "attributes")
    attrs = <object>ptr if ptr != NULL and type(<object>ptr) is dict and <object>ptr else None
    for name in fields:
        ptr = PyDict_GetItem(event, name)
        if ptr != NULL and <object>ptr is not None:
            PyDict_SetItem(vals, name, <object>ptr)
        elif attrs is not None:
            PyDict_SetItem(vals, name, (<dict>attrs).get(name))
        else:
            PyDict_SetItem(vals, name, None)
    for name in numeric:
        v = vals[name]
        if v is not None and type(v) is not float and type(v) is not int:
            raise FeatureError(f"{name} must be a number, got {v!r}")
    for name in keyed:
        v = vals[name]
        if v is not None and type(v) is not str and type(v) is not int and \
                type(v) is not float and type(v) is not bool:
            raise FeatureError(f"{name} must be a string or number to key or count "
                               f"distinct values, got {type(v).__name__}")
    t = vals["event_time"]
    if type(t) is not int:
        raise FeatureError(f"event_time must be epoch milliseconds (int), got {t!r}")
    return vals
