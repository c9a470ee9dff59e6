/* test_transformers — the model tools' path against transformers itself:
 * tests/ref/make_transformers_llava.py wrote random LLaVA-1.5 directories
 * with LlavaForConditionalGeneration.save_pretrained and LlavaProcessor, and
 * what transformers computes on real photos. Loaded as the tools load a
 * model (lm_load: weights, tokenizer, chat template, preprocessing), seva
 * must give the processor's input ids and pixel values, transformers'
 * per-token log-probs within 5e-5 and its greedy tokens. Runs from the
 * repository root. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "prompt.h"
#include "sample.h"
#include "util.h"
#include "vlm.h"

#define FIXTURES "tests/fixtures/transformers"

static int *int_array(const cJSON *a, int *n)
{
	*n = cJSON_GetArraySize(a);
	int *x = xcalloc(*n ? *n : 1, sizeof *x);
	for (int i = 0; i < *n; i++)
		x[i] = cJSON_GetArrayItem(a, i)->valueint;
	return x;
}

/* NaN for JSON null (no log-prob at BOS and at the image token) */
static float *float_array(const cJSON *a, int *n)
{
	*n = cJSON_GetArraySize(a);
	float *x = xcalloc(*n ? *n : 1, sizeof *x);
	for (int i = 0; i < *n; i++) {
		const cJSON *v = cJSON_GetArrayItem(a, i);
		x[i] = cJSON_IsNumber(v) ? (float)v->valuedouble : NAN;
	}
	return x;
}

static int same_ids(const int *got, int ng, const int *want, int nw, const char *what)
{
	int i = 0;
	while (i < ng && i < nw && got[i] == want[i])
		i++;
	int ok = tap_ok(ng == nw && i == nw, "%s (%d ids)", what, nw);
	if (!ok)
		tap_diag("first difference at %d: got %d want %d (lengths %d and %d)", i,
			 i < ng ? got[i] : -1, i < nw ? want[i] : -1, ng, nw);
	return ok;
}

/* log p(ids[t] | ids[<t], image) for each t with a want, one sequence per
 * scored token (one-hot weights), all on the image CHW. */
static int per_token(struct vlm *m, const int *ids, int n, const float *chw, const float *want_in,
		     float *got, float *want)
{
	int B = 0;
	int *ts = xmalloc(n * sizeof *ts);
	for (int t = 1; t < n; t++)
		if (!isnan(want_in[t]))
			ts[B++] = t;
	float **w = xmalloc(B * sizeof *w);
	const int **pi = xmalloc(B * sizeof *pi);
	int *len = xmalloc(B * sizeof *len), *img = xcalloc(B, sizeof *img);
	for (int b = 0; b < B; b++) {
		w[b] = xcalloc(n, sizeof(float));
		w[b][ts[b]] = 1;
		pi[b] = ids;
		len[b] = n;
		want[b] = want_in[ts[b]];
	}
	struct vlm_batch batch = {
		.B = B, .ids = pi, .len = len, .weight = (const float *const *)w,
		.n_images = 1, .images = chw, .image_of = img,
	};
	int r = vlm_forward(m, &batch, got, 0);
	for (int b = 0; b < B; b++)
		free(w[b]);
	free(w);
	free(pi);
	free(len);
	free(img);
	free(ts);
	return r ? -1 : B;
}

static void check_case(struct lm *lm, const char *dir, const cJSON *c)
{
	const char *photo = cJSON_GetObjectItem(c, "photo")->valuestring;
	const char *question = cJSON_GetObjectItem(c, "question")->valuestring;
	const char *answer = cJSON_GetObjectItem(c, "answer")->valuestring;
	int nw, na, np, nl, ng;
	int *want_ids = int_array(cJSON_GetObjectItem(c, "ids"), &nw);
	int *want_ans = int_array(cJSON_GetObjectItem(c, "answer_ids"), &na);
	float *want_px = float_array(cJSON_GetObjectItem(c, "pixel_values"), &np);
	float *want_lp = float_array(cJSON_GetObjectItem(c, "logp"), &nl);
	int *want_greedy = int_array(cJSON_GetObjectItem(c, "greedy"), &ng);
	char what[512];

	/* the prompt: the processor's ids with its image block as one token */
	int *ids = NULL, *ans = NULL;
	int n = chat_encode_prompt(&lm->chat, question, 1, &ids);
	snprintf(what, sizeof what, "%s %s: prompt ids equal LlavaProcessor's", dir, photo);
	same_ids(ids, n, want_ids, nw, what);
	int k = cJSON_GetObjectItem(c, "image_tokens")->valueint;
	tap_ok(k == lm->m->cfg.img_tokens, "%s %s: the processor's image block is the model's %d tokens (%d)",
	       dir, photo, lm->m->cfg.img_tokens, k);
	int a = chat_encode_answer(&lm->chat, answer, &ans);
	snprintf(what, sizeof what, "%s %s: answer ids (and </s>) equal the tokenizer's", dir, photo);
	same_ids(ans, a, want_ans, na, what);

	/* the pixels: the photo decoded and preprocessed as the tools do */
	char *path = xasprintf("%s/%s/%s", FIXTURES, dir, photo);
	size_t len = 0;
	unsigned char *bytes = read_file(path, &len);
	struct field f = {.name = "jpg", .type = FIELD_BYTES, .data = bytes, .len = len};
	long S = preprocess_side(&lm->m->pre), npx = 3 * S * S;
	float *chw = xcalloc(npx, sizeof *chw);
	const char *why = "";
	int r = bytes ? prompt_image_tensor(lm->m, &f, chw, &why) : -1;
	if (tap_ok(r == 0 && npx == np, "%s %s: preprocessed to the processor's 3x%ldx%ld", dir,
		   photo, S, S)) {
		/* PIL resizes in 8 bits: one level off is 1/255/std ~ 0.015 */
		snprintf(what, sizeof what, "%s %s: pixel values equal CLIPImageProcessor's", dir, photo);
		tap_close(chw, want_px, npx, 1e-5f, 1e-5f, what);
	} else {
		tap_diag("%s (%ld values, want %d)", why, npx, np);
	}

	/* the log-probs of prompt + answer, on the processor's pixels */
	int nf = nw + na;
	int *full = xmalloc(nf * sizeof *full);
	memcpy(full, want_ids, nw * sizeof *full);
	memcpy(full + nw, want_ans, na * sizeof *full);
	float *got = xcalloc(nf, sizeof *got), *want = xcalloc(nf, sizeof *want);
	int B = nl == nf ? per_token(lm->m, full, nf, want_px, want_lp, got, want) : -1;
	snprintf(what, sizeof what, "%s %s: per-token log-probs within 5e-5 of transformers'", dir, photo);
	if (tap_ok(B > 0, "%s %s: forward runs (%d log-probs, want %d)", dir, photo, nl, nf))
		tap_close(got, want, B, 5e-5f, 0, what);

	/* greedy decoding from the prompt */
	const int *pp = want_ids;
	int plen = nw, img = 0;
	uint64_t seed = 1;
	struct vlm_batch pb = {.B = 1, .ids = &pp, .len = &plen, .n_images = 1, .images = want_px,
			       .image_of = &img};
	struct gen_settings gs = {.max_new_tokens = ng, .temperature = 0, .top_k = 0, .top_p = 1};
	struct gen_out out;
	memset(&out, 0, sizeof out);
	r = vlm_generate(lm->m, &pb, &seed, &gs, &out);
	snprintf(what, sizeof what, "%s %s: greedy tokens equal generate()'s", dir, photo);
	if (r == 0)
		same_ids(out.ids, out.n, want_greedy, ng, what);
	else
		tap_ok(0, "%s", what);
	if (r == 0)
		gen_out_release(&out);

	free(full);
	free(got);
	free(want);
	free(chw);
	free(bytes);
	free(path);
	free(ids);
	free(ans);
	free(want_ids);
	free(want_ans);
	free(want_px);
	free(want_lp);
	free(want_greedy);
}

int main(void)
{
	util_init("test_transformers");
	DIR *d = opendir(FIXTURES);
	int dirs = 0;
	struct dirent *e;
	if (!tap_ok(d != NULL, "%s exists", FIXTURES))
		return tap_done();
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *exp = xasprintf("%s/%s/expected.json", FIXTURES, e->d_name);
		char *model = xasprintf("%s/%s/model", FIXTURES, e->d_name);
		unsigned char *text = read_file(exp, NULL);
		cJSON *j = text ? cJSON_Parse((char *)text) : NULL;
		struct lm lm;
		if (tap_ok(j != NULL, "%s parses", exp) &&
		    tap_ok(lm_load(&lm, model) == 0, "%s loads as the tools load it", model)) {
			const cJSON *c;
			cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases"))
				check_case(&lm, e->d_name, c);
			lm_release(&lm);
		}
		dirs++;
		cJSON_Delete(j);
		free(text);
		free(exp);
		free(model);
	}
	closedir(d);
	tap_ok(dirs >= 2, "%d transformers-written directories checked", dirs);
	return tap_done();
}
