#include "prompt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

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

int lm_attach(struct lm *lm, struct vlm *m, struct tokenizer *tok)
{
	memset(lm, 0, sizeof *lm);
	lm->m = m;
	lm->tok = tok;
	const char *name = m->cfg.chat_template[0] ? m->cfg.chat_template : "llava_v1";
	if (chat_init(&lm->chat, name, tok, m->cfg.image_token_index) < 0) {
		lm_release(lm);
		return -1;
	}
	add_stop(lm, lm->chat.eos);
	add_stop(lm, tokenizer_eos(tok));
	add_stop(lm, m->cfg.eos_id);
	return 0;
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

int lm_load(struct lm *lm, const char *dir)
{
	struct vlm *m = vlm_load(dir);
	if (!m)
		return -1;
	char *tj = xasprintf("%s/tokenizer.json", dir), *sp = xasprintf("%s/tokenizer.model", dir);
	int only_sp = access(tj, F_OK) != 0 && access(sp, F_OK) == 0;
	free(tj);
	free(sp);
	if (only_sp) {
		vlm_free(m);
		return error("%s: no tokenizer.json, only a SentencePiece tokenizer.model: write one with "
			     "transformers (AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))", dir);
	}
	struct tokenizer *tok = tokenizer_load(dir);
	if (!tok) {
		vlm_free(m);
		return -1;
	}
	if (lm_attach(lm, m, tok) < 0)
		return -1;
	/* LLaVA puts BOS first only when the tokenizer adds it */
	char *tc = xasprintf("%s/tokenizer_config.json", dir);
	unsigned char *text = access(tc, F_OK) == 0 ? read_file(tc, NULL) : NULL;
	cJSON *j = text ? cJSON_Parse((const char *)text) : NULL;
	lm->chat.no_bos = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "add_bos_token"));
	cJSON_Delete(j);
	free(text);
	free(tc);
	if (load_generation_config(lm, dir) < 0) {
		lm_release(lm);
		return -1;
	}
	return 0;
}

void lm_release(struct lm *lm)
{
	if (lm->m)
		vlm_free(lm->m);
	if (lm->tok)
		tokenizer_free(lm->tok);
	memset(lm, 0, sizeof *lm);
}

/* "<image>\nWhat is it?" → "What is it?": LLaVA puts the placeholder (and a
 * newline) before or after the question; the chat template adds its own. */
static char *strip_image(const char *text)
{
	struct buf b;
	const char *p = text, *q;
	buf_init(&b);
	while ((q = strstr(p, "<image>"))) {
		buf_add(&b, p, (size_t)(q - p));
		p = q + 7;
		if (*p == '\n')
			p++;
	}
	buf_addstr(&b, p);
	char *s = (char *)buf_detach(&b, NULL);
	/* trim: the placeholder may leave a newline at either end */
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = 0;
	size_t k = strspn(s, "\n ");
	memmove(s, s + k, n - k + 1);
	return s;
}

/* LLaVA roles: "human"/"user" ask, "gpt"/"assistant" answer. */
static int role_of(const char *from)
{
	if (!strcmp(from, "human") || !strcmp(from, "user"))
		return 0;
	if (!strcmp(from, "gpt") || !strcmp(from, "assistant"))
		return 1;
	return -1;
}

char *prompt_question(const struct sample *s, const char **why)
{
	cJSON *j = sample_json(s, "json");
	char *q = NULL;
	*why = "no json field";
	if (!j)
		return NULL;
	cJSON *p = cJSON_GetObjectItem(j, "prompt");
	cJSON *conv = cJSON_GetObjectItem(j, "conversations");
	if (cJSON_IsString(p)) {
		q = strip_image(p->valuestring);
	} else if (p && !cJSON_IsNull(p)) {
		*why = "json.prompt is not a string";
	} else if (cJSON_IsArray(conv)) {
		cJSON *t;
		*why = "json.conversations has no human turn";
		cJSON_ArrayForEach(t, conv) {
			cJSON *from = cJSON_GetObjectItem(t, "from");
			cJSON *value = cJSON_GetObjectItem(t, "value");
			if (cJSON_IsString(from) && cJSON_IsString(value) &&
			    role_of(from->valuestring) == 0) {
				q = strip_image(value->valuestring);
				break;
			}
		}
	} else {
		*why = "no json.prompt or json.conversations";
	}
	cJSON_Delete(j);
	return q;
}

void prompt_turns_free(char **turns, int n)
{
	for (int i = 0; i < n; i++)
		free(turns[i]);
	free(turns);
}

int prompt_turns(const struct sample *s, char ***turns, const char **why)
{
	cJSON *j = sample_json(s, "json");
	char **t = NULL;
	int n = 0;
	*turns = NULL;
	*why = "no json field";
	if (!j)
		return -1;
	cJSON *p = cJSON_GetObjectItem(j, "prompt");
	cJSON *a = cJSON_GetObjectItem(j, "answer");
	cJSON *conv = cJSON_GetObjectItem(j, "conversations");
	if (cJSON_IsString(p) && cJSON_IsString(a)) {
		t = xcalloc(2, sizeof *t);
		t[n++] = strip_image(p->valuestring);
		t[n++] = xstrdup(a->valuestring);
	} else if (cJSON_IsArray(conv)) {
		int cap = cJSON_GetArraySize(conv);
		cJSON *e;
		t = xcalloc((size_t)(cap > 0 ? cap : 1), sizeof *t);
		cJSON_ArrayForEach(e, conv) {
			cJSON *from = cJSON_GetObjectItem(e, "from");
			cJSON *value = cJSON_GetObjectItem(e, "value");
			if (!cJSON_IsString(from) || !cJSON_IsString(value) ||
			    role_of(from->valuestring) != n % 2) {
				*why = "json.conversations: turns must alternate human, gpt "
				       "with string values";
				goto bad;
			}
			t[n] = n % 2 == 0 ? strip_image(value->valuestring)
					  : xstrdup(value->valuestring);
			n++;
		}
		if (n % 2)
			n--, free(t[n]); /* a trailing question has no answer to learn */
		if (n == 0) {
			*why = "json.conversations has no answered turn";
			goto bad;
		}
	} else {
		*why = cJSON_IsString(p) ? "no json.answer (string)"
					 : "no json.prompt + json.answer or json.conversations";
		goto bad;
	}
	cJSON_Delete(j);
	*turns = t;
	return n;
bad:
	cJSON_Delete(j);
	prompt_turns_free(t, n);
	return -1;
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
	image_preprocess(chw, &im, &m->pre);
	image_release(&im);
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
