#include "eval.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "synth.h"
#include "util.h"

/* Vocabulary. */

#define MAX_PHRASE_WORDS 6

struct phrase {
	char *words[MAX_PHRASE_WORDS];
	int nwords;
	int obj;
};

struct eval_vocab {
	char **names; /* canonical object names */
	int nnames;
	struct phrase *ph;
	int nph, cap;
};

/* Splits TEXT into lower-case words of [a-z0-9] (other bytes separate). */
static int split_words(const char *text, char ***out)
{
	char **w = NULL;
	int n = 0, cap = 0;
	const unsigned char *p = (const unsigned char *)text;
	while (*p) {
		while (*p && !isalnum(*p))
			p++;
		if (!*p)
			break;
		const unsigned char *s = p;
		while (*p && isalnum(*p))
			p++;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			w = xrealloc(w, (size_t)cap * sizeof(*w));
		}
		w[n] = xstrndup((const char *)s, (size_t)(p - s));
		for (char *c = w[n]; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		n++;
	}
	*out = w;
	return n;
}

static void free_words(char **w, int n)
{
	for (int i = 0; i < n; i++)
		free(w[i]);
	free(w);
}

/* English plural of one word: box → boxes, daisy → daisies, star → stars. */
static char *plural(const char *w)
{
	size_t n = strlen(w);
	if (n >= 2 && w[n - 1] == 'y' && !strchr("aeiou", w[n - 2]))
		return xasprintf("%.*sies", (int)(n - 1), w);
	if ((n >= 1 && strchr("sxz", w[n - 1])) ||
	    (n >= 2 && (!strcmp(w + n - 2, "ch") || !strcmp(w + n - 2, "sh"))))
		return xasprintf("%ses", w);
	return xasprintf("%ss", w);
}

/* The irregular plural of W, or NULL: COCO-style vocabularies name people
 * and animals (man → men, policeman → policemen, child → children). */
static char *plural_irregular(const char *w)
{
	static const char *const table[][2] = {
		{ "child", "children" }, { "person", "people" }, { "mouse", "mice" },
		{ "foot", "feet" }, { "tooth", "teeth" }, { "goose", "geese" },
		{ "knife", "knives" }, { "wife", "wives" }, { "life", "lives" },
		{ "leaf", "leaves" }, { "wolf", "wolves" }, { "shelf", "shelves" },
		{ "loaf", "loaves" }, { "calf", "calves" }, { "half", "halves" },
		{ "scarf", "scarves" }, { "sheep", "sheep" }, { "fish", "fish" },
		{ "deer", "deer" }, { "ox", "oxen" }, { "cactus", "cacti" },
	};
	size_t n = strlen(w);
	for (size_t i = 0; i < ARRAY_LEN(table); i++)
		if (!strcmp(w, table[i][0]))
			return xstrdup(table[i][1]);
	if (n >= 3 && !strcmp(w + n - 3, "man"))
		return xasprintf("%.*smen", (int)(n - 3), w);
	return NULL;
}

static int vocab_object(struct eval_vocab *v, const char *name)
{
	for (int i = 0; i < v->nnames; i++)
		if (!strcmp(v->names[i], name))
			return i;
	v->names = xrealloc(v->names, (size_t)(v->nnames + 1) * sizeof(char *));
	v->names[v->nnames] = xstrdup(name);
	return v->nnames++;
}

static void vocab_add_words(struct eval_vocab *v, char **w, int n, int obj)
{
	if (v->nph == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 64;
		v->ph = xrealloc(v->ph, (size_t)v->cap * sizeof(*v->ph));
	}
	struct phrase *p = &v->ph[v->nph++];
	p->nwords = n;
	p->obj = obj;
	for (int i = 0; i < n; i++)
		p->words[i] = xstrdup(w[i]);
}

/* Adds PHRASE and its plurals (the last word pluralised) for object OBJ. */
static int vocab_add(struct eval_vocab *v, const char *phrase, int obj)
{
	char **w;
	int n = split_words(phrase, &w);
	if (n == 0 || n > MAX_PHRASE_WORDS) {
		free_words(w, n);
		return -1;
	}
	vocab_add_words(v, w, n, obj);
	char *last = w[n - 1], *irr = plural_irregular(last);
	w[n - 1] = plural(last);
	vocab_add_words(v, w, n, obj);
	if (irr) {
		free(w[n - 1]);
		w[n - 1] = irr;
		vocab_add_words(v, w, n, obj);
	}
	free(last);
	free_words(w, n);
	return 0;
}

struct eval_vocab *eval_vocab_default(void)
{
	struct eval_vocab *v = xcalloc(1, sizeof(*v));
	for (int s = 0; s < SYNTH_NSHAPES; s++) {
		int obj = vocab_object(v, synth_shapes[s]);
		vocab_add(v, synth_shapes[s], obj);
		for (int j = 0; j < 3 && synth_synonyms[s][j]; j++)
			vocab_add(v, synth_synonyms[s][j], obj);
	}
	return v;
}

struct eval_vocab *eval_vocab_load(const char *path)
{
	size_t len;
	unsigned char *data = read_file(path, &len);
	if (!data)
		return NULL;
	struct eval_vocab *v = xcalloc(1, sizeof(*v));
	char *line = (char *)data, *next;
	long lineno = 0;
	for (; *line; line = next) {
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : line + strlen(line);
		if (nl)
			*nl = 0;
		lineno++;
		char *t = line;
		while (isspace((unsigned char)*t))
			t++;
		if (!*t || *t == '#')
			continue;
		char *s2 = NULL, *item = strtok_r(t, ",", &s2);
		char **w;
		int n = split_words(item, &w);
		if (n == 0) {
			free_words(w, n);
			error("%s: line %ld: no object name before ','", path, lineno);
			goto fail;
		}
		free_words(w, n);
		char *name = item;
		while (isspace((unsigned char)*name))
			name++;
		for (char *e = name + strlen(name); e > name && isspace((unsigned char)e[-1]);)
			*--e = 0;
		int obj = vocab_object(v, name);
		for (; item; item = strtok_r(NULL, ",", &s2)) {
			const char *q = item;
			while (isspace((unsigned char)*q))
				q++;
			if (!*q)
				continue;
			if (vocab_add(v, item, obj) < 0) {
				error("%s: line %ld: '%s': not a phrase of 1 to %d words", path, lineno,
				      item, MAX_PHRASE_WORDS);
				goto fail;
			}
		}
	}
	free(data);
	if (!v->nnames) {
		error("%s: no objects", path);
		eval_vocab_free(v);
		return NULL;
	}
	return v;
fail:
	free(data);
	eval_vocab_free(v);
	return NULL;
}

void eval_vocab_free(struct eval_vocab *v)
{
	if (!v)
		return;
	for (int i = 0; i < v->nph; i++)
		for (int j = 0; j < v->ph[i].nwords; j++)
			free(v->ph[i].words[j]);
	free(v->ph);
	for (int i = 0; i < v->nnames; i++)
		free(v->names[i]);
	free(v->names);
	free(v);
}

/* The longest phrase matching W[i..]: its length, *obj set; 0 if none. */
static int match_at(const struct eval_vocab *v, char **w, int n, int i, int *obj)
{
	int best = 0;
	for (int k = 0; k < v->nph; k++) {
		const struct phrase *p = &v->ph[k];
		if (p->nwords <= best || i + p->nwords > n)
			continue;
		int j = 0;
		while (j < p->nwords && !strcmp(p->words[j], w[i + j]))
			j++;
		if (j == p->nwords) {
			best = p->nwords;
			*obj = p->obj;
		}
	}
	return best;
}

int eval_vocab_mentions(const struct eval_vocab *v, const char *text, const char ***names)
{
	char **w;
	int n = split_words(text, &w), m = 0, obj = 0;
	const char **out = xmalloc((size_t)(n + 1) * sizeof(char *));
	for (int i = 0; i < n;) {
		int len = match_at(v, w, n, i, &obj);
		if (len) {
			out[m++] = v->names[obj];
			i += len;
		} else {
			i++;
		}
	}
	free_words(w, n);
	*names = out;
	return m;
}

const char *eval_vocab_canonical(const struct eval_vocab *v, const char *phrase)
{
	char **w;
	int n = split_words(phrase, &w), obj = -1;
	const char *name = NULL;
	if (n && match_at(v, w, n, 0, &obj) == n)
		name = v->names[obj];
	free_words(w, n);
	return name;
}

/* Answers. */

int eval_pope_yes(const char *answer)
{
	/* As LLaVA's eval_pope.py: text.split('.')[0], replace(',', ''),
	 * split(' '), then look for the three words. */
	const char *dot = strchr(answer, '.');
	size_t n = dot ? (size_t)(dot - answer) : strlen(answer);
	char *t = xmalloc(n + 1), *q = t;
	for (size_t i = 0; i < n; i++)
		if (answer[i] != ',')
			*q++ = answer[i];
	*q = 0;
	int no = 0;
	for (char *w = t;; ) {
		char *sp = strchr(w, ' ');
		size_t len = sp ? (size_t)(sp - w) : strlen(w);
		if ((len == 2 && (!strncmp(w, "No", 2) || !strncmp(w, "no", 2))) ||
		    (len == 3 && !strncmp(w, "not", 3)))
			no = 1;
		if (!sp)
			break;
		w = sp + 1;
	}
	free(t);
	return !no;
}

void eval_normalize(struct buf *out, const char *text)
{
	static const char *const numbers[] = {
		"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
		"eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
		"eighteen", "nineteen", "twenty",
	};
	char **w;
	int n = split_words(text, &w);
	out->len = 0;
	buf_addstr(out, "");
	for (int i = 0; i < n; i++) {
		const char *word = w[i];
		char num[8];
		for (size_t k = 0; k < ARRAY_LEN(numbers); k++)
			if (!strcmp(word, numbers[k])) {
				snprintf(num, sizeof(num), "%zu", k);
				word = num;
			}
		if (i)
			buf_addstr(out, " ");
		buf_addstr(out, word);
	}
	free_words(w, n);
}

/* Scoring. */

void eval_init(struct eval *e, const struct eval_vocab *vocab)
{
	memset(e, 0, sizeof(*e));
	e->vocab = vocab;
}

static struct eval_pope *pope_split(struct eval *e, const char *split)
{
	for (int i = 0; i < e->npope; i++)
		if (!strcmp(e->pope[i].split, split))
			return &e->pope[i];
	if (e->npope == EVAL_MAX_SPLITS)
		return NULL;
	struct eval_pope *p = &e->pope[e->npope++];
	memset(p, 0, sizeof(*p));
	snprintf(p->split, sizeof(p->split), "%s", split);
	return p;
}

void eval_pope_add(struct eval *e, const char *split, int label_yes, const char *answer)
{
	struct eval_pope *p = pope_split(e, split);
	int yes = eval_pope_yes(answer);
	if (!p)
		p = &e->pope[EVAL_MAX_SPLITS - 1]; /* too many splits: pooled into the last */
	if (label_yes)
		yes ? p->tp++ : p->fn++;
	else
		yes ? p->fp++ : p->tn++;
}

static const char *str_item(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int chair_add(struct eval *e, const cJSON *truth, const char *response, const char **err)
{
	const cJSON *objs = cJSON_GetObjectItemCaseSensitive(truth, "objects"), *it;
	const char **present, **mentions;
	int np = 0, nm, hall = 0;

	if (!cJSON_IsArray(objs)) {
		*err = "truth.objects is not an array";
		return -1;
	}
	present = xmalloc((size_t)(cJSON_GetArraySize(objs) + 1) * sizeof(char *));
	cJSON_ArrayForEach(it, objs) {
		if (!cJSON_IsString(it)) {
			free(present);
			*err = "truth.objects holds a non-string";
			return -1;
		}
		const char *c = eval_vocab_canonical(e->vocab, it->valuestring);
		present[np++] = c ? c : it->valuestring;
	}
	nm = eval_vocab_mentions(e->vocab, response, &mentions);
	for (int i = 0; i < nm; i++) {
		int found = 0;
		for (int j = 0; j < np && !found; j++)
			found = !strcmp(mentions[i], present[j]);
		hall += !found;
	}
	for (int j = 0; j < np; j++) {
		int found = 0;
		for (int i = 0; i < nm && !found; i++)
			found = !strcmp(mentions[i], present[j]);
		e->chair_covered += found;
	}
	e->chair_n++;
	e->chair_truth += np;
	e->chair_mentions += nm;
	e->chair_hall_mentions += hall;
	e->chair_hall_caps += hall > 0;
	free(mentions);
	free(present);
	return 0;
}

static int exact_add(long *n, long *ok, const cJSON *truth, const char *response, const char **err)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(truth, "answer");
	char num[32];
	const char *want;
	struct buf x, y;

	if (cJSON_IsString(a)) {
		want = a->valuestring;
	} else if (cJSON_IsNumber(a)) {
		snprintf(num, sizeof(num), "%g", a->valuedouble);
		want = num;
	} else {
		*err = "truth.answer is not a string or number";
		return -1;
	}
	buf_init(&x);
	buf_init(&y);
	eval_normalize(&x, want);
	eval_normalize(&y, response);
	(*n)++;
	*ok += !strcmp((char *)x.data, (char *)y.data);
	buf_release(&x);
	buf_release(&y);
	return 0;
}

int eval_add(struct eval *e, const cJSON *truth, const char *response, const char **err)
{
	const char *task = str_item(truth, "task");
	int rc;

	*err = NULL;
	if (!cJSON_IsObject(truth) || !task) {
		*err = "truth has no \"task\"";
		return -1;
	}
	if (!strcmp(task, "pope")) {
		const char *label = str_item(truth, "label"), *split = str_item(truth, "split");
		if (!label || (strcmp(label, "yes") && strcmp(label, "no"))) {
			*err = "truth.label is not \"yes\" or \"no\"";
			return -1;
		}
		eval_pope_add(e, split ? split : "pope", !strcmp(label, "yes"), response);
		rc = 0;
	} else if (!strcmp(task, "describe")) {
		rc = chair_add(e, truth, response, err);
	} else if (!strcmp(task, "color")) {
		rc = exact_add(&e->color_n, &e->color_ok, truth, response, err);
	} else if (!strcmp(task, "count")) {
		rc = exact_add(&e->count_n, &e->count_ok, truth, response, err);
	} else {
		*err = "truth.task is not pope, describe, color or count";
		return -1;
	}
	if (!rc)
		e->samples++;
	return rc;
}

/* One JSON line of FILE into *out; 0 at end, -1 on a bad line. */
static int next_json_line(char **cursor, const char *file, long *lineno, cJSON **out)
{
	while (**cursor) {
		char *line = *cursor, *nl = strchr(line, '\n');
		*cursor = nl ? nl + 1 : line + strlen(line);
		if (nl)
			*nl = 0;
		(*lineno)++;
		const char *t = line;
		while (isspace((unsigned char)*t))
			t++;
		if (!*t)
			continue;
		*out = cJSON_Parse(line);
		if (!cJSON_IsObject(*out)) {
			cJSON_Delete(*out);
			return error("%s: line %ld: not a JSON object", file, *lineno);
		}
		return 1;
	}
	return 0;
}

int eval_pope_files(struct eval *e, const char *questions, const char *answers)
{
	size_t qlen, alen;
	unsigned char *qd = read_file(questions, &qlen), *ad = NULL;
	char *qc, *ac;
	long ql = 0, al = 0, nq = 0;
	int rc = -1;
	const char *base = strrchr(questions, '/');
	const char *split = "pope";

	base = base ? base + 1 : questions;
	if (strstr(base, "adversarial"))
		split = "adversarial";
	else if (strstr(base, "popular"))
		split = "popular";
	else if (strstr(base, "random"))
		split = "random";
	if (!qd || !(ad = read_file(answers, &alen)))
		goto out;
	qc = (char *)qd;
	ac = (char *)ad;
	for (;;) {
		cJSON *q = NULL, *a = NULL;
		int qr = next_json_line(&qc, questions, &ql, &q);
		if (qr < 0)
			goto out;
		int ar = next_json_line(&ac, answers, &al, &a);
		if (ar < 0) {
			cJSON_Delete(q);
			goto out;
		}
		if (!qr || !ar) {
			cJSON_Delete(q);
			cJSON_Delete(a);
			if (qr || ar) {
				if (qr)
					error("%s: ends after %ld questions", answers, nq);
				else
					error("%s: more answers than the %ld questions of '%s'",
					      answers, nq, questions);
				goto out;
			}
			break;
		}
		const char *label = str_item(q, "label"), *cat = str_item(q, "category");
		const char *text = str_item(a, "text");
		if (!text)
			text = str_item(a, "answer");
		if (!label || (strcmp(label, "yes") && strcmp(label, "no"))) {
			error("%s: line %ld: \"label\" is not \"yes\" or \"no\"", questions, ql);
		} else if (!text) {
			error("%s: line %ld: no \"text\" or \"answer\" string", answers, al);
		} else {
			eval_pope_add(e, cat ? cat : split, !strcmp(label, "yes"), text);
			e->samples++;
			nq++;
			cJSON_Delete(q);
			cJSON_Delete(a);
			continue;
		}
		cJSON_Delete(q);
		cJSON_Delete(a);
		goto out;
	}
	rc = 0;
out:
	free(qd);
	free(ad);
	return rc;
}

/* Metrics. */

static double ratio(long a, long b)
{
	return b ? (double)a / (double)b : 0.0;
}

/* Six decimals keep the JSON short and the tables exact. */
static void add_num(cJSON *o, const char *key, double v)
{
	cJSON_AddNumberToObject(o, key, round(v * 1e6) / 1e6);
}

static int split_rank(const char *s)
{
	return !strcmp(s, "random") ? 0 : !strcmp(s, "popular") ? 1 : !strcmp(s, "adversarial") ? 2 : 3;
}

cJSON *eval_metrics(const struct eval *e)
{
	cJSON *m = cJSON_CreateObject(), *o;
	int order[EVAL_MAX_SPLITS];

	cJSON_AddNumberToObject(m, "samples", (double)e->samples);
	for (int i = 0; i < e->npope; i++)
		order[i] = i;
	/* random, popular, adversarial first; others as they came */
	for (int i = 1; i < e->npope; i++)
		for (int j = i; j > 0 && split_rank(e->pope[order[j - 1]].split) >
					 split_rank(e->pope[order[j]].split); j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	if (e->npope) {
		cJSON *pope = cJSON_AddObjectToObject(m, "pope");
		for (int k = 0; k < e->npope; k++) {
			const struct eval_pope *p = &e->pope[order[k]];
			long n = p->tp + p->fp + p->tn + p->fn;
			double prec = ratio(p->tp, p->tp + p->fp), rec = ratio(p->tp, p->tp + p->fn);
			o = cJSON_AddObjectToObject(pope, p->split);
			cJSON_AddNumberToObject(o, "n", (double)n);
			add_num(o, "accuracy", ratio(p->tp + p->tn, n));
			add_num(o, "precision", prec);
			add_num(o, "recall", rec);
			add_num(o, "f1", prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0);
			add_num(o, "yes_ratio", ratio(p->tp + p->fp, n));
			cJSON_AddNumberToObject(o, "tp", (double)p->tp);
			cJSON_AddNumberToObject(o, "fp", (double)p->fp);
			cJSON_AddNumberToObject(o, "tn", (double)p->tn);
			cJSON_AddNumberToObject(o, "fn", (double)p->fn);
		}
	}
	if (e->chair_n) {
		o = cJSON_AddObjectToObject(m, "chair");
		cJSON_AddNumberToObject(o, "n", (double)e->chair_n);
		add_num(o, "chair_s", ratio(e->chair_hall_caps, e->chair_n));
		add_num(o, "chair_i", ratio(e->chair_hall_mentions, e->chair_mentions));
		add_num(o, "recall", ratio(e->chair_covered, e->chair_truth));
		cJSON_AddNumberToObject(o, "mentions", (double)e->chair_mentions);
		cJSON_AddNumberToObject(o, "hallucinated", (double)e->chair_hall_mentions);
	}
	const char *names[2] = { "color", "count" };
	const long nn[2] = { e->color_n, e->count_n }, ok[2] = { e->color_ok, e->count_ok };
	for (int i = 0; i < 2; i++) {
		if (!nn[i])
			continue;
		o = cJSON_AddObjectToObject(m, names[i]);
		cJSON_AddNumberToObject(o, "n", (double)nn[i]);
		cJSON_AddNumberToObject(o, "correct", (double)ok[i]);
		add_num(o, "accuracy", ratio(ok[i], nn[i]));
	}
	return m;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

/* Rows of a table: section, row name, and the metrics shown. */
static const char *const pope_cols[] = { "accuracy", "precision", "recall", "f1", "yes_ratio" };
static const char *const chair_cols[] = { "chair_s", "chair_i", "recall" };
static const char *const exact_cols[] = { "accuracy" };

void eval_table(struct buf *out, const cJSON *m)
{
	const cJSON *pope = cJSON_GetObjectItemCaseSensitive(m, "pope"), *s;
	const cJSON *chair = cJSON_GetObjectItemCaseSensitive(m, "chair");

	if (cJSON_IsObject(pope) && pope->child) {
		buf_printf(out, "%-14s %6s", "POPE", "n");
		for (size_t i = 0; i < ARRAY_LEN(pope_cols); i++)
			buf_printf(out, " %9s", pope_cols[i]);
		buf_addstr(out, "\n");
		cJSON_ArrayForEach(s, pope) {
			buf_printf(out, "%-14s %6.0f", s->string, num(s, "n"));
			for (size_t i = 0; i < ARRAY_LEN(pope_cols); i++)
				buf_printf(out, " %9.4f", num(s, pope_cols[i]));
			buf_addstr(out, "\n");
		}
	}
	if (cJSON_IsObject(chair)) {
		buf_printf(out, "%-14s %6s %9s %9s %9s %9s\n", "CHAIR", "n", "CHAIR_s", "CHAIR_i",
			   "recall", "mentions");
		buf_printf(out, "%-14s %6.0f %9.4f %9.4f %9.4f %9.0f\n", "describe", num(chair, "n"),
			   num(chair, "chair_s"), num(chair, "chair_i"), num(chair, "recall"),
			   num(chair, "mentions"));
	}
	int header = 0;
	const char *names[2] = { "color", "count" };
	for (int i = 0; i < 2; i++) {
		const cJSON *x = cJSON_GetObjectItemCaseSensitive(m, names[i]);
		if (!cJSON_IsObject(x))
			continue;
		if (!header++)
			buf_printf(out, "%-14s %6s %9s\n", "exact match", "n", "accuracy");
		buf_printf(out, "%-14s %6.0f %9.4f\n", names[i], num(x, "n"), num(x, "accuracy"));
	}
}

/* Calls FN for every (section, row, metric) either run has, in table order. */
struct row_walk {
	void (*fn)(const char *sect, const char *row, const char *metric, const cJSON *a,
		   const cJSON *b, void *arg);
	void *arg;
};

static void walk_metrics(const cJSON *a, const cJSON *b, struct row_walk *w)
{
	const cJSON *pa = cJSON_GetObjectItemCaseSensitive(a, "pope");
	const cJSON *pb = cJSON_GetObjectItemCaseSensitive(b, "pope"), *s;
	/* POPE splits: those of A in order, then those only B has */
	for (int pass = 0; pass < 2; pass++) {
		const cJSON *list = pass ? pb : pa;
		cJSON_ArrayForEach(s, list) {
			if (pass && cJSON_GetObjectItemCaseSensitive(pa, s->string))
				continue;
			const cJSON *sa = cJSON_GetObjectItemCaseSensitive(pa, s->string);
			const cJSON *sb = cJSON_GetObjectItemCaseSensitive(pb, s->string);
			w->fn("pope", s->string, "n", sa, sb, w->arg);
			for (size_t i = 0; i < ARRAY_LEN(pope_cols); i++)
				w->fn("pope", s->string, pope_cols[i], sa, sb, w->arg);
		}
	}
	const cJSON *ca = cJSON_GetObjectItemCaseSensitive(a, "chair");
	const cJSON *cb = cJSON_GetObjectItemCaseSensitive(b, "chair");
	if (ca || cb) {
		w->fn("chair", NULL, "n", ca, cb, w->arg);
		for (size_t i = 0; i < ARRAY_LEN(chair_cols); i++)
			w->fn("chair", NULL, chair_cols[i], ca, cb, w->arg);
	}
	const char *names[2] = { "color", "count" };
	for (int k = 0; k < 2; k++) {
		const cJSON *xa = cJSON_GetObjectItemCaseSensitive(a, names[k]);
		const cJSON *xb = cJSON_GetObjectItemCaseSensitive(b, names[k]);
		if (!xa && !xb)
			continue;
		w->fn(names[k], NULL, "n", xa, xb, w->arg);
		for (size_t i = 0; i < ARRAY_LEN(exact_cols); i++)
			w->fn(names[k], NULL, exact_cols[i], xa, xb, w->arg);
	}
}

static void compare_row(const char *sect, const char *row, const char *metric, const cJSON *a,
			const cJSON *b, void *arg)
{
	struct buf *out = arg;
	double x = num(a, metric), y = num(b, metric);
	char name[96], xs[24], ys[24], ds[24];
	int count = !strcmp(metric, "n");

	snprintf(name, sizeof(name), "%s%s%s.%s", sect, row ? "." : "", row ? row : "", metric);
	snprintf(xs, sizeof(xs), isnan(x) ? "-" : count ? "%.0f" : "%.4f", x);
	snprintf(ys, sizeof(ys), isnan(y) ? "-" : count ? "%.0f" : "%.4f", y);
	snprintf(ds, sizeof(ds), isnan(x) || isnan(y) ? "-" : count ? "%+.0f" : "%+.4f", y - x);
	buf_printf(out, "%-28s %10s %10s %10s\n", name, xs, ys, ds);
}

void eval_compare_table(struct buf *out, const cJSON *before, const cJSON *after)
{
	struct row_walk w = { compare_row, out };
	size_t start = out->len;
	buf_printf(out, "%-28s %10s %10s %10s\n", "metric", "before", "after", "diff");
	size_t header = out->len;
	walk_metrics(before, after, &w);
	if (out->len == header) /* no rows: no table */
		out->len = start, out->data[start] = 0;
}

static void diff_row(const char *sect, const char *row, const char *metric, const cJSON *a,
		     const cJSON *b, void *arg)
{
	cJSON *diff = arg, *s, *r;
	double x = num(a, metric), y = num(b, metric);
	if (isnan(x) || isnan(y))
		return;
	if (!(s = cJSON_GetObjectItemCaseSensitive(diff, sect)))
		s = cJSON_AddObjectToObject(diff, sect);
	r = s;
	if (row && !(r = cJSON_GetObjectItemCaseSensitive(s, row)))
		r = cJSON_AddObjectToObject(s, row);
	add_num(r, metric, y - x);
}

cJSON *eval_compare_json(const cJSON *before, const cJSON *after)
{
	cJSON *o = cJSON_CreateObject(), *diff = cJSON_CreateObject();
	struct row_walk w = { diff_row, diff };
	walk_metrics(before, after, &w);
	cJSON_AddItemToObject(o, "before", cJSON_Duplicate(before, 1));
	cJSON_AddItemToObject(o, "after", cJSON_Duplicate(after, 1));
	cJSON_AddItemToObject(o, "diff", diff);
	return o;
}
