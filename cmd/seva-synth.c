/* seva-synth — the embedded synthetic world: sft, unlabeled and bench
 * samples, or the embedded model's tokenizer.json (see seva-synth(1)). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "rec.h"
#include "synth.h"
#include "util.h"

static const char usage_text[] =
	"seva-synth --split sft|unlabeled|bench -n COUNT [-s SEED] [--size PIXELS]\n"
	"                  [--start INDEX] [--turns N] [--tasks LIST] [--mix WEIGHTS|seva]\n"
	"                  [--per-image N] [--hallucinate P] [--hallucinate-friend P] [--omit P]\n"
	"                  [-t | --format FORMAT]\n"
	"                  [-o FILE] [-q]\n"
	"       seva-synth --tokenizer [-o FILE]";

static int write_tokenizer(const char *out)
{
	char *text = synth_tokenizer_json();
	int rc = 0;
	if (out && strcmp(out, "-")) {
		struct buf b;
		buf_init(&b);
		buf_addstr(&b, text);
		buf_addstr(&b, "\n");
		rc = write_file_atomic(out, b.data, b.len);
		buf_release(&b);
	} else {
		puts(text);
	}
	free(text);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "split", required_argument, NULL, 'S' },
		{ "count", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'Z' },
		{ "start", required_argument, NULL, 'B' },
		{ "turns", required_argument, NULL, 'N' },
		{ "tasks", required_argument, NULL, 'K' },
		{ "mix", required_argument, NULL, 'M' },
		{ "per-image", required_argument, NULL, 'P' },
		{ "hallucinate", required_argument, NULL, 'H' },
		{ "hallucinate-friend", required_argument, NULL, 'W' },
		{ "omit", required_argument, NULL, 'O' },
		{ "tar", no_argument, NULL, 't' },
		{ "format", required_argument, NULL, 'F' },
		{ "output", required_argument, NULL, 'o' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "tokenizer", no_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int split = -1, fmt = REC_MSGPACK, quiet = 0, tokenizer = 0, tasks = 0, c;
	long count = -1, seed = 0, size = 64, start = 0, turns = 1, per_image = 0;
	struct synth_opts so = SYNTH_OPTS_INIT;
	const char *why;
	const char *out = NULL;

	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard", 0, usage_text);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "n:s:tf:o:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'S':
			if ((split = synth_split_parse(optarg)) < 0) {
				warn("--split: not sft, unlabeled or bench: %s", optarg);
				usage_die(usage_text);
			}
			break;
		case 'n': count = arg_long("-n", optarg, 0, 100000000); break;
		case 's': seed = (long)arg_seed("-s", optarg); break;
		case 'Z': size = arg_long("--size", optarg, 16, 4096); break;
		case 'B': start = arg_long("--start", optarg, 0, 899999999); break;
		case 'N': turns = arg_long("--turns", optarg, 1, 8); break;
		case 'K': tasks = arg_names("--tasks", optarg, synth_task_names, SYNTH_N_TASKS); break;
		case 'M':
			if (synth_mix_parse(&so, optarg, &why) < 0) {
				warn("--mix: %s: '%s' (TASK=WEIGHT,... over describe, exist, color, count, or seva)",
				     why, optarg);
				usage_die(usage_text);
			}
			break;
		case 'P': per_image = arg_long("--per-image", optarg, 1, 8); break;
		case 'H': so.hallucinate = arg_double("--hallucinate", optarg, 0, 1); break;
		case 'W': so.hallucinate_friend = arg_double("--hallucinate-friend", optarg, 0, 1); break;
		case 'O': so.omit = arg_double("--omit", optarg, 0, 1); break;
		case 't': fmt = REC_TAR; break;
		case 'F':
			if ((fmt = rec_format_parse(optarg)) < 0) {
				warn("--format: not msgpack, tar or jsonl: %s", optarg);
				usage_die(usage_text);
			}
			break;
		case 'f':
			/* one meaning per letter: -f is seva-cat's fields */
			warn("-f: the output format is --format (-f is seva-cat's field list)");
			usage_die(usage_text);
		case 'o': out = optarg; break;
		case 'q': quiet = 1; break;
		case 'T': tokenizer = 1; break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	if (optind != argc)
		usage_die(usage_text);
	if (tokenizer)
		return write_tokenizer(out);
	if (split < 0 || count < 0)
		usage_die(usage_text);
	if (start + count > 999999999L) {
		warn("--start + -n: indices beyond 999999999");
		usage_die(usage_text);
	}

	so.turns = (int)turns;
	so.tasks = (unsigned)tasks;
	if (per_image)
		so.per_image = (int)per_image;

	struct rec_writer *w = rec_writer_open(out, fmt, 0);
	if (!w)
		return 1;
	struct synth_item items[SYNTH_MAX_ITEMS];
	struct synth_scene sc;
	struct sample s;
	struct progress p;
	struct image im;
	int rc = 0;

	sample_init(&s);
	progress_init(&p, "images", count, quiet);
	for (long i = start; i < start + count && !rc; i++) {
		unsigned char *png;
		size_t len;
		int n = synth_items_opts(split, (uint64_t)seed, i, &so, &sc, items);
		synth_render(&im, &sc, (int)size);
		if (image_encode_png(&im, &png, &len) < 0)
			die("image %06ld: cannot encode PNG", i);
		image_release(&im);
		for (int k = 0; k < n; k++) {
			if (!rc) {
				sample_clear(&s);
				sample_set_key(&s, items[k].key);
				sample_set(&s, "png", FIELD_BYTES, png, len);
				sample_set_json(&s, "json", items[k].json);
				rc = rec_write(w, &s);
			}
			cJSON_Delete(items[k].json);
		}
		free(png);
		progress_update(&p, i - start + 1, NULL);
	}
	progress_done(&p);
	sample_release(&s);
	return rec_writer_end(w, rc != 0) ? 1 : 0;
}
