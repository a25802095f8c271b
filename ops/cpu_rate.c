#include "ops/cpu_rate.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "ops/dnnl_reorder.h"

#if defined(__x86_64__)

/* Twelve independent accumulators (more than latency x ports on any current core), so the
 * loop measures throughput; every register zeroed first, in the same asm, so no denormal or
 * NaN left by other code slows either instruction down. */
#define ZERO_ACC                                                                                   \
    "vpxord %%zmm0, %%zmm0, %%zmm0\n\tvpxord %%zmm1, %%zmm1, %%zmm1\n\t"                           \
    "vpxord %%zmm2, %%zmm2, %%zmm2\n\tvpxord %%zmm3, %%zmm3, %%zmm3\n\t"                           \
    "vpxord %%zmm4, %%zmm4, %%zmm4\n\tvpxord %%zmm5, %%zmm5, %%zmm5\n\t"                           \
    "vpxord %%zmm6, %%zmm6, %%zmm6\n\tvpxord %%zmm7, %%zmm7, %%zmm7\n\t"                           \
    "vpxord %%zmm8, %%zmm8, %%zmm8\n\tvpxord %%zmm9, %%zmm9, %%zmm9\n\t"                           \
    "vpxord %%zmm10, %%zmm10, %%zmm10\n\tvpxord %%zmm11, %%zmm11, %%zmm11\n\t"                     \
    "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31\n\t"
#define TWELVE(op)                                                                                 \
    op " %%zmm30, %%zmm31, %%zmm0\n\t" op " %%zmm30, %%zmm31, %%zmm1\n\t" op                       \
       " %%zmm30, %%zmm31, %%zmm2\n\t" op " %%zmm30, %%zmm31, %%zmm3\n\t" op                       \
       " %%zmm30, %%zmm31, %%zmm4\n\t" op " %%zmm30, %%zmm31, %%zmm5\n\t" op                       \
       " %%zmm30, %%zmm31, %%zmm6\n\t" op " %%zmm30, %%zmm31, %%zmm7\n\t" op                       \
       " %%zmm30, %%zmm31, %%zmm8\n\t" op " %%zmm30, %%zmm31, %%zmm9\n\t" op                       \
       " %%zmm30, %%zmm31, %%zmm10\n\t" op " %%zmm30, %%zmm31, %%zmm11\n\t"
#define CLOBBERS                                                                                   \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",       \
        "xmm11", "xmm30", "xmm31", "cc"

enum { ROUNDS = 2048, TRIALS = 9 };

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* time_NAME(): ns for ROUNDS x 12 instructions OP. */
#define TIMER(name, isa, op)                                                                       \
    __attribute__((target(isa))) static double time_##name(void)                                   \
    {                                                                                              \
        long n = ROUNDS;                                                                           \
        double t0 = now_ns();                                                                      \
        __asm__ volatile(ZERO_ACC "1:\n\t" TWELVE(op) "dec %0\n\tjnz 1b\n\t" : "+r"(n)::CLOBBERS); \
        return now_ns() - t0;                                                                      \
    }
TIMER(bf16, "avx512f,avx512bf16", "vdpbf16ps")
TIMER(fp32, "avx512f", "vfmadd231ps")

static double measure(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16"))
        return 0.0;
    /* Interleaved, best of TRIALS: a preemption or a busy sibling thread lengthens single
     * trials, never shortens them. The first trial of each also warms the 512-bit units. */
    double best_b = 0.0, best_f = 0.0;
    for (int t = 0; t < TRIALS; t++) {
        double b = time_bf16();
        double f = time_fp32();
        if (t == 0 || b < best_b)
            best_b = b;
        if (t == 0 || f < best_f)
            best_f = f;
    }
    __asm__ volatile("vzeroupper" ::: "memory");
    if (!(best_b > 0.0) || !(best_f > 0.0))
        return 0.0;
    /* vdpbf16ps does 32 multiply-adds per instruction, vfmadd231ps 16. */
    return (32.0 / best_b) / (16.0 / best_f);
}

#else

static double measure(void)
{
    return 0.0;
}

#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static double rate;

static void measure_once(void)
{
    rate = measure();
}

double gs_cpu_bf16_rate(void)
{
    pthread_once(&once, measure_once);
    return rate;
}

int gs_bf16_pays(void)
{
    if (gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_amx))
        return 1;
    return gs_bf16_native() && gs_cpu_bf16_rate() >= GS_BF16_PAYS_RATE;
}
