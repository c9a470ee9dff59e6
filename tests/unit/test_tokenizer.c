/* test_tokenizer — ids and decoded text equal Hugging Face tokenizers' on
 * real LLaMA-2-style and Llama-3 files (npm, make deps) and on two tiny
 * files of our own (tests/fixtures/tok; references made once by
 * tests/ref/tok_reference.js), plus hand-checked cases of each part. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "testutil.h"
#include "tokenizer.h"
#include "util.h"

#define NPM "tests/vendor/node_modules/@lenml/"

static int json_ids(const cJSON *arr, int **ids)
{
	int n = cJSON_GetArraySize(arr), i = 0;
	const cJSON *e;
	*ids = xmalloc((size_t)(n + 1) * sizeof(int));
	cJSON_ArrayForEach(e, arr)
		(*ids)[i++] = e->valueint;
	return n;
}

/* Every line of REF: the ids with and without special tokens, and the
 * decoded text keeping and skipping special tokens. */
static void check_reference(const char *name, const char *tokpath, const char *ref)
{
	struct tokenizer *t;
	char *data;
	if (!load_tokenizer_reference(name, tokpath, ref, &t, &data))
		return;
	int lines = 0, bad[4] = { 0 };
	const char *what[4] = { "ids without special tokens", "ids with special tokens",
				"decode", "decode skipping special tokens" };
	for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
		cJSON *j = cJSON_Parse(line);
		const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
		lines++;
		for (int k = 0; k < 2; k++) {
			int *want, *got;
			int nw = json_ids(cJSON_GetObjectItem(j, k ? "ids_special" : "ids"), &want);
			int ng = tokenizer_encode(t, text, strlen(text), k, &got);
			if (ng != nw || memcmp(got, want, (size_t)nw * sizeof(int))) {
				if (bad[k]++ < 3) {
					tap_diag("%s: %s differ for text %s", name, what[k], cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "text")));
					tap_diag_ids("got ", got, ng);
					tap_diag_ids("want", want, nw);
				}
			}
			free(want);
			free(got);
		}
		int *ids;
		int n = json_ids(cJSON_GetObjectItem(j, "ids_special"), &ids);
		for (int k = 0; k < 2; k++) {
			const char *want = cJSON_GetObjectItem(j, k ? "decoded_skip" : "decoded")->valuestring;
			char *got = tokenizer_decode(t, ids, n, k, NULL);
			if (strcmp(got, want) && bad[2 + k]++ < 3)
				tap_diag("%s: %s: got '%s' want '%s'", name, what[2 + k], got, want);
			free(got);
		}
		free(ids);
		cJSON_Delete(j);
	}
	for (int k = 0; k < 4; k++)
		tap_ok(lines > 0 && bad[k] == 0, "%s: %s equal HF tokenizers' (%d texts, %d differ)", name,
		       what[k], lines, bad[k]);
	free(data);
	tokenizer_free(t);
}

/* Writes JSON to a temporary tokenizer.json and loads it. */
static struct tokenizer *load_inline(const char *json)
{
	char path[] = "/tmp/seva-tok-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, json, strlen(json)) != (ssize_t)strlen(json))
		return NULL;
	close(fd);
	struct tokenizer *t = tokenizer_load(path);
	unlink(path);
	return t;
}

/* Encodes TEXT and compares with the ids in WANT (comma-separated). */
static void expect_ids(const struct tokenizer *t, const char *what, const char *text, int special,
		       const char *want)
{
	int *ids, w[256], nw = 0;
	for (const char *p = want; *p;) {
		char *end;
		w[nw++] = (int)strtol(p, &end, 10);
		p = *end ? end + 1 : end;
	}
	int n = t ? tokenizer_encode(t, text, strlen(text), special, &ids) : -1;
	int ok = n == nw && !memcmp(ids, w, (size_t)n * sizeof(int));
	if (!tap_ok(ok, "%s", what)) {
		if (n >= 0)
			tap_diag_ids("got ", ids, n);
		tap_diag_ids("want", w, nw);
	}
	if (n >= 0)
		free(ids);
}

static void expect_text(const struct tokenizer *t, const char *what, const int *ids, int n,
			int skip, const char *want)
{
	char *got = t ? tokenizer_decode(t, ids, n, skip, NULL) : NULL;
	if (!tap_ok(got && !strcmp(got, want), "%s", what))
		tap_diag("got '%s' want '%s'", got ? got : "(null)", want);
	free(got);
}

/* A hand-made BPE (ids checked with HF tokenizers once): merges a b (0), b c (1), ab c (2):
 * in "abc" the pair a b ranks first, so abc → ab c → abc. */
static void test_bpe_by_hand(void)
{
	const char *json =
		"{\"added_tokens\": [{\"id\": 8, \"content\": \"<x>\", \"special\": true,"
		" \"lstrip\": true, \"rstrip\": false, \"single_word\": false, \"normalized\": false},"
		" {\"id\": 9, \"content\": \"cd\", \"special\": false, \"single_word\": true,"
		" \"lstrip\": false, \"rstrip\": false, \"normalized\": true}],"
		" \"normalizer\": {\"type\": \"Lowercase\"},"
		" \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"},"
		" \"decoder\": null, \"post_processor\": null,"
		" \"model\": {\"type\": \"BPE\", \"unk_token\": \"?\", \"fuse_unk\": true,"
		"  \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"d\": 3, \"ab\": 4, \"bc\": 5, \"abc\": 6, \"?\": 7},"
		"  \"merges\": [[\"a\", \"b\"], [\"b\", \"c\"], [\"ab\", \"c\"]]}}";
	struct tokenizer *t = load_inline(json);
	tap_ok(t != NULL, "hand BPE: loads");
	expect_ids(t, "hand BPE: lowest rank first (abc → ab c → abc)", "abc", 0, "6");
	expect_ids(t, "hand BPE: bc merges when a is not before it", "bcd", 0, "5,3");
	expect_ids(t, "hand BPE: Lowercase normalizer", "ABC", 0, "6");
	expect_ids(t, "hand BPE: fuse_unk joins unknowns into one", "axyzb", 0, "0,7,1");
	expect_ids(t, "hand BPE: lstrip added token eats the space before it", "ab <x>ab", 0, "4,8,4");
	expect_ids(t, "hand BPE: single_word added token only as a whole word", "cd acd cd", 0,
		   "9,0,2,3,9");
	int ids[] = { 4, 8, 2 };
	expect_text(t, "hand BPE: no decoder joins tokens with spaces", ids, 3, 0, "ab <x> c");
	expect_text(t, "hand BPE: skipping special tokens", ids, 3, 1, "ab c");
	tap_ok(t && tokenizer_vocab_size(t) == 10, "hand BPE: vocab size counts added ids");
	tap_ok(t && tokenizer_token_id(t, "<x>") == 8 && tokenizer_token_id(t, "bc") == 5 &&
	       tokenizer_token_id(t, "zz") == -1, "hand BPE: token_id");
	tap_ok(t && !strcmp(tokenizer_token(t, 6), "abc") && tokenizer_token(t, 99) == NULL,
	       "hand BPE: token");
	tokenizer_free(t);
}

/* Metaspace (prepend_scheme first), Digits, Split behaviours, NFKC, and
 * SentencePiece byte fallback with its decoders. */
static void test_parts_by_hand(void)
{
	const char *json =
		"{\"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"special\": true,"
		" \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false}],"
		" \"normalizer\": {\"type\": \"NFKC\"},"
		" \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
		"  {\"type\": \"Digits\", \"individual_digits\": true},"
		"  {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": true}]},"
		" \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"},"
		"  {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\"}]},"
		" \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
		"  {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
		"  \"pair\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],"
		"  \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [0], \"tokens\": [\"<s>\"]}}},"
		" \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<s>\","
		"  \"vocab\": {\"<s>\": 0, \"\\u2581\": 1, \"a\": 2, \"1\": 3, \"2\": 4, \"\\u2581a\": 5,"
		"   \"<0xC3>\": 6, \"<0xA9>\": 7, \"fi\": 8, \"f\": 9, \"i\": 10},"
		"  \"merges\": [\"\\u2581 a\", \"f i\"]}}";
	struct tokenizer *t = load_inline(json);
	tap_ok(t != NULL, "parts: loads");
	/* "a a12" → ▁a ▁a 1 2; é (C3 A9) not in vocab → byte fallback */
	expect_ids(t, "parts: Metaspace first + Digits + BPE", "a a12", 0, "5,5,3,4");
	expect_ids(t, "parts: post-processor adds <s>", "a", 1, "0,5");
	expect_ids(t, "parts: byte fallback", "é", 0, "1,6,7");
	expect_ids(t, "parts: NFKC folds the ligature", "\xef\xac\x81", 0, "1,8");
	expect_ids(t, "parts: prepend_scheme first: not after an added token", "<s>a", 0, "0,2");
	int ids[] = { 5, 6, 7, 5, 6 };
	expect_text(t, "parts: ByteFallback + Metaspace decode (lone byte → U+FFFD)", ids, 5, 0,
		    "a\xc3\xa9 a\xef\xbf\xbd");
	int *out;
	tap_ok(t && tokenizer_encode(t, "a\xff", 2, 0, &out) == -1, "parts: invalid UTF-8 is an error");
	tap_ok(t && tokenizer_bos(t) == 0, "parts: bos from the post-processor");
	tokenizer_free(t);

	const char *split =
		"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"},"
		" \"behavior\": \"MergedWithPrevious\", \"invert\": false},"
		" \"model\": {\"type\": \"WordLevel\", \"unk_token\": \"?\","
		"  \"vocab\": {\"?\": 0, \"a-\": 1, \"b-\": 2, \"c\": 3, \"-\": 4}}}";
	t = load_inline(split);
	expect_ids(t, "parts: Split MergedWithPrevious", "a-b-c", 0, "1,2,3");
	expect_ids(t, "parts: WordLevel unknown → unk", "-x", 0, "4,0");
	tokenizer_free(t);

	tap_ok(load_inline("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}") == NULL,
	       "parts: unsupported model is an error");
	tap_ok(load_inline("{\"model\": ") == NULL, "parts: bad JSON is an error");
	tap_ok(tokenizer_load("/nonexistent/tokenizer.json") == NULL, "parts: missing file is an error");
}

/* continuing_subword_prefix "##" and end_of_word_suffix "</w>" (ids and
 * text checked with HF tokenizers once): a missing "##o</w>" leaves l and
 * an unknown; the merged token drops the right part's prefix. */
static void test_prefix_suffix(void)
{
	const char *json =
		"{\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"},"
		" \"decoder\": {\"type\": \"BPEDecoder\", \"suffix\": \"</w>\"},"
		" \"model\": {\"type\": \"BPE\", \"unk_token\": \"[U]\","
		"  \"continuing_subword_prefix\": \"##\", \"end_of_word_suffix\": \"</w>\","
		"  \"vocab\": {\"[U]\": 0, \"l\": 1, \"##o\": 2, \"##w</w>\": 3, \"lo\": 4,"
		"   \"low</w>\": 5, \"##e\": 6, \"##r</w>\": 7, \"o</w>\": 8, \"l</w>\": 9,"
		"   \"##w\": 10, \"low\": 11},"
		"  \"merges\": [[\"l\", \"##o\"], [\"lo\", \"##w</w>\"], [\"lo\", \"##w\"]]}}";
	struct tokenizer *t = load_inline(json);
	expect_ids(t, "prefix/suffix: words, unknowns", "low lower lo l o", 0, "5,11,6,7,1,0,9,8");
	expect_ids(t, "prefix/suffix: the prefix on inner characters", "lowlow", 0, "11,0,2,3");
	int ids[] = { 5, 11, 6, 7, 1, 0, 9, 8 };
	expect_text(t, "prefix/suffix: BPEDecoder", ids, 8, 0, "low low##e##r l[U]l o");
	tokenizer_free(t);
}

static void test_ids(void)
{
	struct tokenizer *t = tokenizer_load(NPM "tokenizer-llama2/models/tokenizer.json");
	tap_ok(t && tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 && tokenizer_vocab_size(t) == 32000,
	       "llama2: bos 1, eos 2, 32000 ids");
	tokenizer_free(t);
	t = tokenizer_load(NPM "tokenizer-llama3/models");
	tap_ok(t && tokenizer_bos(t) == 128000 && tokenizer_eos(t) == 128001 &&
	       tokenizer_vocab_size(t) == 128256, "llama3 (directory): bos, eos, 128256 ids");
	tokenizer_free(t);
	t = tokenizer_load("tests/fixtures/tok/wordlevel.json");
	tap_ok(t && tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 &&
	       tokenizer_token_id(t, "<image>") == 4, "wordlevel: bos 1, eos 2, <image> 4");
	tokenizer_free(t);
}

/* transformers' non-legacy LLaMA layout, made from the LLaMA-2 file as
 * tok_reference.js makes it: no normalizer, Metaspace prepending only at
 * the start of the text. Returns a temporary path (the caller unlinks it). */
static char *metaspace_variant(const char *src)
{
	size_t len;
	char *data = (char *)read_file(src, &len);
	cJSON *j = data ? cJSON_ParseWithLength(data, len) : NULL;
	free(data);
	if (!j)
		return NULL;
	cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateNull());
	cJSON *pt = cJSON_CreateObject();
	cJSON_AddStringToObject(pt, "type", "Metaspace");
	cJSON_AddStringToObject(pt, "replacement", "\xe2\x96\x81");
	cJSON_AddStringToObject(pt, "prepend_scheme", "first");
	cJSON_AddFalseToObject(pt, "split");
	cJSON_ReplaceItemInObject(j, "pre_tokenizer", pt);
	char *text = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	char *path = xstrdup("/tmp/seva-metaspace-XXXXXX");
	int fd = mkstemp(path);
	int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	if (fd >= 0)
		close(fd);
	free(text);
	if (!ok) {
		free(path);
		return NULL;
	}
	return path;
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init(argv[0]);
	tap_chdir_top(argv[0], "tests/fixtures/tok");
	test_bpe_by_hand();
	test_parts_by_hand();
	test_prefix_suffix();
	test_ids();
	check_reference("llama2", NPM "tokenizer-llama2/models/tokenizer.json",
			"tests/fixtures/tok/llama2.jsonl");
	char *meta = metaspace_variant(NPM "tokenizer-llama2/models/tokenizer.json");
	if (tap_ok(meta != NULL, "llama2_metaspace: derive the file from the LLaMA-2 one")) {
		check_reference("llama2_metaspace", meta, "tests/fixtures/tok/llama2_metaspace.jsonl");
		unlink(meta);
		free(meta);
	}
	check_reference("llama3", NPM "tokenizer-llama3/models/tokenizer.json",
			"tests/fixtures/tok/llama3.jsonl");
	check_reference("bytelevel", "tests/fixtures/tok/bytelevel.json",
			"tests/fixtures/tok/bytelevel.jsonl");
	check_reference("wordlevel", "tests/fixtures/tok/wordlevel.json",
			"tests/fixtures/tok/wordlevel.jsonl");
	return tap_done();
}
