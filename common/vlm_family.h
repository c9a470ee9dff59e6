/* vlm_family — what a model family supplies to the shared model code, and
 * the config.json readers it uses. A family is one file (llava.c,
 * idefics3.c): it reads its config.json keys into struct vlm_config, picks
 * the parts (vision tower options, connector, decoder), names its tensors,
 * reads and writes its image processor's file, and says how a prompt holds
 * the image. The shared code (vlm.c, decode.c, checkpoint.c, config.c,
 * prompt.c) asks the family and never tests which one it is. Private to
 * the model module. */
#ifndef SEVA_VLM_FAMILY_H
#define SEVA_VLM_FAMILY_H

#include <cjson/cJSON.h>

#include "vlm.h"

/* Where a value comes from, for messages: "DIR/config.json: text_config.hidden_size: ...".
 * The first error is kept so that one bad file gives one clear line. */
struct jctx {
	const char *file;
	const char *sect; /* "vision_config.", "text_config." or "" */
	int err;
};

/* The readers of config.c. Absent and JSON null both give DEF; a value of
 * the wrong type or outside [MIN, MAX] records an error in C (jerr). */
void jerr(struct jctx *c, const char *key, const char *what);
const cJSON *jget(const cJSON *o, const char *key);
/* LIST: the key may be a list of integers, whose first one is taken. */
long jint_ex(struct jctx *c, const cJSON *o, const char *key, long def, long min, long max,
	     int list);
long jint(struct jctx *c, const cJSON *o, const char *key, long def, long min, long max);
double jnum(struct jctx *c, const cJSON *o, const char *key, double def, double min, double max);
int jbool(struct jctx *c, const cJSON *o, const char *key, int def);
const char *jstr(struct jctx *c, const cJSON *o, const char *key, const char *def);
/* "gelu", "quick_gelu", "gelu_pytorch_tanh" (ALLOW bit 1), "silu" (bit 2). */
int jact(struct jctx *c, const char *key, const char *s, int allow, enum act *out);
/* A model_type we do not run, with the reason when KNOWN (pairs, NULL-ended) names it. */
void jrefuse(struct jctx *c, const char *key, const char *type, const char *supported,
	     const char *const (*known)[2]);
/* An image processor's do_rescale/rescale_factor and do_normalize/
 * image_mean/image_std (a number or three) from J into PRE; the families'
 * processors share them. */
void vlm_preprocess_scale(struct jctx *c, const cJSON *j, struct preprocess *pre);
/* The same keys written back, after "resample" as Pillow numbers it, in
 * that order: the writer of each family's processor file. */
void vlm_preprocess_scale_json(cJSON *j, const struct preprocess *pre);
/* The LLaMA/Mistral decoder from text_config T (TOP: the file, for keys
 * older files put there). */
void vlm_config_text(struct vlm_config *cfg, struct jctx *c, const cJSON *t, const cJSON *top);
/* The decoder's keys written back as text_config. */
void vlm_config_text_json(cJSON *t, const struct vlm_config *c);
/* A float as the shortest decimal that reads back as the same float. */
cJSON *vlm_float_json(float f);

#define INT_BIG (1L << 30)

struct vlm_family {
	const char *model_type;     /* config.json's model_type */
	const char *architecture;   /* config.json's architectures[0] as seva writes it */
	/* Tensor names: the vision tower's prefix (before "embeddings.",
	 * "encoder.layers.N."), the connector's tensors (as many as the
	 * connector has, in its order), the decoder's prefix (before
	 * "embed_tokens", "layers.N.", "norm"), the lm head. */
	const char *vision_prefix;
	const char *connector_names[4];
	const char *decoder_prefix;
	const char *head_name;
	/* The decoder's module path as transformers names it, as a regular
	 * expression (PEFT matches target_modules given as a string against
	 * every module's full name): adapters then name the decoder's
	 * projections only, not the vision tower's of the same names. NULL:
	 * target_modules is the list of names. */
	const char *peft_decoder;
	/* Other layouts of the same names that files use: prefix from → to,
	 * ending with a NULL pair. */
	const char *const (*layouts)[2];
	/* The table's names as transformers 5 names the modules (prefix from →
	 * to, NULL-ended; NULL: the same): a PEFT adapter's keys, which PEFT
	 * matches against the loaded model's modules. */
	const char *const (*module_layout)[2];
	/* The chat template of a config that names none. */
	const char *chat_template;
	/* The prompt layout: what the image placeholder of a question becomes,
	 * its one "<image>" the image token that the forward expands to
	 * img_tokens rows. */
	const char *image_block;

	/* Reads the family's keys of config.json J (the decoder is read by
	 * vlm_config_text, which this calls with the right object). */
	void (*config_load)(struct vlm_config *cfg, struct jctx *c, const cJSON *j);
	/* Sets the parts (v_cls, connector, ...) and checks what only the
	 * family knows; -1 with a message naming WHERE. */
	int (*config_finish)(struct vlm_config *cfg, const char *where);
	/* Writes the family's keys of config.json, TORCH_DTYPE among them;
	 * text_config (the decoder's) is added after them. */
	void (*config_json)(cJSON *j, const struct vlm_config *c, const char *torch_dtype);
	/* preprocessor_config.json J (NULL: no file) into PRE. */
	void (*preprocess_load)(struct preprocess *pre, struct jctx *c, const cJSON *j,
				const struct vlm_config *cfg);
	char *(*preprocess_json)(const struct preprocess *p, const struct vlm_config *cfg);
	/* processor_config.json J against the model; NULL: nothing to check. */
	void (*processor_check)(struct jctx *c, const cJSON *j, const struct vlm_config *cfg);
};

extern const struct vlm_family vlm_family_llava, vlm_family_idefics3, vlm_family_smolvlm;

/* The family of CFG (LLaVA when unset). */
const struct vlm_family *vlm_family_of(const struct vlm_config *cfg);

#endif
