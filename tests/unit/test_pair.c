/* test_pair — answer cleaning, normalization, lengths, the question rule. */
#include <stdlib.h>
#include <string.h>

#include "pair.h"
#include "sample.h"
#include "tap.h"

static void is(char *got, const char *want, const char *what)
{
	if (!tap_ok(got && !strcmp(got, want), "%s", what))
		tap_diag("got '%s' want '%s'", got ? got : "(null)", want);
	free(got);
}

static void question(const char *json, const char *want, const char *what)
{
	struct sample s;
	const char *why = NULL;
	sample_init(&s);
	sample_set_key(&s, "k");
	if (json)
		sample_set(&s, "json", FIELD_JSON, json, strlen(json));
	char *q = pair_question(&s, &why);
	if (want)
		is(q, want, what);
	else if (!tap_ok(!q && why, "%s", what))
		tap_diag("got '%s'", q), free(q);
	sample_release(&s);
}

int main(void)
{
	is(pair_clean("  A red circle.</s>"), "A red circle.", "end marker and leading space removed");
	is(pair_clean("Yes<|eot_id|>\n<|start_header_id|>"), "Yes", "cut at the first marker");
	is(pair_clean("x <|im_end|> y </s>"), "x", "earliest of several markers");
	is(pair_clean("no marker\n"), "no marker", "trailing newline trimmed");
	is(pair_clean(""), "", "empty stays empty");
	is(pair_normalize("  Yes,\tTHE  cat.\n"), "yes, the cat.", "case and whitespace");
	is(pair_normalize("ÉCOLE Straße"), "école strasse", "Unicode case folding");
	is(pair_normalize("bad \xff UTF-8 X"), "bad \xff utf-8 x", "invalid UTF-8 falls back to ASCII");
	tap_ok(pair_length("héllo") == 5, "length counts characters, not bytes (%zu)", pair_length("héllo"));
	tap_ok(pair_length("") == 0, "empty length 0");
	question("{\"prompt\":\"<image>\\nWhat is it?\"}", "What is it?", "json.prompt, <image> removed");
	question("{\"conversations\":[{\"from\":\"gpt\",\"value\":\"x\"},{\"from\":\"human\",\"value\":\"Q?\\n<image>\"}]}",
		 "Q?", "first human turn of conversations");
	question("{\"prompt\":3}", NULL, "non-string prompt refused");
	question("{\"other\":1}", NULL, "no prompt refused");
	question(NULL, NULL, "no json refused");
	return tap_done();
}
