/* test_compare — the paired comparison of runs: its bootstrap intervals
 * against a slow direct bootstrap (resampled runs built sample by sample
 * and scored with eval_metrics, same seed), an identical pair, intervals
 * that only resampling whole images gives, pairing, McNemar's counts, the
 * pooling of several runs, and the refusal of runs that do not pair. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "eval.h"
#include "rng.h"
#include "stats.h"
#include "tap.h"
#include "util.h"

static const char *const splits[3] = { "random", "popular", "adversarial" };

/* A bench of NIMG images, added in a scrambled order: per image 0-6 POPE
 * questions over the three splits, usually a description, a colour and a
 * count question. Outcomes drawn from R; SKILL shifts how often the run is
 * right. Run 0 of a family makes the truth; every run of it uses the same
 * keys and truth (the same TRUTH seed). */
static void make_run(struct eval *e, int nimg, uint64_t truth, uint64_t answers, double skill)
{
	struct rng t, a;
	rng_seed(&t, truth, "bench", "truth");
	rng_seed(&a, answers, "bench", "answers");
	eval_init(e, NULL);
	for (int k = 0; k < nimg; k++) {
		int i = (k * 17 + 5) % nimg; /* scrambled: nimg is prime */
		char img[16], key[48];
		snprintf(img, sizeof(img), "img%03d", i);
		int nq = (int)rng_below(&t, 7);
		for (int q = 0; q < nq; q++) {
			struct eval_score s = { .key = key, .image = img, .task = EVAL_POPE };
			int split = (int)rng_below(&t, 3);
			s.label = (int)rng_below(&t, 2);
			int right = rng_uniform(&a) < 0.75 + skill;
			s.yes = right ? s.label : !s.label;
			snprintf(key, sizeof(key), "%s-pope-%d", img, q);
			eval_add_score(e, &s, splits[split]);
		}
		if (rng_uniform(&t) < 0.8) {
			struct eval_score s = { .key = key, .image = img, .task = EVAL_DESCRIBE };
			s.objects = 1 + (int)rng_below(&t, 4);
			s.covered = (int)rng_below(&a, (uint64_t)s.objects + 1);
			s.mentions = s.covered + (int)rng_below(&a, 3);
			s.hallucinated = rng_uniform(&a) < 0.4 - skill ? s.mentions - s.covered : 0;
			snprintf(key, sizeof(key), "%s-describe", img);
			eval_add_score(e, &s, NULL);
		}
		for (int x = 0; x < 2; x++) {
			if (rng_uniform(&t) < 0.1)
				continue;
			struct eval_score s = { .key = key, .image = img, .task = x ? EVAL_COUNT : EVAL_COLOR };
			s.correct = rng_uniform(&a) < 0.6 + skill;
			snprintf(key, sizeof(key), "%s-%s", img, x ? "count" : "color");
			eval_add_score(e, &s, NULL);
		}
	}
}

static const cJSON *at(const cJSON *tree, const char *sect, const char *split, const char *key)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(tree, sect);
	if (split)
		o = cJSON_GetObjectItemCaseSensitive(o, split);
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static double at_num(const cJSON *tree, const char *sect, const char *split, const char *key)
{
	const cJSON *v = at(tree, sect, split, key);
	return cJSON_IsNumber(v) ? v->valuedouble : 0; /* absent: no samples, a ratio of 0 */
}

/* The rows of CMP's "diff" tree: section, split (or NULL), key. */
struct rowname {
	const char *sect, *split, *key;
};

static int row_names(const cJSON *cmp, struct rowname *rows)
{
	const cJSON *s, *r, *m;
	int n = 0;
	cJSON_ArrayForEach(s, cJSON_GetObjectItem(cmp, "diff"))
		cJSON_ArrayForEach(r, s) {
			if (cJSON_IsObject(r))
				cJSON_ArrayForEach(m, r)
					rows[n++] = (struct rowname){ s->string, r->string, m->string };
			else
				rows[n++] = (struct rowname){ s->string, NULL, r->string };
		}
	return n;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

/* The direct bootstrap the header of compare.h describes: each replicate
 * draws images (rng_below, images in strcmp order), then runs; the drawn
 * samples are added one by one to fresh evals and scored by eval_metrics.
 * LO and HI get the interval of each row of ROWS (the difference). */
static void slow_bootstrap(const struct eval *before, const struct eval *const *after, int nafter, long B,
			   uint64_t seed, const struct rowname *rows, int nrows, double *lo, double *hi)
{
	long n = before->samples, nimg = 0;
	char **img = malloc((size_t)n * sizeof(*img));
	for (long i = 0; i < n; i++)
		img[i] = before->scores[i].image;
	qsort(img, (size_t)n, sizeof(*img), cmp_str);
	for (long i = 0; i < n; i++)
		if (!nimg || strcmp(img[nimg - 1], img[i]))
			img[nimg++] = img[i];
	double *d = malloc((size_t)(nrows * B) * sizeof(*d));
	long *draw = malloc((size_t)nimg * sizeof(*draw));
	int pick[16];
	struct rng r;
	rng_seed(&r, seed, "compare", "bootstrap");
	for (long b = 0; b < B; b++) {
		for (long u = 0; u < nimg; u++)
			draw[u] = (long)rng_below(&r, (uint64_t)nimg);
		for (int j = 0; j < nafter; j++)
			pick[j] = nafter > 1 ? (int)rng_below(&r, (uint64_t)nafter) : 0;
		struct eval eb, ea[16];
		eval_init(&eb, NULL);
		for (int j = 0; j < nafter; j++)
			eval_init(&ea[j], NULL);
		for (long u = 0; u < nimg; u++)
			for (long i = 0; i < n; i++) {
				const struct eval_score *s = &before->scores[i];
				if (strcmp(s->image, img[draw[u]]))
					continue;
				eval_add_score(&eb, s, before->pope[s->split].split);
				for (int j = 0; j < nafter; j++) {
					const struct eval *a = after[pick[j]];
					for (long k = 0; k < a->samples; k++)
						if (!strcmp(a->scores[k].key, s->key))
							eval_add_score(&ea[j], &a->scores[k], a->pope[a->scores[k].split].split);
				}
			}
		cJSON *mb = eval_metrics(&eb), *ma[16];
		for (int j = 0; j < nafter; j++)
			ma[j] = eval_metrics(&ea[j]);
		for (int k = 0; k < nrows; k++) {
			double va = 0;
			for (int j = 0; j < nafter; j++)
				va += at_num(ma[j], rows[k].sect, rows[k].split, rows[k].key) / nafter;
			d[k * B + b] = va - at_num(mb, rows[k].sect, rows[k].split, rows[k].key);
		}
		cJSON_Delete(mb);
		eval_release(&eb);
		for (int j = 0; j < nafter; j++) {
			cJSON_Delete(ma[j]);
			eval_release(&ea[j]);
		}
	}
	for (int k = 0; k < nrows; k++) {
		double *x = &d[k * B];
		qsort(x, (size_t)B, sizeof(*x), cmp_dbl);
		/* type 7 by hand: h = (B − 1) q */
		double h = (double)(B - 1) * 0.025;
		long f = (long)h;
		lo[k] = x[f] + (h - (double)f) * (x[f + 1] - x[f]);
		h = (double)(B - 1) * 0.975;
		f = (long)h;
		hi[k] = x[f] + (h - (double)f) * (x[f + 1] - x[f]);
	}
	free(d);
	free(draw);
	free(img);
}

static const char *names[] = { "before", "after1", "after2", "after3" };

static void check_against_slow(int nafter)
{
	struct eval before, after[3];
	const struct eval *ap[3];
	struct compare_opts o = { .resamples = 400, .seed = 11, .level = 0.95 };
	make_run(&before, 37, 5, 100, 0);
	for (int j = 0; j < nafter; j++) {
		make_run(&after[j], 37, 5, 200 + (uint64_t)j, 0.08);
		ap[j] = &after[j];
	}
	cJSON *cmp = compare_runs(&before, ap, nafter, names, &o);
	tap_ok(cmp != NULL, "%d run(s) on the same samples compare", nafter);
	if (!cmp)
		return;
	struct rowname rows[100];
	int nrows = row_names(cmp, rows);
	tap_ok(nrows == 3 * 5 + 3 + 2, "a row per rate metric: 3 POPE splits × 5, CHAIR 3, colour, count (%d)",
	       nrows);
	double lo[100], hi[100], worst = 0, width = 0;
	int wk = 0;
	slow_bootstrap(&before, ap, nafter, o.resamples, o.seed, rows, nrows, lo, hi);
	const cJSON *ci = cJSON_GetObjectItem(cmp, "ci");
	for (int k = 0; k < nrows; k++) {
		const cJSON *c = at(ci, rows[k].sect, rows[k].split, rows[k].key);
		double e0 = fabs(cJSON_GetArrayItem(c, 0)->valuedouble - lo[k]);
		double e1 = fabs(cJSON_GetArrayItem(c, 1)->valuedouble - hi[k]);
		if (e0 > worst || e1 > worst)
			worst = e0 > e1 ? e0 : e1, wk = k;
		width += hi[k] - lo[k];
	}
	/* eval_metrics rounds to 1e-6 and so does the comparison. */
	if (!tap_ok(worst < 3e-6 && width / nrows > 0.01,
		    "%d run(s): every interval is the direct bootstrap's (same seed, 400 resamples)", nafter))
		tap_diag("worst: %s.%s.%s off by %.3g; direct [%.6f, %.6f]; mean width %.4f", rows[wk].sect,
			 rows[wk].split ? rows[wk].split : "-", rows[wk].key, worst, lo[wk], hi[wk],
			 width / nrows);

	/* Point values: the mean of the runs' metrics minus BEFORE's. */
	cJSON *mb = eval_metrics(&before);
	double perr = 0;
	for (int k = 0; k < nrows; k++) {
		double va = 0;
		for (int j = 0; j < nafter; j++) {
			cJSON *ma = eval_metrics(&after[j]);
			va += at_num(ma, rows[k].sect, rows[k].split, rows[k].key) / nafter;
			cJSON_Delete(ma);
		}
		double want = va - at_num(mb, rows[k].sect, rows[k].split, rows[k].key);
		double got = at_num(cJSON_GetObjectItem(cmp, "diff"), rows[k].sect, rows[k].split, rows[k].key);
		perr = fmax(perr, fabs(got - want));
	}
	if (!tap_ok(perr < 3e-6, "%d run(s): each difference is mean(after) − before", nafter))
		tap_diag("off by %.3g", perr);
	tap_ok((cJSON_GetObjectItem(cmp, "mcnemar") != NULL) == (nafter == 1),
	       "McNemar only for one run against one");
	cJSON_Delete(mb);
	cJSON_Delete(cmp);
	eval_release(&before);
	for (int j = 0; j < nafter; j++)
		eval_release(&after[j]);
}

static void test_identical(void)
{
	struct eval a, b;
	const struct eval *bp = &b;
	struct compare_opts o = { .resamples = 300, .seed = 1, .level = 0.95 };
	make_run(&a, 31, 9, 9, 0);
	make_run(&b, 31, 9, 9, 0);
	cJSON *cmp = compare_runs(&a, &bp, 1, names, &o);
	struct rowname rows[100];
	int nrows = cmp ? row_names(cmp, rows) : 0, zero = 1, insig = 1, mc1 = 1;
	for (int k = 0; k < nrows; k++) {
		const cJSON *c = at(cJSON_GetObjectItem(cmp, "ci"), rows[k].sect, rows[k].split, rows[k].key);
		zero &= cJSON_GetArrayItem(c, 0)->valuedouble == 0 && cJSON_GetArrayItem(c, 1)->valuedouble == 0;
		insig &= cJSON_IsFalse(at(cJSON_GetObjectItem(cmp, "significant"), rows[k].sect, rows[k].split,
					  rows[k].key));
		const cJSON *m = at(cJSON_GetObjectItem(cmp, "mcnemar"), rows[k].sect, rows[k].split, rows[k].key);
		if (m)
			mc1 &= cJSON_GetObjectItem(m, "p")->valuedouble == 1 &&
			       cJSON_GetObjectItem(m, "lost")->valuedouble == 0;
	}
	tap_ok(nrows > 0 && zero && insig && mc1,
	       "a run against itself: every interval [0, 0], nothing significant, McNemar p 1");
	/* The level of each side still has its spread. */
	const cJSON *bci = at(cJSON_GetObjectItem(cmp, "before_ci"), "pope", "random", "accuracy");
	tap_ok(bci && cJSON_GetArrayItem(bci, 1)->valuedouble - cJSON_GetArrayItem(bci, 0)->valuedouble > 0.05,
	       "... while the accuracy itself has a wide interval");
	cJSON_Delete(cmp);
	eval_release(&a);
	eval_release(&b);
}

/* BEFORE right everywhere; AFTER wrong on every question of 30 % of the
 * images. Over images the difference −0.3 has a standard error of
 * sqrt(0.3 · 0.7 / 60) = 0.059 (95 % width about 0.23); resampling the
 * 360 questions one by one would give sqrt(0.21 / 360) = 0.024 (width 0.095). */
static void test_images_as_units(void)
{
	struct eval a, b;
	const struct eval *bp = &b;
	struct compare_opts o = { .resamples = 2000, .seed = 3, .level = 0.95 };
	eval_init(&a, NULL);
	eval_init(&b, NULL);
	for (int i = 0; i < 60; i++)
		for (int q = 0; q < 6; q++) {
			char img[16], key[32];
			snprintf(img, sizeof(img), "i%02d", i);
			snprintf(key, sizeof(key), "i%02d-%d", i, q);
			struct eval_score s = { .key = key, .image = img, .task = EVAL_POPE, .label = q % 2 };
			s.yes = s.label;
			eval_add_score(&a, &s, "adversarial");
			if (i % 10 < 3)
				s.yes = !s.label;
			eval_add_score(&b, &s, "adversarial");
		}
	cJSON *cmp = compare_runs(&a, &bp, 1, names, &o);
	const cJSON *c = at(cJSON_GetObjectItem(cmp, "ci"), "pope", "adversarial", "accuracy");
	double lo = cJSON_GetArrayItem(c, 0)->valuedouble, hi = cJSON_GetArrayItem(c, 1)->valuedouble;
	if (!tap_ok(hi - lo > 0.18 && hi - lo < 0.29 && lo < -0.3 && hi > -0.3,
		    "questions of one image resampled together: width %.3f near 0.23, not 0.095", hi - lo))
		tap_diag("interval [%.4f, %.4f]", lo, hi);
	const cJSON *m = at(cJSON_GetObjectItem(cmp, "mcnemar"), "pope", "adversarial", "accuracy");
	tap_ok(cJSON_GetObjectItem(m, "lost")->valuedouble == 108 && cJSON_GetObjectItem(m, "gained")->valuedouble == 0,
	       "McNemar counts questions: 108 lost, 0 gained");
	cJSON_Delete(cmp);
	eval_release(&a);
	eval_release(&b);
}

/* 100 images of one question; BEFORE right on half; AFTER the same but
 * right on two more. Paired, the difference 0.02 has a standard error of
 * sqrt(0.02 · 0.98 / 100) = 0.014; unpaired it would be
 * sqrt(2 · 0.25 / 100) = 0.071. */
static void test_paired(void)
{
	struct eval a, b;
	const struct eval *bp = &b;
	struct compare_opts o = { .resamples = 2000, .seed = 4, .level = 0.95 };
	eval_init(&a, NULL);
	eval_init(&b, NULL);
	for (int i = 0; i < 100; i++) {
		char img[16];
		snprintf(img, sizeof(img), "i%03d", i);
		struct eval_score s = { .key = img, .image = img, .task = EVAL_COLOR, .correct = i % 2 };
		eval_add_score(&a, &s, NULL);
		s.correct |= i == 10 || i == 20;
		eval_add_score(&b, &s, NULL);
	}
	cJSON *cmp = compare_runs(&a, &bp, 1, names, &o);
	const cJSON *c = at(cJSON_GetObjectItem(cmp, "ci"), "color", NULL, "accuracy");
	double lo = cJSON_GetArrayItem(c, 0)->valuedouble, hi = cJSON_GetArrayItem(c, 1)->valuedouble;
	if (!tap_ok(lo >= 0 && hi < 0.08 && hi > 0.02, "paired: the interval of +0.02 is [%.3f, %.3f], not ±0.14",
		    lo, hi))
		tap_diag("interval [%.4f, %.4f]", lo, hi);
	const cJSON *m = at(cJSON_GetObjectItem(cmp, "mcnemar"), "color", NULL, "accuracy");
	tap_ok(cJSON_GetObjectItem(m, "gained")->valuedouble == 2 && cJSON_GetObjectItem(m, "p")->valuedouble == 0.5,
	       "McNemar: 2 gained, 0 lost, p = 2 · 2^-2 = 0.5");
	tap_ok(cJSON_IsFalse(at(cJSON_GetObjectItem(cmp, "significant"), "color", NULL, "accuracy")),
	       "an interval that touches 0 is not significant");
	cJSON_Delete(cmp);
	eval_release(&a);
	eval_release(&b);
}

/* AFTER differs from BEFORE in one way; compare_runs must refuse. */
static void test_refusals(void)
{
	struct eval a;
	struct compare_opts o = { .resamples = 10, .seed = 1, .level = 0.95 };
	make_run(&a, 13, 2, 2, 0);
	int refused = 0, cases = 0;
	fprintf(stderr, "# expected errors below:\n");
	for (int c = 0; c < 7; c++) {
		struct eval b;
		const struct eval *bp = &b;
		eval_init(&b, NULL);
		for (long i = 0; i < a.samples; i++) {
			struct eval_score s = a.scores[i];
			const char *split = a.pope[s.split].split;
			if ((c == 0 || c == 6) && i == 5)
				continue; /* a sample missing (6: and another added) */
			if (c == 1 && i == 5)
				s.label = !s.label;
			if (c == 2 && i == 5)
				s.image = "elsewhere";
			if (c == 3 && i == 5)
				s.key = a.scores[4].key; /* one key twice, one missing */
			if (c == 4 && s.task == EVAL_POPE)
				split = "other";
			if (c == 5 && s.task == EVAL_DESCRIBE)
				s.objects++;
			eval_add_score(&b, &s, split);
		}
		if (c == 6) {
			struct eval_score extra = { .key = "new", .image = "new", .task = EVAL_COLOR };
			eval_add_score(&b, &extra, NULL);
		}
		cJSON *cmp = compare_runs(&a, &bp, 1, names, &o);
		refused += cmp == NULL;
		cases++;
		cJSON_Delete(cmp);
		eval_release(&b);
	}
	fprintf(stderr, "# end of expected errors\n");
	tap_ok(refused == cases, "runs that do not pair are refused: missing, label, image, twice, split, "
				 "objects, one for another (%d of %d)", refused, cases);
	eval_release(&a);
}

static void test_table(void)
{
	struct eval a, b;
	const struct eval *bp = &b;
	struct compare_opts o = { .resamples = 500, .seed = 2, .level = 0.95 };
	struct buf out;
	make_run(&a, 41, 7, 1, 0);
	make_run(&b, 41, 7, 2, 0.2);
	cJSON *cmp = compare_runs(&a, &bp, 1, names, &o);
	buf_init(&out);
	compare_table(&out, cmp);
	const char *t = (char *)out.data;
	tap_ok(out.len && strstr(t, "pope.adversarial.accuracy") && strstr(t, "better") && strstr(t, "[") &&
	       strstr(t, "McNemar p") && strstr(t, "41 images"),
	       "table: rows with interval, McNemar p, a verdict, and how the intervals were made");
	if (!out.len || !strstr(t, "better"))
		tap_diag("%s", out.len ? t : "(empty)");
	/* A CHAIR rate going down is better. */
	const char *row = strstr(t, "chair.chair_i");
	int sig = cJSON_IsTrue(at(cJSON_GetObjectItem(cmp, "significant"), "chair", NULL, "chair_i"));
	double d = at_num(cJSON_GetObjectItem(cmp, "diff"), "chair", NULL, "chair_i");
	const char *eol = row ? strchr(row, '\n') : NULL;
	char line[256] = "";
	if (row && eol)
		snprintf(line, sizeof(line), "%.*s", (int)(eol - row), row);
	tap_ok(row && (!sig || (d < 0 ? strstr(line, "better") : strstr(line, "worse"))) &&
	       (sig || (!strstr(line, "better") && !strstr(line, "worse"))),
	       "CHAIR_i: lower is better, and only a significant change gets a verdict (%s)", line);
	cJSON_Delete(cmp);
	buf_release(&out);
	eval_release(&a);
	eval_release(&b);
}

int main(void)
{
	util_init("test_compare");
	check_against_slow(1);
	check_against_slow(3);
	test_identical();
	test_images_as_units();
	test_paired();
	test_refusals();
	test_table();
	return tap_done();
}
