#include "prompt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "augment.h"
#include "image.h"
#include "util.h"

static void add_stop(struct lm *lm, int id)
{
	if (id < 0)
		return;
	for (int i = 0; i < lm->n_stop; i++)
		if (lm->stop_ids[i] == id)
			return;
	if (lm->n_stop < (int)ARRAY_LEN(lm->stop_ids))
		lm->stop_ids[lm->n_stop++] = id;
}

/* The chat template and stop ids of a model with config CFG. */
static int lm_setup(struct lm *lm, const struct vlm_config *cfg)
{
	/* an id past the embedding would fail at the first sample that holds
	 * it, far from the file that is wrong */
	const char *unfit = tokenizer_unfit(lm->tok, cfg->vocab);
	if (unfit) {
		error("%s", unfit);
		lm_release(lm);
		return -1;
	}
	const char *name = cfg->chat_template[0] ? cfg->chat_template : "llava_v1";
	if (chat_init(&lm->chat, name, lm->tok, cfg->image_token_index) < 0) {
		lm_release(lm);
		return -1;
	}
	lm->chat.image_block = vlm_image_block(cfg);
	add_stop(lm, lm->chat.eos);
	add_stop(lm, tokenizer_eos(lm->tok));
	add_stop(lm, cfg->eos_id);
	return 0;
}

int lm_attach(struct lm *lm, struct vlm *m, struct tokenizer *tok)
{
	memset(lm, 0, sizeof *lm);
	lm->m = m;
	lm->tok = tok;
	return lm_setup(lm, &m->cfg);
}

static int is_token_id(const cJSON *x)
{
	return cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble <= INT_MAX &&
	       x->valuedouble == (double)(int)x->valuedouble;
}

/* generation_config.json's eos_token_id (an id or a list: Llama-3 stops on
 * several) joins the stop ids; an absent file or a null says nothing. */
static int load_generation_config(struct lm *lm, const char *dir)
{
	char *path = xasprintf("%s/generation_config.json", dir);
	cJSON *j = NULL;
	int ret = -1;
	if (access(path, F_OK) != 0) {
		ret = 0;
		goto out;
	}
	unsigned char *text = read_file(path, NULL);
	if (!text)
		goto out;
	j = cJSON_Parse((const char *)text);
	free(text);
	if (!cJSON_IsObject(j)) {
		error("%s: not a JSON object", path);
		goto out;
	}
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id"), *x;
	const cJSON *list = cJSON_IsArray(e) ? e : NULL;
	int ok = !e || cJSON_IsNull(e) || is_token_id(e) || list;
	cJSON_ArrayForEach(x, list)
		ok = ok && is_token_id(x);
	if (!ok) {
		error("%s: eos_token_id: not a token id or a list of them", path);
		goto out;
	}
	if (is_token_id(e))
		add_stop(lm, e->valueint);
	cJSON_ArrayForEach(x, list)
		add_stop(lm, x->valueint);
	ret = 0;
out:
	cJSON_Delete(j);
	free(path);
	return ret;
}

/* DIR's tokenizer.json; a SentencePiece-only directory is named as such. */
static struct tokenizer *dir_tokenizer(const char *dir)
{
	char *tj = xasprintf("%s/tokenizer.json", dir), *sp = xasprintf("%s/tokenizer.model", dir);
	int only_sp = access(tj, F_OK) != 0 && access(sp, F_OK) == 0;
	free(tj);
	free(sp);
	if (only_sp) {
		error("%s: no tokenizer.json, only a SentencePiece tokenizer.model: write one with "
		      "transformers (AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))", dir);
		return NULL;
	}
	return tokenizer_load(dir);
}

/* What DIR says beside config.json: tokenizer_config.json's BOS rule,
 * generation_config.json's stop ids. */
static int dir_settings(struct lm *lm, const char *dir)
{
	/* LLaVA puts BOS first only when the tokenizer adds it */
	char *tc = xasprintf("%s/tokenizer_config.json", dir);
	unsigned char *text = access(tc, F_OK) == 0 ? read_file(tc, NULL) : NULL;
	cJSON *j = text ? cJSON_Parse((const char *)text) : NULL;
	lm->chat.no_bos |= cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "add_bos_token"));
	cJSON_Delete(j);
	free(text);
	free(tc);
	if (load_generation_config(lm, dir) < 0) {
		lm_release(lm);
		return -1;
	}
	return 0;
}

int lm_load(struct lm *lm, const char *dir)
{
	struct vlm *m = vlm_load(dir);
	if (!m)
		return -1;
	struct tokenizer *tok = dir_tokenizer(dir);
	if (!tok) {
		vlm_free(m);
		return -1;
	}
	if (lm_attach(lm, m, tok) < 0)
		return -1;
	return dir_settings(lm, dir);
}

int lm_load_text(struct lm *lm, const char *dir)
{
	struct vlm_config cfg;
	char *path = xasprintf("%s/config.json", dir);
	int rc = vlm_config_load(&cfg, path);
	free(path);
	memset(lm, 0, sizeof *lm);
	if (rc < 0 || !(lm->tok = dir_tokenizer(dir)))
		return -1;
	if (lm_setup(lm, &cfg) < 0)
		return -1;
	return dir_settings(lm, dir);
}

void lm_release(struct lm *lm)
{
	if (lm->m)
		vlm_free(lm->m);
	if (lm->tok)
		tokenizer_free(lm->tok);
	memset(lm, 0, sizeof *lm);
}

int prompt_image_tensor(const struct vlm *m, const struct field *f, float *chw, const char **why)
{
	/* The reason names the field, as seva-augment's does: a sample may
	 * hold several images (png, aug.png). */
	static _Thread_local char reason[160];
	const char *inner = "";
	struct image im;
	image_init(&im);
	if (image_decode(&im, f->data, f->len, &inner) < 0) {
		snprintf(reason, sizeof reason, "field '%s': cannot decode image: %s", f->name,
			 inner ? inner : "");
		*why = reason;
		return -1;
	}
	int rc = image_preprocess(chw, &im, &m->pre, &inner);
	image_release(&im);
	if (rc < 0) {
		snprintf(reason, sizeof reason, "field '%s': %s", f->name, inner);
		*why = reason;
	}
	return rc;
}

int prompt_aug_tensor(const struct vlm *m, const struct sample *s, const struct cJSON *aug,
		      float *chw, const char **why)
{
	int S = preprocess_side(&m->pre);
	const char *base = augment_base_field(aug, sample_get(s, "aug.png") != NULL);
	struct field *f = base ? sample_get(s, base) : sample_image(s);
	if (!f) {
		*why = "the augmented view's base image field is missing";
		return -1;
	}
	if (prompt_image_tensor(m, f, chw, why) < 0)
		return -1;
	if (aug && augment_apply_tensor(aug, s->key, chw, 3, S, S) < 0) {
		*why = "aug.json: cannot apply its tensor-space ops";
		return -1;
	}
	return 0;
}

int prompt_decoder_len(const struct vlm *m, const int *ids, int n)
{
	int len = n;
	for (int i = 0; i < n; i++)
		if (ids[i] == m->cfg.image_token_index) {
			len += m->cfg.img_tokens - 1;
			break;
		}
	return len;
}
