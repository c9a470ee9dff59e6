#include "compare.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "rng.h"
#include "stats.h"
#include "util.h"

/* One row of the comparison: a rate metric, of one POPE split (index into
 * BEFORE's pope[]) or none. */
struct row {
	enum eval_metric metric;
	int split;
	const char *section, *split_name, *key;
};

static const struct eval *sort_eval; /* qsort has no argument */

static int by_key(const void *a, const void *b)
{
	return strcmp(sort_eval->scores[*(const long *)a].key, sort_eval->scores[*(const long *)b].key);
}

static int by_string(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* E's sample indices in key order (N = E->samples). */
static long *key_order(const struct eval *e)
{
	long *ix = xmalloc((size_t)(e->samples + 1) * sizeof(*ix));
	for (long i = 0; i < e->samples; i++)
		ix[i] = i;
	sort_eval = e;
	qsort(ix, (size_t)e->samples, sizeof(*ix), by_key);
	return ix;
}

/* The index in E of KEY (ORDER from key_order), or -1. */
static long find_key(const struct eval *e, const long *order, const char *key)
{
	long lo = 0, hi = e->samples;
	while (lo < hi) {
		long mid = lo + (hi - lo) / 2;
		int c = strcmp(e->scores[order[mid]].key, key);
		if (!c)
			return order[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static const char *task_name(int task)
{
	static const char *const names[] = { "pope", "describe", "color", "count" };
	return names[task];
}

/* Checks that A's samples are B's (B in ORDER), and fills MAP[i] with the
 * index in A of B's sample i. -1 with a message at the first difference. */
static int pair_up(const struct eval *b, const long *order, const char *bname, const struct eval *a,
		   const char *aname, long *map)
{
	for (long i = 0; i < b->samples; i++)
		map[i] = -1;
	for (long j = 0; j < a->samples; j++) {
		const struct eval_score *s = &a->scores[j];
		long i = find_key(b, order, s->key);
		if (i < 0)
			return error("%s: key %s: not a sample of %s", aname, s->key, bname);
		const struct eval_score *t = &b->scores[i];
		if (map[i] >= 0)
			return error("%s: key %s: scored twice", aname, s->key);
		map[i] = j;
		if (s->task != t->task)
			return error("%s: key %s: task %s, but %s in %s", aname, s->key, task_name(s->task),
				     task_name(t->task), bname);
		if (strcmp(s->image, t->image))
			return error("%s: key %s: image %s, but %s in %s", aname, s->key, s->image, t->image,
				     bname);
		if (s->task == EVAL_POPE &&
		    (strcmp(a->pope[s->split].split, b->pope[t->split].split) || s->label != t->label))
			return error("%s: key %s: POPE %s/%s, but %s/%s in %s", aname, s->key,
				     a->pope[s->split].split, s->label ? "yes" : "no", b->pope[t->split].split,
				     t->label ? "yes" : "no", bname);
		if (s->task == EVAL_DESCRIBE && s->objects != t->objects)
			return error("%s: key %s: %d objects present, but %d in %s", aname, s->key, s->objects,
				     t->objects, bname);
	}
	for (long i = 0; i < b->samples; i++)
		if (map[order[i]] < 0)
			return error("%s: key %s: not scored (%s has it)", aname, b->scores[order[i]].key, bname);
	return 0;
}

/* The rows, in the order of BEFORE's metrics object M. */
static int make_rows(const struct eval *e, const cJSON *m, struct row *rows)
{
	const cJSON *pope = cJSON_GetObjectItemCaseSensitive(m, "pope"), *s;
	int n = 0;
	cJSON_ArrayForEach(s, pope) {
		int split = 0;
		while (split < e->npope && strcmp(e->pope[split].split, s->string))
			split++;
		for (int x = EVAL_POPE_ACCURACY; x <= EVAL_POPE_YES_RATIO; x++) {
			rows[n] = (struct row){ x, split, NULL, e->pope[split].split, NULL };
			eval_metric_name(x, &rows[n].section, &rows[n].key);
			n++;
		}
	}
	for (int x = EVAL_CHAIR_S; x < EVAL_NMETRICS; x++) {
		const char *sect, *key;
		eval_metric_name(x, &sect, &key);
		if (!cJSON_GetObjectItemCaseSensitive(m, sect))
			continue;
		rows[n] = (struct row){ x, 0, sect, NULL, key };
		n++;
	}
	return n;
}

/* Whether sample S counts for ROW's McNemar test, and if so whether it is
 * right (*RIGHT). */
static int binary_outcome(const struct row *row, const struct eval_score *s, int split, int *right)
{
	switch (row->metric) {
	case EVAL_POPE_ACCURACY:
		if (s->task != EVAL_POPE || split != row->split)
			return 0;
		*right = s->label == s->yes;
		return 1;
	case EVAL_CHAIR_S:
		if (s->task != EVAL_DESCRIBE)
			return 0;
		*right = s->hallucinated == 0;
		return 1;
	case EVAL_COLOR_ACCURACY:
	case EVAL_COUNT_ACCURACY:
		if (s->task != (row->metric == EVAL_COLOR_ACCURACY ? EVAL_COLOR : EVAL_COUNT))
			return 0;
		*right = s->correct;
		return 1;
	default:
		return 0;
	}
}

/* The object of ROW in TREE ({section: {split: {...}}}), made if missing. */
static cJSON *row_parent(cJSON *tree, const struct row *row)
{
	cJSON *s = cJSON_GetObjectItemCaseSensitive(tree, row->section);
	if (!s)
		s = cJSON_AddObjectToObject(tree, row->section);
	if (!row->split_name)
		return s;
	cJSON *r = cJSON_GetObjectItemCaseSensitive(s, row->split_name);
	return r ? r : cJSON_AddObjectToObject(s, row->split_name);
}

static double round6(double v)
{
	return round(v * 1e6) / 1e6;
}

static void add_pair(cJSON *o, const char *key, double lo, double hi)
{
	cJSON *a = cJSON_AddArrayToObject(o, key);
	cJSON_AddItemToArray(a, cJSON_CreateNumber(round6(lo)));
	cJSON_AddItemToArray(a, cJSON_CreateNumber(round6(hi)));
}

/* The mean over runs of each rate metric, shaped like a metrics object. */
static cJSON *mean_metrics(const struct row *rows, int nrows, const double *value, const cJSON *like)
{
	cJSON *m = cJSON_CreateObject(), *s;
	cJSON_AddNumberToObject(m, "samples", cJSON_GetObjectItemCaseSensitive(like, "samples")->valuedouble);
	for (int i = 0; i < nrows; i++) {
		cJSON *p = row_parent(m, &rows[i]);
		if (!cJSON_GetObjectItemCaseSensitive(p, "n")) {
			const cJSON *l = cJSON_GetObjectItemCaseSensitive(like, rows[i].section);
			if (rows[i].split_name)
				l = cJSON_GetObjectItemCaseSensitive(l, rows[i].split_name);
			s = cJSON_GetObjectItemCaseSensitive(l, "n");
			cJSON_AddNumberToObject(p, "n", cJSON_IsNumber(s) ? s->valuedouble : 0);
		}
		cJSON_AddNumberToObject(p, rows[i].key, round6(value[i]));
	}
	return m;
}

cJSON *compare_runs(const struct eval *before, const struct eval *const *after, int nafter,
		    const char *const *names, const struct compare_opts *o)
{
	const long n = before->samples;
	const int nruns = nafter + 1; /* run 0 is BEFORE */
	long *order = key_order(before), **map = xcalloc((size_t)nruns, sizeof(*map));
	long *unit = xmalloc((size_t)(n + 1) * sizeof(*unit)), nunits = 0;
	char **images = xmalloc((size_t)(n + 1) * sizeof(*images));
	cJSON *out = NULL, *mb = eval_metrics(before);
	struct row rows[EVAL_MAX_SPLITS * 5 + 5];
	int nrows = make_rows(before, mb, rows);

	for (long i = 1; i < n; i++)
		if (!strcmp(before->scores[order[i - 1]].key, before->scores[order[i]].key)) {
			error("%s: key %s: scored twice", names[0], before->scores[order[i]].key);
			goto out;
		}
	for (int r = 1; r < nruns; r++) {
		map[r] = xmalloc((size_t)(n + 1) * sizeof(**map));
		if (pair_up(before, order, names[0], after[r - 1], names[r], map[r]) < 0)
			goto out;
	}

	/* The units: BEFORE's images in strcmp order, so that the draws do not
	 * depend on the order the samples came in. */
	for (long i = 0; i < n; i++)
		images[i] = before->scores[i].image;
	qsort(images, (size_t)n, sizeof(*images), by_string);
	for (long i = 0; i < n; i++)
		if (!nunits || strcmp(images[nunits - 1], images[i]))
			images[nunits++] = images[i];
	for (long i = 0; i < n; i++) {
		char *img = before->scores[i].image;
		unit[i] = (char **)bsearch(&img, images, (size_t)nunits, sizeof(*images), by_string) - images;
	}

	/* Each run's tally per image; an AFTER sample counts in BEFORE's POPE
	 * split of the same name (pair_up checked the names agree). */
	struct eval_tally *tally = xcalloc((size_t)(nruns * nunits + 1), sizeof(*tally));
	struct eval_tally *total = xcalloc((size_t)nruns, sizeof(*total));
	for (int r = 0; r < nruns; r++)
		for (long i = 0; i < n; i++) {
			struct eval_score s = r ? after[r - 1]->scores[map[r][i]] : before->scores[i];
			s.split = before->scores[i].split;
			eval_tally_add(&tally[r * nunits + unit[i]], &s, 1);
			eval_tally_add(&total[r], &s, 1);
		}

	/* Point values: BEFORE, the mean of the AFTER runs, their difference. */
	double value[3][EVAL_MAX_SPLITS * 5 + 5];
	for (int k = 0; k < nrows; k++) {
		value[0][k] = eval_metric_value(&total[0], rows[k].metric, rows[k].split);
		value[1][k] = 0;
		for (int r = 1; r < nruns; r++)
			value[1][k] += eval_metric_value(&total[r], rows[k].metric, rows[k].split) / nafter;
		value[2][k] = value[1][k] - value[0][k];
	}

	/* The bootstrap: REP[side][row][b], side 0 before, 1 after, 2 diff. */
	const long B = o->resamples;
	double *rep = xmalloc((size_t)(3 * nrows * B + 1) * sizeof(*rep));
	double *w = xmalloc((size_t)(nunits + 1) * sizeof(*w));
	int *pick = xmalloc((size_t)nruns * sizeof(*pick));
	struct eval_tally *t = xmalloc((size_t)nruns * sizeof(*t));
	struct rng rng;
	rng_seed(&rng, o->seed, "compare", "bootstrap");
	for (long b = 0; b < B; b++) {
		stats_boot_counts(&rng, nunits, w);
		for (int j = 0; j < nafter; j++)
			pick[j] = nafter > 1 ? 1 + (int)rng_below(&rng, (uint64_t)nafter) : 1;
		memset(t, 0, (size_t)nruns * sizeof(*t));
		for (int r = 0; r < nruns; r++) {
			double *dst = (double *)&t[r];
			for (long u = 0; u < nunits; u++) {
				if (!w[u])
					continue;
				const double *src = (const double *)&tally[r * nunits + u];
				for (size_t x = 0; x < sizeof(*t) / sizeof(double); x++)
					dst[x] += w[u] * src[x];
			}
		}
		for (int k = 0; k < nrows; k++) {
			double vb = eval_metric_value(&t[0], rows[k].metric, rows[k].split), va = 0;
			for (int j = 0; j < nafter; j++)
				va += eval_metric_value(&t[pick[j]], rows[k].metric, rows[k].split) / nafter;
			rep[(0 * nrows + k) * B + b] = vb;
			rep[(1 * nrows + k) * B + b] = va;
			rep[(2 * nrows + k) * B + b] = va - vb;
		}
	}

	out = cJSON_CreateObject();
	cJSON_AddNumberToObject(out, "samples", (double)n);
	cJSON_AddNumberToObject(out, "images", (double)nunits);
	cJSON_AddNumberToObject(out, "runs", nafter);
	cJSON *boot = cJSON_AddObjectToObject(out, "bootstrap");
	cJSON_AddNumberToObject(boot, "resamples", (double)B);
	cJSON_AddNumberToObject(boot, "seed", (double)o->seed);
	cJSON_AddNumberToObject(boot, "level", o->level);
	cJSON_AddStringToObject(boot, "unit", "image");
	cJSON_AddItemToObject(out, "before", mb);
	mb = NULL;
	cJSON_AddItemToObject(out, "after", nafter == 1 ? eval_metrics(after[0])
				: mean_metrics(rows, nrows, value[1], cJSON_GetObjectItem(out, "before")));
	cJSON *diff = cJSON_AddObjectToObject(out, "diff"), *ci = cJSON_AddObjectToObject(out, "ci");
	cJSON *sig = cJSON_AddObjectToObject(out, "significant");
	cJSON *bci = cJSON_AddObjectToObject(out, "before_ci"), *aci = cJSON_AddObjectToObject(out, "after_ci");
	cJSON *mc = nafter == 1 ? cJSON_AddObjectToObject(out, "mcnemar") : NULL;
	const double qlo = (1 - o->level) / 2, qhi = (1 + o->level) / 2;
	for (int k = 0; k < nrows; k++) {
		double lo[3], hi[3];
		for (int side = 0; side < 3; side++) {
			double *x = &rep[(side * nrows + k) * B];
			stats_sort(x, B);
			lo[side] = stats_quantile(x, B, qlo);
			hi[side] = stats_quantile(x, B, qhi);
		}
		cJSON_AddNumberToObject(row_parent(diff, &rows[k]), rows[k].key, round6(value[2][k]));
		add_pair(row_parent(ci, &rows[k]), rows[k].key, lo[2], hi[2]);
		/* Judged on the rounded bounds the output shows. */
		cJSON_AddBoolToObject(row_parent(sig, &rows[k]), rows[k].key,
				      round6(lo[2]) > 0 || round6(hi[2]) < 0);
		add_pair(row_parent(bci, &rows[k]), rows[k].key, lo[0], hi[0]);
		add_pair(row_parent(aci, &rows[k]), rows[k].key, lo[1], hi[1]);
		long lost = 0, gained = 0;
		int rb, ra;
		for (long i = 0; mc && i < n; i++) {
			const struct eval_score *sb = &before->scores[i], *sa = &after[0]->scores[map[1][i]];
			if (!binary_outcome(&rows[k], sb, sb->split, &rb))
				continue;
			binary_outcome(&rows[k], sa, sb->split, &ra);
			lost += rb && !ra;
			gained += ra && !rb;
		}
		if (mc && (rows[k].metric == EVAL_POPE_ACCURACY || rows[k].metric == EVAL_CHAIR_S ||
			   rows[k].metric == EVAL_COLOR_ACCURACY || rows[k].metric == EVAL_COUNT_ACCURACY)) {
			cJSON *p = cJSON_AddObjectToObject(row_parent(mc, &rows[k]), rows[k].key);
			cJSON_AddNumberToObject(p, "lost", (double)lost);
			cJSON_AddNumberToObject(p, "gained", (double)gained);
			cJSON_AddNumberToObject(p, "p", stats_mcnemar_p(lost, gained));
		}
	}
	free(rep);
	free(w);
	free(pick);
	free(t);
	free(tally);
	free(total);
out:
	cJSON_Delete(mb);
	for (int r = 0; r < nruns; r++)
		free(map[r]);
	free(map);
	free(order);
	free(unit);
	free(images);
	return out;
}

static double get_num(const cJSON *tree, const char *sect, const char *split, const char *key)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(tree, sect);
	if (split)
		o = cJSON_GetObjectItemCaseSensitive(o, split);
	o = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(o) ? o->valuedouble : NAN;
}

static double flat_num(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

static const cJSON *get_item(const cJSON *tree, const char *sect, const char *split, const char *key)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(tree, sect);
	if (split)
		o = cJSON_GetObjectItemCaseSensitive(o, split);
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* +1 when higher is better, -1 when lower is (CHAIR), 0 when neither. */
static int better_sign(const char *sect, const char *key)
{
	if (!strcmp(key, "yes_ratio"))
		return 0;
	if (!strcmp(sect, "chair") && strcmp(key, "recall"))
		return -1;
	return 1;
}

/* Ends the line OUT holds without trailing blanks. */
static void trim_line(struct buf *out)
{
	while (out->len && out->data[out->len - 1] == ' ')
		out->len--;
	buf_addstr(out, "\n");
}

static void table_row(struct buf *out, const cJSON *cmp, const char *sect, const char *split,
		      const char *key)
{
	const cJSON *ci = get_item(cJSON_GetObjectItemCaseSensitive(cmp, "ci"), sect, split, key);
	const cJSON *sig = get_item(cJSON_GetObjectItemCaseSensitive(cmp, "significant"), sect, split, key);
	const cJSON *mc = get_item(cJSON_GetObjectItemCaseSensitive(cmp, "mcnemar"), sect, split, key);
	double d = get_num(cJSON_GetObjectItemCaseSensitive(cmp, "diff"), sect, split, key);
	char name[96], interval[48] = "", p[24] = "";
	const char *verdict = "";

	snprintf(name, sizeof(name), "%s%s%s.%s", sect, split ? "." : "", split ? split : "", key);
	if (cJSON_GetArraySize(ci) == 2)
		snprintf(interval, sizeof(interval), "[%+.4f, %+.4f]", cJSON_GetArrayItem(ci, 0)->valuedouble,
			 cJSON_GetArrayItem(ci, 1)->valuedouble);
	const cJSON *pv = cJSON_GetObjectItemCaseSensitive(mc, "p");
	if (cJSON_IsNumber(pv))
		snprintf(p, sizeof(p), "%.3g", pv->valuedouble);
	if (cJSON_IsTrue(sig)) {
		int sign = better_sign(sect, key);
		verdict = !sign ? "differs" : sign * d > 0 ? "better" : "worse";
	}
	buf_printf(out, "%-28s %8.4f %8.4f %+9.4f  %-20s %9s  %s", name,
		   get_num(cJSON_GetObjectItemCaseSensitive(cmp, "before"), sect, split, key),
		   get_num(cJSON_GetObjectItemCaseSensitive(cmp, "after"), sect, split, key), d, interval, p,
		   verdict);
	trim_line(out);
}

void compare_table(struct buf *out, const cJSON *cmp)
{
	const cJSON *diff = cJSON_GetObjectItemCaseSensitive(cmp, "diff"), *s, *r, *m;
	const cJSON *boot = cJSON_GetObjectItemCaseSensitive(cmp, "bootstrap");
	int runs = (int)flat_num(cmp, "runs");
	double level = flat_num(boot, "level");

	if (!diff || !diff->child)
		return;
	buf_printf(out, "%-28s %8s %8s %9s  %-20s %9s", "metric", "before", runs > 1 ? "after*" : "after",
		   "diff", "interval", runs > 1 ? "" : "McNemar p");
	trim_line(out);
	cJSON_ArrayForEach(s, diff)
		cJSON_ArrayForEach(r, s) {
			if (cJSON_IsObject(r))
				cJSON_ArrayForEach(m, r)
					table_row(out, cmp, s->string, r->string, m->string);
			else
				table_row(out, cmp, s->string, NULL, r->string);
		}
	buf_printf(out, "%.0f samples of %.0f images paired by key; %g %% intervals: bootstrap over images, "
		   "%.0f resamples, seed %.0f",
		   flat_num(cmp, "samples"), flat_num(cmp, "images"), level * 100, flat_num(boot, "resamples"),
		   flat_num(boot, "seed"));
	if (runs > 1)
		buf_printf(out, "; after*: the mean of %d runs, which the bootstrap draws too", runs);
	buf_printf(out, "; better/worse: the interval excludes 0\n");
}
