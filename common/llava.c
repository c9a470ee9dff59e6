/* llava — the LLaVA-1.5 family (LlavaForConditionalGeneration): a CLIP
 * tower with its class token and pre-LayerNorm, one chosen layer's hidden
 * states (the class token dropped or kept), a two-layer MLP projector, a
 * LLaMA/Mistral decoder; CLIPImageProcessor's resize and centre crop; the
 * prompt holds one image token that stands for every image row. */
#include <string.h>

#include "util.h"
#include "vlm.h"
#include "vlm_family.h"

static void load_vision(struct vlm_config *cfg, struct jctx *c, const cJSON *v)
{
	static const char *const known[][2] = {
		{"siglip_vision_model", "a SigLIP tower in a LLaVA config is not supported"},
		{"siglip2_vision_model", "a SigLIP tower in a LLaVA config is not supported"},
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
		jrefuse(c, "model_type", type, "clip_vision_model", known);
	cfg->v_hidden = jint(c, v, "hidden_size", llava ? 1024 : 768, 1, INT_BIG);
	cfg->v_inter = jint(c, v, "intermediate_size", llava ? 4096 : 3072, 1, INT_BIG);
	cfg->v_layers = jint(c, v, "num_hidden_layers", llava ? 24 : 12, 1, 4096);
	cfg->v_heads = jint(c, v, "num_attention_heads", llava ? 16 : 12, 1, 65536);
	cfg->image_size = jint(c, v, "image_size", llava ? 336 : 224, 1, 65536);
	cfg->patch_size = jint(c, v, "patch_size", llava ? 14 : 32, 1, 65536);
	cfg->num_channels = jint(c, v, "num_channels", 3, 3, 3);
	cfg->v_eps = jnum(c, v, "layer_norm_eps", 1e-5, 0, 1);
	jact(c, "hidden_act", jstr(c, v, "hidden_act", "quick_gelu"), 0, &cfg->v_act);
}

static void config_load(struct vlm_config *cfg, struct jctx *c, const cJSON *j)
{
	if (jget(j, "image_grid_pinpoints"))
		jerr(c, "image_grid_pinpoints", "tiling images into a grid (LLaVA-NeXT) is not supported");
	/* newer transformers call it image_token_id */
	long img = jint(c, j, "image_token_id", 32000, 0, INT_BIG);
	cfg->image_token_index = jint(c, j, "image_token_index", img, 0, INT_BIG);
	jact(c, "projector_hidden_act", jstr(c, j, "projector_hidden_act", "gelu"), 2,
	     &cfg->proj_act);
	if (!jbool(c, j, "multimodal_projector_bias", 1))
		jerr(c, "multimodal_projector_bias", "a projector without biases is not supported");
	/* transformers >= 4.47 also takes a list: the layers' features concatenated */
	const cJSON *fl = jget(j, "vision_feature_layer");
	if (cJSON_IsArray(fl) && cJSON_GetArraySize(fl) != 1)
		jerr(c, "vision_feature_layer",
		     "a list of several layers (features concatenated) is not supported: one layer only");
	cfg->feature_layer = jint_ex(c, j, "vision_feature_layer", -2, -4096, 4096, 1);
	const char *strat = jstr(c, j, "vision_feature_select_strategy", "default");
	if (!strcmp(strat, "default"))
		cfg->drop_cls = 1;
	else if (!strcmp(strat, "full"))
		cfg->drop_cls = 0;
	else
		jerr(c, "vision_feature_select_strategy", "not \"default\" or \"full\"");

	/* absent or null: LlavaConfig's defaults */
	load_vision(cfg, c, jget(j, "vision_config"));
	c->sect = "";
	vlm_config_text(cfg, c, jget(j, "text_config"), j);
}

static int config_finish(struct vlm_config *cfg, const char *where)
{
	(void)where;
	cfg->v_cls = 1;
	cfg->v_pre_ln = 1;
	cfg->v_post_ln = 0;
	cfg->v_patch_bias = 0;
	cfg->v_frac_pos = 0;
	cfg->connector = VLM_CONN_MLP2;
	return 0;
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

static void preprocess_load(struct preprocess *pre, struct jctx *c, const cJSON *j,
			    const struct vlm_config *cfg)
{
	if (!j)
		return;
	int shortest, crop_shortest;
	int size = side_of(c, j, "size", cfg->image_size, &shortest);
	int crop = side_of(c, j, "crop_size", cfg->image_size, &crop_shortest);
	int do_resize = jbool(c, j, "do_resize", 1);
	int do_crop = jbool(c, j, "do_center_crop", 1);
	/* LLaVA-1.5 pads to a square with the mean colour before the processor
	 * runs (image_aspect_ratio "pad"); we name it in the processor file. */
	const char *aspect = jstr(c, j, "image_aspect_ratio", "");
	int pad = jbool(c, j, "seva_pad_to_square", 0) || jbool(c, j, "do_pad", 0) ||
		  !strcmp(aspect, "pad");
	long resample = jint(c, j, "resample", 3, 0, 5);
	if (resample == 3)
		pre->resample = RESAMPLE_BICUBIC;
	else if (resample == 2)
		pre->resample = RESAMPLE_BILINEAR;
	else
		jerr(c, "resample", "only 2 (bilinear) and 3 (bicubic) are supported");
	vlm_preprocess_scale(c, j, pre);

	int side = 0;
	if (pad || !do_crop || !do_resize) {
		if (do_resize && !pad && shortest)
			jerr(c, "do_center_crop", "a shortest-edge resize without a centre crop gives non-square images");
		pre->mode = pad ? PREPROCESS_PAD_RESIZE : PREPROCESS_RESIZE;
		pre->size = side = do_resize ? size : cfg->image_size;
		pre->crop_size = side;
	} else {
		pre->mode = PREPROCESS_SHORTEST_CROP;
		pre->size = size;
		pre->crop_size = side = crop;
		if (!crop_shortest && crop > size && !c->err)
			jerr(c, "crop_size", "larger than the resized image");
	}
	if (!c->err && side != cfg->image_size) {
		char msg[96];
		snprintf(msg, sizeof msg, "gives %dx%d images, the model takes %dx%d", side, side,
			 cfg->image_size, cfg->image_size);
		jerr(c, pre->mode == PREPROCESS_SHORTEST_CROP ? "crop_size" : "size", msg);
	}
}

/* processor_config.json (LlavaProcessor, transformers >= 4.45): it counts
 * the image's tokens from its own patch_size and select strategy, so both
 * must be the model's; null members (files written before the processor
 * knew them) say nothing. */
static void processor_check(struct jctx *c, const cJSON *j, const struct vlm_config *cfg)
{
	long p = jint(c, j, "patch_size", cfg->patch_size, 1, 65536);
	if (!c->err && p != cfg->patch_size) {
		char msg[96];
		snprintf(msg, sizeof msg, "%ld, but config.json's vision_config.patch_size is %d", p,
			 cfg->patch_size);
		jerr(c, "patch_size", msg);
	}
	const char *mine = cfg->drop_cls ? "default" : "full";
	const char *strat = jstr(c, j, "vision_feature_select_strategy", mine);
	if (!c->err && strcmp(strat, mine)) {
		char msg[128];
		snprintf(msg, sizeof msg, "'%.20s', but config.json's is '%s'", strat, mine);
		jerr(c, "vision_feature_select_strategy", msg);
	}
	/* the class token: a CLIP tower has exactly one */
	if (jint(c, j, "num_additional_image_tokens", 1, 0, 65536) != 1 && !c->err)
		jerr(c, "num_additional_image_tokens", "not 1 (a CLIP tower adds one class token)");
}

static const char *act_name(enum act a)
{
	return a == ACT_GELU ? "gelu" : a == ACT_QUICK_GELU ? "quick_gelu"
		: a == ACT_GELU_TANH ? "gelu_pytorch_tanh" : "silu";
}

static void add_int(cJSON *o, const char *k, long v)
{
	cJSON_AddNumberToObject(o, k, (double)v);
}

/* Every field we read, so that the file alone defines the model for us
 * and for transformers' LlavaConfig. */
static void config_json(cJSON *j, const struct vlm_config *c, const char *torch_dtype)
{
	add_int(j, "image_token_index", c->image_token_index);
	cJSON_AddStringToObject(j, "projector_hidden_act", act_name(c->proj_act));
	add_int(j, "vision_feature_layer", c->feature_layer);
	cJSON_AddStringToObject(j, "vision_feature_select_strategy", c->drop_cls ? "default" : "full");
	cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
	if (c->pad_id >= 0)
		add_int(j, "pad_token_id", c->pad_id);
	cJSON_AddStringToObject(j, "seva_chat_template", c->chat_template[0] ? c->chat_template : "llava_v1");
	cJSON_AddStringToObject(j, "torch_dtype", torch_dtype);

	cJSON *v = cJSON_AddObjectToObject(j, "vision_config");
	cJSON_AddStringToObject(v, "model_type", "clip_vision_model");
	add_int(v, "hidden_size", c->v_hidden);
	add_int(v, "intermediate_size", c->v_inter);
	add_int(v, "num_hidden_layers", c->v_layers);
	add_int(v, "num_attention_heads", c->v_heads);
	add_int(v, "image_size", c->image_size);
	add_int(v, "patch_size", c->patch_size);
	add_int(v, "num_channels", c->num_channels ? c->num_channels : 3);
	cJSON_AddStringToObject(v, "hidden_act", act_name(c->v_act));
	cJSON_AddItemToObject(v, "layer_norm_eps", vlm_float_json(c->v_eps));
}

static char *preprocess_json(const struct preprocess *p, const struct vlm_config *cfg)
{
	(void)cfg;
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "image_processor_type", "CLIPImageProcessor");
	cJSON_AddBoolToObject(j, "do_resize", 1);
	cJSON *size = cJSON_AddObjectToObject(j, "size");
	cJSON *crop = cJSON_AddObjectToObject(j, "crop_size");
	if (p->mode == PREPROCESS_SHORTEST_CROP) {
		add_int(size, "shortest_edge", p->size);
		add_int(crop, "height", p->crop_size);
		add_int(crop, "width", p->crop_size);
		cJSON_AddBoolToObject(j, "do_center_crop", 1);
	} else {
		add_int(size, "height", p->size);
		add_int(size, "width", p->size);
		add_int(crop, "height", p->size);
		add_int(crop, "width", p->size);
		cJSON_AddBoolToObject(j, "do_center_crop", 0);
	}
	cJSON_AddBoolToObject(j, "seva_pad_to_square", p->mode == PREPROCESS_PAD_RESIZE);
	vlm_preprocess_scale_json(j, p);
	char *s = cJSON_Print(j);
	cJSON_Delete(j);
	return s;
}

/* The table keeps llava-hf's old layout (names.md); transformers >= 4.52
 * writes the newer one, and transformers 5 the CLIP tower without its
 * "vision_model." level (in either layout). First match wins. */
static const char *const layouts[][2] = {
	{"model.vision_tower.vision_model.", "vision_tower.vision_model."},
	{"model.vision_tower.", "vision_tower.vision_model."},
	{"vision_tower.vision_model.", "vision_tower.vision_model."},
	{"vision_tower.", "vision_tower.vision_model."},
	{"model.multi_modal_projector.", "multi_modal_projector."},
	{"model.language_model.", "language_model.model."},
	{"lm_head.", "language_model.lm_head."},
	{NULL, NULL},
};

/* LlavaForConditionalGeneration's modules in transformers 5 (a CLIP tower
 * without its "vision_model." level). */
static const char *const module_layout[][2] = {
	{"vision_tower.vision_model.", "model.vision_tower."},
	{"multi_modal_projector.", "model.multi_modal_projector."},
	{"language_model.model.", "model.language_model."},
	{"language_model.lm_head.", "lm_head."},
	{NULL, NULL},
};

const struct vlm_family vlm_family_llava = {
	.model_type = "llava",
	.architecture = "LlavaForConditionalGeneration",
	.vision_prefix = "vision_tower.vision_model.",
	.connector_names = {
		"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.bias",
		"multi_modal_projector.linear_2.weight", "multi_modal_projector.linear_2.bias",
	},
	.decoder_prefix = "language_model.model.",
	.head_name = "language_model.lm_head.weight",
	/* CLIP's attention has q_proj, k_proj and v_proj too: a list of
	 * names would have PEFT adapt the tower as well */
	.peft_decoder = "model\\.language_model",
	.layouts = layouts,
	.module_layout = module_layout,
	.chat_template = "llava_v1",
	.image_block = "<image>",
	.config_load = config_load,
	.config_finish = config_finish,
	.config_json = config_json,
	.preprocess_load = preprocess_load,
	.preprocess_json = preprocess_json,
	.processor_check = processor_check,
};
