/* seva-cat — converts record streams (tar, msgpack, JSON lines), splits them
 * into shards, selects fields, and imports LLaVA-format JSON. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "conversation.h"
#include "rec.h"
#include "util.h"

static const char usage[] =
	"seva-cat [-t|--jsonl|-M] [--base64] [-o FILE] [--split PREFIX --per N] [-f FIELDS] [-x FIELDS]\n"
	"       [--llava JSON --images DIR [--turns first|all|N] [--strip-format]] [-k] [-q] [FILE...]";

static struct {
	enum rec_format fmt;
	int flags;
	const char *out, *split, *llava, *images;
	int turns;        /* --turns: questions per LLaVA item (0: all) */
	int strip_format; /* --strip-format */
	long per;
	char **keep, **drop; /* NULL-terminated field lists */
	int keep_going, quiet;
} opt = { .fmt = REC_MSGPACK, .per = 1000, .turns = 1 };

static struct rec_input in;
static struct rec_writer *w;
static struct sample cur;
static long shard;
static long in_shard;

static char **split_list(const char *s)
{
	size_t n = 1;
	for (const char *p = s; *p; p++)
		n += *p == ',';
	char **v = xcalloc(n + 1, sizeof *v);
	char *copy = xstrdup(s), *save = NULL;
	n = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		v[n++] = xstrdup(t);
	free(copy);
	return v;
}

static void free_list(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int in_list(char **v, const char *name)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], name))
			return 1;
	return 0;
}

static void select_fields(struct sample *s)
{
	for (size_t i = 0; i < s->nfields;) {
		const char *name = s->fields[i].name;
		if ((opt.keep && !in_list(opt.keep, name)) || in_list(opt.drop, name))
			sample_remove(s, name);
		else
			i++;
	}
}

static const char *extension(enum rec_format f)
{
	return f == REC_TAR ? "tar" : f == REC_JSONL ? "jsonl" : "msgpack";
}

/* Ends the run: the open output is finished (or abandoned on failure). */
static _Noreturn void finish(int failed)
{
	int end = rec_writer_end(w, failed);
	w = NULL;
	free_list(opt.keep);
	free_list(opt.drop);
	sample_release(&cur);
	int skipped = rec_input_release(&in);
	if (end == 2)
		_exit(1);
	exit(end ? 1 : skipped);
}

/* Writes S, read at WHERE, to the output (the next shard's, with --split). */
static void emit(struct sample *s, const char *where)
{
	select_fields(s);
	if (opt.split && !w) {
		char *path = xasprintf("%s-%06ld.%s", opt.split, shard++, extension(opt.fmt));
		w = rec_writer_open(path, opt.fmt, opt.flags);
		free(path);
		if (!w)
			finish(1);
	}
	const char *why = rec_writer_unfit(w, s);
	if (why) {
		if (rec_input_refuse_at(&in, where, why) < 0)
			finish(1);
		return;
	}
	if (rec_write(w, s)) {
		if (rec_writer_failed(w) || rec_input_refuse_at(&in, where, NULL) < 0)
			finish(1);
		return;
	}
	if (opt.split && ++in_shard == opt.per) {
		in_shard = 0;
		int rc = rec_writer_close(w);
		w = NULL;
		if (rc)
			finish(1);
	}
}

/* LLaVA's id as a WebDataset key: no '.', '/' or whitespace. */
static char *llava_key(const cJSON *id)
{
	char *k = cJSON_IsString(id) ? xstrdup(id->valuestring)
		: cJSON_IsNumber(id) ? xasprintf("%.0f", id->valuedouble) : NULL;
	for (char *c = k; c && *c; c++)
		if (*c == '.' || *c == '/' || *c == ' ' || *c == '\t' || *c == '\n')
			*c = '_';
	return k;
}

/* Builds sample S from question TURN (from 0) of LLaVA item IT, record N,
 * its place in WHERE. Returns 0; 1 for a text-only item (no "image"), left
 * out; 2 when the item has no question TURN (TURN > 0); -1 with the reason
 * in WHY (the same buffer as WHERE's text after it). Turns after the first
 * get the key ID_qN (N from 2). An item of SeVa's step-1 lists ({"image",
 * "text"}, no id) gets the key qNNNNNN from its record number. */
static int llava_sample(const cJSON *it, long n, int turn, struct sample *s, struct buf *where,
			struct buf *why)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
	const cJSON *image = cJSON_GetObjectItemCaseSensitive(it, "image");
	const cJSON *conv = cJSON_GetObjectItemCaseSensitive(it, "conversations");
	const cJSON *text = cJSON_GetObjectItemCaseSensitive(it, "text");
	char *key;
	/* SeVa's step-1 lists: {"image", "text"} per line, no id */
	if (!id && !conv && cJSON_IsString(text))
		key = xasprintf("q%06ld", n);
	else if ((key = llava_key(id)) && turn > 0) {
		char *k = xasprintf("%s_q%d", key, turn + 1);
		free(key);
		key = k;
	}
	char *prompt = cJSON_IsArray(conv) ? conversation_nth_question(conv, turn)
		: !conv && cJSON_IsString(text) ? conversation_strip_image(text->valuestring) : NULL;
	if (prompt && opt.strip_format) {
		char *q = conversation_strip_format(prompt);
		free(prompt);
		prompt = q;
	}
	int rc = -1, file;
	long was;
	sample_clear(s);
	where->len = why->len = 0;
	buf_printf(where, "%s: record %ld", opt.llava, n);
	if (key && *key)
		buf_printf(where, " (id %s)", key);
	if (!key || !*key) {
		buf_addstr(why, "no \"id\" (string or number)");
		goto out;
	}
	if (!image) {
		rc = 1;
		goto out;
	}
	if (!prompt && turn > 0) {
		rc = 2; /* no more questions */
		goto out;
	}
	if (!prompt) {
		buf_addstr(why, cJSON_IsArray(conv) ? "no human turn in \"conversations\""
						    : "no \"conversations\" (or \"text\") to ask");
		goto out;
	}
	if (!cJSON_IsString(image)) {
		buf_addstr(why, "\"image\" is not a string");
		goto out;
	}
	const char *bad = rec_key_unfit(key);
	if (bad) {
		buf_printf(why, "the id as a key: %s", bad);
		goto out;
	}
	/* ids equal, or equal once made keys ("vg/123", "vg_123"): one key
	 * for two samples would give one of them the other's image */
	if (rec_keys_add(&in.keys, key, 0, n, &file, &was)) {
		buf_printf(why, "key '%s' already used by record %ld", key, was);
		goto out;
	}
	sample_set_key(s, key);
	const char *dot = strrchr(image->valuestring, '.');
	if (!dot || strchr(dot, '/') || !dot[1]) {
		buf_printf(why, "image '%s' has no extension", image->valuestring);
		goto out;
	}
	const char *esc = path_escapes(image->valuestring);
	if (esc) {
		buf_printf(why, "image '%s': %s, outside --images", image->valuestring, esc);
		goto out;
	}
	char *path = xasprintf("%s/%s", opt.images ? opt.images : ".", image->valuestring);
	size_t len;
	unsigned char *data = NULL;
	if (access(path, R_OK) < 0)
		buf_printf(why, "image '%s': %s", path, strerror(errno));
	else if (!(data = read_file(path, &len)))
		buf_printf(why, "image '%s': cannot be read", path);
	free(path);
	if (!data)
		goto out;
	char *ext = xstrdup(dot + 1);
	for (char *c = ext; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	sample_take(s, ext, FIELD_BYTES, data, len);
	free(ext);
	cJSON *j = cJSON_CreateObject();
	if (id)
		cJSON_AddItemToObject(j, "id", cJSON_Duplicate(id, 1));
	cJSON_AddStringToObject(j, "image_id", image->valuestring);
	cJSON_AddStringToObject(j, "prompt", prompt);
	if (conv)
		cJSON_AddItemToObject(j, "conversations", cJSON_Duplicate(conv, 1));
	sample_set_json(s, "json", j);
	cJSON_Delete(j);
	rc = 0;
out:
	free(key);
	free(prompt);
	return rc;
}

/* A JSON list of LLaVA records, or JSON lines of them (SeVa's step-1
 * files); NULL with the reason in *WHY. */
static cJSON *llava_parse(const char *text, size_t len, const char **why)
{
	size_t i = 0;
	while (i < len && isspace((unsigned char)text[i]))
		i++;
	if (i < len && text[i] == '[') {
		cJSON *root = cJSON_ParseWithLength(text, len);
		if (!cJSON_IsArray(root)) {
			cJSON_Delete(root);
			*why = "not a JSON list of LLaVA records";
			return NULL;
		}
		return root;
	}
	cJSON *root = cJSON_CreateArray();
	for (size_t line = 1; i < len; line++) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - text) : len;
		cJSON *o = NULL;
		size_t k = i;
		while (k < end && isspace((unsigned char)text[k]))
			k++;
		if (k < end && !cJSON_IsObject(o = cJSON_ParseWithLength(text + k, end - k))) {
			static char msg[96];
			cJSON_Delete(o);
			cJSON_Delete(root);
			snprintf(msg, sizeof msg, "line %zu: not a JSON object (want a JSON list or JSON lines)", line);
			*why = msg;
			return NULL;
		}
		if (o)
			cJSON_AddItemToArray(root, o);
		i = end + 1;
	}
	return root;
}

/* --llava: the items of the JSON list as samples, under the rules of
 * rec_input (the records are counted in its counts). */
static void import_llava(struct sample *smp, struct progress *p)
{
	size_t len;
	long text_only = 0;
	unsigned char *text = read_file(opt.llava, &len);
	if (!text)
		finish(1);
	const char *why_bad = NULL;
	cJSON *root = llava_parse((const char *)text, len, &why_bad);
	free(text);
	if (!root) {
		error("%s: %s", opt.llava, why_bad);
		finish(1);
	}
	struct buf where, why;
	buf_init(&where);
	buf_init(&why);
	const cJSON *it;
	cJSON_ArrayForEach(it, root) {
		++in.read;
		for (int turn = 0; opt.turns == 0 || turn < opt.turns; turn++) {
			int rc = llava_sample(it, in.read, turn, smp, &where, &why);
			if (rc == 2)
				break;
			if (rc == 1) {
				text_only++;
				break;
			}
			if (rc < 0) {
				if (rec_input_refuse_at(&in, (char *)where.data, (char *)why.data) < 0) {
					cJSON_Delete(root);
					buf_release(&where);
					buf_release(&why);
					finish(1);
				}
				break;
			}
			emit(smp, (char *)where.data);
		}
		progress_update(p, in.read, NULL);
	}
	cJSON_Delete(root);
	buf_release(&where);
	buf_release(&why);
	/* LLaVA's mixtures hold text-only conversations (ShareGPT): nothing to
	 * align on an image, so they are left out, not an error */
	if (text_only)
		warn("%s: %ld of %ld records are text-only (no \"image\"), left out", opt.llava,
		     text_only, in.read);
}

int main(int argc, char **argv)
{
	enum { O_JSONL = 256, O_SPLIT, O_PER, O_LLAVA, O_IMAGES, O_BASE64, O_TURNS, O_STRIPFMT };
	static const struct option longs[] = {
		{ "tar", no_argument, NULL, 't' },
		{ "jsonl", no_argument, NULL, O_JSONL },
		{ "msgpack", no_argument, NULL, 'M' },
		{ "output", required_argument, NULL, 'o' },
		{ "fields", required_argument, NULL, 'f' },
		{ "exclude", required_argument, NULL, 'x' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "split", required_argument, NULL, O_SPLIT },
		{ "per", required_argument, NULL, O_PER },
		{ "llava", required_argument, NULL, O_LLAVA },
		{ "images", required_argument, NULL, O_IMAGES },
		{ "turns", required_argument, NULL, O_TURNS },
		{ "strip-format", no_argument, NULL, O_STRIPFMT },
		{ "base64", no_argument, NULL, O_BASE64 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, fmt_set = 0, turns_set = 0;
	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard", 0, usage);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "tjMo:f:x:kqh", longs, NULL)) != -1) {
		switch (c) {
		case 't': opt.fmt = REC_TAR, fmt_set = 1; break;
		case O_JSONL: opt.fmt = REC_JSONL, fmt_set = 1; break;
		case 'j':
			/* one meaning per letter: -j is the thread count of the
			 * tools that compute; seva-cat has none */
			warn("-j: JSON lines are --jsonl (-j is the thread count in the seva tools, "
			     "and seva-cat has none)");
			usage_die(usage);
		case 'M': opt.fmt = REC_MSGPACK, fmt_set = 1; break;
		case 'o': opt.out = optarg; break;
		case 'f': free_list(opt.keep), opt.keep = split_list(optarg); break;
		case 'x': free_list(opt.drop), opt.drop = split_list(optarg); break;
		case 'k': opt.keep_going = 1; break;
		case 'q': opt.quiet = 1; break;
		case O_SPLIT: opt.split = optarg; break;
		case O_PER: opt.per = arg_long("--per", optarg, 1, 1000000000L); break;
		case O_LLAVA: opt.llava = optarg; break;
		case O_IMAGES: opt.images = optarg; break;
		case O_TURNS:
			opt.turns = !strcmp(optarg, "first") ? 1 : !strcmp(optarg, "all") ? 0
				  : (int)arg_long("--turns (first, all or a count)", optarg, 1, 1000);
			turns_set = 1;
			break;
		case O_STRIPFMT: opt.strip_format = 1; break;
		case O_BASE64: opt.flags |= REC_BASE64; break;
		case 'h': usage_help(usage);
		default: usage_die(usage);
		}
	}
	const char *why = NULL;
	if (opt.split && opt.out)
		why = "--split writes PREFIX-NNNNNN files: -o is not for it";
	else if (opt.images && !opt.llava)
		why = "--images is the folder of --llava's images: give --llava FILE";
	else if (opt.llava && optind < argc)
		why = "--llava FILE is the input: no FILE arguments with it";
	else if ((turns_set || opt.strip_format) && !opt.llava)
		why = "--turns and --strip-format shape --llava's samples: give --llava FILE";
	if (why) {
		warn("%s", why);
		usage_die(usage);
	}
	if (opt.split && !fmt_set)
		opt.fmt = REC_TAR;
	if (!opt.split) {
		w = rec_writer_open(opt.out, opt.fmt, opt.flags);
		if (!w)
			finish(1);
	}

	struct progress p;
	sample_init(&cur);
	progress_init(&p, "samples", 0, opt.quiet);
	rec_input_init(&in, argv + optind, argc - optind, opt.keep_going);
	int rc = 0;
	if (opt.llava)
		import_llava(&cur, &p);
	else
		while ((rc = rec_input_next(&in, &cur)) > 0) {
			emit(&cur, rec_input_where(&in));
			progress_update(&p, in.read, NULL);
		}
	progress_done(&p);
	finish(rc < 0);
}
