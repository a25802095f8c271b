/*
 * cpu_rate: whether bf16 arithmetic pays on this CPU, measured rather than assumed.
 *
 * A CPU that has the AVX512-BF16 instructions does not always run them fast. Without AMX, an
 * Intel Xeon of the Sapphire/Emerald Rapids generation issued vdpbf16ps (32 multiply-adds) a
 * quarter as often as vfmadd231ps (16 each) in a throughput loop: bf16 at half the fp32 rate,
 * and oneDNN's bf16 network took 372 ms per tile there against 201 ms in fp32. On an AMD EPYC
 * (no AMX either) an earlier session measured the bf16 network at about half the fp32 time
 * (the instruction rates were not measured there). The ISA bits cannot tell the two apart, so
 * gs_cpu_bf16_rate() times both instructions once per process (0.19-0.20 ms on that Xeon;
 * interleaved, best of nine) and gs_bf16_pays() decides from that.
 *
 * Use gs_bf16_pays() wherever the code chooses bf16 on its own (the layers int8 does not
 * quantise, the fallback of an int8 run); a bf16 run asked for explicitly still runs bf16.
 */
#ifndef GS_OPS_CPU_RATE_H
#define GS_OPS_CPU_RATE_H

/* bf16 multiply-adds per second of 512-bit vdpbf16ps over fp32 ones of vfmadd231ps on one
 * core, measured at the first call (thread-safe; later calls return the same value): 0.47-0.50
 * on that Xeon. 0 when the CPU lacks AVX512-BF16. */
double gs_cpu_bf16_rate(void);

/* The least gs_cpu_bf16_rate() at which bf16 is taken to pay without AMX: 1.5, a margin
 * above 1 chosen between the two machines seen (bf16 twice as slow as fp32, and about twice
 * as fast); fp32 also runs its large 3x3 convs as Winograd, which bf16 cannot. */
#define GS_BF16_PAYS_RATE 1.5

/* 1 if bf16 is expected to run faster than fp32 here: oneDNN's effective ISA has AMX, or it
 * has avx512_core_bf16 and gs_cpu_bf16_rate() >= GS_BF16_PAYS_RATE. Else 0 (also when
 * ONEDNN_MAX_CPU_ISA caps oneDNN below bf16). */
int gs_bf16_pays(void);

#endif
