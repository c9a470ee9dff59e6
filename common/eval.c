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
		/* strtok_r would skip leading commas (and return NULL for a line
		 * of them): the name is what comes before the first. */
		char *s2 = NULL, *item = *t == ',' ? NULL : strtok_r(t, ",", &s2);
		char **w = NULL;
		int n = item ? split_words(item, &w) : 0;
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

void eval_release(struct eval *e)
{
	for (long i = 0; i < e->samples; i++) {
		free(e->scores[i].key);
		free(e->scores[i].image);
	}
	free(e->scores);
	eval_init(e, e->vocab);
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

void eval_add_score(struct eval *e, const struct eval_score *s, const char *split)
{
	struct eval_score *c;

	if (e->samples == e->scores_cap) {
		e->scores_cap = e->scores_cap ? 2 * e->scores_cap : 256;
		e->scores = xrealloc(e->scores, (size_t)e->scores_cap * sizeof(*e->scores));
	}
	c = &e->scores[e->samples++];
	*c = *s;
	c->key = xstrdup(s->key);
	c->image = xstrdup(s->image ? s->image : s->key);
	switch (s->task) {
	case EVAL_POPE: {
		struct eval_pope *p = pope_split(e, split);
		if (!p)
			p = &e->pope[EVAL_MAX_SPLITS - 1]; /* too many splits: pooled into the last */
		c->split = (int)(p - e->pope);
		if (s->label)
			s->yes ? p->tp++ : p->fn++;
		else
			s->yes ? p->fp++ : p->tn++;
		break;
	}
	case EVAL_DESCRIBE:
		e->chair_n++;
		e->chair_truth += s->objects;
		e->chair_covered += s->covered;
		e->chair_mentions += s->mentions;
		e->chair_hall_mentions += s->hallucinated;
		e->chair_hall_caps += s->hallucinated > 0;
		break;
	case EVAL_COLOR:
		e->color_n++;
		e->color_ok += s->correct;
		break;
	case EVAL_COUNT:
		e->count_n++;
		e->count_ok += s->correct;
		break;
	}
}

void eval_pope_add(struct eval *e, const char *key, const char *image, const char *split,
		   int label_yes, const char *answer)
{
	struct eval_score s = { .key = (char *)key, .image = (char *)image, .task = EVAL_POPE,
				.label = !!label_yes, .yes = eval_pope_yes(answer) };
	eval_add_score(e, &s, split);
}

static const char *str_item(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int chair_add(struct eval *e, struct eval_score *s, const cJSON *truth, const char *response,
		     const char **err)
{
	const cJSON *objs = cJSON_GetObjectItemCaseSensitive(truth, "objects"), *it;
	const char **present, **mentions;
	int np = 0, nm, hall = 0, covered = 0;

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
		covered += found;
	}
	s->objects = np;
	s->covered = covered;
	s->mentions = nm;
	s->hallucinated = hall;
	eval_add_score(e, s, NULL);
	free(mentions);
	free(present);
	return 0;
}

static int exact_add(struct eval *e, struct eval_score *s, const cJSON *truth, const char *response,
		     const char **err)
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
	s->correct = !strcmp((char *)x.data, (char *)y.data);
	eval_add_score(e, s, NULL);
	buf_release(&x);
	buf_release(&y);
	return 0;
}

int eval_add(struct eval *e, const char *key, const char *image, const cJSON *truth,
	     const char *response, const char **err)
{
	const char *task = str_item(truth, "task");
	struct eval_score s = { .key = (char *)key, .image = (char *)image };
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
		eval_pope_add(e, key, image, split ? split : "pope", !strcmp(label, "yes"), response);
		rc = 0;
	} else if (!strcmp(task, "describe")) {
		s.task = EVAL_DESCRIBE;
		rc = chair_add(e, &s, truth, response, err);
	} else if (!strcmp(task, "color")) {
		s.task = EVAL_COLOR;
		rc = exact_add(e, &s, truth, response, err);
	} else if (!strcmp(task, "count")) {
		s.task = EVAL_COUNT;
		rc = exact_add(e, &s, truth, response, err);
	} else {
		*err = "truth.task is not pope, describe, color or count";
		return -1;
	}
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
			/* Paired by question_id, resampled by image (POPE asks six
			 * questions of each COCO image). */
			const cJSON *id = cJSON_GetObjectItemCaseSensitive(q, "question_id");
			char *key = cJSON_IsString(id) ? xstrdup(id->valuestring)
				    : cJSON_IsNumber(id) ? xasprintf("%.0f", id->valuedouble)
				    : xasprintf("line %ld", ql);
			eval_pope_add(e, key, str_item(q, "image"), cat ? cat : split,
				      !strcmp(label, "yes"), text);
			free(key);
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

void eval_tally_add(struct eval_tally *t, const struct eval_score *s, double w)
{
	switch (s->task) {
	case EVAL_POPE:
		t->pope[s->split][s->label ? (s->yes ? EVAL_TP : EVAL_FN) : (s->yes ? EVAL_FP : EVAL_TN)] += w;
		break;
	case EVAL_DESCRIBE:
		t->chair_n += w;
		t->chair_hall_caps += w * (s->hallucinated > 0);
		t->chair_mentions += w * s->mentions;
		t->chair_hall_mentions += w * s->hallucinated;
		t->chair_truth += w * s->objects;
		t->chair_covered += w * s->covered;
		break;
	case EVAL_COLOR:
		t->color_n += w;
		t->color_ok += w * s->correct;
		break;
	case EVAL_COUNT:
		t->count_n += w;
		t->count_ok += w * s->correct;
		break;
	}
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0.0;
}

double eval_metric_value(const struct eval_tally *t, enum eval_metric m, int split)
{
	const double *p = t->pope[split];
	double prec, rec;

	switch (m) {
	case EVAL_POPE_ACCURACY:
		return ratio(p[EVAL_TP] + p[EVAL_TN], p[EVAL_TP] + p[EVAL_FP] + p[EVAL_TN] + p[EVAL_FN]);
	case EVAL_POPE_PRECISION:
		return ratio(p[EVAL_TP], p[EVAL_TP] + p[EVAL_FP]);
	case EVAL_POPE_RECALL:
		return ratio(p[EVAL_TP], p[EVAL_TP] + p[EVAL_FN]);
	case EVAL_POPE_F1:
		prec = ratio(p[EVAL_TP], p[EVAL_TP] + p[EVAL_FP]);
		rec = ratio(p[EVAL_TP], p[EVAL_TP] + p[EVAL_FN]);
		return prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0;
	case EVAL_POPE_YES_RATIO:
		return ratio(p[EVAL_TP] + p[EVAL_FP], p[EVAL_TP] + p[EVAL_FP] + p[EVAL_TN] + p[EVAL_FN]);
	case EVAL_CHAIR_S:
		return ratio(t->chair_hall_caps, t->chair_n);
	case EVAL_CHAIR_I:
		return ratio(t->chair_hall_mentions, t->chair_mentions);
	case EVAL_CHAIR_RECALL:
		return ratio(t->chair_covered, t->chair_truth);
	case EVAL_COLOR_ACCURACY:
		return ratio(t->color_ok, t->color_n);
	case EVAL_COUNT_ACCURACY:
		return ratio(t->count_ok, t->count_n);
	default:
		return NAN;
	}
}

void eval_metric_name(enum eval_metric m, const char **section, const char **key)
{
	static const char *const names[EVAL_NMETRICS][2] = {
		{ "pope", "accuracy" }, { "pope", "precision" }, { "pope", "recall" },
		{ "pope", "f1" }, { "pope", "yes_ratio" }, { "chair", "chair_s" },
		{ "chair", "chair_i" }, { "chair", "recall" }, { "color", "accuracy" },
		{ "count", "accuracy" },
	};
	*section = names[m][0];
	*key = names[m][1];
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
	struct eval_tally t = { 0 };
	int order[EVAL_MAX_SPLITS];

	for (long i = 0; i < e->samples; i++)
		eval_tally_add(&t, &e->scores[i], 1);
	cJSON_AddNumberToObject(m, "samples", (double)e->samples);
	for (int i = 0; i < e->npope; i++)
		order[i] = i;
	/* random, popular, adversarial first; others as they came */
	for (int i = 1; i < e->npope; i++)
		for (int j = i; j > 0 && split_rank(e->pope[order[j - 1]].split) >
					 split_rank(e->pope[order[j]].split); j--) {
			int tmp = order[j];
			order[j] = order[j - 1];
			order[j - 1] = tmp;
		}
	if (e->npope) {
		cJSON *pope = cJSON_AddObjectToObject(m, "pope");
		for (int k = 0; k < e->npope; k++) {
			const struct eval_pope *p = &e->pope[order[k]];
			o = cJSON_AddObjectToObject(pope, p->split);
			cJSON_AddNumberToObject(o, "n", (double)(p->tp + p->fp + p->tn + p->fn));
			for (int x = EVAL_POPE_ACCURACY; x <= EVAL_POPE_YES_RATIO; x++) {
				const char *sect, *key;
				eval_metric_name(x, &sect, &key);
				add_num(o, key, eval_metric_value(&t, x, order[k]));
			}
			cJSON_AddNumberToObject(o, "tp", (double)p->tp);
			cJSON_AddNumberToObject(o, "fp", (double)p->fp);
			cJSON_AddNumberToObject(o, "tn", (double)p->tn);
			cJSON_AddNumberToObject(o, "fn", (double)p->fn);
		}
	}
	if (e->chair_n) {
		o = cJSON_AddObjectToObject(m, "chair");
		cJSON_AddNumberToObject(o, "n", (double)e->chair_n);
		add_num(o, "chair_s", eval_metric_value(&t, EVAL_CHAIR_S, 0));
		add_num(o, "chair_i", eval_metric_value(&t, EVAL_CHAIR_I, 0));
		add_num(o, "recall", eval_metric_value(&t, EVAL_CHAIR_RECALL, 0));
		cJSON_AddNumberToObject(o, "mentions", (double)e->chair_mentions);
		cJSON_AddNumberToObject(o, "hallucinated", (double)e->chair_hall_mentions);
	}
	const char *names[2] = { "color", "count" };
	const long nn[2] = { e->color_n, e->count_n }, ok[2] = { e->color_ok, e->count_ok };
	const enum eval_metric acc[2] = { EVAL_COLOR_ACCURACY, EVAL_COUNT_ACCURACY };
	for (int i = 0; i < 2; i++) {
		if (!nn[i])
			continue;
		o = cJSON_AddObjectToObject(m, names[i]);
		cJSON_AddNumberToObject(o, "n", (double)nn[i]);
		cJSON_AddNumberToObject(o, "correct", (double)ok[i]);
		add_num(o, "accuracy", eval_metric_value(&t, acc[i], 0));
	}
	return m;
}

/* Per-sample scores as JSON, and back. */

static const char *const task_names[] = { "pope", "describe", "color", "count" };

cJSON *eval_scores_json(const struct eval *e)
{
	cJSON *a = cJSON_CreateArray();
	for (long i = 0; i < e->samples; i++) {
		const struct eval_score *s = &e->scores[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "key", s->key);
		cJSON_AddStringToObject(o, "image", s->image);
		cJSON_AddStringToObject(o, "task", task_names[s->task]);
		if (s->task == EVAL_POPE) {
			cJSON_AddStringToObject(o, "split", e->pope[s->split].split);
			cJSON_AddStringToObject(o, "label", s->label ? "yes" : "no");
			cJSON_AddStringToObject(o, "answer", s->yes ? "yes" : "no");
		} else if (s->task == EVAL_DESCRIBE) {
			cJSON_AddNumberToObject(o, "objects", s->objects);
			cJSON_AddNumberToObject(o, "covered", s->covered);
			cJSON_AddNumberToObject(o, "mentions", s->mentions);
			cJSON_AddNumberToObject(o, "hallucinated", s->hallucinated);
		} else {
			cJSON_AddBoolToObject(o, "correct", s->correct);
		}
		cJSON_AddItemToArray(a, o);
	}
	return a;
}

/* Member NAME of O, "yes" or "no", into *V (1 = yes); -1 if it is neither. */
static int yes_no(const cJSON *o, const char *name, int *v)
{
	const char *t = str_item(o, name);
	if (!t || (strcmp(t, "yes") && strcmp(t, "no")))
		return -1;
	*v = !strcmp(t, "yes");
	return 0;
}

/* Member NAME of O, a whole number in [0, 2^31), into *V; -1 if it is not. */
static int count_item(const cJSON *o, const char *name, int *v)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || j->valuedouble >= 2147483648.0 ||
	    j->valuedouble != floor(j->valuedouble))
		return -1;
	*v = (int)j->valuedouble;
	return 0;
}

/* One per_sample entry into *S; -1 with *ERR naming the bad member. */
static int score_parse(const cJSON *o, struct eval_score *s, const char **split, const char **err)
{
	const char *task = str_item(o, "task");
	const cJSON *c;

	memset(s, 0, sizeof(*s));
	*split = NULL;
	s->key = (char *)str_item(o, "key");
	s->image = (char *)str_item(o, "image");
	if (!cJSON_IsObject(o))
		return *err = "not an object", -1;
	if (!s->key || !*s->key)
		return *err = "\"key\" is not a non-empty string", -1;
	if (!s->image || !*s->image)
		return *err = "\"image\" is not a non-empty string", -1;
	for (s->task = 0; s->task < (int)ARRAY_LEN(task_names); s->task++)
		if (task && !strcmp(task, task_names[s->task]))
			break;
	switch (s->task) {
	case EVAL_POPE:
		*split = str_item(o, "split");
		if (!*split || !**split || strlen(*split) >= sizeof(((struct eval_pope *)0)->split))
			return *err = "\"split\" is not a name of 1 to 31 bytes", -1;
		if (yes_no(o, "label", &s->label) < 0)
			return *err = "\"label\" is not \"yes\" or \"no\"", -1;
		if (yes_no(o, "answer", &s->yes) < 0)
			return *err = "\"answer\" is not \"yes\" or \"no\"", -1;
		return 0;
	case EVAL_DESCRIBE:
		if (count_item(o, "objects", &s->objects) < 0 || count_item(o, "covered", &s->covered) < 0 ||
		    count_item(o, "mentions", &s->mentions) < 0 ||
		    count_item(o, "hallucinated", &s->hallucinated) < 0)
			return *err = "\"objects\", \"covered\", \"mentions\" and \"hallucinated\" must be counts", -1;
		if (s->covered > s->objects || s->hallucinated > s->mentions)
			return *err = "more objects covered than present, or more mentions hallucinated than made", -1;
		return 0;
	case EVAL_COLOR:
	case EVAL_COUNT:
		c = cJSON_GetObjectItemCaseSensitive(o, "correct");
		if (!cJSON_IsBool(c))
			return *err = "\"correct\" is not true or false", -1;
		s->correct = cJSON_IsTrue(c);
		return 0;
	default:
		return *err = "\"task\" is not pope, describe, color or count", -1;
	}
}

/* The metrics of M without what is not recomputed from the scores. */
static cJSON *metrics_only(const cJSON *m)
{
	cJSON *c = cJSON_Duplicate(m, 1);
	cJSON_DeleteItemFromObjectCaseSensitive(c, "per_sample");
	cJSON_DeleteItemFromObjectCaseSensitive(c, "skipped");
	return c;
}

int eval_load_metrics(struct eval *e, const cJSON *m, const char *where)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(m, "per_sample"), *it;
	long i = 0;

	if (!cJSON_IsObject(m))
		return error("%s: not a metrics JSON object", where);
	if (!cJSON_IsArray(a))
		return error("%s: no \"per_sample\" array: metrics alone cannot be paired "
			     "(seva-eval --json writes the scores of every sample)", where);
	cJSON_ArrayForEach(it, a) {
		struct eval_score s;
		const char *split, *err;
		if (score_parse(it, &s, &split, &err) < 0) {
			const char *key = str_item(it, "key");
			if (key && *key)
				return error("%s: per_sample[%ld] (key %s): %s", where, i, key, err);
			return error("%s: per_sample[%ld]: %s", where, i, err);
		}
		eval_add_score(e, &s, split);
		i++;
	}
	/* The scores are what is compared; metrics that disagree with them
	 * mean the file was edited, or is not seva-eval's. */
	cJSON *want = metrics_only(m), *got = eval_metrics(e);
	int same = cJSON_Compare(want, got, 1);
	cJSON_Delete(want);
	if (!same) {
		/* Name the first section that differs, or that only the file has. */
		const char *bad = NULL;
		const cJSON *x;
		cJSON_ArrayForEach(x, got)
			if (!bad && !cJSON_Compare(x, cJSON_GetObjectItemCaseSensitive(m, x->string), 1))
				bad = x->string;
		cJSON_ArrayForEach(x, m)
			if (!bad && strcmp(x->string, "per_sample") && strcmp(x->string, "skipped") &&
			    !cJSON_GetObjectItemCaseSensitive(got, x->string))
				bad = x->string;
		error("%s: \"%s\" is not what its per_sample scores give (the file was edited, "
		      "or not written by seva-eval --json)", where, bad ? bad : "samples");
		cJSON_Delete(got);
		return -1;
	}
	cJSON_Delete(got);
	return 0;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

/* Rows of a table: section, row name, and the metrics shown. */
static const char *const pope_cols[] = { "accuracy", "precision", "recall", "f1", "yes_ratio" };

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
