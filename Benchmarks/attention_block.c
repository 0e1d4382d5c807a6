// FusedAttention's AVX-512 block kernel (Sources/CDNNL/attention.h) on attention shapes, over
// (batch, head, block of 48 query rows) tasks as FusedAttention splits them, on 1 or 2 threads;
// checked against a float64 reference. Q, K, V packed as one [B, T, 3·H·D] product (qkv_heads).
//   cc -O2 -o attention_block Benchmarks/attention_block.c -I Sources/CDNNL -lpthread -lm
//   [PACK=1] ./attention_block [threads] [B,H,T,D ...]   (PACK: K and V copied per (batch, head))     (default: BERT-Mini, BERT-Tiny, ViT at b1 and b32)
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "attention.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { long B, H, T, D, t0, t1; const float *x; float *y; float alpha; } Job;
enum { ROWS = 48 };

static int pack = 0;

static void *run(void *arg) {
    Job *j = arg;
    long T = j->T, H = j->H, D = j->D, lanes = (ROWS + 15) & ~15L, blocks = (T + ROWS - 1) / ROWS, s = 3 * H * D;
    float *qt = aligned_alloc(64, D * lanes * 4 + 64), *st = calloc(T * lanes + 8, 4), *inv = calloc(lanes + 8, 4);
    float *kb = aligned_alloc(64, T * D * 4 + 64), *vb = aligned_alloc(64, T * D * 4 + 64);
    long lengths[ROWS], packedFor = -1;
    for (long task = j->t0; task < j->t1; task++) {
        long block = task % blocks, head = (task / blocks) % H, n = task / (blocks * H);
        long i0 = block * ROWS, rows = T - i0 < ROWS ? T - i0 : ROWS;
        for (int r = 0; r < rows; r++) lengths[r] = T;
        const float *q = j->x + (n * T + i0) * s + head * D, *k = j->x + n * T * s + H * D + head * D, *v = j->x + n * T * s + 2 * H * D + head * D;
        long ks = s;
        if (pack) {
            if (packedFor != n * H + head) {
                for (long t = 0; t < T; t++) { memcpy(kb + t * D, k + t * s, D * 4); memcpy(vb + t * D, v + t * s, D * 4); }
                packedFor = n * H + head;
            }
            k = kb; v = vb; ks = D;
        }
        ot_attention_block(q, s, k, ks, v, ks, j->y + ((n * T + i0) * H + head) * D, H * D, NULL, 0, 0, rows, D, D, j->alpha, lengths, T, qt, st, inv);
    }
    free(qt); free(st); free(inv); free(kb); free(vb);
    return NULL;
}

static double attend(int threads, long B, long H, long T, long D, const float *x, float *y) {
    long tasks = B * H * ((T + ROWS - 1) / ROWS);
    Job jobs[8];
    pthread_t th[8];
    double t = now();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (Job){B, H, T, D, tasks * i / threads, tasks * (i + 1) / threads, x, y, 1.f / sqrtf((float)D)};
        if (i) pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    run(&jobs[0]);
    for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
    return now() - t;
}

int main(int argc, char **argv) {
    if (!ot_attention_avx512()) { fprintf(stderr, "no AVX-512F\n"); return 1; }
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (getenv("PACK")) pack = atoi(getenv("PACK"));
    const char *defaults[] = {"1,4,128,64", "32,4,128,64", "1,2,128,64", "32,2,128,64", "1,3,197,64", "32,3,197,64"};
    int count = argc > 2 ? argc - 2 : 6;
    for (int c = 0; c < count; c++) {
        long B, H, T, D;
        sscanf(argc > 2 ? argv[c + 2] : defaults[c], "%ld,%ld,%ld,%ld", &B, &H, &T, &D);
        long n = B * T * 3 * H * D;
        float *x = malloc(n * 4), *y = malloc(B * T * H * D * 4);
        srand(1);
        for (long i = 0; i < n; i++) x[i] = (float)rand() / RAND_MAX * 2 - 1;
        attend(threads, B, H, T, D, x, y);
        // float64 reference on a few (batch, head, row)s.
        double worst = 0;
        long s = 3 * H * D;
        for (int probe = 0; probe < 16; probe++) {
            long b = rand() % B, h = rand() % H, i = rand() % T;
            double sc[1024], top = -1e300, sum = 0;
            for (long jj = 0; jj < T; jj++) {
                double a = 0;
                for (long p = 0; p < D; p++) a += (double)x[(b * T + i) * s + h * D + p] * x[(b * T + jj) * s + H * D + h * D + p];
                sc[jj] = a / sqrt((double)D);
                top = sc[jj] > top ? sc[jj] : top;
            }
            for (long jj = 0; jj < T; jj++) { sc[jj] = exp(sc[jj] - top); sum += sc[jj]; }
            for (long c2 = 0; c2 < D; c2++) {
                double a = 0;
                for (long jj = 0; jj < T; jj++) a += sc[jj] * x[(b * T + jj) * s + 2 * H * D + h * D + c2];
                double e = fabs(a / sum - y[((b * T + i) * H + h) * D + c2]);
                worst = e > worst ? e : worst;
            }
        }
        double best = 1e9, times[64];
        int reps = B > 4 ? 15 : 200;
        for (int r = 0; r < reps; r++) { times[r % 64] = attend(threads, B, H, T, D, x, y); best = times[r % 64] < best ? times[r % 64] : best; }
        double flops = 4.0 * B * H * T * T * D;
        printf("B=%ld H=%ld T=%ld D=%ld threads=%d: min %.3f ms, %.1f GFLOP/s, max abs err %.2e\n", B, H, T, D, threads, best * 1e3,
               flops / best * 1e-9, worst);
        free(x); free(y);
    }
    return 0;
}
