#include "rng.h"

#include <math.h>
#include <string.h>

/*
 * The stream of one (seed, key, purpose) is fixed forever, because recipes
 * in aug.json name it and must reproduce on another machine:
 *
 *   h  = FNV-1a 64 over: seed as 8 little-endian bytes, the key's bytes,
 *        one 0x00 byte, the purpose's bytes
 *   s0..s3 = four successive splitmix64 outputs from state h
 *   draws  = xoshiro256** over s0..s3
 *
 * The 0x00 keeps ("ab", "c") and ("a", "bc") apart.
 */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= FNV_PRIME;
	}
	return h;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void rng_seed(struct rng *r, uint64_t seed, const char *key, const char *purpose)
{
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(seed >> (8 * i));
	uint64_t h = fnv1a(FNV_OFFSET, le, 8);
	if (key)
		h = fnv1a(h, key, strlen(key));
	h = fnv1a(h, "", 1);
	if (purpose)
		h = fnv1a(h, purpose, strlen(purpose));
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&h);
	r->have_normal = 0;
	r->normal = 0;
}

uint64_t rng_u64(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double rng_uniform(struct rng *r)
{
	return (double)(rng_u64(r) >> 11) * 0x1.0p-53;
}

double rng_range(struct rng *r, double lo, double hi)
{
	return lo + (hi - lo) * rng_uniform(r);
}

/* Rejection from the top of the range so every value is equally likely. */
uint64_t rng_below(struct rng *r, uint64_t n)
{
	if (n <= 1)
		return 0;
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = rng_u64(r);
	while (x >= limit);
	return x % n;
}

double rng_normal(struct rng *r)
{
	if (r->have_normal) {
		r->have_normal = 0;
		return r->normal;
	}
	/* 1 - u is in (0, 1], so the log is finite. */
	double u1 = 1.0 - rng_uniform(r);
	double u2 = rng_uniform(r);
	double rad = sqrt(-2.0 * log(u1));
	double th = 2.0 * M_PI * u2;
	r->normal = rad * sin(th);
	r->have_normal = 1;
	return rad * cos(th);
}

void rng_normal_fill(struct rng *r, float *x, long n)
{
	for (long i = 0; i < n; i++)
		x[i] = (float)rng_normal(r);
}
