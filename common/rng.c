#include "rng.h"

#include <math.h>
#include <pthread.h>
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

/*
 * Marsaglia and Tsang's ziggurat (2000) with 128 layers: one 64-bit draw
 * per value in 98.8% of cases, exp/log only at the layer edges and in the
 * tail. The layer index and the value take different bits of the draw
 * (Doornik 2005: sharing them biases the original). Diffusion noise is
 * hundreds of thousands of values per image; Box-Muller's log and sincos
 * made it the slowest step of seva-augment.
 */
#define ZIG_R 3.442619855899
static uint32_t zig_k[128];
static double zig_w[128], zig_f[128];

static void zig_tables(void)
{
	const double m1 = 2147483648.0, vn = 9.91256303526217e-3;
	double dn = ZIG_R, tn = dn, q = vn / exp(-0.5 * dn * dn);
	zig_k[0] = (uint32_t)((dn / q) * m1);
	zig_k[1] = 0;
	zig_w[0] = q / m1;
	zig_w[127] = dn / m1;
	zig_f[0] = 1.0;
	zig_f[127] = exp(-0.5 * dn * dn);
	for (int i = 126; i >= 1; i--) {
		dn = sqrt(-2.0 * log(vn / dn + exp(-0.5 * dn * dn)));
		zig_k[i + 1] = (uint32_t)((dn / tn) * m1);
		tn = dn;
		zig_f[i] = exp(-0.5 * dn * dn);
		zig_w[i] = dn / m1;
	}
}

static double zig_normal(struct rng *r)
{
	for (;;) {
		uint64_t u = rng_u64(r);
		int iz = (int)(u & 127);
		int32_t hz = (int32_t)(uint32_t)(u >> 32);
		uint32_t ahz = hz < 0 ? (uint32_t)(-(int64_t)hz) : (uint32_t)hz;
		double x = hz * zig_w[iz];
		if (ahz < zig_k[iz])
			return x;
		if (iz == 0) {
			/* The tail beyond R (Marsaglia 1964). */
			double y;
			do {
				x = -log(1.0 - rng_uniform(r)) / ZIG_R;
				y = -log(1.0 - rng_uniform(r));
			} while (y + y < x * x);
			return hz > 0 ? ZIG_R + x : -ZIG_R - x;
		}
		if (zig_f[iz] + rng_uniform(r) * (zig_f[iz - 1] - zig_f[iz]) < exp(-0.5 * x * x))
			return x;
	}
}

void rng_normal_fill(struct rng *r, float *x, long n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, zig_tables);
	for (long i = 0; i < n; i++)
		x[i] = (float)zig_normal(r);
}
