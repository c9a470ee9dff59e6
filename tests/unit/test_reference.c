/* test_reference — the C engine against an independent implementation:
 * tests/ref/make_reference.py wrote a small random LLaVA model (GQA, odd
 * sizes, 3 vision layers of which 2 run) and what it computes in float64
 * under Hugging Face's semantics. vlm_load + vlm_forward must give the same
 * per-token log-probs, vlm_generate the same greedy tokens; the f16 file,
 * the two-shard index, the newer name layout and a BF16 save must load to
 * the same numbers. Runs from the repository root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "tensor.h"
#include "util.h"
#include "vlm.h"

#define REF "tests/fixtures/ref"

struct expected {
	int n;            /* ids */
	int *ids;
	float *pixels;    /* (3, S, S) */
	/* per-token log-probs for ids[1..n); NaN where none (the image token) */
	float *logp, *logp_f16, *logp_bf16;
	int greedy[8];
	float greedy_logp[8];
};

static float *floats(const cJSON *a, int *n)
{
	*n = cJSON_GetArraySize(a);
	float *x = xcalloc(*n ? *n : 1, sizeof *x);
	for (int i = 0; i < *n; i++) {
		const cJSON *v = cJSON_GetArrayItem(a, i);
		x[i] = cJSON_IsNumber(v) ? (float)v->valuedouble : NAN;
	}
	return x;
}

static int load_expected(struct expected *e)
{
	unsigned char *text = read_file(REF "/expected.json", NULL);
	cJSON *j = text ? cJSON_Parse((char *)text) : NULL;
	free(text);
	if (!j)
		return -1;
	int n, np, k;
	float *ids = floats(cJSON_GetObjectItem(j, "ids"), &n);
	e->n = n;
	e->ids = xmalloc(n * sizeof *e->ids);
	for (int i = 0; i < n; i++)
		e->ids[i] = (int)ids[i];
	free(ids);
	e->pixels = floats(cJSON_GetObjectItem(j, "pixels"), &np);
	e->logp = floats(cJSON_GetObjectItem(j, "logp"), &k);
	e->logp_f16 = floats(cJSON_GetObjectItem(j, "logp_f16"), &k);
	e->logp_bf16 = floats(cJSON_GetObjectItem(j, "logp_bf16"), &k);
	float *g = floats(cJSON_GetObjectItem(j, "greedy"), &k);
	float *gl = floats(cJSON_GetObjectItem(j, "greedy_logp"), &k);
	for (int i = 0; i < 8 && i < k; i++) {
		e->greedy[i] = (int)g[i];
		e->greedy_logp[i] = gl[i];
	}
	free(g);
	free(gl);
	cJSON_Delete(j);
	return 0;
}

/* One sequence per scored token, each with a one-hot weight: logp[b] is
 * then log p(ids[t_b] | ids[<t_b], image), and all share one image. */
static int per_token(struct vlm *m, const struct expected *e, float *got, float *want_in,
		     float *want)
{
	int B = 0;
	int *ts = xmalloc(e->n * sizeof *ts);
	for (int t = 1; t < e->n; t++)
		if (!isnan(want_in[t]))
			ts[B++] = t;
	float **w = xmalloc(B * sizeof *w);
	const int **ids = xmalloc(B * sizeof *ids);
	int *len = xmalloc(B * sizeof *len), *img = xmalloc(B * sizeof *img);
	for (int b = 0; b < B; b++) {
		w[b] = xcalloc(e->n, sizeof(float));
		w[b][ts[b]] = 1;
		ids[b] = e->ids;
		len[b] = e->n;
		img[b] = 0;
		want[b] = want_in[ts[b]];
	}
	struct vlm_batch batch = {
		.B = B, .ids = ids, .len = len, .weight = (const float *const *)w,
		.n_images = 1, .images = e->pixels, .image_of = img,
	};
	int r = vlm_forward(m, &batch, got, 0);
	for (int b = 0; b < B; b++)
		free(w[b]);
	free(w);
	free(ids);
	free(len);
	free(img);
	free(ts);
	return r ? -1 : B;
}

static void check_forward(struct vlm *m, const struct expected *e, float *want_in,
			  const char *what)
{
	float got[64], want[64];
	int B = per_token(m, e, got, want_in, want);
	if (!tap_ok(B > 0, "%s: vlm_forward runs", what))
		return;
	char name[160];
	snprintf(name, sizeof name, "%s: per-token log-probs match the float64 reference", what);
	tap_close(got, want, B, 1e-4f, 1e-4f, name);
}

static void check_generate(struct vlm *m, const struct expected *e)
{
	const int *ids = e->ids;
	int len = e->n, img = 0;
	uint64_t seed = 1;
	struct vlm_batch p = {
		.B = 1, .ids = &ids, .len = &len, .n_images = 1, .images = e->pixels,
		.image_of = &img,
	};
	struct gen_settings gs = {.max_new_tokens = 8, .temperature = 0, .top_k = 0, .top_p = 1};
	struct gen_out out;
	memset(&out, 0, sizeof out);
	int r = vlm_generate(m, &p, &seed, &gs, &out);
	int same = r == 0 && out.n == 8;
	for (int i = 0; same && i < 8; i++)
		same = out.ids[i] == e->greedy[i];
	if (!tap_ok(same, "greedy continuation of 8 tokens matches")) {
		tap_diag("want %d %d %d %d %d %d %d %d", e->greedy[0], e->greedy[1], e->greedy[2],
			 e->greedy[3], e->greedy[4], e->greedy[5], e->greedy[6], e->greedy[7]);
		for (int i = 0; r == 0 && i < out.n; i++)
			tap_diag("got [%d] %d", i, out.ids[i]);
	}
	if (same && out.logp)
		tap_close(out.logp, e->greedy_logp, 8, 1e-4f, 1e-4f, "greedy tokens' log-probs match");
	if (r == 0)
		gen_out_release(&out);
}

/* Every parameter of B equals F(A's parameter), by name. */
static int same_params(struct vlm *a, struct vlm *b, int rounding, const char *what)
{
	long bad = 0, n = 0;
	const char *first = NULL;
	for (int k = 0; k < a->ntensors; k++) {
		struct vlm_tensor *ta = &a->tensors[k], *tb = vlm_tensor_find(b, ta->name);
		if (!tb || tb->numel != ta->numel) {
			bad++;
			first = first ? first : ta->name;
			continue;
		}
		for (long i = 0; i < ta->numel; i++, n++) {
			float want = rounding == 16 ? f16_to_f32(f32_to_f16(ta->data[i]))
				     : rounding == 8 ? bf16_to_f32(f32_to_bf16(ta->data[i]))
						     : ta->data[i];
			if (memcmp(&want, &tb->data[i], sizeof want)) {
				bad++;
				first = first ? first : ta->name;
			}
		}
	}
	int ok = tap_ok(bad == 0 && a->ntensors == b->ntensors, "%s: %ld parameters equal", what, n);
	if (!ok)
		tap_diag("%ld differ, first in '%s'; tensors %d vs %d", bad, first ? first : "?",
			 a->ntensors, b->ntensors);
	return ok;
}

int main(void)
{
	util_init("test_reference");
	struct expected e;
	if (!tap_ok(load_expected(&e) == 0, "expected.json"))
		return tap_done();
	struct vlm *m = vlm_load(REF "/model");
	if (!tap_ok(m != NULL, "reference model loads"))
		return tap_done();
	tap_ok(m->cfg.kv_heads == 2 && m->cfg.heads == 4 && m->cfg.v_used == 2 &&
		       m->cfg.img_tokens == 16 && m->cfg.rope_theta == 500.0f,
	       "config: GQA 4/2, 2 of 3 vision layers, 16 image tokens, rope_theta 500");
	check_forward(m, &e, e.logp, "F32");
	check_generate(m, &e);

	static const struct {
		const char *dir;
		int rounding;
	} variants[] = {{REF "/model-sharded", 0}, {REF "/model-newlayout", 0}, {REF "/model-f16", 16}};
	for (size_t i = 0; i < ARRAY_LEN(variants); i++) {
		struct vlm *v = vlm_load(variants[i].dir);
		if (!tap_ok(v != NULL, "%s loads", variants[i].dir))
			continue;
		same_params(m, v, variants[i].rounding, variants[i].dir);
		if (variants[i].rounding == 16)
			check_forward(v, &e, e.logp_f16, "F16 file");
		vlm_free(v);
	}

	char tmpl[] = "/tmp/seva-ref.XXXXXX";
	if (mkdtemp(tmpl)) {
		char *dir = xasprintf("%s/bf16", tmpl);
		struct vlm *v = vlm_save(m, dir, "BF16") ? NULL : vlm_load(dir);
		if (tap_ok(v != NULL, "BF16 save and reload")) {
			same_params(m, v, 8, "BF16 save");
			check_forward(v, &e, e.logp_bf16, "BF16 save");
		}
		vlm_free(v);
		char *cmd = xasprintf("rm -rf '%s'", tmpl);
		if (system(cmd))
			tap_diag("could not remove %s", tmpl);
		free(cmd);
		free(dir);
	}
	vlm_free(m);
	free(e.ids);
	free(e.pixels);
	free(e.logp);
	free(e.logp_f16);
	free(e.logp_bf16);
	return tap_done();
}
