/* sample — one record in memory: a key and ordered named fields.
 * Fields keep their order and bytes, so unknown fields pass through every
 * stage untouched (DESIGN sec. 2). Uses util and cJSON only. */
#ifndef SEVA_SAMPLE_H
#define SEVA_SAMPLE_H

#include <stddef.h>

struct cJSON;

/* How a field's bytes are meant: decided from its name (`*.txt` text,
 * `json`/`*.json` JSON, the rest bytes) or from its msgpack type. */
enum field_type {
	FIELD_BYTES, /* msgpack bin; e.g. jpg, png, aug.png */
	FIELD_TEXT,  /* msgpack str; UTF-8, e.g. response.txt */
	FIELD_JSON,  /* msgpack map; held here as compact JSON text */
};

struct field {
	char *name;           /* "jpg", "aug.json", "chosen.txt" */
	enum field_type type;
	unsigned char *data;  /* owned; NUL-terminated after len for convenience */
	size_t len;
};

struct sample {
	char *key;            /* "000017"; owned */
	struct field *fields;
	size_t nfields, cap;
};

void sample_init(struct sample *s);
void sample_release(struct sample *s);
/* Drops the key and all fields, keeping the allocation for reuse. */
void sample_clear(struct sample *s);
void sample_set_key(struct sample *s, const char *key);

/* The type a field of this name has when nothing else says (tar members). */
enum field_type field_type_for(const char *name);

/* Returns the field or NULL. */
struct field *sample_get(const struct sample *s, const char *name);
/* Copies DATA into the field NAME, replacing an existing one in place
 * (keeping its position) or appending a new one. */
void sample_set(struct sample *s, const char *name, enum field_type type,
		const void *data, size_t len);
void sample_set_text(struct sample *s, const char *name, const char *text);
/* Stores JSON as compact text (sample_json_print's, not pretty). */
void sample_set_json(struct sample *s, const char *name, const struct cJSON *json);
/* JSON as cJSON prints it (compact, or PRETTY as cJSON_Print), except that
 * every number reads back exactly: cJSON's own printing keeps 15 digits
 * when they come within a relative DBL_EPSILON, so a seed near 2^53 or a
 * double one ulp away changed. Malloc'd; the caller frees. */
char *sample_json_print(const struct cJSON *json, int pretty);
/* Takes ownership of DATA (malloc'd, len bytes + 1 for a NUL). */
void sample_take(struct sample *s, const char *name, enum field_type type,
		 unsigned char *data, size_t len);
/* Returns 1 if removed, 0 if absent. */
int sample_remove(struct sample *s, const char *name);

/* Parses a JSON field; NULL if absent or not valid JSON (caller frees with
 * cJSON_Delete). */
struct cJSON *sample_json(const struct sample *s, const char *name);
/* The text of a text field, or NULL if absent. Borrowed. */
const char *sample_text(const struct sample *s, const char *name);
/* The text of field NAME as a tool uses it: NULL with the reason in *WHY
 * ("no NAME", or "field 'NAME': wrong type (want text)" when the field is
 * not text or holds a NUL) where it cannot be. Borrowed; *WHY is the
 * thread's static buffer, valid until its next call. */
const char *sample_want_text(const struct sample *s, const char *name, const char **why);

/* True for the names of image fields (jpg, jpeg, png, and the formats
 * image_decode refuses by name: bmp, gif, tga, psd, hdr, pic, ppm, pgm,
 * pnm; webp is not one): such a field is the sample's image, decoded or
 * refused, never a text-only sample by mistake. */
int field_is_image(const char *name);
/* The clean image: the one image field whose name does not start with
 * "aug.". NULL if none; if several, the first. */
struct field *sample_image(const struct sample *s);

#endif
