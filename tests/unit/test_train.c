/* test_train — schedules, AdamW, clipping, data order, checkpoints, DPO
 * losses (train.h). The optimizer and checkpoint checks run on a small
 * hand-built struct vlm (a table of tensors over one buffer), so they need
 * nothing from the model code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpo_trl_ref.h"
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

/* The batch loss (mean of the pairs' shares) of IN (k). */
static double dpo_mean(const struct dpo_opts *o, const struct dpo_in *in, int k, double sft)
{
	struct dpo_out out[8];
	double sum = 0;
	dpo_batch_loss(o, in, k, sft, out);
	for (int i = 0; i < k; i++)
		sum += out[i].loss;
	return sum / k;
}

/* One pair's loss under the options O with term T alone. */
static void dpo_one(enum dpo_term t, double ls, const double lp[4], double nc, double nr,
		    struct dpo_out *r)
{
	struct dpo_opts o;
	dpo_opts_init(&o);
	o.term[0] = t;
	o.label_smoothing = ls;
	struct dpo_in in = { lp[0], lp[1], lp[2], lp[3], nc, nr, 0, 0 };
	dpo_batch_loss(&o, &in, 1, 0, r);
}

/* Three pairs, mDPO's corrupted-image scores included, with distinct
 * log-ratios (aot sorts them) and one chosen answer below its reference
 * (dpop's penalty active). */
static const struct dpo_in dpo_cases[3] = {
	{ -12.5, -14.25, -13.0, -13.5, 5, 7, -15.0, -14.0 },
	{ -3.0, -9.0, -4.0, -2.0, 3, 4, -2.5, -3.5 },
	{ -7.0, -6.0, -6.5, -6.8, 6, 2, -9.0, -7.2 },
};

static void test_dpo(void)
{
	struct dpo_opts o;
	struct dpo_out r;
	const double same[4] = { -12.5, -14.25, -12.5, -14.25 };
	dpo_one(DPO_SIGMOID, 0, same, 5, 7, &r);
	tap_ok(r.loss == log(2.0), "sigmoid loss is log 2 exactly when policy == reference (%.17g)",
	       r.loss);
	/* Values from torch.nn.functional.logsigmoid / relu in float64 (TRL's formulas). */
	struct {
		enum dpo_term t;
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
		dpo_one(c[i].t, c[i].ls, c[i].lp, 5, 7, &r);
		if (fabs(r.loss - c[i].want) > 1e-12 * (1 + fabs(c[i].want))) {
			bad++;
			tap_diag("%s ls %g case %zu: got %.17g want %.17g", dpo_term_name(c[i].t),
				 c[i].ls, i, r.loss, c[i].want);
		}
	}
	tap_ok(!bad, "sigmoid, cDPO, hinge, ipo equal TRL's formulas (torch float64; %d wrong)", bad);

	/* Every term on the three pairs at β 0.1, ε 0.2, λ 50, δ 0: the mean
	 * over the batch, from torch float64 (tests/unit/dpo_ref.py). */
	static const struct {
		const char *name;
		double want;
	} w[] = {
		{ "sigmoid", 0.64098596531554575 },   { "sigmoid_norm", 0.66494852753056544 },
		{ "ipo", 20.515122826908541 },        { "hinge", 0.73499999999999999 },
		{ "robust", 0.49965263198221249 },    { "exo_pair", 0.16195980258425863 },
		{ "nca_pair", 1.3312385042217123 },   { "bco_pair", 1.2749330377099954 },
		{ "sppo_hard", 40.734166666666667 },  { "aot", 0.627387382657277 },
		{ "aot_unpaired", 0.63161718358217289 }, { "apo_zero", 0.93602705487664684 },
		{ "apo_down", 0.94541654645496331 },  { "dpop", 1.2344329845406781 },
		{ "sft", 1.607142857142857 },         { "mdpo_cond", 0.64812080767705604 },
		{ "mdpo_anchor", 0.67710531870004775 },
	};
	tap_ok(ARRAY_LEN(w) == DPO_NTERMS, "a reference value for each of the %d terms", DPO_NTERMS);
	bad = 0;
	double combo_want = 0;
	for (size_t i = 0; i < ARRAY_LEN(w); i++) {
		dpo_opts_init(&o);
		o.label_smoothing = 0.2;
		if (dpo_loss_parse(&o, "--loss", w[i].name) < 0 || o.nterms != 1 ||
		    strcmp(dpo_term_name(o.term[0]), w[i].name)) {
			bad++;
			tap_diag("'%s' does not parse", w[i].name);
			continue;
		}
		double got = dpo_mean(&o, dpo_cases, 3, 0);
		if (fabs(got - w[i].want) > 1e-12 * (1 + fabs(w[i].want))) {
			bad++;
			tap_diag("%s: got %.17g want %.17g (diff %.3g)", w[i].name, got, w[i].want,
				 got - w[i].want);
		}
		combo_want += (0.5 + 0.25 * (double)i) * w[i].want;
	}
	tap_ok(!bad, "every term's batch loss equals its formula in torch float64 (%d wrong)", bad);

	/* all terms at once, weights 0.5, 0.75, ...: the weighted sum */
	struct buf spec;
	buf_init(&spec);
	for (size_t i = 0; i < ARRAY_LEN(w); i++)
		buf_printf(&spec, "%s%s:%g", i ? "," : "", w[i].name, 0.5 + 0.25 * (double)i);
	dpo_opts_init(&o);
	o.label_smoothing = 0.2;
	int parsed = dpo_loss_parse(&o, "--loss", (char *)spec.data) == 0 && o.nterms == DPO_NTERMS;
	double got = dpo_mean(&o, dpo_cases, 3, 0);
	tap_ok(parsed && fabs(got - combo_want) < 1e-12 * combo_want,
	       "weighted terms add up as TRL's loss_weights (%.17g vs %.17g)", got, combo_want);
	char *text = dpo_loss_text(&o);
	tap_ok(!strncmp(text, "sigmoid:0.5,sigmoid_norm:0.75,ipo:1,", 36), "loss text: %.60s...", text);
	free(text);
	buf_release(&spec);

	/* gradients against central differences: every term alone, then all
	 * at once, with and without a reference */
	double worst = 0;
	for (int t = 0; t <= DPO_NTERMS; t++)
		for (int rf = 0; rf < 2; rf++) {
			dpo_opts_init(&o);
			o.label_smoothing = 0.2;
			o.reference_free = rf;
			o.beta = 0.3;
			if (t < DPO_NTERMS)
				o.term[0] = (enum dpo_term)t;
			else
				for (int j = 0; j < DPO_NTERMS; j++)
					dpo_set_term(&o, (enum dpo_term)j, 1 + 0.1 * j);
			struct dpo_in in[3];
			struct dpo_out out[3];
			memcpy(in, dpo_cases, sizeof in);
			/* β 0.3 moves hinge's kink: keep βz away from 1 */
			dpo_batch_loss(&o, in, 3, 0, out);
			for (int i = 0; i < 3; i++)
				for (int v = 0; v < 3; v++) {
					double *x = v == 0 ? &in[i].pc : v == 1 ? &in[i].pr : &in[i].pcm;
					double an = v == 0 ? out[i].dpc : v == 1 ? out[i].dpr : out[i].dpcm;
					double keep = *x, h = 1e-6;
					*x = keep + h;
					double up = dpo_mean(&o, in, 3, 0);
					*x = keep - h;
					double down = dpo_mean(&o, in, 3, 0);
					*x = keep;
					double fd = 3 * (up - down) / (2 * h);
					double e = fabs(fd - an) / (1e-6 + fabs(fd));
					if (e > 1e-5)
						tap_diag("%s%s pair %d d/d%s: analytic %.10g fd %.10g",
							 t < DPO_NTERMS ? dpo_term_name((enum dpo_term)t) : "all",
							 rf ? " reference-free" : "", i,
							 v == 0 ? "pc" : v == 1 ? "pr" : "pcm", an, fd);
					if (e > worst)
						worst = e;
				}
		}
	tap_ok(worst < 1e-5, "every term's gradient (alone and all weighted together, with and "
			     "without a reference) matches central differences (worst rel %.3g)", worst);

	/* reference-free is a reference of zeros */
	dpo_opts_init(&o);
	dpo_loss_parse(&o, "--loss", "sigmoid,bco_pair:0.5,dpop:0.3,mdpo_cond,aot");
	struct dpo_in zero[3];
	memcpy(zero, dpo_cases, sizeof zero);
	for (int i = 0; i < 3; i++)
		zero[i].rc = zero[i].rr = zero[i].rcm = 0;
	double a = dpo_mean(&o, zero, 3, 0);
	o.reference_free = 1;
	double b = dpo_mean(&o, dpo_cases, 3, 0);
	tap_ok(a == b, "--reference-free is the loss against a reference of zeros (%.17g, %.17g)", a, b);

	/* sft: the token mean over the batch, or over the step's tokens given */
	dpo_opts_init(&o);
	o.term[0] = DPO_SFT;
	got = dpo_mean(&o, dpo_cases, 3, 0);
	double tok = dpo_mean(&o, dpo_cases, 1, 10.0);
	tap_ok(fabs(got - 22.5 / 14) < 1e-15 && fabs(tok - 12.5 / 10) < 1e-15,
	       "sft is -Σpc/Σnc over the batch (%.17g), or over SFT_TOKENS per pair (%.17g)", got, tok);

	const double lp[4] = { -10, -20, -12, -15 };
	dpo_one(DPO_IPO, 0, lp, 5, 7, &r);
	tap_ok(fabs(r.reward_c - 0.2) < 1e-12 && fabs(r.reward_r - -0.5) < 1e-12,
	       "rewards are beta * (policy - reference) of the summed log-probs, ipo too: %g %g",
	       r.reward_c, r.reward_r);

	dpo_opts_init(&o);
	int ok = dpo_loss_parse(&o, "--loss", "sigmoid:0.8,bco_pair:0.2,sft:1") == 0 &&
		 o.nterms == 3 && o.term[0] == DPO_SIGMOID && o.weight[0] == 0.8 &&
		 o.term[1] == DPO_BCO_PAIR && o.weight[1] == 0.2 && o.term[2] == DPO_SFT &&
		 o.weight[2] == 1;
	tap_ok(ok, "'sigmoid:0.8,bco_pair:0.2,sft:1' parses to three weighted terms");
	dpo_set_term(&o, DPO_SFT, 0.5);
	dpo_set_term(&o, DPO_BCO_PAIR, 0);
	dpo_set_term(&o, DPO_MDPO_ANCHOR, 2);
	tap_ok(o.nterms == 3 && o.term[1] == DPO_SFT && o.weight[1] == 0.5 &&
		       o.term[2] == DPO_MDPO_ANCHOR && dpo_term_weight(&o, DPO_BCO_PAIR) == 0 &&
		       !dpo_needs_corrupted(&o),
	       "a term's weight set, removed, added");
	dpo_set_term(&o, DPO_MDPO_COND, 1);
	tap_ok(dpo_needs_corrupted(&o), "mdpo_cond needs the corrupted image");
	fprintf(stderr, "# the next four messages are expected:\n");
	struct dpo_opts keep = o;
	tap_ok(dpo_loss_parse(&o, "--loss", "kto") < 0 && dpo_loss_parse(&o, "--loss", "sigmoid:x") < 0 &&
		       dpo_loss_parse(&o, "--loss", "ipo,ipo:2") < 0 && dpo_loss_parse(&o, "--loss", ",") < 0 &&
		       !memcmp(&o, &keep, sizeof o),
	       "an unknown name, a bad weight, a name twice, an empty list are refused; O unchanged");
}

/* Against TRL's own code: DPOTrainer._compute_loss run on the same summed
 * log-probs (dpo_trl_ref.py), every loss type both have, alone and
 * combined: loss, gradient, logged rewards. */
static void test_dpo_trl(void)
{
	enum { K = ARRAY_LEN(trl_pairs) };
	struct dpo_in in[K];
	int bad = 0;
	for (int i = 0; i < K; i++)
		in[i] = (struct dpo_in){ trl_pairs[i][0], trl_pairs[i][1], trl_pairs[i][2],
					 trl_pairs[i][3], trl_pairs[i][4], trl_pairs[i][5], 0, 0 };
	for (size_t c = 0; c < ARRAY_LEN(trl_cases); c++) {
		struct dpo_opts o;
		struct dpo_out out[K];
		dpo_opts_init(&o);
		o.beta = trl_cases[c].beta;
		o.label_smoothing = trl_cases[c].label_smoothing;
		if (dpo_loss_parse(&o, "--loss", trl_cases[c].loss) < 0) {
			bad++;
			continue;
		}
		dpo_batch_loss(&o, in, K, 0, out);
		double loss = 0, rw[4] = { 0 }, worst = 0;
		for (int i = 0; i < K; i++) {
			loss += out[i].loss / K;
			rw[0] += out[i].reward_c / K;
			rw[1] += out[i].reward_r / K;
			rw[2] += (out[i].reward_c > out[i].reward_r) / (double)K;
			rw[3] += (out[i].reward_c - out[i].reward_r) / K;
			double g[2] = { out[i].dpc / K, out[i].dpr / K };
			for (int v = 0; v < 2; v++) {
				double want = trl_cases[c].grad[v * K + i];
				double e = fabs(g[v] - want) / (1e-12 + fabs(want));
				worst = e > worst ? e : worst;
			}
		}
		double el = fabs(loss - trl_cases[c].value) / (1e-12 + fabs(trl_cases[c].value));
		double er = 0;
		for (int j = 0; j < 4; j++) {
			/* TRL makes the accuracy a float32 mean */
			double tol = j == 2 ? 1e-7 : 1e-12;
			double e = fabs(rw[j] - trl_cases[c].rewards[j]) / (tol + fabs(trl_cases[c].rewards[j]));
			er = e / tol > er ? e / tol : er;
		}
		if (el > 1e-12 || worst > 1e-9 || er > 1) {
			bad++;
			tap_diag("%s: loss %.17g (TRL %.17g), worst gradient rel. error %.3g, rewards "
				 "%.9g %.9g %.9g %.9g (TRL %.9g %.9g %.9g %.9g)", trl_cases[c].loss, loss,
				 trl_cases[c].value, worst, rw[0], rw[1], rw[2], rw[3],
				 trl_cases[c].rewards[0], trl_cases[c].rewards[1],
				 trl_cases[c].rewards[2], trl_cases[c].rewards[3]);
		}
	}
	tap_ok(!bad, "loss, gradient and rewards equal TRL 1.16's DPOTrainer._compute_loss for %zu "
		     "loss types and combinations (%d differ)", ARRAY_LEN(trl_cases), bad);
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
static struct dpo_opts d_opts; /* sigmoid (cDPO 0.1) + bco_pair + sft, β 0.5 */

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
	struct dpo_in in[NP_];
	struct dpo_out r[NP_];
	for (int p = 0; p < NP_; p++)
		in[p] = (struct dpo_in){ lp[2 * p], lp[2 * p + 1], d_ref[2 * p], d_ref[2 * p + 1],
					 d_len[2 * p] - 4, d_len[2 * p + 1] - 4, 0, 0 };
	dpo_batch_loss(&d_opts, in, NP_, 0, r);
	for (int p = 0; p < NP_; p++) {
		loss += r[p].loss / NP_;
		if (dlogp) {
			dlogp[2 * p] = (float)(r[p].dpc / NP_);
			dlogp[2 * p + 1] = (float)(r[p].dpr / NP_);
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
	dpo_opts_init(&d_opts);
	d_opts.beta = 0.5;
	d_opts.label_smoothing = 0.1;
	dpo_loss_parse(&d_opts, "--loss", "sigmoid,bco_pair:0.5,sft:0.3");

	/* reference = the base; LoRA (B = 0) added: policy == reference */
	vlm_forward(m, &b, d_ref, 0);
	vlm_lora_add(m, 4, 8.0f, LORA_ALL, 1);
	vlm_train_init(m, VLM_PART_LORA | VLM_PART_PROJECTOR);
	vlm_forward(m, &b, lp, 1);
	struct dpo_opts plain;
	struct dpo_out r;
	dpo_opts_init(&plain);
	struct dpo_in in = { lp[0], lp[1], d_ref[0], d_ref[1], 5, 3, 0, 0 };
	dpo_batch_loss(&plain, &in, 1, 0, &r);
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
	if (!tap_ok(worst <= 1.0, "DPO loss gradient (cDPO sigmoid + bco_pair + sft) through the whole "
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
	test_dpo_trl();
	test_metrics();
	test_dpo_model();
	remove_tmpdir();
	return tap_done();
}
