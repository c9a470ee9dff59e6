/* test_stats — McNemar's exact p against binomial sums worked out by hand
 * and against a naive summation, the type-7 quantile against hand values,
 * and the bootstrap draws. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "stats.h"
#include "tap.h"

/* 2 P(X <= min(b, c)), X ~ Bin(b + c, 1/2), summed term by term from
 * 2^-m with the ratio C(m, i+1)/C(m, i) = (m - i)/(i + 1); only for
 * m <= 1000, where 2^-m is still a normal double. */
static double mcnemar_naive(long b, long c)
{
	long m = b + c, k = b < c ? b : c;
	double term = pow(0.5, (double)m), sum = 0;
	for (long i = 0; i <= k; i++) {
		sum += term;
		term *= (double)(m - i) / (double)(i + 1);
	}
	return 2 * sum < 1 ? 2 * sum : 1;
}

static void test_mcnemar(void)
{
	/*
	 * By hand (m = lost + gained, k = the smaller):
	 *   2, 8:  m 10, C(10,0..2) = 1 + 10 + 45 = 56;  2·56/1024 = 0.109375
	 *   6, 15: m 21, C(21,0..6) = 1+21+210+1330+5985+20349+54264 = 82160;
	 *          2·82160/2^21 = 0.0783538818359375
	 *   47, 0: 2·2^-47 = 2^-46 = 1.4210854715202004e-14
	 *   0, 3:  2/8 = 0.25
	 *   15, 14 and 5, 5: more than half the mass, capped at 1
	 *   0, 0:  nothing changed: 1
	 * and, past where 2^-m underflows, exact rational sums (Python's
	 * fractions and math.comb):
	 *   120, 160:   0.01960672729028148
	 *   1500, 1620: 0.033118547219138525
	 */
	static const struct {
		long lost, gained;
		double p;
	} cases[] = {
		{ 2, 8, 0.109375 }, { 8, 2, 0.109375 }, { 6, 15, 0.0783538818359375 },
		{ 47, 0, 1.4210854715202004e-14 }, { 0, 3, 0.25 }, { 15, 14, 1 }, { 5, 5, 1 },
		{ 0, 0, 1 }, { 120, 160, 0.01960672729028148 }, { 1500, 1620, 0.033118547219138525 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double got = stats_mcnemar_p(cases[i].lost, cases[i].gained);
		double rel = fabs(got - cases[i].p) / cases[i].p;
		if (!tap_ok(rel < 1e-9, "McNemar p(%ld lost, %ld gained) = %.17g", cases[i].lost, cases[i].gained,
			    cases[i].p))
			tap_diag("got %.17g (relative error %.3g)", got, rel);
	}
	double worst = 0;
	long wb = 0, wc = 0;
	for (long b = 0; b <= 500; b += 7)
		for (long c = 0; c <= 500; c += 11) {
			double want = mcnemar_naive(b, c), got = stats_mcnemar_p(b, c);
			double rel = want > 1e-290 ? fabs(got - want) / want : fabs(got - want);
			if (rel > worst)
				worst = rel, wb = b, wc = c;
		}
	if (!tap_ok(worst < 1e-9, "McNemar p against the naive sum on a grid up to 1000 discordant pairs"))
		tap_diag("worst at (%ld, %ld): relative error %.3g", wb, wc, worst);
}

static void test_quantile(void)
{
	double x[] = { 4, 1, 3, 2 };
	stats_sort(x, 4);
	tap_ok(x[0] == 1 && x[3] == 4, "sort ascending");
	/* type 7: h = (n - 1) q; 0.25 → h 0.75 → 1 + 0.75 (2 − 1) */
	double q25 = stats_quantile(x, 4, 0.25), q50 = stats_quantile(x, 4, 0.5);
	double q0 = stats_quantile(x, 4, 0), q1 = stats_quantile(x, 4, 1);
	double q975 = stats_quantile(x, 4, 0.975); /* h 2.925 → 3.925 */
	if (!tap_ok(q25 == 1.75 && q50 == 2.5 && q0 == 1 && q1 == 4 && fabs(q975 - 3.925) < 1e-12,
		    "type-7 quantiles of {1,2,3,4}: 1.75, 2.5, 1, 4, 3.925"))
		tap_diag("got %g %g %g %g %.17g", q25, q50, q0, q1, q975);
	double one = 7;
	tap_ok(stats_quantile(&one, 1, 0.025) == 7 && stats_quantile(&one, 1, 0.975) == 7,
	       "one value is every quantile");
}

static void test_boot(void)
{
	struct rng a, b;
	double ca[50], cb[50];
	long want[50] = { 0 };
	rng_seed(&a, 3, "compare", "bootstrap");
	rng_seed(&b, 3, "compare", "bootstrap");
	stats_boot_counts(&a, 50, ca);
	/* The documented draws: 50 rng_below(50) in order. */
	for (int i = 0; i < 50; i++)
		want[rng_below(&b, 50)]++;
	int same = 1;
	double sum = 0;
	for (int i = 0; i < 50; i++) {
		same &= ca[i] == (double)want[i];
		sum += ca[i];
	}
	tap_ok(same && sum == 50, "bootstrap counts: N draws of rng_below(N), summing to N");
	stats_boot_counts(&a, 50, cb);
	tap_ok(memcmp(ca, cb, sizeof(ca)) != 0, "successive draws differ");
}

int main(void)
{
	test_mcnemar();
	test_quantile();
	test_boot();
	return tap_done();
}
