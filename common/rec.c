/* rec — record streams. Three encodings of one sample model (DESIGN sec. 2):
 *
 *   msgpack  one map per sample, "__key__" first; str = text, bin = bytes,
 *            anything else (map, array, number, ...) = a JSON field.
 *   tar      WebDataset members KEY.FIELD; the key is the member's basename
 *            (directory part ignored) up to the first dot, the field the rest.
 *   JSONL    one object per line; text as strings, JSON as values, bytes as
 *            {"bytes": N, "sha256": HEX} or {"base64": "..."} (only the latter
 *            reads back).
 *
 * JSON fields are held as JSON text. The text <-> msgpack conversion is done
 * here by hand rather than through cJSON so that integers stay exact 64-bit
 * integers and key order is kept. */
#include "rec.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "sha256.h"
#include "util.h"

#define CHUNK 65536
#define PEEK 512
/* msgpack-c reads back at most 32 nested containers (its unpacker's stack,
 * MSGPACK_EMBED_STACK_SIZE, fixed when the library was built) and the
 * record's own map is one: a JSON field may nest 31 deep. Deeper JSON
 * would convert and then be unreadable. */
#define MSGPACK_MAX_DEPTH 32
#define JSON_MAX_DEPTH (MSGPACK_MAX_DEPTH - 1)

/* ---- JSON text: validate, convert to msgpack, minify ---- */

struct jp {
	const char *p, *e;
	int depth, max_depth, too_deep;
	struct buf str; /* the last decoded string */
};

static void jp_ws(struct jp *j)
{
	while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int jp_hex4(struct jp *j, unsigned *out)
{
	unsigned v = 0;
	if (j->e - j->p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hexval((unsigned char)j->p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + (unsigned)h;
	}
	j->p += 4;
	*out = v;
	return 0;
}

static void utf8_put(struct buf *b, unsigned cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp, n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 0x3f)), n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | cp >> 12), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f)), n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | cp >> 18), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_add(b, u, n);
}

/* A string at j->p (the opening quote), decoded into j->str. */
static int jp_string(struct jp *j)
{
	j->str.len = 0;
	if (j->p >= j->e || *j->p != '"')
		return -1;
	j->p++;
	for (;;) {
		const char *run = j->p;
		while (j->p < j->e && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20)
			j->p++;
		buf_add(&j->str, run, (size_t)(j->p - run));
		if (j->p >= j->e || (unsigned char)*j->p < 0x20)
			return -1;
		if (*j->p++ == '"')
			break;
		if (j->p >= j->e)
			return -1;
		char c = *j->p++;
		unsigned cp, lo;
		switch (c) {
		case '"': case '\\': case '/': buf_add(&j->str, &c, 1); break;
		case 'b': buf_add(&j->str, "\b", 1); break;
		case 'f': buf_add(&j->str, "\f", 1); break;
		case 'n': buf_add(&j->str, "\n", 1); break;
		case 'r': buf_add(&j->str, "\r", 1); break;
		case 't': buf_add(&j->str, "\t", 1); break;
		case 'u':
			if (jp_hex4(j, &cp))
				return -1;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (j->e - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
					return -1;
				j->p += 2;
				if (jp_hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff)
					return -1;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return -1;
			}
			utf8_put(&j->str, cp);
			break;
		default:
			return -1;
		}
	}
	return 0;
}

static int jp_lit(struct jp *j, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(j->e - j->p) < n || memcmp(j->p, w, n))
		return -1;
	j->p += n;
	return 0;
}

static int is_digit(const char *p, const char *e)
{
	return p < e && *p >= '0' && *p <= '9';
}

/* Packs (pk non-NULL) or just validates one JSON value at j->p. */
static int jp_value(struct jp *j, msgpack_packer *pk)
{
	jp_ws(j);
	if (j->p >= j->e)
		return -1;
	char c = *j->p;
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		const char *start = j->p;
		size_t n = 0;
		if (++j->depth > j->max_depth) {
			j->too_deep = 1;
			return -1;
		}
		/* msgpack wants the count first: count in a validating pass,
		 * then pack in a second pass. */
		for (int pass = 0; pass < (pk ? 2 : 1); pass++) {
			msgpack_packer *out = pass ? pk : NULL;
			j->p = start + 1;
			if (out && c == '{')
				msgpack_pack_map(out, n);
			else if (out)
				msgpack_pack_array(out, n);
			n = 0;
			jp_ws(j);
			if (j->p < j->e && *j->p == close) {
				j->p++;
				continue;
			}
			for (;;) {
				if (c == '{') {
					jp_ws(j);
					if (jp_string(j))
						return -1;
					if (out) {
						msgpack_pack_str(out, j->str.len);
						msgpack_pack_str_body(out, j->str.data, j->str.len);
					}
					jp_ws(j);
					if (j->p >= j->e || *j->p++ != ':')
						return -1;
				}
				if (jp_value(j, out))
					return -1;
				n++;
				jp_ws(j);
				if (j->p >= j->e)
					return -1;
				if (*j->p == ',') {
					j->p++;
					continue;
				}
				if (*j->p++ != close)
					return -1;
				break;
			}
		}
		j->depth--;
		return 0;
	}
	if (c == '"') {
		if (jp_string(j))
			return -1;
		if (pk) {
			msgpack_pack_str(pk, j->str.len);
			msgpack_pack_str_body(pk, j->str.data, j->str.len);
		}
		return 0;
	}
	if (c == 't' || c == 'f' || c == 'n') {
		const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
		if (jp_lit(j, w))
			return -1;
		if (pk && c == 't')
			msgpack_pack_true(pk);
		else if (pk && c == 'f')
			msgpack_pack_false(pk);
		else if (pk)
			msgpack_pack_nil(pk);
		return 0;
	}
	/* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
	const char *s = j->p, *p = j->p, *e = j->e;
	int is_float = 0;
	if (p < e && *p == '-')
		p++;
	if (!is_digit(p, e))
		return -1;
	if (*p == '0')
		p++;
	else
		while (is_digit(p, e))
			p++;
	if (p < e && *p == '.') {
		is_float = 1;
		if (!is_digit(++p, e))
			return -1;
		while (is_digit(p, e))
			p++;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		is_float = 1;
		p++;
		if (p < e && (*p == '+' || *p == '-'))
			p++;
		if (!is_digit(p, e))
			return -1;
		while (is_digit(p, e))
			p++;
	}
	j->p = p;
	if (!pk)
		return 0;
	char num[64];
	size_t len = (size_t)(p - s);
	if (len >= sizeof num) {
		/* Too long for an integer of any width: a float. */
		char *t = xstrndup(s, len);
		msgpack_pack_double(pk, strtod(t, NULL));
		free(t);
		return 0;
	}
	memcpy(num, s, len);
	num[len] = 0;
	if (!is_float) {
		errno = 0;
		if (num[0] == '-') {
			long long v = strtoll(num, NULL, 10);
			if (!errno)
				return msgpack_pack_int64(pk, v), 0;
		} else {
			unsigned long long v = strtoull(num, NULL, 10);
			if (!errno)
				return msgpack_pack_uint64(pk, v), 0;
		}
	}
	msgpack_pack_double(pk, strtod(num, NULL));
	return 0;
}

static void jp_init(struct jp *j, const void *text, size_t len)
{
	j->p = text;
	j->e = len ? j->p + len : j->p; /* an empty member's text may be NULL */
	j->depth = 0;
	j->max_depth = JSON_MAX_DEPTH;
	j->too_deep = 0;
	buf_init(&j->str);
}

/* One whole JSON text (surrounding whitespace allowed) nested at most
 * MAX_DEPTH deep: 0 if valid, -2 if nested deeper, -1 otherwise; packed
 * into PK when PK is not NULL. */
static int json_pack_depth(const void *text, size_t len, msgpack_packer *pk, int max_depth)
{
	struct jp j;
	jp_init(&j, text, len);
	j.max_depth = max_depth;
	int rc = jp_value(&j, pk);
	if (!rc) {
		jp_ws(&j);
		rc = j.p == j.e ? 0 : -1;
	}
	if (j.too_deep)
		rc = -2;
	buf_release(&j.str);
	return rc;
}

/* A JSON field's text. */
static int json_pack(const void *text, size_t len, msgpack_packer *pk)
{
	return json_pack_depth(text, len, pk, JSON_MAX_DEPTH);
}

/* What json_pack's RC means. */
static const char *json_why(int rc)
{
	_Static_assert(JSON_MAX_DEPTH == 31, "the message names the depth");
	return rc == -2 ? "JSON nested more than 31 deep (the most a msgpack record holds)"
			: "not valid JSON";
}

/* Valid JSON text of LEN bytes, appended to B without insignificant
 * whitespace. */
static void json_minify(struct buf *b, const unsigned char *t, size_t len)
{
	int in_str = 0;
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = t[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			buf_add(b, t + run, i - run);
			run = i + 1;
		}
	}
	buf_add(b, t + run, len - run);
}

/* A JSON string literal for the LEN bytes at S, escaped as cJSON does. */
void rec_json_quote(struct buf *b, const void *str, size_t len)
{
	const unsigned char *s = str;
	size_t run = 0;
	buf_add(b, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];
		const char *esc = NULL;
		char u[8];
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (c < 0x20) {
				snprintf(u, sizeof u, "\\u%04x", c);
				esc = u;
			}
		}
		if (!esc)
			continue;
		buf_add(b, s + run, i - run);
		buf_addstr(b, esc);
		run = i + 1;
	}
	buf_add(b, s + run, len - run);
	buf_add(b, "\"", 1);
}

/* Shortest of %.15g/%.17g that reads back exactly (cJSON's rule), with a
 * ".0" kept on integral values so a float stays a float on the way back. */
static void json_double(struct buf *b, double d)
{
	char t[40];
	if (!isfinite(d)) {
		buf_addstr(b, "null");
		return;
	}
	snprintf(t, sizeof t, "%1.15g", d);
	if (strtod(t, NULL) != d)
		snprintf(t, sizeof t, "%1.17g", d);
	if (!strpbrk(t, ".e"))
		strcat(t, ".0");
	buf_addstr(b, t);
}

/* A msgpack object as compact JSON text. -1 for what JSON cannot hold. */
static int mp_to_json(struct buf *b, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: buf_addstr(b, "null"); return 0;
	case MSGPACK_OBJECT_BOOLEAN: buf_addstr(b, o->via.boolean ? "true" : "false"); return 0;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: buf_printf(b, "%llu", (unsigned long long)o->via.u64); return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: buf_printf(b, "%lld", (long long)o->via.i64); return 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: json_double(b, o->via.f64); return 0;
	case MSGPACK_OBJECT_STR: rec_json_quote(b, o->via.str.ptr, o->via.str.size); return 0;
	case MSGPACK_OBJECT_ARRAY:
		buf_add(b, "[", 1);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				buf_add(b, ",", 1);
			if (mp_to_json(b, &o->via.array.ptr[i]))
				return -1;
		}
		buf_add(b, "]", 1);
		return 0;
	case MSGPACK_OBJECT_MAP:
		buf_add(b, "{", 1);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			if (i)
				buf_add(b, ",", 1);
			if (k->type == MSGPACK_OBJECT_STR) {
				rec_json_quote(b, k->via.str.ptr, k->via.str.size);
			} else if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
				   k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
				/* JSON keys are strings; Python's json does the same. */
				buf_add(b, "\"", 1);
				mp_to_json(b, k);
				buf_add(b, "\"", 1);
			} else {
				return -1;
			}
			buf_add(b, ":", 1);
			if (mp_to_json(b, &o->via.map.ptr[i].val))
				return -1;
		}
		buf_add(b, "}", 1);
		return 0;
	default:
		return -1; /* bin, ext */
	}
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64_encode(struct buf *b, const unsigned char *p, size_t n)
{
	char q[4];
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		q[0] = b64[v >> 18];
		q[1] = b64[(v >> 12) & 63];
		q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? b64[v & 63] : '=';
		buf_add(b, q, 4);
	}
}

static int base64_decode(struct buf *b, const unsigned char *s, size_t n)
{
	unsigned v = 0;
	int bits = 0;
	size_t i;
	for (i = 0; i < n && s[i] != '='; i++) {
		const char *c = s[i] ? strchr(b64, s[i]) : NULL;
		if (!c)
			return -1;
		v = v << 6 | (unsigned)(c - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			unsigned char byte = (unsigned char)(v >> bits);
			buf_add(b, &byte, 1);
		}
	}
	for (; i < n; i++)
		if (s[i] != '=')
			return -1;
	return 0;
}

/* ---- input: the peeked head replayed, then the file ---- */

struct src {
	int fd;
	unsigned char head[PEEK];
	size_t head_len, head_pos;
	unsigned char chunk[CHUNK];
};

static ssize_t src_read(struct src *s, void *buf, size_t n)
{
	if (s->head_pos < s->head_len) {
		size_t k = s->head_len - s->head_pos;
		if (k > n)
			k = n;
		memcpy(buf, s->head + s->head_pos, k);
		s->head_pos += k;
		return (ssize_t)k;
	}
	for (;;) {
		ssize_t r = read(s->fd, buf, n);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

/* A set of keys seen, for tar's "a key reappears" check. */
struct keyset {
	char **slot;
	size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* Adds KEY; returns 1 if it was already there. */
static int keyset_add(struct keyset *ks, const char *key)
{
	if (2 * (ks->n + 1) > ks->cap) {
		struct keyset big = { xcalloc(ks->cap ? 2 * ks->cap : 64, sizeof(char *)), ks->cap ? 2 * ks->cap : 64, 0 };
		for (size_t i = 0; i < ks->cap; i++)
			if (ks->slot[i]) {
				size_t h = hash_str(ks->slot[i]) & (big.cap - 1);
				while (big.slot[h])
					h = (h + 1) & (big.cap - 1);
				big.slot[h] = ks->slot[i];
			}
		big.n = ks->n;
		free(ks->slot);
		*ks = big;
	}
	size_t h = hash_str(key) & (ks->cap - 1);
	while (ks->slot[h]) {
		if (!strcmp(ks->slot[h], key))
			return 1;
		h = (h + 1) & (ks->cap - 1);
	}
	ks->slot[h] = xstrdup(key);
	ks->n++;
	return 0;
}

static void keyset_release(struct keyset *ks)
{
	for (size_t i = 0; i < ks->cap; i++)
		free(ks->slot[i]);
	free(ks->slot);
}

/* ---- reader ---- */

struct rec_reader {
	char *name;       /* display name */
	enum rec_format fmt;
	struct src src;
	long nrec;        /* records started, counting bad ones */
	char *key;        /* key of the current record, NULL if not known */
	int done;         /* end of input, or cannot resynchronise */
	struct buf where;
	struct buf msg;   /* why the last read or the open failed (rd_error) */

	msgpack_unpacker unp;

	struct archive *ar;
	int have_next;    /* a member read ahead: the first of the next sample */
	char *next_key, *next_field, *next_member;
	char *next_broken; /* that member's data could not be read: why */
	struct buf next_data;
	struct keyset seen;
	unsigned char tail[512]; /* the last bytes of the raw input */
	size_t tail_len;
	int at_end;              /* the raw input has ended */
	/* A gzip shard is inflated here, not by libarchive, whose gzip filter
	 * checks neither the CRC nor the length: a flipped bit would be read
	 * as data. zlib checks both, member by member. */
	z_stream *gz;
	unsigned char *gz_in;    /* CHUNK compressed bytes */
	int gz_done;             /* the last member's trailer checked out */

	struct buf line;  /* JSONL */
	size_t cpos, clen;
	long lineno;
};

/* KEY as a message shows it: control bytes as \xNN, cut after
 * REC_KEY_MAX bytes (a bad key is shown, not let loose on a terminal). */
static void show_key(struct buf *b, const char *key)
{
	size_t i;
	for (i = 0; key[i] && i < REC_KEY_MAX; i++) {
		unsigned char c = (unsigned char)key[i];
		if (c < 0x20 || c == 0x7f)
			buf_printf(b, "\\x%02x", c);
		else
			buf_add(b, &key[i], 1);
	}
	if (key[i])
		buf_addstr(b, "...");
}

const char *rec_where(struct rec_reader *r)
{
	r->where.len = 0;
	buf_printf(&r->where, "%s: record %ld", r->name, r->nrec);
	if (r->key) {
		buf_addstr(&r->where, " (key ");
		show_key(&r->where, r->key);
		buf_addstr(&r->where, ")");
	}
	return (const char *)r->where.data;
}

static void set_key(struct rec_reader *r, const char *key, size_t len)
{
	free(r->key);
	r->key = key ? xstrndup(key, len) : NULL;
}

/* The reader's messages wait in r->msg, in error()'s format (a trailing ':'
 * appends strerror(errno)), and return -1: rec_read and rec_open print them
 * as errors, rec_input as errors or, under -k, as skips. */
static int rd_error(struct rec_reader *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int rd_error(struct rec_reader *r, const char *fmt, ...)
{
	int saved = errno;
	size_t n = strlen(fmt);
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *text = xmalloc(len > 0 ? (size_t)len + 1 : 1);
	*text = 0;
	va_start(ap, fmt);
	if (len > 0)
		vsnprintf(text, (size_t)len + 1, fmt, ap);
	va_end(ap);
	r->msg.len = 0;
	buf_addstr(&r->msg, text);
	if (n && fmt[n - 1] == ':')
		buf_printf(&r->msg, " %s", strerror(saved));
	free(text);
	return -1;
}

/* Up to N inflated bytes into BUF; 0 at the end of the input after a whole
 * member, -1 with the archive's error set on corrupt or truncated data.
 * Concatenated members are one stream, as gzip -d reads them. */
static ssize_t gz_read(struct rec_reader *r, struct archive *a, unsigned char *buf, size_t n)
{
	z_stream *z = r->gz;
	z->next_out = buf;
	z->avail_out = (uInt)n;
	while (z->avail_out == n) {
		if (z->avail_in == 0) {
			ssize_t k = src_read(&r->src, r->gz_in, CHUNK);
			if (k < 0) {
				archive_set_error(a, errno, "read error: %s", strerror(errno));
				return -1;
			}
			if (k == 0) {
				if (r->gz_done)
					return 0;
				archive_set_error(a, EIO, "truncated gzip input");
				return -1;
			}
			z->next_in = r->gz_in;
			z->avail_in = (uInt)k;
		}
		if (r->gz_done) { /* more bytes after a member: the next one */
			if (z->next_in[0] != 0x1f) {
				archive_set_error(a, EIO, "gzip: data after the compressed stream");
				return -1;
			}
			inflateReset(z);
			r->gz_done = 0;
		}
		int rc = inflate(z, Z_NO_FLUSH);
		if (rc == Z_STREAM_END) {
			r->gz_done = 1;
		} else if (rc != Z_OK && rc != Z_BUF_ERROR) {
			archive_set_error(a, EIO, "gzip: %s",
					  z->msg ? z->msg : "corrupt data");
			return -1;
		}
	}
	return (ssize_t)(n - z->avail_out);
}

/* libarchive stops reading at the tar's end blocks, which may come before
 * the gzip trailer: read the rest, so the CRC and length of every member
 * are checked (what follows the end blocks, GNU tar's padding, is not
 * data). */
static const char *gz_finish(struct rec_reader *r)
{
	ssize_t n;
	while ((n = gz_read(r, r->ar, r->src.chunk, sizeof r->src.chunk)) > 0)
		;
	return n < 0 ? archive_error_string(r->ar) : NULL;
}

static la_ssize_t tar_read_cb(struct archive *a, void *ud, const void **out)
{
	struct rec_reader *r = ud;
	ssize_t n = r->gz ? gz_read(r, a, r->src.chunk, sizeof r->src.chunk)
			  : src_read(&r->src, r->src.chunk, sizeof r->src.chunk);
	if (n < 0 && r->gz)
		return -1;
	if (n < 0) {
		archive_set_error(a, errno, "read error: %s", strerror(errno));
		return -1;
	}
	if (n == 0)
		r->at_end = 1;
	if ((size_t)n >= sizeof r->tail) {
		memcpy(r->tail, r->src.chunk + n - sizeof r->tail, sizeof r->tail);
		r->tail_len = sizeof r->tail;
	} else if (n > 0) {
		size_t keep = sizeof r->tail - (size_t)n;
		if (keep > r->tail_len)
			keep = r->tail_len;
		memmove(r->tail, r->tail + r->tail_len - keep, keep);
		memcpy(r->tail + keep, r->src.chunk, (size_t)n);
		r->tail_len = keep + (size_t)n;
	}
	*out = r->src.chunk;
	return n;
}

/* libarchive takes an uncompressed tar that stops between members for a
 * whole one (as GNU tar does). Our writers, GNU tar and Python's end with
 * zero blocks; input that ran out on a member's bytes was cut short (a copy
 * interrupted on a block boundary) and its last sample may be partial. */
static int tar_cut_short(struct rec_reader *r)
{
	if (!r->at_end || archive_filter_count(r->ar) > 1 || r->gz || r->tail_len < sizeof r->tail)
		return 0;
	for (size_t i = 0; i < r->tail_len; i++)
		if (r->tail[i])
			return 1;
	return 0;
}

static int looks_like_tar(const unsigned char *h, size_t n)
{
	if (n >= 262 && !memcmp(h + 257, "ustar", 5))
		return 1;
	if (n < 512)
		return 0;
	/* A v7 header has no magic: trust its checksum (an all-zero block is
	 * an empty archive's trailer). */
	unsigned long sum = 0, want = 0;
	int zero = 1;
	for (int i = 0; i < 512; i++) {
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
		zero &= h[i] == 0;
	}
	if (zero)
		return 1;
	for (int i = 148; i < 156 && h[i] >= '0' && h[i] <= '7'; i++)
		want = want * 8 + (unsigned long)(h[i] - '0');
	return sum == want;
}

static int detect(const unsigned char *h, size_t n)
{
	size_t i = 0;
	if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b)
		return REC_TAR; /* gzip */
	if (n >= 4 && !memcmp(h, "\x28\xb5\x2f\xfd", 4))
		return REC_TAR; /* zstd */
	if (n >= 6 && !memcmp(h, "\xfd" "7zXZ\0", 6))
		return REC_TAR; /* xz */
	if (n >= 3 && !memcmp(h, "BZh", 3))
		return REC_TAR;
	if (looks_like_tar(h, n))
		return REC_TAR;
	if ((h[0] >= 0x80 && h[0] <= 0x9f) || (h[0] >= 0xdc && h[0] <= 0xdf))
		return REC_MSGPACK; /* map (or array, reported as not a map) */
	while (i < n && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r'))
		i++;
	if (i == n || h[i] == '{')
		return REC_JSONL;
	return -1;
}

/* rec_open, with the message of a failure in *WHY (malloc'd) instead of
 * printed. */
static struct rec_reader *reader_open(const char *path, char **why)
{
	struct rec_reader *r = xcalloc(1, sizeof *r);
	int use_stdin = !path || !strcmp(path, "-");
	*why = NULL;
	r->name = xstrdup(use_stdin ? "stdin" : path);
	buf_init(&r->where);
	buf_init(&r->msg);
	buf_init(&r->next_data);
	buf_init(&r->line);
	r->src.fd = use_stdin ? 0 : open(path, O_RDONLY);
	if (r->src.fd < 0) {
		rd_error(r, "open '%s':", path);
		goto fail;
	}
	while (r->src.head_len < PEEK) {
		ssize_t n = read(r->src.fd, r->src.head + r->src.head_len, PEEK - r->src.head_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rd_error(r, "%s: read error:", r->name);
			goto fail;
		}
		if (n == 0)
			break;
		r->src.head_len += (size_t)n;
	}
	if (r->src.head_len == 0) {
		r->done = 1; /* empty input: no records, not an error */
		r->fmt = REC_MSGPACK;
		return r;
	}
	int fmt = detect(r->src.head, r->src.head_len);
	if (fmt < 0) {
		rd_error(r, "%s: not a tar shard, a msgpack stream or JSON lines", r->name);
		goto fail;
	}
	r->fmt = fmt;
	if (fmt == REC_MSGPACK) {
		if (!msgpack_unpacker_init(&r->unp, CHUNK))
			die("out of memory");
	} else if (fmt == REC_TAR) {
		r->ar = archive_read_new();
		if (r->src.head[0] == 0x1f && r->src.head[1] == 0x8b) {
			r->gz = xcalloc(1, sizeof *r->gz);
			r->gz_in = xmalloc(CHUNK);
			if (inflateInit2(r->gz, 16 + MAX_WBITS) != Z_OK) /* gzip wrapper only */
				die("out of memory");
		} else {
			archive_read_support_filter_all(r->ar);
		}
		archive_read_support_format_tar(r->ar);
		if (archive_read_open(r->ar, r, NULL, tar_read_cb, NULL) != ARCHIVE_OK) {
			rd_error(r, "%s: %s", r->name, archive_error_string(r->ar));
			goto fail;
		}
	}
	return r;
fail:
	*why = xstrdup((const char *)r->msg.data);
	rec_close(r);
	return NULL;
}

struct rec_reader *rec_open(const char *path)
{
	char *why;
	struct rec_reader *r = reader_open(path, &why);
	if (!r) {
		error("%s", why);
		free(why);
	}
	return r;
}

void rec_close(struct rec_reader *r)
{
	if (!r)
		return;
	if (r->fmt == REC_MSGPACK && r->unp.buffer)
		msgpack_unpacker_destroy(&r->unp);
	if (r->ar)
		archive_read_free(r->ar);
	if (r->gz)
		inflateEnd(r->gz);
	free(r->gz);
	free(r->gz_in);
	if (r->src.fd > 0)
		close(r->src.fd);
	free(r->name);
	free(r->key);
	free(r->next_key);
	free(r->next_field);
	free(r->next_member);
	free(r->next_broken);
	buf_release(&r->next_data);
	buf_release(&r->where);
	buf_release(&r->msg);
	buf_release(&r->line);
	if (r->seen.slot)
		keyset_release(&r->seen);
	free(r);
}

/* A field of a msgpack record into S. Returns NULL or what is wrong. */
static const char *mp_field(struct sample *s, const char *name, const msgpack_object *v)
{
	enum field_type want = field_type_for(name);
	const char *p = v->via.str.ptr;
	size_t n = v->via.str.size;
	struct buf b;
	if (v->type == MSGPACK_OBJECT_BIN) {
		p = v->via.bin.ptr;
		n = v->via.bin.size;
	}
	if (v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_BIN) {
		enum field_type t = v->type == MSGPACK_OBJECT_STR ? FIELD_TEXT : FIELD_BYTES;
		/* tarp and webdataset write JSON and text as bytes. */
		if (want == FIELD_JSON) {
			int jrc = json_pack(p, n, NULL);
			if (jrc)
				return json_why(jrc);
			t = FIELD_JSON;
		} else if (want == FIELD_TEXT) {
			t = FIELD_TEXT;
		}
		sample_set(s, name, t, p, n);
		return NULL;
	}
	/* a nil or a number is not an answer, nor the text "null" */
	if (want == FIELD_TEXT)
		return "wrong type (want text)";
	buf_init(&b);
	if (mp_to_json(&b, v)) {
		buf_release(&b);
		return "wrong type (binary or extension data inside JSON)";
	}
	size_t len;
	unsigned char *t = buf_detach(&b, &len);
	sample_take(s, name, FIELD_JSON, t, len);
	return NULL;
}

static int mp_sample(struct rec_reader *r, const msgpack_object *o, struct sample *s)
{
	const char *bad = NULL;
	if (o->type != MSGPACK_OBJECT_MAP)
		return rd_error(r, "%s: not a map", rec_where(r));
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 7 &&
		    !memcmp(k->via.str.ptr, "__key__", 7)) {
			if (v->type != MSGPACK_OBJECT_STR && v->type != MSGPACK_OBJECT_BIN)
				return rd_error(r, "%s: __key__ is not a string", rec_where(r));
			if (v->via.str.size == 0 || memchr(v->via.str.ptr, 0, v->via.str.size))
				return rd_error(r, "%s: __key__ is empty or holds a NUL", rec_where(r));
			set_key(r, v->via.str.ptr, v->via.str.size);
			sample_set_key(s, r->key);
		}
	}
	if (!s->key)
		return rd_error(r, "%s: no __key__", rec_where(r));
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_BIN)
			return rd_error(r, "%s: a field name is not a string", rec_where(r));
		char *name = xstrndup(k->via.str.ptr, k->via.str.size);
		if (!strcmp(name, "__key__")) {
			free(name);
			continue;
		}
		if (!*name || strlen(name) != k->via.str.size)
			bad = "empty field name or NUL in it";
		else if (sample_get(s, name))
			bad = "duplicate field";
		else
			bad = mp_field(s, name, v);
		if (bad) {
			rd_error(r, "%s: field '%s': %s", rec_where(r), name, bad);
			free(name);
			return -1;
		}
		free(name);
	}
	return 1;
}

/* Is a whole msgpack object in [P, P+N)? 1 and its size in *LEN; 0: more
 * bytes needed; -1: not msgpack; -2: containers nested deeper than
 * msgpack-c reads (MSGPACK_MAX_DEPTH, the record's map counted), with *LEN
 * the offset of the first one too deep and *FIELD / *FLEN the record's
 * field it lies in (NULL when the key was not a string or not yet read).
 * Headers only, no allocation: msgpack-c allocates a container's elements
 * when it meets the header, so a 5-byte "map of 4 billion" would ask for
 * 64 GB. Called before the unpacker sees a record, it bounds every count by
 * the bytes actually there, and finds a depth bomb at its 33rd header
 * (msgpack-c would say only "out of memory"). */
static int mp_measure(const unsigned char *p, size_t n, size_t *len,
		      const unsigned char **field, size_t *flen)
{
	static const unsigned char fixed[32] = {
		/* 0xc0..0xdf: bytes after the type byte, or a width of the length */
		[0x0] = 0, [0x1] = 0, [0x2] = 0, [0x3] = 0,         /* nil, (c1), false, true */
		[0x4] = 1, [0x5] = 2, [0x6] = 4,                    /* bin 8/16/32: length width */
		[0x7] = 1, [0x8] = 2, [0x9] = 4,                    /* ext 8/16/32: length width */
		[0xa] = 4, [0xb] = 8,                               /* float32/64 */
		[0xc] = 1, [0xd] = 2, [0xe] = 4, [0xf] = 8,         /* uint */
		[0x10] = 1, [0x11] = 2, [0x12] = 4, [0x13] = 8,     /* int */
		[0x14] = 2, [0x15] = 3, [0x16] = 5, [0x17] = 9, [0x18] = 17, /* fixext */
		[0x19] = 1, [0x1a] = 2, [0x1b] = 4,                 /* str: length width */
		[0x1c] = 2, [0x1d] = 4, [0x1e] = 2, [0x1f] = 4,     /* array, map: count width */
	};
	size_t i = 0;
	uint64_t pending = 1; /* objects still to read, at every level */
	/* left[d]: objects still to read in the d-th open container (left[0]:
	 * the record itself); a container stays open while its last object is
	 * read, as msgpack-c's stack keeps it */
	uint64_t left[MSGPACK_MAX_DEPTH + 1] = { 1 };
	int d = 0;
	*field = NULL;
	*flen = 0;
	while (pending > 0) {
		if (pending > n - i)
			return 0; /* every object takes at least a byte */
		while (left[d] == 0)
			d--;
		size_t at = i;
		unsigned c = p[i++];
		uint64_t skip = 0, more = 0;
		int key = d == 1 && left[1] % 2 == 0; /* a name of the record's map */
		pending--;
		left[d]--;
		if (key)
			*field = NULL;
		if (c <= 0x7f || c >= 0xe0) {
			continue;
		} else if (c <= 0x8f) {
			more = 2 * (uint64_t)(c & 0x0f);
		} else if (c <= 0x9f) {
			more = c & 0x0f;
		} else if (c <= 0xbf) {
			skip = c & 0x1f;
		} else if (c == 0xc1) {
			return -1;
		} else {
			unsigned t = c - 0xc0, w = fixed[t];
			int sized = (t >= 0x4 && t <= 0x9) || (t >= 0x19 && t <= 0x1b);
			int counted = t >= 0x1c;
			if (!sized && !counted) {
				skip = w;
			} else {
				uint64_t v = 0;
				if (n - i < w)
					return 0;
				for (unsigned k = 0; k < w; k++)
					v = v << 8 | p[i++];
				if (counted)
					more = t >= 0x1e ? 2 * v : v;
				else
					skip = v + (t >= 0x7 && t <= 0x9); /* ext: a type byte */
			}
		}
		if (skip > n - i)
			return 0;
		if (key && ((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb))) {
			*field = p + i;
			*flen = (size_t)skip;
		}
		i += skip;
		if ((c >= 0x80 && c <= 0x9f) || (c >= 0xdc && c <= 0xdf)) {
			if (d == MSGPACK_MAX_DEPTH) {
				*len = at;
				return -2;
			}
			left[++d] = more;
		}
		pending += more;
	}
	*len = i;
	return 1;
}

static int mp_read(struct rec_reader *r, struct sample *s)
{
	msgpack_unpacked up;
	int rc;
	msgpack_unpacked_init(&up);
	for (;;) {
		msgpack_unpacker *u = &r->unp;
		size_t len, flen;
		const unsigned char *field;
		int whole = mp_measure((unsigned char *)u->buffer + u->off, u->used - u->off, &len,
				       &field, &flen);
		if (whole == -1) {
			r->done = 1;
			r->nrec++;
			rc = rd_error(r, "%s: not msgpack (byte 0xc1)", rec_where(r));
			break;
		}
		if (whole == -2) {
			struct buf f;
			buf_init(&f);
			if (field) {
				char *name = xstrndup((const char *)field, flen);
				buf_addstr(&f, "field '");
				show_key(&f, name);
				buf_addstr(&f, "': ");
				free(name);
			}
			r->done = 1;
			r->nrec++;
			rc = rd_error(r, "%s: %scontainers nested more than %d deep at byte %zu of the record (the most msgpack-c reads)",
				      rec_where(r), f.data ? (char *)f.data : "", MSGPACK_MAX_DEPTH, len);
			buf_release(&f);
			break;
		}
		if (whole > 0) {
			msgpack_unpack_return ret = msgpack_unpacker_next(u, &up);
			r->nrec++;
			if (ret == MSGPACK_UNPACK_SUCCESS) {
				rc = mp_sample(r, &up.data, s);
			} else {
				r->done = 1;
				rc = rd_error(r, "%s: not msgpack (%s)", rec_where(r),
					   ret == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory" : "nested too deep");
			}
			break;
		}
		if (!msgpack_unpacker_reserve_buffer(u, CHUNK))
			die("out of memory");
		ssize_t n = src_read(&r->src, msgpack_unpacker_buffer(u), msgpack_unpacker_buffer_capacity(u));
		if (n > 0) {
			msgpack_unpacker_buffer_consumed(u, (size_t)n);
			continue;
		}
		r->done = 1;
		if (n < 0) {
			rc = rd_error(r, "%s: read error:", r->name);
		} else if (u->used > u->off) {
			r->nrec++;
			rc = rd_error(r, "%s: truncated msgpack (%zu bytes of an incomplete record at the end)",
				   rec_where(r), u->used - u->off);
		} else {
			rc = 0;
		}
		break;
	}
	msgpack_unpacked_destroy(&up);
	return rc;
}

/* Reads the next regular member into r->next_*. 1: a member; 0: end;
 * -1: the archive is broken here (message printed, reader done); -2: the
 * member's header was read but not its data, and it starts a new sample:
 * the sample before it is whole, so the message waits in r->next_broken
 * until that sample has been returned. */
static int tar_member(struct rec_reader *r)
{
	struct archive_entry *e;
	char chunk[CHUNK];
	for (;;) {
		int rc = archive_read_next_header(r->ar, &e);
		if (rc == ARCHIVE_EOF && tar_cut_short(r)) {
			const char *what = "ends inside the archive, without its end blocks (cut short?)";
			if (r->key)
				return rd_error(r, "%s: %s", rec_where(r), what);
			return rd_error(r, "%s: record %ld: %s", r->name, r->nrec + 1, what);
		}
		const char *gz_bad;
		if (rc == ARCHIVE_EOF && r->gz && (gz_bad = gz_finish(r))) {
			r->done = 1;
			return rd_error(r, "%s: after the last record: %s", r->name, gz_bad);
		}
		if (rc == ARCHIVE_EOF)
			return 0;
		if (rc == ARCHIVE_WARN) {
			warn("%s: %s", r->name, archive_error_string(r->ar));
		} else if (rc != ARCHIVE_OK) {
			/* The sample in progress, if any, is lost with the archive. */
			if (r->key)
				return rd_error(r, "%s: %s", rec_where(r), archive_error_string(r->ar));
			return rd_error(r, "%s: record %ld: %s", r->name, r->nrec + 1, archive_error_string(r->ar));
		}
		/* Directories and links carry no field. */
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		const char *path = archive_entry_pathname(e);
		if (!path)
			path = archive_entry_pathname_utf8(e);
		if (!path)
			path = "";
		const char *base = strrchr(path, '/');
		base = base ? base + 1 : path;
		const char *dot = strchr(base, '.');
		free(r->next_member);
		free(r->next_key);
		free(r->next_field);
		r->next_member = xstrdup(path);
		r->next_key = dot ? xstrndup(base, (size_t)(dot - base)) : xstrdup(base);
		r->next_field = dot ? xstrdup(dot + 1) : NULL;
		r->next_data.len = 0;
		for (;;) {
			la_ssize_t n = archive_read_data(r->ar, chunk, sizeof chunk);
			if (n == 0)
				break;
			if (n < 0) {
				if (r->key && !strcmp(r->key, r->next_key))
					return rd_error(r, "%s: member '%s': %s", rec_where(r), path,
						     archive_error_string(r->ar));
				free(r->next_broken);
				r->next_broken = xasprintf("member '%s': %s", path,
							   archive_error_string(r->ar));
				return -2;
			}
			buf_add(&r->next_data, chunk, (size_t)n);
		}
		return 1;
	}
}

static int tar_read(struct rec_reader *r, struct sample *s)
{
	char *bad = NULL;
	int rc;
	if (!r->have_next && !r->next_broken) {
		rc = tar_member(r);
		if (rc == 0 || rc == -1) {
			r->done = 1;
			return rc;
		}
	}
	r->nrec++;
	set_key(r, r->next_key, strlen(r->next_key));
	if (r->next_broken) {
		rd_error(r, "%s: %s", rec_where(r), r->next_broken);
		free(r->next_broken);
		r->next_broken = NULL;
		r->done = 1;
		return -1;
	}
	sample_set_key(s, r->key);
	if (keyset_add(&r->seen, r->key))
		bad = xasprintf("the key appears again after other samples (members not adjacent)");
	do {
		const char *f = r->next_field;
		int jrc;
		if (bad) {
			/* keep reading this sample's members: the next one starts clean */
		} else if (!f || !*f || !*r->next_key) {
			bad = xasprintf("member '%s': name is not KEY.FIELD", r->next_member);
		} else if (sample_get(s, f)) {
			bad = xasprintf("member '%s': duplicate field", r->next_member);
		} else if (field_type_for(f) == FIELD_JSON &&
			   (jrc = json_pack(r->next_data.data, r->next_data.len, NULL))) {
			bad = xasprintf("member '%s': %s", r->next_member, json_why(jrc));
		} else {
			size_t len;
			unsigned char *d = buf_detach(&r->next_data, &len);
			sample_take(s, f, field_type_for(f), d, len);
		}
		rc = tar_member(r);
		if (rc == -2)
			break; /* the next sample is broken, this one is whole */
		if (rc < 0) {
			/* The archive broke inside or after this sample: it is lost. */
			r->done = 1;
			r->have_next = 0;
			free(bad);
			return -1;
		}
		r->have_next = rc;
	} while (r->have_next && !strcmp(r->next_key, r->key));
	if (rc == -2)
		r->have_next = 0;
	else if (!r->have_next)
		r->done = 1;
	if (bad) {
		rd_error(r, "%s: %s", rec_where(r), bad);
		free(bad);
		return -1;
	}
	return 1;
}

/* The next line of input into r->line (without the newline). 0 at end. */
static int next_line(struct rec_reader *r)
{
	r->line.len = 0;
	for (;;) {
		if (r->cpos == r->clen) {
			ssize_t n = src_read(&r->src, r->src.chunk, sizeof r->src.chunk);
			if (n < 0)
				return rd_error(r, "%s: read error:", r->name);
			if (n == 0)
				return r->line.len > 0;
			r->cpos = 0;
			r->clen = (size_t)n;
		}
		unsigned char *p = r->src.chunk + r->cpos;
		unsigned char *nl = memchr(p, '\n', r->clen - r->cpos);
		size_t k = nl ? (size_t)(nl - p) : r->clen - r->cpos;
		buf_add(&r->line, p, k);
		r->cpos += k + (nl != NULL);
		if (nl) {
			buf_add(&r->line, "", 0);
			return 1;
		}
	}
}

/* Is the JSON object at [P, E) a bytes field? 1: {"base64": "..."}, decoded
 * into OUT; 2: {"bytes": N, "sha256": "..."} (a digest, not content);
 * 0: an ordinary JSON value; -1: bad base64. */
static int jsonl_bytes(const char *p, const char *e, struct buf *out)
{
	struct jp j;
	int nkeys = 0, b64 = 0, digest = 0, rc = 0;
	jp_init(&j, p, (size_t)(e - p));
	if (*j.p++ != '{')
		goto done;
	for (;;) {
		jp_ws(&j);
		if (j.p < j.e && *j.p == '}')
			break;
		if (jp_string(&j))
			goto done;
		nkeys++;
		int is_b64 = j.str.len == 6 && !memcmp(j.str.data, "base64", 6);
		digest |= j.str.len == 6 && !memcmp(j.str.data, "sha256", 6);
		jp_ws(&j);
		j.p++; /* ':' (the object was validated) */
		jp_ws(&j);
		const char *v = j.p;
		if (jp_value(&j, NULL))
			goto done;
		if (is_b64 && *v == '"') {
			struct jp s;
			jp_init(&s, v, (size_t)(j.p - v));
			jp_string(&s);
			out->len = 0;
			b64 = base64_decode(out, s.str.data, s.str.len) ? -1 : 1;
			buf_release(&s.str);
		}
		jp_ws(&j);
		if (j.p < j.e && *j.p == ',')
			j.p++;
	}
	if (nkeys == 1 && b64)
		rc = b64;
	else if (digest)
		rc = 2;
done:
	buf_release(&j.str);
	return rc;
}

/* One JSON-lines object into S; on failure the reason goes into ERR. */
static int jsonl_sample(struct rec_reader *r, struct sample *s, struct jp *j, struct buf *err)
{
	struct buf name, val;
	buf_init(&name);
	buf_init(&val);
	/* The line's object is the record's map: one level more. */
	int jrc = json_pack_depth(j->p, (size_t)(j->e - j->p), NULL, JSON_MAX_DEPTH + 1);
	if (jrc) {
		buf_addstr(err, json_why(jrc));
		goto out;
	}
	jp_ws(j);
	if (*j->p++ != '{') {
		buf_addstr(err, "not a JSON object");
		goto out;
	}
	for (;;) {
		jp_ws(j);
		if (*j->p == '}')
			break;
		jp_string(j);
		name.len = 0;
		buf_add(&name, j->str.data, j->str.len);
		const char *fname = (const char *)name.data;
		jp_ws(j);
		j->p++; /* ':' */
		jp_ws(j);
		const char *v = j->p;
		jp_value(j, NULL);
		if (!*fname || strlen(fname) != name.len || sample_get(s, fname)) {
			buf_printf(err, "field '%s': empty, duplicate or holding a NUL", fname);
			goto out;
		}
		if (!strcmp(fname, "__key__")) {
			struct jp k;
			jp_init(&k, v, (size_t)(j->p - v));
			if (*v != '"' || jp_string(&k) || !k.str.len || strlen((char *)k.str.data) != k.str.len) {
				buf_addstr(err, "__key__ is not a non-empty string");
				buf_release(&k.str);
				goto out;
			}
			sample_set_key(s, (const char *)k.str.data);
			set_key(r, (const char *)k.str.data, k.str.len);
			buf_release(&k.str);
		} else if (*v == '"') {
			struct jp t;
			jp_init(&t, v, (size_t)(j->p - v));
			jp_string(&t);
			sample_set(s, fname, FIELD_TEXT, t.str.data, t.str.len);
			buf_release(&t.str);
		} else {
			int kind = jsonl_bytes(v, j->p, &val);
			if (kind == 1) {
				sample_set(s, fname, FIELD_BYTES, val.data, val.len);
			} else if (kind) {
				buf_printf(err, "field '%s': %s", fname,
					   kind < 0 ? "bad base64" : "bytes shown as a digest, not content (write it with --base64)");
				goto out;
			} else if (field_type_for(fname) == FIELD_TEXT) {
				buf_printf(err, "field '%s': wrong type (want text)", fname);
				goto out;
			} else {
				val.len = 0;
				json_minify(&val, (const unsigned char *)v, (size_t)(j->p - v));
				sample_set(s, fname, FIELD_JSON, val.data, val.len);
			}
		}
		jp_ws(j);
		if (*j->p == ',')
			j->p++;
	}
	if (!s->key)
		buf_addstr(err, "no __key__");
out:
	buf_release(&name);
	buf_release(&val);
	return err->len ? -1 : 0;
}

static int jsonl_read(struct rec_reader *r, struct sample *s)
{
	int rc;
	do {
		rc = next_line(r);
		if (rc <= 0) {
			r->done = 1;
			return rc;
		}
		r->lineno++;
	} while (strspn((char *)r->line.data, " \t\r") == r->line.len);
	r->nrec++;
	struct jp j;
	struct buf err;
	buf_init(&err);
	jp_init(&j, r->line.data, r->line.len);
	rc = jsonl_sample(r, s, &j, &err);
	buf_release(&j.str);
	if (rc)
		rd_error(r, "%s: line %ld: %s", rec_where(r), r->lineno, (char *)err.data);
	buf_release(&err);
	return rc ? -1 : 1;
}

const char *rec_key_unfit(const char *key)
{
	size_t n = strlen(key);
	if (n == 0)
		return "empty";
	if (n > REC_KEY_MAX)
		return "longer than 200 bytes";
	for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
		if (*c == '/' || *c == '.')
			return "holds '/' or '.' (a key names files: KEY.FIELD)";
		if (*c < 0x20 || *c == 0x7f)
			return "holds a control character";
	}
	return NULL;
}

/* rec_read with the message of a bad record in r->msg instead of printed. */
static int reader_next(struct rec_reader *r, struct sample *s)
{
	int rc = 0;
	const char *bad;
	sample_clear(s);
	set_key(r, NULL, 0);
	if (r->done)
		return 0;
	switch (r->fmt) {
	case REC_MSGPACK: rc = mp_read(r, s); break;
	case REC_TAR: rc = tar_read(r, s); break;
	case REC_JSONL: rc = jsonl_read(r, s); break;
	}
	/* The record was read whole: the next one starts clean. */
	if (rc > 0 && (bad = rec_key_unfit(s->key)))
		return rd_error(r, "%s: __key__ %s", rec_where(r), bad);
	return rc;
}

int rec_read(struct rec_reader *r, struct sample *s)
{
	int rc = reader_next(r, s);
	if (rc < 0)
		error("%s", (const char *)r->msg.data);
	return rc;
}

/* ---- keys seen: the uniqueness of keys in a stream ---- */

struct rec_key_seen {
	uint64_t h[2];  /* two 64-bit hashes of the key; {0, 0}: a free slot */
	long rec;       /* where it was first seen */
	int file;
};

/* 128 bits of KEY: FNV-1a from two bases, each through splitmix64's
 * finalizer. Two keys that differ collide with probability about 2^-128
 * per pair: for a stream of 10^9 keys, below 10^-20. */
static void key_hash(const char *key, uint64_t h[2])
{
	uint64_t a = 1469598103934665603ull, b = 0x9e3779b97f4a7c15ull;
	for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
		a = (a ^ *c) * 1099511628211ull;
		b = (b ^ *c) * 0x100000001b3ull + 0x632be59bd9b4e019ull;
	}
	for (int i = 0; i < 2; i++) {
		uint64_t z = i ? b : a;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		h[i] = (z ^ (z >> 31)) | (i == 0); /* never {0, 0} */
	}
}

void rec_keys_init(struct rec_keys *k)
{
	memset(k, 0, sizeof *k);
}

void rec_keys_release(struct rec_keys *k)
{
	free(k->slot);
	memset(k, 0, sizeof *k);
}

static struct rec_key_seen *keys_find(struct rec_key_seen *slot, size_t cap, const uint64_t h[2])
{
	size_t i = (size_t)h[1] & (cap - 1);
	while ((slot[i].h[0] || slot[i].h[1]) && (slot[i].h[0] != h[0] || slot[i].h[1] != h[1]))
		i = (i + 1) & (cap - 1);
	return &slot[i];
}

int rec_keys_add(struct rec_keys *k, const char *key, int file, long rec, int *was_file,
		 long *was_rec)
{
	uint64_t h[2];
	if (4 * (k->n + 1) > 3 * k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 1024;
		struct rec_key_seen *slot = xcalloc(cap, sizeof *slot);
		for (size_t i = 0; i < k->cap; i++)
			if (k->slot[i].h[0] || k->slot[i].h[1])
				*keys_find(slot, cap, k->slot[i].h) = k->slot[i];
		free(k->slot);
		k->slot = slot;
		k->cap = cap;
	}
	key_hash(key, h);
	struct rec_key_seen *e = keys_find(k->slot, k->cap, h);
	if (e->h[0] || e->h[1]) {
		*was_file = e->file;
		*was_rec = e->rec;
		return 1;
	}
	e->h[0] = h[0];
	e->h[1] = h[1];
	e->file = file;
	e->rec = rec;
	k->n++;
	return 0;
}

/* ---- the input loop of every tool ---- */

void rec_input_init(struct rec_input *in, char *const *files, int n, int keep)
{
	memset(in, 0, sizeof *in);
	in->files = files;
	in->nfiles = n;
	in->keep = keep;
	rec_keys_init(&in->keys);
}

static const char *input_name(const struct rec_input *in, int i)
{
	return in->nfiles && strcmp(in->files[i], "-") ? in->files[i] : "stdin";
}

/* The reader is closed and the keys let go as soon as the loop is over:
 * the training tools keep IN until their closing report. */
static void input_end(struct rec_input *in)
{
	rec_close(in->r);
	in->r = NULL;
	in->next = in->nfiles ? in->nfiles : 1;
	rec_keys_release(&in->keys);
}

/* A bad input or record: skipped and counted (-k) or the end of the loop. */
static int input_bad(struct rec_input *in, const char *msg, long *count)
{
	(*count)++;
	if (in->keep) {
		warn("%s (skipped)", msg);
		return 0;
	}
	error("%s", msg);
	in->failed = 1;
	input_end(in);
	return -1;
}

int rec_input_next(struct rec_input *in, struct sample *s)
{
	int n = in->nfiles ? in->nfiles : 1;
	for (;;) {
		if (in->failed)
			return -1;
		if (!in->r) {
			char *why;
			if (in->next >= n) {
				input_end(in);
				return 0;
			}
			in->cur = in->next++;
			in->r = reader_open(in->nfiles ? in->files[in->cur] : NULL, &why);
			if (!in->r) {
				int rc = input_bad(in, why, &in->unread);
				free(why);
				if (rc < 0)
					return -1;
			}
			continue;
		}
		int rc = reader_next(in->r, s);
		if (rc == 0) {
			rec_close(in->r);
			in->r = NULL;
			continue;
		}
		in->read++;
		int file;
		long rec;
		if (rc > 0 && rec_keys_add(&in->keys, s->key, in->cur, in->r->nrec, &file, &rec)) {
			if (file == in->cur)
				rd_error(in->r, "%s: key already used by record %ld", rec_where(in->r), rec);
			else
				rd_error(in->r, "%s: key already used by %s: record %ld", rec_where(in->r),
					 input_name(in, file), rec);
			rc = -1;
		}
		if (rc > 0)
			return 1;
		if (input_bad(in, (const char *)in->r->msg.data, &in->skipped) < 0)
			return -1;
	}
}

const char *rec_input_where(const struct rec_input *in)
{
	return in->r ? rec_where(in->r) : "";
}

int rec_input_refuse_at(struct rec_input *in, const char *where, const char *why)
{
	in->skipped++;
	if (in->keep) {
		if (why)
			warn("%s: %s (skipped)", where, why);
		return 0;
	}
	if (why)
		error("%s: %s", where, why);
	in->failed = 1;
	input_end(in);
	return -1;
}

int rec_input_refuse(struct rec_input *in, const char *why)
{
	return rec_input_refuse_at(in, rec_input_where(in), why);
}

int rec_input_each(struct rec_input *in, int (*add)(void *ctx, struct sample *s, const char **why),
		   void *ctx)
{
	struct sample s;
	int rc;
	sample_init(&s);
	while ((rc = rec_input_next(in, &s)) > 0) {
		const char *why = NULL;
		if (add(ctx, &s, &why) < 0 && rec_input_refuse(in, why) < 0) {
			rc = -1;
			break;
		}
	}
	sample_release(&s);
	return rc;
}

int rec_input_release(struct rec_input *in)
{
	input_end(in);
	/* Without -k the run stopped at the bad input, which said so. */
	int skipped = in->keep && report_skips(in->skipped, in->read, in->unread);
	return in->failed ? 1 : skipped ? EXIT_SKIPPED : 0;
}

/* ---- writer ---- */

struct rec_writer {
	enum rec_format fmt;
	int flags;
	FILE *f;                 /* stdout or o.f */
	struct out_file o;       /* by path: the file (util's, o.f NULL for stdout) */
	char *name;
	long nrec;
	int failed;
	struct buf out;          /* one whole record before it goes out */
	struct archive *ar;
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static la_ssize_t tar_write_cb(struct archive *a, void *ud, const void *p, size_t n)
{
	(void)a;
	buf_add(&((struct rec_writer *)ud)->out, p, n);
	return (la_ssize_t)n;
}

int rec_format_parse(const char *name)
{
	if (!strcmp(name, "msgpack"))
		return REC_MSGPACK;
	if (!strcmp(name, "tar"))
		return REC_TAR;
	if (!strcmp(name, "jsonl") || !strcmp(name, "json"))
		return REC_JSONL;
	return -1;
}

struct rec_writer *rec_writer_open(const char *path, enum rec_format fmt, int flags)
{
	struct rec_writer *w = xcalloc(1, sizeof *w);
	w->fmt = fmt;
	w->flags = flags;
	buf_init(&w->out);
	if (!path || !strcmp(path, "-")) {
		/* Binary bytes on a screen help no one and can garble it (gzip
		 * and zstd refuse too). */
		if (fmt != REC_JSONL && isatty(STDOUT_FILENO)) {
			error("stdout is a terminal: refusing to write %s there (redirect it, give -o FILE, or pipe it to seva-cat --jsonl)",
			      fmt == REC_TAR ? "a tar stream" : "msgpack");
			rec_writer_abort(w);
			return NULL;
		}
		w->f = stdout;
		w->name = xstrdup("stdout");
	} else {
		/* PATH.tmp.PID until the close, removed if the program exits
		 * without one (die() on bad input) or a signal ends it; a
		 * device or fifo written directly */
		w->name = xstrdup(path);
		if (out_open(&w->o, path) < 0) {
			rec_writer_abort(w);
			return NULL;
		}
		w->f = w->o.f;
	}
	if (fmt == REC_MSGPACK) {
		msgpack_sbuffer_init(&w->sb);
		msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
	} else if (fmt == REC_TAR) {
		/* Deterministic bytes: pax only when a name needs it, no
		 * blocking beyond 512-byte records. */
		w->ar = archive_write_new();
		if (archive_write_set_format_pax_restricted(w->ar) != ARCHIVE_OK ||
		    archive_write_add_filter_none(w->ar) != ARCHIVE_OK ||
		    archive_write_set_bytes_per_block(w->ar, 0) != ARCHIVE_OK ||
		    archive_write_open(w->ar, w, NULL, tar_write_cb, NULL) != ARCHIVE_OK) {
			error("%s: %s", w->name, archive_error_string(w->ar));
			rec_writer_abort(w);
			return NULL;
		}
	}
	return w;
}

/* What makes S impossible to write as tar members, or NULL. */
static const char *tar_unfit(const struct sample *s)
{
	for (size_t i = 0; i < s->nfields; i++)
		if (!*s->fields[i].name || strchr(s->fields[i].name, '/'))
			return "a tar field name cannot be empty or hold '/'";
	return NULL;
}

static int put_tar(struct rec_writer *w, const struct sample *s)
{
	struct archive_entry *e = archive_entry_new();
	int rc = 0;
	for (size_t i = 0; i < s->nfields && !rc; i++) {
		const struct field *f = &s->fields[i];
		char *member = xasprintf("%s.%s", s->key, f->name);
		archive_entry_clear(e);
		archive_entry_set_pathname(e, member);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, (la_int64_t)f->len);
		archive_entry_set_mtime(e, 0, 0);
		archive_entry_set_uid(e, 0);
		archive_entry_set_gid(e, 0);
		if (archive_write_header(w->ar, e) < ARCHIVE_WARN ||
			 archive_write_data(w->ar, f->data, f->len) != (la_ssize_t)f->len ||
			 archive_write_finish_entry(w->ar) < ARCHIVE_WARN)
			rc = error("%s: member '%s': %s", w->name, member, archive_error_string(w->ar));
		free(member);
	}
	archive_entry_free(e);
	return rc;
}

static int put_msgpack(struct rec_writer *w, const struct sample *s)
{
	msgpack_packer *pk = &w->pk;
	msgpack_sbuffer_clear(&w->sb);
	msgpack_pack_map(pk, s->nfields + 1);
	msgpack_pack_str(pk, 7);
	msgpack_pack_str_body(pk, "__key__", 7);
	msgpack_pack_str(pk, strlen(s->key));
	msgpack_pack_str_body(pk, s->key, strlen(s->key));
	for (size_t i = 0; i < s->nfields; i++) {
		const struct field *f = &s->fields[i];
		size_t n = strlen(f->name);
		int jrc;
		msgpack_pack_str(pk, n);
		msgpack_pack_str_body(pk, f->name, n);
		if (f->type == FIELD_TEXT) {
			msgpack_pack_str(pk, f->len);
			msgpack_pack_str_body(pk, f->data, f->len);
		} else if (f->type == FIELD_BYTES) {
			msgpack_pack_bin(pk, f->len);
			msgpack_pack_bin_body(pk, f->data, f->len);
		} else if ((jrc = json_pack(f->data, f->len, NULL)) ||
			   (jrc = json_pack(f->data, f->len, pk))) {
			return error("%s: record %ld (key %s): field '%s': %s", w->name, w->nrec,
				     s->key, f->name, json_why(jrc));
		}
	}
	buf_add(&w->out, w->sb.data, w->sb.size);
	return 0;
}

static int put_jsonl(struct rec_writer *w, const struct sample *s)
{
	struct buf *b = &w->out;
	buf_addstr(b, "{\"__key__\":");
	rec_json_quote(b, s->key, strlen(s->key));
	for (size_t i = 0; i < s->nfields; i++) {
		const struct field *f = &s->fields[i];
		buf_add(b, ",", 1);
		rec_json_quote(b, f->name, strlen(f->name));
		buf_add(b, ":", 1);
		if (f->type == FIELD_TEXT) {
			rec_json_quote(b, f->data, f->len);
		} else if (f->type == FIELD_JSON) {
			int jrc = json_pack(f->data, f->len, NULL);
			if (jrc)
				return error("%s: record %ld (key %s): field '%s': %s", w->name,
					     w->nrec, s->key, f->name, json_why(jrc));
			json_minify(b, f->data, f->len);
		} else if (w->flags & REC_BASE64) {
			buf_addstr(b, "{\"base64\":\"");
			base64_encode(b, f->data, f->len);
			buf_addstr(b, "\"}");
		} else {
			char hex[65];
			sha256_hex(f->data, f->len, hex);
			buf_printf(b, "{\"bytes\":%zu,\"sha256\":\"%s\"}", f->len, hex);
		}
	}
	buf_addstr(b, "}\n");
	return 0;
}

static int flush_out(struct rec_writer *w)
{
	if (w->out.len && fwrite(w->out.data, 1, w->out.len, w->f) != w->out.len) {
		w->failed = 1;
		w->out.len = 0;
		error("%s: write error:", w->name);
		if (w->f == stdout)
			stdout_error_reported();
		return -1;
	}
	w->out.len = 0;
	return 0;
}

const char *rec_writer_unfit(const struct rec_writer *w, const struct sample *s)
{
	static _Thread_local char reason[96];
	const char *bad;
	if (!s->key)
		return "no key";
	/* what no reader would take back */
	if ((bad = rec_key_unfit(s->key))) {
		snprintf(reason, sizeof reason, "__key__ %s", bad);
		return reason;
	}
	return w->fmt == REC_TAR ? tar_unfit(s) : NULL;
}

int rec_write(struct rec_writer *w, const struct sample *s)
{
	int rc;
	if (w->failed)
		return -1;
	w->nrec++;
	w->out.len = 0;
	const char *bad = rec_writer_unfit(w, s);
	if (bad) {
		struct buf k;
		buf_init(&k);
		show_key(&k, s->key ? s->key : "");
		error("%s: record %ld (key %s): %s", w->name, w->nrec, (char *)k.data, bad);
		buf_release(&k);
		w->nrec--;
		return -1;
	}
	switch (w->fmt) {
	case REC_TAR: rc = put_tar(w, s); break;
	case REC_JSONL: rc = put_jsonl(w, s); break;
	default: rc = put_msgpack(w, s); break;
	}
	if (rc) {
		/* Nothing of a bad record goes out; a half-written tar entry
		 * leaves the archive unusable. */
		if (w->fmt == REC_TAR)
			w->failed = 1;
		w->out.len = 0;
		w->nrec--;
		return -1;
	}
	return flush_out(w);
}

static void writer_free(struct rec_writer *w)
{
	if (w->ar)
		archive_write_free(w->ar);
	if (w->fmt == REC_MSGPACK)
		msgpack_sbuffer_destroy(&w->sb);
	buf_release(&w->out);
	free(w->name);
	free(w);
}

int rec_writer_close(struct rec_writer *w)
{
	struct out_file held;
	return rec_writer_finish(w, &held) ? -1 : out_publish(&held);
}

int rec_writer_finish(struct rec_writer *w, struct out_file *held)
{
	int rc = w->failed ? -1 : 0;
	if (w->ar && !w->failed) {
		w->out.len = 0;
		/* An empty stream stays empty: no trailer without members. */
		if (archive_write_close(w->ar) != ARCHIVE_OK)
			rc = error("%s: %s", w->name, archive_error_string(w->ar));
		else if (w->nrec > 0 || w->o.tmp)
			rc = flush_out(w);
	}
	if (!rc && fflush(w->f) != 0)
		rc = error("%s: write error:", w->name);
	if (!rc && ferror(w->f))
		rc = error("%s: write error", w->name);
	if (rc && w->f == stdout)
		stdout_error_reported();
	if (w->o.f) {
		if (rc)
			out_abort(&w->o);
		else
			rc = out_finish(&w->o);
	}
	*held = w->o; /* zeroed by out_abort, by a failed out_finish, or never opened */
	writer_free(w);
	return rc;
}

int rec_writer_failed(const struct rec_writer *w)
{
	return w->failed;
}

int rec_writer_end(struct rec_writer *w, int failed)
{
	if (!w)
		return failed ? 1 : 0;
	int out_failed = rec_writer_failed(w);
	if (failed) {
		rec_writer_abort(w);
		return out_failed ? 2 : 1;
	}
	return rec_writer_close(w) ? 2 : 0;
}

void rec_writer_abort(struct rec_writer *w)
{
	if (!w)
		return;
	out_abort(&w->o);
	writer_free(w);
}
