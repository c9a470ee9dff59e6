/* chat — chat templates: how a question (and an answer) become the token
 * ids the model sees. llava_v1 / vicuna_v1: "SYSTEM USER: <image>\n{q}
 * ASSISTANT:" with answers ended by "</s>"; "seva": the embedded model's.
 * The image placeholder becomes cfg.image_token_index (spliced in when the
 * tokenizer has no "<image>" token, as original LLaVA does). */
#ifndef SEVA_CHAT_H
#define SEVA_CHAT_H

#include "tokenizer.h"

struct chat {
	const char *name;        /* template name */
	const struct tokenizer *tok;
	int image_token;         /* id that marks the image position */
	const char *image_block; /* what a question's image becomes: "<image>" (chat_init),
				    the family's prompt layout (lm_attach) */
	int eos;                 /* end-of-turn id appended to answers */
	int no_bos;              /* 1: no BOS first (the template's choice, or
				    tokenizer_config.json's add_bos_token false) */
};

/* -1 with a message if NAME is unknown. */
int chat_init(struct chat *c, const char *name, const struct tokenizer *tok, int image_token);
/* The rendered prompt text for QUESTION (with the image placeholder when
 * WITH_IMAGE), malloc'd: what seva-tok --template shows. */
char *chat_render(const struct chat *c, const char *question, int with_image);
/* Prompt ids (BOS, template, image token, question, assistant tag), malloc'd
 * in *ids; returns the count or -1. */
int chat_encode_prompt(const struct chat *c, const char *question, int with_image, int **ids);
/* Answer ids as they follow the prompt (leading space handling as the
 * template needs) plus the end-of-turn token; returns the count or -1. */
int chat_encode_answer(const struct chat *c, const char *answer, int **ids);
/* A whole conversation for supervised training: TURNS alternate human,
 * assistant (an odd count ends with an open prompt); the image placeholder
 * goes in the first human turn when WITH_IMAGE. Ids as chat_encode_prompt
 * and chat_encode_answer make them, turn after turn; *weights is 1 on the
 * assistant tokens (end-of-turn included), 0 elsewhere. Both malloc'd;
 * returns the count or -1 with a message. */
int chat_encode_conversation(const struct chat *c, const char *const *turns, int n_turns,
			     int with_image, int **ids, float **weights);
/* Rescales the answer weights W (n of them, as chat_encode_conversation
 * makes) so that each turn — a run of nonzero weights — sums to 1. */
void chat_weigh_per_turn(float *w, int n);
/* Strips template end markers ("</s>") and surrounding space from the N
 * bytes of generated TEXT, in place (NUL bytes in it are text); returns
 * the new length, and TEXT stays NUL-terminated. */
size_t chat_clean_answer(const struct chat *c, char *text, size_t n);

#endif
