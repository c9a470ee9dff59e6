/* rng — seeded randomness whose draws for a sample depend only on
 * (run seed, key, purpose), never on stream order or sharding (DESIGN sec. 2).
 * xoshiro256** seeded through splitmix64 over a hash of the three:
 * h = FNV-1a 64 of (seed as 8 little-endian bytes, key, 0x00, purpose);
 * the state is four successive splitmix64(h) outputs. Fixed forever: recipes
 * in aug.json name (seed, key, purpose) and must replay anywhere. */
#ifndef SEVA_RNG_H
#define SEVA_RNG_H

#include <stdint.h>

struct rng {
	uint64_t s[4];
	int have_normal;
	double normal;
};

/* PURPOSE separates streams of one sample ("augment", "sample", "negative"). */
void rng_seed(struct rng *r, uint64_t seed, const char *key, const char *purpose);
uint64_t rng_u64(struct rng *r);
/* Uniform in [0, 1) with 53 bits. */
double rng_uniform(struct rng *r);
/* Uniform in [lo, hi). */
double rng_range(struct rng *r, double lo, double hi);
/* Uniform integer in [0, n). */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Standard normal (Box–Muller, caches the second draw). */
double rng_normal(struct rng *r);
/* Fills N floats with standard normals by the ziggurat (Marsaglia-Tsang,
 * 128 layers; layer from the low 7 bits of a draw, value from the high 32):
 * several times faster than rng_normal, and a different sequence. The
 * diffusion noise of aug.json is defined by this function. */
void rng_normal_fill(struct rng *r, float *x, long n);

#endif
