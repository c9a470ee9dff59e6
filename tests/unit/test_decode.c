/* test_decode — generation with the KV cache: equals greedy decoding by full
 * forwards (no cache), with and without LoRA; a sequence's tokens do not
 * depend on the batch (greedy and sampled); stop ids, the stop callback,
 * max_new_tokens, seeds, per-token log-probs, prompts sharing their start,
 * errors; decoding under bf16 against f32. */
#include <math.h>
#include <string.h>

#include "rng.h"
#include "tensor.h"
#include "tap.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"
#include "vlm_impl.h"

static void tiny_config(struct vlm_config *c)
{
	tiny_config_base(c);
	c->max_pos = 48;
	tiny_finish(c);
}

/* Large weights: peaked, varied next-token distributions. */
static void randomize(struct vlm *m, uint64_t seed, int from)
{
	for (int i = from; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		struct rng r;
		rng_seed(&r, seed, t->name, "test");
		double sd = 0.1, mean = 0;
		if (t->ndim >= 2)
			sd = 1.5 / sqrt((double)t->numel / t->shape[0]);
		if (strstr(t->name, "norm") && strstr(t->name, ".weight"))
			mean = 1;
		if (strstr(t->name, "embed_tokens"))
			sd = 1;
		for (long j = 0; j < t->numel; j++)
			t->data[j] = (float)(mean + sd * rng_normal(&r));
	}
	/* logit 0 for the image token: never the argmax, so a full forward can
	 * take the generated text back as a prompt */
	struct vlm_tensor *h = vlm_tensor_find(m, "language_model.lm_head.weight");
	if (from == 0)
		memset(h->data + (long)m->cfg.image_token_index * m->cfg.hidden, 0,
		       m->cfg.hidden * sizeof(float));
}

enum { NB = 3, MAXT = 40 };
static int pids[NB][MAXT];
static const int *pp[NB];
static int plen[NB] = {6, 3, 9};
static int pimg[NB] = {1, -1, 0};
static float images[2 * 3 * 16 * 16];

static void make_prompts(const struct vlm_config *c, struct vlm_batch *b)
{
	struct rng r;
	rng_seed(&r, 3, "prompts", "test");
	for (int s = 0; s < NB; s++) {
		for (int t = 0; t < plen[s]; t++)
			pids[s][t] = 3 + (int)rng_below(&r, c->vocab - 4);
		pids[s][0] = 1;
		if (pimg[s] >= 0)
			pids[s][2] = c->image_token_index;
		pp[s] = pids[s];
	}
	rng_normal_fill(&r, images, ARRAY_LEN(images));
	memset(b, 0, sizeof *b);
	b->B = NB;
	b->ids = pp;
	b->len = plen;
	b->n_images = 2;
	b->images = images;
	b->image_of = pimg;
}

/* Sequence s alone as a batch of one. */
static void single(const struct vlm_batch *all, int s, struct vlm_batch *b1, int *io)
{
	*b1 = *all;
	b1->B = 1;
	b1->ids = &all->ids[s];
	b1->len = &all->len[s];
	*io = all->image_of[s] >= 0 ? 0 : -1;
	b1->image_of = io;
	b1->n_images = *io >= 0 ? 1 : 0;
	b1->images = all->images + (all->image_of[s] >= 0 ? all->image_of[s] : 0) * 3 * 16 * 16;
}

/* Greedy decoding of sequence s by a full forward per token; checks the
 * cached run's tokens and log-probs. */
static int nocache_check(struct vlm *m, const struct vlm_batch *all, int s, const struct gen_out *g,
			 double *worst_lp)
{
	int V = m->cfg.vocab, io;
	int seq[MAXT + 16], n = all->len[s];
	memcpy(seq, all->ids[s], n * sizeof(int));
	float *logits = xmalloc(V * sizeof(float));
	int ok = 1;
	for (int k = 0; k < g->n; k++) {
		struct vlm_batch b1;
		single(all, s, &b1, &io);
		const int *sp = seq;
		b1.ids = &sp;
		b1.len = &n;
		struct vlm_fwd_opts o = {.last_logits = logits};
		if (vlm_forward_ex(m, &b1, NULL, &o))
			return 0;
		int best = 0;
		double z = 0;
		for (int i = 1; i < V; i++)
			if (logits[i] > logits[best])
				best = i;
		for (int i = 0; i < V; i++)
			z += exp(logits[i] - logits[best]);
		double lp = -log(z);
		if (best != g->ids[k]) {
			tap_diag("sequence %d token %d: cache %d, full forward %d", s, k, g->ids[k], best);
			ok = 0;
			break;
		}
		double d = fabs(lp - g->logp[k]);
		if (d > *worst_lp)
			*worst_lp = d;
		seq[n++] = best;
	}
	free(logits);
	return ok;
}

static int same_out(const struct gen_out *a, const struct gen_out *b)
{
	return a->n == b->n && a->stopped == b->stopped && !memcmp(a->ids, b->ids, a->n * sizeof(int));
}

static int stop_after_two(void *ctx, int b, const int *ids, int n)
{
	(void)ctx;
	(void)b;
	(void)ids;
	return n >= 2;
}

static void run_checks(struct vlm *m, const char *what)
{
	struct vlm_batch b;
	make_prompts(&m->cfg, &b);
	uint64_t seeds[NB] = {11, 12, 13};
	struct gen_settings gs = {.max_new_tokens = 10, .temperature = 0, .top_p = 1};
	struct gen_out out[NB], one;
	tap_ok(vlm_generate(m, &b, seeds, &gs, out) == 0, "%s: greedy generation runs", what);
	int ok = 1, io;
	double worst = 0;
	for (int s = 0; s < NB; s++)
		ok &= out[s].n == 10 && out[s].stopped == 0 && nocache_check(m, &b, s, &out[s], &worst);
	tap_ok(ok && worst < 1e-4, "%s: KV-cache greedy equals full-forward greedy (10 tokens x %d, worst logp diff %.2g)",
	       what, NB, worst);
	int distinct = 0;
	for (int k = 1; k < out[0].n; k++)
		distinct += out[0].ids[k] != out[0].ids[0];
	tap_ok(distinct > 0, "%s: the test model is not degenerate (varied tokens)", what);

	/* alone vs in the batch: greedy, then sampled */
	ok = 1;
	for (int s = 0; s < NB; s++) {
		struct vlm_batch b1;
		single(&b, s, &b1, &io);
		vlm_generate(m, &b1, &seeds[s], &gs, &one);
		ok &= same_out(&one, &out[s]);
		gen_out_release(&one);
	}
	tap_ok(ok, "%s: greedy tokens alone equal tokens in a batch of %d", what, NB);
	for (int s = 0; s < NB; s++)
		gen_out_release(&out[s]);

	struct gen_settings ss = {.max_new_tokens = 12, .temperature = 0.9f, .top_k = 12, .top_p = 0.95f};
	vlm_generate(m, &b, seeds, &ss, out);
	ok = 1;
	for (int s = 0; s < NB; s++) {
		struct vlm_batch b1;
		single(&b, s, &b1, &io);
		vlm_generate(m, &b1, &seeds[s], &ss, &one);
		ok &= same_out(&one, &out[s]);
		gen_out_release(&one);
	}
	tap_ok(ok, "%s: sampled tokens (T 0.9, top-k 12, top-p 0.95) alone equal tokens in the batch", what);
	struct gen_out again[NB];
	vlm_generate(m, &b, seeds, &ss, again);
	ok = 1;
	for (int s = 0; s < NB; s++) {
		ok &= same_out(&again[s], &out[s]);
		gen_out_release(&again[s]);
	}
	tap_ok(ok, "%s: same seeds, same samples", what);
	uint64_t other[NB] = {101, 102, 103};
	vlm_generate(m, &b, other, &ss, again);
	int differ = 0;
	for (int s = 0; s < NB; s++) {
		differ += !same_out(&again[s], &out[s]);
		gen_out_release(&again[s]);
		gen_out_release(&out[s]);
	}
	tap_ok(differ > 0, "%s: other seeds, other samples (%d of %d differ)", what, differ, NB);
}

/* Decoding under bf16 (each step's products from the weights' bf16
 * copies, tensor.h's matmul_forward_step) on a model whose products take
 * that path (sides of 32 and more). bf16 moves each product by at most
 * about 2^-7 of sum |x||w| (test_bf16), so greedy decoding must pick f32's
 * token wherever f32's best logit leads the next one by more than MARGIN
 * (0.25: the logits here are of order 10, 2^-7 of which is 0.08); the
 * chosen tokens' log-probs within LP_TOL 0.05 of f32's (0.022 at most,
 * measured) and not all equal to them (bf16 ran). A sequence's bits
 * do not depend on the batch in bf16 either. */
static void test_bf16_generation(void)
{
	const double MARGIN = 0.25, LP_TOL = 0.05;
	struct vlm_config c;
	tiny_config_base(&c);
	c.hidden = 64;
	c.inter = 96;
	c.max_pos = 48;
	tiny_finish(&c);
	struct vlm *m = vlm_new(&c);
	randomize(m, 31, 0);
	struct vlm_batch b;
	make_prompts(&c, &b);
	enum { NEW = 12 };
	struct gen_settings gs = {.max_new_tokens = NEW, .temperature = 0, .top_p = 1};
	struct gen_out f32[NB], bf[NB], one;
	int V = c.vocab, io;
	float *logits = xmalloc(V * sizeof(float));
	double margin[NB][NEW];

	tensor_set_precision(TENSOR_F32);
	vlm_generate(m, &b, NULL, &gs, f32);
	/* f32's lead of its token over the runner-up, by full forwards */
	for (int s = 0; s < NB; s++) {
		int seq[MAXT + NEW], n = b.len[s];
		memcpy(seq, b.ids[s], n * sizeof(int));
		for (int k = 0; k < f32[s].n; k++) {
			struct vlm_batch b1;
			single(&b, s, &b1, &io);
			const int *sp = seq;
			b1.ids = &sp;
			b1.len = &n;
			struct vlm_fwd_opts o = {.last_logits = logits};
			vlm_forward_ex(m, &b1, NULL, &o);
			int t = f32[s].ids[k];
			double second = -1e30;
			for (int i = 0; i < V; i++)
				if (i != t && logits[i] > second)
					second = logits[i];
			margin[s][k] = logits[t] - second;
			seq[n++] = t;
		}
	}
	if (tensor_set_precision(TENSOR_BF16) < 0) {
		tap_ok(1, "bf16 decoding # SKIP bf16 is not built in");
		goto out;
	}
	vlm_generate(m, &b, NULL, &gs, bf);
	int checked = 0, total = 0, bad = 0, lpbad = 0, lpdiffer = 0;
	double worst = 0;
	for (int s = 0; s < NB; s++) {
		total += f32[s].n;
		for (int k = 0; k < f32[s].n && k < bf[s].n; k++) {
			if (bf[s].ids[k] != f32[s].ids[k]) {
				if (margin[s][k] > MARGIN) {
					bad++;
					tap_diag("sequence %d token %d: bf16 %d, f32 %d (f32's margin %.3g)", s,
						 k, bf[s].ids[k], f32[s].ids[k], margin[s][k]);
				}
				break; /* the contexts differ from here on */
			}
			double d = fabs((double)bf[s].logp[k] - f32[s].logp[k]);
			worst = d > worst ? d : worst;
			lpbad += d > LP_TOL;
			lpdiffer += bf[s].logp[k] != f32[s].logp[k];
			checked += margin[s][k] > MARGIN;
		}
	}
	tap_ok(!bad && checked >= total / 2,
	       "bf16 greedy decoding picks f32's tokens where f32 leads by > %.2g (%d of %d tokens)",
	       MARGIN, checked, total);
	tap_ok(!lpbad && lpdiffer > 0,
	       "... their log-probs within %.2g of f32's (worst %.3g), %d of them not equal (bf16 ran)",
	       LP_TOL, worst, lpdiffer);
	int ok = 1;
	for (int s = 0; s < NB; s++) {
		struct vlm_batch b1;
		single(&b, s, &b1, &io);
		vlm_generate(m, &b1, NULL, &gs, &one);
		ok &= same_out(&one, &bf[s]) && !memcmp(one.logp, bf[s].logp, one.n * sizeof(float));
		gen_out_release(&one);
	}
	tap_ok(ok, "bf16: each sequence's tokens and log-probs alone as in the batch, bit for bit");
	for (int s = 0; s < NB; s++)
		gen_out_release(&bf[s]);
out:
	tensor_set_precision(TENSOR_F32);
	for (int s = 0; s < NB; s++)
		gen_out_release(&f32[s]);
	free(logits);
	vlm_free(m);
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init(argv[0]);
	struct vlm_config c;
	tiny_config(&c);
	struct vlm *m = vlm_new(&c);
	randomize(m, 21, 0);
	run_checks(m, "base");

	/* stops */
	struct vlm_batch b;
	make_prompts(&c, &b);
	struct gen_settings gs = {.max_new_tokens = 10, .temperature = 0, .top_p = 1};
	struct gen_out out[NB], st[NB];
	vlm_generate(m, &b, NULL, &gs, out);
	int stop_id = out[0].ids[3];
	int first = 0;
	while (out[0].ids[first] != stop_id)
		first++;
	struct gen_settings gstop = gs;
	gstop.stop_ids = &stop_id;
	gstop.n_stop_ids = 1;
	vlm_generate(m, &b, NULL, &gstop, st);
	tap_ok(st[0].stopped == 1 && st[0].n == first && !memcmp(st[0].ids, out[0].ids, first * sizeof(int)) &&
	       fabsf(st[0].stop_logp - out[0].logp[first]) < 1e-5f,
	       "stop id: generation ends before it, its log-prob kept (n %d, want %d)", st[0].n, first);
	for (int s = 0; s < NB; s++)
		gen_out_release(&st[s]);
	struct gen_settings gcb = gs;
	gcb.stop = stop_after_two;
	vlm_generate(m, &b, NULL, &gcb, st);
	int ok = 1;
	for (int s = 0; s < NB; s++) {
		ok &= st[s].stopped == 2 && st[s].n == 2 && !memcmp(st[s].ids, out[s].ids, 2 * sizeof(int));
		gen_out_release(&st[s]);
	}
	tap_ok(ok, "stop callback ends each sequence where it says");
	struct gen_settings g0 = gs;
	g0.max_new_tokens = 0;
	vlm_generate(m, &b, NULL, &g0, st);
	ok = 1;
	for (int s = 0; s < NB; s++) {
		ok &= st[s].n == 0;
		gen_out_release(&st[s]);
	}
	tap_ok(ok, "max_new_tokens 0: nothing generated");
	/* prompts that share their start (one image and question sampled with
	 * two seeds, and a prefix of it) are prefilled once: each sequence's
	 * tokens are still those it gets alone */
	const int *sp[3] = {pids[2], pids[2], pids[2]};
	int sl[3] = {9, 9, 6}, si[3] = {0, 0, 0}, io;
	uint64_t sd[3] = {5, 6, 7};
	struct vlm_batch sb = {.B = 3, .ids = sp, .len = sl, .n_images = 2, .images = images,
			       .image_of = si};
	struct gen_settings gsh = {.max_new_tokens = 8, .temperature = 0.9f, .top_p = 1};
	vlm_generate(m, &sb, sd, &gsh, st);
	/* the prefill is an sgemm over the batch's rows: bit for bit only where
	 * OpenBLAS's rows do not depend on the row count */
	int exact = tensor_sgemm_row_invariant();
	double worst = 0;
	ok = 1;
	for (int s = 0; s < 3; s++) {
		struct vlm_batch b1;
		struct gen_out one;
		single(&sb, s, &b1, &io);
		vlm_generate(m, &b1, &sd[s], &gsh, &one);
		ok &= same_out(&one, &st[s]) && one.n == 8;
		for (int t = 0; t < one.n && t < st[s].n; t++) {
			double d = fabs((double)one.logp[t] - st[s].logp[t]);
			worst = d > worst ? d : worst;
		}
		gen_out_release(&one);
		gen_out_release(&st[s]);
	}
	ok &= exact ? worst == 0 : worst <= 1e-5;
	tap_ok(ok, "prompts sharing their start: each sequence's tokens as alone, log-probs %s (worst diff %.2g)",
	       exact ? "bit for bit" : "to f32 rounding (this OpenBLAS core's sgemm rows depend on the row count)",
	       worst);
	/* the context bounds generation: 9 + 15 prompt positions, 48 slots */
	struct gen_settings glong = gs;
	glong.max_new_tokens = 100;
	vlm_generate(m, &b, NULL, &glong, st);
	tap_ok(st[2].n == 48 - (9 + 15) + 1 && st[1].n == 48 - 3 + 1,
	       "generation stops at the context length (n %d and %d)", st[2].n, st[1].n);
	for (int s = 0; s < NB; s++) {
		gen_out_release(&st[s]);
		gen_out_release(&out[s]);
	}
	static int longp[60];
	const int *lp = longp;
	int ll = 49;
	struct vlm_batch eb = {.B = 1, .ids = &lp, .len = &ll};
	fprintf(stderr, "(an expected error follows)\n");
	tap_ok(vlm_generate(m, &eb, NULL, &gs, st) < 0 && st[0].ids == NULL,
	       "a prompt longer than the context: error, nothing allocated");

	/* LoRA in the cached path */
	vlm_lora_add(m, 4, 8, LORA_ALL, 5);
	randomize(m, 22, ((struct vlm_impl *)m->impl)->nbase);
	run_checks(m, "LoRA");
	vlm_free(m);
	test_bf16_generation();
	return tap_done();
}
