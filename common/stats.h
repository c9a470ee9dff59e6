/* stats — the two tests a paired comparison of runs needs: McNemar's exact
 * test for a binary outcome scored twice on the same items, and the
 * resampling draws and percentiles of a bootstrap. Numerics only; what is
 * resampled (images, runs) is the caller's (common/compare.c). */
#ifndef SEVA_STATS_H
#define SEVA_STATS_H

#include <stdint.h>

struct rng;

/* McNemar's exact two-sided p for LOST items right before and wrong after
 * and GAINED the other way: 2 P(X <= min) for X ~ Binomial(LOST + GAINED,
 * 1/2), capped at 1; 1 when nothing changed. */
double stats_mcnemar_p(long lost, long gained);

/* One bootstrap draw of N units with replacement: COUNT[i] (N) becomes how
 * often unit i was drawn; N draws of rng_below(N), in order. */
void stats_boot_counts(struct rng *r, long n, double *count);

/* The Q-quantile (0 <= Q <= 1) of SORTED (N ascending values), linearly
 * interpolated between order statistics (R's type 7, numpy's default). */
double stats_quantile(const double *sorted, long n, double q);

/* Sorts X (N) ascending in place. */
void stats_sort(double *x, long n);

#endif
