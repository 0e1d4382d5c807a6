// A/B of products whose operands are not constants (training's forward and backward, attention):
//   blas   single-threaded cblas_sgemm calls, one per thread on its block of C as BLAS.split makes
//          them (column blocks of 16 where n >= m, else row blocks of 8; a batch split by entry)
//   dnnl   dnnl_sgemm (no prepack) on the same blocks, single-threaded (OMP_NUM_THREADS=1)
//   cc -O2 -o dnnl_sgemm Benchmarks/dnnl_sgemm.c -lopenblas -ldnnl -lpthread -lm
//   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ./dnnl_sgemm [threads]
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#define MAXT 8
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef struct { char ta, tb; int M, N, K, i0, i1, j0, j1, batch; const float *A, *B; float *C; } Part;
static Part parts[MAXT];
static int threads = 2, mode = 0;
static atomic_int generation, done;
static void run_part(Part *q) {
    int lda = q->ta == 'T' ? q->M : q->K, ldb = q->tb == 'T' ? q->K : q->N;
    for (int b = 0; b < q->batch; b++) {
        const float *A = q->A + (size_t)b * q->M * q->K, *B = q->B + (size_t)b * q->K * q->N;
        float *C = q->C + (size_t)b * q->M * q->N;
        if (q->batch > 1) {  // batched: whole products split by batch entry
            if (b < q->i0 || b >= q->i1) continue;
            if (mode) dnnl_sgemm(q->ta, q->tb, q->M, q->N, q->K, 1.f, A, lda, B, ldb, 0.f, C, q->N);
            else cblas_sgemm(CblasRowMajor, q->ta == 'T' ? CblasTrans : CblasNoTrans, q->tb == 'T' ? CblasTrans : CblasNoTrans,
                             q->M, q->N, q->K, 1.f, A, lda, B, ldb, 0.f, C, q->N);
            continue;
        }
        int m = q->i1 - q->i0, n = q->j1 - q->j0; if (m <= 0 || n <= 0) return;
        const float *Ap = q->ta == 'T' ? A + q->i0 : A + (size_t)q->i0 * q->K;
        const float *Bp = q->tb == 'T' ? B + (size_t)q->j0 * q->K : B + q->j0;
        if (mode) dnnl_sgemm(q->ta, q->tb, m, n, q->K, 1.f, Ap, lda, Bp, ldb, 0.f, C + (size_t)q->i0 * q->N + q->j0, q->N);
        else cblas_sgemm(CblasRowMajor, q->ta == 'T' ? CblasTrans : CblasNoTrans, q->tb == 'T' ? CblasTrans : CblasNoTrans,
                         m, n, q->K, 1.f, Ap, lda, Bp, ldb, 0.f, C + (size_t)q->i0 * q->N + q->j0, q->N);
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
    // ta, tb, M, N, K, batch: ViT-Tiny training at batch 8 (M 1576 = 197·8): forward NN, input
    // gradient NT, weight gradient TN; attention per head (24 = 8·3) QKᵀ NT and PV NN; BERT (M 1024).
    struct { char ta, tb; int M, N, K, batch; } shapes[] = {
        {'N','N',1576,576,192,1},{'N','N',1576,192,192,1},{'N','N',1576,768,192,1},{'N','N',1576,192,768,1},
        {'N','T',1576,192,576,1},{'N','T',1576,192,192,1},{'N','T',1576,192,768,1},{'N','T',1576,768,192,1},
        {'T','N',192,576,1576,1},{'T','N',192,192,1576,1},{'T','N',192,768,1576,1},{'T','N',768,192,1576,1},
        {'N','T',197,197,64,24},{'N','N',197,64,197,24},{'T','N',197,64,197,24},{'N','T',197,197,64,1},
        {'N','N',1024,256,256,1},{'N','N',1024,1024,256,1},{'N','T',1024,256,1024,1},{'T','N',256,1024,1024,1},
    };
    int ns = sizeof shapes / sizeof shapes[0];
    pthread_t tid[MAXT];
    for (int t = 1; t < threads; t++) pthread_create(&tid[t], NULL, worker, (void *)(long)t);
    printf("%d threads\n%-22s %9s %9s %7s %8s %8s %8s\n", threads, "shape", "blas ms", "dnnl ms", "ratio", "blasGF", "dnnlGF", "maxdiff");
    for (int s = 0; s < ns; s++) {
        char ta = shapes[s].ta, tb = shapes[s].tb; int M = shapes[s].M, N = shapes[s].N, K = shapes[s].K, batch = shapes[s].batch;
        size_t sa = (size_t)M * K * batch, sb = (size_t)K * N * batch, sc = (size_t)M * N * batch;
        float *A = malloc(4 * sa), *B = malloc(4 * sb), *C1 = malloc(4 * sc), *C2 = malloc(4 * sc);
        fill(A, sa); fill(B, sb);
        double flops = 2.0 * M * N * K * batch; int reps = (int)fmax(5, fmin(300, 3e9 / flops));
        for (int t = 0; t < threads; t++) {
            Part *q = &parts[t];
            *q = (Part){ta, tb, M, N, K, 0, M, 0, N, batch, A, B, C2};
            if (batch > 1) { q->i0 = batch * t / threads; q->i1 = batch * (t + 1) / threads; }
            else if (N < M) { int rb = (M + 7) / 8; q->i0 = rb * t / threads * 8; q->i1 = rb * (t + 1) / threads * 8; if (q->i1 > M) q->i1 = M; }
            else { int cb = (N + 15) / 16; q->j0 = cb * t / threads * 16; q->j1 = cb * (t + 1) / threads * 16; if (q->j1 > N) q->j1 = N; }
        }
        for (int t = 0; t < threads; t++) parts[t].C = C1;
        mode = 0; double tb_ = timed(reps);
        for (int t = 0; t < threads; t++) parts[t].C = C2;
        mode = 1; double td = timed(reps);
        double md = 0; for (size_t i = 0; i < sc; i++) { double d = fabs(C1[i] - C2[i]); if (d > md) md = d; }
        char nm[48]; snprintf(nm, sizeof nm, "%c%c %d,%d,%d x%d", ta, tb, M, N, K, batch);
        printf("%-22s %9.4f %9.4f %7.2f %8.1f %8.1f %8.2g\n", nm, tb_ * 1e3, td * 1e3, td / tb_, flops / tb_ * 1e-9, flops / td * 1e-9, md);
        fflush(stdout);
        free(A); free(B); free(C1); free(C2);
    }
    atomic_store(&generation, -1);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return 0;
}
