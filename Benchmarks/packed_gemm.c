// A/B of the products with a constant B (PackedWeights.swift), split over `threads` spinning
// threads, one single-threaded call per thread, as onnx-train's pool runs them:
//   blas     OpenBLAS's sgemm on column blocks of C (BLAS.gemm's split), the bias written first
//   columns  oneDNN's matmul on the same column blocks: C strided, so oneDNN 2.6 runs its jit sgemm
//   rows     oneDNN's matmul on blocks of rows, B reordered once for its brgemm kernels (what
//            PackedWeightCache does)
//   cc -O2 -o packed_gemm Benchmarks/packed_gemm.c -lopenblas -ldnnl -lpthread -lm
//   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ./packed_gemm [threads] [bias 0/1] [M,K,N ...]
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#define CHECK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "%s failed %d line %d\n", #x, s_, __LINE__); exit(1);} } while(0)
#define MAXT 8
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static dnnl_engine_t eng;
typedef struct { int M, K, N, j0, j1, i0, i1, bias; dnnl_primitive_t pr; dnnl_memory_t wr; const float *A, *B, *b; float *C; dnnl_primitive_t p; dnnl_memory_t w; } Part;
static Part parts[MAXT];
static int threads = 2, mode = 0;
static atomic_int generation, done;
static void run_part(Part *q) {
    int n = q->j1 - q->j0;
    if (mode == 0) {
        if (q->bias) for (int i = 0; i < q->M; i++) for (int j = 0; j < n; j++) q->C[(size_t)i * q->N + q->j0 + j] = q->b[q->j0 + j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, q->M, n, q->K, 1.f, q->A, q->K, q->B + q->j0, q->N, q->bias ? 1.f : 0.f, q->C + q->j0, q->N);
    } else if (mode == 2) {
        int m = q->i1 - q->i0; if (m <= 0) return;
        dnnl_memory_desc_t ad, cd, bd;
        dnnl_dims_t a1 = {m, q->K}, as = {q->K, 1}, c1 = {m, q->N}, cs = {q->N, 1}, b1 = {1, q->N};
        dnnl_memory_desc_init_by_strides(&ad, 2, a1, dnnl_f32, as);
        dnnl_memory_desc_init_by_strides(&cd, 2, c1, dnnl_f32, cs);
        dnnl_memory_desc_init_by_tag(&bd, 2, b1, dnnl_f32, dnnl_ab);
        dnnl_memory_t am, cm, bm = NULL; dnnl_stream_t s;
        dnnl_memory_create(&am, &ad, eng, (void *)(q->A + (size_t)q->i0 * q->K)); dnnl_memory_create(&cm, &cd, eng, q->C + (size_t)q->i0 * q->N);
        if (q->bias) dnnl_memory_create(&bm, &bd, eng, (void *)q->b);
        dnnl_stream_create(&s, eng, dnnl_stream_default_flags);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, q->wr}, {DNNL_ARG_DST, cm}, {DNNL_ARG_BIAS, bm}};
        dnnl_primitive_execute(q->pr, s, q->bias ? 4 : 3, args); dnnl_stream_wait(s);
        dnnl_stream_destroy(s); dnnl_memory_destroy(am); dnnl_memory_destroy(cm); if (bm) dnnl_memory_destroy(bm);
    } else {
        dnnl_memory_desc_t ad, cd, bd;
        dnnl_dims_t a1 = {q->M, q->K}, as = {q->K, 1}, c1 = {q->M, n}, cs = {q->N, 1}, b1 = {1, n};
        dnnl_memory_desc_init_by_strides(&ad, 2, a1, dnnl_f32, as);
        dnnl_memory_desc_init_by_strides(&cd, 2, c1, dnnl_f32, cs);
        dnnl_memory_desc_init_by_tag(&bd, 2, b1, dnnl_f32, dnnl_ab);
        dnnl_memory_t am, cm, bm = NULL; dnnl_stream_t s;
        dnnl_memory_create(&am, &ad, eng, (void *)q->A); dnnl_memory_create(&cm, &cd, eng, q->C + q->j0);
        if (q->bias) dnnl_memory_create(&bm, &bd, eng, (void *)(q->b + q->j0));
        dnnl_stream_create(&s, eng, dnnl_stream_default_flags);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, q->w}, {DNNL_ARG_DST, cm}, {DNNL_ARG_BIAS, bm}};
        dnnl_primitive_execute(q->p, s, q->bias ? 4 : 3, args); dnnl_stream_wait(s);
        dnnl_stream_destroy(s); dnnl_memory_destroy(am); dnnl_memory_destroy(cm); if (bm) dnnl_memory_destroy(bm);
    }
}
static void *worker(void *arg) {
    int id = (int)(long)arg, seen = 0;
    for (;;) {
        int g; while ((g = atomic_load(&generation)) == seen) ;
        if (g < 0) return NULL;
        seen = g; run_part(&parts[id]); atomic_fetch_add(&done, 1);
    }
}
static double timed(int reps) {
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t = now(); atomic_store(&done, 0); atomic_fetch_add(&generation, 1);
        run_part(&parts[0]); while (atomic_load(&done) < threads - 1) ;
        t = now() - t; if (t < best) best = t;
    }
    return best;
}
static void fill(float *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = (float)((rand() % 2001) - 1000) / 1000.0f; }
int main(int argc, char **argv) {
    if (argc > 1) threads = atoi(argv[1]);
    int bias = argc > 2 ? atoi(argv[2]) : 0;
    int shapes[][3] = {{128,256,50257},{128,256,768},{128,256,256},{128,256,1024},{128,1024,256},{128,128,384},{128,128,128},
        {128,128,512},{128,512,128},{197,192,576},{197,192,192},{197,192,768},{197,768,192},{6304,192,576},{6304,192,192},
        {6304,192,768},{6304,768,192},{4096,256,768},{4096,256,256},{4096,256,1024},{4096,1024,256},{4096,128,384},
        {4096,128,512},{4096,512,128},{64,64,64},{32,128,128}};
    int ns = sizeof shapes / sizeof shapes[0];
    if (argc > 3) {  // the shapes given instead
        ns = 0;
        for (int i = 3; i < argc && ns < (int)(sizeof shapes / sizeof shapes[0]); i++)
            if (sscanf(argv[i], "%d,%d,%d", &shapes[ns][0], &shapes[ns][1], &shapes[ns][2]) == 3) ns++;
    }
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    pthread_t tid[MAXT];
    for (int t = 1; t < threads; t++) pthread_create(&tid[t], NULL, worker, (void *)(long)t);
    printf("%d threads, bias %d; columns: oneDNN on C's column blocks (strided C: its jit sgemm, B plain); rows: row blocks, B packed once (brgemm)\n%-16s %9s %9s %7s %9s %7s %8s %8s\n", threads, bias, "M,K,N", "blas ms", "columns", "ratio", "rows ms", "ratio", "GF/s", "maxdiff");
    for (int s = 0; s < ns; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
        float *C1 = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
        fill(A, (size_t)M * K); fill(B, (size_t)K * N); fill(b, N);
        int blocks = (N + 15) / 16;
        for (int t = 0; t < threads; t++) {
            Part *q = &parts[t];
            int rb = (M + 7) / 8; *q = (Part){M, K, N, blocks * t / threads * 16, blocks * (t + 1) / threads * 16, rb * t / threads * 8, rb * (t + 1) / threads * 8 < M ? rb * (t + 1) / threads * 8 : M, bias, NULL, NULL, A, B, b, C1, NULL, NULL};
            if (q->j1 > N) q->j1 = N;
            int n = q->j1 - q->j0;
            dnnl_memory_desc_t ad, wd, cd, bd, plain;
            dnnl_dims_t a1 = {M, K}, as = {K, 1}, w1 = {K, n}, ws = {N, 1}, c1 = {M, n}, cs = {N, 1}, b1 = {1, n};
            CHECK(dnnl_memory_desc_init_by_strides(&ad, 2, a1, dnnl_f32, as));
            CHECK(dnnl_memory_desc_init_by_tag(&wd, 2, w1, dnnl_f32, dnnl_format_tag_any));
            CHECK(dnnl_memory_desc_init_by_strides(&plain, 2, w1, dnnl_f32, ws));
            CHECK(dnnl_memory_desc_init_by_strides(&cd, 2, c1, dnnl_f32, cs));
            CHECK(dnnl_memory_desc_init_by_tag(&bd, 2, b1, dnnl_f32, dnnl_ab));
            dnnl_matmul_desc_t md; CHECK(dnnl_matmul_desc_init(&md, &ad, &wd, bias ? &bd : NULL, &cd));
            dnnl_primitive_desc_t pd; CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
            const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            CHECK(dnnl_primitive_create(&q->p, pd));
            dnnl_memory_t from; CHECK(dnnl_memory_create(&from, &plain, eng, B + q->j0));
            CHECK(dnnl_memory_create(&q->w, chosen, eng, DNNL_MEMORY_ALLOCATE));
            dnnl_primitive_desc_t rpd; dnnl_primitive_t rp; dnnl_stream_t st;
            CHECK(dnnl_reorder_primitive_desc_create(&rpd, &plain, eng, chosen, eng, NULL)); CHECK(dnnl_primitive_create(&rp, rpd));
            CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, q->w}};
            CHECK(dnnl_primitive_execute(rp, st, 2, ra)); CHECK(dnnl_stream_wait(st));
            dnnl_stream_destroy(st); dnnl_primitive_destroy(rp); dnnl_primitive_desc_destroy(rpd); dnnl_primitive_desc_destroy(pd); dnnl_memory_destroy(from);
        }
        dnnl_memory_t shared = NULL; const char *impl = "?";
        for (int t = 0; t < threads; t++) {
            Part *q = &parts[t]; int m = q->i1 - q->i0; if (m <= 0) continue;
            dnnl_memory_desc_t ad, wd, cd, bd, plain;
            dnnl_dims_t a1 = {m, K}, w1 = {K, N}, c1 = {m, N}, b1 = {1, N};
            CHECK(dnnl_memory_desc_init_by_tag(&ad, 2, a1, dnnl_f32, dnnl_ab));
            CHECK(dnnl_memory_desc_init_by_tag(&wd, 2, w1, dnnl_f32, dnnl_format_tag_any));
            CHECK(dnnl_memory_desc_init_by_tag(&plain, 2, w1, dnnl_f32, dnnl_ab));
            CHECK(dnnl_memory_desc_init_by_tag(&cd, 2, c1, dnnl_f32, dnnl_ab));
            CHECK(dnnl_memory_desc_init_by_tag(&bd, 2, b1, dnnl_f32, dnnl_ab));
            dnnl_matmul_desc_t md; CHECK(dnnl_matmul_desc_init(&md, &ad, &wd, bias ? &bd : NULL, &cd));
            dnnl_primitive_desc_t pd; CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            CHECK(dnnl_primitive_create(&q->pr, pd));
            if (!shared) {
                dnnl_memory_t from; CHECK(dnnl_memory_create(&from, &plain, eng, (void *)B));
                CHECK(dnnl_memory_create(&shared, chosen, eng, DNNL_MEMORY_ALLOCATE));
                dnnl_primitive_desc_t rpd; dnnl_primitive_t rp; dnnl_stream_t st;
                CHECK(dnnl_reorder_primitive_desc_create(&rpd, &plain, eng, chosen, eng, NULL)); CHECK(dnnl_primitive_create(&rp, rpd));
                CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
                dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, shared}};
                CHECK(dnnl_primitive_execute(rp, st, 2, ra)); CHECK(dnnl_stream_wait(st));
                dnnl_stream_destroy(st); dnnl_primitive_destroy(rp); dnnl_primitive_desc_destroy(rpd); dnnl_memory_destroy(from);
            }
            q->wr = shared; dnnl_primitive_desc_destroy(pd);
        }
        double flops = 2.0 * M * K * N; int reps = (int)fmax(5, fmin(400, 2e9 / flops));
        mode = 0; double tb = timed(reps);
        for (int t = 0; t < threads; t++) parts[t].C = C2;
        mode = 1; double td = timed(reps);
        float *C3 = malloc(sizeof(float) * M * N);
        for (int t = 0; t < threads; t++) parts[t].C = C3;
        mode = 2; double tr = timed(reps);
        double md = 0; for (size_t i = 0; i < (size_t)M * N; i++) { double d = fabs(C1[i] - C3[i]); if (d > md) md = d; }
        char nm[48]; snprintf(nm, sizeof nm, "%d,%d,%d", M, K, N);
        printf("%-16s %9.4f %9.4f %7.2f %9.4f %7.2f %8.1f %8.2g %s\n", nm, tb * 1e3, td * 1e3, td / tb, tr * 1e3, tr / tb, flops / tr * 1e-9, md, impl);
        fflush(stdout);
        for (int t = 0; t < threads; t++) { dnnl_primitive_destroy(parts[t].p); dnnl_memory_destroy(parts[t].w); if (parts[t].pr) dnnl_primitive_destroy(parts[t].pr); }
        if (shared) dnnl_memory_destroy(shared);
        free(C3); free(A); free(B); free(b); free(C1); free(C2);
    }
    atomic_store(&generation, -1);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return 0;
}
