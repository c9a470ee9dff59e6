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
	tap_ok(e.samples == 12 && e.scores[0].key && e.scores[0].image && strcmp(e.scores[0].key, e.scores[0].image),
	       "each POPE question scored on its own, keyed by question_id, with its image");
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
	eval_release(&e);

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
	eval_release(&e);
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
		char key[8];
		snprintf(key, sizeof(key), "d%d", i);
		ok &= eval_add(&e, key, NULL, t, answers[i], &err) == 0;
		cJSON_Delete(t);
	}
	tap_ok(ok, "three descriptions scored");
	cJSON *m = eval_metrics(&e);
	near(metric(m, "chair", NULL, "chair_s"), 2.0 / 3, "CHAIR_s");
	near(metric(m, "chair", NULL, "chair_i"), 3.0 / 7, "CHAIR_i");
	near(metric(m, "chair", NULL, "recall"), 0.8, "CHAIR recall");
	cJSON_Delete(m);
	eval_release(&e);
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
		eval_add(&e, "x", "img", t, cases[i][1], &err);
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
		refused += eval_add(&e, "bad", NULL, t, "Yes.", &err) < 0 && err;
		cJSON_Delete(t);
	}
	tap_ok(refused == (int)ARRAY_LEN(badt), "malformed truths refused with a reason (%d of %zu)",
	       refused, ARRAY_LEN(badt));
	tap_ok(e.samples == 5, "only well-formed samples counted (%ld)", e.samples);
	tap_ok(!strcmp(e.scores[0].image, "img") && e.scores[4].correct == 0 && e.scores[3].correct == 1,
	       "per-sample scores kept, with their image");
	eval_release(&e);
}

/* A metrics object with per_sample, as seva-eval --json writes it. */
static cJSON *metrics_with_scores(const struct eval *e)
{
	cJSON *m = eval_metrics(e);
	cJSON_AddItemToObject(m, "per_sample", eval_scores_json(e));
	return m;
}

/* Loads TEXT (a metrics object) into a fresh eval; the load's result. */
static int load_text(const char *text)
{
	struct eval e;
	cJSON *m = cJSON_Parse(text);
	eval_init(&e, NULL);
	int rc = eval_load_metrics(&e, m, "t.json");
	cJSON_Delete(m);
	eval_release(&e);
	return rc;
}

static void test_scores(void)
{
	struct eval_vocab *v = eval_vocab_default();
	struct eval a, b;
	const char *err;
	static const char *const samples[][3] = {
		{ "p1", "{\"task\":\"pope\",\"split\":\"adversarial\",\"label\":\"yes\"}", "Yes." },
		{ "p2", "{\"task\":\"pope\",\"split\":\"random\",\"label\":\"no\"}", "Yes." },
		{ "p3", "{\"task\":\"pope\",\"split\":\"random\",\"label\":\"yes\"}", "No." },
		{ "d1", "{\"task\":\"describe\",\"objects\":[\"star\",\"circle\"]}", "A star and a heart." },
		{ "c1", "{\"task\":\"color\",\"answer\":\"red\"}", "Red." },
		{ "n1", "{\"task\":\"count\",\"answer\":\"2\"}", "Three." },
	};
	eval_init(&a, v);
	for (size_t i = 0; i < ARRAY_LEN(samples); i++) {
		cJSON *t = cJSON_Parse(samples[i][1]);
		eval_add(&a, samples[i][0], i < 3 ? "img1" : "img2", t, samples[i][2], &err);
		cJSON_Delete(t);
	}
	cJSON *m = metrics_with_scores(&a), *back;
	char *text = cJSON_PrintUnformatted(m);
	eval_init(&b, v);
	tap_ok(eval_load_metrics(&b, m, "a.json") == 0, "metrics with per_sample load back");
	back = metrics_with_scores(&b);
	tap_ok(cJSON_Compare(m, back, 1), "the same metrics and scores after the round trip");
	tap_ok(b.samples == 6 && !strcmp(b.scores[3].image, "img2") && b.scores[3].hallucinated == 1 &&
	       b.scores[3].covered == 1 && b.scores[3].objects == 2 && b.scores[3].mentions == 2,
	       "a description's counts: 2 present, 1 covered, 2 mentions, 1 hallucinated");
	cJSON_Delete(back);
	eval_release(&b);

	/* Malformed files are refused. Each edit below breaks one thing. */
	static const char *const edits[][2] = {
		{ "\"label\":\"yes\"", "\"label\":\"maybe\"" },
		{ "\"answer\":\"no\"", "\"answer\":0" },
		{ "\"task\":\"color\",\"correct\":true", "\"task\":\"color\",\"correct\":1" },
		{ "\"task\":\"count\"", "\"task\":\"poem\"" },
		{ "\"covered\":1", "\"covered\":3" },
		{ "\"covered\":1,\"mentions\":2", "\"covered\":1,\"mentions\":-2" },
		{ "\"covered\":1,\"mentions\":2,\"hallucinated\":1}", "\"covered\":1,\"mentions\":2,\"hallucinated\":0.5}" },
		{ "\"key\":\"p2\"", "\"key\":\"\"" },
		{ "\"image\":\"img1\"", "\"image\":7" },
		{ "\"split\":\"random\"", "\"split\":\"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\"" },
		{ "\"correct\":1,\"accuracy\":1", "\"correct\":1,\"accuracy\":0.9" }, /* colour's metrics */
		{ "\"samples\":6", "\"samples\":7" },
		{ "\"per_sample\":[", "\"scores\":[" },
	};
	int refused = 0;
	fprintf(stderr, "# expected errors below:\n");
	for (size_t i = 0; i < ARRAY_LEN(edits); i++) {
		char *hit = strstr(text, edits[i][0]);
		if (!hit) {
			tap_diag("edit %zu: '%s' not in the file", i, edits[i][0]);
			continue;
		}
		size_t n0 = strlen(edits[i][0]);
		char *t = xasprintf("%.*s%s%s", (int)(hit - text), text, edits[i][1], hit + n0);
		int rc = load_text(t);
		refused += rc < 0;
		if (rc == 0)
			tap_diag("accepted: %s", t);
		free(t);
	}
	tap_ok(refused == (int)ARRAY_LEN(edits), "malformed per-sample files refused (%d of %zu)", refused,
	       ARRAY_LEN(edits));
	tap_ok(load_text("{\"samples\":\"x\",\"pope\":5}") < 0 && load_text("[1]") < 0,
	       "metrics without scores, and non-objects, refused");
	fprintf(stderr, "# end of expected errors\n");
	free(text);
	cJSON_Delete(m);

	struct buf out;
	buf_init(&out);
	m = eval_metrics(&a);
	eval_table(&out, m);
	tap_ok(out.len && strstr((char *)out.data, "random") && strstr((char *)out.data, "0.5000"),
	       "table of one run");
	cJSON_Delete(m);
	eval_release(&a);
	eval_init(&a, v);
	m = eval_metrics(&a);
	out.len = 0;
	eval_table(&out, m);
	tap_ok(out.len == 0, "empty input: no table rows");
	cJSON_Delete(m);
	buf_release(&out);
	eval_vocab_free(v);
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
	test_scores();
	return tap_done();
}
