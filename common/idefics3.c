/* idefics3 — Idefics3ForConditionalGeneration and SmolVLMForConditionalGeneration
 * (the same model under two names): a SigLIP tower (patch convolution with
 * a bias, learned positions, no class token, gelu_pytorch_tanh, the last
 * layer's output post-LayerNormed), the pixel shuffle by scale_factor and
 * one linear map without bias, a LLaMA decoder. Idefics3ImageProcessor
 * without image splitting: the longest edge resized to size.longest_edge,
 * then the image squared to max_image_size.longest_edge, LANCZOS. The
 * prompt holds "<fake_token_around_image><global-img><image><fake_token_around_image>",
 * the one image token standing for image_seq_len rows, as the processor's
 * image_seq_len copies of it do.
 *
 * Refused by name: image splitting (do_image_splitting true), a processor
 * size other than the tower's, several images and video (one image per
 * sample is all the record format carries). */
#include <string.h>

#include "util.h"
#include "vlm.h"
#include "vlm_family.h"

static void load_vision(struct vlm_config *cfg, struct jctx *c, const cJSON *v,
			const char *vision_type)
{
	c->sect = "vision_config.";
	if (v && !cJSON_IsObject(v)) {
		c->sect = "";
		jerr(c, "vision_config", "not an object");
		return;
	}
	const char *type = jstr(c, v, "model_type", vision_type);
	/* the published SmolVLM checkpoints (transformers 4.4x) write the
	 * parent's model_type here; transformers reads them as the tower */
	if (strcmp(type, "idefics3_vision") && strcmp(type, "smolvlm_vision") &&
	    strcmp(type, "idefics3") && strcmp(type, "smolvlm"))
		jrefuse(c, "model_type", type, "idefics3_vision, smolvlm_vision", NULL);
	/* Idefics3VisionConfig's defaults */
	cfg->v_hidden = jint(c, v, "hidden_size", 1152, 1, INT_BIG);
	cfg->v_inter = jint(c, v, "intermediate_size", 3072, 1, INT_BIG);
	cfg->v_layers = jint(c, v, "num_hidden_layers", 12, 1, 4096);
	cfg->v_heads = jint(c, v, "num_attention_heads", 16, 1, 65536);
	cfg->image_size = jint(c, v, "image_size", 224, 1, 65536);
	cfg->patch_size = jint(c, v, "patch_size", 32, 1, 65536);
	cfg->num_channels = jint(c, v, "num_channels", 3, 3, 3);
	cfg->v_eps = jnum(c, v, "layer_norm_eps", 1e-6, 0, 1);
	jact(c, "hidden_act", jstr(c, v, "hidden_act", "gelu_pytorch_tanh"), 1, &cfg->v_act);
}

static void config_load_as(struct vlm_config *cfg, struct jctx *c, const cJSON *j,
			   const char *vision_type)
{
	cfg->image_token_index = jint(c, j, "image_token_id", 128257, 0, INT_BIG);
	cfg->shuffle = jint(c, j, "scale_factor", 2, 1, 65536);
	/* the whole last layer's output, every patch (no class token) */
	cfg->feature_layer = -1;
	cfg->drop_cls = 0;
	load_vision(cfg, c, jget(j, "vision_config"), vision_type);
	c->sect = "";
	const cJSON *t = jget(j, "text_config");
	vlm_config_text(cfg, c, t, j);
	/* Idefics3Config makes its default LlamaConfig with rms_norm_eps 1e-5 */
	if (!t)
		cfg->rms_eps = 1e-5f;
}

static void config_load_idefics3(struct vlm_config *cfg, struct jctx *c, const cJSON *j)
{
	config_load_as(cfg, c, j, "idefics3_vision");
}

static void config_load_smolvlm(struct vlm_config *cfg, struct jctx *c, const cJSON *j)
{
	config_load_as(cfg, c, j, "smolvlm_vision");
}

static int config_finish(struct vlm_config *cfg, const char *where)
{
	cfg->v_cls = 0;
	cfg->v_pre_ln = 0;
	cfg->v_post_ln = 1;
	cfg->v_patch_bias = 1;
	cfg->v_frac_pos = 1;
	cfg->connector = VLM_CONN_SHUFFLE;
	cfg->feature_layer = -1;
	cfg->drop_cls = 0;
	if (cfg->shuffle <= 0)
		return error("%s: scale_factor %d: not positive", where, cfg->shuffle);
	return 0;
}

static void add_int(cJSON *o, const char *k, long v)
{
	cJSON_AddNumberToObject(o, k, (double)v);
}

static void config_json_as(cJSON *j, const struct vlm_config *c, const char *torch_dtype,
			   const char *vision_type)
{
	add_int(j, "image_token_id", c->image_token_index);
	add_int(j, "scale_factor", c->shuffle);
	cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
	cJSON_AddStringToObject(j, "seva_chat_template", c->chat_template[0] ? c->chat_template : "smolvlm");
	cJSON_AddStringToObject(j, "torch_dtype", torch_dtype);
	cJSON *v = cJSON_AddObjectToObject(j, "vision_config");
	cJSON_AddStringToObject(v, "model_type", vision_type);
	add_int(v, "hidden_size", c->v_hidden);
	add_int(v, "intermediate_size", c->v_inter);
	add_int(v, "num_hidden_layers", c->v_layers);
	add_int(v, "num_attention_heads", c->v_heads);
	add_int(v, "image_size", c->image_size);
	add_int(v, "patch_size", c->patch_size);
	add_int(v, "num_channels", c->num_channels ? c->num_channels : 3);
	cJSON_AddStringToObject(v, "hidden_act", c->v_act == ACT_GELU_TANH ? "gelu_pytorch_tanh"
						  : c->v_act == ACT_GELU    ? "gelu"
									    : "quick_gelu");
	cJSON_AddItemToObject(v, "layer_norm_eps", vlm_float_json(c->v_eps));
}

static void config_json_idefics3(cJSON *j, const struct vlm_config *c, const char *torch_dtype)
{
	config_json_as(j, c, torch_dtype, "idefics3_vision");
}

static void config_json_smolvlm(cJSON *j, const struct vlm_config *c, const char *torch_dtype)
{
	config_json_as(j, c, torch_dtype, "smolvlm_vision");
}

/* {"longest_edge": n} (or an integer); DEF when absent. */
static int longest_of(struct jctx *c, const cJSON *j, const char *key, int def)
{
	const cJSON *v = jget(j, key);
	if (!v)
		return def;
	if (cJSON_IsNumber(v))
		return (int)jint(c, j, key, def, 1, 65536);
	if (!cJSON_IsObject(v) || !jget(v, "longest_edge")) {
		jerr(c, key, "not {\"longest_edge\": N} (height and width are not supported)");
		return def;
	}
	char sect[96];
	snprintf(sect, sizeof sect, "%s%s.", c->sect, key);
	struct jctx sub = {c->file, sect, c->err};
	int n = (int)jint(&sub, v, "longest_edge", def, 1, 65536);
	c->err |= sub.err;
	return n;
}

static void preprocess_load(struct preprocess *pre, struct jctx *c, const cJSON *j,
			    const struct vlm_config *cfg)
{
	/* Idefics3ImageProcessor's defaults, with max_image_size the tower's */
	pre->mode = PREPROCESS_LONGEST_SQUARE;
	pre->resample = RESAMPLE_LANCZOS;
	pre->rescale = 1.0f / 255;
	for (int i = 0; i < 3; i++)
		pre->mean[i] = pre->std[i] = 0.5f;
	pre->size = 4 * cfg->image_size;
	pre->crop_size = cfg->image_size;
	if (!j) {
		pre->size = cfg->image_size;
		return;
	}
	if (jbool(c, j, "do_image_splitting", 1))
		jerr(c, "do_image_splitting",
		     "image splitting (each image as a grid of crops plus the whole) is not supported: "
		     "set it to false (as SmolVLM's DPO recipe does)");
	pre->size = longest_of(c, j, "size", pre->size);
	pre->crop_size = longest_of(c, j, "max_image_size", 364);
	if (!jbool(c, j, "do_resize", 1))
		jerr(c, "do_resize", "false is not supported (the tower takes one square size)");
	long resample = jint(c, j, "resample", 1, 0, 5);
	if (resample == 1)
		pre->resample = RESAMPLE_LANCZOS;
	else if (resample == 3)
		pre->resample = RESAMPLE_BICUBIC;
	else if (resample == 2)
		pre->resample = RESAMPLE_BILINEAR;
	else
		jerr(c, "resample", "only 1 (lanczos), 2 (bilinear) and 3 (bicubic) are supported");
	vlm_preprocess_scale(c, j, pre);
	if (!c->err && pre->crop_size != cfg->image_size) {
		char msg[128];
		snprintf(msg, sizeof msg, "%d, but the vision tower takes %dx%d images", pre->crop_size,
			 cfg->image_size, cfg->image_size);
		jerr(c, "max_image_size", msg);
	}
}

static char *preprocess_json(const struct preprocess *p, const struct vlm_config *cfg)
{
	(void)cfg;
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "image_processor_type", "Idefics3ImageProcessor");
	cJSON_AddStringToObject(j, "processor_class", "Idefics3Processor");
	cJSON_AddBoolToObject(j, "do_convert_rgb", 1);
	cJSON_AddBoolToObject(j, "do_resize", 1);
	add_int(cJSON_AddObjectToObject(j, "size"), "longest_edge", p->size);
	add_int(cJSON_AddObjectToObject(j, "max_image_size"), "longest_edge", p->crop_size);
	cJSON_AddBoolToObject(j, "do_image_splitting", 0);
	vlm_preprocess_scale_json(j, p);
	cJSON_AddBoolToObject(j, "do_pad", 1);
	char *s = cJSON_Print(j);
	cJSON_Delete(j);
	return s;
}

/* processor_config.json: the processor writes image_seq_len image tokens
 * per image; the model must make as many rows. */
static void processor_check(struct jctx *c, const cJSON *j, const struct vlm_config *cfg)
{
	long n = jint(c, j, "image_seq_len", cfg->img_tokens, 1, INT_BIG);
	if (!c->err && n != cfg->img_tokens) {
		char msg[160];
		snprintf(msg, sizeof msg, "%ld, but the model makes %d rows per image ((%d/%d)^2 / %d^2)",
			 n, cfg->img_tokens, cfg->image_size, cfg->patch_size, cfg->shuffle);
		jerr(c, "image_seq_len", msg);
	}
}

#define IDEFICS3_COMMON \
	.vision_prefix = "model.vision_model.", \
	.connector_names = {"model.connector.modality_projection.proj.weight"}, \
	.decoder_prefix = "model.text_model.", \
	.head_name = "lm_head.weight", \
	.peft_decoder = "model\\.text_model", \
	.layouts = NULL, \
	.chat_template = "smolvlm", \
	.image_block = "<fake_token_around_image><global-img><image><fake_token_around_image>", \
	.config_finish = config_finish, \
	.preprocess_load = preprocess_load, \
	.preprocess_json = preprocess_json, \
	.processor_check = processor_check

const struct vlm_family vlm_family_idefics3 = {
	.model_type = "idefics3",
	.architecture = "Idefics3ForConditionalGeneration",
	.config_load = config_load_idefics3,
	.config_json = config_json_idefics3,
	IDEFICS3_COMMON,
};

const struct vlm_family vlm_family_smolvlm = {
	.model_type = "smolvlm",
	.architecture = "SmolVLMForConditionalGeneration",
	.config_load = config_load_smolvlm,
	.config_json = config_json_smolvlm,
	IDEFICS3_COMMON,
};
