/* test_eval — POPE parsing and metrics against a hand-made file pair whose
 * numbers are worked out below by hand, CHAIR with synonyms and plurals,
 * exact match, metrics JSON and comparison. */
#include <cjson/cJSON.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "tap.h"
#include "util.h"

static char fixtures[4096];

static int near(double got, double want, const char *what)
{
	int ok = tap_ok(fabs(got - want) < 1e-6, "%s = %.6f", what, want);
	if (!ok)
		tap_diag("got %.9f, want %.9f (|diff| %.3g)", got, want, fabs(got - want));
	return ok;
}

static double metric(const cJSON *m, const char *sect, const char *row, const char *key)
{
	const cJSON *s = cJSON_GetObjectItem(m, sect);
	if (row)
		s = cJSON_GetObjectItem(s, row);
	const cJSON *v = cJSON_GetObjectItem(s, key);
	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_pope_parse(void)
{
	static const struct {
		const char *answer;
		int yes;
	} cases[] = {
		{ "Yes, there is a dog.", 1 }, { "No.", 0 }, { "no", 0 }, { "NO", 1 },
		{ "There is not a cat.", 0 }, { "A dog. No cat.", 1 }, { "Nope", 1 },
		{ "I see no, dog", 0 }, { "Yes.No", 1 }, { "", 1 }, { "  no  ", 0 },
		{ "Not at all.", 1 }, /* "Not" is not among the words the script checks */
	};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++)
		if (eval_pope_yes(cases[i].answer) != cases[i].yes) {
			tap_diag("'%s': got %s", cases[i].answer, cases[i].yes ? "no" : "yes");
			bad++;
		}
	tap_ok(!bad, "POPE answers parsed as the official script (%zu cases)", ARRAY_LEN(cases));
}

/*
 * tests/fixtures/pope/coco_pope_adversarial.jsonl + answers.jsonl, by hand:
 *
 *   #  label  answer                                   parsed  outcome
 *   1  yes    "Yes, there is a dog in the image."      yes     TP
 *   2  yes    "No, there is no dog."                   no      FN
 *   3  no     "No."                                    no      TN
 *   4  no     "There is not a cat in the image."       no      TN
 *   5  no     "Yes."                                   yes     FP
 *   6  yes    "The image shows a dog. No other ..."    yes     TP (first sentence only)
 *   7  no     "Nope, nothing like that"                yes     FP
 *   8  yes    "NO"                                     yes     TP (case-sensitive words)
 *   9  no     "I do not see one, no."                  no      TN
 *  10  yes    "no."                                    no      FN
 *  11  no     "Yes there is.No"                        yes     FP
 *  12  yes    "Yes"                                    yes     TP
 *
 *   TP 4, FP 3, TN 3, FN 2, n 12
 *   accuracy  = (4 + 3) / 12        = 7/12  = 0.583333
 *   precision = 4 / (4 + 3)         = 4/7   = 0.571429
 *   recall    = 4 / (4 + 2)         = 2/3   = 0.666667
 *   F1        = 2PR / (P + R)       = 8/13  = 0.615385
 *   yes ratio = (4 + 3) / 12        = 7/12  = 0.583333
 */
static void test_pope_files(void)
{
	struct eval e;
	char *q = xasprintf("%s/coco_pope_adversarial.jsonl", fixtures);
	char *a = xasprintf("%s/answers.jsonl", fixtures);
	eval_init(&e, NULL);
	tap_ok(eval_pope_files(&e, q, a) == 0, "reads the hand-made POPE files");
	cJSON *m = eval_metrics(&e);
	tap_ok(metric(m, "pope", "adversarial", "n") == 12 && metric(m, "pope", "adversarial", "tp") == 4 &&
	       metric(m, "pope", "adversarial", "fp") == 3 && metric(m, "pope", "adversarial", "tn") == 3 &&
	       metric(m, "pope", "adversarial", "fn") == 2,
	       "split named from the file; TP 4 FP 3 TN 3 FN 2");
	near(metric(m, "pope", "adversarial", "accuracy"), 7.0 / 12, "accuracy");
	near(metric(m, "pope", "adversarial", "precision"), 4.0 / 7, "precision");
	near(metric(m, "pope", "adversarial", "recall"), 2.0 / 3, "recall");
	near(metric(m, "pope", "adversarial", "f1"), 8.0 / 13, "F1");
	near(metric(m, "pope", "adversarial", "yes_ratio"), 7.0 / 12, "yes ratio");
	cJSON_Delete(m);

	/* An answer file one line short is an error naming the file. */
	size_t len;
	unsigned char *data = read_file(a, &len);
	char tmp[] = "/tmp/test_eval.XXXXXX";
	int fd = mkstemp(tmp);
	char *last = strrchr((char *)data, '\n');
	*last = 0;
	last = strrchr((char *)data, '\n');
	FILE *f = fdopen(fd, "w");
	fwrite(data, 1, (size_t)(last - (char *)data) + 1, f);
	fclose(f);
	free(data);
	eval_init(&e, NULL);
	fprintf(stderr, "# expected error below:\n");
	tap_ok(eval_pope_files(&e, q, tmp) < 0, "an answer file one line short is refused");
	unlink(tmp);
	free(q);
	free(a);
}

static void test_chair(void)
{
	struct eval_vocab *v = eval_vocab_default();
	struct eval e;
	const char *err;
	const char **names;

	int n = eval_vocab_mentions(v, "Two Boxes, a DISC, three plus signs and a moon.", &names);
	tap_ok(n == 4 && !strcmp(names[0], "square") && !strcmp(names[1], "circle") &&
	       !strcmp(names[2], "cross") && !strcmp(names[3], "crescent"),
	       "synonyms, plurals, case and two-word phrases map to shapes");
	free(names);

	/*
	 * By hand:
	 *   a) truth circle, square; "a red circle and a blue box"         mentions circle, square: 0 hallucinated
	 *   b) truth star; "Two stars and a large triangle."                 star, triangle: 1 hallucinated
	 *   c) truth heart, diamond; "A heart, a plus sign and crosses."     heart, cross, cross: 2 hallucinated
	 *   CHAIR_s = 2/3; CHAIR_i = 3/7; recall = (2 + 1 + 1) / 5 = 0.8
	 */
	const char *truths[3] = {
		"{\"task\":\"describe\",\"objects\":[\"circle\",\"square\"]}",
		"{\"task\":\"describe\",\"objects\":[\"star\"]}",
		"{\"task\":\"describe\",\"objects\":[\"heart\",\"diamond\"]}",
	};
	const char *answers[3] = {
		"There is a red circle and a blue box.",
		"Two stars and a large triangle.",
		"A heart, a plus sign and some crosses.",
	};
	eval_init(&e, v);
	int ok = 1;
	for (int i = 0; i < 3; i++) {
		cJSON *t = cJSON_Parse(truths[i]);
		ok &= eval_add(&e, t, answers[i], &err) == 0;
		cJSON_Delete(t);
	}
	tap_ok(ok, "three descriptions scored");
	cJSON *m = eval_metrics(&e);
	near(metric(m, "chair", NULL, "chair_s"), 2.0 / 3, "CHAIR_s");
	near(metric(m, "chair", NULL, "chair_i"), 3.0 / 7, "CHAIR_i");
	near(metric(m, "chair", NULL, "recall"), 0.8, "CHAIR recall");
	cJSON_Delete(m);
	eval_vocab_free(v);

	/* A COCO-style vocabulary file. */
	char *path = xasprintf("%s/synonyms.txt", fixtures);
	v = eval_vocab_load(path);
	free(path);
	tap_ok(v != NULL, "COCO-style synonyms file loads");
	if (!v)
		return;
	n = eval_vocab_mentions(v, "Two men with hot dogs, a puppy, teddy bears and buses; a woman.", &names);
	const char *want[] = { "person", "hot dog", "dog", "teddy bear", "bus", "person" };
	ok = n == 6;
	for (int i = 0; ok && i < 6; i++)
		ok = !strcmp(names[i], want[i]);
	tap_ok(ok, "irregular plurals, longest phrase first (hot dog before dog)");
	if (!ok)
		for (int i = 0; i < n; i++)
			tap_diag("mention %d: %s", i, names[i]);
	free(names);
	tap_ok(eval_vocab_canonical(v, "children") && !strcmp(eval_vocab_canonical(v, "children"), "person"),
	       "children → person");
	eval_vocab_free(v);
}

static void test_exact(void)
{
	struct buf b;
	buf_init(&b);
	eval_normalize(&b, "Three.");
	int ok = !strcmp((char *)b.data, "3");
	eval_normalize(&b, "  The star is RED!! ");
	ok &= !strcmp((char *)b.data, "the star is red");
	tap_ok(ok, "normal form: case, punctuation, number words");
	buf_release(&b);

	struct eval e;
	const char *err;
	eval_init(&e, NULL);
	const char *cases[][2] = {
		{ "{\"task\":\"color\",\"answer\":\"red\"}", "Red." },
		{ "{\"task\":\"color\",\"answer\":\"red\"}", "It is red." },
		{ "{\"task\":\"count\",\"answer\":\"3\"}", "Three." },
		{ "{\"task\":\"count\",\"answer\":2}", "2" },
		{ "{\"task\":\"count\",\"answer\":\"4\"}", "Three." },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		cJSON *t = cJSON_Parse(cases[i][0]);
		eval_add(&e, t, cases[i][1], &err);
		cJSON_Delete(t);
	}
	tap_ok(e.color_n == 2 && e.color_ok == 1 && e.count_n == 3 && e.count_ok == 2,
	       "colour 1/2 and count 2/3 exact (got %ld/%ld, %ld/%ld)", e.color_ok, e.color_n,
	       e.count_ok, e.count_n);

	const char *badt[] = {
		"{\"answer\":\"red\"}", "{\"task\":\"pope\",\"label\":\"maybe\"}",
		"{\"task\":\"describe\",\"objects\":\"star\"}", "{\"task\":\"color\"}",
		"{\"task\":\"poem\"}", "[1]",
	};
	int refused = 0;
	for (size_t i = 0; i < ARRAY_LEN(badt); i++) {
		cJSON *t = cJSON_Parse(badt[i]);
		err = NULL;
		refused += eval_add(&e, t, "Yes.", &err) < 0 && err;
		cJSON_Delete(t);
	}
	tap_ok(refused == (int)ARRAY_LEN(badt), "malformed truths refused with a reason (%d of %zu)",
	       refused, ARRAY_LEN(badt));
	tap_ok(e.samples == 5, "only well-formed samples counted (%ld)", e.samples);
}

static void test_compare(void)
{
	struct eval a, b;
	struct buf out;
	eval_init(&a, NULL);
	eval_init(&b, NULL);
	/* before: 2 of 4 right; after: 4 of 4 */
	eval_pope_add(&a, "random", 1, "Yes.");
	eval_pope_add(&a, "random", 1, "No.");
	eval_pope_add(&a, "random", 0, "Yes.");
	eval_pope_add(&a, "random", 0, "No.");
	eval_pope_add(&b, "random", 1, "Yes.");
	eval_pope_add(&b, "random", 1, "Yes.");
	eval_pope_add(&b, "random", 0, "No.");
	eval_pope_add(&b, "random", 0, "No.");
	eval_pope_add(&b, "adversarial", 0, "No.");
	cJSON *ma = eval_metrics(&a), *mb = eval_metrics(&b);
	cJSON *c = eval_compare_json(ma, mb);
	near(metric(cJSON_GetObjectItem(c, "diff"), "pope", "random", "accuracy"), 0.5, "diff of accuracy");
	tap_ok(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "diff"), "pope"), "adversarial") == NULL,
	       "a split only one run has gets no diff");
	buf_init(&out);
	eval_compare_table(&out, ma, mb);
	tap_ok(out.len && strstr((char *)out.data, "pope.random.accuracy") &&
	       strstr((char *)out.data, "+0.5000") && strstr((char *)out.data, "pope.adversarial.n"),
	       "side-by-side table with differences");
	if (!out.len || !strstr((char *)out.data, "+0.5000"))
		tap_diag("%s", out.len ? (char *)out.data : "(empty)");
	out.len = 0;
	eval_table(&out, ma);
	tap_ok(out.len && strstr((char *)out.data, "random") && strstr((char *)out.data, "0.5000"),
	       "table of one run");
	cJSON_Delete(c);
	cJSON_Delete(ma);
	cJSON_Delete(mb);

	struct eval empty;
	eval_init(&empty, NULL);
	cJSON *me = eval_metrics(&empty);
	out.len = 0;
	eval_table(&out, me);
	size_t n1 = out.len;
	eval_compare_table(&out, me, me);
	tap_ok(n1 == 0 && out.len == 0, "empty input: no table rows");
	cJSON_Delete(me);
	buf_release(&out);
}

int main(int argc, char **argv)
{
	(void)argc;
	/* tests/bin/test_eval → tests/fixtures/pope */
	char *self = xstrdup(argv[0]);
	snprintf(fixtures, sizeof(fixtures), "%s/../fixtures/pope", dirname(self));
	free(self);
	util_init("test_eval");
	test_pope_parse();
	test_pope_files();
	test_chair();
	test_exact();
	test_compare();
	return tap_done();
}
