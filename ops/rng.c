#include "ops/rng.h"

uint64_t gs_rng_next(uint64_t *state)
{
    /* splitmix64 (Steele, Lea, Flood 2014): passes BigCrush, one add and two multiplies. */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double gs_rng_unit(uint64_t *state)
{
    return (double)(gs_rng_next(state) >> 11) / 9007199254740992.0;
}
