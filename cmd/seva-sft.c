/* seva-sft — supervised fine-tuning: loss on the assistant's tokens only.
 * Also makes randomly initialised model directories (--init-only). */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dist.h"
#include "prompt.h"
#include "rec.h"
#include "tensor.h"
#include "train.h"
#include "util.h"

static const char usage_text[] =
	"seva-sft (-m MODEL | --config CONFIG.json --tokenizer TOKENIZER.json\n"
	"       [--preprocessor FILE]) -o OUT [--init-only] [--train PARTS] [--lora R]\n"
	"       [--lora-alpha A] [--lr LR] [--epochs N] [--max-steps N] [-b BATCH]\n"
	"       [--accum N] [--schedule NAME] [--warmup-ratio R] [--clip NORM]\n"
	"       [--weight-decay WD] [-s SEED] [--save-every N] [--stop-after N] [--resume]\n"
	"       [--metrics FILE] [--dtype f32|bf16] [-j THREADS] [-k] [-q] [FILE...]";

static struct {
	const char *model, *config, *tokenizer, *preprocessor, *out, *metrics, *dtype;
	const char *train;
	int init_only, lora, batch, accum, epochs, keep, quiet, threads, resume;
	long max_steps, save_every, stop_after;
	double lr, warmup, clip, wd, lora_alpha;
	enum lr_schedule schedule;
	uint64_t seed;
} opt = {
	.batch = 8, .accum = 1, .epochs = 1, .lr = 1e-3, .warmup = 0.03, .clip = 1.0,
	.schedule = LR_COSINE, .dtype = "f32",
};

/* One training sequence: prompt and answer ids, weights 1 on answer tokens. */
struct example {
	int *ids;
	float *w;
	int n;
	int image;      /* index into the image cache, -1: none */
	double ntok;    /* sum of w */
};

static struct lm lm;
static struct example *ex;
static long n_ex, n_skipped;
static float *images;   /* (n_images, 3, S, S), decoded once */
static long n_images, img_floats;

static unsigned parse_parts(const char *s)
{
	unsigned parts = 0;
	char *copy = xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (!strcmp(t, "vision"))
			parts |= VLM_PART_VISION;
		else if (!strcmp(t, "projector"))
			parts |= VLM_PART_PROJECTOR;
		else if (!strcmp(t, "decoder"))
			parts |= VLM_PART_DECODER;
		else {
			fprintf(stderr, "%s: --train: unknown part '%s' (vision, projector, decoder)\n",
				progname, t);
			exit(2);
		}
	}
	free(copy);
	return parts;
}

/* Tokenizes S into the next example; -1 with a reason if it is bad. */
static int example_add(struct sample *s, const char **why)
{
	char **turns;
	int nt = prompt_turns(s, &turns, why);
	struct example e = { .image = -1 };
	struct field *img = sample_image(s);
	if (nt < 0)
		return -1;
	if (nt == 2) {
		int *p, *a;
		int np = chat_encode_prompt(&lm.chat, turns[0], img != NULL, &p);
		int na = np < 0 ? -1 : chat_encode_answer(&lm.chat, turns[1], &a);
		if (np < 0 || na < 0) {
			if (np >= 0)
				free(p);
			prompt_turns_free(turns, nt);
			*why = "cannot tokenize the prompt or answer";
			return -1;
		}
		e.n = np + na;
		e.ids = xmalloc((size_t)e.n * sizeof *e.ids);
		e.w = xcalloc((size_t)e.n, sizeof *e.w);
		memcpy(e.ids, p, (size_t)np * sizeof *p);
		memcpy(e.ids + np, a, (size_t)na * sizeof *a);
		for (int i = np; i < e.n; i++)
			e.w[i] = 1;
		free(p);
		free(a);
	} else {
		e.n = chat_encode_conversation(&lm.chat, (const char *const *)turns, nt,
					       img != NULL, &e.ids, &e.w);
		if (e.n < 0) {
			prompt_turns_free(turns, nt);
			*why = "cannot tokenize the conversation";
			return -1;
		}
	}
	prompt_turns_free(turns, nt);
	for (int i = 1; i < e.n; i++)
		e.ntok += e.w[i];
	if (prompt_decoder_len(lm.m, e.ids, e.n) > lm.m->cfg.max_pos) {
		*why = "prompt and answer do not fit the model's context";
		goto bad;
	}
	if (e.ntok <= 0) {
		*why = "no answer tokens";
		goto bad;
	}
	if (img) {
		images = xrealloc(images, (size_t)(n_images + 1) * (size_t)img_floats * sizeof(float));
		if (prompt_image_tensor(lm.m, img, images + n_images * img_floats, why) < 0)
			goto bad;
		e.image = (int)n_images++;
	}
	ex = xrealloc(ex, (size_t)(n_ex + 1) * sizeof *ex);
	ex[n_ex++] = e;
	return 0;
bad:
	free(e.ids);
	free(e.w);
	return -1;
}

static void read_inputs(int argc, char **argv)
{
	int nfiles = optind < argc ? argc - optind : 1;
	struct sample s;
	sample_init(&s);
	for (int fi = 0; fi < nfiles; fi++) {
		struct rec_reader *r = rec_open(optind < argc ? argv[optind + fi] : "-");
		int rc;
		if (!r)
			exit(1);
		while ((rc = rec_read(r, &s)) != 0) {
			const char *why;
			if (rc < 0) {
				if (!opt.keep)
					exit(1);
				n_skipped++;
			} else if (example_add(&s, &why) < 0) {
				if (!opt.keep)
					die("%s: %s", rec_where(r), why);
				warn("%s: %s (skipped)", rec_where(r), why);
				n_skipped++;
			}
		}
		rec_close(r);
	}
	sample_release(&s);
}

/* A directory holding the tokenizer and preprocessor files of a model made
 * from a config, so that vlm_save copies them into every saved model. */
static char *stage_files(const char *dir)
{
	const char *src[2] = { opt.tokenizer, opt.preprocessor };
	const char *dst[2] = { "tokenizer.json", "preprocessor_config.json" };
	if (mkdir_p(dir) < 0)
		exit(1);
	for (int i = 0; i < 2; i++) {
		if (!src[i])
			continue;
		size_t len;
		unsigned char *data = read_file(src[i], &len);
		char *path = xasprintf("%s/%s", dir, dst[i]);
		if (!data || write_file_atomic(path, data, len) < 0)
			exit(1);
		free(data);
		free(path);
	}
	return xstrdup(dir);
}

static void remove_tree(const char *dir)
{
	char *cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		warn("could not remove '%s'", dir);
	free(cmd);
}

static void load_model(const char *stage)
{
	if (opt.model) {
		if (lm_load(&lm, opt.model) < 0)
			exit(1);
		return;
	}
	struct vlm_config cfg;
	if (vlm_config_load(&cfg, opt.config) < 0)
		exit(1);
	struct vlm *m = vlm_new(&cfg);
	vlm_init_random(m, opt.seed);
	char *pre = xasprintf("%s/preprocessor_config.json", stage);
	if (vlm_preprocess_load(&m->pre, pre, &cfg) < 0)
		exit(1);
	free(pre);
	free(m->dir);
	m->dir = xstrdup(stage);
	struct tokenizer *tok = tokenizer_load(opt.tokenizer);
	if (!tok || lm_attach(&lm, m, tok) < 0)
		exit(1);
}

/* The options that shape the trajectory: a resume must match them. */
static char *settings_json(unsigned parts, long total)
{
	return xasprintf("{\"model\":\"%s\",\"lr\":%.9g,\"schedule\":\"%s\",\"warmup_ratio\":%.9g,"
			 "\"total_steps\":%ld,\"batch\":%d,\"accum\":%d,\"clip\":%.9g,"
			 "\"weight_decay\":%.9g,\"seed\":%llu,\"train\":%u,\"lora\":%d,"
			 "\"lora_alpha\":%.9g}",
			 opt.model ? opt.model : opt.config, opt.lr, lr_schedule_name(opt.schedule),
			 opt.warmup, total, opt.batch, opt.accum, opt.clip, opt.wd,
			 (unsigned long long)opt.seed, parts, opt.lora, opt.lora_alpha);
}

/* Forward and backward over examples IDX (k of them): accumulates the
 * gradient of sum(-logp) / ntok; returns sum(-logp). */
static double micro_step(const uint32_t *idx, int k, double ntok, const int **ids,
			 const float **w, int *len, int *image_of, float *imgs, float *logp,
			 float *dlogp)
{
	int ni = 0;
	for (int i = 0; i < k; i++) {
		struct example *e = &ex[idx[i]];
		ids[i] = e->ids;
		w[i] = e->w;
		len[i] = e->n;
		image_of[i] = -1;
		if (e->image >= 0) {
			memcpy(imgs + ni * img_floats, images + e->image * img_floats,
			       (size_t)img_floats * sizeof(float));
			image_of[i] = ni++;
		}
	}
	struct vlm_batch vb = { .B = k, .ids = ids, .len = len, .weight = w,
				.n_images = ni, .images = imgs, .image_of = image_of };
	if (vlm_forward(lm.m, &vb, logp, 1) < 0)
		exit(1);
	double sum = 0;
	for (int i = 0; i < k; i++) {
		sum -= logp[i];
		dlogp[i] = (float)(-1.0 / ntok);
	}
	vlm_backward(lm.m, dlogp);
	return sum;
}

static void save_final(const char *out)
{
	if (train_save_model(lm.m, out, !strcmp(opt.dtype, "bf16") ? "BF16" : "F32") < 0)
		exit(1);
}

int main(int argc, char **argv)
{
	enum {
		O_CONFIG = 256, O_TOK, O_PRE, O_INIT, O_TRAIN, O_LORA, O_ALPHA, O_LR, O_EPOCHS,
		O_MAXSTEPS, O_ACCUM, O_SCHED, O_WARMUP, O_CLIP, O_WD, O_SAVE, O_STOP, O_RESUME,
		O_METRICS, O_DTYPE,
	};
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "tokenizer", required_argument, NULL, O_TOK },
		{ "preprocessor", required_argument, NULL, O_PRE },
		{ "init-only", no_argument, NULL, O_INIT },
		{ "output", required_argument, NULL, 'o' },
		{ "train", required_argument, NULL, O_TRAIN },
		{ "lora", required_argument, NULL, O_LORA },
		{ "lora-alpha", required_argument, NULL, O_ALPHA },
		{ "lr", required_argument, NULL, O_LR },
		{ "epochs", required_argument, NULL, O_EPOCHS },
		{ "max-steps", required_argument, NULL, O_MAXSTEPS },
		{ "batch", required_argument, NULL, 'b' },
		{ "accum", required_argument, NULL, O_ACCUM },
		{ "schedule", required_argument, NULL, O_SCHED },
		{ "warmup-ratio", required_argument, NULL, O_WARMUP },
		{ "clip", required_argument, NULL, O_CLIP },
		{ "weight-decay", required_argument, NULL, O_WD },
		{ "seed", required_argument, NULL, 's' },
		{ "save-every", required_argument, NULL, O_SAVE },
		{ "stop-after", required_argument, NULL, O_STOP },
		{ "resume", no_argument, NULL, O_RESUME },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "dtype", required_argument, NULL, O_DTYPE },
		{ "threads", required_argument, NULL, 'j' },
		{ "keep-going", no_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	tensor_blas_setup(argv);
	util_init(argv[0]);
	check_stdout_at_exit();
	dist_init(&argc, &argv); /* under mpirun/srun: data-parallel ranks */
	while ((c = getopt_long(argc, argv, "m:o:b:s:j:kqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.model = optarg; break;
		case O_CONFIG: opt.config = optarg; break;
		case O_TOK: opt.tokenizer = optarg; break;
		case O_PRE: opt.preprocessor = optarg; break;
		case O_INIT: opt.init_only = 1; break;
		case 'o': opt.out = optarg; break;
		case O_TRAIN: opt.train = optarg; break;
		case O_LORA: opt.lora = (int)arg_long("--lora", optarg, 1, 4096); break;
		case O_ALPHA: opt.lora_alpha = arg_double("--lora-alpha", optarg, 1e-6, 1e6); break;
		case O_LR: opt.lr = arg_double("--lr", optarg, 0, 10); break;
		case O_EPOCHS: opt.epochs = (int)arg_long("--epochs", optarg, 1, 1000000); break;
		case O_MAXSTEPS: opt.max_steps = arg_long("--max-steps", optarg, 1, LONG_MAX); break;
		case 'b': opt.batch = (int)arg_long("-b", optarg, 1, 65536); break;
		case O_ACCUM: opt.accum = (int)arg_long("--accum", optarg, 1, 65536); break;
		case O_SCHED:
			if (lr_schedule_parse(optarg) < 0)
				usage_die(usage_text);
			opt.schedule = (enum lr_schedule)lr_schedule_parse(optarg);
			break;
		case O_WARMUP: opt.warmup = arg_double("--warmup-ratio", optarg, 0, 1); break;
		case O_CLIP: opt.clip = arg_double("--clip", optarg, 0, 1e9); break;
		case O_WD: opt.wd = arg_double("--weight-decay", optarg, 0, 10); break;
		case 's': opt.seed = (uint64_t)arg_long("-s", optarg, 0, LONG_MAX); break;
		case O_SAVE: opt.save_every = arg_long("--save-every", optarg, 0, LONG_MAX); break;
		case O_STOP: opt.stop_after = arg_long("--stop-after", optarg, 1, LONG_MAX); break;
		case O_RESUME: opt.resume = 1; break;
		case O_METRICS: opt.metrics = optarg; break;
		case O_DTYPE:
			if (strcmp(optarg, "f32") && strcmp(optarg, "bf16"))
				usage_die(usage_text);
			opt.dtype = optarg;
			break;
		case 'j': opt.threads = (int)arg_long("-j", optarg, 0, 1024); break;
		case 'k': opt.keep = 1; break;
		case 'q': opt.quiet = 1; break;
		case 'h': printf("usage: %s\n", usage_text); return 0;
		default: usage_die(usage_text);
		}
	}
	if (!opt.out || !!opt.model == !!opt.config || (opt.config && !opt.tokenizer))
		usage_die(usage_text);
	if (dist_size() > 1) {
		/* rank 0 speaks and writes; the ranks of a host share its cores */
		if (opt.init_only)
			die("--init-only runs as one process");
		if (dist_rank() > 0)
			opt.quiet = 1;
		if (!opt.threads) {
			long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
			opt.threads = cores > 1 ? (int)cores : 1;
		}
	}
	tensor_set_threads(opt.threads);

	char *stage = NULL, *ckpt = xasprintf("%s.ckpt", opt.out);
	if (opt.config) {
		char *dir = opt.init_only ? xasprintf("%s.init.tmp.%ld", opt.out, (long)getpid())
					  : xasprintf("%s/base", ckpt);
		stage = stage_files(dir);
		free(dir);
	}
	load_model(stage);
	if (opt.init_only) {
		save_final(opt.out);
		remove_tree(stage);
		free(stage);
		free(ckpt);
		lm_release(&lm);
		return 0;
	}

	unsigned parts = opt.train ? parse_parts(opt.train)
				   : opt.lora ? VLM_PART_PROJECTOR
					      : VLM_PART_PROJECTOR | VLM_PART_DECODER;
	if (opt.lora) {
		if (opt.lora_alpha == 0)
			opt.lora_alpha = 2.0 * opt.lora;
		vlm_lora_add(lm.m, opt.lora, (float)opt.lora_alpha, LORA_ALL, opt.seed);
		parts |= VLM_PART_LORA;
	}
	int S = preprocess_side(&lm.m->pre);
	img_floats = 3L * S * S;
	read_inputs(argc, argv);
	if (n_ex == 0)
		die("no training examples");

	long global = (long)opt.batch * opt.accum;
	long per_epoch = (n_ex + global - 1) / global;
	long total = opt.max_steps ? opt.max_steps : per_epoch * opt.epochs;
	long warmup = lr_warmup_steps(total, opt.warmup);
	char *settings = settings_json(parts, total);

	vlm_train_init(lm.m, parts);
	struct train_opt o;
	struct train_state st;
	train_opt_init(&o, lm.m, 0.9f, 0.999f, 1e-8f, (float)opt.wd);
	train_state_init(&st, n_ex, total, opt.seed);
	if (opt.resume) {
		int rc = train_ckpt_load(ckpt, lm.m, &o, &st, settings);
		if (rc < 0)
			return 1;
		if (rc == 1 && !opt.quiet)
			warn("--resume: no checkpoint in '%s', starting from step 0", ckpt);
	}
	long resumed_at = st.step;
	FILE *mf = NULL;
	if (opt.metrics && dist_rank() == 0 &&
	    !(mf = train_metrics_open(opt.metrics, opt.resume ? st.step : -1)))
		return 1;
	train_signals_install();

	uint32_t *idx = xmalloc((size_t)global * sizeof *idx);
	const int **ids = xcalloc((size_t)opt.batch, sizeof *ids);
	const float **w = xcalloc((size_t)opt.batch, sizeof *w);
	int *len = xcalloc((size_t)opt.batch, sizeof *len);
	int *image_of = xcalloc((size_t)opt.batch, sizeof *image_of);
	float *imgs = xmalloc((size_t)opt.batch * (size_t)img_floats * sizeof(float));
	float *logp = xcalloc((size_t)opt.batch, sizeof *logp);
	float *dlogp = xcalloc((size_t)opt.batch, sizeof *dlogp);
	long last_saved = st.step;
	struct progress p;
	progress_init(&p, "steps", total, opt.quiet);

	while (st.step < total) {
		if (dist_any(train_stop_signal)) { /* a signal to any rank stops all */
			if (dist_rank() == 0) {
				if (train_ckpt_save(ckpt, lm.m, &o, &st, settings) < 0)
					return 1;
				warn("interrupted by signal %d: checkpoint of step %ld saved in '%s' "
				     "(continue with --resume)", (int)train_stop_signal, st.step,
				     ckpt);
			}
			dist_barrier(); /* no rank ends the job before that is written */
			exit(1);
		}
		double t0 = now_seconds();
		int k = train_next_batch(&st, (int)global, idx);
		double ntok = 0, loss = 0;
		for (int i = 0; i < k; i++)
			ntok += ex[idx[i]].ntok;
		/* rank r takes rows r, r + N, ... of the global batch */
		int kl = 0;
		for (int i = dist_rank(); i < k; i += dist_size())
			idx[kl++] = idx[i];
		vlm_zero_grad(lm.m);
		for (int i = 0; i < kl; i += opt.batch) {
			int kb = kl - i < opt.batch ? kl - i : opt.batch;
			loss += micro_step(idx + i, kb, ntok, ids, w, len, image_of, imgs, logp, dlogp);
		}
		train_allreduce_grad(lm.m);
		dist_allreduce_sum_double(&loss, 1);
		loss /= ntok;
		double norm = train_clip_grad(lm.m, opt.clip);
		if (!isfinite(loss) || !isfinite(norm))
			die("step %ld: %s is %g; stopped, the last good checkpoint (step %ld) is "
			    "in '%s'", st.step + 1, isfinite(loss) ? "grad norm" : "loss",
			    isfinite(loss) ? norm : loss, last_saved, ckpt);
		double lr = lr_at(opt.schedule, opt.lr, st.step, total, warmup);
		train_opt_step(&o, lm.m, (float)lr);
		st.step++;
		st.tokens += (long)ntok;
		double dt = now_seconds() - t0;
		if (mf) {
			static const char *const names[] = { "step", "epoch", "loss", "lr",
							     "grad_norm", "tokens_per_s" };
			double v[] = { (double)st.step, train_epoch_f(&st), loss, lr, norm,
				       ntok / (dt > 0 ? dt : 1e-9) };
			if (train_metrics_line(mf, names, v, 6) < 0)
				die("write '%s':", opt.metrics);
		}
		char extra[96];
		snprintf(extra, sizeof extra, "loss %.4f, lr %.2e, %.0f tokens/s", loss, lr,
			 ntok / (dt > 0 ? dt : 1e-9));
		progress_update(&p, st.step, extra);
		int stop_here = opt.stop_after && st.step - resumed_at >= opt.stop_after &&
				st.step < total;
		if ((opt.save_every && st.step % opt.save_every == 0 && st.step < total) ||
		    stop_here) {
			if (dist_rank() == 0 && train_ckpt_save(ckpt, lm.m, &o, &st, settings) < 0)
				return 1;
			last_saved = st.step;
		}
		if (stop_here) {
			progress_done(&p);
			if (!opt.quiet)
				warn("stopped after step %ld (--stop-after): continue with --resume",
				     st.step);
			return 0;
		}
	}
	progress_done(&p);
	if (mf && fclose(mf) != 0)
		die("write '%s':", opt.metrics);
	if (dist_rank() == 0)
		save_final(opt.out);
	dist_barrier(); /* a rank exiting non-zero (-k skips) must not end rank 0's write */

	free(idx);
	free(ids);
	free(w);
	free(len);
	free(image_of);
	free(imgs);
	free(logp);
	free(dlogp);
	free(settings);
	for (long i = 0; i < n_ex; i++) {
		free(ex[i].ids);
		free(ex[i].w);
	}
	free(ex);
	free(images);
	train_opt_release(&o);
	train_state_release(&st);
	free(stage);
	free(ckpt);
	lm_release(&lm);
	if (n_skipped) {
		warn("%ld samples skipped", n_skipped);
		return 1;
	}
	return 0;
}
