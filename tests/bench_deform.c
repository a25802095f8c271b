/*
 * bench_deform: kept for tests/deform.cmake's `bench_deform` target. The measurement code that
 * used to live here (dense oneDNN reference, interleaved medians) is now daemon/bench.{h,c},
 * and the full comparison is `gastroscreen bench`; this program runs that command, so
 * `bench_deform [--json] [--threads N] [--repeat N] [--quick]` prints the same figures.
 * Not a test: timings depend on the machine and its load.
 */
#include "daemon/cmd_bench.h"

int main(int argc, char **argv)
{
    char *args[64];
    int n = 0;
    args[n++] = "bench";
    for (int i = 1; i < argc && n < 63; i++)
        args[n++] = argv[i];
    args[n] = 0;
    return gs_cmd_bench(n, args);
}
