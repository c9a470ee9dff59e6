/* seva-tok — shows how a model's tokenizer and chat template see a text:
 * JSON lines of text in, JSON arrays of token ids out, or back with -d
 * (see seva-tok(1)). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "prompt.h"
#include "rec.h"
#include "tokenizer.h"
#include "util.h"

static const char usage_text[] =
	"seva-tok [--bos] [--eos] [--tokens] [-k] [-q] TOKENIZER [FILE...]\n"
	"       seva-tok -d [--skip-special] [-k] [-q] TOKENIZER [FILE...]\n"
	"       seva-tok --template[=NAME] [--ids] [--no-image] [-k] [-q] TOKENIZER [FILE...]";

enum mode { ENCODE, DECODE, TEMPLATE };

static struct {
	enum mode mode;
	int bos, eos, tokens, skip_special, ids, no_image, keep_going, quiet;
	const char *template;
} opt;

static struct tokenizer *tok;
static struct chat chat;
static long nlines, nbad, nunread;

static void print_json(cJSON *item)
{
	char *s = cJSON_PrintUnformatted(item);
	if (!s)
		die("out of memory");
	fputs(s, stdout);
	putchar('\n');
	free(s);
	cJSON_Delete(item);
}

static void print_ids(const int *ids, int n)
{
	if (opt.tokens) {
		cJSON *a = cJSON_CreateArray();
		for (int i = 0; i < n; i++) {
			const char *t = tokenizer_token(tok, ids[i]);
			cJSON_AddItemToArray(a, t ? cJSON_CreateString(t) : cJSON_CreateNull());
		}
		print_json(a);
		return;
	}
	putchar('[');
	for (int i = 0; i < n; i++)
		printf(i ? ",%d" : "%d", ids[i]);
	fputs("]\n", stdout);
}

/* One input line; -1 with a message naming WHERE for a bad one. */
static int do_line(const char *line, size_t len, const char *where)
{
	cJSON *j = cJSON_ParseWithLength(line, len);
	int rc = 0;
	if (!j)
		return error("%s: not valid JSON", where);
	if (opt.mode == DECODE) {
		int n = cJSON_GetArraySize(j), k = 0, *ids = xmalloc((size_t)(n + 1) * sizeof(int));
		const cJSON *e, *arr = j;
		if (!cJSON_IsArray(j)) {
			rc = error("%s: want a JSON array of token ids", where);
			arr = NULL;
		}
		cJSON_ArrayForEach(e, arr) {
			if (!cJSON_IsNumber(e) || e->valuedouble != (double)e->valueint ||
			    e->valueint < 0 || e->valueint >= tokenizer_vocab_size(tok)) {
				rc = error("%s: element %d: not a token id in [0, %d)", where, k,
					   tokenizer_vocab_size(tok));
				break;
			}
			ids[k++] = e->valueint;
		}
		if (rc == 0) {
			size_t len;
			char *text = tokenizer_decode(tok, ids, k, opt.skip_special, &len);
			/* quoted by length: cJSON's strings end at a NUL, the text may
			 * hold one (\u0000) */
			struct buf b;
			buf_init(&b);
			rec_json_quote(&b, text, len);
			buf_add(&b, "\n", 1);
			fwrite(b.data, 1, b.len, stdout);
			buf_release(&b);
			free(text);
		}
		free(ids);
		cJSON_Delete(j);
		return rc;
	}
	if (!cJSON_IsString(j)) {
		cJSON_Delete(j);
		return error("%s: want a JSON string", where);
	}
	const char *text = j->valuestring;
	int *ids = NULL, n;
	if (opt.mode == TEMPLATE && !opt.ids) {
		char *s = chat_render(&chat, text, !opt.no_image);
		print_json(cJSON_CreateString(s));
		free(s);
		cJSON_Delete(j);
		return 0;
	}
	if (opt.mode == TEMPLATE)
		n = chat_encode_prompt(&chat, text, !opt.no_image, &ids);
	else
		n = tokenizer_encode(tok, text, strlen(text), 0, &ids);
	if (n < 0) {
		rc = error("%s: cannot tokenize", where);
	} else {
		if (opt.mode == ENCODE && (opt.bos || opt.eos)) {
			ids = xrealloc(ids, (size_t)(n + 2) * sizeof(int));
			if (opt.bos && tokenizer_bos(tok) >= 0) {
				memmove(ids + 1, ids, (size_t)n * sizeof(int));
				ids[0] = tokenizer_bos(tok);
				n++;
			}
			if (opt.eos && tokenizer_eos(tok) >= 0)
				ids[n++] = tokenizer_eos(tok);
		}
		print_ids(ids, n);
	}
	free(ids);
	cJSON_Delete(j);
	return rc;
}

static int do_file(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	const char *name = f == stdin ? "stdin" : path;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long lineno = 0;
	if (!f) {
		error("open '%s':", path);
		return -2;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (strspn(line, " \t") == (size_t)len)
			continue; /* blank lines carry nothing */
		nlines++;
		char *where = xasprintf("%s:%ld", name, lineno);
		int rc = do_line(line, (size_t)len, where);
		free(where);
		if (rc < 0) {
			nbad++;
			if (!opt.keep_going) {
				free(line);
				if (f != stdin)
					fclose(f);
				return -1;
			}
		}
	}
	int rc = ferror(f) ? error("read '%s':", name) : 0;
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "bos", no_argument, NULL, 'B' },
		{ "eos", no_argument, NULL, 'E' },
		{ "decode", no_argument, NULL, 'd' },
		{ "skip-special", no_argument, NULL, 'S' },
		{ "template", optional_argument, NULL, 'T' },
		{ "ids", no_argument, NULL, 'I' },
		{ "no-image", no_argument, NULL, 'N' },
		{ "tokens", no_argument, NULL, 'W' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, failed = 0;

	util_init_args(argc, argv);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "dkqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'B': opt.bos = 1; break;
		case 'E': opt.eos = 1; break;
		case 'd': opt.mode = DECODE; break;
		case 'S': opt.skip_special = 1; break;
		case 'T': opt.mode = TEMPLATE; opt.template = optarg; break;
		case 'I': opt.ids = 1; break;
		case 'N': opt.no_image = 1; break;
		case 'W': opt.tokens = 1; break;
		case 'k': opt.keep_going = 1; break;
		case 'q': opt.quiet = 1; break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	if (optind >= argc)
		usage_die(usage_text);
	if ((opt.bos || opt.eos) && opt.mode != ENCODE) {
		warn("--bos and --eos go with encoding (no -d or --template)");
		usage_die(usage_text);
	}
	const char *path = argv[optind++];
	char *config = xasprintf("%s/config.json", path);
	struct lm lm = { 0 };
	/* a model directory: its prompt exactly as the model tools build it */
	int model = opt.mode == TEMPLATE && access(config, F_OK) == 0;
	free(config);
	if (model) {
		if (lm_load_text(&lm, path) < 0)
			exit(1);
		tok = lm.tok;
		chat = lm.chat;
	} else if (!(tok = tokenizer_load(path))) {
		exit(1);
	} else if (opt.mode == TEMPLATE) {
		/* a bare tokenizer: its "<image>" token, else original LLaVA's
		 * IMAGE_TOKEN_INDEX */
		int image_token = tokenizer_token_id(tok, "<image>");
		if (chat_init(&chat, "llava_v1", tok, image_token < 0 ? -200 : image_token) < 0)
			exit(2);
	}
	if (opt.template) {
		int no_bos = chat.no_bos;
		const char *block = chat.image_block;
		if (chat_init(&chat, opt.template, tok, chat.image_token) < 0) {
			if (model)
				lm_release(&lm);
			else
				tokenizer_free(tok);
			exit(2);
		}
		chat.no_bos = no_bos;
		chat.image_block = block ? block : chat.image_block;
	}

	if (optind == argc)
		failed = do_file("-") < 0;
	for (int i = optind; i < argc && !failed; i++) {
		int rc = do_file(argv[i]);
		/* -k goes past an input that cannot be opened, as seva-cat does */
		if (rc == -2 && opt.keep_going)
			nunread++;
		else
			failed = rc < 0;
	}
	if (nbad && opt.keep_going)
		warn("%ld of %ld lines skipped", nbad, nlines);
	report_skips(0, 0, nunread);
	if (model)
		lm_release(&lm);
	else
		tokenizer_free(tok);
	return failed ? 1 : nbad || nunread ? EXIT_SKIPPED : 0;
}
