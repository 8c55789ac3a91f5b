# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""predtext._core: the compiled recurrent kernels.

Thin typed shims over the nogil C kernels (kernels_impl.h, which kernels.c instantiates
for float and double).  Every entry point checks dtype, contiguity, shape and lengths
before any pointer reaches C, raises ValueError or TypeError naming the argument, and
releases the GIL for the whole computation.

Cells: those of the core's cell table (cells.h; ``CELLS`` here): "rnn_tanh", "rnn_relu",
"lstm" (optionally with peephole weights) and "gru", with PyTorch's parameter layout and
gate order.  Arrays are time-major (T, B, F), C-contiguous, float32 or float64 (all arrays
of one call share the dtype).
"""

import operator
import os

import numpy as np

cimport cython
from libc.stdlib cimport free, malloc
cimport numpy as cnp
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

cnp.import_array()


cdef extern from "kernels.h" nogil:
    ctypedef void (*pt_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                                 float *, int *, float *, float *, int *)
    ctypedef void (*pt_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *,
                                 double *, int *, double *, double *, int *)
    ctypedef struct pt_dims:
        int cell
        int T, B, n_in, H, G
        const int *lengths
        int nthreads
        const void *hmask
        void *hmasked

    ctypedef void (*pt_sgemv_fn)(char *, int *, int *, float *, float *, int *, float *, int *,
                                 float *, float *, int *)
    ctypedef void (*pt_dgemv_fn)(char *, int *, int *, double *, double *, int *, double *,
                                 int *, double *, double *, int *)
    void pt_set_blas(pt_sgemm_fn sgemm, pt_dgemm_fn dgemm, pt_sgemv_fn sgemv, pt_dgemv_fn dgemv)
    int pt_gate_count(int cell)
    ctypedef struct pt_cell_info:
        const char *name
        int gates, extra_rows, flags
    const pt_cell_info *pt_cell(int cell)
    enum:
        PT_NCELLS
        PT_CELL_STATE
        PT_HIDDEN_APART
        PT_KEEPS
    void pt_set_step_rows(int which, int rows)
    int pt_get_step_rows(int which)
    int pt_max_threads()
    int pt_have_openmp()
    int pt_add_blas_threads_fns(void *set_fn, void *get_fn)
    # Around kernels whose team has more than one thread; a lone thread may let BLAS use
    # its own threads.
    void pt_blas_single_enter()
    void pt_blas_single_exit()
    void pt_sigmoid_array_f(size_t n, const float *x, float *y)
    void pt_tanh_array_f(size_t n, const float *x, float *y)
    void pt_matmul_f(int ta, int tb, int M, int N, int K, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc, int nthreads)
    void pt_matmul_d(int ta, int tb, int M, int N, int K, const double *a, int lda,
                     const double *b, int ldb, double beta, double *c, int ldc, int nthreads)

    void pt_forward_f(const pt_dims *d, int training, const float *x, const float *w_ih,
                      const float *w_hh, const float *b_ih, const float *b_hh,
                      const float *peep, const float *h0, const float *c0, float *xg,
                      float *hs, float *cs, float *hn_cache, float *hh_work, float *out,
                      float *h_n, float *c_n)
    void pt_forward_d(const pt_dims *d, int training, const double *x, const double *w_ih,
                      const double *w_hh, const double *b_ih, const double *b_hh,
                      const double *peep, const double *h0, const double *c0, double *xg,
                      double *hs, double *cs, double *hn_cache, double *hh_work, double *out,
                      double *h_n, double *c_n)
    void pt_backward_f(const pt_dims *d, const float *x, const float *w_ih, const float *w_hh,
                       const float *peep, const float *xg, const float *hs, const float *cs,
                       const float *hn_cache, const float *d_out, const float *d_hn,
                       const float *d_cn, float *dgx, float *dgh, float *dh, float *dc,
                       float *dx, float *dh0, float *dc0, float *dw_ih, float *dw_hh,
                       float *db_ih, float *db_hh, float *dpeep)
    void pt_backward_d(const pt_dims *d, const double *x, const double *w_ih,
                       const double *w_hh, const double *peep, const double *xg,
                       const double *hs, const double *cs, const double *hn_cache,
                       const double *d_out, const double *d_hn, const double *d_cn,
                       double *dgx, double *dgh, double *dh, double *dc, double *dx,
                       double *dh0, double *dc0, double *dw_ih, double *dw_hh, double *db_ih,
                       double *db_hh, double *dpeep)
    void pt_step_f(int cell, int B, int n_in, int H, int nthreads, const float *x, const float *h,
                   const float *c, const float *w_ih, const float *w_hh, const float *b_ih,
                   const float *b_hh, const float *peep, float *h_out, float *c_out,
                   float *work)
    void pt_step_d(int cell, int B, int n_in, int H, int nthreads, const double *x,
                   const double *h, const double *c, const double *w_ih, const double *w_hh,
                   const double *b_ih, const double *b_hh, const double *peep, double *h_out,
                   double *c_out, double *work)
    void pt_network_step_f(int cell, int B, int E, int H, int V, int L, const long long *ids,
                           const float *embedding, const float *const *w_ih,
                           const float *const *w_hh, const float *const *b_ih,
                           const float *const *b_hh, const float *const *peep,
                           const float *dec_w, const float *dec_b, float *h, float *c,
                           float *log_probs, float *embedded, float *work, const int *threads)
    void pt_network_step_d(int cell, int B, int E, int H, int V, int L, const long long *ids,
                           const double *embedding, const double *const *w_ih,
                           const double *const *w_hh, const double *const *b_ih,
                           const double *const *b_hh, const double *const *peep,
                           const double *dec_w, const double *dec_b, double *h, double *c,
                           double *log_probs, double *embedded, double *work,
                           const int *threads)
    void pt_reverse_f(int T, int B, int F, const int *lengths, const float *src, float *dst)
    void pt_reverse_d(int T, int B, int F, const int *lengths, const double *src, double *dst)


cdef extern from "smallgemm.h" nogil:
    ctypedef struct pt_weights:
        const float *w
        const signed char *q
        const float *scale
    void pt_small_gemm(const pt_weights *w, int B, int K, int n0, int n1, const float *x,
                       int ldx, float *y, int ldy, int accumulate)
    void pt_small_network_step(int cell, int B, int E, int H, int V, int L,
                               const long long *ids, const float *embedding,
                               const pt_weights *w_ih, const pt_weights *w_hh,
                               const float *const *b_ih, const float *const *b_hh,
                               const float *const *peep, const pt_weights *dec,
                               const float *dec_b, float *h, float *c, float *log_probs,
                               float *embedded, float *work, int nthreads)


pt_set_blas(sgemm, dgemm, sgemv, dgemv)


#: Whether the core's OpenBLAS has unpacked small-matrix kernels (set at import).
_BLAS_SMALL_KERNELS = False


def _choose_step_rows(architecture):
    """Per-step products in blocks of 16 rows where OpenBLAS has unpacked small-matrix
    kernels (its AVX-512 targets; measured up to 1.5x faster steps there).  Elsewhere a
    block would be packed like a large product, so one call per step stays best."""
    global _BLAS_SMALL_KERNELS
    small_kernels = {"skylakex", "cooperlake", "sapphirerapids"}
    rows = 16 if str(architecture).lower() in small_kernels else 0
    _BLAS_SMALL_KERNELS = rows > 0
    pt_set_step_rows(1, rows)
    pt_set_step_rows(0, rows)


def _register_openblas_thread_controls():
    """Let the kernels pin every loaded OpenBLAS to one thread while they run.

    Kernels call BLAS from inside their own OpenMP team; a multi-threaded OpenBLAS there
    would start a second pool on the same cores.  Other BLAS libraries (MKL, BLIS) are left
    as they are: set their threads to 1 with threadpoolctl if you use one.
    """
    import ctypes

    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        if "scipy" in os.path.basename(lib.filepath) and "64_" not in lib.filepath:
            _choose_step_rows(lib.architecture)
        dll = ctypes.CDLL(lib.filepath)
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_"):
                set_fn = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
                get_fn = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
                if set_fn is not None and get_fn is not None:
                    pt_add_blas_threads_fns(
                        <void *><size_t>ctypes.cast(set_fn, ctypes.c_void_p).value,
                        <void *><size_t>ctypes.cast(get_fn, ctypes.c_void_p).value)
                    break
            else:
                continue
            break


_register_openblas_thread_controls()

#: The core's cell table (cells.h): each cell's name and its code for the kernels.
CELLS = {pt_cell(k).name.decode(): k for k in range(PT_NCELLS)}
_INT_MAX = 2**31 - 1


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


cdef int _nthreads = _default_threads() if pt_have_openmp() else 1
# Multiply-adds per step a thread must have before a second thread joins (measured: below
# about this, the barrier and BLAS call overheads eat the gain).
cdef long long _MIN_STEP_WORK = 1 << 20


def set_num_threads(n):
    """Set how many OpenMP threads the kernels use (BLAS runs single-threaded inside them)."""
    global _nthreads
    n = _count(n, "n")
    if n > 1024:
        raise ValueError(f"n: expected an int in [1, 1024], got {n}")
    _nthreads = n if pt_have_openmp() else 1


def get_num_threads():
    return _nthreads


cdef extern from *:
    """
    #if defined(_MSC_VER)
    static __declspec(thread) int pt_thread_limit = 0;
    #else
    static _Thread_local int pt_thread_limit = 0;
    #endif
    """
    int pt_thread_limit


def set_thread_limit(n):
    """Let kernels called from the calling thread use at most ``n`` threads (0: no limit
    beyond ``set_num_threads``).  Other threads keep theirs: the engine's predictor thread
    can step its model on one core while a busy machine would starve a team of two."""
    global pt_thread_limit
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int, got {type(n).__name__}") from None
    if not 0 <= n <= 1024:
        raise ValueError(f"n: expected an int in [0, 1024], got {n}")
    pt_thread_limit = n


def get_thread_limit():
    """The calling thread's limit (0: none)."""
    return pt_thread_limit


cdef inline int _limited(int threads) noexcept nogil:
    return threads if pt_thread_limit <= 0 or threads <= pt_thread_limit else pt_thread_limit


cdef inline bint _pins_blas(int threads) noexcept nogil:
    """Whether BLAS runs single-threaded inside a kernel of ``threads``: inside a team, so
    that it does not add threads to it, and wherever the calling thread has a limit."""
    return threads > 1 or pt_thread_limit > 0


cdef int _team_size(long long B, long long GH, long long K):
    """Threads for a kernel whose step multiplies (B, K) by (K, GH): the set count, less
    when a step is too small to share.  A step ends in a barrier, and a thread that waits
    for a descheduled partner on a busy machine loses more than it gained."""
    return _limited(_team_for(B, GH, K))


cdef int _team_for(long long B, long long GH, long long K):
    """``_team_size`` before the calling thread's limit."""
    cdef long long per_thread = B * GH * K // _MIN_STEP_WORK
    if per_thread < 1:
        return 1
    return <int>min(<long long>_nthreads, per_thread)


def _set_step_rows(int forward, int backward):
    """Rows per BLAS call in the per-step products (0: one call); for benchmarking."""
    pt_set_step_rows(1, forward)
    pt_set_step_rows(0, backward)


def _get_step_rows():
    return pt_get_step_rows(1), pt_get_step_rows(0)


def has_openmp():
    """True when the core was compiled with OpenMP."""
    return bool(pt_have_openmp())


def gate_count(str cell):
    """Gate blocks stacked in the weights of a cell: 1 (RNN), 4 (LSTM), 3 (GRU)."""
    return pt_gate_count(_cell_code(cell))


def cell_table():
    """The core's cell table (cells.h) as ``{name: {"gates", "extra_rows", "cell_state",
    "hidden_apart", "keeps"}}``, for checking it against the layers' own (backend.cells)."""
    table = {}
    for name, code in CELLS.items():
        info = pt_cell(code)
        table[name] = {"gates": info.gates, "extra_rows": info.extra_rows,
                       "cell_state": bool(info.flags & PT_CELL_STATE),
                       "hidden_apart": bool(info.flags & PT_HIDDEN_APART),
                       "keeps": bool(info.flags & PT_KEEPS)}
    return table


def step_workspace_shape(cell, batch, hidden):
    """Shape of the `work` buffer cell_step needs: (batch, columns)."""
    cdef int code = _cell_code(cell)
    batch = _count(batch, "batch")
    hidden = _count(hidden, "hidden")
    if batch > _INT_MAX:
        raise ValueError(f"batch: expected at most {_INT_MAX}, got {batch}")
    cols = pt_gate_count(code) * hidden  # Python ints: no overflow
    return (batch, 2 * cols if _hidden_apart(code) else cols)


# ---- argument checks ---------------------------------------------------------------

cdef int _cell_code(object cell) except -1:
    if not isinstance(cell, str):
        raise TypeError(f"cell: expected a str, got {type(cell).__name__}")
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell]


# What the table says of a cell (its code from _cell_code).
cdef inline bint _has_state(int code):
    return pt_cell(code).flags & PT_CELL_STATE


cdef inline bint _hidden_apart(int code):
    return pt_cell(code).flags & PT_HIDDEN_APART


cdef inline int _extra_rows(int code):
    return pt_cell(code).extra_rows


def _count(value, str name):
    """A positive integer argument, named in the error when it is not one."""
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}") from None
    if n < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {n}")
    return n


cdef tuple _shape(cnp.ndarray a):
    # From the array struct, not the Python attribute an ndarray subclass could override.
    return tuple([cnp.PyArray_DIMS(a)[k] for k in range(cnp.PyArray_NDIM(a))])


cdef object _float_dtype(object a, str name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if typenum == cnp.NPY_FLOAT32:
        return np.dtype(np.float32)
    if typenum == cnp.NPY_FLOAT64:
        return np.dtype(np.float64)
    raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")


cdef tuple _array_shape(object a, str name, int ndim, str axes):
    """The shape of a float array argument with ndim dimensions (named axes for errors)."""
    _float_dtype(a, name)
    shape = _shape(<cnp.ndarray>a)
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {axes}, got shape {shape}")
    return shape


cdef cnp.ndarray _check(object a, str name, object dtype, tuple shape, bint writable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if _float_dtype(a, name) != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    got = _shape(arr)
    if got != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {got}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: expected a C-contiguous array")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name}: expected an aligned array")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: expected a writable array")
    return arr


cdef cnp.ndarray _opt(object a, str name, object dtype, tuple shape, bint writable=False):
    if a is None:
        return None
    return _check(a, name, dtype, shape, writable)


cdef cnp.ndarray _check_lengths(object lengths, T, B):
    if lengths is None:
        return None
    try:
        arr = np.array(lengths)
    except (ValueError, TypeError) as e:
        raise ValueError(f"lengths: expected {B} integers, got {e}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {arr.shape}")
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [1, {T}], got min {arr.min()} "
                         f"and max {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int32)


cdef tuple _recurrent_shape(object w_hh, int G):
    """w_hh's shape, checked to be (G*hidden, hidden)."""
    ws = _array_shape(w_hh, "w_hh", 2, f"({G}*hidden, hidden)")
    if ws[0] != G * ws[1]:
        raise ValueError(f"w_hh: expected shape ({G}*hidden, hidden), got {ws}")
    return ws


cdef tuple _biases(object b_ih, object b_hh, object dtype, int GH):
    """Both bias vectors checked, or (None, None) for a layer without biases."""
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both or neither")
    return _opt(b_ih, "b_ih", dtype, (GH,)), _opt(b_hh, "b_hh", dtype, (GH,))


cdef tuple _layout(tuple arrays):
    return tuple([None if a is None else
                  (<size_t>cnp.PyArray_DATA(<cnp.ndarray>a), _shape(<cnp.ndarray>a))
                  for a in arrays])


cdef inline void *_ptr(cnp.ndarray a) noexcept nogil:
    return NULL if a is None else cnp.PyArray_DATA(a)


cdef _check_sizes(str name, T, B, I, H, G):
    """Sizes as Python ints: all >= 1, and every BLAS dimension fits a 32-bit int."""
    if T < 1 or B < 1 or I < 1 or H < 1:
        raise ValueError(f"{name}: expected T, B, input and hidden sizes >= 1, got "
                         f"T={T}, B={B}, input={I}, hidden={H}")
    if T * B > _INT_MAX or G * H > _INT_MAX or max(T, B, I) > _INT_MAX:
        raise ValueError(f"{name}: sizes T={T}, B={B}, input={I}, hidden={H} exceed "
                         f"32-bit BLAS dimensions")


# ---- training workspaces kept between calls -----------------------------------------
# A training step's gate and gradient buffers are tens of MB each (52 MB for an LSTM at
# B=64, T=100, H=512).  Fresh ones that large come from mmap, and the kernel zeroes every
# page on first touch: 8% of that LSTM's fwd+bwd.  So a dead cache's buffers and
# backward's scratch wait here for the next call with the same shape and dtype.  Only
# buffers no live cache holds are here, and a call takes one out before using it, so two
# caches never share one.  Inference (training=False) neither takes nor gives: a process
# that only predicts keeps nothing.  Past the limits the oldest go first (a shape no
# longer in use, such as a shorter last batch); release_workspaces() frees them all.
cdef list _spare = []                    # most recently returned last
cdef Py_ssize_t _spare_bytes = 0
cdef Py_ssize_t _SPARE_MIN = 1 << 20     # smaller ones come from malloc's heap anyway
cdef Py_ssize_t _SPARE_LIMIT = 512 << 20
cdef Py_ssize_t _SPARE_COUNT = 32


cdef cnp.ndarray _workspace(tuple shape, dtype, int typenum):
    """An uninitialised C-contiguous array: a kept one of that shape and dtype, or new."""
    global _spare_bytes
    cdef int nd = len(shape), k, i
    cdef cnp.ndarray a
    cdef cnp.npy_intp *dims
    cdef bint same
    # Only C-level comparisons between finding and removing: nothing here can run a
    # collection that would call _keep (through a cache's __dealloc__) and move the list.
    for k in range(len(_spare) - 1, -1, -1):
        a = <cnp.ndarray>_spare[k]
        if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != nd:
            continue
        dims = cnp.PyArray_DIMS(a)
        same = True
        for i in range(nd):
            if dims[i] != <cnp.npy_intp>shape[i]:
                same = False
                break
        if same:
            del _spare[k]
            _spare_bytes -= cnp.PyArray_NBYTES(a)
            return a
    return np.empty(shape, dtype)


cdef void _keep(object a):
    """Put a workspace nothing else refers to back for a later call (or let it go)."""
    global _spare_bytes
    if a is None or _spare is None:  # (None: the module is being torn down)
        return
    cdef Py_ssize_t n = cnp.PyArray_NBYTES(<cnp.ndarray>a)
    if n < _SPARE_MIN or n > _SPARE_LIMIT:
        return
    _spare.append(a)
    _spare_bytes += n
    while _spare_bytes > _SPARE_LIMIT or len(_spare) > _SPARE_COUNT:
        _spare_bytes -= cnp.PyArray_NBYTES(<cnp.ndarray>_spare.pop(0))


def release_workspaces():
    """Free the training workspaces kept for later calls; returns how many bytes they held."""
    global _spare_bytes
    cdef Py_ssize_t n = _spare_bytes
    _spare.clear()
    _spare_bytes = 0
    return n


def _set_workspace_limits(Py_ssize_t min_bytes, Py_ssize_t limit_bytes, Py_ssize_t count):
    """For tests: which buffers are kept, and how many bytes and buffers at most.  Returns
    the previous limits; frees what is kept."""
    global _SPARE_MIN, _SPARE_LIMIT, _SPARE_COUNT
    previous = (_SPARE_MIN, _SPARE_LIMIT, _SPARE_COUNT)
    release_workspaces()
    _SPARE_MIN, _SPARE_LIMIT, _SPARE_COUNT = min_bytes, limit_bytes, count
    return previous


def _fill_workspaces(value):
    """For tests: overwrite every kept buffer (what a later call must not read)."""
    for a in _spare:
        a.fill(value)
    return len(_spare)


@cython.auto_pickle(False)
cdef class SequenceCache:
    """What a training-mode forward keeps for sequence_backward (opaque to callers).

    Only sequence_forward makes a usable one; it cannot be pickled or filled by hand, since
    sequence_backward trusts its arrays' sizes.
    """
    cdef bint ready
    cdef readonly str cell
    cdef readonly int code, T, B, n_in, H, G
    cdef readonly object dtype
    cdef readonly bint has_bias, has_peephole
    cdef object x, w_ih, w_hh, peephole, lengths, xg, hs, cs, hn_cache, hmask, hmasked

    # Where the caller's arrays were at forward time: backward refuses arrays that were
    # resized or reallocated since (ndarray.resize(refcheck=False) can do that).
    cdef tuple layout

    def __reduce__(self):
        raise TypeError("SequenceCache cannot be pickled")

    def __dealloc__(self):
        # The buffers only this cache held (none is ever handed out); a cache cleared by
        # the cycle collector first has None here.
        if self.ready:
            _keep(self.xg)
            _keep(self.hs)
            _keep(self.cs)
            _keep(self.hn_cache)
            _keep(self.hmasked)


# ---- whole sequences ---------------------------------------------------------------

def sequence_forward(str cell, x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None,
                     lengths=None, peephole=None, bint training=False, recurrent_mask=None):
    """Run one layer in one direction over a whole sequence.

    x (T, B, I); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,) or None; h0, c0 (B, H)
    or None for zeros (c0: LSTM only); lengths (B,) ints in [1, T] or None; peephole (3, H)
    (LSTM only: input, forget, output gate weights on the cell state); recurrent_mask
    (B, H) or None: recurrent dropout, multiplying h_{t-1} where it enters the recurrent
    product W_hh h_{t-1} at every step (the state itself, a GRU's carry z * h_{t-1} and
    the output are not masked); it is copied, and backward uses the same mask.

    Returns (out (T, B, H), h_n (B, H), c_n (B, H) or None, cache or None).  Steps past a
    sequence's length leave its state unchanged and give zero output.  With training=True
    the cache is what sequence_backward needs.
    """
    cdef int code = _cell_code(cell)
    dtype = _float_dtype(x, "x")
    cdef int G = pt_gate_count(code)
    xs = _array_shape(x, "x", 3, "(T, B, input)")
    ws = _recurrent_shape(w_hh, G)
    _check_sizes("x", xs[0], xs[1], xs[2], ws[1], G)
    cdef int T = xs[0], B = xs[1], I = xs[2], H = ws[1]
    cdef int GH = G * H
    cdef cnp.ndarray ax = _check(x, "x", dtype, (T, B, I))
    cdef int typenum = cnp.PyArray_TYPE(ax)
    cdef cnp.ndarray aw_ih = _check(w_ih, "w_ih", dtype, (GH, I))
    cdef cnp.ndarray aw_hh = _check(w_hh, "w_hh", dtype, (GH, H))
    cdef cnp.ndarray ab_ih, ab_hh
    ab_ih, ab_hh = _biases(b_ih, b_hh, dtype, GH)
    if not _has_state(code) and c0 is not None:
        raise ValueError(f"c0: only an LSTM has a cell state (cell={cell!r})")
    if not _extra_rows(code) and peephole is not None:
        raise ValueError(f"peephole: only an LSTM has peephole weights (cell={cell!r})")
    cdef cnp.ndarray ah0 = (_check(h0, "h0", dtype, (B, H)) if h0 is not None
                            else np.zeros((B, H), dtype))
    cdef cnp.ndarray ac0 = None
    if _has_state(code):
        ac0 = (_check(c0, "c0", dtype, (B, H)) if c0 is not None else np.zeros((B, H), dtype))
    cdef cnp.ndarray apeep = _opt(peephole, "peephole", dtype, (_extra_rows(code), H))
    cdef cnp.ndarray alen = _check_lengths(lengths, T, B)
    cdef cnp.ndarray amask = None, hmasked = None
    if recurrent_mask is not None:
        amask = np.array(_check(recurrent_mask, "recurrent_mask", dtype, (B, H)))
        hmasked = (_workspace((T, B, H), dtype, typenum) if training
                   else np.empty((1, B, H), dtype))

    cdef cnp.ndarray out = np.empty((T, B, H), dtype)
    cdef cnp.ndarray h_n = np.empty((B, H), dtype)
    cdef cnp.ndarray c_n = np.empty((B, H), dtype) if _has_state(code) else None
    cdef cnp.ndarray xg, hs, cs = None
    if training:
        xg = _workspace((T, B, GH), dtype, typenum)
        hs = _workspace((T + 1, B, H), dtype, typenum)
        if _has_state(code):
            cs = _workspace((T + 1, B, H), dtype, typenum)
    else:
        xg = np.empty((T, B, GH), dtype)
        hs = np.empty((2, B, H), dtype)
        if _has_state(code):
            cs = np.empty((1, B, H), dtype)
    cdef cnp.ndarray hn_cache = None, hh_work = None
    if _hidden_apart(code):
        hh_work = np.empty((B, GH), dtype)
    if training and pt_cell(code).flags & PT_KEEPS:
        hn_cache = _workspace((T, B, H), dtype, typenum)

    cdef pt_dims d
    d.cell = code; d.T = T; d.B = B; d.n_in = I; d.H = H; d.G = G
    d.lengths = <const int *>_ptr(alen)
    d.nthreads = _team_size(B, GH, H)
    d.hmask = _ptr(amask); d.hmasked = _ptr(hmasked)
    cdef int train = training
    cdef bint single = dtype == np.float32
    with nogil:
        if _pins_blas(d.nthreads):
            pt_blas_single_enter()
        if single:
            pt_forward_f(&d, train, <float *>_ptr(ax), <float *>_ptr(aw_ih),
                         <float *>_ptr(aw_hh), <float *>_ptr(ab_ih), <float *>_ptr(ab_hh),
                         <float *>_ptr(apeep), <float *>_ptr(ah0), <float *>_ptr(ac0),
                         <float *>_ptr(xg), <float *>_ptr(hs), <float *>_ptr(cs),
                         <float *>_ptr(hn_cache), <float *>_ptr(hh_work), <float *>_ptr(out),
                         <float *>_ptr(h_n), <float *>_ptr(c_n))
        else:
            pt_forward_d(&d, train, <double *>_ptr(ax), <double *>_ptr(aw_ih),
                         <double *>_ptr(aw_hh), <double *>_ptr(ab_ih), <double *>_ptr(ab_hh),
                         <double *>_ptr(apeep), <double *>_ptr(ah0), <double *>_ptr(ac0),
                         <double *>_ptr(xg), <double *>_ptr(hs), <double *>_ptr(cs),
                         <double *>_ptr(hn_cache), <double *>_ptr(hh_work),
                         <double *>_ptr(out), <double *>_ptr(h_n), <double *>_ptr(c_n))
        if _pins_blas(d.nthreads):
            pt_blas_single_exit()

    if not training:
        return out, h_n, c_n, None
    cdef SequenceCache cache = SequenceCache.__new__(SequenceCache)
    cache.cell = cell; cache.code = code
    cache.T = T; cache.B = B; cache.n_in = I; cache.H = H; cache.G = G
    cache.dtype = dtype
    cache.has_bias = ab_ih is not None
    cache.has_peephole = apeep is not None
    cache.x = ax; cache.w_ih = aw_ih; cache.w_hh = aw_hh; cache.peephole = apeep
    cache.lengths = alen; cache.xg = xg; cache.hs = hs; cache.cs = cs; cache.hn_cache = hn_cache
    cache.hmask = amask; cache.hmasked = hmasked
    cache.layout = _layout((ax, aw_ih, aw_hh, apeep))
    cache.ready = True
    return out, h_n, c_n, cache


def sequence_backward(SequenceCache cache, d_out, d_hn=None, d_cn=None, *, grad_w_ih,
                      grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
    """Backpropagation through time for a training-mode sequence_forward.

    d_out (T, B, H) is the gradient of the outputs (ignored past each sequence's length);
    d_hn, d_cn (B, H) those of the final states, or None for zero.  The parameter
    gradients are added into the caller's grad_* buffers (same shapes as the parameters).
    Returns (dx (T, B, I), dh0 (B, H), dc0 (B, H) or None).
    """
    if cache is None or not cache.ready:
        raise TypeError("cache: expected the cache of a training-mode sequence_forward")
    if _layout((cache.x, cache.w_ih, cache.w_hh, cache.peephole)) != cache.layout:
        raise ValueError("cache: x or the weights were resized since the forward pass")
    dtype = cache.dtype
    cdef int T = cache.T, B = cache.B, I = cache.n_in, H = cache.H, G = cache.G, GH = G * H
    cdef int code = cache.code
    cdef cnp.ndarray ad_out = _check(d_out, "d_out", dtype, (T, B, H))
    cdef cnp.ndarray ad_hn = _opt(d_hn, "d_hn", dtype, (B, H))
    if not _has_state(code) and d_cn is not None:
        raise ValueError(f"d_cn: only an LSTM has a cell state (cell={cache.cell!r})")
    cdef cnp.ndarray ad_cn = _opt(d_cn, "d_cn", dtype, (B, H))
    cdef cnp.ndarray gw_ih = _check(grad_w_ih, "grad_w_ih", dtype, (GH, I), True)
    cdef cnp.ndarray gw_hh = _check(grad_w_hh, "grad_w_hh", dtype, (GH, H), True)
    if cache.has_bias and (grad_b_ih is None or grad_b_hh is None):
        raise ValueError("grad_b_ih, grad_b_hh: the layer has biases; pass both buffers")
    if not cache.has_bias and (grad_b_ih is not None or grad_b_hh is not None):
        raise ValueError("grad_b_ih, grad_b_hh: the layer has no biases; pass None")
    cdef cnp.ndarray gb_ih = _opt(grad_b_ih, "grad_b_ih", dtype, (GH,), True)
    cdef cnp.ndarray gb_hh = _opt(grad_b_hh, "grad_b_hh", dtype, (GH,), True)
    if cache.has_peephole and grad_peephole is None:
        raise ValueError("grad_peephole: the layer has peephole weights; pass a buffer")
    if not cache.has_peephole and grad_peephole is not None:
        raise ValueError("grad_peephole: the layer has no peephole weights; pass None")
    cdef cnp.ndarray gpeep = _opt(grad_peephole, "grad_peephole", dtype,
                                  (_extra_rows(code), H), True)

    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>cache.xg)
    cdef cnp.ndarray dgx = _workspace((T, B, GH), dtype, typenum)
    cdef cnp.ndarray dgh = (_workspace((T, B, GH), dtype, typenum) if _hidden_apart(code)
                            else dgx)
    cdef cnp.ndarray dh = np.empty((B, H), dtype)
    cdef cnp.ndarray dc = np.empty((B, H), dtype) if _has_state(code) else None
    cdef cnp.ndarray dx = np.empty((T, B, I), dtype)
    cdef cnp.ndarray dh0 = np.empty((B, H), dtype)
    cdef cnp.ndarray dc0 = np.empty((B, H), dtype) if _has_state(code) else None
    cdef cnp.ndarray ax = cache.x, aw_ih = cache.w_ih, aw_hh = cache.w_hh
    cdef cnp.ndarray apeep = cache.peephole, alen = cache.lengths, xg = cache.xg
    cdef cnp.ndarray hs = cache.hs, cs = cache.cs, hn_cache = cache.hn_cache
    cdef cnp.ndarray amask = cache.hmask, hmasked = cache.hmasked

    cdef pt_dims d
    d.cell = code; d.T = T; d.B = B; d.n_in = I; d.H = H; d.G = G
    d.lengths = <const int *>_ptr(alen)
    d.nthreads = _team_size(B, GH, H)
    d.hmask = _ptr(amask); d.hmasked = _ptr(hmasked)
    cdef bint single = dtype == np.float32
    with nogil:
        if _pins_blas(d.nthreads):
            pt_blas_single_enter()
        if single:
            pt_backward_f(&d, <float *>_ptr(ax), <float *>_ptr(aw_ih), <float *>_ptr(aw_hh),
                          <float *>_ptr(apeep), <float *>_ptr(xg), <float *>_ptr(hs),
                          <float *>_ptr(cs), <float *>_ptr(hn_cache), <float *>_ptr(ad_out),
                          <float *>_ptr(ad_hn), <float *>_ptr(ad_cn), <float *>_ptr(dgx),
                          <float *>_ptr(dgh), <float *>_ptr(dh), <float *>_ptr(dc),
                          <float *>_ptr(dx), <float *>_ptr(dh0), <float *>_ptr(dc0),
                          <float *>_ptr(gw_ih), <float *>_ptr(gw_hh), <float *>_ptr(gb_ih),
                          <float *>_ptr(gb_hh), <float *>_ptr(gpeep))
        else:
            pt_backward_d(&d, <double *>_ptr(ax), <double *>_ptr(aw_ih),
                          <double *>_ptr(aw_hh), <double *>_ptr(apeep), <double *>_ptr(xg),
                          <double *>_ptr(hs), <double *>_ptr(cs), <double *>_ptr(hn_cache),
                          <double *>_ptr(ad_out), <double *>_ptr(ad_hn),
                          <double *>_ptr(ad_cn), <double *>_ptr(dgx), <double *>_ptr(dgh),
                          <double *>_ptr(dh), <double *>_ptr(dc), <double *>_ptr(dx),
                          <double *>_ptr(dh0), <double *>_ptr(dc0), <double *>_ptr(gw_ih),
                          <double *>_ptr(gw_hh), <double *>_ptr(gb_ih), <double *>_ptr(gb_hh),
                          <double *>_ptr(gpeep))
        if _pins_blas(d.nthreads):
            pt_blas_single_exit()
    if dgh is not dgx:
        _keep(dgh)
    _keep(dgx)
    return dx, dh0, dc0


# ---- one step, for incremental inference ----------------------------------------------

def cell_step(str cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work, peephole=None):
    """Advance a batch of states by one step, writing into caller-given buffers.

    x (B, I); h, h_out (B, H); c, c_out (B, H) for an LSTM, None otherwise; work of
    step_workspace_shape(cell, B, H).  h_out may be h itself (and c_out c): the state is
    updated in place.  Allocates nothing.
    """
    cdef int code = _cell_code(cell)
    dtype = _float_dtype(x, "x")
    cdef int G = pt_gate_count(code)
    xs = _array_shape(x, "x", 2, "(B, input)")
    ws = _recurrent_shape(w_hh, G)
    _check_sizes("w_hh", 1, xs[0], xs[1], ws[1], 2 * G)
    cdef int B = xs[0], I = xs[1], H = ws[1], GH = G * H
    cdef cnp.ndarray ax = _check(x, "x", dtype, (B, I))
    cdef cnp.ndarray ah = _check(h, "h", dtype, (B, H))
    cdef cnp.ndarray aw_ih = _check(w_ih, "w_ih", dtype, (GH, I))
    cdef cnp.ndarray aw_hh = _check(w_hh, "w_hh", dtype, (GH, H))
    cdef cnp.ndarray ab_ih, ab_hh
    ab_ih, ab_hh = _biases(b_ih, b_hh, dtype, GH)
    cdef cnp.ndarray ah_out = _check(h_out, "h_out", dtype, (B, H), True)
    cdef cnp.ndarray ac = None, ac_out = None
    if _has_state(code):
        if c is None or c_out is None:
            raise ValueError("c, c_out: an LSTM step needs the cell state and its output buffer")
        ac = _check(c, "c", dtype, (B, H))
        ac_out = _check(c_out, "c_out", dtype, (B, H), True)
    elif c is not None or c_out is not None:
        raise ValueError(f"c, c_out: only an LSTM has a cell state (cell={cell!r})")
    if not _extra_rows(code) and peephole is not None:
        raise ValueError(f"peephole: only an LSTM has peephole weights (cell={cell!r})")
    cdef cnp.ndarray apeep = _opt(peephole, "peephole", dtype, (_extra_rows(code), H))
    cdef cnp.ndarray awork = _check(work, "work", dtype,
                                    (B, 2 * GH if _hidden_apart(code) else GH), True)
    # A single step is bound by reading the weights, which two cores do faster than one
    # well below the work at which a sequence step pays for a second thread: even at a
    # batch of one (a 2x256 GRU model's step at B = 1 took 121 us on one thread, 50 us on two).
    cdef int nthreads = _team_size(4 * (B + 4), GH, I + H)
    cdef bint single = dtype == np.float32
    with nogil:
        if _pins_blas(nthreads):
            pt_blas_single_enter()
        if single:
            pt_step_f(code, B, I, H, nthreads, <float *>_ptr(ax), <float *>_ptr(ah),
                      <float *>_ptr(ac), <float *>_ptr(aw_ih), <float *>_ptr(aw_hh),
                      <float *>_ptr(ab_ih), <float *>_ptr(ab_hh), <float *>_ptr(apeep),
                      <float *>_ptr(ah_out), <float *>_ptr(ac_out), <float *>_ptr(awork))
        else:
            pt_step_d(code, B, I, H, nthreads, <double *>_ptr(ax), <double *>_ptr(ah),
                      <double *>_ptr(ac), <double *>_ptr(aw_ih), <double *>_ptr(aw_hh),
                      <double *>_ptr(ab_ih), <double *>_ptr(ab_hh), <double *>_ptr(apeep),
                      <double *>_ptr(ah_out), <double *>_ptr(ac_out), <double *>_ptr(awork))
        if _pins_blas(nthreads):
            pt_blas_single_exit()


# ---- small-batch products ---------------------------------------------------------

#: The batch sizes up to which a float32 NetworkStep uses the small-batch products
#: (smallgemm.c) instead of BLAS; int8 weights always use them.  0 where OpenBLAS has
#: its small-matrix kernels: there (Zen 4, SkylakeX target) its step was as fast at B=1
#: and 1.2-1.6x faster from B=4 to 16, where its Haswell target's packing made the step
#: 3-4x slower than ours from B=6.
SMALL_BATCH = 0 if _BLAS_SMALL_KERNELS else 16


cdef tuple _weight_shape(object w, str name, str axes):
    """The shape of a weight argument: a float array, or (q_int8, scales) (see _weight)."""
    if isinstance(w, tuple) and len(w) == 2 and isinstance(w[0], np.ndarray):
        shape = _shape(<cnp.ndarray>w[0])
        if len(shape) != 2:
            raise ValueError(f"{name}: expected 2 dimensions {axes}, got shape {shape}")
        return shape
    if isinstance(w, tuple):
        raise TypeError(f"{name}: expected an array or a tuple (q_int8, scales_float32)")
    return _array_shape(w, name, 2, axes)


cdef tuple _weight(object w, str name, object dtype, tuple shape):
    """A weight matrix argument: a float array of ``shape``, or 8-bit weights as a tuple
    ``(q, scales)`` of an int8 array of ``shape`` and float32 per-row scales (row n is
    ``scales[n] * q[n]``), for float32 networks only.  Returns (w, q, scales), the unused
    ones None."""
    if not isinstance(w, tuple):
        return _check(w, name, dtype, shape), None, None
    if len(w) != 2:
        raise TypeError(f"{name}: expected (q_int8, scales_float32), got a tuple of {len(w)}")
    q, scales = w
    if not isinstance(q, np.ndarray) or cnp.PyArray_TYPE(<cnp.ndarray>q) != cnp.NPY_INT8:
        got = q.dtype if isinstance(q, np.ndarray) else type(q).__name__
        raise TypeError(f"{name}: expected int8 weights first in (q, scales), got {got}")
    if _shape(<cnp.ndarray>q) != shape:
        raise ValueError(f"{name}: expected int8 weights of shape {shape}, got "
                         f"{_shape(<cnp.ndarray>q)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>q):
        raise ValueError(f"{name}: expected C-contiguous int8 weights")
    if dtype != np.float32:
        raise TypeError(f"{name}: int8 weights need a float32 network, got {np.dtype(dtype)}")
    if not isinstance(scales, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of scales second in (q, scales), "
                        f"got {type(scales).__name__}")
    sc = _check(scales, name + " scales", np.float32, (shape[0],))
    if not np.isfinite(sc).all():
        raise ValueError(f"{name}: scales must be finite")
    return None, q, sc


cdef pt_weights _weights_of(tuple parts):
    """The kernels' view of a checked weight (see _weight)."""
    cdef pt_weights w
    w.w = <const float *>_ptr(parts[0])
    w.q = <const signed char *>_ptr(parts[1])
    w.scale = <const float *>_ptr(parts[2])
    return w


def small_matmul(x, weight, out=None, bint accumulate=False):
    """``out = x @ W.T`` (``+=`` with ``accumulate``) by the small-batch products, for a
    float32 x (B, K) and W (N, K) given as a float32 array or as 8-bit weights ``(q,
    scales)`` (see NetworkStep).  One thread; the engine's steps use these products."""
    xs = _array_shape(x, "x", 2, "(B, K)")
    cdef cnp.ndarray ax = _check(x, "x", np.float32, xs)
    ws = _weight_shape(weight, "weight", "(N, K)")
    if ws[1] != xs[1]:
        raise ValueError(f"weight: expected {xs[1]} columns (x's), got shape {ws}")
    if max(xs[0], ws[0], ws[1]) > _INT_MAX:
        raise ValueError("x, weight: sizes exceed 32-bit")
    parts = _weight(weight, "weight", np.float32, ws)
    cdef cnp.ndarray aout
    if out is None:
        if accumulate:
            raise ValueError("out: accumulate needs an output array")
        aout = np.empty((xs[0], ws[0]), np.float32)
    else:
        aout = _check(out, "out", np.float32, (xs[0], ws[0]), True)
        if any(a is not None and np.shares_memory(aout, a) for a in (ax,) + parts):
            raise ValueError("out: must not overlap x or weight")
    cdef pt_weights w = _weights_of(parts)
    cdef int B = xs[0], K = xs[1], N = ws[0], acc = accumulate
    with nogil:
        pt_small_gemm(&w, B, K, 0, N, <float *>_ptr(ax), K, <float *>_ptr(aout), N, acc)
    return aout


# ---- a whole network, one token per text --------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class NetworkStep:
    """One token per text through embedding -> recurrent layers -> decoder -> log-softmax.

    Built once for a network and a batch size; each call is one compiled call with the GIL
    released (incremental inference makes many small steps, where per-layer calls from
    Python cost a quarter of the time).  ``layers`` is a sequence of ``(w_ih, w_hh, b_ih,
    b_hh, peephole)`` per layer (PyTorch's layout; biases both or neither; peephole for an
    LSTM or None); ``decoder_bias`` may be None.

    ``w_ih``, ``w_hh`` and ``decoder_weight`` may each be 8-bit weights instead of a float
    array: a tuple ``(q, scales)`` of int8 ``q`` of the weight's shape (N, K) and float32
    ``scales`` (N,), row n standing for ``scales[n] * q[n]`` (float32 networks only).  A
    float32 step of at most ``SMALL_BATCH`` texts, and any step with 8-bit weights, runs on
    the small-batch products (smallgemm.c: each weight read once for the whole batch);
    others on BLAS.

    The weights are read in place, not copied, so updates made to them in place are seen;
    ``arrays`` lists them for callers that check whether a parameter was replaced.  A call
    refuses weights that were reallocated since construction.  One call at a time: the
    scratch arrays are the object's own (LanguageModel keeps one per state).
    """
    cdef readonly int batch, embed_size, hidden_size, vocab_size, num_layers, num_tokens
    cdef readonly str cell
    cdef readonly object dtype
    cdef readonly tuple arrays          # every weight, in a fixed order (kept alive here)
    cdef int code
    cdef bint single, pin_blas          # float32; some team has several threads
    cdef readonly bint small_batch      # on the small-batch products (pt_small_network_step)
    cdef readonly bint quantized        # some weight is 8-bit
    cdef int small_threads              # that step's team size
    cdef void *dec_w                    # the decoder's float weight (BLAS path), bias or NULL
    cdef void *dec_b
    cdef pt_weights *small_w            # per layer w_ih, then per layer w_hh, then the decoder
    cdef cnp.ndarray embedded, work
    cdef void **pointers                # per weight in `arrays`: where its data was
    cdef Py_ssize_t *sizes              # and its element count
    cdef void **layer_ptrs              # 5 x L: the w_ih of every layer, then w_hh, b_ih, ...
    cdef int *threads                   # L + 1 team sizes (the last: the decoder's)
    cdef int *limited                   # the same under the calling thread's limit

    def __cinit__(self):
        self.pointers = NULL
        self.sizes = NULL
        self.layer_ptrs = NULL
        self.threads = NULL
        self.limited = NULL
        self.small_w = NULL

    def __dealloc__(self):
        free(self.pointers)
        free(self.sizes)
        free(self.layer_ptrs)
        free(self.threads)
        free(self.limited)
        free(self.small_w)

    def __init__(self, str cell, embedding, layers, decoder_weight, decoder_bias, batch):
        cdef int code = _cell_code(cell)
        cdef int G = pt_gate_count(code)
        B = _count(batch, "batch")
        dtype = _float_dtype(embedding, "embedding")
        es = _array_shape(embedding, "embedding", 2, "(tokens, embed)")
        if es[0] > _INT_MAX:
            raise ValueError(f"embedding: {es[0]} rows exceed 32-bit sizes")
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers: expected a sequence of (w_ih, w_hh, b_ih, b_hh, "
                            f"peephole) per layer, got {type(layers).__name__}") from None
        if not layers:
            raise ValueError("layers: expected at least one layer")
        kept = [_check(embedding, "embedding", dtype, es)]
        per_layer = []
        weights = []   # (w, q, scales) of w_ih and w_hh per layer, then the decoder's
        inputs, H = es[1], None
        for k, layer in enumerate(layers):
            if not isinstance(layer, (tuple, list)) or len(layer) != 5:
                raise TypeError(f"layers[{k}]: expected (w_ih, w_hh, b_ih, b_hh, peephole)")
            w_ih, w_hh, b_ih, b_hh, peephole = layer
            name = f"layers[{k}]."
            ws = _weight_shape(w_hh, name + "w_hh", f"({G}*hidden, hidden)")
            if ws[0] != G * ws[1] or (H is not None and ws[1] != H):
                raise ValueError(f"{name}w_hh: expected shape ({G}*hidden, hidden) with the "
                                 f"hidden size of every layer, got {ws}")
            H = ws[1]
            _check_sizes(f"layers[{k}]", 1, B, inputs, H, 2 * G)
            if (b_ih is None) != (b_hh is None):
                raise ValueError(f"{name}b_ih, {name}b_hh: expected both or neither")
            ih = _weight(w_ih, name + "w_ih", dtype, (G * H, inputs))
            hh = _weight(w_hh, name + "w_hh", dtype, (G * H, H))
            weights += [ih, hh]
            arrays = [ih[0], hh[0],
                      _opt(b_ih, name + "b_ih", dtype, (G * H,)),
                      _opt(b_hh, name + "b_hh", dtype, (G * H,))]
            if not _extra_rows(code) and peephole is not None:
                raise ValueError(f"layers[{k}].peephole: only an LSTM has peephole weights")
            arrays.append(_opt(peephole, f"layers[{k}].peephole", dtype,
                               (_extra_rows(code), H)))
            per_layer.append(arrays)
            kept += [a for a in ih + hh + tuple(arrays[2:]) if a is not None]
            inputs = H
        ds = _weight_shape(decoder_weight, "decoder_weight", "(vocab, hidden)")
        if ds[1] != H:
            raise ValueError(f"decoder_weight: expected shape (vocab, {H}), got {ds}")
        if ds[0] > _INT_MAX:
            raise ValueError(f"decoder_weight: {ds[0]} rows exceed 32-bit sizes")
        dec = _weight(decoder_weight, "decoder_weight", dtype, ds)
        weights.append(dec)
        kept += [a for a in dec if a is not None]
        dec_b = _opt(decoder_bias, "decoder_bias", dtype, (ds[0],))
        if dec_b is not None:
            kept.append(dec_b)

        cdef int L = len(layers)
        self.cell, self.code, self.dtype = cell, code, dtype
        self.batch, self.embed_size, self.hidden_size = B, es[1], H
        self.vocab_size, self.num_layers, self.num_tokens = ds[0], L, es[0]
        self.arrays = tuple(kept)
        self.dec_w = _ptr(dec[0])
        self.dec_b = _ptr(dec_b)
        self.quantized = any(w[1] is not None for w in weights)
        self.small_batch = self.quantized or (dtype == np.float32 and B <= SMALL_BATCH)
        self.embedded = np.empty((B, es[1]), dtype)
        self.work = np.empty(step_workspace_shape(cell, B, H), dtype)
        self.pointers = <void **>malloc(len(kept) * sizeof(void *))
        self.sizes = <Py_ssize_t *>malloc(len(kept) * sizeof(Py_ssize_t))
        self.layer_ptrs = <void **>malloc(5 * L * sizeof(void *))
        self.threads = <int *>malloc((L + 1) * sizeof(int))
        self.limited = <int *>malloc((L + 1) * sizeof(int))
        self.small_w = <pt_weights *>malloc((2 * L + 1) * sizeof(pt_weights))
        if not (self.pointers and self.sizes and self.layer_ptrs and self.threads and self.limited
                and self.small_w):
            raise MemoryError()
        for k in range(L):
            self.small_w[k] = _weights_of(weights[2 * k])
            self.small_w[L + k] = _weights_of(weights[2 * k + 1])
        self.small_w[2 * L] = _weights_of(dec)
        cdef Py_ssize_t i
        for i in range(len(kept)):
            self.pointers[i] = cnp.PyArray_DATA(<cnp.ndarray>kept[i])
            self.sizes[i] = cnp.PyArray_SIZE(<cnp.ndarray>kept[i])
        inputs = es[1]
        for k in range(L):
            for i in range(5):
                self.layer_ptrs[i * L + k] = _ptr(per_layer[k][i])   # kind-major
            # A single step is bound by reading the weights, which two cores do faster than
            # one even at a batch of one (see cell_step).
            self.threads[k] = _team_for(4 * (B + 4), G * H, inputs + H)
            inputs = H
        self.threads[L] = _team_for(B, ds[0], H)
        self.single = dtype == np.float32
        self.pin_blas = False
        self.small_threads = 1
        for k in range(L + 1):
            self.pin_blas = self.pin_blas or self.threads[k] > 1
            self.small_threads = max(self.small_threads, self.threads[k])
        if self.small_batch:
            # One team for the whole step (the layers' products are its phases).
            for k in range(L + 1):
                self.threads[k] = self.small_threads
            self.pin_blas = False

    def teams(self):
        """The threads each layer's step (and, last, the decoder) uses when called from this
        thread: the team sizes fixed when the step was built, under this thread's limit."""
        cdef int *threads = self._teams_here()
        return [threads[k] for k in range(self.num_layers + 1)]

    cdef int *_teams_here(self) noexcept:
        """The team sizes for a call from this thread (see set_thread_limit)."""
        if pt_thread_limit <= 0:
            return self.threads
        cdef int k
        for k in range(self.num_layers + 1):
            self.limited[k] = _limited(self.threads[k])
        return self.limited

    def __reduce__(self):
        raise TypeError("NetworkStep cannot be pickled")

    def __call__(self, token_ids, h, c, log_probs):
        """Read ``token_ids`` (B integers) into the state ``h`` (and ``c`` for an LSTM),
        (layers, B, hidden), in place; write the next-token log-probabilities into
        ``log_probs`` (B, vocab).  Returns ``log_probs``."""
        cdef int B = self.batch, L = self.num_layers, H = self.hidden_size
        cdef cnp.ndarray ids = token_ids if isinstance(token_ids, np.ndarray) else None
        if ids is None or cnp.PyArray_TYPE(ids) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(ids):
            ids = np.asarray(token_ids)
            if ids.dtype.kind not in "iu":
                raise TypeError(f"token_ids: expected integers, got dtype {ids.dtype}")
            ids = np.ascontiguousarray(ids, dtype=np.int64)
        if cnp.PyArray_NDIM(ids) != 1 or cnp.PyArray_DIMS(ids)[0] != B:
            raise ValueError(f"token_ids: expected {B} ids (one per text), got shape {_shape(ids)}")
        cdef const long long *pid = <const long long *>cnp.PyArray_DATA(ids)
        cdef Py_ssize_t i
        for i in range(B):
            if pid[i] < 0 or pid[i] >= self.num_tokens:
                raise ValueError(f"token_ids: ids must lie in [0, {self.num_tokens}), got {pid[i]}")
        cdef cnp.ndarray ah = _check(h, "h", self.dtype, (L, B, H), True)
        cdef cnp.ndarray ac = None
        if _has_state(self.code):
            if c is None:
                raise ValueError("c: an LSTM step needs the cell state")
            ac = _check(c, "c", self.dtype, (L, B, H), True)
        elif c is not None:
            raise ValueError(f"c: only an LSTM has a cell state (cell={self.cell!r})")
        cdef cnp.ndarray out = _check(log_probs, "log_probs", self.dtype, (B, self.vocab_size), True)
        if np.shares_memory(out, ah) or (ac is not None and (np.shares_memory(ac, ah)
                                                              or np.shares_memory(ac, out))):
            raise ValueError("h, c, log_probs: must not overlap")
        for i in range(len(self.arrays)):
            a = <cnp.ndarray>self.arrays[i]
            if cnp.PyArray_DATA(a) != self.pointers[i] or cnp.PyArray_SIZE(a) != self.sizes[i]:
                raise ValueError("the network's weights were reallocated since this "
                                 "NetworkStep was built; build a new one")
        cdef void *emb = self.pointers[0]
        cdef void *dec_w = self.dec_w
        cdef void *dec_b = self.dec_b
        cdef bint single = self.single, many = self.pin_blas, small = self.small_batch
        cdef pt_weights *sw = self.small_w
        cdef int E = self.embed_size, V = self.vocab_size, code = self.code
        cdef void **lp = self.layer_ptrs
        # Team sizes are fixed when the step is built; the calling thread's limit (see
        # set_thread_limit) applies to each call, BLAS included.
        cdef int *threads = self._teams_here()
        many = not small and (many or pt_thread_limit > 0)   # the small path calls no BLAS
        cdef void *embedded = cnp.PyArray_DATA(self.embedded)
        cdef void *work = cnp.PyArray_DATA(self.work)
        cdef void *ph = cnp.PyArray_DATA(ah)
        cdef void *pc = _ptr(ac)
        cdef void *po = cnp.PyArray_DATA(out)
        with nogil:
            if many:
                pt_blas_single_enter()
            if small:
                pt_small_network_step(code, B, E, H, V, L, pid, <float *>emb, sw, sw + L,
                                      <const float *const *>(lp + 2 * L),
                                      <const float *const *>(lp + 3 * L),
                                      <const float *const *>(lp + 4 * L), sw + 2 * L,
                                      <float *>dec_b, <float *>ph, <float *>pc, <float *>po,
                                      <float *>embedded, <float *>work, threads[0])
            elif single:
                pt_network_step_f(code, B, E, H, V, L, pid, <float *>emb,
                                  <const float *const *>lp, <const float *const *>(lp + L),
                                  <const float *const *>(lp + 2 * L),
                                  <const float *const *>(lp + 3 * L),
                                  <const float *const *>(lp + 4 * L), <float *>dec_w,
                                  <float *>dec_b, <float *>ph, <float *>pc, <float *>po,
                                  <float *>embedded, <float *>work, threads)
            else:
                pt_network_step_d(code, B, E, H, V, L, pid, <double *>emb,
                                  <const double *const *>lp, <const double *const *>(lp + L),
                                  <const double *const *>(lp + 2 * L),
                                  <const double *const *>(lp + 3 * L),
                                  <const double *const *>(lp + 4 * L), <double *>dec_w,
                                  <double *>dec_b, <double *>ph, <double *>pc, <double *>po,
                                  <double *>embedded, <double *>work, threads)
            if many:
                pt_blas_single_exit()
        return log_probs


# ---- helpers -----------------------------------------------------------------------

def reverse_sequences(x, lengths=None, out=None):
    """Reverse each sequence of x (T, B, F) within its own length; zeros past the end.

    A reverse-direction layer runs the forward kernel over this, and reverses its output
    back the same way (the operation is its own inverse on the valid steps).
    """
    dtype = _float_dtype(x, "x")
    xs = _array_shape(x, "x", 3, "(T, B, F)")
    if xs[0] * xs[1] > _INT_MAX or max(xs) > _INT_MAX:
        raise ValueError(f"x: shape {xs} exceeds 32-bit sizes")
    cdef int T = xs[0], B = xs[1], F = xs[2]
    cdef cnp.ndarray ax = _check(x, "x", dtype, (T, B, F))
    cdef cnp.ndarray alen = _check_lengths(lengths, T, B)
    cdef cnp.ndarray aout = (np.empty((T, B, F), dtype) if out is None
                             else _check(out, "out", dtype, (T, B, F), True))
    if aout is ax or np.shares_memory(aout, ax):
        raise ValueError("out: must not overlap x")
    cdef bint single = dtype == np.float32
    with nogil:
        if single:
            pt_reverse_f(T, B, F, <const int *>_ptr(alen), <float *>_ptr(ax),
                         <float *>_ptr(aout))
        else:
            pt_reverse_d(T, B, F, <const int *>_ptr(alen), <double *>_ptr(ax),
                         <double *>_ptr(aout))
    return aout


def matmul(a, b, out=None, bint trans_a=False, bint trans_b=False, bint accumulate=False):
    """``out = op(a) @ op(b)`` (``+=`` with ``accumulate``) for 2-D C-contiguous arrays of one
    float dtype, ``op`` transposing where asked.  The rows of ``out`` are shared among the
    core's threads, BLAS pinned to one thread meanwhile (see pt_matmul)."""
    dtype = _float_dtype(a, "a")
    sa = _array_shape(a, "a", 2, "(rows, columns)")
    sb = _array_shape(b, "b", 2, "(rows, columns)")
    cdef long long M = sa[1] if trans_a else sa[0], K = sa[0] if trans_a else sa[1]
    cdef long long Kb = sb[1] if trans_b else sb[0], N = sb[0] if trans_b else sb[1]
    if K != Kb:
        raise ValueError(f"a, b: inner sizes differ ({K} and {Kb})")
    if max(M, N, K) > _INT_MAX:
        raise ValueError("a, b: sizes exceed 32-bit")
    cdef cnp.ndarray aa = _check(a, "a", dtype, tuple(sa))
    cdef cnp.ndarray ab = _check(b, "b", dtype, tuple(sb))
    cdef cnp.ndarray aout
    if out is None:
        if accumulate:
            raise ValueError("out: accumulate needs an output array")
        aout = np.empty((M, N), dtype)
    else:
        aout = _check(out, "out", dtype, (M, N), True)
        if np.shares_memory(aout, aa) or np.shares_memory(aout, ab):
            raise ValueError("out: must not overlap a or b")
    if M == 0 or N == 0:
        return aout
    if K == 0:
        if not accumulate:
            aout[...] = 0
        return aout
    cdef int nthreads = _team_size(M, N, K)
    cdef int lda = sa[1], ldb = sb[1], iM = M, iN = N, iK = K
    cdef bint single = dtype == np.float32
    with nogil:
        if _pins_blas(nthreads):
            pt_blas_single_enter()
        if single:
            pt_matmul_f(trans_a, trans_b, iM, iN, iK, <float *>_ptr(aa), lda, <float *>_ptr(ab),
                        ldb, 1.0 if accumulate else 0.0, <float *>_ptr(aout), iN, nthreads)
        else:
            pt_matmul_d(trans_a, trans_b, iM, iN, iK, <double *>_ptr(aa), lda,
                        <double *>_ptr(ab), ldb, 1.0 if accumulate else 0.0,
                        <double *>_ptr(aout), iN, nthreads)
        if _pins_blas(nthreads):
            pt_blas_single_exit()
    return aout


def sigmoid_f32(x):
    """The float32 sigmoid the kernels use (for tests of its accuracy)."""
    cdef cnp.ndarray a = _as_float32(x)
    cdef cnp.ndarray y = np.empty_like(a)
    pt_sigmoid_array_f(a.size, <float *>_ptr(a), <float *>_ptr(y))
    return y


def tanh_f32(x):
    """The float32 tanh the kernels use (for tests of its accuracy)."""
    cdef cnp.ndarray a = _as_float32(x)
    cdef cnp.ndarray y = np.empty_like(a)
    pt_tanh_array_f(a.size, <float *>_ptr(a), <float *>_ptr(y))
    return y


cdef cnp.ndarray _as_float32(x):
    try:
        return np.ascontiguousarray(x, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise TypeError(f"x: expected numbers convertible to float32 ({e})") from None
