/* prompt — what the model tools (seva-generate, seva-sft, seva-dpo) share
 * between a record and the engine: the model bundle (weights, tokenizer,
 * chat template, stop ids) and an image field as the model's input tensor
 * (a sample's question and turns are conversation.h's); the augmented view
 * too. Depends on vlm, tokenizer, chat, image, augment, sample, util. */
#ifndef SEVA_PROMPT_H
#define SEVA_PROMPT_H

#include "chat.h"
#include "sample.h"
#include "tokenizer.h"
#include "vlm.h"

struct cJSON;

struct lm {
	struct vlm *m;
	struct tokenizer *tok;
	struct chat chat;
	int stop_ids[8];   /* end of turn and eos (tokenizer, config.json,
			      generation_config.json), deduplicated */
	int n_stop;
};

/* Loads the model directory DIR and its tokenizer.json; sets up the chat
 * template named by config.json (seva_chat_template, default llava_v1);
 * generation_config.json's eos_token_id (an id or a list) adds stop ids;
 * tokenizer_config.json's add_bos_token false leaves BOS out of prompts.
 * -1 with a message naming DIR on failure. */
int lm_load(struct lm *lm, const char *dir);
/* lm_load without the weights (LM->m NULL): the tokenizer, chat template,
 * BOS rule and stop ids exactly as the model tools get them, from
 * config.json (the image token in either spelling), tokenizer.json,
 * tokenizer_config.json and generation_config.json. For seva-tok. */
int lm_load_text(struct lm *lm, const char *dir);
/* The same for a model made in memory (seva-sft from a config): takes
 * ownership of M and TOK. -1 with a message. */
int lm_attach(struct lm *lm, struct vlm *m, struct tokenizer *tok);
void lm_release(struct lm *lm);

/* Decodes the image field F and writes the model's input tensor CHW
 * (3 * S * S floats, S = preprocess_side(&m->pre)) as m->pre says. -1 with a
 * reason in *WHY ("field 'png': cannot decode image: ..."; the thread's
 * static buffer, valid until its next call). */
int prompt_image_tensor(const struct vlm *m, const struct field *f, float *chw, const char **why);

/* The augmented view of S as the model's input tensor CHW, as SeVa's
 * rejected answer saw it (and mDPO's corrupted image is): the field that
 * augment_base_field() names for the recipe AUG (an aug.json object, or
 * NULL) — aug.png for pixel-space recipes, the clean image when the noise
 * is in tensor space — then AUG's tensor-space ops, seeded by S's key.
 * -1 with a reason in *WHY. */
int prompt_aug_tensor(const struct vlm *m, const struct sample *s, const struct cJSON *aug,
		      float *chw, const char **why);

/* Every token of a sequence fits the context: prompt ids with at most one
 * image token (which expands to cfg.img_tokens rows). */
int prompt_decoder_len(const struct vlm *m, const int *ids, int n);

#endif
