/* test_train — schedules, AdamW, clipping, data order, checkpoints, DPO
 * losses (train.h). The optimizer and checkpoint checks run on a small
 * hand-built struct vlm (a table of tensors over one buffer), so they need
 * nothing from the model code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testutil.h"
#include "train.h"
#include "util.h"

/* --- schedules --- */

static void test_schedules(void)
{
	tap_ok(lr_warmup_steps(100, 0.03) == 3 && lr_warmup_steps(10, 0.03) == 1 &&
		       lr_warmup_steps(10, 0) == 0,
	       "warm-up steps are ceil(total * ratio)");
	/* total 10, warm-up 2: HF's lambdas by hand. */
	struct {
		enum lr_schedule s;
		long step;
		double want;
	} c[] = {
		{ LR_COSINE, 0, 0.0 },    { LR_COSINE, 1, 0.5 },      { LR_COSINE, 2, 1.0 },
		{ LR_COSINE, 6, 0.5 },    { LR_COSINE, 4, 0.5 * (1 + cos(M_PI * 0.25)) },
		{ LR_COSINE, 10, 0.0 },   { LR_LINEAR, 1, 0.5 },      { LR_LINEAR, 2, 1.0 },
		{ LR_LINEAR, 6, 0.5 },    { LR_LINEAR, 9, 0.125 },    { LR_CONSTANT, 1, 0.5 },
		{ LR_CONSTANT, 9, 1.0 },
	};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN(c); i++) {
		double got = lr_at(c[i].s, 2.0, c[i].step, 10, 2);
		if (fabs(got - 2.0 * c[i].want) > 1e-12) {
			bad++;
			tap_diag("%s step %ld: got %.12g want %.12g", lr_schedule_name(c[i].s),
				 c[i].step, got, 2.0 * c[i].want);
		}
	}
	tap_ok(!bad, "lr schedules match the Hugging Face lambdas (%d wrong)", bad);
	tap_ok(lr_at(LR_COSINE, 1.0, 0, 10, 0) == 1.0, "no warm-up: full lr at step 0");
	tap_ok(lr_schedule_parse("cosine") == LR_COSINE && lr_schedule_parse("linear") == LR_LINEAR &&
		       lr_schedule_parse("constant") == LR_CONSTANT && lr_schedule_parse("x") == -1,
	       "schedule names parse");
}

/* --- a hand-made model: 3 tensors over one buffer --- */

struct fake {
	struct vlm m;
	struct vlm_tensor t[3];
	float params[32], grads[32];
};

static void fake_init(struct fake *f, unsigned trainable)
{
	memset(f, 0, sizeof *f);
	/* w (4,5) decoder matrix, b (6) decoder bias, p (6) projector vector */
	long numel[3] = { 20, 6, 6 };
	int parts[3] = { VLM_PART_DECODER, VLM_PART_DECODER, VLM_PART_PROJECTOR };
	const char *names[3] = { "w", "b", "p" };
	long off = 0;
	for (int i = 0; i < 3; i++) {
		struct vlm_tensor *t = &f->t[i];
		snprintf(t->name, sizeof t->name, "%s", names[i]);
		t->data = f->params + off;
		t->grad = f->grads + off;
		t->numel = numel[i];
		t->ndim = i == 0 ? 2 : 1;
		t->shape[0] = i == 0 ? 4 : numel[i];
		t->shape[1] = i == 0 ? 5 : 0;
		t->part = parts[i];
		off += numel[i];
	}
	for (int i = 0; i < 32; i++) {
		f->params[i] = (float)sin(1.0 + i);
		f->grads[i] = (float)cos(2.0 * i) * 0.5f;
	}
	f->m.params = f->params;
	f->m.grads = f->grads;
	f->m.nparams = 32;
	f->m.tensors = f->t;
	f->m.ntensors = 3;
	f->m.trainable = trainable;
}

static void test_adamw(void)
{
	struct fake f;
	struct train_opt o;
	const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
	double p[32], mm[32] = { 0 }, vv[32] = { 0 };

	fake_init(&f, VLM_PART_DECODER);
	train_opt_init(&o, &f.m, b1, b2, eps, wd);
	for (int i = 0; i < 32; i++)
		p[i] = f.params[i];
	for (int step = 1; step <= 3; step++) {
		/* torch.optim.AdamW, written out in double */
		for (int i = 0; i < 26; i++) {
			double g = f.grads[i];
			double decay = i < 20 ? wd : 0; /* matrices only */
			p[i] -= lr * decay * p[i];
			mm[i] = b1 * mm[i] + (1 - b1) * g;
			vv[i] = b2 * vv[i] + (1 - b2) * g * g;
			double mh = mm[i] / (1 - pow(b1, step)), vh = vv[i] / (1 - pow(b2, step));
			p[i] -= lr * mh / (sqrt(vh) + eps);
		}
		train_opt_step(&o, &f.m, lr);
		for (int i = 0; i < 32; i++)
			f.grads[i] = (float)cos(3.0 * i + step);
	}
	float want[32];
	for (int i = 0; i < 32; i++)
		want[i] = (float)p[i];
	tap_close(f.params, want, 26, 1e-6f, 1e-5f,
		  "AdamW over trainable tensors equals torch's formula (3 steps, decay on matrices only)");
	int frozen_same = 1;
	for (int i = 26; i < 32; i++)
		frozen_same &= f.params[i] == (float)sin(1.0 + i);
	tap_ok(frozen_same, "a frozen part is not touched");
	tap_ok(o.t == 3, "step count kept (%ld)", o.t);
	train_opt_release(&o);
}

static void test_clip(void)
{
	struct fake f;
	fake_init(&f, VLM_PART_DECODER | VLM_PART_PROJECTOR);
	double ss = 0;
	for (int i = 0; i < 32; i++)
		ss += (double)f.grads[i] * f.grads[i];
	double want = sqrt(ss);
	double got = train_clip_grad(&f.m, 0);
	tap_ok(fabs(got - want) < 1e-9 * want, "grad norm %.9g == naive %.9g", got, want);
	got = train_clip_grad(&f.m, want / 4);
	ss = 0;
	for (int i = 0; i < 32; i++)
		ss += (double)f.grads[i] * f.grads[i];
	tap_ok(fabs(got - want) < 1e-9 * want && fabs(sqrt(ss) - want / 4) < 1e-5 * want,
	       "clipping returns the norm before (%.6g) and leaves norm max_norm (%.6g vs %.6g)",
	       got, sqrt(ss), want / 4);
	fake_init(&f, VLM_PART_DECODER);
	train_clip_grad(&f.m, 1e-3);
	tap_ok(f.grads[27] == (float)cos(2.0 * 27) * 0.5f, "clipping skips frozen gradients");
	f.grads[3] = NAN;
	tap_ok(!isfinite(train_clip_grad(&f.m, 1.0)), "a NaN gradient gives a non-finite norm");
}

static void test_order(void)
{
	enum { N = 37 };
	uint32_t a[N], b[N], c[N];
	int seen[N] = { 0 }, perm = 1;
	train_order(a, N, 42, 0);
	train_order(b, N, 42, 0);
	train_order(c, N, 42, 1);
	for (int i = 0; i < N; i++)
		if (a[i] >= N || seen[a[i]]++)
			perm = 0;
	tap_ok(perm, "epoch order is a permutation");
	tap_ok(!memcmp(a, b, sizeof a) && memcmp(a, c, sizeof a), "same (seed, epoch) same order; next epoch differs");

	struct train_state st;
	uint32_t idx[8];
	train_state_init(&st, 10, 100, 7);
	int sizes[5], ok = 1;
	for (int i = 0; i < 5; i++)
		sizes[i] = train_next_batch(&st, 4, idx);
	ok = sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2 && sizes[3] == 4 && st.epoch == 1;
	tap_ok(ok, "batches of 4 over 10: 4 4 2 | 4 4 (got %d %d %d %d %d, epoch %d)", sizes[0],
	       sizes[1], sizes[2], sizes[3], sizes[4], st.epoch);
	train_order(a, 10, 7, 1);
	tap_ok(!memcmp(st.order, a, 10 * sizeof *a), "second epoch uses the epoch-1 order");
	train_state_release(&st);
}

static void test_ckpt(void)
{
	struct fake f, g;
	struct train_opt o, o2;
	struct train_state st, st2;
	char dir[300], path[400];
	uint32_t idx[4];

	snprintf(dir, sizeof dir, "%s/run.ckpt", tmpdir);
	fake_init(&f, VLM_PART_DECODER | VLM_PART_PROJECTOR);
	train_opt_init(&o, &f.m, 0.9f, 0.95f, 1e-8f, 0.0f);
	train_state_init(&st, 9, 50, 3);
	for (int i = 0; i < 4; i++) {
		train_opt_step(&o, &f.m, 0.1f);
		train_next_batch(&st, 4, idx);
		st.step++;
	}
	rng_u64(&st.rng);
	rng_normal(&st.rng);
	st.tokens = 1234;
	tap_ok(train_ckpt_save(dir, &f.m, &o, &st, "{\"lr\":0.1}") == 0, "checkpoint saved");

	fake_init(&g, VLM_PART_DECODER | VLM_PART_PROJECTOR);
	train_opt_init(&o2, &g.m, 0.9f, 0.95f, 1e-8f, 0.0f);
	train_state_init(&st2, 9, 50, 3);
	int rc = train_ckpt_load(dir, &g.m, &o2, &st2, "{\"lr\":0.1}");
	tap_ok(rc == 0, "checkpoint loads");
	tap_ok(!memcmp(f.params, g.params, sizeof f.params) && !memcmp(o.mem, o2.mem, 64 * sizeof(float)),
	       "parameters and moments restored bit for bit");
	tap_ok(st2.step == 4 && st2.epoch == st.epoch && st2.pos == st.pos && o2.t == 4 &&
		       st2.tokens == 1234 && !memcmp(st.order, st2.order, 9 * sizeof *st.order),
	       "step %ld, epoch %d, position %ld, order and optimizer t restored", st2.step,
	       st2.epoch, st2.pos);
	tap_ok(rng_u64(&st.rng) == rng_u64(&st2.rng) && rng_normal(&st.rng) == rng_normal(&st2.rng),
	       "RNG continues the same stream");
	tap_ok(train_ckpt_load(dir, &g.m, &o2, &st2, "{\"lr\":0.2}") == -1,
	       "other settings are refused");
	struct train_state st3;
	train_state_init(&st3, 8, 50, 3);
	tap_ok(train_ckpt_load(dir, &g.m, &o2, &st3, "{\"lr\":0.1}") == -1,
	       "another data set size is refused");
	train_state_release(&st3);
	snprintf(path, sizeof path, "%s/nothing", tmpdir);
	tap_ok(train_ckpt_load(path, &g.m, &o2, &st2, "{}") == 1, "no checkpoint: returns 1");
	/* truncate the file: refused, not half-loaded silently */
	snprintf(path, sizeof path, "%s/trainer.bin", dir);
	size_t len;
	unsigned char *data = read_file(path, &len);
	write_file_atomic(path, data, len - 10);
	free(data);
	tap_ok(train_ckpt_load(dir, &g.m, &o2, &st2, "{\"lr\":0.1}") == -1, "truncated checkpoint refused");
	snprintf(path, sizeof path, "%s/state.json", dir);
	tap_ok(access(path, R_OK) == 0, "state.json written beside it");
	train_opt_release(&o);
	train_opt_release(&o2);
	train_state_release(&st);
	train_state_release(&st2);
}

/* --- DPO --- */

static double dpo_fd(const struct dpo_opts *o, double *lp, int which, double nc, double nr)
{
	struct dpo_pair a, b;
	double h = 1e-5, keep = lp[which];
	lp[which] = keep + h;
	dpo_pair_loss(o, lp[0], lp[1], lp[2], lp[3], nc, nr, &a);
	lp[which] = keep - h;
	dpo_pair_loss(o, lp[0], lp[1], lp[2], lp[3], nc, nr, &b);
	lp[which] = keep;
	return (a.loss - b.loss) / (2 * h);
}

static void test_dpo(void)
{
	struct dpo_opts o = { DPO_SIGMOID, 0.1, 0, 0 };
	struct dpo_pair r;
	dpo_pair_loss(&o, -12.5, -14.25, -12.5, -14.25, 5, 7, &r);
	tap_ok(r.loss == log(2.0), "sigmoid loss is log 2 exactly when policy == reference (%.17g)",
	       r.loss);
	/* Values from torch.nn.functional.logsigmoid / relu in float64 (TRL's formulas). */
	struct {
		enum dpo_loss_type t;
		double ls, lp[4], want;
	} c[] = {
		{ DPO_SIGMOID, 0.0, { -12.5, -14.25, -13.0, -13.5 }, 0.6325990353171691 },
		{ DPO_SIGMOID, 0.2, { -12.5, -14.25, -13.0, -13.5 }, 0.6575990353171691 },
		{ DPO_HINGE, 0.0, { -12.5, -14.25, -13.0, -13.5 }, 0.875 },
		{ DPO_IPO, 0.0, { -12.5, -14.25, -13.0, -13.5 }, 22.971479591836733 },
		{ DPO_SIGMOID, 0.0, { -3.0, -9.0, -4.0, -2.0 }, 0.3711006659477777 },
		{ DPO_SIGMOID, 0.2, { -3.0, -9.0, -4.0, -2.0 }, 0.5311006659477777 },
		{ DPO_HINGE, 0.0, { -3.0, -9.0, -4.0, -2.0 }, 0.19999999999999996 },
		{ DPO_IPO, 0.0, { -3.0, -9.0, -4.0, -2.0 }, 14.44 },
	};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN(c); i++) {
		struct dpo_opts oi = { c[i].t, 0.1, c[i].ls, 0 };
		dpo_pair_loss(&oi, c[i].lp[0], c[i].lp[1], c[i].lp[2], c[i].lp[3], 5, 7, &r);
		if (fabs(r.loss - c[i].want) > 1e-12 * (1 + fabs(c[i].want))) {
			bad++;
			tap_diag("%s ls %g case %zu: got %.17g want %.17g", dpo_loss_name(c[i].t),
				 c[i].ls, i, r.loss, c[i].want);
		}
	}
	tap_ok(!bad, "losses equal TRL's formulas (torch float64 values; %d wrong)", bad);

	/* gradients against central differences, every variant, with the SFT term */
	double worst = 0;
	for (int t = 0; t < 3; t++)
		for (int k = 0; k < 2; k++) {
			struct dpo_opts oi = { (enum dpo_loss_type)t, 0.3, t == 0 ? 0.1 : 0,
					       k ? 0.5 : 0 };
			double lp[4] = { -3.1, -4.7, -3.9, -4.2 };
			dpo_pair_loss(&oi, lp[0], lp[1], lp[2], lp[3], 5, 7, &r);
			double d[2] = { r.dpc, r.dpr };
			for (int w = 0; w < 2; w++) {
				double fd = dpo_fd(&oi, lp, w, 5, 7);
				double e = fabs(fd - d[w]) / (1e-6 + fabs(fd));
				if (e > worst) {
					worst = e;
					if (e > 1e-5)
						tap_diag("%s sft %d d/d%s: analytic %.10g fd %.10g",
							 dpo_loss_name(oi.type), k, w ? "pr" : "pc",
							 d[w], fd);
				}
			}
		}
	tap_ok(worst < 1e-5, "loss gradients match finite differences (worst rel %.3g)", worst);
	dpo_pair_loss(&o, -10, -20, -12, -15, 5, 7, &r);
	tap_ok(fabs(r.reward_c - 0.2) < 1e-12 && fabs(r.reward_r - -0.5) < 1e-12,
	       "rewards are beta * (policy - reference): %g %g", r.reward_c, r.reward_r);
	tap_ok(dpo_loss_parse("ipo") == DPO_IPO && dpo_loss_parse("hinge") == DPO_HINGE &&
		       dpo_loss_parse("sigmoid") == DPO_SIGMOID && dpo_loss_parse("kto") == -1,
	       "loss names parse");
}

static void test_metrics(void)
{
	char path[300];
	snprintf(path, sizeof path, "%s/metrics.jsonl", tmpdir);
	FILE *f = train_metrics_open(path, -1);
	for (int s = 1; s <= 5; s++)
		fprintf(f, "{\"step\": %d, \"loss\": %d}\n", s, 10 - s);
	fclose(f);
	f = train_metrics_open(path, 3);
	fprintf(f, "{\"step\": 4, \"loss\": 0}\n");
	fclose(f);
	size_t len;
	char *got = (char *)read_file(path, &len);
	const char *want = "{\"step\": 1, \"loss\": 9}\n{\"step\": 2, \"loss\": 8}\n"
			   "{\"step\": 3, \"loss\": 7}\n{\"step\": 4, \"loss\": 0}\n";
	tap_ok(got && !strcmp(got, want), "a resumed metrics file drops the steps after the checkpoint");
	if (got && strcmp(got, want))
		tap_diag("got:\n%s", got);
	free(got);
}

/* --- the DPO loss through the whole model --- */

static void randomize_from(struct vlm *m, int from, uint64_t seed);

/* A tiny LLaVA (16-pixel images, NP 16, GQA decoder) with O(1) weights. */
static struct vlm *tiny_model(void)
{
	struct vlm_config c;
	tiny_config_base(&c);
	c.feature_layer = -1;
	c.vocab = 37;
	c.image_token_index = 36;
	tiny_finish(&c);
	struct vlm *m = vlm_new(&c);
	randomize_from(m, 0, 5);
	return m;
}

/* matrices ~ N(0, 1/fan_in), norm weights 1 + N(0, 0.1), the rest N(0, 0.1) */
static void randomize_from(struct vlm *m, int from, uint64_t seed)
{
	for (int i = from; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		struct rng r;
		rng_seed(&r, seed, t->name, "test");
		double sd = t->ndim >= 2 ? 1 / sqrt((double)t->numel / t->shape[0]) : 0.1;
		double mean = strstr(t->name, "norm") && strstr(t->name, ".weight") ? 1 : 0;
		for (long j = 0; j < t->numel; j++)
			t->data[j] = (float)(mean + sd * rng_normal(&r));
	}
}

/* Two pairs; each pair's chosen and rejected share one image. */
enum { NP_ = 2, NS_ = 2 * NP_, MAXT_ = 12 };
static int d_ids[NS_][MAXT_];
static float d_w[NS_][MAXT_];
static const int *d_idp[NS_];
static const float *d_wp[NS_];
static int d_len[NS_] = { 9, 7, 8, 10 };
static int d_img[NS_] = { 0, 0, 1, 1 };
static float d_images[2 * 3 * 16 * 16];
static float d_ref[NS_];
static const struct dpo_opts d_opts = { DPO_SIGMOID, 0.5, 0.1, 0.3 };

static void dpo_batch(const struct vlm *m, struct vlm_batch *b)
{
	struct rng r;
	rng_seed(&r, 3, "dpo", "test");
	for (int s = 0; s < NS_; s++) {
		for (int t = 0; t < d_len[s]; t++) {
			d_ids[s][t] = 3 + (int)rng_below(&r, (uint64_t)m->cfg.vocab - 4);
			d_w[s][t] = t >= 4 ? 1.0f : 0.0f; /* prompt: 4 ids, then the answer */
		}
		d_ids[s][0] = 1;
		d_ids[s][1] = m->cfg.image_token_index;
		d_idp[s] = d_ids[s];
		d_wp[s] = d_w[s];
	}
	rng_normal_fill(&r, d_images, ARRAY_LEN(d_images));
	memset(b, 0, sizeof *b);
	b->B = NS_;
	b->ids = d_idp;
	b->len = d_len;
	b->weight = d_wp;
	b->n_images = 2;
	b->images = d_images;
	b->image_of = d_img;
}

/* Mean DPO loss over the pairs; fills dlogp when asked. */
static double dpo_objective(const float *lp, float *dlogp)
{
	double loss = 0;
	for (int p = 0; p < NP_; p++) {
		struct dpo_pair r;
		dpo_pair_loss(&d_opts, lp[2 * p], lp[2 * p + 1], d_ref[2 * p], d_ref[2 * p + 1],
			      d_len[2 * p] - 4, d_len[2 * p + 1] - 4, &r);
		loss += r.loss / NP_;
		if (dlogp) {
			dlogp[2 * p] = (float)(r.dpc / NP_);
			dlogp[2 * p + 1] = (float)(r.dpr / NP_);
		}
	}
	return loss;
}

static double dpo_fd_tensor(struct vlm *m, const struct vlm_batch *b, struct vlm_tensor *t,
			    double *an_out, double *fd_out)
{
	float lp[NS_];
	struct rng r;
	double worst = 0;
	rng_seed(&r, 9, t->name, "pick");
	for (int k = 0; k < 3; k++) {
		long best = -1;
		for (int tries = 0; tries < 24; tries++) {
			long j = (long)rng_below(&r, (uint64_t)t->numel);
			if (best < 0 || fabsf(t->grad[j]) > fabsf(t->grad[best]))
				best = j;
		}
		float save = t->data[best], eps = 3e-3f * fmaxf(1.0f, fabsf(save));
		t->data[best] = save + eps;
		vlm_forward(m, b, lp, 0);
		double up = dpo_objective(lp, NULL);
		t->data[best] = save - eps;
		vlm_forward(m, b, lp, 0);
		double down = dpo_objective(lp, NULL);
		t->data[best] = save;
		double fd = (up - down) / (2.0 * ((double)(save + eps) - save));
		double an = t->grad[best];
		double ratio = fabs(fd - an) / (1e-3 + 2e-2 * fabs(an));
		if (ratio > worst) {
			worst = ratio;
			*an_out = an;
			*fd_out = fd;
		}
	}
	return worst;
}

static void test_dpo_model(void)
{
	struct vlm *m = tiny_model();
	struct vlm_batch b;
	float lp[NS_], dlogp[NS_];
	dpo_batch(m, &b);

	/* reference = the base; LoRA (B = 0) added: policy == reference */
	vlm_forward(m, &b, d_ref, 0);
	vlm_lora_add(m, 4, 8.0f, LORA_ALL, 1);
	vlm_train_init(m, VLM_PART_LORA | VLM_PART_PROJECTOR);
	vlm_forward(m, &b, lp, 1);
	struct dpo_opts plain = { DPO_SIGMOID, 0.1, 0, 0 };
	struct dpo_pair r;
	dpo_pair_loss(&plain, lp[0], lp[1], d_ref[0], d_ref[1], 5, 3, &r);
	tap_ok(r.loss == log(2.0) && !memcmp(lp, d_ref, sizeof lp),
	       "fresh LoRA: policy log-probs equal the reference bit for bit, loss log 2 (%.17g)",
	       r.loss);
	m->lora.enabled = 0;
	vlm_forward(m, &b, lp, 0);
	m->lora.enabled = 1;
	tap_ok(!memcmp(lp, d_ref, sizeof lp), "LoRA off is the reference");

	/* move LoRA B off zero so every path carries gradient */
	for (int i = 0; i < m->ntensors; i++)
		if (strstr(m->tensors[i].name, "lora_B")) {
			struct rng rr;
			rng_seed(&rr, 4, m->tensors[i].name, "test");
			for (long j = 0; j < m->tensors[i].numel; j++)
				m->tensors[i].data[j] = (float)(0.2 * rng_normal(&rr));
		}
	vlm_zero_grad(m);
	vlm_forward(m, &b, lp, 1);
	dpo_objective(lp, dlogp);
	vlm_backward(m, dlogp);
	const char *names[] = {
		"language_model.model.layers.0.self_attn.q_proj.lora_A.weight",
		"language_model.model.layers.1.mlp.down_proj.lora_B.weight",
		"language_model.model.layers.0.self_attn.v_proj.lora_B.weight",
		"multi_modal_projector.linear_1.weight",
		"multi_modal_projector.linear_2.bias",
	};
	double worst = 0, an = 0, fd = 0;
	const char *wname = "";
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		struct vlm_tensor *t = vlm_tensor_find(m, names[i]);
		double a, f;
		if (!t) {
			tap_diag("no tensor %s", names[i]);
			worst = INFINITY;
			continue;
		}
		double w = dpo_fd_tensor(m, &b, t, &a, &f);
		if (w > worst) {
			worst = w, an = a, fd = f;
			wname = names[i];
		}
	}
	if (!tap_ok(worst <= 1.0, "DPO loss gradient (sigmoid, cDPO, SFT term) through the whole "
				  "model matches finite differences (LoRA, projector; worst ratio %.3g)",
		    worst))
		tap_diag("%s: analytic %.6g finite difference %.6g", wname, an, fd);

	/* full fine-tuning: decoder and vision weights */
	vlm_lora_merge(m);
	vlm_train_init(m, VLM_PART_DECODER | VLM_PART_VISION);
	vlm_zero_grad(m);
	vlm_forward(m, &b, lp, 1);
	dpo_objective(lp, dlogp);
	vlm_backward(m, dlogp);
	const char *full[] = {
		"language_model.model.layers.1.self_attn.k_proj.weight",
		"language_model.lm_head.weight",
		"language_model.model.embed_tokens.weight",
		"vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
	};
	worst = 0;
	for (size_t i = 0; i < ARRAY_LEN(full); i++) {
		struct vlm_tensor *t = vlm_tensor_find(m, full[i]);
		double a, f;
		double w = t ? dpo_fd_tensor(m, &b, t, &a, &f) : INFINITY;
		if (w > worst) {
			worst = w, an = a, fd = f;
			wname = full[i];
		}
	}
	if (!tap_ok(worst <= 1.0, "DPO loss gradient for full fine-tuning (decoder, vision) "
				  "matches finite differences (worst ratio %.3g)", worst))
		tap_diag("%s: analytic %.6g finite difference %.6g", wname, an, fd);
	vlm_free(m);
}

int main(void)
{
	make_tmpdir("/tmp/test_train.XXXXXX");
	test_schedules();
	test_adamw();
	test_clip();
	test_order();
	test_ckpt();
	test_dpo();
	test_metrics();
	test_dpo_model();
	remove_tmpdir();
	return tap_done();
}
