/*
 * rng: the one small pseudo-random generator of the project (splitmix64), for draws that a
 * seed must fix exactly: bootstrap resamples, dataset sampling, randomised unit tests.
 *
 * The state is a caller-owned uint64_t set to the seed; every call advances it. Not for
 * anything secret (keys and tokens come from the OS's random source).
 */
#ifndef GS_OPS_RNG_H
#define GS_OPS_RNG_H

#include <stdint.h>

/* The next 64 random bits; advances *state. */
uint64_t gs_rng_next(uint64_t *state);

/* A double uniform in [0, 1) from the top 53 bits of gs_rng_next. */
double gs_rng_unit(uint64_t *state);

#endif
