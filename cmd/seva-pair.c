/* seva-pair — DPO preference pairs from generated samples: the answer on the
 * clean image is chosen, the answer on the augmented view rejected, kept only
 * where the two differ (SeVa). Exports TRL and SeVa JSON. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "augment.h"
#include "conversation.h"
#include "pair.h"
#include "rec.h"
#include "rng.h"
#include "util.h"

static const char usage[] =
	"seva-pair [-t] [-o FILE] [--normalize] [--min-len N] [--swap] [--random-negative] [-s SEED]\n"
	"       [--drop-truncated] [--trl FILE] [--seva FILE] [--images DIR] [-k] [-q] [FILE...]";

static struct {
	enum rec_format fmt;
	const char *out, *trl, *seva, *images;
	int normalize, swap, random_negative, keep_going, quiet, drop_truncated;
	long min_len;
	uint64_t seed;
} opt = { .fmt = REC_MSGPACK };

static struct {
	long kept, identical, short_, missing; /* missing: refused for what they lack */
	long truncated; /* kept pairs with an answer cut at the token limit, or dropped ones */
} st;

static struct rec_input in;

static struct rec_writer *w;
/* The exports, written as the pairs are made (memory stays flat however
 * many there are) and published whole at the end: TRL's JSON lines and
 * SeVa's JSON list, NSEVA items so far. */
static struct out_file trl, seva;
static long nseva;
static char *filter_desc;
static char *spool_dir, *spool_path; /* --random-negative: the samples wait here */
static struct progress prog;

/* --random-negative: every sample's clean answer, in stream order. */
static struct {
	char **answer;
	size_t n, cap;
} pool;

static _Noreturn void finish(int failed)
{
	progress_done(&prog);
	/* every output finished before any is published: all appear or none */
	struct out_file pairs = { 0 };
	struct out_file *outs[] = { &trl, &seva, &pairs };
	if (seva.f && !failed)
		fputs(nseva ? "\n]\n" : "[]\n", seva.f);
	for (int i = 0; i < 2; i++)
		if (outs[i]->f && !failed && out_finish(outs[i]))
			failed = 1;
	if (w && failed)
		rec_writer_abort(w);
	else if (w && rec_writer_finish(w, &pairs))
		failed = 1;
	w = NULL;
	for (int i = 0; i < 3; i++)
		if (failed)
			out_abort(outs[i]);
		else if (out_publish(outs[i]))
			failed = 1;
	if (spool_path)
		unlink(spool_path);
	if (spool_dir)
		rmdir(spool_dir);
	free(spool_path);
	free(spool_dir);
	for (size_t i = 0; i < pool.n; i++)
		free(pool.answer[i]);
	free(pool.answer);
	free(filter_desc);
	if (!opt.quiet)
		warn("read %ld, kept %ld, dropped: %ld identical, %ld too short, %ld truncated, %ld missing fields, %ld bad",
		     in.read, st.kept, st.identical, st.short_, opt.drop_truncated ? st.truncated : 0,
		     st.missing, in.skipped - st.missing);
	if (st.truncated && !opt.drop_truncated)
		warn("%ld pairs hold an answer cut at the token limit (gen.json finish \"length\"): "
		     "flagged in pair.json \"truncated\"; --drop-truncated leaves them out", st.truncated);
	/* the -k count in every tool's words, -q or not */
	int r = rec_input_release(&in);
	exit(failed ? 1 : r);
}

/* A sample that cannot be paired for what it lacks or holds (WHY), at
 * WHERE: the end of the run, or with -k counted and skipped. */
static void refuse(const char *where, const char *why)
{
	st.missing++;
	if (rec_input_refuse_at(&in, where, why) < 0)
		finish(1);
}

/* The text field NAME, cleaned; NULL with the reason in *WHY if absent or
 * not text. */
static char *answer(const struct sample *s, const char *name, const char **why)
{
	const char *text = sample_want_text(s, name, why);
	return text ? pair_clean(text) : NULL;
}

static int same_answer(const char *a, const char *b)
{
	if (!opt.normalize)
		return !strcmp(a, b);
	char *x = pair_normalize(a), *y = pair_normalize(b);
	int same = !strcmp(x, y);
	free(x);
	free(y);
	return same;
}

static const char *image_ext(const struct field *img)
{
	const char *dot = strrchr(img->name, '.');
	return dot ? dot + 1 : img->name;
}

/* One export item: O unformatted, after SEP; a write error ends the run. */
static void export_put(struct out_file *f, const char *sep, cJSON *o)
{
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	int bad = fputs(sep, f->f) < 0 || fputs(text, f->f) < 0;
	cJSON_free(text);
	if (bad) {
		error("write '%s':", f->tmp ? f->tmp : f->path);
		finish(1);
	}
}

static void export(const struct sample *s, const struct field *img, const char *q, const char *chosen,
		   const char *rejected)
{
	char *file = xasprintf("%s.%s", s->key, image_ext(img));
	if (opt.trl) {
		char *rel = xasprintf("%s/%s", opt.images, file);
		cJSON *o = cJSON_CreateObject();
		cJSON *prompt = cJSON_AddArrayToObject(o, "prompt");
		cJSON *turn = cJSON_CreateObject();
		cJSON_AddStringToObject(turn, "role", "user");
		cJSON *content = cJSON_AddArrayToObject(turn, "content");
		cJSON *part = cJSON_CreateObject();
		cJSON_AddStringToObject(part, "type", "image");
		cJSON_AddItemToArray(content, part);
		part = cJSON_CreateObject();
		cJSON_AddStringToObject(part, "type", "text");
		cJSON_AddStringToObject(part, "text", q);
		cJSON_AddItemToArray(content, part);
		cJSON_AddItemToArray(prompt, turn);
		const char *side[2] = { "chosen", "rejected" }, *text[2] = { chosen, rejected };
		for (int i = 0; i < 2; i++) {
			cJSON *list = cJSON_AddArrayToObject(o, side[i]);
			turn = cJSON_CreateObject();
			cJSON_AddStringToObject(turn, "role", "assistant");
			content = cJSON_AddArrayToObject(turn, "content");
			part = cJSON_CreateObject();
			cJSON_AddStringToObject(part, "type", "text");
			cJSON_AddStringToObject(part, "text", text[i]);
			cJSON_AddItemToArray(content, part);
			cJSON_AddItemToArray(list, turn);
		}
		cJSON *images = cJSON_AddArrayToObject(o, "images");
		cJSON_AddItemToArray(images, cJSON_CreateString(rel));
		free(rel);
		export_put(&trl, "", o);
		if (fputc('\n', trl.f) == EOF) {
			error("write '%s':", trl.tmp ? trl.tmp : trl.path);
			finish(1);
		}
	}
	if (opt.seva) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "id", s->key);
		cJSON_AddStringToObject(o, "image_id", file);
		cJSON_AddStringToObject(o, "question", q);
		cJSON_AddStringToObject(o, "chosen", chosen);
		cJSON_AddStringToObject(o, "reject", rejected);
		export_put(&seva, nseva++ ? ",\n" : "[\n", o);
	}
	if (opt.images) {
		char *path = xasprintf("%s/%s", opt.images, file);
		if (write_file_atomic(path, img->data, img->len))
			finish(1);
		free(path);
	}
	free(file);
}

/* Makes the pair of S in place; returns 1 if it is to be written. */
/* Fields of the generated sample that the pair replaces. */
static int consumed(const char *name)
{
	static const char *const gone[] = {
		"response.txt", "aug.response.txt", "gen.json", "prompt.txt", "chosen.txt",
		"rejected.txt", "pair.json", "ref.json",
	};
	if (!strncmp(name, "aug.", 4))
		return 1;
	for (size_t i = 0; i < sizeof gone / sizeof *gone; i++)
		if (!strcmp(name, gone[i]))
			return 1;
	return 0;
}

/* CUT[0], CUT[1]: 1 when gen.json says the clean / augmented answer ended
 * at the token limit ("finish": "length"), 0 when it stopped, -1 when
 * gen.json does not say (answers from elsewhere). */
static void answers_cut(const struct sample *s, int cut[2])
{
	static const char *const view[2] = {"clean", "aug"};
	cJSON *g = sample_json(s, "gen.json");
	const cJSON *fin = g ? cJSON_GetObjectItemCaseSensitive(g, "finish") : NULL;
	for (int i = 0; i < 2; i++) {
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(fin, view[i]);
		cut[i] = cJSON_IsString(f) ? !strcmp(f->valuestring, "length") : -1;
	}
	cJSON_Delete(g);
}

static int make_pair(const char *where, struct sample *s, char *clean, char *aug)
{
	const char *why;
	struct field *img = sample_image(s);
	char *q = conversation_question(s, &why);
	int keep = 0;
	if (!q || !img) {
		refuse(where, !q ? why : "no clean image field");
		goto out;
	}
	if (same_answer(clean, aug)) {
		st.identical++;
		goto out;
	}
	if (opt.min_len && ((long)pair_length(clean) < opt.min_len || (long)pair_length(aug) < opt.min_len)) {
		st.short_++;
		goto out;
	}
	/* an answer cut at max_new_tokens is no answer to prefer (R6) */
	int cut[2];
	answers_cut(s, cut);
	if (opt.swap) {
		int t = cut[0];
		cut[0] = cut[1];
		cut[1] = t;
	}
	if (opt.random_negative)
		cut[1] = -1; /* another sample's answer: unknown here */
	if (cut[0] > 0 || cut[1] > 0) {
		st.truncated++;
		if (opt.drop_truncated)
			goto out;
	}
	const char *chosen = opt.swap ? aug : clean, *rejected = opt.swap ? clean : aug;
	cJSON *recipe = sample_json(s, "aug.json");
	/* The image the augmented view starts from, when it is not the clean
	 * one, stays: with the recipe it rebuilds the view (seva-dpo's
	 * mdpo_cond scores the chosen answer on it). */
	const char *base = augment_base_field(recipe, sample_get(s, "aug.png") != NULL);
	char *keep_base = base ? xstrdup(base) : NULL;
	cJSON *pj = cJSON_CreateObject();
	cJSON_AddStringToObject(pj, "source", s->key);
	cJSON_AddItemToObject(pj, "recipe", recipe ? recipe : cJSON_CreateNull());
	cJSON_AddStringToObject(pj, "filter", filter_desc);
	cJSON_AddStringToObject(pj, "mode", opt.random_negative ? "random-negative" : "augment");
	cJSON_AddBoolToObject(pj, "swap", opt.swap);
	cJSON *tr = cJSON_AddObjectToObject(pj, "truncated");
	for (int i = 0; i < 2; i++)
		cJSON_AddItemToObject(tr, i ? "rejected" : "chosen",
				      cut[i] < 0 ? cJSON_CreateNull() : cJSON_CreateBool(cut[i]));

	/* What the pair replaces goes (the answers, the augmented view, its
	 * recipe, now in pair.json, and an older pair's fields); everything
	 * else, fields unknown to us included, passes through as it came. */
	for (size_t i = 0; i < s->nfields;) {
		const char *n = s->fields[i].name;
		if (&s->fields[i] != img && consumed(n) && !(keep_base && !strcmp(n, keep_base)))
			sample_remove(s, n);
		else
			i++;
	}
	sample_set_text(s, "prompt.txt", q);
	sample_set_text(s, "chosen.txt", chosen);
	sample_set_text(s, "rejected.txt", rejected);
	sample_set_json(s, "pair.json", pj);
	cJSON_Delete(pj);
	free(keep_base);
	export(s, sample_image(s), q, chosen, rejected);
	st.kept++;
	keep = 1;
out:
	free(q);
	return keep;
}

static void put(const char *where, struct sample *s)
{
	const char *why = rec_writer_unfit(w, s);
	if (why ? rec_input_refuse_at(&in, where, why) < 0
		: rec_write(w, s) && (rec_writer_failed(w) || rec_input_refuse_at(&in, where, NULL) < 0))
		finish(1);
}

/* Streaming mode: each sample is paired as it comes. */
static int pair_stream(struct sample *s)
{
	int rc;
	while ((rc = rec_input_next(&in, s)) > 0) {
		const char *why, *where = rec_input_where(&in);
		char *clean = answer(s, "response.txt", &why);
		char *aug = clean ? answer(s, "aug.response.txt", &why) : NULL;
		if (!aug)
			refuse(where, why);
		else if (make_pair(where, s, clean, aug))
			put(where, s);
		free(clean);
		free(aug);
		progress_update(&prog, in.read, NULL);
	}
	return rc;
}

/* --random-negative, first pass: answers into the pool, samples spooled. */
static int pool_add(struct sample *s, struct rec_writer *spool)
{
	int rc;
	while ((rc = rec_input_next(&in, s)) > 0) {
		const char *why = "no clean image field";
		char *q = sample_image(s) ? conversation_question(s, &why) : NULL;
		char *clean = q ? answer(s, "response.txt", &why) : NULL;
		free(q);
		if (!clean) {
			refuse(rec_input_where(&in), why);
			continue;
		}
		if (pool.n == pool.cap) {
			pool.cap = pool.cap ? 2 * pool.cap : 256;
			pool.answer = xrealloc(pool.answer, pool.cap * sizeof *pool.answer);
		}
		pool.answer[pool.n++] = clean;
		if (rec_write(spool, s))
			finish(1);
	}
	return rc;
}

/* Second pass: each spooled sample gets another sample's answer, drawn
 * from (seed, key, "negative"); an answer equal to its own is redrawn a few
 * times before the sample counts as identical. */
static void pair_negatives(struct sample *s)
{
	struct rec_reader *r = rec_open(spool_path);
	if (!r)
		finish(1);
	for (size_t i = 0; rec_read(r, s) == 1; i++) {
		const char *neg = pool.answer[i];
		if (pool.n > 1) {
			struct rng g;
			rng_seed(&g, opt.seed, s->key, "negative");
			for (int t = 0; t < 8 && same_answer(pool.answer[i], neg); t++) {
				size_t j = (size_t)rng_below(&g, pool.n - 1);
				neg = pool.answer[j >= i ? j + 1 : j];
			}
		}
		char *aug = xstrdup(neg);
		if (make_pair(rec_where(r), s, pool.answer[i], aug))
			put(rec_where(r), s);
		free(aug);
	}
	rec_close(r);
}

int main(int argc, char **argv)
{
	enum { O_NORMALIZE = 256, O_MINLEN, O_SWAP, O_RANDNEG, O_TRL, O_SEVA, O_IMAGES, O_DROPCUT };
	static const struct option longs[] = {
		{ "tar", no_argument, NULL, 't' },
		{ "output", required_argument, NULL, 'o' },
		{ "seed", required_argument, NULL, 's' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "normalize", no_argument, NULL, O_NORMALIZE },
		{ "min-len", required_argument, NULL, O_MINLEN },
		{ "swap", no_argument, NULL, O_SWAP },
		{ "random-negative", no_argument, NULL, O_RANDNEG },
		{ "trl", required_argument, NULL, O_TRL },
		{ "seva", required_argument, NULL, O_SEVA },
		{ "images", required_argument, NULL, O_IMAGES },
		{ "drop-truncated", no_argument, NULL, O_DROPCUT },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;
	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard", 0, usage);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "to:s:kqh", longs, NULL)) != -1) {
		switch (c) {
		case 't': opt.fmt = REC_TAR; break;
		case 'o': opt.out = optarg; break;
		case 's': opt.seed = arg_seed("-s", optarg); break;
		case 'k': opt.keep_going = 1; break;
		case 'q': opt.quiet = 1; break;
		case O_NORMALIZE: opt.normalize = 1; break;
		case O_MINLEN: opt.min_len = arg_long("--min-len", optarg, 0, 1000000000L); break;
		case O_SWAP: opt.swap = 1; break;
		case O_RANDNEG: opt.random_negative = 1; break;
		case O_TRL: opt.trl = optarg; break;
		case O_SEVA: opt.seva = optarg; break;
		case O_IMAGES: opt.images = optarg; break;
		case O_DROPCUT: opt.drop_truncated = 1; break;
		case 'h': usage_help(usage);
		default: usage_die(usage);
		}
	}
	/* the exports name image files: they must exist where they point */
	if (opt.images && !opt.trl && !opt.seva) {
		warn("--images writes the images that --trl and --seva name: give one of them");
		usage_die(usage);
	}
	if ((opt.trl || opt.seva) && !opt.images) {
		warn("%s names each pair's image file: give --images DIR to write the images there",
		     opt.trl ? "--trl" : "--seva");
		usage_die(usage);
	}
	/* pair.json's "filter": what a kept pair passed, e.g. "differ,min-len=5". */
	filter_desc = opt.min_len ? xasprintf("%s,min-len=%ld", opt.normalize ? "differ-normalized" : "differ",
					      opt.min_len)
				  : xstrdup(opt.normalize ? "differ-normalized" : "differ");
	if (opt.images && mkdir_p(opt.images))
		finish(1);
	if ((opt.trl && out_open(&trl, opt.trl)) || (opt.seva && out_open(&seva, opt.seva)))
		finish(1);
	w = rec_writer_open(opt.out, opt.fmt, 0);
	if (!w)
		finish(1);

	struct sample s;
	struct rec_writer *spool = NULL;
	sample_init(&s);
	progress_init(&prog, "samples", 0, opt.quiet);
	if (opt.random_negative) {
		/* in a fresh directory of its own (mkdtemp: a name no one can
		 * guess, mode 0700), not under a name made of the pid, where a
		 * file left or planted there would be written over or stop the run */
		const char *tmp = getenv("TMPDIR");
		spool_dir = xasprintf("%s/seva-pair.XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(spool_dir)) {
			warn("%s:", spool_dir);
			free(spool_dir), spool_dir = NULL;
			finish(1);
		}
		spool_path = xasprintf("%s/spool.msgpack", spool_dir);
		spool = rec_writer_open(spool_path, REC_MSGPACK, 0);
		if (!spool)
			finish(1);
	}
	rec_input_init(&in, argv + optind, argc - optind, opt.keep_going);
	if ((opt.random_negative ? pool_add(&s, spool) : pair_stream(&s)) < 0) {
		sample_release(&s);
		if (spool)
			rec_writer_abort(spool);
		finish(1);
	}
	if (spool) {
		if (rec_writer_close(spool))
			finish(1);
		pair_negatives(&s);
	}
	sample_release(&s);
	finish(0);
}
