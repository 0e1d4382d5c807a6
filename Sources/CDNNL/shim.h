// oneDNN (Debian's libdnnl-dev) for matrix products whose B is a constant: its matmul primitive
// takes B in a blocked layout that B is reordered into once (PackedWeights.swift). The helpers
// below keep oneDNN's C structs (fixed-size dims arrays) on the C side.
#pragma once
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/// The CPU engine, or NULL.
static inline dnnl_engine_t ot_dnnl_engine(void) {
    dnnl_engine_t engine = NULL;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return NULL;
    return engine;
}

/// oneDNN's OpenMP runtime runs each call on a team of the calling thread's size: one, so a call
/// stays on its (pool) thread and no OpenMP threads are started (they would spin beside the pool).
static inline void ot_dnnl_single_thread(void) {
    typedef void (*set_threads)(int);
    static set_threads set = NULL;
    static int looked = 0;
    if (!looked) { set = (set_threads)dlsym(RTLD_DEFAULT, "omp_set_num_threads"); looked = 1; }
    if (set) set(1);
}

/// oneDNN 2.x's generated gemm kernels (jit_avx512_common_gemm_f32, jit_avx_gemm_f32: dnnl_sgemm,
/// and primitives whose implementation falls back to gemm) point rsp at a heap workspace while
/// they run, so a signal handled on that thread meanwhile writes its frame into the heap (oneDNN
/// issue #4845, fixed in 3.11; Debian ships 2.6). A terminal resize (SIGWINCH) during a training
/// run aborted it with glibc's "corrupted size vs. prev_size". Every oneDNN call therefore runs
/// with the calling thread's signals held (Swift's `SignalHold`: pool workers hold them for life,
/// a graph run for the run, any other caller for the call); one that arrives meanwhile is handled
/// by another thread or when they are released. Faults stay unblocked: holding them is undefined
/// when the code itself raises one.
static inline void ot_signals_hold(sigset_t *saved) {
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &all, saved);
}

static inline void ot_signals_restore(const sigset_t *saved) { pthread_sigmask(SIG_SETMASK, saved, NULL); }

/// Runs a primitive on the calling thread alone and waits for it: 0 on success. Every oneDNN
/// execution goes through here or ot_sgemm; callers hold the thread's signals (see above).
static inline int ot_execute(dnnl_primitive_t primitive, dnnl_stream_t stream, int count, const dnnl_exec_arg_t *args) {
    ot_dnnl_single_thread();
    return dnnl_primitive_execute(primitive, stream, count, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success ? 0 : -1;
}

/// dnnl_sgemm (row-major C = alpha·op(A)·op(B) + beta·C) on the calling thread alone: 0 on
/// success. Callers hold the thread's signals (see above).
static inline int ot_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                           const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    ot_dnnl_single_thread();
    return dnnl_sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == dnnl_success ? 0 : -1;
}

/// The primitive for C[m, n] (row stride ldc) = A[m, k] (row stride lda) · W[k, n] (+ bias[n]),
/// W in the layout the implementation picks (written to *weights). *brgemm is 1 when the
/// implementation is oneDNN's brgemm kernels (AVX-512), the ones measured faster than OpenBLAS.
/// Its scratch memory is the caller's (*scratchpad bytes, given to each run): a primitive's own
/// would be shared by every thread that runs it at once.
static inline int ot_matmul_create(dnnl_engine_t engine, int64_t m, int64_t k, int64_t n, int64_t lda, int64_t ldc, int bias,
                                   dnnl_primitive_t *primitive, dnnl_memory_desc_t *weights, int *brgemm, size_t *scratchpad) {
    dnnl_memory_desc_t a, w, c, b;
    dnnl_dims_t ad = {m, k}, as = {lda, 1}, wd = {k, n}, cd = {m, n}, cs = {ldc, 1}, bd = {1, n};
    *primitive = NULL;
    *brgemm = 0;
    *scratchpad = 0;
    ot_dnnl_single_thread();  // the primitive plans its work for the threads it will run on
    if (dnnl_memory_desc_init_by_strides(&a, 2, ad, dnnl_f32, as) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_strides(&c, 2, cd, dnnl_f32, cs) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_f32, dnnl_ab) != dnnl_success) return -1;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &a, &w, bias ? &b : NULL, &c) != dnnl_success) return -1;
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
    dnnl_primitive_desc_t pd;
    dnnl_status_t made = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (made == dnnl_success) made = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (made != dnnl_success) return -1;
    const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (scratch) *scratchpad = dnnl_memory_desc_get_size(scratch);
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        *brgemm = strncmp(impl, "brg", 3) == 0;
    const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (!chosen) { dnnl_primitive_desc_destroy(pd); return -1; }
    *weights = *chosen;
    dnnl_status_t status = dnnl_primitive_create(primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    return status == dnnl_success ? 0 : -1;
}

/// Whether two weight layouts are the same.
static inline int ot_weights_equal(const dnnl_memory_desc_t *x, const dnnl_memory_desc_t *y) { return dnnl_memory_desc_equal(x, y); }

/// The bytes of a weight layout.
static inline size_t ot_weights_size(const dnnl_memory_desc_t *w) { return dnnl_memory_desc_get_size(w); }

/// The memory of layout *plain at `data` reordered into a new memory of layout *layout (oneDNN
/// allocates it), on the calling thread: a constant weight packed once. NULL on failure.
static inline dnnl_memory_t ot_reorder_new(dnnl_engine_t engine, const dnnl_memory_desc_t *plain, const void *data, const dnnl_memory_desc_t *layout) {
    dnnl_memory_t from = NULL, to = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_stream_t stream = NULL;
    int ok = dnnl_memory_create(&from, plain, engine, (void *)data) == dnnl_success
        && dnnl_memory_create(&to, layout, engine, DNNL_MEMORY_ALLOCATE) == dnnl_success
        && dnnl_reorder_primitive_desc_create(&pd, plain, engine, layout, engine, NULL) == dnnl_success
        && dnnl_primitive_create(&reorder, pd) == dnnl_success
        && dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        ok = ot_execute(reorder, stream, 2, args) == 0;
    }
    if (stream) dnnl_stream_destroy(stream);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (from) dnnl_memory_destroy(from);
    if (!ok && to) { dnnl_memory_destroy(to); to = NULL; }
    return to;
}

/// B [k, n] at element strides (rowStride, colStride) reordered into a new memory of layout
/// *weights (oneDNN allocates it); NULL on failure.
static inline dnnl_memory_t ot_pack_weights(dnnl_engine_t engine, const float *b, int64_t k, int64_t n, int64_t rowStride,
                                            int64_t colStride, const dnnl_memory_desc_t *weights) {
    dnnl_memory_desc_t plain;
    dnnl_dims_t d = {k, n}, s = {rowStride, colStride};
    if (dnnl_memory_desc_init_by_strides(&plain, 2, d, dnnl_f32, s) != dnnl_success) return NULL;
    return ot_reorder_new(engine, &plain, b, weights);
}

/// One memory object of the calling thread, kept from call to call: made again only when the
/// layout asked for differs from the kept one's, its data handle set on each call.
typedef struct { dnnl_memory_t memory; dnnl_memory_desc_t desc; } ot_kept_memory;

static inline dnnl_memory_t ot_kept(ot_kept_memory *kept, dnnl_engine_t engine, const dnnl_memory_desc_t *desc, void *data) {
    if (kept->memory && !dnnl_memory_desc_equal(&kept->desc, desc)) {
        dnnl_memory_destroy(kept->memory);
        kept->memory = NULL;
    }
    if (!kept->memory) {
        if (dnnl_memory_create(&kept->memory, desc, engine, data) != dnnl_success) { kept->memory = NULL; return NULL; }
        kept->desc = *desc;
        return kept->memory;
    }
    return dnnl_memory_set_data_handle(kept->memory, data) == dnnl_success ? kept->memory : NULL;
}

/// A thread's stream, memory objects and scratch block for oneDNN calls: making them on each
/// call took ~3 us (a 64x64x64 product's time, more than a small 1x1 convolution). Each user
/// (the matmul here, the convolutions and reorders of conv.h) keeps its own thread-local one, so
/// their memory objects are not made again as calls alternate; they live as long as the thread
/// (the pool's threads live as long as the process).
typedef struct {
    dnnl_stream_t stream;
    ot_kept_memory source, destination, bias, scratch;
    void *scratchBlock;
    size_t scratchBytes;
} ot_thread_state;

/// state with its stream made (on first use), or NULL.
static inline ot_thread_state *ot_thread_ready(ot_thread_state *state, dnnl_engine_t engine) {
    if (!state->stream && dnnl_stream_create(&state->stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        state->stream = NULL;
        return NULL;
    }
    return state;
}

/// The memory object of `bytes` of t's scratch block (grown when smaller), or NULL.
static inline dnnl_memory_t ot_thread_scratch(ot_thread_state *t, dnnl_engine_t engine, size_t bytes) {
    if (bytes > t->scratchBytes) {
        void *grown = NULL;
        if (posix_memalign(&grown, 64, bytes) != 0) return NULL;
        free(t->scratchBlock);
        t->scratchBlock = grown;
        t->scratchBytes = bytes;
    }
    dnnl_memory_desc_t sd;
    dnnl_dims_t sds = {(int64_t)bytes};
    if (dnnl_memory_desc_init_by_tag(&sd, 1, sds, dnnl_u8, dnnl_a) != dnnl_success) return NULL;
    return ot_kept(&t->scratch, engine, &sd, t->scratchBlock);
}

/// The matmul's state of the calling thread.
static inline ot_thread_state *ot_thread(dnnl_engine_t engine) {
    static __thread ot_thread_state state;
    return ot_thread_ready(&state, engine);
}

/// Runs a primitive from ot_matmul_create on the calling thread: C = A · W (+ bias), with scratch
/// memory of `scratchpad` bytes of its own (the thread's). 0 on success.
static inline int ot_matmul_run(dnnl_engine_t engine, dnnl_primitive_t primitive, size_t scratchpad, const float *a, int64_t m, int64_t k,
                                int64_t lda, dnnl_memory_t weights, const float *bias, int64_t n, float *c, int64_t ldc) {
    ot_thread_state *t = ot_thread(engine);
    if (!t) return -1;
    dnnl_memory_desc_t ad, cd, bd;
    dnnl_dims_t ads = {m, k}, as = {lda, 1}, cds = {m, n}, cs = {ldc, 1}, bds = {1, n};
    if (dnnl_memory_desc_init_by_strides(&ad, 2, ads, dnnl_f32, as) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_strides(&cd, 2, cds, dnnl_f32, cs) != dnnl_success) return -1;
    if (bias && dnnl_memory_desc_init_by_tag(&bd, 2, bds, dnnl_f32, dnnl_ab) != dnnl_success) return -1;
    dnnl_memory_t am = ot_kept(&t->source, engine, &ad, (void *)a);
    dnnl_memory_t cm = am ? ot_kept(&t->destination, engine, &cd, c) : NULL;
    dnnl_memory_t bm = bias && cm ? ot_kept(&t->bias, engine, &bd, (void *)bias) : NULL;
    dnnl_memory_t sm = scratchpad && cm ? ot_thread_scratch(t, engine, scratchpad) : NULL;
    if (!am || !cm || (bias && !bm) || (scratchpad && !sm)) return -1;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, cm}};
    int count = 3;
    if (sm) args[count++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, sm};
    if (bm) args[count++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bm};
    return ot_execute(primitive, t->stream, count, args);
}

/// Whether oneDNN runs its AVX-512 kernels here (brgemm, the ones measured faster than OpenBLAS):
/// on a CPU without AVX-512 oneDNN 2.6 falls back to its own sgemm.
static inline int ot_dnnl_avx512(void) {
    return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
}
