/* engine — the engine's figures on a config.json (ISSUE 3 sec. 8, ISSUE 7),
 * doing the work that ../shared/bench/torchvlm.py's `bench` does, so the
 * two can be set side by side:
 *
 *   DPO step: 8 pairs, each 32 prompt + 32 response tokens after the
 *   image (64 image tokens on the bench configs); the reference is a second
 *   model with the same weights, run forward without keeping anything; the
 *   policy trains projector + decoder (vision frozen), forward with
 *   backward, AdamW (lr 2e-6, no weight decay). Chosen and rejected share
 *   the pair's image, whose features are computed once per model, as the
 *   peer does. The grad norm is taken as seva-dpo takes it (no clipping).
 *
 *   Image encoding (--what enc): the vision tower alone on one image
 *   (vlm_forward_features), the figure a generation or a DPO pair pays per
 *   image; the connector is not in it (under 1 % of the tower's FLOPs on
 *   every config here).
 *
 *   SFT step (--what sft): 8 sequences of image + 32 prompt + 32 answer
 *   tokens, the mean log-loss of the answers, forward with backward and
 *   AdamW on projector + decoder (seva-sft's default), vision frozen.
 *   Prefill (--what prefill): the first token of a generation at batch 8,
 *   image + 32-token prompt each (the tower included), as the generation
 *   figure's start.
 *
 *   Generation: greedy, KV cache, 64 new tokens after image + 32-token
 *   prompt, no stop ids, batch 1 and 8, vision tower included (the peer
 *   computes its image embeddings outside the timed call: we do more).
 *
 * FLOPs counted (multiply-add = 2), only the work a step needs:
 *   vision, per image: NP * 2*(3*P*P)*VC (patches)
 *     + v_used * [ VT * 2*(4*VC^2 + 2*VC*VI) + 4*VC*VT^2 ], VT = NP (+1 with
 *     CLIP's class token)
 *   projector, per image: FT * 2*VC*C (+ IT * 2*C^2 for LLaVA's second
 *     layer; Idefics3's one map takes the FT rows regrouped r^2 to a row)
 *   decoder, per pair of T-slot sequences sharing their first P slots:
 *     L * [ (P + 2*(T-P)) * 2*(2*C^2 + 2*C*KV + 3*C*FF) + 4*C*A ]
 *     + 2*R * 2*C*V, where A = P(P+1)/2 + T(T+1) - P(P+1) are the unmasked
 *     (query, key) pairs of causal attention (QK^T and AV, 2*C each), the
 *     shared prefix's once, and the lm head runs on the R positions that
 *     predict a response token. P is measured on the data: the image's IT
 *     slots, since chosen and rejected prompts are drawn independently as
 *     the peer's are (real SeVa pairs share the prompt too); seva computes
 *     a shared prefix once (the peer computes 2*T rows per pair).
 *   step = reference forward + policy forward + policy backward, where the
 *   backward is 2x the forward (dX and dW) of the decoder and lm head,
 *   2x for the second projector layer and 1x for the first (no dX: vision
 *   frozen), nothing for the vision tower.
 * The peer's attention over the full T^2 and its lm head over all slots
 * are not counted: it is the useful work per second that is compared.
 * A second figure, dpo_step_ref_precomputed, is the step as seva-dpo runs
 * it: the reference log-probs scored once before training (TRL's
 * precompute_ref_log_probs), so a step is policy forward + backward + AdamW.
 * A third, dpo_step_cached, is the first (the reference's pass included)
 * as seva-dpo --features runs it: the 8 images' tower output read from a
 * feature cache (common/featcache.c) in a temporary directory, which the
 * warm-up step fills, files read and checked in the timed steps; the
 * tower does not run (FLOPs counted without it).
 *
 *   engine [-j THREADS] [-n STEPS] [--ceiling GFLOPS] [--sgemm N] [--default]
 *          [--what dpo|gen|enc|sft|prefill|all] [--batch B] [--gen-reps R]
 *          [--precision f32|bf16|auto] CONFIG...
 *
 * Prints one JSON line per figure. Every timed figure is also given per CPU
 * second of the process (gflops_cpu = GFLOP / (CPU seconds / threads)):
 * on a machine that other jobs share, the wall clock measures them too.
 * --ceiling is the sgemm figure the ceiling_pct fields are quoted against;
 * --sgemm N measures an N^3 sgemm first, for ceiling_cpu_pct. --batch B
 * generates at batch B only (for profiles); --gen-reps R times each
 * generation (and prefill) figure R times and gives the mean. --precision: of the products,
 * as the tools take it (tensor_set_precision); every line names it. --default
 * skips tensor_blas_setup (OpenBLAS keeps the core it detected). Built by
 * tests/bench/engine.sh. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "featcache.h"
#include "rng.h"
#include "tensor.h"
#include "train.h"
#include "util.h"
#include "vlm.h"

enum { PAIRS = 8, PROMPT = 32, RESP = 32, NEW_TOKENS = 64 };

/* Set in main: the -j threads and the sgemm ceiling per CPU second
 * (--sgemm), for the figures per CPU second. */
static int threads = 2;
static double ceiling_cpu;
static const char *prec = "f32"; /* of the products, on every line */
static int gen_reps = 1;          /* timed generations per figure (their mean) */

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The FLOPs named in the comment at the top. */
static double vision_flops(const struct vlm_config *c)
{
	double np = c->np, vt = c->vt, vc = c->v_hidden, vi = c->v_inter, p = c->patch_size;
	double per_layer = vt * 2 * (4 * vc * vc + 2 * vc * vi) + 4 * vc * vt * vt;
	return np * 2 * (3 * p * p) * vc + c->v_used * per_layer;
}

/* The connector's first product (its input: FT rows of VC, regrouped into
 * IT rows when shuffled) and, for the MLP, its second (C to C). */
static double proj1_flops(const struct vlm_config *c)
{
	return (double)c->feat_tokens * 2 * c->v_hidden * c->hidden;
}

static double proj2_flops(const struct vlm_config *c)
{
	return c->connector == VLM_CONN_MLP2 ? (double)c->img_tokens * 2 * (double)c->hidden * c->hidden : 0;
}

static double proj_flops(const struct vlm_config *c)
{
	return proj1_flops(c) + proj2_flops(c);
}

/* Decoder layers (no lm head) over ROWS rows with PAIRS unmasked (query,
 * key) pairs of causal attention in all. */
static double dec_flops(const struct vlm_config *c, double rows, double pairs)
{
	double C = c->hidden, KV = (double)c->kv_heads * (c->hidden / c->heads), FF = c->inter;
	return c->layers * (rows * 2 * (2 * C * C + 2 * C * KV + 3 * C * FF) + 4 * C * pairs);
}

static double head_flops(const struct vlm_config *c, double positions)
{
	return positions * 2 * (double)c->hidden * c->vocab;
}

/* A DPO step on PAIRS pairs of two T-slot sequences, pair i's two sharing
 * their first P[i] slots. With REF, the reference forward counts too (the
 * peer's step). */
static double dpo_step_flops(const struct vlm_config *c, const int *P, int ref)
{
	double T = c->img_tokens + PROMPT + RESP, dec = 0;
	for (int i = 0; i < PAIRS; i++) {
		double p = P[i];
		dec += dec_flops(c, p + 2 * (T - p), p * (p + 1) / 2 + (T * (T + 1) - p * (p + 1)))
		       + 2 * head_flops(c, RESP);
	}
	double fwd = PAIRS * (vision_flops(c) + proj_flops(c)) + dec;
	double bwd = 2 * dec + PAIRS * (proj1_flops(c) + 2 * proj2_flops(c));
	return (ref ? 2 : 1) * fwd + bwd;
}

/* Generation of NEW new tokens for B sequences: the prefill of image +
 * prompt (lm head on the last slot only) and NEW - 1 single-token steps,
 * each attending to everything before it. */
static double gen_flops(const struct vlm_config *c, int B, int NEW)
{
	double T0 = c->img_tokens + PROMPT;
	double f = vision_flops(c) + proj_flops(c) + dec_flops(c, T0, T0 * (T0 + 1) / 2) +
		   head_flops(c, 1);
	for (int i = 1; i < NEW; i++)
		f += dec_flops(c, 1, T0 + i) + head_flops(c, 1); /* keys: the new one included */
	return B * f;
}

/* An SFT step on B sequences of T slots: forward (the head on the RESP
 * answer positions), backward of decoder, head and connector (no dX into
 * the frozen tower). */
static double sft_step_flops(const struct vlm_config *c, int B)
{
	double T = c->img_tokens + PROMPT + RESP;
	double dec = B * (dec_flops(c, T, T * (T + 1) / 2) + head_flops(c, RESP));
	return B * (vision_flops(c) + proj_flops(c)) + dec + 2 * dec +
	       B * (proj1_flops(c) + 2 * proj2_flops(c));
}

struct data {
	int B, n_images;
	int **ids;
	int *len;
	float **w;
	float *images;
	int *image_of;
};

/* B sequences [image, PROMPT + resp tokens] over N_IMAGES images;
 * sequence b uses image b / per_image. Token ids are uniform over the
 * vocabulary without the image token. */
static void data_init(struct data *d, const struct vlm_config *c, int B, int resp, int per_image,
		      uint64_t seed, const char *purpose)
{
	struct rng r;
	int n_images = B / per_image, S = c->image_size;
	long img = 3L * S * S;

	rng_seed(&r, seed, "engine bench", purpose);
	d->B = B;
	d->n_images = n_images;
	d->ids = xcalloc((size_t)B, sizeof *d->ids);
	d->w = xcalloc((size_t)B, sizeof *d->w);
	d->len = xcalloc((size_t)B, sizeof *d->len);
	d->image_of = xcalloc((size_t)B, sizeof *d->image_of);
	d->images = xmalloc(sizeof(float) * img * n_images);
	rng_normal_fill(&r, d->images, img * n_images);
	for (int b = 0; b < B; b++) {
		int n = 1 + PROMPT + resp;
		d->len[b] = n;
		d->ids[b] = xmalloc(sizeof(int) * n);
		d->w[b] = xcalloc((size_t)n, sizeof(float));
		d->ids[b][0] = c->image_token_index;
		for (int t = 1; t < n; t++) {
			int id = (int)rng_below(&r, (uint64_t)c->vocab - 1);
			d->ids[b][t] = id >= c->image_token_index ? id + 1 : id;
		}
		for (int t = 1 + PROMPT; t < n; t++)
			d->w[b][t] = 1;
		d->image_of[b] = b / per_image;
	}
}

static void data_release(struct data *d)
{
	for (int b = 0; b < d->B; b++) {
		free(d->ids[b]);
		free(d->w[b]);
	}
	free(d->ids);
	free(d->w);
	free(d->len);
	free(d->image_of);
	free(d->images);
}

static struct vlm_batch data_batch(const struct data *d)
{
	struct vlm_batch vb = { .B = d->B, .ids = (const int *const *)d->ids, .len = d->len,
				.weight = (const float *const *)d->w,
				.n_images = d->n_images,
				.images = d->images, .image_of = d->image_of };
	return vb;
}

/* One DPO step as the peer's: reference forward (no grad) into RLP,
 * policy forward and backward, AdamW. With REF NULL, RLP holds reference
 * log-probs already (seva-dpo scores the reference once before training,
 * as TRL's precompute_ref_log_probs). Returns the loss. */
/* With --features' cache (bench_dpo sets it for dpo_step_cached): the
 * images' features from there, for both models (their towers are the same
 * weights). */
static struct featcache *step_cache;

static double dpo_step(struct vlm *pol, struct vlm *ref, float *rlp, struct train_opt *o,
		       const struct vlm_batch *vb0)
{
	struct dpo_opts dpo;
	struct dpo_in in[PAIRS];
	struct dpo_out r[PAIRS];
	float plp[2 * PAIRS], dlp[2 * PAIRS];
	double loss = 0;
	struct vlm_batch b = *vb0, *vb = &b;
	const float *pix[PAIRS], *given[PAIRS];
	float *feat = NULL;

	if (step_cache) {
		size_t rows = (size_t)pol->cfg.feat_tokens * pol->cfg.v_hidden;
		size_t img = 3 * (size_t)pol->cfg.image_size * pol->cfg.image_size;
		feat = xmalloc(sizeof(float) * rows * b.n_images);
		for (int i = 0; i < b.n_images; i++) {
			pix[i] = b.images + i * img;
			given[i] = feat + i * rows;
		}
		if (featcache_get(step_cache, pol, pix, b.n_images, feat) < 0)
			exit(1);
		b.features = given;
	}
	dpo_opts_init(&dpo); /* sigmoid, beta 0.1 */
	if ((ref && vlm_forward(ref, vb, rlp, 0) < 0) || vlm_forward(pol, vb, plp, 1) < 0)
		exit(1);
	free(feat);
	for (int i = 0; i < PAIRS; i++)
		in[i] = (struct dpo_in){ .pc = plp[2 * i], .pr = plp[2 * i + 1], .rc = rlp[2 * i],
					 .rr = rlp[2 * i + 1], .nc = RESP, .nr = RESP };
	dpo_batch_loss(&dpo, in, PAIRS, 0, r);
	for (int i = 0; i < PAIRS; i++) {
		/* dpc, dpr are k times the batch loss's gradient */
		dlp[2 * i] = (float)(r[i].dpc / PAIRS);
		dlp[2 * i + 1] = (float)(r[i].dpr / PAIRS);
		loss += r[i].loss / PAIRS; /* the batch loss is their mean */
	}
	vlm_zero_grad(pol);
	vlm_backward(pol, dlp);
	train_clip_grad(pol, 0);
	train_opt_step(o, pol, 2e-6f);
	return loss;
}

/* Times STEPS steps after one warm-up; prints the JSON line WHAT. */
static void time_dpo(struct vlm *m, struct vlm *ref, float *rlp, struct train_opt *o,
		     const struct vlm_batch *vb, const char *name, const char *what, int steps,
		     double fl, double ceiling)
{
	const struct vlm_config *c = &m->cfg;
	/* warm-up (arenas, threads, pages), not needed again without the reference */
	double loss = ref ? dpo_step(m, ref, rlp, o, vb) : 0;
	double best = 1e30, sum = 0, cpu = 0;
	for (int s = 0; s < steps; s++) {
		double t = now_seconds(), ct = cpu_seconds();
		loss = dpo_step(m, ref, rlp, o, vb);
		t = now_seconds() - t;
		cpu += cpu_seconds() - ct;
		sum += t;
		if (t < best)
			best = t;
	}
	double mean = sum / steps, cps = cpu / steps;
	long trainable = 0;
	for (int i = 0; i < m->ntensors; i++)
		if (train_tensor_trains(m, &m->tensors[i]))
			trainable += m->tensors[i].numel;
	int T = c->img_tokens + PROMPT + RESP;
	printf("{\"config\":\"%s\",\"precision\":\"%s\",\"what\":\"%s\",\"params\":%ld,\"trainable\":%ld,"
	       "\"batch\":%d,\"seq_tokens\":%d,\"steps\":%d,\"s_per_step\":%.4f,"
	       "\"best_s_per_step\":%.4f,\"cpu_s_per_step\":%.4f,\"pairs_per_s\":%.2f,"
	       "\"tokens_per_s\":%.1f,\"gflop_per_step\":%.2f,\"gflops\":%.1f,"
	       "\"best_gflops\":%.1f,\"ceiling_pct\":%.1f,\"gflops_cpu\":%.1f,"
	       "\"ceiling_cpu_pct\":%.1f,\"loss\":%.6f}\n",
	       name, prec, what, m->nparams, trainable, PAIRS, T, steps, mean, best, cps, PAIRS / mean,
	       2.0 * PAIRS * T / mean, fl / 1e9, fl / mean / 1e9, fl / best / 1e9,
	       ceiling > 0 ? 100 * fl / mean / 1e9 / ceiling : -1, fl / (cps / threads) / 1e9,
	       ceiling_cpu > 0 ? 100 * fl / (cps / threads) / 1e9 / ceiling_cpu : -1, loss);
	fflush(stdout);
}

static void bench_dpo(struct vlm *m, const char *name, int steps, double ceiling)
{
	const struct vlm_config *c = &m->cfg;
	struct vlm *ref = vlm_new(c);
	struct data d;
	struct train_opt o;
	float rlp[2 * PAIRS];

	memcpy(ref->params, m->params, sizeof(float) * m->nparams);
	tensor_weights_changed(ref->params);
	vlm_train_init(m, VLM_PART_PROJECTOR | VLM_PART_DECODER);
	train_opt_init(&o, m, 0.9f, 0.999f, 1e-8f, 0);
	/* pair i = sequences 2i (chosen), 2i+1 (rejected) on image i */
	data_init(&d, c, 2 * PAIRS, RESP, 2, 1, "dpo");
	struct vlm_batch vb = data_batch(&d);
	/* the slots a pair's two sequences share: their common first tokens,
	 * the image expanded to its rows */
	int P[PAIRS];
	for (int i = 0; i < PAIRS; i++) {
		const int *x = d.ids[2 * i], *y = d.ids[2 * i + 1];
		int k = 0, n = d.len[2 * i];
		while (k < n && k < d.len[2 * i + 1] && x[k] == y[k])
			k++;
		P[i] = k > 0 && x[0] == c->image_token_index ? k - 1 + c->img_tokens : k;
		if (k == n)
			die("pair %d: chosen and rejected are the same", i);
	}
	time_dpo(m, ref, rlp, &o, &vb, name, "dpo_step", steps, dpo_step_flops(c, P, 1), ceiling);
	time_dpo(m, NULL, rlp, &o, &vb, name, "dpo_step_ref_precomputed", steps,
		 dpo_step_flops(c, P, 0), ceiling);
	char dir[] = "/tmp/seva-bench-featcache.XXXXXX";
	struct featcache fc;
	if (!mkdtemp(dir) || featcache_open(&fc, dir, m, 0) < 0)
		die("a feature cache in %s:", dir);
	step_cache = &fc;
	time_dpo(m, ref, rlp, &o, &vb, name, "dpo_step_cached", steps,
		 dpo_step_flops(c, P, 1) - 2 * PAIRS * vision_flops(c), ceiling);
	step_cache = NULL;
	/* the disk an image takes: the header and FT x VC values */
	printf("{\"config\":\"%s\",\"precision\":\"%s\",\"what\":\"featcache\","
	       "\"dtype\":\"%s\",\"bytes_per_image\":%ld}\n",
	       name, prec, fc.bf16 ? "bf16" : "f32", 128 + (long)fc.ft * fc.vc * (fc.bf16 ? 2 : 4));
	fflush(stdout);
	featcache_close(&fc);
	if (remove_tree(dir) < 0)
		exit(1);
	train_opt_release(&o);
	data_release(&d);
	vlm_free(ref);
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* The sgemm ceiling through matmul_forward as tests/bench/sgemm.c takes it,
 * best of REPS, also per CPU second of the process: GFLOP / (CPU seconds /
 * threads), what the threads would do on cores of their own. */
static void bench_sgemm(int n, int reps)
{
	float *a = xmalloc(sizeof(float) * n * n), *b = xmalloc(sizeof(float) * n * n);
	float *o = xmalloc(sizeof(float) * n * n);
	for (long i = 0; i < (long)n * n; i++) {
		a[i] = (float)(i % 17) * 0.01f - 0.08f;
		b[i] = (float)(i % 13) * 0.01f - 0.06f;
	}
	matmul_forward(o, a, b, NULL, n, n, n);
	double best = 1e30, best_cpu = 1e30, fl = 2.0 * n * n * n;
	for (int r = 0; r < reps; r++) {
		double t = now_seconds(), ct = cpu_seconds();
		matmul_forward(o, a, b, NULL, n, n, n);
		t = now_seconds() - t;
		ct = cpu_seconds() - ct;
		if (t < best)
			best = t;
		if (ct < best_cpu)
			best_cpu = ct;
	}
	ceiling_cpu = fl / (best_cpu / threads) / 1e9;
	printf("{\"what\":\"sgemm\",\"n\":%d,\"gflops\":%.1f,\"gflops_cpu\":%.1f}\n", n,
	       fl / best / 1e9, ceiling_cpu);
	fflush(stdout);
	free(a), free(b), free(o);
}

/* Generation of NEW tokens at batch B; NEW 1 is the prefill figure. */
static void bench_gen(struct vlm *m, const char *name, int B, int NEW, double ceiling)
{
	const struct vlm_config *c = &m->cfg;
	struct data d;
	uint64_t seeds[8] = { 0 };
	struct gen_out out[8];
	struct gen_settings gs = { .max_new_tokens = 4, .temperature = 0, .top_p = 1 };

	data_init(&d, c, B, 0, 1, 2, "gen");
	struct vlm_batch vb = data_batch(&d);
	vb.weight = NULL;
	if (vlm_generate(m, &vb, seeds, &gs, out) < 0) /* warm-up, as the peer's */
		exit(1);
	for (int b = 0; b < B; b++)
		gen_out_release(&out[b]);
	gs.max_new_tokens = NEW;
	double t = 0, ct = 0;
	long n = 0;
	for (int r = 0; r < gen_reps; r++) {
		double t0 = now_seconds(), c0 = cpu_seconds();
		if (vlm_generate(m, &vb, seeds, &gs, out) < 0)
			exit(1);
		t += (now_seconds() - t0) / gen_reps;
		ct += (cpu_seconds() - c0) / gen_reps;
		n = 0;
		for (int b = 0; b < B; b++) {
			n += out[b].n;
			gen_out_release(&out[b]);
		}
	}
	if (n != (long)B * NEW)
		die("generation gave %ld tokens, not %d", n, B * NEW);
	double fl = gen_flops(c, B, NEW);
	printf("{\"config\":\"%s\",\"precision\":\"%s\",\"what\":\"%s\",\"batch\":%d,\"new_tokens\":%d,"
	       "\"s\":%.4f,\"cpu_s\":%.4f,\"tokens_per_s\":%.1f,\"gflop\":%.3f,\"gflops\":%.1f,"
	       "\"ceiling_pct\":%.1f,\"gflops_cpu\":%.1f,\"ceiling_cpu_pct\":%.1f}\n",
	       name, prec, NEW > 1 ? "generate_kvcache" : "prefill", B, NEW, t, ct, n / t, fl / 1e9, fl / t / 1e9,
	       ceiling > 0 ? 100 * fl / t / 1e9 / ceiling : -1, fl / (ct / threads) / 1e9,
	       ceiling_cpu > 0 ? 100 * fl / (ct / threads) / 1e9 / ceiling_cpu : -1);
	fflush(stdout);
	data_release(&d);
}

/* STEPS SFT steps after a warm-up, on a copy of M (M itself stays as drawn
 * for the figures after this one). */
static void bench_sft(struct vlm *m0, const char *name, int steps, double ceiling)
{
	const struct vlm_config *c = &m0->cfg;
	struct vlm *m = vlm_new(c);
	struct data d;
	struct train_opt o;
	float logp[PAIRS], dlogp[PAIRS];

	memcpy(m->params, m0->params, sizeof(float) * m->nparams);
	tensor_weights_changed(m->params);
	vlm_train_init(m, VLM_PART_PROJECTOR | VLM_PART_DECODER);
	train_opt_init(&o, m, 0.9f, 0.999f, 1e-8f, 0);
	data_init(&d, c, PAIRS, RESP, 1, 4, "sft");
	struct vlm_batch vb = data_batch(&d);
	for (int b = 0; b < PAIRS; b++)
		dlogp[b] = -1.0f / (PAIRS * RESP); /* the mean over answer tokens */
	double t = 0, ct = 0, loss = 0;
	for (int s = 0; s <= steps; s++) {
		double t0 = now_seconds(), c0 = cpu_seconds();
		if (vlm_forward(m, &vb, logp, 1) < 0)
			exit(1);
		vlm_zero_grad(m);
		vlm_backward(m, dlogp);
		train_clip_grad(m, 0);
		train_opt_step(&o, m, 2e-5f);
		if (s > 0) { /* the first is the warm-up */
			t += now_seconds() - t0;
			ct += cpu_seconds() - c0;
		}
		loss = 0;
		for (int b = 0; b < PAIRS; b++)
			loss -= logp[b] / (PAIRS * RESP);
	}
	double mean = t / steps, cps = ct / steps, fl = sft_step_flops(c, PAIRS);
	printf("{\"config\":\"%s\",\"precision\":\"%s\",\"what\":\"sft_step\",\"batch\":%d,"
	       "\"steps\":%d,\"s_per_step\":%.4f,\"cpu_s_per_step\":%.4f,\"seqs_per_s\":%.2f,"
	       "\"gflop_per_step\":%.2f,\"gflops\":%.1f,\"ceiling_pct\":%.1f,\"gflops_cpu\":%.1f,"
	       "\"loss\":%.6f}\n",
	       name, prec, PAIRS, steps, mean, cps, PAIRS / mean, fl / 1e9, fl / mean / 1e9,
	       ceiling > 0 ? 100 * fl / mean / 1e9 / ceiling : -1, fl / (cps / threads) / 1e9, loss);
	fflush(stdout);
	train_opt_release(&o);
	data_release(&d);
	vlm_free(m);
}

/* The tower on one image, REPS times after a warm-up. */
static void bench_enc(struct vlm *m, const char *name, int reps)
{
	struct data d;

	data_init(&d, &m->cfg, 1, 0, 1, 3, "enc");
	struct vlm_batch vb = data_batch(&d);
	vb.weight = NULL;
	if (vlm_forward_features(m, &vb, 0) < 0)
		exit(1);
	double t = now_seconds(), ct = cpu_seconds();
	for (int r = 0; r < reps; r++)
		if (vlm_forward_features(m, &vb, 0) < 0)
			exit(1);
	t = (now_seconds() - t) / reps;
	ct = (cpu_seconds() - ct) / reps;
	double fl = vision_flops(&m->cfg);
	printf("{\"config\":\"%s\",\"precision\":\"%s\",\"what\":\"image_encode\",\"images\":%d,"
	       "\"s_per_image\":%.4f,\"cpu_s_per_image\":%.4f,\"gflop\":%.2f,\"gflops\":%.1f,"
	       "\"gflops_cpu\":%.1f,\"params\":%ld}\n",
	       name, prec, reps, t, ct, fl / 1e9, fl / t / 1e9, fl / (ct / threads) / 1e9, m->nparams);
	fflush(stdout);
	data_release(&d);
}

int main(int argc, char **argv)
{
	static const char usage[] =
		"engine [-j THREADS] [-n STEPS] [--ceiling GFLOPS] [--sgemm N] [--default] "
		"[--what dpo|gen|enc|sft|prefill|all] [--batch B] [--gen-reps R] [--precision f32|bf16|auto] CONFIG...";
	static const struct option longopts[] = {
		{"default", no_argument, NULL, 'D'}, {"what", required_argument, NULL, 'w'},
		{"ceiling", required_argument, NULL, 'C'}, {"sgemm", required_argument, NULL, 'S'},
		{"batch", required_argument, NULL, 'b'}, {"threads", required_argument, NULL, 'j'},
		{"precision", required_argument, NULL, 'P'}, {"gen-reps", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0}};
	int precision = TENSOR_F32;
	int steps = 1, setup = 1, dpo = 1, gen = 1, enc = 0, sft = 0, prefill = 0, sgemm = 0,
	    gen_batch = 0, c;
	double ceiling = 0;

	util_init(argv[0]);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--default"))
			setup = 0;
	if (setup)
		tensor_blas_setup(argv); /* may restart the process: before getopt */
	while ((c = getopt_long(argc, argv, "j:n:", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': threads = (int)arg_long("-j", optarg, 0, 1024); break;
		case 'n': steps = (int)arg_long("-n", optarg, 1, 1000); break;
		case 'C': ceiling = arg_double("--ceiling", optarg, 0, 1e9); break;
		case 'b': gen_batch = (int)arg_long("--batch", optarg, 1, 8); break;
		case 'S': sgemm = (int)arg_long("--sgemm", optarg, 16, 8192); break;
		case 'D': break;
		case 'R': gen_reps = (int)arg_long("--gen-reps", optarg, 1, 100000); break;
		case 'P': precision = arg_choice("--precision", optarg, tensor_precision_names, 3); break;
		case 'w':
			dpo = !strcmp(optarg, "dpo") || !strcmp(optarg, "all");
			gen = !strcmp(optarg, "gen") || !strcmp(optarg, "all");
			enc = !strcmp(optarg, "enc") || !strcmp(optarg, "all");
			sft = !strcmp(optarg, "sft") || !strcmp(optarg, "all");
			prefill = !strcmp(optarg, "prefill") || !strcmp(optarg, "all");
			if (!dpo && !gen && !enc && !sft && !prefill)
				usage_die(usage);
			break;
		default: usage_die(usage);
		}
	}
	if (optind == argc)
		usage_die(usage);
	tensor_set_threads(threads);
	if (tensor_set_precision(precision) < 0)
		return 1;
	prec = tensor_precision_names[tensor_precision()];
	printf("{\"what\":\"setup\",\"threads\":%d,\"blas\":\"%s\",\"precision\":\"%s\","
	       "\"precision_info\":\"%s\"}\n",
	       threads, tensor_blas_info(), prec, tensor_precision_info());
	if (sgemm)
		bench_sgemm(sgemm, 3);
	for (int i = optind; i < argc; i++) {
		struct vlm_config cfg;
		char name[64];
		snprintf(name, sizeof name, "%s", base_name(argv[i]));
		char *dot = strrchr(name, '.');
		if (dot)
			*dot = 0;
		if (vlm_config_load(&cfg, argv[i]) < 0 || vlm_config_finish(&cfg) < 0)
			return 1;
		struct vlm *m = vlm_new(&cfg);
		vlm_init_random(m, 1);
		if (enc)
			bench_enc(m, name, steps + 1);
		if (prefill)
			bench_gen(m, name, gen_batch ? gen_batch : 8, 1, ceiling);
		if (gen) {
			if (gen_batch != 8)
				bench_gen(m, name, gen_batch ? gen_batch : 1, NEW_TOKENS, ceiling);
			if (!gen_batch || gen_batch == 8)
				bench_gen(m, name, 8, NEW_TOKENS, ceiling);
		}
		if (sft)
			bench_sft(m, name, steps, ceiling);
		if (dpo)
			bench_dpo(m, name, steps, ceiling);
		vlm_free(m);
	}
	return 0;
}
