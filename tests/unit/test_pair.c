/* test_pair — answer cleaning, normalization, lengths. */
#include <stdlib.h>
#include <string.h>

#include "pair.h"
#include "tap.h"

static void is(char *got, const char *want, const char *what)
{
	if (!tap_ok(got && !strcmp(got, want), "%s", what))
		tap_diag("got '%s' want '%s'", got ? got : "(null)", want);
	free(got);
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
	return tap_done();
}
