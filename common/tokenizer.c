/* tokenizer — Hugging Face tokenizer.json in C: the pipeline of the Rust
 * `tokenizers` crate (added tokens → normalizer → pre-tokenizer → model →
 * post-processor; decoders back), with the behaviours its implementation
 * has, since ids must equal its ids. Regexes are the file's own, run
 * through PCRE2; Unicode normalization and case come from utf8proc. */
#include "tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include "util.h"

/* ---- small containers ---- */

struct ivec {
	int *v;
	int n, cap;
};

static void ivec_push(struct ivec *a, int x)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 64;
		a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
	}
	a->v[a->n++] = x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

/* String → int, open addressing; keys are borrowed (owned by the caller). */
struct smap {
	const char **key;
	uint32_t *klen;
	int *val;
	size_t mask;
};

static void smap_init(struct smap *m, size_t expect)
{
	size_t cap = 16;
	while (cap < 2 * expect + 16)
		cap *= 2;
	m->key = xcalloc(cap, sizeof(*m->key));
	m->klen = xcalloc(cap, sizeof(*m->klen));
	m->val = xcalloc(cap, sizeof(*m->val));
	m->mask = cap - 1;
}

static void smap_release(struct smap *m)
{
	free(m->key);
	free(m->klen);
	free(m->val);
}

/* The map never grows: smap_init sizes it for the number of keys. */
static void smap_put(struct smap *m, const char *k, size_t n, int v)
{
	size_t i = hash_bytes(k, n) & m->mask;
	while (m->key[i] && !(m->klen[i] == n && !memcmp(m->key[i], k, n)))
		i = (i + 1) & m->mask;
	m->key[i] = k;
	m->klen[i] = (uint32_t)n;
	m->val[i] = v;
}

static int smap_get(const struct smap *m, const char *k, size_t n)
{
	size_t i = hash_bytes(k, n) & m->mask;
	while (m->key[i]) {
		if (m->klen[i] == n && !memcmp(m->key[i], k, n))
			return m->val[i];
		i = (i + 1) & m->mask;
	}
	return -1;
}

/* (left id, right id) → (rank, merged id) for the BPE merges. */
struct pmap {
	uint64_t *key; /* (a << 32 | b) + 1, 0 = empty */
	int *rank, *id;
	size_t mask;
};

static void pmap_init(struct pmap *m, size_t expect)
{
	size_t cap = 16;
	while (cap < 2 * expect + 16)
		cap *= 2;
	m->key = xcalloc(cap, sizeof(*m->key));
	m->rank = xcalloc(cap, sizeof(*m->rank));
	m->id = xcalloc(cap, sizeof(*m->id));
	m->mask = cap - 1;
}

static void pmap_release(struct pmap *m)
{
	free(m->key);
	free(m->rank);
	free(m->id);
}

static void pmap_put(struct pmap *m, int a, int b, int rank, int id)
{
	uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	size_t i = hash_u64(k) & m->mask;
	while (m->key[i] && m->key[i] != k)
		i = (i + 1) & m->mask;
	m->key[i] = k;
	m->rank[i] = rank;
	m->id[i] = id;
}

/* Rank of the merge of (a, b), INT_MAX if none; *id gets the merged token. */
static int pmap_get(const struct pmap *m, int a, int b, int *id)
{
	if (!m->key)
		return INT_MAX;
	uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	size_t i = hash_u64(k) & m->mask;
	while (m->key[i]) {
		if (m->key[i] == k) {
			*id = m->id[i];
			return m->rank[i];
		}
		i = (i + 1) & m->mask;
	}
	return INT_MAX;
}

/* ---- UTF-8 and character classes (Rust's char predicates) ---- */

/* Length of the UTF-8 sequence at s (valid input assumed), and its code point. */
static int utf8_next(const char *s, size_t n, int32_t *cp)
{
	utf8proc_int32_t c;
	utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
	if (k <= 0) {
		*cp = (unsigned char)*s;
		return 1;
	}
	*cp = c;
	return (int)k;
}

/* Offset of the first invalid byte, or -1 if S is valid UTF-8. */
static long utf8_invalid(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		utf8proc_int32_t c;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
						      (utf8proc_ssize_t)(n - i), &c);
		if (k <= 0)
			return (long)i;
		i += (size_t)k;
	}
	return -1;
}

static int is_ws(int32_t c)
{
	return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

static int is_numeric(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static int is_word_char(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return c == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}

static int is_punct(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	if (c < 128)
		return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
		       (c >= 123 && c <= 126);
	return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* ---- patterns: a literal or a PCRE2 regex, matched as Rust's find_iter ---- */

struct pattern {
	pcre2_code *re;
	char *lit;
	size_t litlen;
	int (*pred)(int32_t); /* one-character matches */
};

static int pattern_regex(struct pattern *p, const char *re, const char *where)
{
	int err;
	PCRE2_SIZE off;
	memset(p, 0, sizeof(*p));
	p->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
			      &off, NULL);
	if (!p->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof(msg));
		return error("%s: regex at offset %zu: %s", where, (size_t)off, (char *)msg);
	}
	pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
	return 0;
}

static void pattern_release(struct pattern *p)
{
	if (p->re)
		pcre2_code_free(p->re);
	free(p->lit);
}

/* Reads {"String": s} or {"Regex": r}. */
static int pattern_json(struct pattern *p, const cJSON *j, const char *where)
{
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
	memset(p, 0, sizeof(*p));
	if (cJSON_IsString(s)) {
		p->lit = xstrdup(s->valuestring);
		p->litlen = strlen(p->lit);
		return 0;
	}
	if (cJSON_IsString(r))
		return pattern_regex(p, r->valuestring, where);
	return error("%s: pattern: want {\"String\": ...} or {\"Regex\": ...}", where);
}

/* A span of a piece, and whether it is a match of the pattern. */
struct span {
	size_t s, e;
	int m;
};

struct spans {
	struct span *v;
	int n, cap;
};

static void spans_push(struct spans *a, size_t s, size_t e, int m)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 32;
		a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
	}
	a->v[a->n++] = (struct span){ s, e, m };
}

/* Per-call scratch, so that a tokenizer can be shared by threads. */
struct ctx {
	pcre2_match_data *md;
	struct spans sp;
};

/* Splits S into matched and unmatched spans that cover it, as the Rust
 * crate's Pattern::find_matches does. */
static void find_spans(struct ctx *cx, const struct pattern *p, const char *s, size_t n)
{
	struct spans *out = &cx->sp;
	size_t prev = 0;
	out->n = 0;
	if (n == 0) {
		spans_push(out, 0, 0, 0);
		return;
	}
	if (p->pred) {
		size_t i = 0;
		while (i < n) {
			int32_t c;
			int k = utf8_next(s + i, n - i, &c);
			if (p->pred(c)) {
				if (prev < i)
					spans_push(out, prev, i, 0);
				spans_push(out, i, i + k, 1);
				prev = i + k;
			}
			i += k;
		}
	} else if (p->lit) {
		const char *q = s;
		if (p->litlen)
			while ((q = memmem(q, n - (size_t)(q - s), p->lit, p->litlen))) {
				size_t at = (size_t)(q - s);
				if (prev != at)
					spans_push(out, prev, at, 0);
				spans_push(out, at, at + p->litlen, 1);
				prev = at + p->litlen;
				q = s + prev;
			}
	} else {
		size_t at = 0;
		while (at <= n) {
			int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, cx->md, NULL);
			if (rc < 0)
				break;
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(cx->md);
			size_t ms = ov[0], me = ov[1];
			if (me == ms) { /* empty match: step over one character */
				if (ms >= n)
					break;
				int32_t c;
				at = ms + (size_t)utf8_next(s + ms, n - ms, &c);
				continue;
			}
			if (prev != ms)
				spans_push(out, prev, ms, 0);
			spans_push(out, ms, me, 1);
			prev = at = me;
		}
	}
	if (prev != n)
		spans_push(out, prev, n, 0);
}

/* ---- the pipeline's parts, read from JSON ---- */

enum step_type {
	/* normalizers */
	N_SEQUENCE, N_PREPEND, N_REPLACE, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWERCASE, N_STRIP,
	N_STRIP_ACCENTS,
	/* pre-tokenizers */
	P_SEQUENCE, P_BYTELEVEL, P_SPLIT, P_METASPACE, P_WHITESPACE, P_WHITESPACE_SPLIT, P_DIGITS,
	P_PUNCTUATION,
	/* decoders */
	D_SEQUENCE, D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_METASPACE, D_BPE,
};

enum behavior { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum prepend_scheme { PS_ALWAYS, PS_FIRST, PS_NEVER };

struct step {
	enum step_type type;
	struct step *sub;
	int nsub;
	struct pattern pat;
	char *content;     /* Replace content, Prepend text, Metaspace replacement, Strip char, BPE suffix */
	enum behavior behavior;
	int invert;
	int add_prefix_space, use_regex; /* ByteLevel */
	int scheme, split;               /* Metaspace */
	int left, right;                 /* Strip: flags (normalizer) or counts (decoder) */
};

static void step_release(struct step *st)
{
	for (int i = 0; i < st->nsub; i++)
		step_release(&st->sub[i]);
	free(st->sub);
	pattern_release(&st->pat);
	free(st->content);
}

static const char *jstr(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A boolean field; DEF when absent. */
static int jbool(const cJSON *j, const char *key, int def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	if (cJSON_IsBool(v))
		return cJSON_IsTrue(v);
	if (cJSON_IsNumber(v))
		return v->valueint != 0;
	return def;
}

struct tokenizer {
	char *path;
	int is_bpe;                  /* else WordLevel */
	/* model vocabulary */
	char **mtok;                 /* id → token, NULL for holes; [0, nmtok) */
	int nmtok;
	struct smap vocab;
	struct pmap merges;
	int unk, byte_fallback, fuse_unk, ignore_merges;
	char *prefix, *suffix;       /* continuing_subword_prefix, end_of_word_suffix */
	int byte_id[256];            /* "<0xXX>" tokens, -1 if absent */
	/* added tokens */
	struct added {
		char *content;
		size_t len;
		int id, special, lstrip, rstrip, single_word, normalized;
	} *added;
	int nadded;
	int *added_by_byte;          /* added indices grouped by first byte, */
	int added_first[257];        /* group b at [added_first[b], added_first[b + 1]) */
	int *added_of_id;            /* id → index in added, -1; [0, nid) */
	struct smap added_map;
	int nid;                     /* 1 + the largest id */
	/* pipeline */
	struct step *norm, *pretok, *dec;
	struct pattern ws_re, gpt2_re;
	int *pre, npre, *post, npost; /* post-processor's special ids around $A */
	int bos, eos;
	int cleanup;                 /* transformers' clean_up_tokenization on decode */
};

static int step_json(struct tokenizer *t, struct step *st, const cJSON *j, int kind,
		     const char *where);

static int steps_json(struct tokenizer *t, struct step *st, const cJSON *arr, int kind,
		      const char *where)
{
	if (!cJSON_IsArray(arr))
		return error("%s: want an array", where);
	st->nsub = cJSON_GetArraySize(arr);
	st->sub = xcalloc((size_t)st->nsub, sizeof(*st->sub));
	int i = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, arr) {
		char *w = xasprintf("%s[%d]", where, i);
		int rc = step_json(t, &st->sub[i++], e, kind, w);
		free(w);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int behavior_json(const cJSON *j, enum behavior *b, const char *where)
{
	static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious",
				       "MergedWithNext", "Contiguous" };
	const char *s = jstr(j, "behavior");
	if (!s)
		return error("%s: missing \"behavior\"", where);
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (!strcmp(s, names[i])) {
			*b = (enum behavior)i;
			return 0;
		}
	return error("%s: unknown behavior '%s'", where, s);
}

/* KIND: 'n' normalizer, 'p' pre-tokenizer, 'd' decoder. */
static int step_json(struct tokenizer *t, struct step *st, const cJSON *j, int kind,
		     const char *where)
{
	const char *type = jstr(j, "type");
	memset(st, 0, sizeof(*st));
	if (!type)
		return error("%s: missing \"type\"", where);
	if (kind == 'n') {
		if (!strcmp(type, "Sequence")) {
			st->type = N_SEQUENCE;
			char *w = xasprintf("%s.normalizers", where);
			int rc = steps_json(t, st, cJSON_GetObjectItemCaseSensitive(j, "normalizers"), kind, w);
			free(w);
			return rc;
		} else if (!strcmp(type, "Prepend")) {
			st->type = N_PREPEND;
			const char *p = jstr(j, "prepend");
			if (!p)
				return error("%s: Prepend without \"prepend\"", where);
			st->content = xstrdup(p);
		} else if (!strcmp(type, "Replace")) {
			st->type = N_REPLACE;
			const char *c = jstr(j, "content");
			if (!c)
				return error("%s: Replace without \"content\"", where);
			st->content = xstrdup(c);
			return pattern_json(&st->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), where);
		} else if (!strcmp(type, "NFC")) {
			st->type = N_NFC;
		} else if (!strcmp(type, "NFD")) {
			st->type = N_NFD;
		} else if (!strcmp(type, "NFKC")) {
			st->type = N_NFKC;
		} else if (!strcmp(type, "NFKD")) {
			st->type = N_NFKD;
		} else if (!strcmp(type, "Lowercase")) {
			st->type = N_LOWERCASE;
		} else if (!strcmp(type, "Strip")) {
			st->type = N_STRIP;
			st->left = jbool(j, "strip_left", 1);
			st->right = jbool(j, "strip_right", 1);
		} else if (!strcmp(type, "StripAccents")) {
			st->type = N_STRIP_ACCENTS;
		} else {
			return error("%s: unsupported normalizer '%s'", where, type);
		}
		return 0;
	}
	if (kind == 'p') {
		if (!strcmp(type, "Sequence")) {
			st->type = P_SEQUENCE;
			char *w = xasprintf("%s.pretokenizers", where);
			int rc = steps_json(t, st, cJSON_GetObjectItemCaseSensitive(j, "pretokenizers"), kind, w);
			free(w);
			return rc;
		} else if (!strcmp(type, "ByteLevel")) {
			st->type = P_BYTELEVEL;
			st->add_prefix_space = jbool(j, "add_prefix_space", 1);
			st->use_regex = jbool(j, "use_regex", 1);
		} else if (!strcmp(type, "Split")) {
			st->type = P_SPLIT;
			st->invert = jbool(j, "invert", 0);
			if (behavior_json(j, &st->behavior, where) < 0)
				return -1;
			return pattern_json(&st->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), where);
		} else if (!strcmp(type, "Metaspace")) {
			st->type = P_METASPACE;
			const char *r = jstr(j, "replacement");
			const char *ps = jstr(j, "prepend_scheme");
			st->content = xstrdup(r ? r : "\xe2\x96\x81");
			st->split = jbool(j, "split", 1);
			if (ps)
				st->scheme = !strcmp(ps, "first") ? PS_FIRST : !strcmp(ps, "never") ? PS_NEVER : PS_ALWAYS;
			else
				st->scheme = jbool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
			st->pat.lit = xstrdup(st->content);
			st->pat.litlen = strlen(st->content);
		} else if (!strcmp(type, "Whitespace")) {
			st->type = P_WHITESPACE;
		} else if (!strcmp(type, "WhitespaceSplit")) {
			st->type = P_WHITESPACE_SPLIT;
			st->pat.pred = is_ws;
		} else if (!strcmp(type, "Digits")) {
			st->type = P_DIGITS;
			st->behavior = jbool(j, "individual_digits", 0) ? B_ISOLATED : B_CONTIGUOUS;
			st->pat.pred = is_numeric;
		} else if (!strcmp(type, "Punctuation")) {
			st->type = P_PUNCTUATION;
			st->behavior = B_ISOLATED;
			if (cJSON_GetObjectItemCaseSensitive(j, "behavior") &&
			    behavior_json(j, &st->behavior, where) < 0)
				return -1;
			st->pat.pred = is_punct;
		} else {
			return error("%s: unsupported pre-tokenizer '%s'", where, type);
		}
		return 0;
	}
	if (!strcmp(type, "Sequence")) {
		st->type = D_SEQUENCE;
		char *w = xasprintf("%s.decoders", where);
		int rc = steps_json(t, st, cJSON_GetObjectItemCaseSensitive(j, "decoders"), kind, w);
		free(w);
		return rc;
	} else if (!strcmp(type, "ByteLevel")) {
		st->type = D_BYTELEVEL;
	} else if (!strcmp(type, "Replace")) {
		st->type = D_REPLACE;
		const char *c = jstr(j, "content");
		if (!c)
			return error("%s: Replace without \"content\"", where);
		st->content = xstrdup(c);
		return pattern_json(&st->pat, cJSON_GetObjectItemCaseSensitive(j, "pattern"), where);
	} else if (!strcmp(type, "ByteFallback")) {
		st->type = D_BYTEFALLBACK;
	} else if (!strcmp(type, "Fuse")) {
		st->type = D_FUSE;
	} else if (!strcmp(type, "Strip")) {
		st->type = D_STRIP;
		const char *c = jstr(j, "content");
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start");
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
		st->content = xstrdup(c ? c : " ");
		st->left = cJSON_IsNumber(a) ? a->valueint : 0;
		st->right = cJSON_IsNumber(b) ? b->valueint : 0;
	} else if (!strcmp(type, "Metaspace")) {
		st->type = D_METASPACE;
		const char *r = jstr(j, "replacement");
		const char *ps = jstr(j, "prepend_scheme");
		st->content = xstrdup(r ? r : "\xe2\x96\x81");
		if (ps)
			st->scheme = !strcmp(ps, "never") ? PS_NEVER : !strcmp(ps, "first") ? PS_FIRST : PS_ALWAYS;
		else
			st->scheme = jbool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
	} else if (!strcmp(type, "BPEDecoder")) {
		st->type = D_BPE;
		const char *s = jstr(j, "suffix");
		st->content = xstrdup(s ? s : "</w>");
	} else {
		return error("%s: unsupported decoder '%s'", where, type);
	}
	return 0;
}

/* ---- words: the pieces a pre-tokenizer works on ---- */

struct words {
	struct buf b;      /* the pieces' bytes, back to back */
	size_t *off, *len;
	char *first;       /* piece starts at offset 0 of the original text */
	int n, cap;
};

static void words_add(struct words *w, const char *s, size_t n, int first)
{
	if (n == 0)
		return; /* the crate drops empty pieces */
	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 32;
		w->off = xrealloc(w->off, (size_t)w->cap * sizeof(*w->off));
		w->len = xrealloc(w->len, (size_t)w->cap * sizeof(*w->len));
		w->first = xrealloc(w->first, (size_t)w->cap);
	}
	w->off[w->n] = w->b.len;
	w->len[w->n] = n;
	w->first[w->n] = (char)first;
	w->n++;
	buf_add(&w->b, s, n);
}

static void words_release(struct words *w)
{
	buf_release(&w->b);
	free(w->off);
	free(w->len);
	free(w->first);
	memset(w, 0, sizeof(*w));
}

static void words_swap(struct words *a, struct words *b)
{
	struct words t = *a;
	*a = *b;
	*b = t;
}

/* Adds the pieces of S that BEHAVIOR keeps, from the spans in cx->sp
 * (SplitDelimiterBehavior of the crate). */
static void split_spans(struct ctx *cx, struct words *out, const char *s, enum behavior bh,
			int invert, int first)
{
	struct spans *sp = &cx->sp;
	if (invert)
		for (int i = 0; i < sp->n; i++)
			sp->v[i].m = !sp->v[i].m;
	int n = 0, prev = 0;
	switch (bh) {
	case B_REMOVED:
		for (int i = 0; i < sp->n; i++)
			if (!sp->v[i].m)
				sp->v[n++] = sp->v[i];
		break;
	case B_ISOLATED:
		n = sp->n;
		break;
	case B_CONTIGUOUS:
		for (int i = 0; i < sp->n; i++) {
			if (n && sp->v[i].m == prev)
				sp->v[n - 1].e = sp->v[i].e;
			else
				sp->v[n++] = sp->v[i];
			prev = sp->v[i].m;
		}
		break;
	case B_MERGED_PREV:
		for (int i = 0; i < sp->n; i++) {
			int m = sp->v[i].m;
			if (n && m && !prev)
				sp->v[n - 1].e = sp->v[i].e;
			else
				sp->v[n++] = sp->v[i];
			prev = m;
		}
		break;
	case B_MERGED_NEXT: {
		/* right to left, then the kept spans are at the end */
		int k = sp->n;
		for (int i = sp->n - 1; i >= 0; i--) {
			int m = sp->v[i].m;
			if (k < sp->n && m && !prev)
				sp->v[k].s = sp->v[i].s;
			else
				sp->v[--k] = sp->v[i];
			prev = m;
		}
		memmove(sp->v, sp->v + k, (size_t)(sp->n - k) * sizeof(*sp->v));
		n = sp->n - k;
		break;
	}
	}
	for (int i = 0; i < n; i++)
		words_add(out, s + sp->v[i].s, sp->v[i].e - sp->v[i].s, first && sp->v[i].s == 0);
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
 * rest for U+0100 onwards, in byte order. */
static int32_t byte_char[256];
static int char_byte[512]; /* code point → byte, -1 */

static void byte_tables(void)
{
	if (byte_char['!'])
		return;
	int n = 0;
	for (int i = 0; i < 512; i++)
		char_byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
			byte_char[b] = b;
		else
			byte_char[b] = 256 + n++;
		char_byte[byte_char[b]] = b;
	}
}

static void put_utf8(struct buf *b, int32_t c)
{
	utf8proc_uint8_t tmp[4];
	utf8proc_ssize_t k = utf8proc_encode_char(c, tmp);
	buf_add(b, tmp, (size_t)k);
}

static const char GPT2_RE[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* The Whitespace pre-tokenizer's \\w+|[^\\w\\s]+ with Rust regex's classes:
 * its \\w also takes marks and joiners (PCRE2's does not), its \\s is White_Space. */
#define RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
static const char WHITESPACE_RE[] = "[" RUST_W "]+|[^" RUST_W "\\p{White_Space}]+";

static void pretokenize(const struct tokenizer *t, const struct step *st, struct ctx *cx,
			struct words *w)
{
	struct words out = { 0 };
	struct buf tmp;
	const char *rep = st->content;
	size_t rlen = rep ? strlen(rep) : 0;

	if (st->type == P_SEQUENCE) {
		for (int i = 0; i < st->nsub; i++)
			pretokenize(t, &st->sub[i], cx, w);
		return;
	}
	buf_init(&tmp);
	for (int i = 0; i < w->n; i++) {
		const char *s = (const char *)w->b.data + w->off[i];
		size_t n = w->len[i];
		int first = w->first[i];
		switch (st->type) {
		case P_BYTELEVEL: {
			tmp.len = 0;
			if (st->add_prefix_space && s[0] != ' ')
				buf_add(&tmp, " ", 1);
			buf_add(&tmp, s, n);
			struct words parts = { 0 };
			if (st->use_regex) {
				find_spans(cx, &t->gpt2_re, (char *)tmp.data, tmp.len);
				split_spans(cx, &parts, (char *)tmp.data, B_ISOLATED, 0, first);
			} else {
				words_add(&parts, (char *)tmp.data, tmp.len, first);
			}
			struct buf mapped;
			buf_init(&mapped);
			for (int k = 0; k < parts.n; k++) {
				mapped.len = 0;
				const unsigned char *p = parts.b.data + parts.off[k];
				for (size_t q = 0; q < parts.len[k]; q++)
					put_utf8(&mapped, byte_char[p[q]]);
				words_add(&out, (char *)mapped.data, mapped.len, parts.first[k]);
			}
			buf_release(&mapped);
			words_release(&parts);
			break;
		}
		case P_SPLIT:
			find_spans(cx, &st->pat, s, n);
			split_spans(cx, &out, s, st->behavior, st->invert, first);
			break;
		case P_METASPACE:
			/* spaces become the replacement first; then the prepend
			 * unless the piece already starts with one */
			tmp.len = 0;
			if ((st->scheme == PS_ALWAYS || (st->scheme == PS_FIRST && first)) && n > 0 &&
			    s[0] != ' ' && !(n >= rlen && !memcmp(s, rep, rlen)))
				buf_add(&tmp, rep, rlen);
			for (size_t q = 0; q < n; q++) {
				if (s[q] == ' ')
					buf_add(&tmp, rep, rlen);
				else
					buf_add(&tmp, s + q, 1);
			}
			if (st->split) {
				find_spans(cx, &st->pat, (char *)tmp.data, tmp.len);
				split_spans(cx, &out, (char *)tmp.data, B_MERGED_NEXT, 0, first);
			} else {
				words_add(&out, (char *)tmp.data, tmp.len, first);
			}
			break;
		case P_WHITESPACE:
			find_spans(cx, &t->ws_re, s, n);
			split_spans(cx, &out, s, B_REMOVED, 1, first);
			break;
		case P_WHITESPACE_SPLIT:
			find_spans(cx, &st->pat, s, n);
			split_spans(cx, &out, s, B_REMOVED, 0, first);
			break;
		case P_DIGITS:
		case P_PUNCTUATION:
			find_spans(cx, &st->pat, s, n);
			split_spans(cx, &out, s, st->behavior, 0, first);
			break;
		default:
			break;
		}
	}
	buf_release(&tmp);
	words_swap(w, &out);
	words_release(&out);
}

/* ---- normalizers: string → string ---- */

static int normalize(const struct step *st, struct ctx *cx, struct buf *s)
{
	struct buf out;
	utf8proc_option_t opt = 0;

	switch (st->type) {
	case N_SEQUENCE:
		for (int i = 0; i < st->nsub; i++)
			if (normalize(&st->sub[i], cx, s) < 0)
				return -1;
		return 0;
	case N_PREPEND:
		if (s->len) {
			buf_init(&out);
			buf_addstr(&out, st->content);
			buf_add(&out, s->data, s->len);
			buf_release(s);
			*s = out;
		}
		return 0;
	case N_REPLACE:
		find_spans(cx, &st->pat, (char *)s->data, s->len);
		buf_init(&out);
		for (int i = 0; i < cx->sp.n; i++) {
			if (cx->sp.v[i].m)
				buf_addstr(&out, st->content);
			else
				buf_add(&out, s->data + cx->sp.v[i].s, cx->sp.v[i].e - cx->sp.v[i].s);
		}
		buf_release(s);
		*s = out;
		return 0;
	case N_NFC:
		opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
		break;
	case N_NFD:
		opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
		break;
	case N_NFKC:
		opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
		break;
	case N_NFKD:
		opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
		break;
	case N_LOWERCASE:
	case N_STRIP_ACCENTS:
		buf_init(&out);
		for (size_t i = 0; i < s->len;) {
			int32_t c;
			i += (size_t)utf8_next((char *)s->data + i, s->len - i, &c);
			if (st->type == N_LOWERCASE)
				put_utf8(&out, utf8proc_tolower(c));
			else if (utf8proc_category(c) != UTF8PROC_CATEGORY_MN)
				put_utf8(&out, c);
		}
		buf_release(s);
		*s = out;
		return 0;
	case N_STRIP: {
		size_t a = 0, b = s->len;
		while (st->left && a < b) {
			int32_t c;
			int k = utf8_next((char *)s->data + a, b - a, &c);
			if (!is_ws(c))
				break;
			a += (size_t)k;
		}
		while (st->right && b > a) {
			size_t k = b - 1;
			while (k > a && (s->data[k] & 0xc0) == 0x80)
				k--;
			int32_t c;
			utf8_next((char *)s->data + k, b - k, &c);
			if (!is_ws(c))
				break;
			b = k;
		}
		memmove(s->data, s->data + a, b - a);
		s->len = b - a;
		s->data[s->len] = 0;
		return 0;
	}
	default:
		return 0;
	}
	utf8proc_uint8_t *r = NULL;
	utf8proc_ssize_t k = utf8proc_map(s->data, (utf8proc_ssize_t)s->len, &r, opt);
	if (k < 0)
		return error("normalizer: %s", utf8proc_errmsg(k));
	s->len = 0;
	buf_add(s, r, (size_t)k);
	free(r);
	return 0;
}

/* ---- models ---- */

/* Appends the BPE tokens of one pre-token word (the crate's merge_word and
 * merge_all: lowest-rank pair first, leftmost among equals). */
static void bpe_word(const struct tokenizer *t, const char *w, size_t n, struct ivec *out)
{
	if (t->ignore_merges) {
		int id = smap_get(&t->vocab, w, n);
		if (id >= 0) {
			ivec_push(out, id);
			return;
		}
	}
	size_t plen = t->prefix ? strlen(t->prefix) : 0, slen = t->suffix ? strlen(t->suffix) : 0;
	/* at most one symbol per byte, prefixes and suffix included */
	size_t cap = n * (1 + plen) + slen + 1;
	int stackbuf[2 * 128];
	int *sym = cap <= 128 ? stackbuf : xmalloc(2 * cap * sizeof(int));
	int *rank = sym + cap; /* scratch: the links of the merge loop */
	int ns = 0;
	int unk = -1; /* a pending unknown (fused when fuse_unk) */
	struct buf tmp;
	buf_init(&tmp);

	for (size_t i = 0; i < n;) {
		int32_t c;
		int k = utf8_next(w + i, n - i, &c);
		const char *piece = w + i;
		size_t plen2 = (size_t)k;
		if ((plen && i > 0) || (slen && i + (size_t)k == n)) {
			tmp.len = 0;
			if (plen && i > 0)
				buf_add(&tmp, t->prefix, plen);
			buf_add(&tmp, w + i, (size_t)k);
			if (slen && i + (size_t)k == n)
				buf_add(&tmp, t->suffix, slen);
			piece = (char *)tmp.data;
			plen2 = tmp.len;
		}
		int id = smap_get(&t->vocab, piece, plen2);
		if (id >= 0) {
			if (unk >= 0) {
				sym[ns++] = unk;
				unk = -1;
			}
			sym[ns++] = id;
		} else {
			int fell = 0;
			if (t->byte_fallback) {
				fell = 1;
				for (size_t q = 0; q < plen2; q++)
					if (t->byte_id[(unsigned char)piece[q]] < 0)
						fell = 0;
				if (fell)
					for (size_t q = 0; q < plen2; q++)
						sym[ns++] = t->byte_id[(unsigned char)piece[q]];
			}
			if (!fell && t->unk >= 0) {
				if (unk >= 0 && !t->fuse_unk)
					sym[ns++] = unk;
				unk = t->unk;
			}
		}
		i += (size_t)k;
	}
	if (unk >= 0)
		sym[ns++] = unk;
	buf_release(&tmp);

	/* Merge the lowest-rank pair, leftmost first, as the crate does: a heap
	 * of (rank, left symbol) entries, stale ones skipped when popped, so a
	 * long SentencePiece text (one word) costs n log n, not n^2. */
	int *next = rank; /* next live symbol, -1 at the end; sym[] is compacted at the end */
	/* each merge pushes at most two entries: 3 ns bounds the heap */
	struct hent { int rank, pos; } hstack[3 * 64 + 1], *heap = hstack;
	int pstack[64], *prev = pstack;
	if (ns > 64) {
		heap = xmalloc((size_t)(3 * ns + 1) * sizeof(*heap));
		prev = xmalloc((size_t)ns * sizeof(int));
	}
	int nh = 0, dummy;
	for (int i = 0; i < ns; i++) {
		next[i] = i + 1 < ns ? i + 1 : -1;
		prev[i] = i - 1;
	}
#define HLESS(a, b) ((a).rank < (b).rank || ((a).rank == (b).rank && (a).pos < (b).pos))
#define HPUSH(r, p)                                                               \
	do {                                                                          \
		int k_ = nh++;                                                        \
		heap[k_] = (struct hent){ (r), (p) };                                 \
		while (k_ > 0 && HLESS(heap[k_], heap[(k_ - 1) / 2])) {               \
			struct hent t_ = heap[k_];                                    \
			heap[k_] = heap[(k_ - 1) / 2];                                \
			heap[(k_ - 1) / 2] = t_;                                      \
			k_ = (k_ - 1) / 2;                                            \
		}                                                                     \
	} while (0)
	for (int i = 0; i + 1 < ns; i++) {
		int r = pmap_get(&t->merges, sym[i], sym[i + 1], &dummy);
		if (r != INT_MAX)
			HPUSH(r, i);
	}
	while (nh > 0) {
		struct hent top = heap[0];
		heap[0] = heap[--nh];
		for (int k = 0;;) { /* sift down */
			int l = 2 * k + 1, m = k;
			if (l < nh && HLESS(heap[l], heap[m]))
				m = l;
			if (l + 1 < nh && HLESS(heap[l + 1], heap[m]))
				m = l + 1;
			if (m == k)
				break;
			struct hent t_ = heap[k];
			heap[k] = heap[m];
			heap[m] = t_;
			k = m;
		}
		int a = top.pos, b = next[a], id;
		if (sym[a] < 0 || b < 0 || pmap_get(&t->merges, sym[a], sym[b], &id) != top.rank)
			continue; /* merged away, or the pair changed since */
		sym[a] = id;
		sym[b] = -1;
		next[a] = next[b];
		if (next[b] >= 0)
			prev[next[b]] = a;
		int r;
		if (prev[a] >= 0 && (r = pmap_get(&t->merges, sym[prev[a]], sym[a], &dummy)) != INT_MAX)
			HPUSH(r, prev[a]);
		if (next[a] >= 0 && (r = pmap_get(&t->merges, sym[a], sym[next[a]], &dummy)) != INT_MAX)
			HPUSH(r, a);
	}
#undef HPUSH
#undef HLESS
	if (heap != hstack) {
		free(heap);
		free(prev);
	}
	int live = 0;
	for (int i = 0; i < ns; i++)
		if (sym[i] >= 0)
			sym[live++] = sym[i];
	ns = live;
	for (int i = 0; i < ns; i++)
		ivec_push(out, sym[i]);
	if (sym != stackbuf)
		free(sym);
}

static int model_word(const struct tokenizer *t, const char *w, size_t n, struct ivec *out)
{
	if (t->is_bpe) {
		bpe_word(t, w, n, out);
		return 0;
	}
	int id = smap_get(&t->vocab, w, n);
	if (id < 0)
		id = t->unk;
	if (id < 0)
		return error("%s: '%.*s' is not in the vocabulary and there is no unk_token",
			     t->path, (int)n, w);
	ivec_push(out, id);
	return 0;
}

/* ---- added tokens ---- */

/* Segments of TEXT: added tokens (id >= 0) and the text between (id -1). */
struct seg {
	size_t s, e;
	int id;
};

struct segs {
	struct seg *v;
	int n, cap;
};

static void segs_push(struct segs *a, size_t s, size_t e, int id)
{
	if (id < 0 && s == e)
		return;
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 16;
		a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
	}
	a->v[a->n++] = (struct seg){ s, e, id };
}

static int ends_with_word(const char *s, size_t n)
{
	if (!n)
		return 0;
	size_t k = n - 1;
	while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
		k--;
	int32_t c;
	utf8_next(s + k, n - k, &c);
	return is_word_char(c);
}

/* Splits S at the added tokens whose `normalized` flag equals NORMALIZED:
 * leftmost, longest first; single_word, lstrip and rstrip as the crate. */
static void split_added(const struct tokenizer *t, const char *s, size_t n, int normalized,
			struct segs *out)
{
	size_t prev = 0, i = 0;
	while (i < n) {
		int best = -1;
		unsigned char c0 = (unsigned char)s[i];
		for (int q = t->added_first[c0]; q < t->added_first[c0 + 1]; q++) {
			int k = t->added_by_byte[q];
			const struct added *a = &t->added[k];
			if (a->normalized != normalized || a->len > n - i || memcmp(a->content, s + i, a->len))
				continue;
			if (best < 0 || a->len > t->added[best].len)
				best = k;
		}
		if (best < 0) {
			i++;
			continue;
		}
		const struct added *a = &t->added[best];
		size_t ms = i, me = i + a->len;
		if (a->single_word) {
			int32_t c = 0;
			int before = ends_with_word(s, ms);
			int after = me < n && (utf8_next(s + me, n - me, &c), is_word_char(c));
			if (before || after) {
				i++;
				continue;
			}
		}
		if (a->lstrip)
			while (ms > prev) {
				size_t k = ms - 1;
				while (k > prev && ((unsigned char)s[k] & 0xc0) == 0x80)
					k--;
				int32_t c;
				utf8_next(s + k, ms - k, &c);
				if (!is_ws(c))
					break;
				ms = k;
			}
		if (a->rstrip)
			while (me < n) {
				int32_t c;
				int k = utf8_next(s + me, n - me, &c);
				if (!is_ws(c))
					break;
				me += (size_t)k;
			}
		segs_push(out, prev, ms, -1);
		segs_push(out, ms, me, a->id);
		prev = i = me;
	}
	segs_push(out, prev, n, -1);
}

/* ---- encode ---- */

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special,
		     int **ids)
{
	struct ivec out = { 0 };
	struct segs raw = { 0 }, norm = { 0 };
	struct words w = { 0 };
	struct ctx cx = { 0 };
	struct buf s;
	int rc = 0;

	*ids = NULL;
	long bad = utf8_invalid(text, len);
	if (bad >= 0)
		return error("tokenizer: invalid UTF-8 at byte %ld", bad);
	cx.md = pcre2_match_data_create(1, NULL);
	buf_init(&s);
	if (add_special)
		for (int i = 0; i < t->npre; i++)
			ivec_push(&out, t->pre[i]);
	split_added(t, text, len, 0, &raw);
	for (int r = 0; r < raw.n && rc == 0; r++) {
		if (raw.v[r].id >= 0) {
			ivec_push(&out, raw.v[r].id);
			continue;
		}
		s.len = 0;
		buf_add(&s, text + raw.v[r].s, raw.v[r].e - raw.v[r].s);
		if (t->norm && normalize(t->norm, &cx, &s) < 0) {
			rc = -1;
			break;
		}
		norm.n = 0;
		split_added(t, (char *)s.data, s.len, 1, &norm);
		for (int k = 0; k < norm.n && rc == 0; k++) {
			if (norm.v[k].id >= 0) {
				ivec_push(&out, norm.v[k].id);
				continue;
			}
			w.n = 0;
			w.b.len = 0;
			words_add(&w, (char *)s.data + norm.v[k].s, norm.v[k].e - norm.v[k].s,
				  raw.v[r].s == 0 && norm.v[k].s == 0);
			if (t->pretok)
				pretokenize(t, t->pretok, &cx, &w);
			for (int q = 0; q < w.n && rc == 0; q++)
				rc = model_word(t, (char *)w.b.data + w.off[q], w.len[q], &out);
		}
	}
	if (add_special)
		for (int i = 0; i < t->npost; i++)
			ivec_push(&out, t->post[i]);
	buf_release(&s);
	words_release(&w);
	free(raw.v);
	free(norm.v);
	free(cx.sp.v);
	pcre2_match_data_free(cx.md);
	if (rc < 0) {
		free(out.v);
		return -1;
	}
	*ids = out.v ? out.v : xmalloc(sizeof(int));
	return out.n;
}

/* ---- decode ---- */

struct strs {
	struct buf *v;
	int n, cap;
};

static void strs_add(struct strs *a, const char *s, size_t n)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 32;
		a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
	}
	buf_init(&a->v[a->n]);
	buf_add(&a->v[a->n], s, n);
	a->n++;
}

static void strs_release(struct strs *a)
{
	for (int i = 0; i < a->n; i++)
		buf_release(&a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* Rust's String::from_utf8_lossy: each maximal invalid prefix of a sequence
 * becomes one U+FFFD. */
static void add_lossy(struct buf *out, const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		size_t need = c < 0x80 ? 0 : (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2
			      : (c >= 0xf0 && c <= 0xf4) ? 3 : 99;
		if (need == 0) {
			buf_add(out, p + i, 1);
			i++;
			continue;
		}
		size_t k = 1;
		if (need != 99)
			for (; k <= need && i + k < n; k++) {
				unsigned char d = p[i + k];
				unsigned char lo = 0x80, hi = 0xbf;
				if (k == 1) {
					if (c == 0xe0) lo = 0xa0;
					if (c == 0xed) hi = 0x9f;
					if (c == 0xf0) lo = 0x90;
					if (c == 0xf4) hi = 0x8f;
				}
				if (d < lo || d > hi)
					break;
			}
		if (need != 99 && k == need + 1) {
			buf_add(out, p + i, k);
		} else {
			buf_addstr(out, "\xef\xbf\xbd");
			k = need == 99 ? 1 : k;
		}
		i += k;
	}
}

static void replace_all(struct buf *out, const char *s, size_t n, const char *pat, size_t plen,
			const char *with)
{
	size_t i = 0;
	while (i < n) {
		if (plen && i + plen <= n && !memcmp(s + i, pat, plen)) {
			buf_addstr(out, with);
			i += plen;
		} else {
			buf_add(out, s + i, 1);
			i++;
		}
	}
}

static void decode_step(const struct step *st, struct ctx *cx, struct strs *a)
{
	struct strs out = { 0 };
	struct buf b;

	switch (st->type) {
	case D_SEQUENCE:
		for (int i = 0; i < st->nsub; i++)
			decode_step(&st->sub[i], cx, a);
		return;
	case D_BYTELEVEL: {
		struct buf bytes;
		buf_init(&bytes);
		buf_init(&b);
		for (int i = 0; i < a->n; i++) {
			size_t start = bytes.len;
			const char *s = (char *)a->v[i].data;
			size_t n = a->v[i].len;
			for (size_t q = 0; q < n;) {
				int32_t c;
				q += (size_t)utf8_next(s + q, n - q, &c);
				if (c < 0 || c >= 512 || char_byte[c] < 0) {
					/* a character outside the alphabet: the token's raw bytes */
					bytes.len = start;
					buf_add(&bytes, s, n);
					break;
				}
				unsigned char ch = (unsigned char)char_byte[c];
				buf_add(&bytes, &ch, 1);
			}
		}
		add_lossy(&b, bytes.data, bytes.len);
		buf_release(&bytes);
		strs_add(&out, (char *)b.data, b.len);
		buf_release(&b);
		break;
	}
	case D_REPLACE:
		for (int i = 0; i < a->n; i++) {
			buf_init(&b);
			if (st->pat.lit) {
				replace_all(&b, (char *)a->v[i].data, a->v[i].len, st->pat.lit, st->pat.litlen,
					    st->content);
			} else {
				find_spans(cx, &st->pat, (char *)a->v[i].data, a->v[i].len);
				for (int k = 0; k < cx->sp.n; k++)
					if (cx->sp.v[k].m)
						buf_addstr(&b, st->content);
					else
						buf_add(&b, a->v[i].data + cx->sp.v[k].s, cx->sp.v[k].e - cx->sp.v[k].s);
			}
			strs_add(&out, (char *)b.data, b.len);
			buf_release(&b);
		}
		break;
	case D_BYTEFALLBACK: {
		struct buf pend;
		buf_init(&pend);
		for (int i = 0; i <= a->n; i++) {
			const char *s = i < a->n ? (char *)a->v[i].data : NULL;
			unsigned v;
			char tail;
			if (s && a->v[i].len == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' &&
			    sscanf(s + 3, "%2x%c", &v, &tail) == 2 && tail == '>') {
				unsigned char ch = (unsigned char)v;
				buf_add(&pend, &ch, 1);
				continue;
			}
			if (pend.len) {
				if (utf8_invalid((char *)pend.data, pend.len) < 0)
					strs_add(&out, (char *)pend.data, pend.len);
				else
					for (size_t k = 0; k < pend.len; k++)
						strs_add(&out, "\xef\xbf\xbd", 3);
				pend.len = 0;
			}
			if (s)
				strs_add(&out, s, a->v[i].len);
		}
		buf_release(&pend);
		break;
	}
	case D_FUSE:
		buf_init(&b);
		for (int i = 0; i < a->n; i++)
			buf_add(&b, a->v[i].data, a->v[i].len);
		strs_add(&out, (char *)b.data, b.len);
		buf_release(&b);
		break;
	case D_STRIP: {
		size_t cl = strlen(st->content);
		for (int i = 0; i < a->n; i++) {
			const char *s = (char *)a->v[i].data;
			size_t lo = 0, hi = a->v[i].len;
			for (int k = 0; k < st->left && hi - lo >= cl && !memcmp(s + lo, st->content, cl); k++)
				lo += cl;
			for (int k = 0; k < st->right && hi - lo >= cl && !memcmp(s + hi - cl, st->content, cl); k++)
				hi -= cl;
			strs_add(&out, s + lo, hi - lo);
		}
		break;
	}
	case D_METASPACE: {
		size_t rl = strlen(st->content);
		for (int i = 0; i < a->n; i++) {
			buf_init(&b);
			replace_all(&b, (char *)a->v[i].data, a->v[i].len, st->content, rl,
				    i == 0 && st->scheme != PS_NEVER ? "" : " ");
			strs_add(&out, (char *)b.data, b.len);
			buf_release(&b);
		}
		break;
	}
	case D_BPE: {
		size_t sl = strlen(st->content);
		for (int i = 0; i < a->n; i++) {
			buf_init(&b);
			replace_all(&b, (char *)a->v[i].data, a->v[i].len, st->content, sl,
				    i == a->n - 1 ? "" : " ");
			strs_add(&out, (char *)b.data, b.len);
			buf_release(&b);
		}
		break;
	}
	default:
		return;
	}
	strs_release(a);
	*a = out;
}

/* transformers' clean_up_tokenization, the replacements in its order. */
static void clean_up(struct buf *s)
{
	static const char *const rep[][2] = {
		{ " .", "." }, { " ?", "?" }, { " !", "!" }, { " ,", "," }, { " ' ", "'" },
		{ " n't", "n't" }, { " 'm", "'m" }, { " 's", "'s" }, { " 've", "'ve" }, { " 're", "'re" },
	};
	for (size_t i = 0; i < ARRAY_LEN(rep); i++) {
		struct buf out;
		buf_init(&out);
		replace_all(&out, (char *)s->data, s->len, rep[i][0], strlen(rep[i][0]), rep[i][1]);
		buf_release(s);
		*s = out;
	}
}

char *tokenizer_decode(const struct tokenizer *t, const int *ids, int n, int skip_special,
		       size_t *len)
{
	struct strs a = { 0 };
	struct ctx cx = { 0 };
	struct buf out;

	for (int i = 0; i < n; i++) {
		int id = ids[i];
		if (id < 0 || id >= t->nid)
			continue; /* the crate skips ids it does not know */
		int ad = t->added_of_id[id];
		if (ad >= 0) {
			if (skip_special && t->added[ad].special)
				continue;
			strs_add(&a, t->added[ad].content, t->added[ad].len);
		} else if (id < t->nmtok && t->mtok[id]) {
			strs_add(&a, t->mtok[id], strlen(t->mtok[id]));
		}
	}
	buf_init(&out);
	if (t->dec) {
		cx.md = pcre2_match_data_create(1, NULL);
		decode_step(t->dec, &cx, &a);
		pcre2_match_data_free(cx.md);
		free(cx.sp.v);
		for (int i = 0; i < a.n; i++)
			buf_add(&out, a.v[i].data, a.v[i].len);
	} else {
		for (int i = 0; i < a.n; i++) {
			if (i)
				buf_add(&out, " ", 1);
			buf_add(&out, a.v[i].data, a.v[i].len);
		}
		if (t->cleanup)
			clean_up(&out);
	}
	strs_release(&a);
	if (!out.data)
		buf_add(&out, "", 0);
	return (char *)buf_detach(&out, len);
}

/* ---- loading ---- */

int tokenizer_token_id(const struct tokenizer *t, const char *token)
{
	size_t n = strlen(token);
	int id = smap_get(&t->added_map, token, n);
	return id >= 0 ? id : smap_get(&t->vocab, token, n);
}

const char *tokenizer_token(const struct tokenizer *t, int id)
{
	if (id < 0 || id >= t->nid)
		return NULL;
	if (t->added_of_id[id] >= 0)
		return t->added[t->added_of_id[id]].content;
	return id < t->nmtok ? t->mtok[id] : NULL;
}

int tokenizer_vocab_size(const struct tokenizer *t) { return t->nid; }

const char *tokenizer_unfit(const struct tokenizer *t, int vocab_size)
{
	static char why[256];
	/* A tokenizer longer than the embedding loads in transformers (a toy
	 * model with a real tokenizer; ids fail when emitted), so ids that
	 * follow the vocabulary densely pass; beyond both, an id is a mistake. */
	int bound = vocab_size > t->nmtok + t->nadded ? vocab_size : t->nmtok + t->nadded;
	for (int i = 0; i < t->nadded; i++)
		if (t->added[i].id >= bound) {
			snprintf(why, sizeof why,
				 "%s: added_tokens[%d] '%.40s': id %d not below the model's vocab_size %d "
				 "(nor the tokenizer's %d tokens)",
				 t->path, i, t->added[i].content, t->added[i].id, vocab_size,
				 t->nmtok + t->nadded);
			return why;
		}
	return NULL;
}
int tokenizer_bos(const struct tokenizer *t) { return t->bos; }
int tokenizer_eos(const struct tokenizer *t) { return t->eos; }

void tokenizer_free(struct tokenizer *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->nmtok; i++)
		free(t->mtok[i]);
	free(t->mtok);
	smap_release(&t->vocab);
	pmap_release(&t->merges);
	free(t->prefix);
	free(t->suffix);
	for (int i = 0; i < t->nadded; i++)
		free(t->added[i].content);
	free(t->added);
	free(t->added_of_id);
	free(t->added_by_byte);
	smap_release(&t->added_map);
	if (t->norm)
		step_release(t->norm);
	if (t->pretok)
		step_release(t->pretok);
	if (t->dec)
		step_release(t->dec);
	free(t->norm);
	free(t->pretok);
	free(t->dec);
	pattern_release(&t->ws_re);
	pattern_release(&t->gpt2_re);
	free(t->pre);
	free(t->post);
	free(t->path);
	free(t);
}

static int load_vocab(struct tokenizer *t, const cJSON *model)
{
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	const cJSON *e;
	int maxid = -1, n = 0;
	if (!cJSON_IsObject(vocab))
		return error("%s: model.vocab: want an object of token → id", t->path);
	cJSON_ArrayForEach(e, vocab) {
		if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble != (double)e->valueint)
			return error("%s: model.vocab['%s']: want an id", t->path, e->string);
		if (e->valueint > TOKENIZER_MAX_ID)
			return error("%s: model.vocab['%s']: id %d over %d, the most a tokenizer may "
				     "have", t->path, e->string, e->valueint, TOKENIZER_MAX_ID);
		if (e->valueint > maxid)
			maxid = e->valueint;
		n++;
	}
	t->nmtok = maxid + 1;
	t->mtok = xcalloc((size_t)t->nmtok + 1, sizeof(*t->mtok));
	smap_init(&t->vocab, (size_t)n);
	cJSON_ArrayForEach(e, vocab) {
		if (t->mtok[e->valueint])
			return error("%s: model.vocab: id %d given twice", t->path, e->valueint);
		t->mtok[e->valueint] = xstrdup(e->string);
		smap_put(&t->vocab, t->mtok[e->valueint], strlen(e->string), e->valueint);
	}
	return 0;
}

static int load_merges(struct tokenizer *t, const cJSON *model)
{
	const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	const cJSON *e;
	int rank = 0;
	struct buf joined;
	if (!merges)
		return 0;
	if (!cJSON_IsArray(merges))
		return error("%s: model.merges: want an array", t->path);
	pmap_init(&t->merges, (size_t)cJSON_GetArraySize(merges));
	buf_init(&joined);
	size_t plen = t->prefix ? strlen(t->prefix) : 0;
	cJSON_ArrayForEach(e, merges) {
		const char *a, *b;
		size_t al, bl;
		if (cJSON_IsString(e)) {
			a = e->valuestring;
			const char *sp = strchr(a, ' ');
			if (!sp || strchr(sp + 1, ' '))
				goto bad;
			al = (size_t)(sp - a);
			b = sp + 1;
			bl = strlen(b);
		} else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
			   cJSON_IsString(cJSON_GetArrayItem(e, 0)) && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
			a = cJSON_GetArrayItem(e, 0)->valuestring;
			b = cJSON_GetArrayItem(e, 1)->valuestring;
			al = strlen(a);
			bl = strlen(b);
		} else {
			goto bad;
		}
		int ia = smap_get(&t->vocab, a, al), ib = smap_get(&t->vocab, b, bl);
		if (ia < 0 || ib < 0) {
			buf_release(&joined);
			return error("%s: model.merges[%d]: '%.*s' is not in the vocabulary", t->path,
				     rank, ia < 0 ? (int)al : (int)bl, ia < 0 ? a : b);
		}
		/* the merged token drops the right part's continuing_subword_prefix */
		joined.len = 0;
		buf_add(&joined, a, al);
		if (plen && bl >= plen && !memcmp(b, t->prefix, plen))
			buf_add(&joined, b + plen, bl - plen);
		else
			buf_add(&joined, b, bl);
		int id = smap_get(&t->vocab, (char *)joined.data, joined.len);
		if (id < 0) {
			buf_release(&joined);
			return error("%s: model.merges[%d]: '%s' is not in the vocabulary", t->path, rank,
				     (char *)joined.data);
		}
		pmap_put(&t->merges, ia, ib, rank, id);
		rank++;
	}
	buf_release(&joined);
	return 0;
bad:
	buf_release(&joined);
	return error("%s: model.merges[%d]: want \"a b\" or [\"a\", \"b\"]", t->path, rank);
}

static int load_added(struct tokenizer *t, const cJSON *root)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
	const cJSON *e;
	int i = 0;
	if (arr && !cJSON_IsArray(arr))
		return error("%s: added_tokens: want an array", t->path);
	t->nadded = arr ? cJSON_GetArraySize(arr) : 0;
	t->added = xcalloc((size_t)t->nadded + 1, sizeof(*t->added));
	smap_init(&t->added_map, (size_t)t->nadded);
	cJSON_ArrayForEach(e, arr) {
		struct added *a = &t->added[i];
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
		const char *c = jstr(e, "content");
		if (!c || !cJSON_IsNumber(id) || id->valuedouble < 0 ||
		    id->valuedouble != (double)id->valueint)
			return error("%s: added_tokens[%d]: want \"id\" and \"content\"", t->path, i);
		if (id->valueint > TOKENIZER_MAX_ID)
			return error("%s: added_tokens[%d].id: %d over %d, the most a tokenizer may "
				     "have", t->path, i, id->valueint, TOKENIZER_MAX_ID);
		a->content = xstrdup(c);
		a->len = strlen(c);
		a->id = id->valueint;
		a->special = jbool(e, "special", 0);
		a->lstrip = jbool(e, "lstrip", 0);
		a->rstrip = jbool(e, "rstrip", 0);
		a->single_word = jbool(e, "single_word", 0);
		/* the crate's default: special tokens are matched in the raw text */
		a->normalized = jbool(e, "normalized", !a->special);
		smap_put(&t->added_map, a->content, a->len, a->id);
		i++;
	}
	return 0;
}

/* A special id the post-processor adds must be a token of this file (the
 * crate would emit it and leave the failure to the embedding). */
static int post_id(const struct tokenizer *t, const cJSON *x, const char *where, const char *key,
		   struct ivec *v)
{
	if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= t->nid ||
	    x->valuedouble != (double)x->valueint || !tokenizer_token(t, x->valueint)) {
		if (cJSON_IsNumber(x))
			return error("%s: %s: id %.0f is not in the vocabulary (%d ids)", where, key,
				     x->valuedouble, t->nid);
		return error("%s: %s: want a token id", where, key);
	}
	ivec_push(v, x->valueint);
	return 0;
}

/* Special ids of the post-processor: those before $A and those after. */
static int load_post(struct tokenizer *t, const cJSON *pp, const char *where)
{
	const char *type = jstr(pp, "type");
	struct ivec pre = { 0 }, post = { 0 };
	if (!pp || cJSON_IsNull(pp))
		return 0;
	if (!type)
		return error("%s: missing \"type\"", where);
	if (!strcmp(type, "ByteLevel"))
		return 0;
	if (!strcmp(type, "Sequence")) {
		const cJSON *e;
		int i = 0;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
			char *w = xasprintf("%s.processors[%d]", where, i++);
			int rc = load_post(t, e, w);
			free(w);
			if (rc < 0)
				return -1;
		}
		return 0;
	}
	if (!strcmp(type, "TemplateProcessing")) {
		const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
		const cJSON *special = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
		const cJSON *e;
		int seen_a = 0;
		cJSON_ArrayForEach(e, single) {
			const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
			if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
				seen_a = 1;
				continue;
			}
			const char *name = jstr(st, "id");
			const cJSON *sp = name ? cJSON_GetObjectItemCaseSensitive(special, name) : NULL;
			const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids"), *x;
			if (!cJSON_IsArray(ids)) {
				free(pre.v);
				free(post.v);
				return error("%s: special token '%s' not in special_tokens", where,
					     name ? name : "?");
			}
			char *key = xasprintf("special_tokens.%s.ids", name);
			int bad = 0;
			cJSON_ArrayForEach(x, ids)
				if (!bad && post_id(t, x, where, key, seen_a ? &post : &pre) < 0)
					bad = 1;
			free(key);
			if (bad) {
				free(pre.v);
				free(post.v);
				return -1;
			}
		}
	} else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
		const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
		const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
		if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep))
			return error("%s: want \"cls\" and \"sep\" as [token, id]", where);
		if (post_id(t, cJSON_GetArrayItem(cls, 1), where, "cls", &pre) < 0 ||
		    post_id(t, cJSON_GetArrayItem(sep, 1), where, "sep", &post) < 0) {
			free(pre.v);
			free(post.v);
			return -1;
		}
	} else {
		return error("%s: unsupported post-processor '%s'", where, type);
	}
	for (int i = 0; i < pre.n; i++) {
		t->pre = xrealloc(t->pre, (size_t)(t->npre + 1) * sizeof(int));
		t->pre[t->npre++] = pre.v[i];
	}
	for (int i = 0; i < post.n; i++) {
		t->post = xrealloc(t->post, (size_t)(t->npost + 1) * sizeof(int));
		t->post[t->npost++] = post.v[i];
	}
	free(pre.v);
	free(post.v);
	return 0;
}

/* bos_token / eos_token of tokenizer_config.json: a string or {"content": ...}. */
static const char *config_token(const cJSON *cfg, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
	if (cJSON_IsString(v))
		return v->valuestring;
	return jstr(v, "content");
}

static int load_step(struct tokenizer *t, struct step **dst, const cJSON *root, const char *key,
		     int kind)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!j || cJSON_IsNull(j))
		return 0;
	*dst = xcalloc(1, sizeof(**dst));
	char *w = xasprintf("%s: %s", t->path, key);
	int rc = step_json(t, *dst, j, kind, w);
	free(w);
	return rc;
}

struct tokenizer *tokenizer_load(const char *path)
{
	struct stat st;
	char *file, *dir;
	size_t len;

	if (stat(path, &st) < 0) {
		error("%s:", path);
		return NULL;
	}
	if (S_ISDIR(st.st_mode)) {
		file = xasprintf("%s/tokenizer.json", path);
		dir = xstrdup(path);
	} else {
		file = xstrdup(path);
		const char *slash = strrchr(path, '/');
		dir = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
	}
	unsigned char *data = read_file(file, &len);
	if (!data) {
		free(file);
		free(dir);
		return NULL;
	}
	byte_tables();
	struct tokenizer *t = xcalloc(1, sizeof(*t));
	t->path = file;
	t->unk = t->bos = t->eos = -1;
	cJSON *root = cJSON_ParseWithLength((char *)data, len);
	free(data);
	cJSON *cfg = NULL;
	if (!root) {
		error("%s: not valid JSON", file);
		goto fail;
	}
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const char *mtype = jstr(model, "type");
	if (!mtype && cJSON_GetObjectItemCaseSensitive(model, "merges"))
		mtype = "BPE"; /* older files leave the type out */
	if (!mtype) {
		error("%s: model.type: missing", file);
		goto fail;
	}
	if (!strcmp(mtype, "BPE"))
		t->is_bpe = 1;
	else if (strcmp(mtype, "WordLevel")) {
		error("%s: model.type: unsupported model '%s' (BPE, WordLevel)", file, mtype);
		goto fail;
	}
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(model, "dropout"))) {
		error("%s: model.dropout: BPE dropout is not supported", file);
		goto fail;
	}
	const char *pfx = jstr(model, "continuing_subword_prefix");
	const char *sfx = jstr(model, "end_of_word_suffix");
	t->prefix = pfx && *pfx ? xstrdup(pfx) : NULL;
	t->suffix = sfx && *sfx ? xstrdup(sfx) : NULL;
	t->byte_fallback = jbool(model, "byte_fallback", 0);
	t->fuse_unk = jbool(model, "fuse_unk", 0);
	t->ignore_merges = jbool(model, "ignore_merges", 0);
	if (load_vocab(t, model) < 0 || (t->is_bpe && load_merges(t, model) < 0) ||
	    load_added(t, root) < 0)
		goto fail;
	const char *unk = jstr(model, "unk_token");
	if (unk) {
		t->unk = smap_get(&t->vocab, unk, strlen(unk));
		if (t->unk < 0 && !t->is_bpe) {
			error("%s: model.unk_token '%s' is not in the vocabulary", file, unk);
			goto fail;
		}
	}
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof(name), "<0x%02X>", b);
		t->byte_id[b] = smap_get(&t->vocab, name, 6);
	}
	/* ids: the vocabulary's and the added tokens' */
	t->nid = t->nmtok;
	for (int i = 0; i < t->nadded; i++)
		if (t->added[i].id + 1 > t->nid)
			t->nid = t->added[i].id + 1;
	t->added_of_id = xmalloc((size_t)(t->nid + 1) * sizeof(int));
	for (int i = 0; i <= t->nid; i++)
		t->added_of_id[i] = -1;
	for (int i = 0; i < t->nadded; i++)
		t->added_of_id[t->added[i].id] = i;
	t->added_by_byte = xmalloc((size_t)(t->nadded + 1) * sizeof(int));
	for (int i = 0; i < t->nadded; i++)
		if (t->added[i].len)
			t->added_first[(unsigned char)t->added[i].content[0] + 1]++;
	for (int b = 0; b < 256; b++)
		t->added_first[b + 1] += t->added_first[b];
	{
		int fill[256];
		memcpy(fill, t->added_first, sizeof(fill));
		for (int i = 0; i < t->nadded; i++)
			if (t->added[i].len)
				t->added_by_byte[fill[(unsigned char)t->added[i].content[0]]++] = i;
	}
	if (pattern_regex(&t->ws_re, WHITESPACE_RE, file) < 0 ||
	    pattern_regex(&t->gpt2_re, GPT2_RE, file) < 0)
		goto fail;
	if (load_step(t, &t->norm, root, "normalizer", 'n') < 0 ||
	    load_step(t, &t->pretok, root, "pre_tokenizer", 'p') < 0 ||
	    load_step(t, &t->dec, root, "decoder", 'd') < 0)
		goto fail;
	{
		char *w = xasprintf("%s: post_processor", file);
		int rc = load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), w);
		free(w);
		if (rc < 0)
			goto fail;
	}

	/* tokenizer_config.json beside it: bos/eos, clean-up of decoded text */
	char *cpath = xasprintf("%s/tokenizer_config.json", dir);
	t->cleanup = 1; /* transformers' default */
	if (access(cpath, R_OK) == 0) {
		unsigned char *cd = read_file(cpath, &len);
		cfg = cd ? cJSON_ParseWithLength((char *)cd, len) : NULL;
		free(cd);
		if (!cfg) {
			error("%s: not valid JSON", cpath);
			free(cpath);
			goto fail;
		}
		const char *b = config_token(cfg, "bos_token"), *e = config_token(cfg, "eos_token");
		if (b)
			t->bos = tokenizer_token_id(t, b);
		if (e)
			t->eos = tokenizer_token_id(t, e);
		t->cleanup = jbool(cfg, "clean_up_tokenization_spaces", 1);
	}
	free(cpath);
	if (t->bos < 0 && t->npre)
		t->bos = t->pre[0];
	if (t->eos < 0 && t->npost)
		t->eos = t->post[t->npost - 1];
	static const char *const bos_names[] = { "<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>" };
	static const char *const eos_names[] = { "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>" };
	for (size_t i = 0; i < ARRAY_LEN(bos_names) && t->bos < 0; i++)
		t->bos = tokenizer_token_id(t, bos_names[i]);
	for (size_t i = 0; i < ARRAY_LEN(eos_names) && t->eos < 0; i++)
		t->eos = tokenizer_token_id(t, eos_names[i]);
	cJSON_Delete(cfg);
	cJSON_Delete(root);
	free(dir);
	return t;
fail:
	cJSON_Delete(cfg);
	cJSON_Delete(root);
	free(dir);
	tokenizer_free(t);
	return NULL;
}
