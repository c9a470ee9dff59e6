/* vlm — a vision-language model as a composition (DESIGN sec. 4): a ViT
 * vision tower (CLIP: class token, pre-LayerNorm | SigLIP: patch bias, no
 * class token, post-LayerNorm), a connector (two-layer MLP | pixel shuffle
 * and one linear map), a LLaMA/Mistral decoder, and a prompt layout (where
 * the image's rows go, which chat template). A family (LLaVA, Idefics3)
 * names the parts and their tensors: one file each behind vlm_family.h.
 * Parameters, gradients, optimizer state and activations each live in one
 * allocation with named views (llm.c).
 *
 * Files: vlm.c (layout, forward, backward, LoRA), decode.c (generation with
 * a KV cache), config.c (config.json: the shared decoder keys and the
 * family dispatch), llava.c and the other family files, checkpoint.c
 * (load/save HF directories, PEFT adapters, random init), safetensors.c
 * (the file format). Depends on tensor, image, util. */
#ifndef SEVA_VLM_H
#define SEVA_VLM_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

enum act { ACT_GELU, ACT_QUICK_GELU, ACT_SILU, ACT_GELU_TANH };

/* The connector from vision features to decoder rows. */
enum vlm_connector {
	VLM_CONN_MLP2,    /* linear_1, act, linear_2 (LLaVA's projector) */
	VLM_CONN_SHUFFLE, /* pixel shuffle by r, then one linear map without bias (Idefics3) */
};

struct vlm_family;

struct vlm_config {
	const struct vlm_family *family; /* NULL: LLaVA (vlm_config_finish sets it) */
	/* vision tower (CLIPVisionConfig, SiglipVisionConfig) */
	int image_size, patch_size, num_channels;
	int v_hidden, v_inter, v_layers, v_heads; /* VC, VI, VL, VNH */
	enum act v_act;
	float v_eps;
	int feature_layer;     /* HF vision_feature_layer: index into hidden states, negative from the end */
	int drop_cls;          /* vision_feature_select_strategy "default" (1) or "full" (0) */
	/* the tower's parts, set by the family in vlm_config_finish */
	int v_cls;             /* a class token before the patches (CLIP) */
	int v_pre_ln;          /* LayerNorm on the embeddings (CLIP's pre_layrnorm) */
	int v_post_ln;         /* LayerNorm on the features (SigLIP's post_layernorm) */
	int v_patch_bias;      /* the patch convolution has a bias (SigLIP) */
	int v_frac_pos;        /* patch positions by fractional buckets (Idefics3's
				  embeddings), else the patch index */
	/* connector */
	enum vlm_connector connector;
	enum act proj_act;     /* MLP2 */
	int shuffle;           /* SHUFFLE: the pixel-shuffle factor r */
	/* text decoder (LlamaConfig) */
	int hidden, inter, layers, heads, kv_heads, vocab, max_pos; /* C, FF, L, NH, NKV, V */
	float rms_eps, rope_theta;
	int tie_embeddings;
	int image_token_index;
	int bos_id, eos_id, pad_id;   /* -1 where unknown */
	char chat_template[32];       /* "llava_v1" (default), "vicuna_v1", "seva" */
	/* derived */
	int np;        /* patches per image (NP) = (image_size/patch_size)^2 */
	int vt;        /* the tower's rows per image (VT): np (+1 with a class token) */
	int v_used;    /* vision layers actually run for the chosen feature layer */
	int feat_tokens; /* feature rows per image (FT), the connector's input:
			    vt, less the class token if drop_cls */
	int img_tokens;/* embeddings per image in the decoder (IT): FT, / r² when shuffled */
};

/* Parts that can train independently (bit mask). */
enum {
	VLM_PART_VISION = 1,
	VLM_PART_PROJECTOR = 2,
	VLM_PART_DECODER = 4, /* embeddings, layers, final norm, lm head */
	VLM_PART_LORA = 8,
};

/* LoRA targets (bit mask), PEFT module names q_proj ... down_proj. */
enum {
	LORA_Q = 1, LORA_K = 2, LORA_V = 4, LORA_O = 8,
	LORA_GATE = 16, LORA_UP = 32, LORA_DOWN = 64,
	LORA_ALL = 127,
};

/* One named tensor of the model: its Hugging Face name in the
 * `language_model.model.*` layout, a view into the flat parameter buffer
 * and (when training) the matching view of the gradient buffer. */
struct vlm_tensor {
	char name[128];
	float *data, *grad;
	int ndim;
	long shape[4];
	long numel;
	int part;        /* VLM_PART_* */
	int optional;    /* may be absent from a checkpoint (e.g. post_layernorm) */
};

struct vlm_lora {
	int rank;
	float alpha;     /* scale = alpha / rank, or alpha / sqrt(rank) with rslora */
	int rslora;      /* rank-stabilised LoRA (Kalajdzievski 2023; PEFT's use_rslora) */
	unsigned targets;
	int enabled;     /* 0: the model computes as the base (the DPO reference) */
	/* PEFT's lora_dropout: each element of an adapter's input is zeroed
	 * with probability DROPOUT (the rest scaled by 1 / (1 - DROPOUT)) on
	 * the LoRA path only, in the forwards given vlm_batch.drop_key. The
	 * mask is a function of (DROPOUT_SEED, the sequence's drop_key, the
	 * row's position, the layer and module, the element), so a forward
	 * and its backward, and a resumed run, draw the same one. */
	float dropout;
	uint64_t dropout_seed;
};

struct vlm {
	struct vlm_config cfg;
	struct preprocess pre;
	char *dir;                 /* directory it was loaded from, or NULL */
	/* parameters: one allocation, views in `tensors` (order: vision,
	 * projector, decoder, lora) */
	float *params;
	long nparams;
	float *grads;              /* same layout, NULL until vlm_train_init */
	struct vlm_tensor *tensors;
	int ntensors;
	struct vlm_lora lora;
	unsigned trainable;        /* VLM_PART_* mask */
	void *impl;                /* activations, caches: private to vlm.c/decode.c */
};

/* --- config.c --- */
/* Reads config.json (LlavaConfig), filling missing fields with the HF class
 * defaults (CLIPVisionConfig, LlamaConfig). -1 with a message naming the
 * file and key on bad input. */
int vlm_config_load(struct vlm_config *cfg, const char *path);
/* Reads preprocessor_config.json; absent file → CLIP defaults for cfg's
 * image size. */
int vlm_preprocess_load(struct preprocess *pre, const char *path, const struct vlm_config *cfg);
/* Checks processor_config.json (LlavaProcessor) against CFG: absent file or
 * null members → 0; a patch_size or vision_feature_select_strategy that
 * differs from the model's → -1 with a message naming the file and key. */
int vlm_processor_check(const char *path, const struct vlm_config *cfg);
/* Fills derived fields; -1 with a message if the shapes are inconsistent. */
int vlm_config_finish(struct vlm_config *cfg);
/* The family's prompt layout: the text a question's image placeholder
 * becomes ("<image>"; Idefics3's block around it). */
const char *vlm_image_block(const struct vlm_config *cfg);

/* --- vlm.c: layout and lifetime --- */
/* Allocates a model with zeroed parameters for CFG. */
struct vlm *vlm_new(const struct vlm_config *cfg);
void vlm_free(struct vlm *m);
struct vlm_tensor *vlm_tensor_find(struct vlm *m, const char *name);
/* HF-style init: normal(0, 0.02) weights, zero biases, unit norms. */
void vlm_init_random(struct vlm *m, uint64_t seed);

/* --- checkpoint.c --- */
/* Loads a Hugging Face model directory: config.json, model.safetensors (or
 * shards via model.safetensors.index.json; f32/f16/bf16; both name
 * layouts), preprocessor_config.json. The tokenizer is loaded separately
 * (tokenizer.h). NULL with a message on failure. */
struct vlm *vlm_load(const char *dir);
/* Writes DIR atomically (DIR.tmp.PID renamed into place): config.json,
 * model.safetensors (dtype "F32" or "BF16"), and copies tokenizer.json,
 * tokenizer_config.json, special_tokens_map.json, preprocessor_config.json
 * from m->dir when present. LoRA, if any, is not merged: call
 * vlm_lora_merge first, or vlm_lora_save for the adapter. */
int vlm_save(struct vlm *m, const char *dir, const char *dtype);
/* vlm_save of a trained model: with LoRA, the adapter as PEFT files in
 * DIR/adapter, then merged into the weights DIR holds (M keeps the merged
 * weights); with NAME, the text TEXT as DIR/NAME (the run's settings); all
 * in the one DIR.tmp.PID, so DIR appears whole or not. */
int vlm_save_merged(struct vlm *m, const char *dir, const char *dtype, const char *name,
		    const char *text);
/* Whether vlm_save could write DIR: refuses what it would refuse, and
 * makes (then removes) DIR.tmp.PID with a file in it. For a long run, to
 * find an unwritable output before the work rather than after it. */
int vlm_save_check(const char *dir);
/* PEFT files: DIR/adapter_config.json + DIR/adapter_model.safetensors.
 * The parts that train in full beside the adapters (the projector by
 * default) are saved with them as PEFT's modules_to_save writes them
 * (whole, under base_model.model.), and loaded back over the base's. */
int vlm_lora_save(struct vlm *m, const char *dir);
int vlm_lora_load(struct vlm *m, const char *dir);

/* --- vlm.c: training --- */
/* Adds LoRA (A ~ kaiming-uniform as PEFT, B = 0) on TARGETS of every decoder
 * layer. The base weights are untouched; enabled = 1. */
void vlm_lora_add(struct vlm *m, int rank, float alpha, unsigned targets, uint64_t seed);
/* W += scale * B A for every adapter, then drops the adapters. */
void vlm_lora_merge(struct vlm *m);
/* The factor on B A: alpha / rank, or alpha / sqrt(rank) with rslora (PEFT's
 * LoraLayer.scaling). */
float vlm_lora_scale(const struct vlm *m);
/* Allocates gradients for the TRAINABLE parts (VLM_PART_* mask). */
void vlm_train_init(struct vlm *m, unsigned trainable);
void vlm_zero_grad(struct vlm *m);

/* A batch of token sequences, each with at most one image. */
struct vlm_batch {
	int B;
	const int *const *ids;       /* ids[b][0..len[b]): token ids; the image goes where
					cfg.image_token_index appears (once at most) */
	const int *len;
	const float *const *weight;  /* weight[b][t]: weight of predicting ids[b][t] from
					everything before it; [b][0] ignored; NULL: no loss */
	int n_images;
	const float *images;         /* (n_images, 3, S, S) normalized CHW, S = image_size */
	const int *image_of;         /* image_of[b] in [0, n_images), or -1 */
	/* Optional: features[i], image i's (FT, VC) vision features as the
	 * tower gives them (vlm_image_features' rows), which then skip the
	 * tower; NULL entries (or images[i] unused) run it as usual. Refused
	 * while the tower trains. NULL: every image through the tower. */
	const float *const *features;
	/* drop_key[b]: LoRA dropout's key of sequence b (training forwards
	 * with KEEP, when m->lora.dropout > 0); NULL: no dropout. A prefix that
	 * sequences share is computed once and takes its first owner's mask. */
	const uint64_t *drop_key;
};

/* logp[b] = sum_t weight[b][t] * log p(ids[b][t] | ids[b][<t], image).
 * Each image's vision features are computed once per call however many
 * sequences share it. With KEEP, saves what vlm_backward needs. -1 with a
 * message if a sequence is too long for the context or malformed. */
int vlm_forward(struct vlm *m, const struct vlm_batch *batch, float *logp, int keep);
/* Backpropagates dlogp (B) through the last kept forward; accumulates into
 * the gradients of the trainable parts only. */
void vlm_backward(struct vlm *m, const float *dlogp);

/* The vision tower alone on BATCH's images (the text is checked, not
 * run): what vlm_image_features then returns, bit for bit as vlm_forward
 * computes it, for vlm_backward_features with KEEP (not vlm_backward). */
int vlm_forward_features(struct vlm *m, const struct vlm_batch *batch, int keep);
/* The image features of the last kept forward, the projector's input:
 * (*N_IMAGES * *TOKENS, v_hidden), NULL if it had no image. */
const float *vlm_image_features(const struct vlm *m, int *n_images, int *tokens);
/* Whether the features may be kept in bf16 without changing a bit: under
 * the precision in use, the connector's one product that reads them rounds
 * its input to bf16 in its forward and in its weight gradient (bf16 in
 * use, and the product large enough for the bf16 path on one image). */
int vlm_features_bf16_exact(const struct vlm *m);
/* Backpropagates DFEAT (laid out as vlm_image_features) through the vision
 * tower alone, accumulating into its gradients: a loss on the features
 * themselves, as the vision pretraining of seva-sft --vision-labels. */
void vlm_backward_features(struct vlm *m, const float *dfeat);

/* Global L2 norm of the trainable gradients. */
double vlm_grad_norm(struct vlm *m);

/* --- decode.c: generation --- */
struct gen_settings {
	int max_new_tokens;
	float temperature;        /* 0: greedy */
	int top_k;                /* 0: off */
	float top_p;              /* 1: off */
	const int *stop_ids;      /* end-of-turn / eos token ids */
	int n_stop_ids;
	/* Optional: called after each new token; nonzero stops sequence b
	 * (stop strings). ids are the generated tokens so far. */
	int (*stop)(void *ctx, int b, const int *ids, int n);
	void *stop_ctx;
};
struct gen_out {
	int *ids;        /* generated tokens (malloc'd), stop token excluded */
	int n;
	float *logp;     /* log-prob of each generated token (n), malloc'd */
	float stop_logp; /* log-prob of the stop token if stopped by one */
	int stopped;     /* 1 stop token, 2 stop callback, 0 max_new_tokens */
};
/* Generates for every sequence of PROMPTS (weights ignored) with a KV
 * cache; image + prompt prefilled in one pass. seeds[b] drives sequence b's
 * sampling, so results do not depend on the batch. out[b] is filled; free
 * with gen_out_release. -1 with a message on error. */
int vlm_generate(struct vlm *m, const struct vlm_batch *prompts, const uint64_t *seeds,
		 const struct gen_settings *gs, struct gen_out *out);
void gen_out_release(struct gen_out *o);

#endif
