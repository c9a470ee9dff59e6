/* test_idefics3 — the Idefics3 / SmolVLM family against transformers itself:
 * tests/ref/make_idefics3.py wrote three small random models with
 * save_pretrained (A: Idefics3, GQA, untied, f32; B: SmolVLM, tied, bf16;
 * C: a 25x25 patch grid, where the position buckets are not the index;
 * SMOL: SmolVLM-256M's proportions, GQA 3:1, tied; E: SmolVLM, GQA 2:1,
 * untied, bf16; the last two with SmolVLM's tokenizer layout, every byte
 * in the alphabet and the row/column tags) and what Idefics3Processor and
 * the model compute. seva must make the same
 * input ids from the chat template and the question, the same pixel values
 * from the image files, per-token log-probs within 5e-5, the same greedy
 * tokens. Then the new layers' backward (SigLIP embeddings with the patch
 * bias, gelu-tanh, post-LayerNorm, pixel shuffle and its linear map)
 * against central differences. Runs from the repository root. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "prompt.h"
#include "rng.h"
#include "tap.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"
#include "vlm_family.h"
#include "vlm_impl.h"

#define FIX "tests/fixtures/idefics3"

static cJSON *load_json(const char *path)
{
	unsigned char *text = read_file(path, NULL);
	cJSON *j = text ? cJSON_Parse((char *)text) : NULL;
	free(text);
	return j;
}

static int *int_array(const cJSON *a, int *n)
{
	*n = cJSON_GetArraySize(a);
	int *x = xcalloc(*n ? *n : 1, sizeof *x);
	for (int i = 0; i < *n; i++)
		x[i] = cJSON_GetArrayItem(a, i)->valueint;
	return x;
}

/* The image file NAME preprocessed as M says, into CHW (malloc'd). */
static float *pixels_of(const struct vlm *m, const char *name)
{
	char *path = strchr(name, '/') ? xstrdup(name) : xasprintf(FIX "/%s", name);
	if (!strncmp(name, "photo", 5)) {
		free(path);
		path = xasprintf("tests/fixtures/image/%s", name);
	}
	size_t len;
	unsigned char *bytes = read_file(path, &len);
	free(path);
	if (!bytes)
		return NULL;
	struct image im;
	image_init(&im);
	const char *why = NULL;
	if (image_decode(&im, bytes, len, &why) < 0) {
		free(bytes);
		return NULL;
	}
	free(bytes);
	int S = preprocess_side(&m->pre);
	float *chw = xmalloc((size_t)3 * S * S * sizeof(float));
	const char *err = NULL;
	int rc = image_preprocess(chw, &im, &m->pre, &err);
	image_release(&im);
	if (rc < 0) {
		free(chw);
		return NULL;
	}
	return chw;
}

/* One model directory against its expected.json. */
static void check_dir(const char *name, int want_tied, int want_kv)
{
	char *dir = xasprintf(FIX "/%s", name);
	char *ep = xasprintf("%s/expected.json", dir);
	cJSON *e = load_json(ep);
	struct lm lm;
	if (!tap_ok(e && lm_load(&lm, dir) == 0, "%s: loads with its tokenizer and processor files", name)) {
		cJSON_Delete(e);
		free(dir);
		free(ep);
		return;
	}
	struct vlm *m = lm.m;
	int IT = cJSON_GetObjectItem(e, "image_seq_len")->valueint;
	int img_id = cJSON_GetObjectItem(e, "image_token_id")->valueint;
	tap_ok(m->cfg.img_tokens == IT && m->cfg.image_token_index == img_id &&
		       m->cfg.tie_embeddings == want_tied && m->cfg.kv_heads == want_kv &&
		       m->pre.mode == PREPROCESS_LONGEST_SQUARE && m->pre.resample == RESAMPLE_LANCZOS,
	       "%s: %d image rows, image token %d, tied %d, %d kv heads, longest edge then square, lanczos",
	       name, m->cfg.img_tokens, m->cfg.image_token_index, m->cfg.tie_embeddings,
	       m->cfg.kv_heads);

	/* the ids: seva's template and question, the image token expanded as the processor does */
	const char *q = cJSON_GetObjectItem(e, "question")->valuestring;
	const char *a = cJSON_GetObjectItem(e, "answer")->valuestring;
	int *pr, *an;
	int np = chat_encode_prompt(&lm.chat, q, 1, &pr);
	int na = chat_encode_answer(&lm.chat, a, &an);
	int n = np + na;
	int *ids = xmalloc((size_t)n * sizeof(int));
	memcpy(ids, pr, np * sizeof(int));
	memcpy(ids + np, an, na * sizeof(int));
	int *exp_ids = xmalloc(((size_t)n + IT) * sizeof(int)), ne = 0;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < (ids[i] == img_id ? IT : 1); k++)
			exp_ids[ne++] = ids[i];

	const cJSON *cases = cJSON_GetObjectItem(e, "cases"), *cs;
	cJSON_ArrayForEach(cs, cases) {
		const char *img = cJSON_GetObjectItem(cs, "image")->valuestring;
		int nref;
		int *ref = int_array(cJSON_GetObjectItem(cs, "ids"), &nref);
		int same = nref == ne && !memcmp(ref, exp_ids, ne * sizeof(int));
		if (!tap_ok(same, "%s %s: input ids as Idefics3Processor's (%d)", name, img, nref)) {
			tap_diag_ids("processor", ref, nref);
			tap_diag_ids("seva", exp_ids, ne);
		}
		float *chw = pixels_of(m, img);
		int S = m->cfg.image_size;
		const cJSON *px = cJSON_GetObjectItem(cs, "pixels");
		if (px && chw) {
			int k = cJSON_GetArraySize(px);
			double worst = 0;
			long at = -1;
			for (int i = 0; i < k && i < 3 * S * S; i++) {
				double d = fabs(chw[i] - cJSON_GetArrayItem(px, i)->valuedouble);
				if (d > worst)
					worst = d, at = i;
			}
			tap_ok(k == 3 * S * S && worst <= 1e-6,
			       "%s %s: pixel values as the processor's (%d, worst %.3g at %ld)", name, img,
			       k, worst, at);
		} else {
			tap_ok(chw != NULL, "%s %s: image decodes", name, img);
		}
		if (!chw || !same) {
			free(ref);
			free(chw);
			continue;
		}
		/* per-token log-probs: sequence t scores token t alone (the prefix is shared) */
		const cJSON *lpj = cJSON_GetObjectItem(cs, "logp");
		int T = n - 1;
		const int **idp = xmalloc(T * sizeof *idp);
		const float **wp = xmalloc(T * sizeof *wp);
		int *lens = xmalloc(T * sizeof(int)), *io = xcalloc(T, sizeof(int));
		float *w = xcalloc((size_t)T * n, sizeof(float)), *lp = xmalloc(T * sizeof(float));
		for (int t = 0; t < T; t++) {
			idp[t] = ids;
			lens[t] = n;
			w[(size_t)t * n + t + 1] = 1;
			wp[t] = w + (size_t)t * n;
		}
		struct vlm_batch b = {.B = T, .ids = idp, .len = lens, .weight = wp, .n_images = 1,
				      .images = chw, .image_of = io};
		int rc = vlm_forward(m, &b, lp, 0);
		double worst = 0;
		int wt = -1, checked = 0;
		for (int t = 0; t < T && !rc; t++) {
			if (ids[t + 1] == img_id)
				continue;
			/* expanded position of token t+1 */
			int pos = t + 1 + (t + 1 > np ? 0 : 0);
			for (int i = 0; i <= t; i++)
				if (ids[i] == img_id)
					pos += IT - 1;
			const cJSON *v = cJSON_GetArrayItem(lpj, pos - 1);
			double d = fabs(lp[t] - v->valuedouble);
			checked++;
			if (d > worst)
				worst = d, wt = t + 1;
		}
		tap_ok(!rc && checked > 10 && worst <= 5e-5,
		       "%s %s: %d per-token log-probs within 5e-5 of transformers' (worst %.3g at token %d)",
		       name, img, checked, worst, wt);
		free(idp);
		free(wp);
		free(lens);
		free(io);
		free(w);
		free(lp);

		/* greedy, from the prompt alone */
		int ng;
		int *greedy = int_array(cJSON_GetObjectItem(cs, "greedy"), &ng);
		const int *pp = pr;
		int zero = 0;
		struct vlm_batch gb = {.B = 1, .ids = &pp, .len = &np, .n_images = 1, .images = chw,
				       .image_of = &zero};
		struct gen_settings gs = {.max_new_tokens = 8, .temperature = 0, .top_p = 1,
					  .stop_ids = lm.stop_ids, .n_stop_ids = lm.n_stop};
		uint64_t seed = 1;
		struct gen_out go;
		int got[9], ngot = 0;
		if (vlm_generate(m, &gb, &seed, &gs, &go) == 0) {
			for (int i = 0; i < go.n; i++)
				got[ngot++] = go.ids[i];
			if (go.stopped == 1)
				got[ngot++] = lm.chat.eos;
			gen_out_release(&go);
		}
		int gsame = ngot == ng && !memcmp(got, greedy, ng * sizeof(int));
		if (!tap_ok(gsame, "%s %s: greedy tokens as model.generate's (%d)", name, img, ng)) {
			tap_diag_ids("transformers", greedy, ng);
			tap_diag_ids("seva", got, ngot);
		}
		free(greedy);
		free(ref);
		free(chw);
	}
	free(ids);
	free(exp_ids);
	free(pr);
	free(an);
	lm_release(&lm);
	cJSON_Delete(e);
	free(dir);
	free(ep);
}

/* --- backward of the new layers against central differences --- */

static void tiny_idefics3(struct vlm_config *c)
{
	tiny_config_base(c);
	c->family = &vlm_family_idefics3;
	c->image_size = 24; /* 6x6 patches of 4, shuffled by 3: 4 image rows */
	c->patch_size = 4;
	c->shuffle = 3;
	c->v_act = ACT_GELU_TANH;
	tiny_finish(c);
}

static void randomize(struct vlm *m, uint64_t seed)
{
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		struct rng r;
		rng_seed(&r, seed, t->name, "test");
		double sd = t->ndim >= 2 ? 1 / sqrt((double)t->numel / t->shape[0]) : 0.1, mean = 0;
		if (strstr(t->name, "norm") && strstr(t->name, ".weight"))
			mean = 1;
		if (strstr(t->name, "embed_tokens") || strstr(t->name, "position_embedding"))
			sd = 0.5;
		for (long j = 0; j < t->numel; j++)
			t->data[j] = (float)(mean + sd * rng_normal(&r));
	}
}

enum { NB = 3, MAXT = 10 };
static const float coef[NB] = {1.0f, -0.6f, 0.8f};

static double objective(const float *logp)
{
	double s = 0;
	for (int b = 0; b < NB; b++)
		s += coef[b] * logp[b];
	return s;
}

static void test_backward(void)
{
	struct vlm_config c;
	tiny_idefics3(&c);
	tap_ok(c.img_tokens == 4 && c.feat_tokens == 36 && c.vt == 36 && !c.v_cls && c.v_post_ln,
	       "tiny Idefics3: 36 patches, no class token, 4 rows after the shuffle (%d)", c.img_tokens);
	struct vlm *m = vlm_new(&c);
	randomize(m, 3);
	tap_ok(vlm_tensor_find(m, "model.vision_model.embeddings.patch_embedding.bias") &&
		       vlm_tensor_find(m, "model.connector.modality_projection.proj.weight") &&
		       vlm_tensor_find(m, "model.text_model.layers.1.mlp.up_proj.weight") &&
		       vlm_tensor_find(m, "lm_head.weight") &&
		       !vlm_tensor_find(m, "model.vision_model.pre_layrnorm.weight"),
	       "Idefics3's tensor names: patch bias, connector, text_model, lm_head; no pre-LayerNorm");
	static int ids[NB][MAXT];
	static float w[NB][MAXT];
	const int *idp[NB];
	const float *wp[NB];
	int lens[NB] = {8, 6, 9}, io[NB] = {0, 1, 0};
	for (int b = 0; b < NB; b++) {
		for (int t = 0; t < lens[b]; t++) {
			ids[b][t] = 3 + (b * 5 + t * 7) % 30;
			w[b][t] = t >= 3;
		}
		ids[b][1] = c.image_token_index;
		idp[b] = ids[b];
		wp[b] = w[b];
	}
	int S = c.image_size;
	float *img = xmalloc((size_t)2 * 3 * S * S * sizeof(float));
	for (int i = 0; i < 2 * 3 * S * S; i++)
		img[i] = sinf(0.37f * i) + 0.3f * cosf(0.011f * i * i);
	struct vlm_batch b = {.B = NB, .ids = idp, .len = lens, .weight = wp, .n_images = 2,
			      .images = img, .image_of = io};
	vlm_train_init(m, VLM_PART_VISION | VLM_PART_PROJECTOR | VLM_PART_DECODER);
	vlm_zero_grad(m);
	float logp[NB];
	vlm_forward(m, &b, logp, 1);
	vlm_backward(m, coef);
	static const char *const names[] = {
		"model.vision_model.embeddings.patch_embedding.weight",
		"model.vision_model.embeddings.patch_embedding.bias",
		"model.vision_model.embeddings.position_embedding.weight",
		"model.vision_model.encoder.layers.0.mlp.fc1.weight",
		"model.vision_model.encoder.layers.1.self_attn.q_proj.bias",
		"model.vision_model.post_layernorm.weight",
		"model.vision_model.post_layernorm.bias",
		"model.connector.modality_projection.proj.weight",
		"model.text_model.layers.0.self_attn.k_proj.weight",
	};
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		struct vlm_tensor *t = vlm_tensor_find(m, names[i]);
		if (!tap_ok(t && t->grad, "%s has a gradient", names[i]))
			continue;
		struct rng r;
		rng_seed(&r, 11, t->name, "pick");
		double worst = 0, wan = 0, wfd = 0;
		for (int k = 0; k < 6; k++) {
			long best = -1;
			for (int tries = 0; tries < 24; tries++) {
				long j = (long)rng_below(&r, t->numel);
				if (best < 0 || fabsf(t->grad[j]) > fabsf(t->grad[best]))
					best = j;
			}
			float save = t->data[best], eps = 3e-3f * fmaxf(1.0f, fabsf(save));
			t->data[best] = save + eps;
			vlm_forward(m, &b, logp, 0);
			double lp = objective(logp);
			t->data[best] = save - eps;
			vlm_forward(m, &b, logp, 0);
			double lm = objective(logp);
			t->data[best] = save;
			double fd = (lp - lm) / (2.0 * ((double)(save + eps) - save)), an = t->grad[best];
			double ratio = fabs(fd - an) / (2e-3 + 2e-2 * fabs(an));
			if (ratio > worst)
				worst = ratio, wan = an, wfd = fd;
		}
		tap_ok(worst <= 1, "%s: backward = central differences (analytic %.6g, fd %.6g)",
		       names[i], wan, wfd);
	}
	/* the features alone: vision-only forward and backward, FT rows per image */
	vlm_zero_grad(m);
	int ni = 0, nt = 0;
	vlm_forward_features(m, &b, 1);
	const float *f = vlm_image_features(m, &ni, &nt);
	tap_ok(f && ni == 2 && nt == 36, "vision-only features: 2 images of 36 rows (%d, %d)", ni, nt);
	free(img);
	vlm_free(m);
}

/* A copy of fixture A with FILE's text replaced: loading must fail with
 * every string of WANT in the message. */
static void refused(const char *what, const char *file, const char *text, const char *want1,
		    const char *want2)
{
	char *cmd = xasprintf("rm -rf '%s/m' && cp -r " FIX "/a '%s/m'", tmpdir, tmpdir);
	if (system(cmd))
		tap_diag("copy failed");
	free(cmd);
	char *name = xasprintf("m/%s", file);
	put(name, text);
	free(name);
	char *dir = tpath("m");
	capture();
	struct vlm *m = vlm_load(dir);
	captured();
	int ok = !m && strstr(errbuf, want1) && (!want2 || strstr(errbuf, want2));
	if (!tap_ok(ok, "%s: refused, naming %s", what, want1))
		tap_diag("stderr: %s", errbuf);
	vlm_free(m);
	free(dir);
}

static void test_refused(void)
{
	make_tmpdir("/tmp/seva-idefics3.XXXXXX");
	refused("image splitting", "processor_config.json",
		"{\"image_processor\": {\"do_image_splitting\": true}, \"image_seq_len\": 16}",
		"processor_config.json: image_processor.do_image_splitting", "not supported");
	refused("a processor size other than the tower's", "processor_config.json",
		"{\"image_processor\": {\"do_image_splitting\": false, \"max_image_size\": "
		"{\"longest_edge\": 64}}, \"image_seq_len\": 16}",
		"image_processor.max_image_size: 64, but the vision tower takes 32x32", NULL);
	refused("image_seq_len other than the model's rows", "processor_config.json",
		"{\"image_processor\": {\"do_image_splitting\": false, \"max_image_size\": "
		"{\"longest_edge\": 32}}, \"image_seq_len\": 64}",
		"image_seq_len", "16 rows");
	refused("Qwen2-VL by name", "config.json", "{\"model_type\": \"qwen2_vl\"}",
		"model_type", "M-RoPE");
	refused("a vision tower of another kind", "config.json",
		"{\"model_type\": \"idefics3\", \"vision_config\": {\"model_type\": \"clip_vision_model\"}}",
		"vision_config.model_type", "idefics3_vision");
	remove_tmpdir();
}

/* SmolVLM-256M-Instruct's config.json as published (transformers 4.46:
 * sparse, the training fork's extra keys, vision_config.model_type the
 * parent's "idefics3", which transformers reads with a warning) and its
 * preprocessor_config.json: the 256M shapes from the class defaults,
 * image splitting refused until it is turned off. */
static const char published_256m[] =
	"{\"architectures\": [\"Idefics3ForConditionalGeneration\"], \"image_token_id\": 49190,"
	" \"model_type\": \"idefics3\", \"pad_token_id\": 128002, \"scale_factor\": 4,"
	" \"text_config\": {\"_flash_attn_2_enabled\": true, \"architectures\": [\"VLlama3ForCausalLM\"],"
	" \"head_dim\": 64, \"hidden_size\": 576, \"intermediate_size\": 1536, \"is_llama_config\": true,"
	" \"max_position_embeddings\": 8192, \"model_type\": \"llama\", \"neftune_noise_alpha\": 0.0,"
	" \"num_attention_heads\": 9, \"num_hidden_layers\": 30, \"num_key_value_heads\": 3,"
	" \"pad_token_id\": 2, \"pixel_shuffle_factor\": 4, \"qk_layer_norms\": false,"
	" \"rms_norm_eps\": 1e-05, \"rope_interleaved\": false, \"rope_theta\": 100000,"
	" \"torch_dtype\": \"bfloat16\", \"use_resampler\": false, \"vocab_size\": 49280},"
	" \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.46.0\","
	" \"use_cache\": true, \"vision_config\": {\"hidden_size\": 768, \"image_size\": 512,"
	" \"max_image_size\": {\"longest_edge\": 512}, \"model_type\": \"idefics3\","
	" \"num_attention_heads\": 12, \"patch_size\": 16, \"size\": {\"longest_edge\": 2048},"
	" \"tie_word_embeddings\": false, \"use_base_siglip\": false}, \"vocab_size\": 128259}";
static const char published_pre[] =
	"{\"do_convert_rgb\": true, \"do_image_splitting\": %s, \"do_normalize\": true, \"do_pad\": true,"
	" \"do_rescale\": true, \"do_resize\": true, \"image_mean\": [0.5, 0.5, 0.5],"
	" \"image_processor_type\": \"Idefics3ImageProcessor\", \"image_std\": [0.5, 0.5, 0.5],"
	" \"max_image_size\": {\"longest_edge\": 512}, \"processor_class\": \"Idefics3Processor\","
	" \"resample\": 1, \"rescale_factor\": 0.00392156862745098, \"size\": {\"longest_edge\": 2048}}";

static void test_published(void)
{
	make_tmpdir("/tmp/seva-idefics3.XXXXXX");
	put("config.json", published_256m);
	char *cp = tpath("config.json"), *pp = tpath("preprocessor_config.json");
	struct vlm_config c;
	capture();
	int rc = vlm_config_load(&c, cp);
	captured();
	if (!tap_ok(rc == 0, "SmolVLM-256M-Instruct's published config.json loads"))
		tap_diag("stderr: %s", errbuf);
	else
		tap_ok(c.v_hidden == 768 && c.v_inter == 3072 && c.v_layers == 12 && c.v_heads == 12 &&
			       c.image_size == 512 && c.patch_size == 16 && c.shuffle == 4 &&
			       c.img_tokens == 64 && c.hidden == 576 && c.inter == 1536 && c.layers == 30 &&
			       c.heads == 9 && c.kv_heads == 3 && c.vocab == 49280 && c.rope_theta == 1e5f &&
			       c.rms_eps == 1e-5f && !c.tie_embeddings && c.image_token_index == 49190,
		       "its shapes: SigLIP 768x12 (intermediate 3072 by default), 512/16 shuffled by 4 "
		       "(%d rows), decoder 576x30, 9 heads on 3, vocab 49280, untied", c.img_tokens);
	for (int split = 1; split >= 0 && rc == 0; split--) {
		char *text = xasprintf(published_pre, split ? "true" : "false");
		put("preprocessor_config.json", text);
		free(text);
		struct preprocess pre;
		capture();
		int r = vlm_preprocess_load(&pre, pp, &c);
		captured();
		if (split)
			tap_ok(r < 0 && strstr(errbuf, "do_image_splitting") && strstr(errbuf, "not supported"),
			       "its preprocessor_config.json (image splitting on): refused by name (%s)", errbuf);
		else
			tap_ok(r == 0 && pre.size == 2048 && pre.crop_size == 512 &&
				       pre.resample == RESAMPLE_LANCZOS,
			       "with do_image_splitting false: longest edge 2048, then the 512 square, lanczos");
	}
	free(cp);
	free(pp);
	remove_tmpdir();
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init("test_idefics3");
	tap_chdir_top(argv[0], FIX "/a/config.json");
	check_dir("a", 0, 2);
	check_dir("b", 1, 4);
	check_dir("c", 0, 1);
	check_dir("smol", 1, 1);
	check_dir("e", 0, 2);
	test_backward();
	test_refused();
	test_published();
	return tap_done();
}
