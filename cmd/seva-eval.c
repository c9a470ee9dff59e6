/* seva-eval — scores answers (response.txt) against ground truth
 * (json.truth): POPE, CHAIR, exact match; compares two runs; exports the
 * MM-Vet and LLaVA-Bench answer formats (see seva-eval(1)). */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "eval.h"
#include "rec.h"
#include "util.h"

static const char usage_text[] =
	"seva-eval [--json] [-o FILE] [-k] [-q] [--vocab FILE] [--mmvet OUT.json]\n"
	"                 [--llava-bench OUT.jsonl] [--model-id ID] [FILE...]\n"
	"       seva-eval --pope-questions Q.jsonl --pope-answers A.jsonl [--json] [-o FILE]\n"
	"       seva-eval --compare BEFORE AFTER... [--boot N] [-s SEED] [--json] [-o FILE]";

struct opts {
	int json, keep, quiet;
	const char *out, *vocab, *mmvet, *llava, *model_id;
	const char *pope_q, *pope_a;
	struct compare_opts cmp;
};

/* Answers kept for the exports. */
struct exports {
	cJSON *mmvet;   /* {"id": answer} */
	cJSON *llava;   /* [{question_id, prompt, text, answer_id, model_id, metadata}] */
};

static int all_digits(const char *s)
{
	if (!*s || strlen(s) > 15)
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* A stable answer id: FNV-1a of key and text (LLaVA uses random ids). */
static char *answer_id(const char *key, const char *text)
{
	unsigned long long h = 0xcbf29ce484222325ULL;
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	h = (h ^ 0) * 0x100000001b3ULL;
	for (const char *p = text; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	return xasprintf("seva-%016llx", h);
}

static const char *json_str(const cJSON *o, const char *key)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(j) ? j->valuestring : NULL;
}

static void export_add(struct exports *x, const struct opts *o, const struct sample *s,
		       const cJSON *json, const char *response)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(json, "id");
	const cJSON *qid = cJSON_GetObjectItemCaseSensitive(json, "question_id");
	char num[32];
	const char *name = s->key;

	if (cJSON_IsString(id)) {
		name = id->valuestring;
	} else if (cJSON_IsNumber(id)) {
		snprintf(num, sizeof(num), "%.0f", id->valuedouble);
		name = num;
	}
	if (x->mmvet) /* a repeated id: the last answer wins, in write_exports */
		cJSON_AddStringToObject(x->mmvet, name, response);
	if (x->llava) {
		cJSON *a = cJSON_CreateObject();
		if (!qid)
			qid = id;
		if (cJSON_IsNumber(qid))
			cJSON_AddNumberToObject(a, "question_id", qid->valuedouble);
		else if (cJSON_IsString(qid) && all_digits(qid->valuestring))
			cJSON_AddNumberToObject(a, "question_id", atof(qid->valuestring));
		else if (cJSON_IsString(qid))
			cJSON_AddStringToObject(a, "question_id", qid->valuestring);
		else if (all_digits(s->key))
			cJSON_AddNumberToObject(a, "question_id", atof(s->key));
		else
			cJSON_AddStringToObject(a, "question_id", s->key);
		const char *prompt = json_str(json, "prompt");
		cJSON_AddStringToObject(a, "prompt", prompt ? prompt : "");
		cJSON_AddStringToObject(a, "text", response);
		char *aid = answer_id(s->key, response);
		cJSON_AddStringToObject(a, "answer_id", aid);
		free(aid);
		const char *model = o->model_id;
		cJSON *gen = sample_json(s, "gen.json");
		if (!model)
			model = json_str(gen, "model_id") ? json_str(gen, "model_id") : json_str(gen, "model");
		cJSON_AddStringToObject(a, "model_id", model ? model : "seva");
		cJSON_Delete(gen);
		cJSON_AddItemToObject(a, "metadata", cJSON_CreateObject());
		cJSON_AddItemToArray(x->llava, a);
	}
}

/* An item and its place in the list: sorts that keep the input order of
 * equals (qsort is not stable; an insertion sort was quadratic). */
struct ranked {
	cJSON *it;
	int pos;
	double q;
};

/* LLaVA-Bench answers in question order: by numeric question_id when every
 * id is a number, else as read. */
static int by_question(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;
	return x->q < y->q ? -1 : x->q > y->q ? 1 : x->pos - y->pos;
}

static int by_name(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;
	int c = strcmp(x->it->string, y->it->string);
	return c ? c : x->pos - y->pos;
}

/* MM-Vet's {"id": answer}: for an id answered twice the later answer, at
 * its place, as deleting and re-adding each would give, in O(n log n). */
static void mmvet_dedupe(cJSON *o)
{
	int n = cJSON_GetArraySize(o), i = 0;
	struct ranked *v = xmalloc((size_t)(n + 1) * sizeof *v);
	cJSON *it;
	cJSON_ArrayForEach(it, o) {
		v[i].it = it;
		v[i].pos = i;
		i++;
	}
	qsort(v, (size_t)n, sizeof *v, by_name);
	for (i = 0; i + 1 < n; i++)
		if (!strcmp(v[i].it->string, v[i + 1].it->string))
			cJSON_Delete(cJSON_DetachItemViaPointer(o, v[i].it));
	free(v);
}

static int write_exports(struct exports *x, const struct opts *o)
{
	int rc = 0;
	if (x->mmvet) {
		mmvet_dedupe(x->mmvet);
		char *text = cJSON_Print(x->mmvet);
		struct buf b;
		buf_init(&b);
		buf_addstr(&b, text);
		buf_addstr(&b, "\n");
		rc |= write_file_atomic(o->mmvet, b.data, b.len);
		buf_release(&b);
		free(text);
	}
	if (x->llava) {
		int n = cJSON_GetArraySize(x->llava), numeric = 1;
		struct ranked *v = xmalloc((size_t)(n + 1) * sizeof(*v));
		cJSON *it;
		struct buf b;
		int i = 0;
		cJSON_ArrayForEach(it, x->llava) {
			const cJSON *q = cJSON_GetObjectItem(it, "question_id");
			numeric &= cJSON_IsNumber(q);
			v[i].it = it;
			v[i].pos = i;
			v[i].q = cJSON_IsNumber(q) ? q->valuedouble : 0;
			i++;
		}
		if (numeric) /* equal ids keep input order */
			qsort(v, (size_t)n, sizeof *v, by_question);
		buf_init(&b);
		for (i = 0; i < n; i++) {
			char *line = cJSON_PrintUnformatted(v[i].it);
			buf_addstr(&b, line);
			buf_addstr(&b, "\n");
			free(line);
		}
		rc |= write_file_atomic(o->llava, b.data, b.len);
		buf_release(&b);
		free(v);
	}
	return rc ? -1 : 0;
}

/* Scores one sample; -1 with the reason in *WHY when it cannot be scored. */
static int score(struct eval *e, struct exports *x, const struct opts *o, const struct sample *s,
		 const char **why)
{
	static char reason[256];
	const char *response = sample_want_text(s, "response.txt", why), *err;
	cJSON *json = sample_json(s, "json");
	const cJSON *truth = cJSON_GetObjectItemCaseSensitive(json, "truth");
	int exporting = x->mmvet || x->llava, rc = -1;

	if (!response) {
		if (!sample_get(s, "response.txt"))
			*why = "no response.txt (run seva-generate first)";
	} else if (!json && sample_get(s, "json")) {
		*why = "field 'json': not valid JSON";
	} else if (!truth && !exporting) {
		*why = "no json.truth to score against";
	} else if (truth && eval_add(e, s->key, json_str(json, "image_id"), truth, response, &err) < 0) {
		snprintf(reason, sizeof reason, "json.truth: %s", err);
		*why = reason;
	} else {
		if (exporting)
			export_add(x, o, s, json, response);
		rc = 0;
	}
	cJSON_Delete(json);
	return rc;
}

/* Scores the samples of FILES (N; none: stdin) into E. Returns the number
 * skipped (-k), or -1 when a bad one ends the run; sets *STATUS (if not
 * NULL) to rec_input_release's status when not 0. */
static long score_files(struct eval *e, struct exports *x, const struct opts *o, char *const *files,
			int n, int *status)
{
	struct rec_input in;
	struct sample s;
	const char *why;
	int rc;
	sample_init(&s);
	rec_input_init(&in, files, n, o->keep);
	while ((rc = rec_input_next(&in, &s)) > 0)
		if (score(e, x, o, &s, &why) < 0 && rec_input_refuse(&in, why) < 0)
			break;
	sample_release(&s);
	int r = rec_input_release(&in);
	if (r && status)
		*status = r;
	return in.failed ? -1 : in.skipped;
}

/* A run to compare into E: a metrics JSON written by --json (its
 * per-sample scores), or samples to score. */
static int load_run(struct eval *e, const struct opts *o, const char *path)
{
	int first = EOF;
	if (strcmp(path, "-")) {
		FILE *f = fopen(path, "rb");
		if (!f)
			return error("open '%s':", path);
		while ((first = getc(f)) != EOF && isspace(first))
			;
		fclose(f);
	}
	if (first == '{') {
		size_t len;
		unsigned char *data = read_file(path, &len);
		if (!data)
			return -1;
		cJSON *m = cJSON_ParseWithLength((char *)data, len);
		free(data);
		if (!m)
			return error("%s: not valid JSON", path);
		int rc = eval_load_metrics(e, m, path);
		cJSON_Delete(m);
		return rc;
	}
	/* A skipped sample would only pair as missing: refuse the run here. */
	struct exports none = { NULL, NULL };
	char *files[] = { (char *)path };
	int skips = 0;
	long skipped = score_files(e, &none, o, files, 1, &skips);
	return skipped < 0 || skips ? -1 : 0;
}

static int emit(const struct opts *o, struct buf *b)
{
	if (o->out && strcmp(o->out, "-"))
		return write_file_atomic(o->out, b->data, b->len) ? 1 : 0;
	if (b->len)
		fwrite(b->data, 1, b->len, stdout);
	return 0;
}

static void add_json(struct buf *b, const cJSON *m)
{
	char *text = cJSON_Print(m);
	buf_addstr(b, text);
	buf_addstr(b, "\n");
	free(text);
}

/* The metrics M with E's per-sample scores, one line each so the file
 * stays readable. */
static void add_metrics_json(struct buf *b, const cJSON *m, const struct eval *e)
{
	char *text = cJSON_Print(m);
	size_t n = strlen(text);
	cJSON *scores = eval_scores_json(e), *it;

	while (n && text[n - 1] != '}') /* reopen the object */
		n--;
	if (n)
		n--;
	while (n && isspace((unsigned char)text[n - 1]))
		n--;
	buf_add(b, text, n);
	buf_addstr(b, cJSON_GetArraySize((cJSON *)m) ? ",\n\t\"per_sample\": [" : "\n\t\"per_sample\": [");
	cJSON_ArrayForEach(it, scores) {
		char *line = cJSON_PrintUnformatted(it);
		buf_addstr(b, it == scores->child ? "\n\t\t" : ",\n\t\t");
		buf_addstr(b, line);
		free(line);
	}
	buf_addstr(b, scores->child ? "\n\t]\n}\n" : "]\n}\n");
	cJSON_Delete(scores);
	free(text);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "output", required_argument, NULL, 'o' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "compare", no_argument, NULL, 'C' },
		{ "vocab", required_argument, NULL, 'V' },
		{ "pope-questions", required_argument, NULL, 'Q' },
		{ "pope-answers", required_argument, NULL, 'A' },
		{ "mmvet", required_argument, NULL, 'M' },
		{ "llava-bench", required_argument, NULL, 'L' },
		{ "model-id", required_argument, NULL, 'I' },
		{ "boot", required_argument, NULL, 'B' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .cmp = { .resamples = 2000, .seed = 0, .level = 0.95 } };
	int compare = 0, c, status = 0;

	util_init_args(argc, argv);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "o:kqs:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'J': o.json = 1; break;
		case 'o': o.out = optarg; break;
		case 'k': o.keep = 1; break;
		case 'q': o.quiet = 1; break;
		case 'C': compare = 1; break;
		case 'V': o.vocab = optarg; break;
		case 'Q': o.pope_q = optarg; break;
		case 'A': o.pope_a = optarg; break;
		case 'M': o.mmvet = optarg; break;
		case 'L': o.llava = optarg; break;
		case 'I': o.model_id = optarg; break;
		case 'B': o.cmp.resamples = arg_long("--boot", optarg, 1, 1000000); break;
		case 's': o.cmp.seed = arg_seed("-s", optarg); break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	const char *why = NULL;
	if (compare && (argc - optind < 2 || argc - optind > 1001))
		why = "--compare takes a base and 1 to 1000 runs to compare with it";
	else if (!o.pope_q != !o.pope_a)
		why = "--pope-questions and --pope-answers go together";
	else if (compare && (o.pope_q || o.mmvet || o.llava))
		why = "--compare reads saved results: --pope-questions, --mmvet and --llava-bench score samples";
	if (why) {
		warn("%s", why);
		usage_die(usage_text);
	}

	struct eval_vocab *vocab = o.vocab ? eval_vocab_load(o.vocab) : eval_vocab_default();
	if (!vocab)
		return 1;
	struct buf b;
	buf_init(&b);

	if (compare) {
		int nruns = argc - optind;
		struct eval *runs = xcalloc((size_t)nruns, sizeof(*runs));
		const struct eval **after = xmalloc((size_t)nruns * sizeof(*after));
		cJSON *cmp = NULL;
		for (int i = 0; i < nruns; i++)
			eval_init(&runs[i], vocab);
		for (int i = 1; i < nruns; i++)
			after[i - 1] = &runs[i];
		for (int i = 0; i < nruns && !status; i++)
			if (load_run(&runs[i], &o, argv[optind + i]) < 0)
				status = 1;
		if (!status &&
		    !(cmp = compare_runs(&runs[0], after, nruns - 1, (const char *const *)argv + optind, &o.cmp)))
			status = 1;
		if (cmp) {
			if (o.json)
				add_json(&b, cmp);
			else
				compare_table(&b, cmp);
			status = emit(&o, &b);
		}
		cJSON_Delete(cmp);
		for (int i = 0; i < nruns; i++)
			eval_release(&runs[i]);
		free(runs);
		free(after);
		goto done;
	}

	struct eval e;
	struct exports x = { o.mmvet ? cJSON_CreateObject() : NULL,
			     o.llava ? cJSON_CreateArray() : NULL };
	long skipped = 0;
	int skips = 0;
	eval_init(&e, vocab);
	if (o.pope_q && eval_pope_files(&e, o.pope_q, o.pope_a) < 0)
		status = 1;
	/* Samples from the files named, or stdin unless only POPE files were given. */
	if (!status && (optind < argc || !o.pope_q) &&
	    (skipped = score_files(&e, &x, &o, argv + optind, argc - optind, &skips)) < 0)
		status = 1;
	if (!status) {
		cJSON *m = eval_metrics(&e);
		if (skipped)
			cJSON_AddNumberToObject(m, "skipped", (double)skipped);
		if (o.json)
			add_metrics_json(&b, m, &e);
		else
			eval_table(&b, m);
		cJSON_Delete(m);
		status = emit(&o, &b);
		if (!status && write_exports(&x, &o) < 0)
			status = 1;
		if (!status)
			status = skips;
	}
	cJSON_Delete(x.mmvet);
	cJSON_Delete(x.llava);
	eval_release(&e);
done:
	buf_release(&b);
	eval_vocab_free(vocab);
	return status;
}
