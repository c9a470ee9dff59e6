/* seva-dpo — DPO training on chosen/rejected pairs as SeVa runs it (both
 * answers scored on the clean image), and --score: the reference log-probs
 * of each pair written back as ref.json. */
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
	"seva-dpo -m MODEL -o OUT [--loss sigmoid|ipo|hinge] [--beta B]\n"
	"       [--label-smoothing E] [--sft-weight W] [--full | --lora R] [--lora-alpha A]\n"
	"       [--lora-targets LIST] [--train PARTS] [--lr LR] [--epochs N] [--max-steps N]\n"
	"       [-b BATCH] [--accum N] [--schedule NAME] [--warmup-ratio R] [--clip NORM]\n"
	"       [--weight-decay WD] [-s SEED] [--save-every N] [--stop-after N] [--resume]\n"
	"       [--metrics FILE] [--dtype f32|bf16] [--ignore-ref] [--skip-long]\n"
	"       [-j THREADS] [-k] [-q] [FILE...]\n"
	"       seva-dpo --score -m MODEL [-b BATCH] [-t] [--skip-long] [-k] [-q] [FILE...]";

static struct {
	const char *model, *out, *metrics, *dtype, *train, *targets;
	int score, full, lora, batch, accum, epochs, keep, quiet, threads, resume, tar;
	int skip_long, ignore_ref;
	long max_steps, save_every, stop_after;
	double lr, warmup, clip, wd, lora_alpha;
	enum lr_schedule schedule;
	struct dpo_opts dpo;
	uint64_t seed;
} opt = {
	.lora = 16, .batch = 8, .accum = 1, .epochs = 1, .lr = -1, .warmup = 0.03, .clip = 1.0,
	.schedule = LR_COSINE, .dtype = "f32", .targets = "q,k,v,o,gate,up,down",
	.dpo = { DPO_SIGMOID, 0.1, 0, 0 },
};

/* One pair: both sequences are prompt + answer, on the same clean image. */
struct pair {
	int *ids[2];     /* chosen, rejected */
	float *w[2];
	int n[2];
	double ntok[2];  /* answer tokens incl. end of turn */
	int image;       /* index into the image cache, -1: none */
	float ref[2];
	int have_ref;
	struct sample s; /* --score only: the record to write back */
};

static struct lm lm;
static struct pair *pairs;
static long n_pairs, n_skipped, n_truncated, n_long;
static float *images;
static long n_images, img_floats;

static void pair_free(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		free(p->ids[i]);
		free(p->w[i]);
	}
	sample_release(&p->s);
}

/* prompt + answer with weights on the answer; the answer is cut to ROOM. */
static void make_seq(struct pair *p, int i, const int *pr, int np, const int *a, int na)
{
	p->n[i] = np + na;
	p->ids[i] = xmalloc((size_t)p->n[i] * sizeof(int));
	p->w[i] = xcalloc((size_t)p->n[i], sizeof(float));
	memcpy(p->ids[i], pr, (size_t)np * sizeof(int));
	memcpy(p->ids[i] + np, a, (size_t)na * sizeof(int));
	for (int t = np; t < p->n[i]; t++)
		p->w[i][t] = 1;
	p->ntok[i] = na;
}

/* Tokenizes the pair S into P; -1 with a reason if it is bad, -2 if it is
 * too long and --skip-long says skip. */
static int pair_make(struct pair *p, struct sample *s, const char **why)
{
	const char *q = sample_text(s, "prompt.txt");
	const char *ans[2] = { sample_text(s, "chosen.txt"), sample_text(s, "rejected.txt") };
	struct field *img = sample_image(s);
	int *pr = NULL, *a[2] = { NULL, NULL }, na[2], rc = -1;

	memset(p, 0, sizeof *p);
	p->image = -1;
	sample_init(&p->s);
	if (!q || !ans[0] || !ans[1]) {
		*why = !q ? "no prompt.txt" : !ans[0] ? "no chosen.txt" : "no rejected.txt";
		return -1;
	}
	/* a question may carry LLaVA's placeholder: the template adds its own */
	struct sample tmp;
	sample_init(&tmp);
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "prompt", q);
	sample_set_json(&tmp, "json", j);
	cJSON_Delete(j);
	char *question = prompt_question(&tmp, why);
	sample_release(&tmp);
	int np = question ? chat_encode_prompt(&lm.chat, question, img != NULL, &pr) : -1;
	free(question);
	if (np < 0) {
		*why = "cannot tokenize prompt.txt";
		return -1;
	}
	for (int i = 0; i < 2; i++)
		if ((na[i] = chat_encode_answer(&lm.chat, ans[i], &a[i])) < 0) {
			*why = "cannot tokenize the answers";
			goto out;
		}
	int room = lm.m->cfg.max_pos - prompt_decoder_len(lm.m, pr, np);
	if (room < 1) {
		*why = "the prompt alone does not fit the model's context";
		rc = -2;
		goto out;
	}
	if (na[0] > room || na[1] > room) {
		if (opt.skip_long) {
			*why = "prompt + answer do not fit the model's context";
			rc = -2;
			goto out;
		}
		n_truncated++;
	}
	for (int i = 0; i < 2; i++)
		make_seq(p, i, pr, np, a[i], na[i] < room ? na[i] : room);
	cJSON *ref = opt.ignore_ref ? NULL : sample_json(s, "ref.json");
	cJSON *rc_ = ref ? cJSON_GetObjectItem(ref, "chosen") : NULL;
	cJSON *rr_ = ref ? cJSON_GetObjectItem(ref, "rejected") : NULL;
	if (cJSON_IsNumber(rc_) && cJSON_IsNumber(rr_)) {
		p->ref[0] = (float)rc_->valuedouble;
		p->ref[1] = (float)rr_->valuedouble;
		p->have_ref = 1;
	} else if (ref) {
		cJSON_Delete(ref);
		*why = "ref.json lacks numbers \"chosen\" and \"rejected\"";
		goto out;
	}
	cJSON_Delete(ref);
	if (img) {
		images = xrealloc(images, (size_t)(n_images + 1) * (size_t)img_floats * sizeof(float));
		if (prompt_image_tensor(lm.m, img, images + n_images * img_floats, why) < 0)
			goto out;
		p->image = (int)n_images++;
	}
	rc = 0;
out:
	free(pr);
	free(a[0]);
	free(a[1]);
	if (rc < 0)
		pair_free(p);
	return rc;
}

/* Policy log-probs of pairs IDX (k): lp[2i], lp[2i+1] = chosen, rejected.
 * With KEEP the forward is kept for vlm_backward. */
static void forward_pairs(const uint32_t *idx, int k, float *lp, int keep)
{
	const int **ids = xcalloc((size_t)(2 * k), sizeof *ids);
	const float **w = xcalloc((size_t)(2 * k), sizeof *w);
	int *len = xcalloc((size_t)(2 * k), sizeof *len);
	int *image_of = xcalloc((size_t)(2 * k), sizeof *image_of);
	float *imgs = xmalloc((size_t)(k ? k : 1) * (size_t)img_floats * sizeof(float));
	int ni = 0;
	for (int i = 0; i < k; i++) {
		struct pair *p = &pairs[idx[i]];
		int im = -1;
		if (p->image >= 0) {
			memcpy(imgs + ni * img_floats, images + p->image * img_floats,
			       (size_t)img_floats * sizeof(float));
			im = ni++;
		}
		for (int c = 0; c < 2; c++) {
			ids[2 * i + c] = p->ids[c];
			w[2 * i + c] = p->w[c];
			len[2 * i + c] = p->n[c];
			image_of[2 * i + c] = im; /* chosen and rejected share the clean image */
		}
	}
	struct vlm_batch vb = { .B = 2 * k, .ids = ids, .len = len, .weight = w,
				.n_images = ni, .images = imgs, .image_of = image_of };
	if (vlm_forward(lm.m, &vb, lp, keep) < 0)
		exit(1);
	free(ids);
	free(w);
	free(len);
	free(image_of);
	free(imgs);
}

/* Reference log-probs of pairs FROM..TO that have none, in batches of -b
 * pairs in input order: the same code and batches as --score, so ref.json
 * from a scoring run and the in-memory reference are the same numbers. */
static void score_range(long from, long to)
{
	uint32_t *idx = xmalloc((size_t)opt.batch * sizeof *idx);
	float *lp = xmalloc((size_t)(2 * opt.batch) * sizeof *lp);
	long b = 0;
	for (long i = from; i < to;) {
		int k = 0;
		while (i < to && k < opt.batch) {
			if (!pairs[i].have_ref)
				idx[k++] = (uint32_t)i;
			i++;
		}
		if (!k || b++ % dist_size() != dist_rank())
			continue; /* with N ranks, each scores every N-th batch */
		forward_pairs(idx, k, lp, 0);
		for (int j = 0; j < k; j++) {
			pairs[idx[j]].ref[0] = lp[2 * j];
			pairs[idx[j]].ref[1] = lp[2 * j + 1];
			pairs[idx[j]].have_ref = 1;
		}
	}
	free(idx);
	free(lp);
}

/* --score: scores the pairs held, writes them back with ref.json, frees them. */
static void flush_scored(struct rec_writer *w)
{
	score_range(0, n_pairs);
	for (long i = 0; i < n_pairs; i++) {
		struct pair *q = &pairs[i];
		cJSON *j = cJSON_CreateObject();
		cJSON_AddNumberToObject(j, "chosen", q->ref[0]);
		cJSON_AddNumberToObject(j, "rejected", q->ref[1]);
		cJSON_AddNumberToObject(j, "chosen_tokens", q->ntok[0]);
		cJSON_AddNumberToObject(j, "rejected_tokens", q->ntok[1]);
		cJSON_AddStringToObject(j, "model", opt.model);
		sample_set_json(&q->s, "ref.json", j);
		cJSON_Delete(j);
		if (rec_write(w, &q->s) < 0)
			exit(1);
		pair_free(q);
	}
	n_pairs = 0;
	n_images = 0;
}

/* Reads every pair (into memory for training; for --score, writes each
 * batch back as soon as it is scored). */
static void read_pairs(int argc, char **argv, struct rec_writer *w)
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
			struct pair p;
			if (rc < 0) {
				if (!opt.keep)
					exit(1);
				n_skipped++;
				continue;
			}
			rc = pair_make(&p, &s, &why);
			if (rc == -2) {
				/* --skip-long: skipped and counted, as documented */
				n_long++;
				continue;
			}
			if (rc < 0) {
				if (!opt.keep)
					die("%s: %s", rec_where(r), why);
				warn("%s: %s (skipped)", rec_where(r), why);
				n_skipped++;
				continue;
			}
			if (w) {
				p.s = s;
				sample_init(&s);
			}
			pairs = xrealloc(pairs, (size_t)(n_pairs + 1) * sizeof *pairs);
			pairs[n_pairs++] = p;
			if (w && n_pairs == opt.batch)
				flush_scored(w);
		}
		rec_close(r);
	}
	sample_release(&s);
}

static unsigned parse_list(const char *s, const char *what, const char *const *names, int n)
{
	unsigned mask = 0;
	char *copy = xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int i;
		for (i = 0; i < n && strcmp(t, names[i]); i++)
			;
		if (i == n) {
			fprintf(stderr, "%s: %s: unknown name '%s'\n", progname, what, t);
			exit(2);
		}
		mask |= 1u << i;
	}
	free(copy);
	return mask;
}

static const char *const part_names[] = { "vision", "projector", "decoder" };
static const char *const target_names[] = { "q", "k", "v", "o", "gate", "up", "down" };

static char *settings_json(unsigned parts, unsigned targets, long total)
{
	return xasprintf("{\"model\":\"%s\",\"loss\":\"%s\",\"beta\":%.9g,\"label_smoothing\":%.9g,"
			 "\"sft_weight\":%.9g,\"lr\":%.9g,\"schedule\":\"%s\",\"warmup_ratio\":%.9g,"
			 "\"total_steps\":%ld,\"batch\":%d,\"accum\":%d,\"clip\":%.9g,"
			 "\"weight_decay\":%.9g,\"seed\":%llu,\"train\":%u,\"lora\":%d,"
			 "\"lora_alpha\":%.9g,\"lora_targets\":%u}",
			 opt.model, dpo_loss_name(opt.dpo.type), opt.dpo.beta,
			 opt.dpo.label_smoothing, opt.dpo.sft_weight, opt.lr,
			 lr_schedule_name(opt.schedule), opt.warmup, total, opt.batch, opt.accum,
			 opt.clip, opt.wd, (unsigned long long)opt.seed, parts,
			 opt.full ? 0 : opt.lora, opt.lora_alpha, targets);
}

/* Sums over a global batch for the metrics (means over pairs). */
struct stats {
	double loss, rc, rr, acc, pc, pr;
};

/* The reference of every pair without ref.json. With N ranks each scores
 * every N-th batch (the same batches as one process) and the others'
 * numbers arrive by a sum in which each term but one is zero: exact. */
static void score_all(void)
{
	unsigned char *need = xmalloc((size_t)n_pairs);
	for (long i = 0; i < n_pairs; i++)
		need[i] = !pairs[i].have_ref;
	score_range(0, n_pairs);
	if (dist_size() > 1) {
		double *v = xcalloc((size_t)(2 * n_pairs), sizeof *v);
		for (long i = 0; i < n_pairs; i++)
			if (need[i] && pairs[i].have_ref) {
				v[2 * i] = pairs[i].ref[0];
				v[2 * i + 1] = pairs[i].ref[1];
			}
		for (long i = 0; i < 2 * n_pairs; i += 1L << 28)
			dist_allreduce_sum_double(v + i, (int)(2 * n_pairs - i < 1L << 28 ?
							       2 * n_pairs - i : 1L << 28));
		for (long i = 0; i < n_pairs; i++)
			if (need[i]) {
				pairs[i].ref[0] = (float)v[2 * i];
				pairs[i].ref[1] = (float)v[2 * i + 1];
				pairs[i].have_ref = 1;
			}
		free(v);
	}
	free(need);
}

static int score_main(int argc, char **argv)
{
	struct rec_writer *w = rec_writer_open(NULL, opt.tar ? REC_TAR : REC_MSGPACK, 0);
	if (!w)
		return 1;
	opt.ignore_ref = 1; /* --score computes afresh */
	read_pairs(argc, argv, w);
	flush_scored(w);
	return rec_writer_close(w) < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	enum {
		O_SCORE = 256, O_LOSS, O_BETA, O_LS, O_SFTW, O_FULL, O_LORA, O_ALPHA, O_TARGETS,
		O_TRAIN, O_LR, O_EPOCHS, O_MAXSTEPS, O_ACCUM, O_SCHED, O_WARMUP, O_CLIP, O_WD,
		O_SAVE, O_STOP, O_RESUME, O_METRICS, O_DTYPE, O_IGNREF, O_SKIPLONG,
	};
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "score", no_argument, NULL, O_SCORE },
		{ "loss", required_argument, NULL, O_LOSS },
		{ "beta", required_argument, NULL, O_BETA },
		{ "label-smoothing", required_argument, NULL, O_LS },
		{ "sft-weight", required_argument, NULL, O_SFTW },
		{ "full", no_argument, NULL, O_FULL },
		{ "lora", required_argument, NULL, O_LORA },
		{ "lora-alpha", required_argument, NULL, O_ALPHA },
		{ "lora-targets", required_argument, NULL, O_TARGETS },
		{ "train", required_argument, NULL, O_TRAIN },
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
		{ "ignore-ref", no_argument, NULL, O_IGNREF },
		{ "skip-long", no_argument, NULL, O_SKIPLONG },
		{ "tar", no_argument, NULL, 't' },
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
	while ((c = getopt_long(argc, argv, "m:o:b:s:j:tkqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.model = optarg; break;
		case 'o': opt.out = optarg; break;
		case O_SCORE: opt.score = 1; break;
		case O_LOSS:
			if (dpo_loss_parse(optarg) < 0)
				usage_die(usage_text);
			opt.dpo.type = (enum dpo_loss_type)dpo_loss_parse(optarg);
			break;
		case O_BETA: opt.dpo.beta = arg_double("--beta", optarg, 1e-9, 1e9); break;
		case O_LS: opt.dpo.label_smoothing = arg_double("--label-smoothing", optarg, 0, 0.5); break;
		case O_SFTW: opt.dpo.sft_weight = arg_double("--sft-weight", optarg, 0, 1e6); break;
		case O_FULL: opt.full = 1; break;
		case O_LORA: opt.lora = (int)arg_long("--lora", optarg, 1, 4096); break;
		case O_ALPHA: opt.lora_alpha = arg_double("--lora-alpha", optarg, 1e-6, 1e6); break;
		case O_TARGETS: opt.targets = optarg; break;
		case O_TRAIN: opt.train = optarg; break;
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
		case O_IGNREF: opt.ignore_ref = 1; break;
		case O_SKIPLONG: opt.skip_long = 1; break;
		case 't': opt.tar = 1; break;
		case 'j': opt.threads = (int)arg_long("-j", optarg, 0, 1024); break;
		case 'k': opt.keep = 1; break;
		case 'q': opt.quiet = 1; break;
		case 'h': printf("usage: %s\n", usage_text); return 0;
		default: usage_die(usage_text);
		}
	}
	if (!opt.model || (!opt.score && !opt.out) || (opt.score && opt.out))
		usage_die(usage_text);
	if (dist_size() > 1) {
		/* rank 0 speaks and writes; the ranks of a host share its cores */
		if (opt.score)
			die("--score runs as one process: shard its input instead "
			    "(pipelines/shards.sh --score)");
		if (dist_rank() > 0)
			opt.quiet = 1;
		if (!opt.threads) {
			long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
			opt.threads = cores > 1 ? (int)cores : 1;
		}
	}
	tensor_set_threads(opt.threads);
	if (lm_load(&lm, opt.model) < 0)
		return 1;
	int S = preprocess_side(&lm.m->pre);
	img_floats = 3L * S * S;

	if (opt.score) {
		int rc = score_main(argc, argv);
		if (n_long)
			warn("%ld pairs too long for the context skipped (--skip-long)", n_long);
		if (n_truncated)
			warn("%ld pairs: answer truncated to fit the context", n_truncated);
		lm_release(&lm);
		free(pairs);
		free(images);
		if (rc == 0 && n_skipped) {
			warn("%ld samples skipped", n_skipped);
			rc = 1;
		}
		return rc;
	}

	/* what trains: LoRA + projector by default, or the decoder in full */
	unsigned parts = opt.train ? parse_list(opt.train, "--train", part_names, 3)
				   : VLM_PART_PROJECTOR | (opt.full ? VLM_PART_DECODER : 0);
	unsigned targets = parse_list(opt.targets, "--lora-targets", target_names, 7);
	if (opt.lr < 0)
		opt.lr = opt.full ? 1e-5 : 2e-4;
	if (opt.lora_alpha == 0)
		opt.lora_alpha = 2.0 * opt.lora;

	read_pairs(argc, argv, NULL);
	if (n_long)
		warn("%ld pairs too long for the context skipped (--skip-long)", n_long);
	if (n_truncated)
		warn("%ld pairs: answer truncated to fit the context", n_truncated);
	if (n_pairs == 0)
		die("no pairs to train on");
	/* The reference is the initial weights (LoRA not yet added), scored
	 * once before training as TRL's precompute_ref_log_probs does: no
	 * second copy of the model for --full. */
	score_all();

	long global = (long)opt.batch * opt.accum;
	long per_epoch = (n_pairs + global - 1) / global;
	long total = opt.max_steps ? opt.max_steps : per_epoch * opt.epochs;
	long warmup = lr_warmup_steps(total, opt.warmup);
	char *settings = settings_json(parts, targets, total);
	char *ckpt = xasprintf("%s.ckpt", opt.out);

	if (!opt.full) {
		vlm_lora_add(lm.m, opt.lora, (float)opt.lora_alpha, targets, opt.seed);
		parts |= VLM_PART_LORA;
	}
	vlm_train_init(lm.m, parts);
	struct train_opt o;
	struct train_state st;
	train_opt_init(&o, lm.m, 0.9f, 0.999f, 1e-8f, (float)opt.wd);
	train_state_init(&st, n_pairs, total, opt.seed);
	if (opt.resume) {
		int rc = train_ckpt_load(ckpt, lm.m, &o, &st, settings);
		if (rc < 0)
			return 1;
		if (rc == 1 && !opt.quiet)
			warn("--resume: no checkpoint in '%s', starting from step 0", ckpt);
	}
	long resumed_at = st.step, last_saved = st.step;
	FILE *mf = NULL;
	if (opt.metrics && dist_rank() == 0 &&
	    !(mf = train_metrics_open(opt.metrics, opt.resume ? st.step : -1)))
		return 1;
	train_signals_install();

	uint32_t *idx = xmalloc((size_t)global * sizeof *idx);
	float *lp = xmalloc((size_t)(2 * opt.batch) * sizeof *lp);
	float *dlp = xmalloc((size_t)(2 * opt.batch) * sizeof *dlp);
	struct progress pg;
	progress_init(&pg, "steps", total, opt.quiet);

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
		/* rank r takes rows r, r + N, ... of the global batch */
		int kl = 0;
		for (int i = dist_rank(); i < k; i += dist_size())
			idx[kl++] = idx[i];
		struct stats sum = { 0 };
		vlm_zero_grad(lm.m);
		for (int i = 0; i < kl; i += opt.batch) {
			int kb = kl - i < opt.batch ? kl - i : opt.batch;
			forward_pairs(idx + i, kb, lp, 1);
			for (int j = 0; j < kb; j++) {
				struct pair *p = &pairs[idx[i + j]];
				struct dpo_pair r;
				dpo_pair_loss(&opt.dpo, lp[2 * j], lp[2 * j + 1], p->ref[0], p->ref[1],
					      p->ntok[0], p->ntok[1], &r);
				dlp[2 * j] = (float)(r.dpc / k);
				dlp[2 * j + 1] = (float)(r.dpr / k);
				sum.loss += r.loss;
				sum.rc += r.reward_c;
				sum.rr += r.reward_r;
				sum.acc += r.reward_c > r.reward_r;
				sum.pc += lp[2 * j];
				sum.pr += lp[2 * j + 1];
			}
			vlm_backward(lm.m, dlp);
		}
		train_allreduce_grad(lm.m);
		dist_allreduce_sum_double((double *)&sum, sizeof sum / sizeof(double));
		double loss = sum.loss / k;
		double norm = train_clip_grad(lm.m, opt.clip);
		if (!isfinite(loss) || !isfinite(norm))
			die("step %ld: %s is %g; stopped, the last good checkpoint (step %ld) is "
			    "in '%s'", st.step + 1, isfinite(loss) ? "grad norm" : "loss",
			    isfinite(loss) ? norm : loss, last_saved, ckpt);
		double lr = lr_at(opt.schedule, opt.lr, st.step, total, warmup);
		train_opt_step(&o, lm.m, (float)lr);
		st.step++;
		st.tokens += k;
		double dt = now_seconds() - t0;
		if (mf) {
			static const char *const names[] = {
				"step", "epoch", "loss", "rewards/chosen", "rewards/rejected",
				"rewards/accuracies", "rewards/margins", "logps/chosen",
				"logps/rejected", "lr", "grad_norm", "pairs_per_s",
			};
			double v[] = { (double)st.step, train_epoch_f(&st), loss, sum.rc / k,
				       sum.rr / k, sum.acc / k, (sum.rc - sum.rr) / k, sum.pc / k,
				       sum.pr / k, lr, norm, k / (dt > 0 ? dt : 1e-9) };
			if (train_metrics_line(mf, names, v, 12) < 0)
				die("write '%s':", opt.metrics);
		}
		char extra[128];
		snprintf(extra, sizeof extra, "loss %.4f, acc %.2f, margin %.3f, %.1f pairs/s", loss,
			 sum.acc / k, (sum.rc - sum.rr) / k, k / (dt > 0 ? dt : 1e-9));
		progress_update(&pg, st.step, extra);
		int stop_here = opt.stop_after && st.step - resumed_at >= opt.stop_after &&
				st.step < total;
		if ((opt.save_every && st.step % opt.save_every == 0 && st.step < total) ||
		    stop_here) {
			if (dist_rank() == 0 && train_ckpt_save(ckpt, lm.m, &o, &st, settings) < 0)
				return 1;
			last_saved = st.step;
		}
		if (stop_here) {
			progress_done(&pg);
			if (!opt.quiet)
				warn("stopped after step %ld (--stop-after): continue with --resume",
				     st.step);
			return 0;
		}
	}
	progress_done(&pg);
	if (mf && fclose(mf) != 0)
		die("write '%s':", opt.metrics);
	if (dist_rank() == 0 &&
	    train_save_model(lm.m, opt.out, !strcmp(opt.dtype, "bf16") ? "BF16" : "F32") < 0)
		return 1;
	dist_barrier(); /* a rank exiting non-zero (-k skips) must not end rank 0's write */

	free(idx);
	free(lp);
	free(dlp);
	free(settings);
	free(ckpt);
	for (long i = 0; i < n_pairs; i++)
		pair_free(&pairs[i]);
	free(pairs);
	free(images);
	train_opt_release(&o);
	train_state_release(&st);
	lm_release(&lm);
	if (n_skipped) {
		warn("%ld samples skipped", n_skipped);
		return 1;
	}
	return 0;
}
