/* seva-generate — answers each sample's question with the model, on the
 * clean image (response.txt) and on the augmented view (aug.response.txt). */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "conversation.h"
#include "featcache.h"
#include "prompt.h"
#include "rec.h"
#include "rng.h"
#include "tensor.h"
#include "util.h"

static const char usage_text[] =
	"seva-generate -m MODEL [-b BATCH] [--views clean|aug|both] [--max-new-tokens N]\n"
	"       [--temperature T] [--top-k K] [--top-p P] [-s SEED] [-j THREADS] [-o FILE] [-t]\n"
	"       [--precision auto|f32|bf16] [--features DIR] [-k] [-q] [-v] [FILE...]";

enum { VIEW_CLEAN = 1, VIEW_AUG = 2 };
static const char *const view_name[] = { "clean", "aug" };
static const char *const view_field[] = { "response.txt", "aug.response.txt" };

static struct {
	const char *model;
	int batch, views, max_new, top_k, keep, quiet, threads, tar, precision, verbose;
	float temperature, top_p;
	uint64_t seed;
	const char *output;
	const char *features; /* --features: the clean views' tower output kept there */
} opt = { .batch = 8, .max_new = 512, .top_p = 1.0f };

/* One sample waiting in the batch. */
struct job {
	struct sample s;
	int *ids, n_ids;   /* prompt */
	int views;         /* VIEW_* */
	int image[2];      /* index into the batch's images per view, -1: no image */
	int cap;           /* max new tokens for this prompt */
};

struct batch {
	struct job *jobs;
	int n;
	float *images;     /* (2 * batch, 3, S, S) */
	int n_images;
	long img_floats;   /* 3 * S * S */
};

static struct lm lm;
static long n_done, n_tokens;
static struct featcache fcache;

/* Stops sequence b once it has its own budget of new tokens, so a
 * sequence's result does not depend on the other prompts of its batch. */
static int stop_at_cap(void *ctx, int b, const int *ids, int n)
{
	(void)ids;
	return n >= ((const int *)ctx)[b];
}

static int has_aug(const struct sample *s)
{
	return sample_get(s, "aug.json") || sample_get(s, "aug.png");
}

/* The augmented view from S's own aug.json (prompt_aug_tensor). */
static int aug_tensor(const struct sample *s, float *chw, const char **why)
{
	cJSON *aj = NULL;
	if (sample_get(s, "aug.json") && !(aj = sample_json(s, "aug.json"))) {
		*why = "aug.json is not valid JSON";
		return -1;
	}
	int rc = prompt_aug_tensor(lm.m, s, aj, chw, why);
	cJSON_Delete(aj);
	return rc;
}

/* Readies S as the next job of B; -1 with a reason if the sample is bad. */
static int job_prepare(struct batch *b, struct sample *s, const char **why)
{
	struct job *j = &b->jobs[b->n];
	struct field *img = sample_image(s);
	char *q = conversation_question(s, why);
	if (!q)
		return -1;
	j->n_ids = chat_encode_prompt(&lm.chat, q, img != NULL, &j->ids);
	free(q);
	if (j->n_ids < 0) {
		*why = "cannot tokenize the prompt";
		j->ids = NULL;
		return -1;
	}
	int plen = prompt_decoder_len(lm.m, j->ids, j->n_ids);
	j->cap = lm.m->cfg.max_pos - plen;
	if (j->cap < 1) {
		*why = "prompt does not fit the model's context";
		goto bad;
	}
	if (j->cap > opt.max_new)
		j->cap = opt.max_new;
	j->views = opt.views ? opt.views : has_aug(s) ? VIEW_CLEAN | VIEW_AUG : VIEW_CLEAN;
	j->image[0] = j->image[1] = -1;
	if (img) {
		float *clean = b->images + b->n_images * b->img_floats;
		if (prompt_image_tensor(lm.m, img, clean, why) < 0)
			goto bad;
		if (j->views & VIEW_CLEAN)
			j->image[0] = b->n_images++;
		if (j->views & VIEW_AUG) {
			float *aug = b->images + b->n_images * b->img_floats;
			if (aug_tensor(s, aug, why) < 0) {
				b->n_images -= (j->views & VIEW_CLEAN) ? 1 : 0;
				goto bad;
			}
			j->image[1] = b->n_images++;
		}
	} else if (sample_get(s, "aug.png")) {
		*why = "aug.png but no clean image";
		goto bad;
	}
	j->s = *s;
	sample_init(s);
	b->n++;
	return 0;
bad:
	free(j->ids);
	j->ids = NULL;
	return -1;
}

static double mean_logp(const struct gen_out *o)
{
	double sum = 0;
	int n = o->n;
	for (int i = 0; i < o->n; i++)
		sum += o->logp[i];
	if (o->stopped == 1) {
		sum += o->stop_logp;
		n++;
	}
	return n ? sum / n : 0;
}

/* Generates for every job of B, adds the fields, writes in input order. */
static void batch_run(struct batch *b, struct rec_writer *w)
{
	int nseq = 0, cap = 2 * b->n;
	const int **ids = xcalloc((size_t)cap, sizeof *ids);
	int *len = xcalloc((size_t)cap, sizeof *len), *image_of = xcalloc((size_t)cap, sizeof *image_of);
	int *caps = xcalloc((size_t)cap, sizeof *caps), max_cap = 0;
	uint64_t *seeds = xcalloc((size_t)cap, sizeof *seeds);
	struct gen_out *out = xcalloc((size_t)cap, sizeof *out);

	for (int i = 0; i < b->n; i++)
		for (int v = 0; v < 2; v++) {
			struct job *j = &b->jobs[i];
			struct rng r;
			if (!(j->views & (1 << v)))
				continue;
			ids[nseq] = j->ids;
			len[nseq] = j->n_ids;
			image_of[nseq] = j->image[v];
			caps[nseq] = j->cap;
			max_cap = j->cap > max_cap ? j->cap : max_cap;
			rng_seed(&r, opt.seed, j->s.key, v ? "generate aug" : "generate clean");
			seeds[nseq++] = rng_u64(&r);
		}
	struct vlm_batch vb = {
		.B = nseq, .ids = ids, .len = len, .weight = NULL,
		.n_images = b->n_images, .images = b->images, .image_of = image_of,
	};
	/* --features: the clean views' from the cache (encoded and kept there
	 * when new), the augmented ones through the tower */
	const float **given = NULL, **pix = NULL;
	float *feat = NULL;
	if (fcache.dir && b->n_images) {
		size_t rows = (size_t)lm.m->cfg.feat_tokens * lm.m->cfg.v_hidden;
		int nc = 0;
		given = xcalloc((size_t)b->n_images, sizeof *given);
		pix = xmalloc((size_t)b->n_images * sizeof *pix);
		feat = xmalloc((size_t)b->n_images * rows * sizeof *feat);
		for (int i = 0; i < b->n; i++)
			if (b->jobs[i].image[0] >= 0) {
				int k = b->jobs[i].image[0];
				pix[nc] = b->images + k * b->img_floats;
				given[k] = feat + nc++ * rows;
			}
		if (featcache_get(&fcache, lm.m, pix, nc, feat) < 0)
			exit(1);
		vb.features = given;
	}
	struct gen_settings gs = {
		.max_new_tokens = max_cap, .temperature = opt.temperature, .top_k = opt.top_k,
		.top_p = opt.top_p, .stop_ids = lm.stop_ids, .n_stop_ids = lm.n_stop,
		.stop = stop_at_cap, .stop_ctx = caps,
	};
	if (nseq && vlm_generate(lm.m, &vb, seeds, &gs, out) < 0)
		die("generation failed on the batch starting at key '%s'", b->jobs[0].s.key);
	free(given);
	free(pix);
	free(feat);

	int q = 0;
	for (int i = 0; i < b->n; i++) {
		struct job *j = &b->jobs[i];
		cJSON *g = cJSON_CreateObject(), *set, *tok, *mlp, *fin;
		cJSON_AddStringToObject(g, "model", opt.model);
		set = cJSON_AddObjectToObject(g, "settings");
		cJSON_AddNumberToObject(set, "temperature", opt.temperature);
		cJSON_AddNumberToObject(set, "top_k", opt.top_k);
		cJSON_AddNumberToObject(set, "top_p", opt.top_p);
		cJSON_AddNumberToObject(set, "max_new_tokens", j->cap);
		/* exact: -s is at most 2^53 - 1 */
		cJSON_AddNumberToObject(set, "seed", (double)opt.seed);
		cJSON_AddStringToObject(set, "precision", tensor_precision_names[tensor_precision()]);
		tok = cJSON_AddObjectToObject(g, "tokens");
		mlp = cJSON_AddObjectToObject(g, "mean_logp");
		fin = cJSON_AddObjectToObject(g, "finish");
		for (int v = 0; v < 2; v++) {
			if (!(j->views & (1 << v)))
				continue;
			struct gen_out *o = &out[q++];
			/* NaN or Inf weights answer '' with a NaN mean log-prob:
			 * an error, not an empty answer written as if it were one */
			if (!isfinite(mean_logp(o))) {
				error("key %s: the %s view's log-probs are not finite (NaN or Inf "
				      "in the model '%s'?)", j->s.key, view_name[v], opt.model);
				exit(1);
			}
			size_t len;
			char *text = tokenizer_decode(lm.tok, o->ids, o->n, 1, &len);
			len = chat_clean_answer(&lm.chat, text, len);
			/* the length, not strlen: a <0x00> token is a NUL in the text */
			sample_set(&j->s, view_field[v], FIELD_TEXT, text, len);
			free(text);
			cJSON_AddNumberToObject(tok, view_name[v], o->n);
			cJSON_AddNumberToObject(mlp, view_name[v], mean_logp(o));
			cJSON_AddStringToObject(fin, view_name[v], o->stopped == 1 ? "stop" : "length");
			n_tokens += o->n;
			gen_out_release(o);
		}
		sample_set_json(&j->s, "gen.json", g);
		cJSON_Delete(g);
		if (rec_write(w, &j->s) < 0)
			exit(1);
		n_done++;
		sample_release(&j->s);
		free(j->ids);
		j->ids = NULL;
	}
	b->n = 0;
	b->n_images = 0;
	free(ids);
	free(len);
	free(image_of);
	free(caps);
	free(seeds);
	free(out);
}

static int parse_views(const char *s)
{
	static const char *const names[] = { "clean", "aug", "both" };
	static const int views[] = { VIEW_CLEAN, VIEW_AUG, VIEW_CLEAN | VIEW_AUG };
	return views[arg_choice("--views", s, names, 3)];
}

int main(int argc, char **argv)
{
	enum { O_VIEWS = 256, O_MAXNEW, O_TEMP, O_TOPK, O_TOPP, O_PRECISION, O_FEATURES };
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "batch", required_argument, NULL, 'b' },
		{ "views", required_argument, NULL, O_VIEWS },
		{ "max-new-tokens", required_argument, NULL, O_MAXNEW },
		{ "temperature", required_argument, NULL, O_TEMP },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "top-p", required_argument, NULL, O_TOPP },
		{ "seed", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 'j' },
		{ "precision", required_argument, NULL, O_PRECISION },
		{ "features", required_argument, NULL, O_FEATURES },
		{ "verbose", no_argument, NULL, 'v' },
		{ "output", required_argument, NULL, 'o' },
		{ "tar", no_argument, NULL, 't' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	tensor_blas_setup(argv);
	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard", 1, usage_text);
	check_stdout_at_exit();
	while ((c = getopt_long(argc, argv, "m:b:s:j:o:tkqvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.model = optarg; break;
		case 'b': opt.batch = (int)arg_long("-b", optarg, 1, 4096); break;
		case O_VIEWS: opt.views = parse_views(optarg); break;
		case O_MAXNEW: opt.max_new = (int)arg_long("--max-new-tokens", optarg, 1, 1 << 20); break;
		case O_TEMP: opt.temperature = (float)arg_double("--temperature", optarg, 0, 100); break;
		case O_TOPK: opt.top_k = (int)arg_long("--top-k", optarg, 0, 1 << 24); break;
		case O_TOPP: opt.top_p = (float)arg_double_above("--top-p", optarg, 0, 1); break;
		case 's': opt.seed = arg_seed("-s", optarg); break;
		case 'j': opt.threads = (int)arg_long("-j", optarg, 0, 1024); break;
		case 'o': opt.output = optarg; break;
		case 't': opt.tar = 1; break;
		case 'k': opt.keep = 1; break;
		case 'q': opt.quiet = 1; break;
		case 'v': opt.verbose = 1; break;
		case O_PRECISION:
			opt.precision = arg_choice("--precision", optarg, tensor_precision_names, 3);
			break;
		case O_FEATURES:
			if (!*optarg) {
				warn("--features: the cache's directory, not an empty name");
				usage_die(usage_text);
			}
			opt.features = optarg;
			break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	if (!opt.model) {
		warn("-m MODEL: the model directory is required");
		usage_die(usage_text);
	}
	tensor_set_threads(opt.threads);
	if (tensor_set_precision(opt.precision) < 0)
		return 1;
	if (opt.verbose && !opt.quiet)
		fprintf(stderr, "%s: %s; products in %s\n", progname, tensor_blas_info(),
			tensor_precision_info());
	if (lm_load(&lm, opt.model) < 0)
		return 1;
	if (opt.features && featcache_open(&fcache, opt.features, lm.m, opt.keep) < 0) {
		lm_release(&lm);
		return 1;
	}

	struct rec_writer *w = rec_writer_open(opt.output, opt.tar ? REC_TAR : REC_MSGPACK, 0);
	if (!w) {
		lm_release(&lm);
		return 1;
	}
	struct batch b = { 0 };
	int S = preprocess_side(&lm.m->pre);
	b.img_floats = 3L * S * S;
	b.jobs = xcalloc((size_t)opt.batch, sizeof *b.jobs);
	b.images = xmalloc((size_t)(2 * opt.batch) * (size_t)b.img_floats * sizeof(float));
	struct progress p;
	progress_init(&p, "samples", 0, opt.quiet);
	double t0 = now_seconds();

	struct rec_input in;
	struct sample s;
	int rc;
	sample_init(&s);
	rec_input_init(&in, argv + optind, argc - optind, opt.keep);
	while ((rc = rec_input_next(&in, &s)) > 0) {
		const char *why;
		if (job_prepare(&b, &s, &why) < 0) {
			if (rec_input_refuse(&in, why) < 0)
				break;
			continue;
		}
		if (b.n == opt.batch) {
			batch_run(&b, w);
			char extra[64];
			snprintf(extra, sizeof extra, "%.1f tokens/s",
				 n_tokens / (now_seconds() - t0 + 1e-9));
			progress_update(&p, n_done, extra);
		}
	}
	/* without -k a bad sample ends the run: nothing more is written */
	if (rc < 0)
		rec_writer_abort(w);
	else if (b.n)
		batch_run(&b, w);
	progress_done(&p);
	sample_release(&s);
	int status = rc < 0 || rec_writer_close(w) < 0;
	for (int i = 0; i < b.n; i++) {
		sample_release(&b.jobs[i].s);
		free(b.jobs[i].ids);
	}
	free(b.jobs);
	free(b.images);
	featcache_report(&fcache, opt.quiet);
	featcache_close(&fcache);
	lm_release(&lm);
	int r = rec_input_release(&in);
	return status ? 1 : r;
}
