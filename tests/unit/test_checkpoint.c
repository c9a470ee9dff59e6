/* test_checkpoint — config.json / preprocessor_config.json with HF defaults
 * and their errors, the safetensors format (round trips, rounding, corrupt
 * files), model directories (atomic save, reload, missing and misshapen
 * tensors, tied embeddings) and PEFT adapters. Runs from the repository root. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "safetensors.h"
#include "tap.h"
#include "tensor.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"

#define REF "tests/fixtures/ref"

static int load_config_text(struct vlm_config *c, const char *json)
{
	put("config.json", json);
	char *p = tpath("config.json");
	capture();
	int r = vlm_config_load(c, p);
	captured();
	free(p);
	return r;
}

static void test_config(void)
{
	struct vlm_config c;
	int r = vlm_config_load(&c, REF "/llava-1.5-7b-hf.config.json");
	tap_ok(r == 0, "llava-1.5-7b-hf config.json loads");
	tap_ok(c.v_hidden == 1024 && c.v_inter == 4096 && c.v_layers == 24 && c.v_heads == 16 &&
		       c.image_size == 336 && c.patch_size == 14 && c.v_act == ACT_QUICK_GELU &&
		       c.v_eps == 1e-5f,
	       "7B vision tower: ViT-L/14-336, quick_gelu (CLIPVisionConfig default act)");
	tap_ok(c.np == 576 && c.img_tokens == 576 && c.v_used == 23 && c.drop_cls == 1,
	       "7B: 576 image tokens, 23 vision layers used (got %d, %d, %d)", c.np, c.img_tokens,
	       c.v_used);
	tap_ok(c.hidden == 4096 && c.inter == 11008 && c.layers == 32 && c.heads == 32 &&
		       c.kv_heads == 32 && c.vocab == 32064 && c.max_pos == 4096 &&
		       c.rms_eps == 1e-5f && c.rope_theta == 10000.0f,
	       "7B decoder: LlamaConfig defaults under llava-hf's sparse text_config");
	tap_ok(c.image_token_index == 32000 && c.pad_id == 32001 && c.bos_id == 1 && c.eos_id == 2 &&
		       !c.tie_embeddings && c.proj_act == ACT_GELU && c.feature_layer == -2 &&
		       !strcmp(c.chat_template, "llava_v1"),
	       "7B: image token 32000, pad 32001 (top level), bos 1, eos 2, llava_v1");

	r = load_config_text(&c, "{}");
	tap_ok(r == 0 && c.v_hidden == 1024 && c.v_layers == 24 && c.image_size == 336 &&
		       c.patch_size == 14 && c.hidden == 4096 && c.vocab == 32000 &&
		       c.max_pos == 2048 && c.rms_eps == 1e-6f && c.kv_heads == 32 &&
		       c.pad_id == -1 && c.image_token_index == 32000,
	       "empty config: LlavaConfig's CLIP ViT-L/14-336 and a default LlamaConfig");
	r = load_config_text(&c, "{\"vision_config\": {\"hidden_size\": 64, \"num_attention_heads\": 4},"
				 " \"text_config\": {\"num_attention_heads\": 8, \"hidden_size\": 64},"
				 " \"seva_chat_template\": \"seva\"}");
	tap_ok(r == 0 && c.v_hidden == 64 && c.v_inter == 3072 && c.v_layers == 12 &&
		       c.image_size == 224 && c.patch_size == 32 && c.np == 49 && c.kv_heads == 8 &&
		       !strcmp(c.chat_template, "seva"),
	       "partial vision_config: CLIPVisionConfig defaults (224/32); kv heads = heads");

	r = load_config_text(&c, "{\"text_config\": {\"hidden_size\": \"big\"}}");
	expect_error(r, "wrong type names file and key", "config.json", "text_config.hidden_size",
		     "not an integer", NULL);
	r = load_config_text(&c, "{\"vision_config\": {\"num_hidden_layers\": -1}}");
	expect_error(r, "negative size refused", "vision_config.num_hidden_layers", NULL);
	r = load_config_text(&c, "{\"text_config\": {\"hidden_size\": 100, \"num_attention_heads\": 3}}");
	expect_error(r, "hidden not divisible by heads", "config.json", "not divisible", NULL);
	r = load_config_text(&c, "{\"text_config\": {\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 " \"num_key_value_heads\": 3}}");
	expect_error(r, "heads not a multiple of kv heads", "num_key_value_heads", NULL);
	r = load_config_text(&c, "{\"vision_config\": {\"hidden_act\": \"relu\"}}");
	expect_error(r, "unsupported hidden_act", "vision_config.hidden_act", "relu", NULL);
	r = load_config_text(&c, "{\"text_config\": {\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}}");
	expect_error(r, "rope_scaling refused", "text_config.rope_scaling", "not supported", NULL);
	r = load_config_text(&c, "{\"text_config\": {\"rope_scaling\": null}}");
	tap_ok(r == 0, "rope_scaling null is fine");
	r = load_config_text(&c, "{\"text_config\": {\"rope_parameters\": {\"rope_theta\": 500.0, \"rope_type\": \"default\"}}}");
	tap_ok(r == 0 && c.rope_theta == 500.0f, "rope_parameters (transformers 5): rope_theta read (%g)", c.rope_theta);
	r = load_config_text(&c, "{\"text_config\": {\"rope_parameters\": {\"rope_theta\": 500.0, \"rope_type\": \"llama3\"}}}");
	expect_error(r, "rope_parameters with another rope_type refused", "text_config.rope_parameters.rope_type",
		     "'llama3' is not supported", NULL);
	r = load_config_text(&c, "{\"text_config\": {\"model_type\": \"qwen2\"}}");
	expect_error(r, "non-llama decoder refused", "text_config.model_type", NULL);
	r = load_config_text(&c, "{\"vision_feature_layer\": -30}");
	expect_error(r, "feature layer outside the tower", "vision_feature_layer", NULL);
	r = load_config_text(&c, "{\"vision_feature_select_strategy\": \"cls\"}");
	expect_error(r, "unknown select strategy", "vision_feature_select_strategy", NULL);
	r = load_config_text(&c, "{\"vision_config\": {\"image_size\": 30, \"patch_size\": 7}}");
	expect_error(r, "image size not a multiple of the patch", "patch_size", NULL);
	r = load_config_text(&c, "[1, 2");
	expect_error(r, "not JSON", "config.json", "not a JSON object", NULL);
	capture();
	r = vlm_config_load(&c, "/nonexistent/config.json");
	captured();
	expect_error(r, "missing file", "/nonexistent/config.json", NULL);

	r = load_config_text(&c, "{\"text_config\": {\"eos_token_id\": [128001, 128009]}}");
	tap_ok(r == 0 && c.eos_id == 128001, "eos_token_id as a list: the first");
	c.feature_layer = 5;
	c.v_layers = 4;
	capture();
	r = vlm_config_finish(&c);
	captured();
	expect_error(r, "vlm_config_finish checks shapes too", "vision_feature_layer", NULL);
}

static int load_pre_text(struct preprocess *p, const char *json, int size)
{
	struct vlm_config c;
	memset(&c, 0, sizeof c);
	c.image_size = size;
	put("preprocessor_config.json", json);
	char *path = tpath("preprocessor_config.json");
	capture();
	int r = vlm_preprocess_load(p, path, &c);
	captured();
	free(path);
	return r;
}

static void test_preprocess(void)
{
	struct preprocess p;
	struct vlm_config c;
	memset(&c, 0, sizeof c);
	c.image_size = 336;
	int r = vlm_preprocess_load(&p, REF "/llava-1.5-7b-hf.preprocessor_config.json", &c);
	tap_ok(r == 0 && p.mode == PREPROCESS_SHORTEST_CROP && p.size == 336 && p.crop_size == 336 &&
		       p.resample == RESAMPLE_BICUBIC && fabsf(p.rescale - 1 / 255.0f) < 1e-9f &&
		       p.mean[0] == 0.48145466f && p.std[2] == 0.27577711f,
	       "llava-hf preprocessor: shortest edge 336, centre crop 336, bicubic, CLIP mean/std");
	r = vlm_preprocess_load(&p, "/nonexistent/preprocessor_config.json", &c);
	tap_ok(r == 0 && p.mode == PREPROCESS_PAD_RESIZE && p.size == 336,
	       "absent file: CLIP defaults, pad to square");
	r = load_pre_text(&p, "{\"size\": {\"shortest_edge\": 336}, \"seva_pad_to_square\": true,"
			      " \"resample\": 2, \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5]}",
			  336);
	tap_ok(r == 0 && p.mode == PREPROCESS_PAD_RESIZE && p.size == 336 &&
		       p.resample == RESAMPLE_BILINEAR && p.mean[1] == 0.5f && p.std[0] == 0.5f,
	       "seva_pad_to_square: LLaVA-1.5's expand2square then resize");
	r = load_pre_text(&p, "{\"image_aspect_ratio\": \"pad\", \"size\": 64}", 64);
	tap_ok(r == 0 && p.mode == PREPROCESS_PAD_RESIZE && p.size == 64, "image_aspect_ratio pad, size as int");
	r = load_pre_text(&p, "{\"size\": {\"height\": 64, \"width\": 64}, \"do_center_crop\": false}", 64);
	tap_ok(r == 0 && p.mode == PREPROCESS_RESIZE && p.size == 64, "size height/width without crop: plain resize");
	r = load_pre_text(&p, "{\"size\": {\"shortest_edge\": 80}, \"crop_size\": 64}", 64);
	tap_ok(r == 0 && p.mode == PREPROCESS_SHORTEST_CROP && p.size == 80 && p.crop_size == 64,
	       "crop_size as int");
	r = load_pre_text(&p, "{\"do_normalize\": false}", 224);
	tap_ok(r == 0 && p.mean[0] == 0 && p.std[0] == 1, "do_normalize false: mean 0 std 1");

	r = load_pre_text(&p, "{\"crop_size\": {\"height\": 224, \"width\": 224}}", 336);
	expect_error(r, "crop size differs from the model's image size", "preprocessor_config.json",
		     "crop_size", "336", NULL);
	r = load_pre_text(&p, "{\"resample\": 0}", 336);
	expect_error(r, "nearest resampling refused", "resample", NULL);
	r = load_pre_text(&p, "{\"size\": {\"height\": 336, \"width\": 300}, \"do_center_crop\": false}", 336);
	expect_error(r, "non-square size refused", "size", "square", NULL);
	r = load_pre_text(&p, "{\"image_mean\": [0.5, 0.5]}", 336);
	expect_error(r, "image_mean of two values refused", "image_mean", NULL);
	r = load_pre_text(&p, "{\"image_std\": [0.5, 0, 0.5]}", 336);
	expect_error(r, "zero std refused", "image_std", NULL);
}

/* --- safetensors --- */

static void fill(float *x, long n, unsigned seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
	for (long i = 0; i < n; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4 - 2);
	}
}

static void test_safetensors(void)
{
	float a[6 * 5], b[7], c[1] = {3.25f};
	long sa[2] = {6, 5}, sb[1] = {7};
	fill(a, 30, 1);
	fill(b, 7, 2);
	b[0] = 1e-30f; /* f16 subnormal range → 0 */
	b[1] = 70000;  /* beyond f16 → inf */
	struct safetensors_entry e[3] = {
		{"zeta.weight", a, 2, sa}, {"alpha", b, 1, sb}, {"scalar", c, 0, NULL}};
	const char *dt[3] = {"F32", "BF16", "F16"};
	for (int k = 0; k < 3; k++) {
		char *p = tpath("t.safetensors");
		struct safetensors st;
		int r = safetensors_write(p, e, 3, dt[k]);
		r = r ? r : safetensors_open(&st, p);
		if (!tap_ok(r == 0, "%s: write and reopen", dt[k])) {
			free(p);
			continue;
		}
		const struct safetensors_tensor *t = safetensors_find(&st, "zeta.weight");
		const struct safetensors_tensor *u = safetensors_find(&st, "alpha");
		const struct safetensors_tensor *s = safetensors_find(&st, "scalar");
		tap_ok(st.ntensors == 3 && t && u && s && t->ndim == 2 && t->shape[0] == 6 &&
			       t->shape[1] == 5 && s->ndim == 0 && s->numel == 1 &&
			       !strcmp(t->dtype_name, dt[k]) && !safetensors_find(&st, "__metadata__"),
		       "%s: names, shapes, dtype; scalars have no dims", dt[k]);
		float ra[30], rb[7], rc[1], want[30], wantb[7];
		r = safetensors_read_f32(t, ra, sa, 2) | safetensors_read_f32(u, rb, sb, 1) |
		    safetensors_read_f32(s, rc, NULL, 0);
		/* the expected values: each float rounded to the dtype by the kernels of tensor.h */
		for (int i = 0; i < 30; i++)
			want[i] = k == 0 ? a[i] : k == 1 ? bf16_to_f32(f32_to_bf16(a[i])) : f16_to_f32(f32_to_f16(a[i]));
		for (int i = 0; i < 7; i++)
			wantb[i] = k == 0 ? b[i] : k == 1 ? bf16_to_f32(f32_to_bf16(b[i])) : f16_to_f32(f32_to_f16(b[i]));
		tap_ok(r == 0 && !memcmp(ra, want, sizeof ra) && !memcmp(rb, wantb, sizeof rb) &&
			       rc[0] == 3.25f,
		       "%s: values read back as the dtype's rounding of the input", dt[k]);
		/* and that rounding is what the dtype promises (relative half-ulp) */
		float bound = k == 0 ? 0 : k == 1 ? 1.0f / 256 : 1.0f / 2048;
		tap_close(ra, a, 30, 1e-30f, bound, k == 0 ? "F32 exact" : k == 1 ? "BF16 within 2^-8" : "F16 within 2^-11");
		if (k == 2)
			tap_ok(rb[0] == 0 && isinf(rb[1]), "F16: underflow to 0, overflow to inf");
		/* the header as other readers expect it */
		FILE *f = fopen(p, "rb");
		unsigned char len8[8];
		uint64_t hl = 0;
		if (fread(len8, 1, 8, f) != 8)
			len8[0] = 0;
		for (int i = 7; i >= 0; i--)
			hl = hl << 8 | len8[i];
		char *h = xcalloc(hl + 1, 1);
		if (fread(h, 1, hl, f) != hl)
			h[0] = 0;
		fclose(f);
		cJSON *j = cJSON_Parse(h);
		cJSON *meta = cJSON_GetObjectItem(j, "__metadata__");
		tap_ok(hl % 8 == 0 && j && cJSON_IsString(cJSON_GetObjectItem(meta, "format")) &&
			       !strcmp(cJSON_GetObjectItem(meta, "format")->valuestring, "pt"),
		       "%s: header 8-aligned JSON with __metadata__ format pt", dt[k]);
		cJSON_Delete(j);
		free(h);
		long wrong[2] = {5, 6};
		capture();
		r = safetensors_read_f32(t, ra, wrong, 2);
		captured();
		expect_error(r, "shape mismatch names file and tensor", "t.safetensors",
			     "'zeta.weight'", "(6, 5)", "(5, 6)", NULL);
		safetensors_release(&st);
		free(p);
	}

	/* corrupt files, each with the message naming what is wrong */
	static const struct {
		const char *header, *what, *needle;
		long data;
	} bad[] = {
		{"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "truncated data", "data_offsets", 4},
		{"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "size not shape x dtype", "want 12", 8},
		{"{\"x\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unknown dtype", "unknown dtype 'Q4'", 8},
		{"{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "negative size", "shape", 8},
		{"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "reversed offsets", "data_offsets", 8},
		{"{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", "missing offsets", "data_offsets", 8},
		{"[1,2]", "header not an object", "not a JSON object", 8},
		{"{\"x\":", "header not JSON", "not a JSON object", 8},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		char *p = tpath("bad.safetensors");
		FILE *f = fopen(p, "wb");
		uint64_t hl = strlen(bad[i].header);
		unsigned char len8[8];
		for (int k = 0; k < 8; k++)
			len8[k] = (unsigned char)(hl >> (8 * k));
		fwrite(len8, 1, 8, f);
		fputs(bad[i].header, f);
		for (long k = 0; k < bad[i].data; k++)
			fputc(0, f);
		fclose(f);
		struct safetensors st;
		capture();
		int r = safetensors_open(&st, p);
		captured();
		expect_error(r, bad[i].what, "bad.safetensors", bad[i].needle, NULL);
		free(p);
	}
	char *p = tpath("short.safetensors");
	FILE *sf = fopen(p, "wb");
	fwrite("\xff\xff\xff\xff\x00\x00\x00\x00{}", 1, 10, sf);
	fclose(sf);
	struct safetensors st;
	capture();
	int r = safetensors_open(&st, p);
	captured();
	expect_error(r, "header length beyond the file", "short.safetensors", "header length", NULL);
	free(p);
	p = tpath("tiny.safetensors");
	put("tiny.safetensors", "abc");
	capture();
	r = safetensors_open(&st, p);
	captured();
	expect_error(r, "3-byte file", "tiny.safetensors", "not a safetensors file", NULL);
	free(p);

	/* shards: an index naming a tensor its shard lacks, and a name in two shards */
	char *shd = tpath("sh");
	mkdir(shd, 0755);
	free(shd);
	char *s1 = tpath("sh/a.safetensors"), *s2 = tpath("sh/b.safetensors");
	safetensors_write(s1, e, 2, "F32");
	safetensors_write(s2, e + 1, 2, "F32");
	put("sh/model.safetensors.index.json",
	    "{\"weight_map\": {\"zeta.weight\": \"a.safetensors\", \"scalar\": \"b.safetensors\"}}");
	char *d = tpath("sh");
	capture();
	r = safetensors_open_dir(&st, d, "model");
	captured();
	expect_error(r, "a tensor in two shards", "'alpha' also in", NULL);
	safetensors_write(s2, e + 2, 1, "F32");
	put("sh/model.safetensors.index.json",
	    "{\"weight_map\": {\"zeta.weight\": \"a.safetensors\", \"alpha\": \"b.safetensors\"}}");
	capture();
	r = safetensors_open_dir(&st, d, "model");
	captured();
	expect_error(r, "index names the wrong shard", "model.safetensors.index.json", "'alpha'", NULL);
	put("sh/model.safetensors.index.json",
	    "{\"weight_map\": {\"zeta.weight\": \"a.safetensors\", \"scalar\": \"../b.safetensors\"}}");
	capture();
	r = safetensors_open_dir(&st, d, "model");
	captured();
	expect_error(r, "index pointing outside the directory", "not a file name", NULL);
	put("sh/model.safetensors.index.json",
	    "{\"weight_map\": {\"zeta.weight\": \"a.safetensors\", \"alpha\": \"a.safetensors\", \"scalar\": \"b.safetensors\"}}");
	r = safetensors_open_dir(&st, d, "model");
	tap_ok(r == 0 && st.nfiles == 2 && st.ntensors == 3 && safetensors_find(&st, "scalar"),
	       "index over two shards: each file mapped once");
	if (!r)
		safetensors_release(&st);
	free(s1);
	free(s2);
	free(d);
}

/* --- model directories --- */

static float max_rel(const float *a, const float *b, long n)
{
	float worst = 0;
	for (long i = 0; i < n; i++) {
		float d = fabsf(a[i] - b[i]) / (fabsf(b[i]) + 1e-30f);
		if (a[i] != b[i] && !(d <= worst))
			worst = d;
	}
	return worst;
}

static void test_model_dirs(void)
{
	capture();
	struct vlm *m = vlm_load(REF "/model");
	captured();
	if (!tap_ok(m != NULL, "reference model loads")) {
		tap_diag("%s", errbuf);
		return;
	}
	tap_ok(strstr(errbuf, "1 tensor not used") && strstr(errbuf, "position_ids"),
	       "unknown tensors: one warning with the count");
	tap_ok(m->dir && !strcmp(m->dir, REF "/model"), "the directory is remembered");
	tap_ok(m->pre.mode == PREPROCESS_SHORTEST_CROP && m->pre.crop_size == 28,
	       "preprocessor_config.json read");

	char *out = tpath("saved");
	int r = vlm_save(m, out, "F32");
	struct vlm *m2 = r ? NULL : vlm_load(out);
	tap_ok(m2 && m2->nparams == m->nparams &&
		       !memcmp(m2->params, m->params, m->nparams * sizeof(float)),
	       "F32 save and reload: every parameter bit-identical");
	if (m2)
		tap_ok(!memcmp(&m2->cfg, &m->cfg, sizeof m->cfg) &&
			       !memcmp(&m2->pre, &m->pre, sizeof m->pre),
		       "saved config.json and preprocessor_config.json read back the same");
	char *tmp = xasprintf("%s.tmp.%ld", out, (long)getpid());
	tap_ok(access(tmp, F_OK) != 0, "no temporary directory left");
	free(tmp);

	vlm_free(m2);
	char *slash = xasprintf("%s//", out);
	r = vlm_save(m, slash, "F32");
	m2 = r ? NULL : vlm_load(out);
	tap_ok(m2 != NULL, "a trailing slash names the same directory");
	free(slash);

	/* saving over an existing model directory swaps it; BF16 halves the file */
	r = vlm_save(m, out, "BF16");
	vlm_free(m2);
	m2 = r ? NULL : vlm_load(out);
	if (tap_ok(m2 != NULL, "BF16 save over the F32 directory")) {
		float *want = xmalloc(m->nparams * sizeof(float));
		for (long i = 0; i < m->nparams; i++)
			want[i] = bf16_to_f32(f32_to_bf16(m->params[i]));
		tap_ok(!memcmp(want, m2->params, m->nparams * sizeof(float)),
		       "BF16 reload equals the F32 weights rounded to bf16 (max rel %g)",
		       (double)max_rel(m2->params, m->params, m->nparams));
		free(want);
		char *st = xasprintf("%s/model.safetensors", out);
		struct stat sb;
		tap_ok(stat(st, &sb) == 0 && sb.st_size < m->nparams * 2 + 20000,
		       "BF16 file is 2 bytes a parameter");
		free(st);
	}
	vlm_free(m2);

	/* tokenizer files travel with the model; a missing preprocessor_config.json is written */
	char *src = tpath("src");
	mkdir(src, 0755);
	put("src/tokenizer.json", "{\"model\": {\"type\": \"WordLevel\"}}\n");
	put("src/special_tokens_map.json", "{}\n");
	char *keep_dir = m->dir;
	m->dir = src;
	m->pre.mode = PREPROCESS_PAD_RESIZE;
	m->pre.resample = RESAMPLE_BILINEAR;
	m->pre.mean[1] = 0.25f;
	r = vlm_save(m, out, "F32");
	m->dir = keep_dir;
	char *tj = tpath("saved/tokenizer.json"), *sm = tpath("saved/special_tokens_map.json");
	unsigned char *tok = r ? NULL : read_file(tj, NULL);
	tap_ok(tok && !strcmp((char *)tok, "{\"model\": {\"type\": \"WordLevel\"}}\n") &&
		       access(sm, F_OK) == 0,
	       "tokenizer.json and special_tokens_map.json copied from the source directory");
	free(tok);
	free(tj);
	free(sm);
	m2 = r ? NULL : vlm_load(out);
	tap_ok(m2 && !memcmp(&m2->pre, &m->pre, sizeof m->pre),
	       "preprocessor_config.json written from the model's settings reads back the same");
	vlm_free(m2);
	free(src);

	/* a directory that is not a model is never replaced */
	char *home = tpath("notamodel");
	mkdir(home, 0755);
	put("notamodel/precious.txt", "x");
	capture();
	r = vlm_save(m, home, "F32");
	captured();
	expect_error(r, "refuses to replace a directory without config.json", "notamodel",
		     "not replacing", NULL);
	char *prec = tpath("notamodel/precious.txt");
	tap_ok(access(prec, F_OK) == 0, "its files are untouched");
	free(prec);
	free(home);
	capture();
	r = vlm_save(m, out, "F8");
	captured();
	expect_error(r, "unknown dtype refused", "F8", NULL);

	/* missing and misshapen tensors name the tensor */
	struct safetensors_entry *e = xcalloc(m->ntensors, sizeof *e);
	int n = 0, skip = -1;
	for (int k = 0; k < m->ntensors; k++) {
		if (strstr(m->tensors[k].name, "layers.1.mlp.up_proj"))
			skip = n;
		e[n++] = (struct safetensors_entry){m->tensors[k].name, m->tensors[k].data,
						    m->tensors[k].ndim, m->tensors[k].shape};
	}
	char *st = xasprintf("%s/model.safetensors", out);
	struct safetensors_entry keep = e[skip];
	e[skip] = e[n - 1];
	safetensors_write(st, e, n - 1, "F32");
	capture();
	m2 = vlm_load(out);
	captured();
	expect_error(m2 ? 0 : -1, "missing tensor named", "layers.1.mlp.up_proj.weight", "missing", NULL);
	vlm_free(m2);
	e[skip] = keep;
	long bad_shape[2] = {keep.shape[1], keep.shape[0]};
	e[skip].shape = bad_shape;
	safetensors_write(st, e, n, "F32");
	capture();
	m2 = vlm_load(out);
	captured();
	expect_error(m2 ? 0 : -1, "transposed tensor named", "layers.1.mlp.up_proj.weight", "shape",
		     NULL);
	vlm_free(m2);
	free(st);
	free(e);

	/* tied embeddings: lm_head absent from the file (HF drops it) */
	struct vlm_config tc = m->cfg;
	tc.tie_embeddings = 1;
	struct vlm *t = vlm_new(&tc);
	vlm_init_random(t, 7);
	char *tied = tpath("tied");
	r = vlm_save(t, tied, "F32");
	struct safetensors sts;
	char *tfile = xasprintf("%s/model.safetensors", tied);
	if (!r && !safetensors_open(&sts, tfile)) {
		tap_ok(!safetensors_find(&sts, "language_model.lm_head.weight"),
		       "tied model: no lm_head in the file");
		safetensors_release(&sts);
	}
	free(tfile);
	struct vlm *t2 = r ? NULL : vlm_load(tied);
	tap_ok(t2 && t2->cfg.tie_embeddings && !memcmp(t2->params, t->params, t->nparams * sizeof(float)),
	       "tied model reloads identical");
	vlm_free(t2);
	vlm_free(t);
	free(tied);
	free(out);
	vlm_free(m);
}

static void test_lora(void)
{
	struct vlm *m = vlm_load(REF "/model");
	if (!m)
		return;
	vlm_lora_add(m, 3, 6.0f, LORA_Q | LORA_V | LORA_DOWN, 11);
	long nl = 0;
	for (int k = 0; k < m->ntensors; k++)
		if (m->tensors[k].part == VLM_PART_LORA) {
			fill(m->tensors[k].data, m->tensors[k].numel, 100 + k);
			nl += m->tensors[k].numel;
		}
	tap_ok(nl > 0, "LoRA tensors in the table (%ld values)", nl);
	char *dir = tpath("adapter");
	int r = vlm_lora_save(m, dir);
	tap_ok(r == 0, "PEFT adapter saved");

	char *cfgp = xasprintf("%s/adapter_config.json", dir);
	unsigned char *text = read_file(cfgp, NULL);
	cJSON *j = text ? cJSON_Parse((char *)text) : NULL;
	cJSON *tm = cJSON_GetObjectItem(j, "target_modules");
	tap_ok(j && !strcmp(cJSON_GetObjectItem(j, "peft_type")->valuestring, "LORA") &&
		       cJSON_GetObjectItem(j, "r")->valuedouble == 3 &&
		       cJSON_GetObjectItem(j, "lora_alpha")->valuedouble == 6 &&
		       cJSON_IsString(tm) &&
		       !strcmp(tm->valuestring, "model\\.language_model\\.layers\\.\\d+\\."
					       "(self_attn|mlp)\\.(q_proj|v_proj|down_proj)"),
	       "adapter_config.json: LORA, r, lora_alpha, target_modules (the decoder's "
	       "projections, as PEFT's regex: not the CLIP tower's of the same names) %s",
	       cJSON_IsString(tm) ? tm->valuestring : "(not a string)");
	cJSON_Delete(j);
	free(text);
	struct safetensors st;
	char *af = xasprintf("%s/adapter_model.safetensors", dir);
	if (!safetensors_open(&st, af)) {
		/* the module names of transformers 5, which PEFT matches */
		tap_ok(safetensors_find(&st, "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight") &&
			       st.ntensors == 2 * 3 * m->cfg.layers,
		       "adapter tensors under PEFT names, A and B per target per layer");
		safetensors_release(&st);
	}

	struct vlm *m2 = vlm_load(REF "/model");
	r = m2 ? vlm_lora_load(m2, dir) : -1;
	int same = r == 0 && m2->ntensors == m->ntensors;
	for (int k = 0; same && k < m->ntensors; k++) {
		struct vlm_tensor *a = &m->tensors[k], *b = vlm_tensor_find(m2, a->name);
		same = b && a->numel == b->numel && !memcmp(a->data, b->data, a->numel * sizeof(float));
	}
	tap_ok(same && m2->lora.rank == 3 && m2->lora.alpha == 6.0f &&
		       m2->lora.targets == (LORA_Q | LORA_V | LORA_DOWN),
	       "adapter loads into a fresh model: rank, alpha, targets and values");
	vlm_free(m2);

	m2 = vlm_load(REF "/model");
	if (m2) {
		vlm_lora_add(m2, 4, 8.0f, LORA_Q | LORA_V | LORA_DOWN, 1);
		capture();
		r = vlm_lora_load(m2, dir);
		captured();
		expect_error(r, "rank mismatch refused", "rank 3", "rank 4", NULL);
		vlm_free(m2);
	}
	m2 = vlm_load(REF "/model");
	if (m2) {
		vlm_lora_add(m2, 3, 6.0f, LORA_Q, 1);
		capture();
		r = vlm_lora_load(m2, dir);
		captured();
		expect_error(r, "targets mismatch refused", "targets", NULL);
		vlm_free(m2);
	}

	/* an adapter from another model: shapes differ */
	struct vlm_config oc = m->cfg;
	oc.inter += 2;
	struct vlm *o = vlm_new(&oc);
	capture();
	r = vlm_lora_load(o, dir);
	captured();
	expect_error(r, "adapter for another shape refused", "down_proj.lora_A", "shape", NULL);
	vlm_free(o);

	put("adapter/adapter_config.json",
	    "{\"peft_type\": \"LORA\", \"r\": 3, \"lora_alpha\": 6, \"target_modules\": [\"q_proj\", \"fc1\"]}");
	m2 = vlm_load(REF "/model");
	capture();
	r = m2 ? vlm_lora_load(m2, dir) : 0;
	captured();
	expect_error(r, "unsupported target module refused", "adapter_config.json", "'fc1'", NULL);
	vlm_free(m2);
	put("adapter/adapter_config.json",
	    "{\"peft_type\": \"LORA\", \"r\": 3, \"use_dora\": true, \"target_modules\": [\"q_proj\"]}");
	m2 = vlm_load(REF "/model");
	capture();
	r = m2 ? vlm_lora_load(m2, dir) : 0;
	captured();
	expect_error(r, "DoRA refused", "use_dora", NULL);
	vlm_free(m2);

	free(af);
	free(cfgp);
	free(dir);
	vlm_free(m);
}

int main(void)
{
	util_init("test_checkpoint");
	make_tmpdir("/tmp/seva-ckpt.XXXXXX");
	test_config();
	test_preprocess();
	test_safetensors();
	test_model_dirs();
	test_lora();
	remove_tmpdir();
	return tap_done();
}
