/* config.json with the Hugging Face class defaults for every field a file
 * leaves out (llava-hf's own text_config names only a handful of fields):
 * the readers the families use, the shared decoder (LlamaConfig,
 * MistralConfig), the shapes, and the dispatch to the family that
 * model_type names. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "vlm.h"
#include "vlm_family.h"

void jerr(struct jctx *c, const char *key, const char *what)
{
	if (!c->err)
		error("%s: %s%s: %s", c->file, c->sect, key, what);
	c->err = 1;
}

/* Absent and JSON null both mean "use the default". */
const cJSON *jget(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	return cJSON_IsNull(v) ? NULL : v;
}

/* An integer; a list (of JSON numbers) only where LIST says a key may be one,
 * e.g. eos_token_id [128001, 128009]: its first element (an empty list is
 * absent). */
long jint_ex(struct jctx *c, const cJSON *o, const char *key, long def, long min,
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

long jint(struct jctx *c, const cJSON *o, const char *key, long def, long min, long max)
{
	return jint_ex(c, o, key, def, min, max, 0);
}

double jnum(struct jctx *c, const cJSON *o, const char *key, double def, double min,
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

int jbool(struct jctx *c, const cJSON *o, const char *key, int def)
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

void vlm_preprocess_scale(struct jctx *c, const cJSON *j, struct preprocess *pre)
{
	pre->rescale = jbool(c, j, "do_rescale", 1)
			       ? (float)jnum(c, j, "rescale_factor", 1.0 / 255, 0, 1e6)
			       : 1.0f;
	int norm = jbool(c, j, "do_normalize", 1);
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
					jerr(c, keys[k], "not three numbers");
				else
					dst[k][i] = (float)x->valuedouble;
			}
		} else {
			jerr(c, keys[k], "not three numbers");
		}
	}
	for (int i = 0; i < 3 && !c->err; i++)
		if (!(pre->std[i] > 0))
			jerr(c, "image_std", "must be positive");
}

const char *jstr(struct jctx *c, const cJSON *o, const char *key, const char *def)
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

int jact(struct jctx *c, const char *key, const char *s, int allow, enum act *out)
{
	if (!strcmp(s, "gelu"))
		*out = ACT_GELU;
	else if (!strcmp(s, "quick_gelu"))
		*out = ACT_QUICK_GELU;
	else if ((allow & 1) && !strcmp(s, "gelu_pytorch_tanh"))
		*out = ACT_GELU_TANH;
	else if ((allow & 2) && !strcmp(s, "silu"))
		*out = ACT_SILU;
	else {
		char msg[160];
		snprintf(msg, sizeof msg, "unsupported activation '%.60s' (gelu, quick_gelu%s%s)", s,
			 allow & 1 ? ", gelu_pytorch_tanh" : "", allow & 2 ? ", silu" : "");
		jerr(c, key, msg);
		return -1;
	}
	return 0;
}


/* A model_type we do not run, named with the reason when it is a known one. */
void jrefuse(struct jctx *c, const char *key, const char *type, const char *supported,
	     const char *const (*known)[2])
{
	char msg[320];
	const char *why = NULL;
	for (int i = 0; known && known[i][0]; i++)
		if (!strcmp(type, known[i][0]))
			why = known[i][1];
	snprintf(msg, sizeof msg, "'%.60s' is not supported (%s)%s%s", type, supported,
		 why ? ": " : "", why ? why : "");
	jerr(c, key, msg);
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

void vlm_config_text(struct vlm_config *cfg, struct jctx *c, const cJSON *t, const cJSON *top)
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
		jrefuse(c, "model_type", type, "llama, mistral", known);
	cfg->vocab = jint(c, t, "vocab_size", 32000, 1, INT_BIG);
	cfg->hidden = jint(c, t, "hidden_size", 4096, 1, INT_BIG);
	cfg->inter = jint(c, t, "intermediate_size", mistral ? 14336 : 11008, 1, INT_BIG);
	cfg->layers = jint(c, t, "num_hidden_layers", 32, 1, 4096);
	cfg->heads = jint(c, t, "num_attention_heads", 32, 1, 65536);
	cfg->kv_heads = jint(c, t, "num_key_value_heads", mistral ? 8 : cfg->heads, 1, 65536);
	cfg->max_pos = jint(c, t, "max_position_embeddings", mistral ? 4096 * 32 : 2048, 1, INT_BIG);
	cfg->rms_eps = jnum(c, t, "rms_norm_eps", 1e-6, 0, 1);
	cfg->rope_theta = jnum(c, t, "rope_theta", 10000, 1e-3, 1e12);
	/* transformers 5 writes RoPE's settings as rope_parameters {rope_theta,
	 * rope_type}, checked as rope_scaling is */
	const cJSON *rp = jget(t, "rope_parameters");
	if (rp && !cJSON_IsObject(rp)) {
		jerr(c, "rope_parameters", "not a JSON object");
	} else if (rp) {
		struct jctx rc = {c->file, "text_config.rope_parameters.", c->err};
		cfg->rope_theta = jnum(&rc, rp, "rope_theta", cfg->rope_theta, 1e-3, 1e12);
		const cJSON *rt = jget(rp, "rope_type");
		if (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default"))) {
			char msg[128];
			snprintf(msg, sizeof msg, "RoPE type '%.40s' is not supported (\"default\" only)",
				 cJSON_IsString(rt) ? rt->valuestring : "?");
			jerr(&rc, "rope_type", msg);
		}
		c->err |= rc.err;
	}
	cfg->bos_id = jint_ex(c, t, "bos_token_id", 1, -1, INT_BIG, 1);
	cfg->eos_id = jint_ex(c, t, "eos_token_id", 2, -1, INT_BIG, 1);
	/* LlavaConfig's own pad_token_id (llava-hf: 32001) is the model's;
	 * a complete text_config dump carries the decoder's (vicuna: 0) */
	long pad = jint(c, t, "pad_token_id", -1, -1, INT_BIG);
	struct jctx tc = {c->file, "", c->err};
	cfg->pad_id = jint(&tc, top, "pad_token_id", pad, -1, INT_BIG);
	c->err |= tc.err;
	enum act a;
	if (!jact(c, "hidden_act", jstr(c, t, "hidden_act", "silu"), 2, &a) && a != ACT_SILU)
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

/* The families seva runs, and model types it knows and refuses, with why. */
static const struct vlm_family *const families[] = {
	&vlm_family_llava, &vlm_family_idefics3, &vlm_family_smolvlm,
};

static const char *const refused[][2] = {
	{"llava_next", "LLaVA-NeXT (1.6) tiles each image into a grid (image_grid_pinpoints)"},
	{"llava_next_video", "LLaVA-NeXT tiles each image into a grid (image_grid_pinpoints)"},
	{"llava_onevision", "LLaVA-OneVision tiles each image into a grid (image_grid_pinpoints)"},
	{"vipllava", "VipLLaVA concatenates several vision layers into a normed projector"},
	{"llava_llama", "an original LLaVA repository checkpoint: convert it to the llava-hf "
			"layout (transformers' convert_llava_weights_to_hf.py)"},
	{"llava_mistral", "an original LLaVA repository checkpoint: convert it to the llava-hf "
			  "layout (transformers' convert_llava_weights_to_hf.py)"},
	{"qwen2_vl", "Qwen2-VL's decoder has q/k/v biases and M-RoPE, its tower 2-D RoPE"},
	{"qwen2_5_vl", "Qwen2.5-VL's decoder has q/k/v biases and M-RoPE, its tower 2-D RoPE"},
	{"paligemma", "PaliGemma's Gemma decoder scales embeddings and uses GeGLU"},
	{"mllama", "Llama 3.2 Vision feeds the image through cross-attention layers"},
	{"idefics2", "Idefics2 resamples the image with a perceiver"},
	{"idefics", "Idefics (1) feeds the image through cross-attention layers"},
	{NULL, NULL},
};

const struct vlm_family *vlm_family_of(const struct vlm_config *cfg)
{
	return cfg->family ? cfg->family : &vlm_family_llava;
}

const char *vlm_image_block(const struct vlm_config *cfg)
{
	return vlm_family_of(cfg)->image_block;
}

static int finish(struct vlm_config *cfg, const char *where)
{
	cfg->family = vlm_family_of(cfg);
	if (cfg->family->config_finish(cfg, where) || check_shapes(cfg, where))
		return -1;
	int side = cfg->image_size / cfg->patch_size;
	cfg->np = side * side;
	cfg->vt = cfg->np + (cfg->v_cls ? 1 : 0);
	cfg->v_used = cfg->feature_layer >= 0 ? cfg->feature_layer
					      : cfg->v_layers + 1 + cfg->feature_layer;
	cfg->feat_tokens = cfg->vt - (cfg->v_cls && cfg->drop_cls ? 1 : 0);
	cfg->img_tokens = cfg->feat_tokens;
	if (cfg->connector == VLM_CONN_SHUFFLE) {
		int r = cfg->shuffle;
		if (r <= 0 || side % r)
			return error("%s: scale_factor %d does not divide the %d patches of a side", where,
				     r, side);
		cfg->img_tokens = cfg->feat_tokens / (r * r);
	}
	return 0;
}

int vlm_config_finish(struct vlm_config *cfg)
{
	return finish(cfg, "config");
}

/* FILE as a JSON object, NULL with a message. */
static cJSON *json_object_file(const char *path)
{
	unsigned char *text = read_file(path, NULL);
	if (!text)
		return NULL;
	cJSON *j = cJSON_Parse((const char *)text);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		error("%s: not a JSON object", path);
		return NULL;
	}
	return j;
}

int vlm_config_load(struct vlm_config *cfg, const char *path)
{
	cJSON *j = json_object_file(path);
	if (!j)
		return -1;
	struct jctx c = {path, "", 0};
	memset(cfg, 0, sizeof *cfg);
	const char *type = jstr(&c, j, "model_type", "llava");
	for (size_t i = 0; i < ARRAY_LEN(families) && !cfg->family; i++)
		if (!strcmp(type, families[i]->model_type))
			cfg->family = families[i];
	if (!cfg->family) {
		char names[128] = "";
		for (size_t i = 0; i < ARRAY_LEN(families); i++)
			snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
				 i ? ", " : "", families[i]->model_type);
		jrefuse(&c, "model_type", type, names, refused);
	} else {
		cfg->family->config_load(cfg, &c, j);
	}
	if (!c.err && !cfg->chat_template[0]) {
		const char *tmpl = jstr(&c, j, "seva_chat_template", cfg->family->chat_template);
		if (strlen(tmpl) >= sizeof cfg->chat_template || !*tmpl)
			jerr(&c, "seva_chat_template", "empty or too long");
		else
			strcpy(cfg->chat_template, tmpl);
	}
	cJSON_Delete(j);
	if (c.err)
		return -1;
	return finish(cfg, path);
}

/* The image processor's settings: PATH, or where it is absent (transformers
 * 5 writes no preprocessor_config.json) the "image_processor" object of
 * processor_config.json beside it, *FILE and *SECT naming where. 0 with *J
 * NULL when neither exists (the defaults apply); -1 with a message. */
static int preprocess_json_load(const char *path, cJSON **j, char **file, const char **sect)
{
	*j = NULL;
	*sect = "";
	*file = xstrdup(path);
	if (access(path, F_OK) == 0)
		return (*j = json_object_file(path)) ? 0 : -1;
	const char *slash = strrchr(path, '/');
	free(*file);
	*file = xasprintf("%.*sprocessor_config.json", slash ? (int)(slash - path + 1) : 0, path);
	if (access(*file, F_OK) != 0)
		return 0;
	cJSON *p = json_object_file(*file);
	if (!p)
		return -1;
	*sect = "image_processor.";
	*j = cJSON_DetachItemFromObjectCaseSensitive(p, "image_processor");
	cJSON_Delete(p);
	if (*j && !cJSON_IsObject(*j)) {
		cJSON_Delete(*j);
		*j = NULL;
		return error("%s: image_processor: not a JSON object", *file);
	}
	return 0;
}

int vlm_preprocess_load(struct preprocess *pre, const char *path, const struct vlm_config *cfg)
{
	preprocess_defaults(pre, cfg->image_size);
	cJSON *j;
	char *file;
	const char *sect;
	if (preprocess_json_load(path, &j, &file, &sect)) {
		free(file);
		return -1;
	}
	struct jctx c = {file, sect, 0};
	vlm_family_of(cfg)->preprocess_load(pre, &c, j, cfg);
	cJSON_Delete(j);
	free(file);
	return c.err ? -1 : 0;
}

int vlm_processor_check(const char *path, const struct vlm_config *cfg)
{
	const struct vlm_family *fam = vlm_family_of(cfg);
	if (access(path, F_OK) != 0 || !fam->processor_check)
		return 0;
	cJSON *j = json_object_file(path);
	if (!j)
		return -1;
	struct jctx c = {path, "", 0};
	fam->processor_check(&c, j, cfg);
	cJSON_Delete(j);
	return c.err ? -1 : 0;
}

void vlm_preprocess_scale_json(cJSON *j, const struct preprocess *p)
{
	cJSON_AddNumberToObject(j, "resample", p->resample == RESAMPLE_LANCZOS ? 1
					       : p->resample == RESAMPLE_BICUBIC ? 3 : 2);
	cJSON_AddBoolToObject(j, "do_rescale", 1);
	cJSON_AddItemToObject(j, "rescale_factor", vlm_float_json(p->rescale));
	cJSON_AddBoolToObject(j, "do_normalize", 1);
	cJSON *mean = cJSON_AddArrayToObject(j, "image_mean");
	cJSON *std = cJSON_AddArrayToObject(j, "image_std");
	for (int i = 0; i < 3; i++) {
		cJSON_AddItemToArray(mean, vlm_float_json(p->mean[i]));
		cJSON_AddItemToArray(std, vlm_float_json(p->std[i]));
	}
}

cJSON *vlm_float_json(float f)
{
	char s[32];
	for (int p = 1; p <= 9; p++) {
		snprintf(s, sizeof s, "%.*g", p, (double)f);
		if (strtof(s, NULL) == f)
			break;
	}
	if (!strpbrk(s, ".eEn")) /* keep it a float for Python readers: 10000.0 */
		strcat(s, ".0");
	return cJSON_CreateRaw(s);
}

static void add_int(cJSON *o, const char *k, long v)
{
	cJSON_AddNumberToObject(o, k, (double)v);
}

void vlm_config_text_json(cJSON *t, const struct vlm_config *c)
{
	cJSON_AddStringToObject(t, "model_type", "llama");
	add_int(t, "vocab_size", c->vocab);
	add_int(t, "hidden_size", c->hidden);
	add_int(t, "intermediate_size", c->inter);
	add_int(t, "num_hidden_layers", c->layers);
	add_int(t, "num_attention_heads", c->heads);
	add_int(t, "num_key_value_heads", c->kv_heads);
	add_int(t, "max_position_embeddings", c->max_pos);
	cJSON_AddItemToObject(t, "rms_norm_eps", vlm_float_json(c->rms_eps));
	cJSON_AddItemToObject(t, "rope_theta", vlm_float_json(c->rope_theta));
	cJSON_AddStringToObject(t, "hidden_act", "silu");
	cJSON_AddBoolToObject(t, "tie_word_embeddings", c->tie_embeddings);
	if (c->bos_id >= 0)
		add_int(t, "bos_token_id", c->bos_id);
	if (c->eos_id >= 0)
		add_int(t, "eos_token_id", c->eos_id);
	if (c->pad_id >= 0)
		add_int(t, "pad_token_id", c->pad_id);
}
