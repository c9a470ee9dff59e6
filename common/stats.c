#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

double stats_mcnemar_p(long lost, long gained)
{
	long m = lost + gained, k = lost < gained ? lost : gained;
	if (m == 0)
		return 1.0;
	/* In logs: 2^-m underflows past m = 1074, and C(m, i) overflows. */
	double lm = lgamma((double)m + 1) - (double)m * log(2.0), p = 0;
	for (long i = 0; i <= k; i++)
		p += exp(lm - lgamma((double)i + 1) - lgamma((double)(m - i) + 1));
	p *= 2;
	return p < 1 ? p : 1.0;
}

void stats_boot_counts(struct rng *r, long n, double *count)
{
	memset(count, 0, (size_t)n * sizeof(*count));
	for (long i = 0; i < n; i++)
		count[rng_below(r, (uint64_t)n)] += 1;
}

double stats_quantile(const double *sorted, long n, double q)
{
	if (n <= 0)
		return NAN;
	double h = (double)(n - 1) * q;
	long lo = (long)floor(h);
	if (lo >= n - 1)
		return sorted[n - 1];
	return sorted[lo] + (h - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

void stats_sort(double *x, long n)
{
	qsort(x, (size_t)n, sizeof(*x), cmp_double);
}
