/* seva-sft — supervised fine-tuning: loss on the assistant's tokens only.
 * Also makes randomly initialised model directories (--init-only). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conversation.h"
#include "dist.h"
#include "prompt.h"
#include "rec.h"
#include "tensor.h"
#include "train.h"
#include "util.h"

static const char usage_text[] =
	"seva-sft (-m MODEL | --config CONFIG.json --tokenizer TOKENIZER.json\n"
	"       [--preprocessor FILE]) -o OUT [--init-only] [--train PARTS] [--lora R]\n"
	"       [--lora-alpha A] [--use-rslora] [--lora-dropout P] [--lr LR]\n"
	"       [--projector-lr LR] [--epochs N] [--max-steps N] [-b BATCH]\n"
	"       [--accum N] [--schedule NAME] [--warmup-ratio R] [--warmup-steps N]\n"
	"       [--adam-beta1 B] [--adam-beta2 B] [--adam-eps E] [--clip NORM]\n"
	"       [--weight-decay WD] [-s SEED] [--save-every N] [--stop-after N] [--resume]\n"
	"       [--metrics FILE] [--dtype f32|bf16] [--loss-per token|turn] [--vision-labels]\n"
	"       [--vision-attributes] [--precision auto|f32|bf16] [-j THREADS] [-k] [-q] [-v]\n"
	"       [FILE...]";

static struct {
	struct train_args t;
	const char *config, *tokenizer, *preprocessor;
	int init_only, vision_labels;
	int vision_attr;  /* --vision-attributes: "COLOR SHAPE" labels too */
	int per_turn;   /* --loss-per turn */
} opt;

/* One training sequence: prompt and answer ids, weights on answer tokens
 * (1, or 1/length of its turn under --loss-per turn: then a one-word answer
 * counts as much as a 30-token description in a mixed conversation; by
 * default, as TRL and LLaVA do, the descriptions drown the short answers). */
struct example {
	int *ids;
	float *w;
	int n;
	int image;      /* index into the image cache, -1: none */
	double ntok;    /* sum of w: answer tokens, or turns */
};

static struct lm lm;
static struct example *ex;
static long n_ex;
static struct rec_input in;
static float *images;   /* (n_images, 3, S, S), decoded once */
static long n_images, img_floats;

/* Tokenizes S into the next example; -1 with a reason if it is bad. */
static int example_add(void *ctx, struct sample *s, const char **why)
{
	char **turns;
	int nt = conversation_turns(s, &turns, why);
	(void)ctx;
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
			conversation_turns_free(turns, nt);
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
			conversation_turns_free(turns, nt);
			*why = "cannot tokenize the conversation";
			return -1;
		}
	}
	conversation_turns_free(turns, nt);
	if (opt.per_turn)
		chat_weigh_per_turn(e.w, e.n);
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

/* Buffers of one micro-batch (-b sequences). */
struct micro {
	const int **ids;
	const float **w;
	int *len, *image_of;
	float *imgs, *logp, *dlogp;
	uint64_t *keys;         /* LoRA dropout's, one per sequence */
	float *dfeat, *pool;    /* --vision-labels: (-b, tokens, width), 2 x width */
};

/*
 * --vision-labels: pretraining of the vision tower alone, before any
 * conversation, as LLaVA's tower comes pretrained (CLIP). Each image's
 * features, averaged over its tokens, are read out by a fixed random
 * linear head (one row per label, so only the tower learns and a resume
 * needs no head state) into one logit per label: binary cross-entropy
 * against the labels in json.objects. An example keeps its label indices
 * in ids (n of them).
 */
static char **labels;
static int n_labels;
static float *head;     /* (n_labels, v_hidden) */

static int label_index(const char *name)
{
	for (int i = 0; i < n_labels; i++)
		if (!strcmp(labels[i], name))
			return i;
	labels = xrealloc(labels, (size_t)(n_labels + 1) * sizeof *labels);
	labels[n_labels] = xstrdup(name);
	return n_labels++;
}

/* json.objects: strings, or objects naming theirs by "shape", "name",
 * "label" or "category" (the embedded world's and COCO-style lists). */
static int vision_example_add(void *ctx, struct sample *s, const char **why)
{
	static const char *const keys[] = { "shape", "name", "label", "category" };
	struct example e = { .image = -1 };
	struct field *img = sample_image(s);
	cJSON *j = sample_json(s, "json"), *o, *it;
	(void)ctx;
	*why = "no json.objects array";
	if (!j || !cJSON_IsArray(o = cJSON_GetObjectItem(j, "objects")))
		goto bad;
	e.ids = xcalloc(2 * (size_t)cJSON_GetArraySize(o) + 1, sizeof *e.ids);
	cJSON_ArrayForEach(it, o) {
		const char *name = cJSON_IsString(it) ? it->valuestring : NULL;
		for (int k = 0; !name && k < 4; k++) {
			cJSON *v = cJSON_GetObjectItem(it, keys[k]);
			name = cJSON_IsString(v) ? v->valuestring : NULL;
		}
		if (!name) {
			*why = "json.objects: an entry is not a string and names no shape, name, label or category";
			goto bad;
		}
		/* With --vision-attributes an entry that has a colour adds the
		 * label "COLOR NAME" as well: a tower pretrained on names alone
		 * learns features that ignore colour (shape recognition wants
		 * that invariance), and then which colour goes with which
		 * object cannot be read off them. */
		const cJSON *col = cJSON_GetObjectItem(it, "color");
		char *attr = opt.vision_attr && cJSON_IsString(col)
				     ? xasprintf("%s %s", col->valuestring, name) : NULL;
		for (int pass = 0; pass < (attr ? 2 : 1); pass++) {
			int l = label_index(pass ? attr : name), seen = 0;
			for (int i = 0; i < e.n; i++)
				seen |= e.ids[i] == l;
			if (!seen)
				e.ids[e.n++] = l;
		}
		free(attr);
	}
	*why = "no image";
	if (!img)
		goto bad;
	images = xrealloc(images, (size_t)(n_images + 1) * (size_t)img_floats * sizeof(float));
	if (prompt_image_tensor(lm.m, img, images + n_images * img_floats, why) < 0)
		goto bad;
	e.image = (int)n_images++;
	cJSON_Delete(j);
	ex = xrealloc(ex, (size_t)(n_ex + 1) * sizeof *ex);
	ex[n_ex++] = e;
	return 0;
bad:
	cJSON_Delete(j);
	free(e.ids);
	return -1;
}

static void vision_head_init(void)
{
	int VC = lm.m->cfg.v_hidden;
	struct rng r;
	rng_seed(&r, opt.t.seed, "vision-labels", "head");
	head = xmalloc((size_t)n_labels * VC * sizeof *head);
	for (long i = 0; i < (long)n_labels * VC; i++)
		head[i] = (float)(rng_normal(&r) / sqrt(VC));
}

/* The loss is a mean over the batch's (image, label) decisions. */
static double vision_denom(void *ctx, const uint32_t *batch, int k)
{
	(void)ctx, (void)batch;
	return (double)k * n_labels;
}

static void vision_micro_step(void *ctx, const uint32_t *idx, int k, double denom, double *sums)
{
	struct micro *b = ctx;
	int VC = lm.m->cfg.v_hidden, ni, nt, tok = lm.m->cfg.image_token_index;
	for (int i = 0; i < k; i++) {
		b->ids[i] = &tok;
		b->len[i] = 1;
		b->image_of[i] = i;
		memcpy(b->imgs + (size_t)i * img_floats, images + (size_t)ex[idx[i]].image * img_floats,
		       (size_t)img_floats * sizeof(float));
	}
	struct vlm_batch vb = { .B = k, .ids = b->ids, .len = b->len, .n_images = k,
				.images = b->imgs, .image_of = b->image_of };
	if (vlm_forward_features(lm.m, &vb, 1) < 0)
		exit(1);
	const float *feat = vlm_image_features(lm.m, &ni, &nt);
	float *dfeat = b->dfeat, *pool = b->pool, *dpool = b->pool + VC;
	for (int i = 0; i < k; i++) {
		const struct example *e = &ex[idx[i]];
		for (int c = 0; c < VC; c++)
			pool[c] = dpool[c] = 0;
		for (int t = 0; t < nt; t++)
			for (int c = 0; c < VC; c++)
				pool[c] += feat[((size_t)i * nt + t) * VC + c] / nt;
		for (int l = 0; l < n_labels; l++) {
			double z = 0;
			int y = 0;
			for (int c = 0; c < VC; c++)
				z += (double)pool[c] * head[(size_t)l * VC + c];
			for (int q = 0; q < e->n; q++)
				y |= e->ids[q] == l;
			sums[0] += fmax(z, 0) - z * y + log1p(exp(-fabs(z)));
			sums[1] += (z > 0) == y;
			double dz = (1 / (1 + exp(-z)) - y) / denom;
			for (int c = 0; c < VC; c++)
				dpool[c] += (float)(dz * head[(size_t)l * VC + c]);
		}
		for (int t = 0; t < nt; t++)
			for (int c = 0; c < VC; c++)
				dfeat[((size_t)i * nt + t) * VC + c] = dpool[c] / nt;
	}
	vlm_backward_features(lm.m, dfeat);
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

static void load_model(const char *stage)
{
	if (opt.t.model) {
		if (lm_load(&lm, opt.t.model) < 0)
			exit(1);
		return;
	}
	struct vlm_config cfg;
	if (vlm_config_load(&cfg, opt.config) < 0)
		exit(1);
	struct vlm *m = vlm_new(&cfg);
	vlm_init_random(m, opt.t.seed);
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
	char *common = train_settings(&opt.t, total, parts, opt.t.lora);
	char *s = xasprintf("{\"model\":\"%s\",\"vision_labels\":%d,\"loss_per\":\"%s\",%s}",
			    opt.t.model ? opt.t.model : opt.config, opt.vision_labels,
			    opt.per_turn ? "turn" : "token", common);
	free(common);
	return s;
}

/* The loss is a mean over the global batch's answer tokens (or turns). */
static double batch_tokens(void *ctx, const uint32_t *batch, int k)
{
	double ntok = 0;
	(void)ctx;
	for (int i = 0; i < k; i++)
		ntok += ex[batch[i]].ntok;
	return ntok;
}

/* Forward and backward over examples IDX (k of them): accumulates the
 * gradient of sum(-logp) / ntok; adds sum(-logp) to SUMS[0]. */
static void micro_step(void *ctx, const uint32_t *idx, int k, double ntok, double *sums)
{
	struct micro *b = ctx;
	int ni = 0;
	for (int i = 0; i < k; i++) {
		struct example *e = &ex[idx[i]];
		b->ids[i] = e->ids;
		b->w[i] = e->w;
		b->len[i] = e->n;
		b->image_of[i] = -1;
		b->keys[i] = train_drop_key(idx[i], 0);
		if (e->image >= 0) {
			memcpy(b->imgs + ni * img_floats, images + e->image * img_floats,
			       (size_t)img_floats * sizeof(float));
			b->image_of[i] = ni++;
		}
	}
	struct vlm_batch vb = { .B = k, .ids = b->ids, .len = b->len, .weight = b->w,
				.n_images = ni, .images = b->imgs, .image_of = b->image_of,
				.drop_key = b->keys };
	if (vlm_forward(lm.m, &vb, b->logp, 1) < 0)
		exit(1);
	for (int i = 0; i < k; i++) {
		sums[0] -= b->logp[i];
		b->dlogp[i] = (float)(-1.0 / ntok);
	}
	vlm_backward(lm.m, b->dlogp);
}

static int train(unsigned parts)
{
	long total = train_total_steps(&opt.t, n_ex);
	char *settings = settings_json(parts, total);
	size_t B = (size_t)opt.t.batch;
	struct micro b = {
		.ids = xcalloc(B, sizeof *b.ids), .w = xcalloc(B, sizeof *b.w),
		.len = xcalloc(B, sizeof *b.len), .image_of = xcalloc(B, sizeof *b.image_of),
		.keys = xcalloc(B, sizeof *b.keys),
		.imgs = xmalloc(B * (size_t)img_floats * sizeof(float)),
		.logp = xcalloc(B, sizeof *b.logp), .dlogp = xcalloc(B, sizeof *b.dlogp),
	};
	if (opt.vision_labels) {
		size_t VC = (size_t)lm.m->cfg.v_hidden;
		b.dfeat = xmalloc(B * (size_t)lm.m->cfg.feat_tokens * VC * sizeof(float));
		b.pool = xmalloc(2 * VC * sizeof(float));
	}
	struct train_loop L = {
		.m = lm.m, .a = &opt.t, .n = n_ex, .total = total, .settings = settings,
		.unit = opt.per_turn ? "turns" : "tokens", .denom = batch_tokens, .micro = micro_step, .nsums = 1,
		.ctx = &b,
	};
	static const char *const acc_name[] = { "accuracy" };
	if (opt.vision_labels) {
		L.unit = "labels";
		L.denom = vision_denom;
		L.micro = vision_micro_step;
		L.nsums = 2;
		L.names = acc_name;
	}
	vlm_train_init(lm.m, parts);
	int rc = train_run(&L);
	free(b.ids);
	free(b.w);
	free(b.len);
	free(b.image_of);
	free(b.keys);
	free(b.imgs);
	free(b.logp);
	free(b.dlogp);
	free(b.dfeat);
	free(b.pool);
	free(settings);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_CONFIG = 256, O_TOK, O_PRE, O_INIT, O_VLAB, O_VATTR, O_LOSSPER };
	static const struct option longopts[] = {
		TRAIN_LONGOPTS,
		{ "config", required_argument, NULL, O_CONFIG },
		{ "tokenizer", required_argument, NULL, O_TOK },
		{ "preprocessor", required_argument, NULL, O_PRE },
		{ "init-only", no_argument, NULL, O_INIT },
		{ "vision-labels", no_argument, NULL, O_VLAB },
		{ "vision-attributes", no_argument, NULL, O_VATTR },
		{ "loss-per", required_argument, NULL, O_LOSSPER },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static const char *const loss_per[] = { "token", "turn" };
	int c, rc = 0;

	tensor_blas_setup(argv);
	util_init_args(argc, argv);
	check_stdout_at_exit();
	dist_init(&argc, &argv); /* under mpirun/srun: data-parallel ranks */
	train_args_command(argc, argv);
	train_args_init(&opt.t);
	opt.t.lr = 1e-3;
	while ((c = getopt_long(argc, argv, TRAIN_SHORTOPTS "h", longopts, NULL)) != -1) {
		if (train_args_option(&opt.t, c, optarg, usage_text))
			continue;
		switch (c) {
		case O_CONFIG: opt.config = optarg; break;
		case O_TOK: opt.tokenizer = optarg; break;
		case O_PRE: opt.preprocessor = optarg; break;
		case O_INIT: opt.init_only = 1; break;
		case O_VLAB: opt.vision_labels = 1; break;
		case O_VATTR: opt.vision_attr = 1; break;
		case O_LOSSPER: opt.per_turn = arg_choice("--loss-per", optarg, loss_per, 2); break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	if (!opt.t.out || !!opt.t.model == !!opt.config || (opt.config && !opt.tokenizer))
		usage_die(usage_text);
	if (dist_size() > 1 && opt.init_only)
		die("--init-only runs as one process");
	train_args_setup(&opt.t);

	if (train_output_check(&opt.t) < 0)
		return 1;

	char *stage = NULL;
	if (opt.config) {
		char *dir = opt.init_only ? xasprintf("%s.init.tmp.%ld", opt.t.out, (long)getpid())
					  : xasprintf("%s.ckpt/base", opt.t.out);
		if (opt.init_only)
			tmp_track(dir); /* a bad config or tokenizer leaves nothing */
		stage = stage_files(dir);
		free(dir);
	}
	load_model(stage);
	if (opt.init_only) {
		if (train_save_model(lm.m, opt.t.out, opt.t.dtype ? opt.t.dtype : "F32", NULL) < 0)
			exit(1);
		tmp_untrack(stage);
		remove_tree(stage);
		free(stage);
		lm_release(&lm);
		return 0;
	}

	unsigned parts = opt.t.train ? train_parse_parts(opt.t.train)
				     : opt.t.lora ? VLM_PART_PROJECTOR
						  : VLM_PART_PROJECTOR | VLM_PART_DECODER;
	if (opt.vision_attr && !opt.vision_labels) {
		warn("--vision-attributes adds labels to --vision-labels");
		usage_die(usage_text);
	}
	if (opt.vision_labels) {
		if (opt.t.lora || (opt.t.train && parts != VLM_PART_VISION)) {
			warn("--vision-labels trains the vision tower alone (--train vision, no --lora)");
			usage_die(usage_text);
		}
		parts = VLM_PART_VISION;
	}
	train_args_check(&opt.t, opt.t.lora, parts);
	if (opt.t.lora) {
		if (opt.t.lora_alpha == 0)
			opt.t.lora_alpha = 2.0 * opt.t.lora;
		train_lora_add(&opt.t, lm.m, LORA_ALL);
		parts |= VLM_PART_LORA;
	}
	int S = preprocess_side(&lm.m->pre);
	img_floats = 3L * S * S;
	rec_input_init(&in, argv + optind, argc - optind, opt.t.keep);
	if (rec_input_each(&in, opt.vision_labels ? vision_example_add : example_add, NULL) < 0)
		return 1;
	if (opt.vision_labels && n_ex > 0)
		vision_head_init();
	if (n_ex == 0) {
		rec_input_release(&in);
		die("no training examples: %s, nothing to train on",
		    in.read ? "every sample was skipped" : "the input is empty");
	}
	int trc = train(parts);
	if (trc < 0)
		rc = 1;
	else
		rc = rec_input_release(&in);

	for (long i = 0; i < n_ex; i++) {
		free(ex[i].ids);
		free(ex[i].w);
	}
	free(ex);
	free(images);
	for (int i = 0; i < n_labels; i++)
		free(labels[i]);
	free(labels);
	free(head);
	free(stage);
	lm_release(&lm);
	return rc;
}
