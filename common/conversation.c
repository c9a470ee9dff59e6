#include "conversation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "util.h"

int conversation_role(const char *from)
{
	if (!strcmp(from, "human") || !strcmp(from, "user"))
		return 0;
	if (!strcmp(from, "gpt") || !strcmp(from, "assistant"))
		return 1;
	return -1;
}

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

char *conversation_strip_image(const char *text)
{
	struct buf b;
	const char *p = text, *q;
	buf_init(&b);
	buf_addstr(&b, "");
	while ((q = strstr(p, "<image>"))) {
		buf_add(&b, p, (size_t)(q - p));
		p = q + 7;
		if (*p == '\n')
			p++;
	}
	buf_addstr(&b, p);
	/* the placeholder may leave a newline at either end */
	size_t start = 0, end = b.len;
	while (start < end && is_space(b.data[start]))
		start++;
	while (end > start && is_space(b.data[end - 1]))
		end--;
	char *s = xstrndup((const char *)b.data + start, end - start);
	buf_release(&b);
	return s;
}

char *conversation_nth_question(const cJSON *conv, int n)
{
	const cJSON *t;
	cJSON_ArrayForEach(t, conv) {
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(t, "from");
		const cJSON *value = cJSON_GetObjectItemCaseSensitive(t, "value");
		if (cJSON_IsString(from) && cJSON_IsString(value) && conversation_role(from->valuestring) == 0 &&
		    n-- == 0)
			return conversation_strip_image(value->valuestring);
	}
	return NULL;
}

char *conversation_first_question(const cJSON *conv)
{
	return conversation_nth_question(conv, 0);
}

char *conversation_strip_format(const char *text)
{
	static const char *const suffixes[] = {
		"Answer the question using a single word or phrase.",
		"Answer with the option's letter from the given choices directly.",
	};
	char *q = xstrdup(text);
	for (size_t i = 0; i < ARRAY_LEN(suffixes); i++) {
		char *at;
		size_t k = strlen(suffixes[i]);
		while ((at = strstr(q, suffixes[i])))
			memmove(at, at + k, strlen(at + k) + 1);
	}
	char *out = conversation_strip_image(q);
	free(q);
	return out;
}

int conversation_image_count(const char *text)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, "<image>")); p += 7)
		n++;
	return n;
}

/* Every asking turn's placeholders: more than one is a second image. */
static int conv_images(const cJSON *conv)
{
	int n = 0;
	const cJSON *t;
	cJSON_ArrayForEach(t, conv) {
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(t, "from");
		const cJSON *value = cJSON_GetObjectItemCaseSensitive(t, "value");
		if (cJSON_IsString(from) && cJSON_IsString(value) && conversation_role(from->valuestring) == 0)
			n += conversation_image_count(value->valuestring);
	}
	return n;
}

int conversation_one_image(const struct sample *s, const cJSON *j, const char **why)
{
	static const char *const video[] = { "mp4", "webm", "mkv", "avi", "mov", "m4v" };
	static char reason[400];
	const char *first = NULL;
	for (size_t i = 0; i < s->nfields; i++) {
		const char *name = s->fields[i].name, *dot = strrchr(name, '.');
		for (size_t k = 0; k < ARRAY_LEN(video); k++)
			if (!strcasecmp(dot ? dot + 1 : name, video[k])) {
				snprintf(reason, sizeof reason,
					 "field '%.100s': video is not supported (one image per sample)", name);
				*why = reason;
				return -1;
			}
		if (strncmp(name, "aug.", 4) && field_is_image(name)) {
			if (first) {
				snprintf(reason, sizeof reason,
					 "fields '%.100s' and '%.100s': several images in one sample are not supported (one image per sample)",
					 first, name);
				*why = reason;
				return -1;
			}
			first = name;
		}
	}
	const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "prompt") : NULL;
	const cJSON *conv = j ? cJSON_GetObjectItemCaseSensitive(j, "conversations") : NULL;
	int n = cJSON_IsString(p) ? conversation_image_count(p->valuestring)
		: cJSON_IsArray(conv) ? conv_images(conv) : 0;
	if (n > 1) {
		snprintf(reason, sizeof reason,
			 "json.%s: %d <image> placeholders: several images in one sample are not supported (one image per sample)",
			 cJSON_IsString(p) ? "prompt" : "conversations", n);
		*why = reason;
		return -1;
	}
	return 0;
}

char *conversation_question(const struct sample *s, const char **why)
{
	cJSON *j = sample_json(s, "json");
	char *q = NULL;
	*why = sample_get(s, "json") ? "field 'json': not valid JSON" : "no json field";
	if (!j)
		return NULL;
	if (conversation_one_image(s, j, why) < 0) {
		cJSON_Delete(j);
		return NULL;
	}
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
	const cJSON *conv = cJSON_GetObjectItemCaseSensitive(j, "conversations");
	if (cJSON_IsString(p)) {
		q = conversation_strip_image(p->valuestring);
	} else if (p && !cJSON_IsNull(p)) {
		*why = "json.prompt is not a string";
	} else if (cJSON_IsArray(conv)) {
		if (!(q = conversation_first_question(conv)))
			*why = "json.conversations has no human turn";
	} else {
		*why = "no json.prompt or json.conversations";
	}
	cJSON_Delete(j);
	return q;
}

void conversation_turns_free(char **turns, int n)
{
	for (int i = 0; i < n; i++)
		free(turns[i]);
	free(turns);
}

int conversation_turns(const struct sample *s, char ***turns, const char **why)
{
	cJSON *j = sample_json(s, "json");
	char **t = NULL;
	int n = 0;
	*turns = NULL;
	*why = sample_get(s, "json") ? "field 'json': not valid JSON" : "no json field";
	if (!j)
		return -1;
	if (conversation_one_image(s, j, why) < 0) {
		cJSON_Delete(j);
		return -1;
	}
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "answer");
	const cJSON *conv = cJSON_GetObjectItemCaseSensitive(j, "conversations");
	if (cJSON_IsString(p) && cJSON_IsString(a)) {
		t = xcalloc(2, sizeof *t);
		t[n++] = conversation_strip_image(p->valuestring);
		t[n++] = xstrdup(a->valuestring);
	} else if (cJSON_IsArray(conv)) {
		int cap = cJSON_GetArraySize(conv);
		const cJSON *e;
		t = xcalloc((size_t)(cap > 0 ? cap : 1), sizeof *t);
		cJSON_ArrayForEach(e, conv) {
			const cJSON *from = cJSON_GetObjectItemCaseSensitive(e, "from");
			const cJSON *value = cJSON_GetObjectItemCaseSensitive(e, "value");
			if (!cJSON_IsString(from) || !cJSON_IsString(value) ||
			    conversation_role(from->valuestring) != n % 2) {
				*why = "json.conversations: turns must alternate human, gpt "
				       "with string values";
				goto bad;
			}
			t[n] = n % 2 == 0 ? conversation_strip_image(value->valuestring)
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
	conversation_turns_free(t, n);
	return -1;
}
