/* seva-augment — adds the augmented view (aug.png) and its recipe
 * (aug.json) to every sample; every other field passes through. Samples are
 * augmented in parallel batches and written in input order; each one's
 * randomness comes from (seed, key) alone, so sharding changes nothing. */
#include <getopt.h>
#include <malloc.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "augment.h"
#include "image.h"
#include "rec.h"
#include "util.h"

static const char usage[] =
	"seva-augment [-r RECIPE] [-s SEED] [-t] [-o FILE] [-j THREADS] [-k] [-q] [FILE...]";

/* JSON numbers are doubles: seeds above 2^53 would not survive aug.json. */
#define SEED_MAX 9007199254740991L

static struct {
	const char *recipe, *out;
	long seed;
	int threads, keep_going, quiet;
	enum rec_format fmt;
} opt = { .recipe = AUGMENT_DEFAULT, .fmt = REC_MSGPACK };

/* One slot of a batch: the sample, where it came from, what went wrong. */
struct slot {
	struct sample s;
	char *where;
	char *err;
};

static struct augment_recipe recipe;
static struct rec_writer *w;
static struct rec_input in;

static void take_png(struct sample *s, const char *name, const struct image *im)
{
	unsigned char *png;
	size_t len;
	if (image_encode_png(im, &png, &len) < 0)
		die("cannot encode PNG"); /* only out of memory gets here */
	png = xrealloc(png, len + 1); /* sample_take wants room for a NUL */
	png[len] = 0;
	sample_take(s, name, FIELD_BYTES, png, len);
}

/* Augments one sample in place; on bad input sets sl->err instead. Runs on
 * any thread: prints nothing. */
static void augment_slot(struct slot *sl)
{
	struct sample *s = &sl->s;
	struct field *f = sample_image(s);
	struct image img, out, base;
	const char *why;
	cJSON *j;
	int clean;

	if (!f) {
		sl->err = xstrdup("no image field");
		return;
	}
	if (image_decode(&img, f->data, f->len, &why) < 0) {
		/* the words of every model tool's decode (prompt_image_tensor) */
		sl->err = xasprintf("field '%s': cannot decode image: %s", f->name, why);
		return;
	}
	image_init(&out);
	image_init(&base);
	augment_apply(&recipe, (uint64_t)opt.seed, s->key, &img, &out, &base, &clean, &j);
	image_release(&img);

	take_png(s, "aug.png", &out);
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "preview")) && !clean)
		take_png(s, "aug.base.png", &base);
	else
		sample_remove(s, "aug.base.png"); /* a stale one from an earlier run */
	sample_set_json(s, "aug.json", j);
	cJSON_Delete(j);
	image_release(&out);
	image_release(&base);
}

static _Noreturn void finish(int failed)
{
	int end = rec_writer_end(w, failed);
	w = NULL;
	augment_release(&recipe);
	int skipped = rec_input_release(&in);
	if (end == 2)
		_exit(1);
	exit(end ? 1 : skipped);
}

/* Writes out one augmented slot (or refuses it). */
static void emit_slot(struct slot *sl)
{
	if (sl->err) {
		int rc = rec_input_refuse_at(&in, sl->where, sl->err);
		free(sl->err);
		sl->err = NULL;
		if (rc < 0)
			finish(1);
		return;
	}
	const char *why = rec_writer_unfit(w, &sl->s);
	if (why ? rec_input_refuse_at(&in, sl->where, why) < 0
		: rec_write(w, &sl->s) && (rec_writer_failed(w) || rec_input_refuse_at(&in, sl->where, NULL) < 0))
		finish(1);
}

/* Augments and writes the first N slots, in order. Whichever thread
 * finishes a sample writes every finished one that is next in line, so
 * writing overlaps the other threads' work and nobody waits for order. */
static void flush_batch(struct slot *b, int n, struct progress *p)
{
	int next = 0;
	char *done = xcalloc((size_t)n + 1, 1);
	#pragma omp parallel for schedule(dynamic, 1) num_threads(opt.threads) if (n > 1)
	for (int i = 0; i < n; i++) {
		augment_slot(&b[i]);
		#pragma omp critical(seva_augment_emit)
		{
			done[i] = 1;
			while (next < n && done[next])
				emit_slot(&b[next++]);
		}
	}
	free(done);
	progress_update(p, in.read, NULL);
}

/* Reads the inputs in batches of CAP, each augmented in parallel. */
static int augment_all(struct slot *b, int cap, struct progress *p)
{
	int n = 0, rc;
	while ((rc = rec_input_next(&in, &b[n].s)) > 0) {
		free(b[n].where);
		b[n].where = xstrdup(rec_input_where(&in));
		if (++n == cap) {
			flush_batch(b, n, p);
			n = 0;
		}
	}
	/* the samples before a bad input go out first: order kept */
	flush_batch(b, n, p);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "recipe", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "tar", no_argument, NULL, 't' },
		{ "output", required_argument, NULL, 'o' },
		{ "threads", required_argument, NULL, 'j' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;
	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard", 1, usage);
	check_stdout_at_exit();
	/* Every sample allocates and frees the same few megabytes: keep them
	 * in the heap instead of mapping and zeroing fresh pages each time
	 * (a tenth of the run time went to the kernel). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 128 << 20);
	while ((c = getopt_long(argc, argv, "r:s:to:j:kqh", longs, NULL)) != -1) {
		switch (c) {
		case 'r': opt.recipe = optarg; break;
		case 's': opt.seed = arg_long("-s", optarg, 0, SEED_MAX); break;
		case 't': opt.fmt = REC_TAR; break;
		case 'o': opt.out = optarg; break;
		case 'j': opt.threads = (int)arg_long("-j", optarg, 0, 1024); break;
		case 'k': opt.keep_going = 1; break;
		case 'q': opt.quiet = 1; break;
		case 'h': usage_help(usage);
		default: usage_die(usage);
		}
	}
	if (augment_parse(&recipe, opt.recipe) < 0)
		exit(2);
	if (opt.threads == 0)
		opt.threads = omp_get_num_procs();

	w = rec_writer_open(opt.out, opt.fmt, 0);
	if (!w)
		finish(1);

	/* Enough samples per thread that the wait for the slowest at the
	 * end of a batch is a small part of it. */
	int cap = opt.threads > 1 ? 16 * opt.threads : 1;
	struct slot *b = xcalloc((size_t)cap, sizeof(*b));
	for (int i = 0; i < cap; i++)
		sample_init(&b[i].s);
	struct progress p;
	progress_init(&p, "samples", 0, opt.quiet);
	rec_input_init(&in, argv + optind, argc - optind, opt.keep_going);
	int rc = augment_all(b, cap, &p);
	progress_done(&p);
	for (int i = 0; i < cap; i++) {
		sample_release(&b[i].s);
		free(b[i].where);
	}
	free(b);
	finish(rc < 0);
}
