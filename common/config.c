/* config.json (LlavaConfig) and preprocessor_config.json (CLIPImageProcessor)
 * with the Hugging Face class defaults for every field a file leaves out:
 * llava-hf's own text_config names only a handful of fields. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "vlm.h"

/* Where a value comes from, for messages: "DIR/config.json: text_config.hidden_size: ...".
 * The first error is kept so that one bad file gives one clear line. */
struct jctx {
	const char *file;
	const char *sect; /* "vision_config.", "text_config." or "" */
	int err;
};

static void jerr(struct jctx *c, const char *key, const char *what)
{
	if (!c->err)
		error("%s: %s%s: %s", c->file, c->sect, key, what);
	c->err = 1;
}

/* Absent and JSON null both mean "use the default". */
static const cJSON *jget(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	return cJSON_IsNull(v) ? NULL : v;
}

/* An integer; a list (of JSON numbers) only where LIST says a key may be one,
 * e.g. eos_token_id [128001, 128009]: its first element (an empty list is
 * absent). */
static long jint_ex(struct jctx *c, const cJSON *o, const char *key, long def, long min,
		    long max, int list)
{
	const cJSON *v = jget(o, key);
	if (!v)
		return def;
	if (list && cJSON_IsArray(v)) {
		if (!cJSON_GetArraySize(v))
			return def;
		v = cJSON_GetArrayItem(v, 0);
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) {
		jerr(c, key, "not an integer");
		return def;
	}
	if (v->valuedouble < min || v->valuedouble > max) {
		char msg[96];
		snprintf(msg, sizeof msg, "%.17g not in [%ld, %ld]", v->valuedouble, min, max);
		jerr(c, key, msg);
		return def;
	}
	return (long)v->valuedouble;
}

static long jint(struct jctx *c, const cJSON *o, const char *key, long def, long min, long max)
{
	return jint_ex(c, o, key, def, min, max, 0);
}

static double jnum(struct jctx *c, const cJSON *o, const char *key, double def, double min,
		   double max)
{
	const cJSON *v = jget(o, key);
	if (!v)
		return def;
	if (!cJSON_IsNumber(v)) {
		jerr(c, key, "not a number");
		return def;
	}
	if (!(v->valuedouble >= min && v->valuedouble <= max)) {
		char msg[96];
		snprintf(msg, sizeof msg, "%g not in [%g, %g]", v->valuedouble, min, max);
		jerr(c, key, msg);
		return def;
	}
	return v->valuedouble;
}

static int jbool(struct jctx *c, const cJSON *o, const char *key, int def)
{
	const cJSON *v = jget(o, key);
	if (!v)
		return def;
	if (!cJSON_IsBool(v)) {
		jerr(c, key, "not true or false");
		return def;
	}
	return cJSON_IsTrue(v);
}

static const char *jstr(struct jctx *c, const cJSON *o, const char *key, const char *def)
{
	const cJSON *v = jget(o, key);
	if (!v)
		return def;
	if (!cJSON_IsString(v)) {
		jerr(c, key, "not a string");
		return def;
	}
	return v->valuestring;
}

static int parse_act(struct jctx *c, const char *key, const char *s, int allow_silu,
		     enum act *out)
{
	if (!strcmp(s, "gelu"))
		*out = ACT_GELU;
	else if (!strcmp(s, "quick_gelu"))
		*out = ACT_QUICK_GELU;
	else if (allow_silu && !strcmp(s, "silu"))
		*out = ACT_SILU;
	else {
		char msg[128];
		snprintf(msg, sizeof msg, "unsupported activation '%.60s' (gelu, quick_gelu%s)", s,
			 allow_silu ? ", silu" : "");
		jerr(c, key, msg);
		return -1;
	}
	return 0;
}

#define INT_BIG (1L << 30)

/* A model_type we do not run, named with the reason when it is a known one. */
static void refuse_type(struct jctx *c, const char *type, const char *supported,
			const char *const (*known)[2])
{
	char msg[320];
	const char *why = NULL;
	for (int i = 0; known && known[i][0]; i++)
		if (!strcmp(type, known[i][0]))
			why = known[i][1];
	snprintf(msg, sizeof msg, "'%.60s' is not supported (%s)%s%s", type, supported,
		 why ? ": " : "", why ? why : "");
	jerr(c, "model_type", msg);
}

static void load_vision(struct vlm_config *cfg, struct jctx *c, const cJSON *v)
{
	static const char *const known[][2] = {
		{"siglip_vision_model", "SigLIP towers have no class token or pre-LayerNorm"},
		{"siglip2_vision_model", "SigLIP towers have no class token or pre-LayerNorm"},
		{"clip_model", "give the vision tower's own config (clip_vision_model)"},
		{NULL, NULL},
	};
	/* No vision_config at all: LlavaConfig's own CLIP ViT-L/14-336. A partial
	 * one: CLIPVisionConfig's defaults (ViT-B/32 sizes) for what is missing. */
	int llava = v == NULL;
	c->sect = "vision_config.";
	if (v && !cJSON_IsObject(v)) {
		c->sect = "";
		jerr(c, "vision_config", "not an object");
		return;
	}
	const char *type = jstr(c, v, "model_type", "clip_vision_model");
	if (strcmp(type, "clip_vision_model"))
		refuse_type(c, type, "clip_vision_model", known);
	cfg->v_hidden = jint(c, v, "hidden_size", llava ? 1024 : 768, 1, INT_BIG);
	cfg->v_inter = jint(c, v, "intermediate_size", llava ? 4096 : 3072, 1, INT_BIG);
	cfg->v_layers = jint(c, v, "num_hidden_layers", llava ? 24 : 12, 1, 4096);
	cfg->v_heads = jint(c, v, "num_attention_heads", llava ? 16 : 12, 1, 65536);
	cfg->image_size = jint(c, v, "image_size", llava ? 336 : 224, 1, 65536);
	cfg->patch_size = jint(c, v, "patch_size", llava ? 14 : 32, 1, 65536);
	cfg->num_channels = jint(c, v, "num_channels", 3, 3, 3);
	cfg->v_eps = jnum(c, v, "layer_norm_eps", 1e-5, 0, 1);
	parse_act(c, "hidden_act", jstr(c, v, "hidden_act", "quick_gelu"), 0, &cfg->v_act);
}

/* rope_scaling: null, or a "default" rope_type (no scaling), is plain RoPE. */
static void check_rope_scaling(struct jctx *c, const cJSON *t)
{
	const cJSON *rs = jget(t, "rope_scaling");
	if (!rs)
		return;
	const cJSON *rt = cJSON_IsObject(rs) ? jget(rs, "rope_type") : NULL;
	if (!rt && cJSON_IsObject(rs))
		rt = jget(rs, "type");
	const char *name = cJSON_IsString(rt) ? rt->valuestring : "?";
	if (!strcmp(name, "default"))
		return;
	char msg[128];
	snprintf(msg, sizeof msg, "RoPE scaling '%.40s' is not supported (null or \"default\" only)",
		 name);
	jerr(c, "rope_scaling", msg);
}

/* Mistral (bakLlava) is LLaMA with a sliding attention window. Inside the
 * window the two compute the same, so the context is capped at it:
 * absent means MistralConfig's 4096, null no window. */
static void load_window(struct vlm_config *cfg, struct jctx *c, const cJSON *t)
{
	const cJSON *w = t ? cJSON_GetObjectItemCaseSensitive(t, "sliding_window") : NULL;
	if (cJSON_IsNull(w))
		return;
	long win = jint(c, t, "sliding_window", 4096, 1, INT_BIG);
	if (!c->err && win < cfg->max_pos) {
		warn("%s: text_config.sliding_window %ld < max_position_embeddings %d: "
		     "sequences are limited to %ld tokens, where the window changes nothing",
		     c->file, win, cfg->max_pos, win);
		cfg->max_pos = (int)win;
	}
}

static void load_text(struct vlm_config *cfg, struct jctx *c, const cJSON *t, const cJSON *top)
{
	static const char *const known[][2] = {
		{"qwen2", "Qwen2 decoders have q/k/v projection biases"},
		{"gemma", "Gemma decoders scale embeddings and use GeGLU"},
		{"phi3", "Phi-3 decoders fuse q/k/v and gate/up projections"},
		{"vicuna", "Vicuna is model_type \"llama\""},
		{NULL, NULL},
	};
	c->sect = "text_config.";
	if (t && !cJSON_IsObject(t)) {
		c->sect = "";
		jerr(c, "text_config", "not an object");
		return;
	}
	const char *type = jstr(c, t, "model_type", "llama");
	int mistral = !strcmp(type, "mistral");
	if (!mistral && strcmp(type, "llama"))
		refuse_type(c, type, "llama, mistral", known);
	cfg->vocab = jint(c, t, "vocab_size", 32000, 1, INT_BIG);
	cfg->hidden = jint(c, t, "hidden_size", 4096, 1, INT_BIG);
	cfg->inter = jint(c, t, "intermediate_size", mistral ? 14336 : 11008, 1, INT_BIG);
	cfg->layers = jint(c, t, "num_hidden_layers", 32, 1, 4096);
	cfg->heads = jint(c, t, "num_attention_heads", 32, 1, 65536);
	cfg->kv_heads = jint(c, t, "num_key_value_heads", mistral ? 8 : cfg->heads, 1, 65536);
	cfg->max_pos = jint(c, t, "max_position_embeddings", mistral ? 4096 * 32 : 2048, 1, INT_BIG);
	cfg->rms_eps = jnum(c, t, "rms_norm_eps", 1e-6, 0, 1);
	cfg->rope_theta = jnum(c, t, "rope_theta", 10000, 1e-3, 1e12);
	cfg->bos_id = jint_ex(c, t, "bos_token_id", 1, -1, INT_BIG, 1);
	cfg->eos_id = jint_ex(c, t, "eos_token_id", 2, -1, INT_BIG, 1);
	/* LlavaConfig's own pad_token_id (llava-hf: 32001) is the model's;
	 * a complete text_config dump carries the decoder's (vicuna: 0) */
	long pad = jint(c, t, "pad_token_id", -1, -1, INT_BIG);
	struct jctx tc = {c->file, "", c->err};
	cfg->pad_id = jint(&tc, top, "pad_token_id", pad, -1, INT_BIG);
	c->err |= tc.err;
	enum act a;
	if (!parse_act(c, "hidden_act", jstr(c, t, "hidden_act", "silu"), 1, &a) && a != ACT_SILU)
		jerr(c, "hidden_act", "the decoder's MLP must be silu (SwiGLU)");
	check_rope_scaling(c, t);
	if (jbool(c, t, "attention_bias", 0))
		jerr(c, "attention_bias", "attention biases are not supported");
	if (jbool(c, t, "mlp_bias", 0))
		jerr(c, "mlp_bias", "MLP biases are not supported");
	if (cfg->heads > 0 && cfg->hidden % cfg->heads == 0 &&
	    jint(c, t, "head_dim", cfg->hidden / cfg->heads, 1, INT_BIG) != cfg->hidden / cfg->heads)
		jerr(c, "head_dim", "must be hidden_size / num_attention_heads");
	if (mistral)
		load_window(cfg, c, t);
	/* LlavaConfig delegates tying to the text model; older files put it on top */
	struct jctx tc2 = {c->file, "", c->err};
	int tie = jbool(&tc2, top, "tie_word_embeddings", 0);
	c->err |= tc2.err;
	cfg->tie_embeddings = jbool(c, t, "tie_word_embeddings", tie);
}

/* Shape rules shared by load (WHERE = the file) and finish. */
static int check_shapes(const struct vlm_config *cfg, const char *where)
{
	if (cfg->image_size <= 0 || cfg->patch_size <= 0 || cfg->image_size % cfg->patch_size)
		return error("%s: vision_config.image_size %d is not a multiple of patch_size %d",
			     where, cfg->image_size, cfg->patch_size);
	if (cfg->v_heads <= 0 || cfg->v_hidden <= 0 || cfg->v_hidden % cfg->v_heads)
		return error("%s: vision_config.hidden_size %d is not divisible by num_attention_heads %d",
			     where, cfg->v_hidden, cfg->v_heads);
	if (cfg->v_inter <= 0 || cfg->v_layers <= 0)
		return error("%s: vision_config: intermediate_size and num_hidden_layers must be positive",
			     where);
	if (cfg->heads <= 0 || cfg->hidden <= 0 || cfg->hidden % cfg->heads)
		return error("%s: text_config.hidden_size %d is not divisible by num_attention_heads %d",
			     where, cfg->hidden, cfg->heads);
	if ((cfg->hidden / cfg->heads) % 2)
		return error("%s: text_config: head size %d is odd (RoPE rotates pairs)", where,
			     cfg->hidden / cfg->heads);
	if (cfg->kv_heads <= 0 || cfg->heads % cfg->kv_heads)
		return error("%s: text_config.num_attention_heads %d is not a multiple of num_key_value_heads %d",
			     where, cfg->heads, cfg->kv_heads);
	if (cfg->inter <= 0 || cfg->layers <= 0 || cfg->vocab <= 0 || cfg->max_pos <= 0)
		return error("%s: text_config: sizes must be positive", where);
	int f = cfg->feature_layer >= 0 ? cfg->feature_layer : cfg->v_layers + 1 + cfg->feature_layer;
	if (f < 0 || f > cfg->v_layers)
		return error("%s: vision_feature_layer %d: the vision tower has %d layers", where,
			     cfg->feature_layer, cfg->v_layers);
	if (cfg->image_token_index < 0)
		return error("%s: image_token_index %d is negative", where, cfg->image_token_index);
	return 0;
}

static int finish(struct vlm_config *cfg, const char *where)
{
	if (check_shapes(cfg, where))
		return -1;
	int side = cfg->image_size / cfg->patch_size;
	cfg->np = side * side;
	cfg->v_used = cfg->feature_layer >= 0 ? cfg->feature_layer
					      : cfg->v_layers + 1 + cfg->feature_layer;
	cfg->img_tokens = cfg->np + (cfg->drop_cls ? 0 : 1);
	return 0;
}

int vlm_config_finish(struct vlm_config *cfg)
{
	return finish(cfg, "config");
}

int vlm_config_load(struct vlm_config *cfg, const char *path)
{
	unsigned char *text = read_file(path, NULL);
	if (!text)
		return -1;
	cJSON *j = cJSON_Parse((const char *)text);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return error("%s: not a JSON object", path);
	}
	struct jctx c = {path, "", 0};
	memset(cfg, 0, sizeof *cfg);

	static const char *const known[][2] = {
		{"llava_next", "LLaVA-NeXT (1.6) tiles each image into a grid (image_grid_pinpoints)"},
		{"llava_next_video", "LLaVA-NeXT tiles each image into a grid (image_grid_pinpoints)"},
		{"llava_onevision", "LLaVA-OneVision tiles each image into a grid (image_grid_pinpoints)"},
		{"vipllava", "VipLLaVA concatenates several vision layers into a normed projector"},
		{"llava_llama", "an original LLaVA repository checkpoint: convert it to the llava-hf "
				"layout (transformers' convert_llava_weights_to_hf.py)"},
		{"llava_mistral", "an original LLaVA repository checkpoint: convert it to the llava-hf "
				  "layout (transformers' convert_llava_weights_to_hf.py)"},
		{NULL, NULL},
	};
	const char *type = jstr(&c, j, "model_type", "llava");
	if (strcmp(type, "llava"))
		refuse_type(&c, type, "llava", known);
	if (jget(j, "image_grid_pinpoints"))
		jerr(&c, "image_grid_pinpoints", "tiling images into a grid (LLaVA-NeXT) is not supported");
	/* newer transformers call it image_token_id */
	long img = jint(&c, j, "image_token_id", 32000, 0, INT_BIG);
	cfg->image_token_index = jint(&c, j, "image_token_index", img, 0, INT_BIG);
	parse_act(&c, "projector_hidden_act", jstr(&c, j, "projector_hidden_act", "gelu"), 1,
		  &cfg->proj_act);
	if (!jbool(&c, j, "multimodal_projector_bias", 1))
		jerr(&c, "multimodal_projector_bias", "a projector without biases is not supported");
	/* transformers >= 4.47 also takes a list: the layers' features concatenated */
	const cJSON *fl = jget(j, "vision_feature_layer");
	if (cJSON_IsArray(fl) && cJSON_GetArraySize(fl) != 1)
		jerr(&c, "vision_feature_layer",
		     "a list of several layers (features concatenated) is not supported: one layer only");
	cfg->feature_layer = jint_ex(&c, j, "vision_feature_layer", -2, -4096, 4096, 1);
	const char *strat = jstr(&c, j, "vision_feature_select_strategy", "default");
	if (!strcmp(strat, "default"))
		cfg->drop_cls = 1;
	else if (!strcmp(strat, "full"))
		cfg->drop_cls = 0;
	else
		jerr(&c, "vision_feature_select_strategy", "not \"default\" or \"full\"");
	const char *tmpl = jstr(&c, j, "seva_chat_template", "llava_v1");
	if (strlen(tmpl) >= sizeof cfg->chat_template || !*tmpl)
		jerr(&c, "seva_chat_template", "empty or too long");
	else
		strcpy(cfg->chat_template, tmpl);

	/* absent or null: LlavaConfig's defaults */
	load_vision(cfg, &c, jget(j, "vision_config"));
	c.sect = "";
	load_text(cfg, &c, jget(j, "text_config"), j);
	cJSON_Delete(j);
	if (c.err)
		return -1;
	return finish(cfg, path);
}

/* size/crop_size: an int, {"shortest_edge": n} or {"height": h, "width": w}
 * (which must be square: the model takes square images). Sets *shortest
 * when the value is a shortest-edge size. */
static int side_of(struct jctx *c, const cJSON *o, const char *key, int def, int *shortest)
{
	const cJSON *v = jget(o, key);
	*shortest = 0;
	if (!v)
		return def;
	if (cJSON_IsNumber(v))
		return (int)jint(c, o, key, def, 1, 65536);
	if (!cJSON_IsObject(v)) {
		jerr(c, key, "not a size (an integer or an object)");
		return def;
	}
	struct jctx sub = {c->file, "", c->err};
	char sect[64];
	snprintf(sect, sizeof sect, "%s.", key);
	sub.sect = sect;
	const cJSON *m;
	int set = 0;
	cJSON_ArrayForEach(m, v)
		set |= !cJSON_IsNull(m);
	if (!set)
		return def; /* {} or every member null */
	if (jget(v, "shortest_edge")) {
		*shortest = 1;
		int n = (int)jint(&sub, v, "shortest_edge", def, 1, 65536);
		c->err |= sub.err;
		return n;
	}
	int h = (int)jint(&sub, v, "height", -1, 1, 65536);
	int w = (int)jint(&sub, v, "width", -1, 1, 65536);
	c->err |= sub.err;
	if (!c->err && (h < 0 || w < 0))
		jerr(c, key, "needs shortest_edge, or height and width");
	else if (!c->err && h != w)
		jerr(c, key, "height and width differ: the model takes square images");
	return h;
}

int vlm_preprocess_load(struct preprocess *pre, const char *path, const struct vlm_config *cfg)
{
	preprocess_defaults(pre, cfg->image_size);
	if (access(path, F_OK) != 0)
		return 0;
	unsigned char *text = read_file(path, NULL);
	if (!text)
		return -1;
	cJSON *j = cJSON_Parse((const char *)text);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return error("%s: not a JSON object", path);
	}
	struct jctx c = {path, "", 0};
	int shortest, crop_shortest;
	int size = side_of(&c, j, "size", cfg->image_size, &shortest);
	int crop = side_of(&c, j, "crop_size", cfg->image_size, &crop_shortest);
	int do_resize = jbool(&c, j, "do_resize", 1);
	int do_crop = jbool(&c, j, "do_center_crop", 1);
	/* LLaVA-1.5 pads to a square with the mean colour before the processor
	 * runs (image_aspect_ratio "pad"); we name it in the processor file. */
	const char *aspect = jstr(&c, j, "image_aspect_ratio", "");
	int pad = jbool(&c, j, "seva_pad_to_square", 0) || jbool(&c, j, "do_pad", 0) ||
		  !strcmp(aspect, "pad");
	long resample = jint(&c, j, "resample", 3, 0, 5);
	if (resample == 3)
		pre->resample = RESAMPLE_BICUBIC;
	else if (resample == 2)
		pre->resample = RESAMPLE_BILINEAR;
	else
		jerr(&c, "resample", "only 2 (bilinear) and 3 (bicubic) are supported");
	pre->rescale = jbool(&c, j, "do_rescale", 1)
			       ? (float)jnum(&c, j, "rescale_factor", 1.0 / 255, 0, 1e6)
			       : 1.0f;
	int norm = jbool(&c, j, "do_normalize", 1);
	const char *keys[2] = {"image_mean", "image_std"};
	float *dst[2] = {pre->mean, pre->std};
	for (int k = 0; k < 2; k++) {
		const cJSON *v = jget(j, keys[k]);
		if (!norm) {
			for (int i = 0; i < 3; i++)
				dst[k][i] = (float)k;
			continue;
		}
		if (!v)
			continue;
		if (cJSON_IsNumber(v)) {
			for (int i = 0; i < 3; i++)
				dst[k][i] = (float)v->valuedouble;
		} else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3) {
			for (int i = 0; i < 3; i++) {
				const cJSON *x = cJSON_GetArrayItem(v, i);
				if (!cJSON_IsNumber(x))
					jerr(&c, keys[k], "not three numbers");
				else
					dst[k][i] = (float)x->valuedouble;
			}
		} else {
			jerr(&c, keys[k], "not three numbers");
		}
	}
	for (int i = 0; i < 3 && !c.err; i++)
		if (!(pre->std[i] > 0))
			jerr(&c, "image_std", "must be positive");

	int side = 0;
	if (pad || !do_crop || !do_resize) {
		if (do_resize && !pad && shortest)
			jerr(&c, "do_center_crop", "a shortest-edge resize without a centre crop gives non-square images");
		pre->mode = pad ? PREPROCESS_PAD_RESIZE : PREPROCESS_RESIZE;
		pre->size = side = do_resize ? size : cfg->image_size;
		pre->crop_size = side;
	} else {
		pre->mode = PREPROCESS_SHORTEST_CROP;
		pre->size = size;
		pre->crop_size = side = crop;
		if (!crop_shortest && crop > size && !c.err)
			jerr(&c, "crop_size", "larger than the resized image");
	}
	if (!c.err && side != cfg->image_size) {
		char msg[96];
		snprintf(msg, sizeof msg, "gives %dx%d images, the model takes %dx%d", side, side,
			 cfg->image_size, cfg->image_size);
		jerr(&c, pre->mode == PREPROCESS_SHORTEST_CROP ? "crop_size" : "size", msg);
	}
	cJSON_Delete(j);
	return c.err ? -1 : 0;
}

/* processor_config.json (LlavaProcessor, transformers >= 4.45): it counts
 * the image's tokens from its own patch_size and select strategy, so both
 * must be the model's; null members (files written before the processor
 * knew them) say nothing. */
int vlm_processor_check(const char *path, const struct vlm_config *cfg)
{
	if (access(path, F_OK) != 0)
		return 0;
	unsigned char *text = read_file(path, NULL);
	if (!text)
		return -1;
	cJSON *j = cJSON_Parse((const char *)text);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return error("%s: not a JSON object", path);
	}
	struct jctx c = {path, "", 0};
	long p = jint(&c, j, "patch_size", cfg->patch_size, 1, 65536);
	if (!c.err && p != cfg->patch_size) {
		char msg[96];
		snprintf(msg, sizeof msg, "%ld, but config.json's vision_config.patch_size is %d", p,
			 cfg->patch_size);
		jerr(&c, "patch_size", msg);
	}
	const char *mine = cfg->drop_cls ? "default" : "full";
	const char *strat = jstr(&c, j, "vision_feature_select_strategy", mine);
	if (!c.err && strcmp(strat, mine)) {
		char msg[128];
		snprintf(msg, sizeof msg, "'%.20s', but config.json's is '%s'", strat, mine);
		jerr(&c, "vision_feature_select_strategy", msg);
	}
	/* the class token: a CLIP tower has exactly one */
	if (jint(&c, j, "num_additional_image_tokens", 1, 0, 65536) != 1 && !c.err)
		jerr(&c, "num_additional_image_tokens", "not 1 (a CLIP tower adds one class token)");
	cJSON_Delete(j);
	return c.err ? -1 : 0;
}
