/* test_chat — templates render as LLaVA's conv_llava_v1, and conversation
 * ids equal LLaVA's way of making them (the whole text tokenized by HF
 * tokenizers, split at <image>: tests/fixtures/tok/chat_*.jsonl), so an
 * answer's ids are the tail of prompt + answer tokenized together. */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "tap.h"
#include "testutil.h"
#include "tokenizer.h"
#include "util.h"

#define NPM "tests/vendor/node_modules/@lenml/"

static int same_ids(const int *a, int na, const int *b, int nb)
{
	return na == nb && !memcmp(a, b, (size_t)na * sizeof(int));
}

static void check_conversations(const char *name, const char *tokpath, const char *ref,
				int image_token)
{
	struct tokenizer *t;
	char *data;
	if (!load_tokenizer_reference(name, tokpath, ref, &t, &data))
		return;
	int convs = 0, bad_conv = 0, bad_pa = 0, bad_w = 0;
	for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
		cJSON *j = cJSON_Parse(line);
		struct chat c;
		const char *tmpl = cJSON_GetObjectItem(j, "template")->valuestring;
		int with_image = cJSON_IsTrue(cJSON_GetObjectItem(j, "with_image"));
		const cJSON *jt = cJSON_GetObjectItem(j, "turns"), *e;
		int nt = cJSON_GetArraySize(jt), k = 0;
		const char **turns = xcalloc((size_t)nt, sizeof(*turns));
		cJSON_ArrayForEach(e, jt)
			turns[k++] = e->valuestring;
		const cJSON *jids = cJSON_GetObjectItem(j, "ids");
		int nw = cJSON_GetArraySize(jids), *want = xmalloc((size_t)nw * sizeof(int));
		k = 0;
		cJSON_ArrayForEach(e, jids)
			want[k++] = e->valueint;
		convs++;
		if (chat_init(&c, tmpl, t, image_token) < 0) {
			bad_conv++;
			goto next;
		}
		int *ids;
		float *w;
		int n = chat_encode_conversation(&c, turns, nt, with_image, &ids, &w);
		if (!same_ids(ids, n, want, nw) && bad_conv++ < 2) {
			tap_diag("%s: conversation %d differs: %s", name, convs,
				 cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "text")));
			tap_diag_ids("got ", ids, n);
			tap_diag_ids("want", want, nw);
		}
		/* prompt + answer = the first exchange, and the weights mark exactly the answer */
		int *p, *a;
		int np = chat_encode_prompt(&c, turns[0], with_image, &p);
		int na = nt > 1 ? chat_encode_answer(&c, turns[1], &a) : 0;
		int *pa = xmalloc((size_t)(np + na + 1) * sizeof(int));
		memcpy(pa, p, (size_t)np * sizeof(int));
		if (nt > 1)
			memcpy(pa + np, a, (size_t)na * sizeof(int));
		if ((np + na > nw || !same_ids(pa, np + na, want, np + na)) && bad_pa++ < 2) {
			tap_diag("%s: conversation %d: prompt + answer is not the head of the whole", name, convs);
			tap_diag_ids("got ", pa, np + na);
			tap_diag_ids("want", want, nw);
		}
		int wrong = n < np + na;
		for (int i = 0; i < np + na && !wrong; i++)
			wrong = w[i] != (i >= np ? 1.0f : 0.0f);
		if (nt > 1 && na > 0 && pa[np + na - 1] != c.eos)
			wrong = 1;
		if (wrong && bad_w++ < 2)
			tap_diag("%s: conversation %d: weights are not 0 on the prompt, 1 on the answer + eos",
				 name, convs);
		free(pa);
		free(p);
		if (nt > 1)
			free(a);
		free(ids);
		free(w);
next:
		free(want);
		free(turns);
		cJSON_Delete(j);
	}
	tap_ok(convs > 0 && !bad_conv, "%s: conversation ids equal LLaVA's (HF tokenizers), %d of %d differ",
	       name, bad_conv, convs);
	tap_ok(!bad_pa, "%s: prompt ids + answer ids = the whole tokenized together", name);
	tap_ok(!bad_w, "%s: weights 1 exactly on the answer and its end-of-turn token", name);
	free(data);
	tokenizer_free(t);
}

static void test_render(void)
{
	struct tokenizer *t = tokenizer_load("tests/fixtures/tok/wordlevel.json");
	struct chat c;
	tap_ok(t && chat_init(&c, "llava_v1", t, 4) == 0 && c.eos == 2, "llava_v1: init, eos </s>");
	char *s = chat_render(&c, "What is it?", 1);
	const char *want = "A chat between a curious human and an artificial intelligence assistant. "
			   "The assistant gives helpful, detailed, and polite answers to the human's "
			   "questions. USER: <image>\nWhat is it? ASSISTANT:";
	if (!tap_ok(!strcmp(s, want), "llava_v1: render"))
		tap_diag("got '%s'", s);
	free(s);
	tap_ok(chat_init(&c, "vicuna_v1", t, 4) == 0, "vicuna_v1: init");
	s = chat_render(&c, "Hi", 0);
	size_t sl = strlen(s), tl = strlen(" USER: Hi ASSISTANT:");
	tap_ok(sl > tl && !strcmp(s + sl - tl, " USER: Hi ASSISTANT:") && !strstr(s, "<image>"),
	       "vicuna_v1: render without image");
	free(s);
	tap_ok(chat_init(&c, "seva", t, 4) == 0, "seva: init");
	s = chat_render(&c, "Is there a cat?", 1);
	if (!tap_ok(!strcmp(s, "USER: <image>\nIs there a cat? ASSISTANT:"), "seva: render"))
		tap_diag("got '%s'", s);
	free(s);
	tap_ok(chat_init(&c, "chatml", t, 4) == -1, "unknown template is an error");

	/* the image id is the caller's, even where the tokenizer has its own "<image>" */
	chat_init(&c, "seva", t, 77);
	int *ids;
	int n = chat_encode_prompt(&c, "cat", 1, &ids);
	int found = 0;
	for (int i = 0; i < n; i++)
		found += ids[i] == 77 ? 1 : ids[i] == 4 ? 100 : 0;
	tap_ok(n > 0 && ids[0] == 1 && found == 1, "seva: BOS first, <image> becomes image_token");
	free(ids);
	float *w;
	tap_ok(chat_encode_conversation(&c, NULL, 0, 1, &ids, &w) == -1, "no turns is an error");

	/* per-turn weights: each run of answer weights sums to 1, evenly */
	float pw[] = { 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1 };
	const float want_pw[] = { 0, 0.5f, 0.5f, 0, 0, 0.25f, 0.25f, 0.25f, 0.25f, 0, 1 };
	chat_weigh_per_turn(pw, 11);
	int bad_pw = 0;
	for (int i = 0; i < 11; i++)
		if (pw[i] != want_pw[i] && bad_pw++ == 0)
			tap_diag("weight %d: got %g, want %g", i, pw[i], want_pw[i]);
	tap_ok(!bad_pw, "weigh_per_turn: 2, 4 and 1-token turns weigh 1 each");
	const char *const conv[] = { "Describe the image.", "There is a red circle on the left.",
				     "Is there a star?", "No." };
	int nc = chat_encode_conversation(&c, conv, 4, 1, &ids, &w);
	double total = 0, n_one = 0;
	for (int i = 0; i < nc; i++)
		n_one += w[i];
	chat_weigh_per_turn(w, nc);
	for (int i = 0; i < nc; i++)
		total += w[i];
	if (!tap_ok(nc > 0 && fabs(total - 2) < 1e-6 && n_one > 4, "weigh_per_turn: a two-answer conversation weighs 2"))
		tap_diag("%d ids, %g answer tokens, weights sum to %g", nc, n_one, total);
	free(ids);
	free(w);

	char text[] = "  A red circle.</s> USER: more";
	chat_clean_answer(&c, text, strlen(text));
	if (!tap_ok(!strcmp(text, "A red circle."), "clean_answer: cut at </s>, trimmed"))
		tap_diag("got '%s'", text);
	char text2[] = "\nyes \n";
	chat_clean_answer(&c, text2, strlen(text2));
	tap_ok(!strcmp(text2, "yes"), "clean_answer: trims without a marker");
	/* A NUL byte token is text: the marker after it is still found, and
	 * the length counts past it. */
	char text4[] = " Hello\0 world</s> x";
	size_t n4 = chat_clean_answer(&c, text4, sizeof text4 - 1);
	tap_ok(n4 == 12 && !memcmp(text4, "Hello\0 world", 13),
	       "clean_answer: a NUL inside the answer is kept (%zu bytes)", n4);
	tokenizer_free(t);

	t = tokenizer_load(NPM "tokenizer-llama3/models/tokenizer.json");
	if (t) {
		chat_init(&c, "llava_v1", t, -200);
		char text3[] = "Fine.<|end_of_text|>";
		chat_clean_answer(&c, text3, strlen(text3));
		tap_ok(!strcmp(text3, "Fine."), "clean_answer: the tokenizer's own eos text");
		tokenizer_free(t);
	}
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init(argv[0]);
	tap_chdir_top(argv[0], "tests/fixtures/tok");
	test_render();
	check_conversations("llama2", NPM "tokenizer-llama2/models/tokenizer.json",
			    "tests/fixtures/tok/chat_llama2.jsonl", -200);
	check_conversations("llama3", NPM "tokenizer-llama3/models/tokenizer.json",
			    "tests/fixtures/tok/chat_llama3.jsonl", -200);
	check_conversations("wordlevel", "tests/fixtures/tok/wordlevel.json",
			    "tests/fixtures/tok/chat_wordlevel.jsonl", 4);
	return tap_done();
}
