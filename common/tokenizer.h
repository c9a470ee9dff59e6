/* tokenizer — Hugging Face tokenizer.json: byte-level BPE (GPT-2, Llama-3,
 * Qwen: the file's own pre-tokenizer regex run through PCRE2),
 * SentencePiece-style BPE with byte fallback and the ▁ marker (LLaMA-2,
 * Vicuna, LLaVA-1.5), and WordLevel (the embedded model). Added and special
 * tokens are matched in the text first. Ids equal HF tokenizers' ids on the
 * same file and text. Chat templates live in chat.h. */
#ifndef SEVA_TOKENIZER_H
#define SEVA_TOKENIZER_H

#include <stddef.h>

struct tokenizer;

/* Ids index dense tables: a file whose ids go higher is refused at load
 * rather than costing 4 bytes an id (the largest vocabularies in use hold
 * about 2^18 tokens). A model bounds them further by its vocab_size. */
#define TOKENIZER_MAX_ID ((1 << 22) - 1)

/* PATH is a tokenizer.json or a directory holding one. NULL with a message
 * naming the file and key on failure. */
struct tokenizer *tokenizer_load(const char *path);
void tokenizer_free(struct tokenizer *t);

/* Encodes TEXT (LEN bytes of UTF-8). With ADD_SPECIAL, applies the file's
 * post-processor (e.g. LLaMA's leading <s>). *ids is malloc'd. Returns the
 * number of ids, or -1 with a message. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
		     int add_special, int **ids);
/* Decodes ids to malloc'd UTF-8 text (the file's decoder; skips special
 * tokens when SKIP_SPECIAL), NUL-terminated, its length in *LEN when LEN is
 * not NULL: a <0x00> byte token decodes to a NUL inside the text, as in
 * transformers ([22557, 3, 1526] is "Hello\0 world"), so the length is
 * the text's, not strlen's. */
char *tokenizer_decode(const struct tokenizer *t, const int *ids, int n, int skip_special,
		       size_t *len);
/* Id of a token string (vocab or added), or -1. */
int tokenizer_token_id(const struct tokenizer *t, const char *token);
/* The token string of ID (borrowed), or NULL. */
const char *tokenizer_token(const struct tokenizer *t, int id);
int tokenizer_vocab_size(const struct tokenizer *t);
/* Why T's added ids do not fit a model of VOCAB_SIZE ("FILE: added_tokens[3]
 * '<x>': id 1000 not below the model's vocab_size 128 ..."; static), or
 * NULL. Ids below the tokenizer's own count (vocabulary + added tokens)
 * pass: a tokenizer longer than the embedding loads, as in transformers. */
const char *tokenizer_unfit(const struct tokenizer *t, int vocab_size);
/* bos/eos ids as tokenizer_config.json / the post-processor say; -1 if none. */
int tokenizer_bos(const struct tokenizer *t);
int tokenizer_eos(const struct tokenizer *t);

#endif
