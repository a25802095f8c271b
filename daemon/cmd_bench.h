/*
 * cmd_bench: `gastroscreen bench [--json] [--threads N] [--repeat N] [--quick]
 * [--model BUNDLE]`, the performance figures of DESIGN.md §8 for this machine, in one run.
 *
 * Prints the machine (CPU, threads used, oneDNN version and ISA), then:
 *  - for each decoder deformable-conv shape (network-architecture.md §3.3), our primitive vs
 *    a dense oneDNN 3x3 conv of the same shape: median times, their ratio (target <= 1.5) and
 *    both GFLOP/s;
 *  - the dense-conv FLOP rate reference: the median over the distinct stride-1 3x3 conv shapes
 *    of the multi-task network (7 decoder + 3 encoder/head shapes, batch 1) of the GFLOP/s
 *    oneDNN reaches running them as dense convs;
 *  - with --model: the multi-task network's tiles/s and GFLOP/s at batch 1 and 4 on 512x512
 *    tiles (FLOPs counted from the bundle's layer shapes), their fraction of that reference
 *    (target >= 0.70), also against the same reference convs re-timed interleaved with the
 *    network (so a change of machine load between sections does not skew the fraction), and
 *    the small networks' times. Without --model the section is skipped
 *    (a bundle cannot be made from C; model/pytorch/make_bundle.py makes a seeded one).
 * Medians over --repeat timed rounds after warm-up rounds; the variants being compared run
 * interleaved (A B A B ...) so machine noise hits them alike. --json prints one JSON object
 * with every figure instead (tests/bench/torch_side.py reads it). --quick runs one decoder
 * shape only (and batch 1 only for the network), for smoke tests.
 */
#ifndef GS_DAEMON_CMD_BENCH_H
#define GS_DAEMON_CMD_BENCH_H

/* Runs the command on argv (argv[0] is "bench"). Returns the process exit status: 0 on
 * success, 1 when a measurement failed (message on stderr), 2 on a usage error. */
int gs_cmd_bench(int argc, char **argv);

#endif
