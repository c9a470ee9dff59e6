/* test_rng — the seeded RNG: pinned streams (an independent Python
 * implementation of the documented hash made the constants), independence
 * of keys and purposes, ranges and moments. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rng.h"
#include "tap.h"

static void pinned(uint64_t seed, const char *key, const char *purpose, const uint64_t want[3])
{
	struct rng r;
	rng_seed(&r, seed, key, purpose);
	int bad = -1;
	uint64_t got[3];
	for (int i = 0; i < 3; i++) {
		got[i] = rng_u64(&r);
		if (got[i] != want[i] && bad < 0)
			bad = i;
	}
	if (!tap_ok(bad < 0, "stream (%llu, '%s', '%s') is the documented one",
		    (unsigned long long)seed, key, purpose))
		tap_diag("draw %d: got 0x%016llx want 0x%016llx", bad,
			 (unsigned long long)got[bad], (unsigned long long)want[bad]);
}

int main(void)
{
	static const uint64_t w1[3] = {0x871e8a0516055530ULL, 0xe6bb9a45319b8dd1ULL,
				       0xb2f4980bd58ff6c7ULL};
	static const uint64_t w2[3] = {0xcc7c8153251b9640ULL, 0xe67bf1311a93c3b8ULL,
				       0x4155054065e57f33ULL};
	pinned(42, "000017", "augment", w1);
	pinned(0, "", "", w2);

	/* Same inputs, same draws; a different key, purpose or seed, other draws. */
	struct rng a, b;
	rng_seed(&a, 7, "k1", "augment");
	rng_seed(&b, 7, "k1", "augment");
	int same = 1;
	for (int i = 0; i < 1000; i++)
		same &= rng_u64(&a) == rng_u64(&b);
	tap_ok(same, "same (seed, key, purpose) repeats");

	const char *keys[][2] = {{"k2", "augment"}, {"k1", "diffusion"}, {"k", "1augment"}};
	for (size_t k = 0; k < 3; k++) {
		rng_seed(&a, 7, "k1", "augment");
		rng_seed(&b, 7, keys[k][0], keys[k][1]);
		int eq = 0;
		for (int i = 0; i < 100; i++)
			eq += rng_u64(&a) == rng_u64(&b);
		tap_ok(eq == 0, "('%s','%s') differs from ('k1','augment'): %d equal draws",
		       keys[k][0], keys[k][1], eq);
	}
	rng_seed(&a, 7, "k1", "augment");
	rng_seed(&b, 8, "k1", "augment");
	tap_ok(rng_u64(&a) != rng_u64(&b), "seed changes the stream");

	/* Uniform: range and mean; rng_range; rng_below covers [0, n) evenly. */
	rng_seed(&a, 1, "u", "test");
	double sum = 0, lo = 1, hi = 0;
	int n = 200000;
	for (int i = 0; i < n; i++) {
		double u = rng_uniform(&a);
		sum += u;
		lo = u < lo ? u : lo;
		hi = u > hi ? u : hi;
	}
	tap_ok(lo >= 0 && hi < 1, "uniform in [0,1): min %g max %g", lo, hi);
	tap_ok(fabs(sum / n - 0.5) < 0.005, "uniform mean %g near 0.5", sum / n);
	int inrange = 1;
	for (int i = 0; i < 10000; i++) {
		double v = rng_range(&a, -3, 5);
		inrange &= v >= -3 && v < 5;
	}
	tap_ok(inrange, "rng_range stays in [-3, 5)");
	long counts[7] = {0};
	int below_ok = 1;
	for (int i = 0; i < 70000; i++) {
		uint64_t v = rng_below(&a, 7);
		if (v >= 7)
			below_ok = 0;
		else
			counts[v]++;
	}
	long cmin = counts[0], cmax = counts[0];
	for (int i = 1; i < 7; i++) {
		cmin = counts[i] < cmin ? counts[i] : cmin;
		cmax = counts[i] > cmax ? counts[i] : cmax;
	}
	tap_ok(below_ok && cmin > 9500 && cmax < 10500, "rng_below(7): counts %ld..%ld of 10000",
	       cmin, cmax);
	tap_ok(rng_below(&a, 1) == 0 && rng_below(&a, 0) == 0, "rng_below(1) and (0) give 0");

	/* Normals: moments, and fill equals repeated rng_normal. */
	rng_seed(&a, 3, "n", "test");
	double m1 = 0, m2 = 0, m4 = 0;
	for (int i = 0; i < n; i++) {
		double x = rng_normal(&a);
		m1 += x;
		m2 += x * x;
		m4 += x * x * x * x;
	}
	m1 /= n, m2 /= n, m4 /= n;
	tap_ok(fabs(m1) < 0.01 && fabs(m2 - 1) < 0.015 && fabs(m4 - 3) < 0.1,
	       "normal moments: mean %.4f var %.4f m4 %.3f", m1, m2, m4);
	float fx[101];
	rng_seed(&a, 3, "n", "fill");
	rng_seed(&b, 3, "n", "fill");
	rng_normal_fill(&a, fx, 101);
	int fill_same = 1;
	for (int i = 0; i < 101; i++)
		fill_same &= fx[i] == (float)rng_normal(&b);
	tap_ok(fill_same, "rng_normal_fill matches rng_normal draw by draw");
	return tap_done();
}
