#include "sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "util.h"

void sample_init(struct sample *s)
{
	s->key = NULL;
	s->fields = NULL;
	s->nfields = s->cap = 0;
}

void sample_clear(struct sample *s)
{
	for (size_t i = 0; i < s->nfields; i++) {
		free(s->fields[i].name);
		free(s->fields[i].data);
	}
	s->nfields = 0;
	free(s->key);
	s->key = NULL;
}

void sample_release(struct sample *s)
{
	sample_clear(s);
	free(s->fields);
	sample_init(s);
}

void sample_set_key(struct sample *s, const char *key)
{
	char *k = xstrdup(key);
	free(s->key);
	s->key = k;
}

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);
	return n >= m && strcmp(name + n - m, suffix) == 0;
}

enum field_type field_type_for(const char *name)
{
	if (!strcmp(name, "json") || has_suffix(name, ".json"))
		return FIELD_JSON;
	if (!strcmp(name, "txt") || has_suffix(name, ".txt"))
		return FIELD_TEXT;
	return FIELD_BYTES;
}

struct field *sample_get(const struct sample *s, const char *name)
{
	for (size_t i = 0; i < s->nfields; i++)
		if (!strcmp(s->fields[i].name, name))
			return &s->fields[i];
	return NULL;
}

void sample_take(struct sample *s, const char *name, enum field_type type,
		 unsigned char *data, size_t len)
{
	struct field *f = sample_get(s, name);
	if (f) {
		free(f->data);
	} else {
		if (s->nfields == s->cap) {
			s->cap = s->cap ? 2 * s->cap : 8;
			s->fields = xrealloc(s->fields, s->cap * sizeof *s->fields);
		}
		f = &s->fields[s->nfields++];
		f->name = xstrdup(name);
	}
	data[len] = 0;
	f->type = type;
	f->data = data;
	f->len = len;
}

void sample_set(struct sample *s, const char *name, enum field_type type,
		const void *data, size_t len)
{
	unsigned char *p = xmalloc(len + 1);
	if (len)
		memcpy(p, data, len);
	sample_take(s, name, type, p, len);
}

void sample_set_text(struct sample *s, const char *name, const char *text)
{
	sample_set(s, name, FIELD_TEXT, text, strlen(text));
}

/* Each number of ITEM and its siblings and children becomes raw text: the
 * bytes cJSON prints where they read back exactly, else 17 digits. */
static void exact_numbers(cJSON *item)
{
	for (; item; item = item->next) {
		if (cJSON_IsNumber(item)) {
			double d = item->valuedouble;
			char t[40];
			if (!isfinite(d))
				strcpy(t, "null");
			else if (d == (double)item->valueint)
				snprintf(t, sizeof t, "%d", item->valueint);
			else if (snprintf(t, sizeof t, "%1.15g", d), strtod(t, NULL) != d)
				snprintf(t, sizeof t, "%1.17g", d);
			char *raw = cJSON_malloc(strlen(t) + 1);
			if (!raw)
				die("out of memory (printing JSON)");
			strcpy(raw, t);
			item->type = cJSON_Raw | (item->type & cJSON_StringIsConst);
			item->valuestring = raw;
		}
		exact_numbers(item->child);
	}
}

char *sample_json_print(const struct cJSON *json, int pretty)
{
	cJSON *copy = cJSON_Duplicate(json, 1);
	char *text;
	if (!copy)
		die("out of memory (printing JSON)");
	exact_numbers(copy);
	text = pretty ? cJSON_Print(copy) : cJSON_PrintUnformatted(copy);
	cJSON_Delete(copy);
	if (!text)
		die("out of memory (printing JSON)");
	char *s = xstrdup(text);
	cJSON_free(text);
	return s;
}

void sample_set_json(struct sample *s, const char *name, const struct cJSON *json)
{
	char *text = sample_json_print(json, 0);
	sample_set(s, name, FIELD_JSON, text, strlen(text));
	free(text);
}

int sample_remove(struct sample *s, const char *name)
{
	struct field *f = sample_get(s, name);
	if (!f)
		return 0;
	free(f->name);
	free(f->data);
	size_t i = (size_t)(f - s->fields);
	memmove(f, f + 1, (s->nfields - i - 1) * sizeof *f);
	s->nfields--;
	return 1;
}

struct cJSON *sample_json(const struct sample *s, const char *name)
{
	struct field *f = sample_get(s, name);
	if (!f)
		return NULL;
	return cJSON_ParseWithLength((const char *)f->data, f->len);
}

const char *sample_text(const struct sample *s, const char *name)
{
	struct field *f = sample_get(s, name);
	return f ? (const char *)f->data : NULL;
}

const char *sample_want_text(const struct sample *s, const char *name, const char **why)
{
	static _Thread_local char reason[160];
	struct field *f = sample_get(s, name);
	if (f && f->type == FIELD_TEXT && strlen((const char *)f->data) == f->len)
		return (const char *)f->data;
	if (f)
		snprintf(reason, sizeof reason, "field '%.100s': wrong type (want text)", name);
	else
		snprintf(reason, sizeof reason, "no %.100s", name);
	*why = reason;
	return NULL;
}

int field_is_image(const char *name)
{
	static const char *const ext[] = {
		"jpg", "jpeg", "png", "bmp", "gif", "tga", "psd", "hdr", "pic", "ppm", "pgm", "pnm",
	};
	const char *dot = strrchr(name, '.');
	const char *e = dot ? dot + 1 : name;
	for (size_t i = 0; i < ARRAY_LEN(ext); i++)
		if (!strcasecmp(e, ext[i]))
			return 1;
	return 0;
}

struct field *sample_image(const struct sample *s)
{
	for (size_t i = 0; i < s->nfields; i++)
		if (strncmp(s->fields[i].name, "aug.", 4) && field_is_image(s->fields[i].name))
			return &s->fields[i];
	return NULL;
}
