/* fuzz_tokenizer — libFuzzer harness for tokenizer.json (and, after a line
 * "#CFG#", tokenizer_config.json): load, then encode texts of every kind
 * with and without special tokens and decode the ids back. Every id an
 * encoding gives must be one of the file's. */
#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const texts[] = {
		"Hello world", "  two  spaces\tand\nlines ", "1234567 3.14", "caf\xc3\xa9 \xf0\x9f\x98\x80",
		"<s>[INST] <image>\nWhat is it? [/INST]</s>", "", "bad \xff\xfe utf-8",
	};
	const uint8_t *cfg;
	size_t ncfg, ntok = fuzz_split(data, size, "\n#CFG#\n", &cfg, &ncfg);
	fuzz_put("tokenizer.json", data, ntok);
	if (cfg)
		fuzz_put("tokenizer_config.json", cfg, ncfg);
	else
		fuzz_rm("tokenizer_config.json");
	struct tokenizer *t = tokenizer_load(fuzz_dir());
	if (!t)
		return 0;
	int V = tokenizer_vocab_size(t);
	if (V < 0 || V > TOKENIZER_MAX_ID + 1)
		abort();
	for (size_t k = 0; k < sizeof texts / sizeof *texts; k++)
		for (int special = 0; special < 2; special++) {
			int *ids = NULL;
			int n = tokenizer_encode(t, texts[k], strlen(texts[k]), special, &ids);
			for (int i = 0; i < n; i++)
				if (ids[i] < 0 || ids[i] >= V)
					abort(); /* an id that is not the file's */
			for (int skip = 0; skip < 2 && n >= 0; skip++)
				free(tokenizer_decode(t, ids, n, skip, NULL));
			free(ids);
		}
	int some[5] = {0, 1, 2, V - 1, V / 2};
	for (int i = 0; i < 5; i++)
		if (some[i] < 0)
			some[i] = 0;
	if (V > 0)
		free(tokenizer_decode(t, some, 5, 0, NULL));
	tokenizer_free(t);
	return 0;
}
