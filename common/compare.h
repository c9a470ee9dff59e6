/* compare — runs scored on the same samples (common/eval.c), paired sample
 * by sample: each rate metric's difference AFTER − BEFORE with an interval
 * from a paired bootstrap over images, and McNemar's exact p for the binary
 * ones. Several AFTER runs (training seeds) are pooled: "after" is their
 * mean, and the bootstrap draws the runs as well as the images. */
#ifndef SEVA_COMPARE_H
#define SEVA_COMPARE_H

#include <stdint.h>

struct cJSON;
struct buf;
struct eval;

struct compare_opts {
	long resamples; /* bootstrap replicates, >= 1 */
	uint64_t seed;
	double level; /* of the intervals, e.g. 0.95 */
};

/*
 * Compares BEFORE with AFTER[0..NAFTER-1]; NAMES[0] names BEFORE and
 * NAMES[1 + i] AFTER[i] in messages. Every run must hold the same sample
 * keys, each once, with the same image, task and truth (POPE split and
 * label, number of objects); else NULL with a message naming the run and
 * the first key that differs.
 *
 * The images (score.image) are the units. Each of O->resamples replicates
 * draws as many images as there are, with replacement (stats_boot_counts,
 * images in strcmp order), every sample of a drawn image counting once per
 * draw on every side; with NAFTER > 1 it then draws NAFTER runs with
 * replacement (rng_below(NAFTER) each). A replicate's value of a metric is
 * the metric of the weighted tally; "after" is the mean over the runs drawn.
 * One rng stream: rng_seed(seed, "compare", "bootstrap"). Intervals are the
 * (1 − level)/2 and (1 + level)/2 quantiles of the replicates (type 7).
 *
 * Returns {"samples", "images", "runs", "bootstrap": {resamples, seed,
 * level, unit}, "before": METRICS, "after": METRICS (NAFTER > 1: the mean
 * of each rate metric over the runs), and trees shaped like the metrics,
 * {section: {split: {metric: ...}}} (no split level outside POPE), for
 * every rate metric: "diff" (after − before), "ci" ([lo, hi] of the
 * difference), "significant" (the interval excludes 0), "before_ci" and
 * "after_ci" (of each side's value), and with one AFTER run "mcnemar"
 * ({lost, gained, p} for POPE accuracy, CHAIR_s, colour and count
 * accuracy; for CHAIR_s a description is right when it hallucinates
 * nothing)}. Caller deletes.
 */
struct cJSON *compare_runs(const struct eval *before, const struct eval *const *after, int nafter,
			   const char *const *names, const struct compare_opts *o);

/* The comparison CMP (compare_runs) as a table: one row per rate metric,
 * before, after, difference, interval, McNemar p, and "better" or "worse"
 * (for the yes ratio "differs") where the interval excludes 0; a closing
 * line says how the intervals were made. Nothing when there are no rows. */
void compare_table(struct buf *out, const struct cJSON *cmp);

#endif
