/* test_conversation — the question and the turns of a sample, one rule for
 * every tool: roles, the <image> placeholder, trimming. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "conversation.h"
#include "sample.h"
#include "tap.h"

static void is(char *got, const char *want, const char *what)
{
	if (!tap_ok(got && !strcmp(got, want), "%s", what))
		tap_diag("got '%s' want '%s'", got ? got : "(null)", want);
	free(got);
}

static void with_json(struct sample *s, const char *json)
{
	sample_init(s);
	sample_set_key(s, "k");
	if (json)
		sample_set(s, "json", FIELD_JSON, json, strlen(json));
}

/* The question of a sample with field json JSON: WANT, or refused (NULL)
 * with a reason containing WHY. */
static void question(const char *json, const char *want, const char *why_has, const char *what)
{
	struct sample s;
	const char *why = NULL;
	with_json(&s, json);
	char *q = conversation_question(&s, &why);
	if (want) {
		is(q, want, what);
	} else if (!tap_ok(!q && why && strstr(why, why_has), "%s", what)) {
		tap_diag("got '%s', reason '%s'", q ? q : "(null)", why ? why : "(null)");
		free(q);
	}
	sample_release(&s);
}

static void turns(const char *json, int want_n, const char *const *want, const char *what)
{
	struct sample s;
	const char *why = NULL;
	char **t;
	with_json(&s, json);
	int n = conversation_turns(&s, &t, &why);
	int ok = n == want_n;
	for (int i = 0; ok && i < n; i++)
		ok = !strcmp(t[i], want[i]);
	if (!tap_ok(ok, "%s", what)) {
		tap_diag("%d turns (want %d), reason '%s'", n, want_n, n < 0 && why ? why : "");
		for (int i = 0; i < n; i++)
			tap_diag("turn %d: '%s'", i, t[i]);
	}
	if (n > 0)
		conversation_turns_free(t, n);
	sample_release(&s);
}

int main(void)
{
	is(conversation_strip_image("<image>\nWhat is it?"), "What is it?", "placeholder first, with its newline");
	is(conversation_strip_image("What is it?\n<image>"), "What is it?", "placeholder last: the newline before it trimmed");
	is(conversation_strip_image(" \t<image>\r\nQ?\r\n "), "Q?", "white space of every kind trimmed at both ends");
	is(conversation_strip_image("A <image>\nB"), "A B", "placeholder inside");
	is(conversation_strip_image("x"), "x", "no placeholder");
	is(conversation_strip_image(""), "", "empty");
	tap_ok(conversation_role("human") == 0 && conversation_role("user") == 0 && conversation_role("gpt") == 1 &&
		       conversation_role("assistant") == 1 && conversation_role("system") == -1,
	       "roles: human and user ask, gpt and assistant answer, others neither");

	question("{\"prompt\":\"<image>\\nWhat is it?\"}", "What is it?", NULL, "json.prompt, <image> removed");
	question("{\"conversations\":[{\"from\":\"gpt\",\"value\":\"x\"},{\"from\":\"human\",\"value\":\"Q?\\n<image>\"}]}",
		 "Q?", NULL, "the first human turn of conversations");
	question("{\"conversations\":[{\"from\":\"user\",\"value\":\"<image>\\nQ?\"}]}", "Q?", NULL,
		 "a \"user\" turn asks too");
	question("{\"prompt\":null,\"conversations\":[{\"from\":\"human\",\"value\":\"Q?\"}]}", "Q?", NULL,
		 "a null prompt falls back to conversations");
	question("{\"conversations\":[{\"from\":\"gpt\",\"value\":\"x\"}]}", NULL, "no human turn", "no asking turn refused");
	question("{\"prompt\":3}", NULL, "not a string", "non-string prompt refused");
	question("{\"other\":1}", NULL, "no json.prompt", "no prompt refused");
	question(NULL, NULL, "no json", "no json refused");
	question("{not json", NULL, "not valid JSON", "invalid json named as such");

	cJSON *conv = cJSON_Parse("[{\"from\":\"user\",\"value\":\"Q?\\n<image>\"}]");
	is(conversation_first_question(conv), "Q?", "first_question: the rule seva-cat --llava uses");
	cJSON_Delete(conv);

	turns("{\"prompt\":\"<image>\\nQ\",\"answer\":\" A \"}", 2, (const char *[]){ "Q", " A " },
	      "prompt + answer: the answer as it is");
	turns("{\"conversations\":[{\"from\":\"user\",\"value\":\"<image>\\nQ1\"},{\"from\":\"assistant\",\"value\":\"A1\"},"
	      "{\"from\":\"human\",\"value\":\"Q2\"},{\"from\":\"gpt\",\"value\":\"A2\"},{\"from\":\"human\",\"value\":\"Q3\"}]}",
	      4, (const char *[]){ "Q1", "A1", "Q2", "A2" }, "conversations in both spellings; the unanswered last dropped");
	turns("{\"conversations\":[{\"from\":\"gpt\",\"value\":\"A\"},{\"from\":\"human\",\"value\":\"Q\"}]}", -1, NULL,
	      "turns that do not alternate refused");
	return tap_done();
}
