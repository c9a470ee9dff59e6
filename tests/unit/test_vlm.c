/* test_vlm — the model's layout, forward and backward on tiny configs:
 * end-to-end finite differences of d logp / d theta for every kind of
 * tensor (vision, projector, decoder, LoRA A/B), frozen parts untouched,
 * LoRA off = base, merge = LoRA forward, batch and padding independence,
 * prefixes shared by a batch's sequences computed once with the same
 * results, GQA, tied embeddings and the "full" feature strategy. */
#include <math.h>
#include <string.h>

#include "rng.h"
#include "tensor.h"
#include "tap.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"
#include "vlm_impl.h"

/* Tiny LLaVA: 16-pixel images of 4x4 patches (NP 16), 3 vision layers of
 * which 2 run (feature layer -2), GQA decoder (NH 4, NKV 2). */
static void tiny_config(struct vlm_config *c, int tied)
{
	tiny_config_base(c);
	c->v_layers = 3;
	c->feature_layer = tied ? -1 : -2;
	c->drop_cls = tied ? 0 : 1;
	c->kv_heads = tied ? 4 : 2;
	c->tie_embeddings = tied;
	tiny_finish(c);
}

/* O(1) activations so that gradients are far from rounding: matrices
 * ~ N(0, 1/fan_in), norms 1 + N(0, 0.1), biases and the rest N(0, 0.1). */
static void randomize(struct vlm *m, uint64_t seed, int from)
{
	for (int i = from; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		struct rng r;
		rng_seed(&r, seed, t->name, "test");
		double sd = 0.1, mean = 0;
		if (t->ndim >= 2)
			sd = 1 / sqrt((double)t->numel / t->shape[0]);
		if (strstr(t->name, "norm") && strstr(t->name, ".weight"))
			mean = 1;
		if (strstr(t->name, "embed_tokens") || strstr(t->name, "position_embedding"))
			sd = 0.5;
		for (long j = 0; j < t->numel; j++)
			t->data[j] = (float)(mean + sd * rng_normal(&r));
	}
}

/* Four sequences, two images: 0 and 2 share image 0, 1 has image 1,
 * 3 has none. Weights on the answers (and one on the token after the image). */
enum { NB = 4, MAXT = 12 };
static int ids[NB][MAXT];
static float wts[NB][MAXT];
static const int *idp[NB];
static const float *wp[NB];
static int lens[NB] = {7, 5, 9, 6};
static int image_of[NB] = {0, 1, 0, -1};
static float images[2 * 3 * 16 * 16];

static void make_batch(const struct vlm_config *c, struct vlm_batch *b)
{
	struct rng r;
	rng_seed(&r, 7, "batch", "test");
	for (int s = 0; s < NB; s++) {
		for (int t = 0; t < lens[s]; t++) {
			ids[s][t] = 3 + (int)rng_below(&r, c->vocab - 4);
			wts[s][t] = t >= lens[s] - 3 ? 1.0f : 0.0f;
		}
		ids[s][0] = 1;
		if (image_of[s] >= 0) {
			ids[s][1] = c->image_token_index;
			wts[s][2] = 0.5f;
		}
		idp[s] = ids[s];
		wp[s] = wts[s];
	}
	rng_normal_fill(&r, images, ARRAY_LEN(images));
	memset(b, 0, sizeof *b);
	b->B = NB;
	b->ids = idp;
	b->len = lens;
	b->weight = wp;
	b->n_images = 2;
	b->images = images;
	b->image_of = image_of;
}

/* The untied tiny model with weights of seed 5, and the batch. */
static struct vlm *untied_model(struct vlm_config *c, struct vlm_batch *b)
{
	tiny_config(c, 0);
	make_batch(c, b);
	struct vlm *m = vlm_new(c);
	randomize(m, 5, 0);
	return m;
}

static double objective(const float *logp, const float *coef, int B)
{
	double s = 0;
	for (int b = 0; b < B; b++)
		s += (double)coef[b] * logp[b];
	return s;
}

static const float coef[NB] = {1.0f, -0.7f, 0.4f, 0.9f};

/* The finite differences' forwards keep their activations: LoRA dropout
 * draws its masks only in such (training) forwards. */
static int fd_keep;

/* Central differences on a few parameters of tensor T with the largest
 * analytic gradients; returns the worst error ratio (<= 1 passes). */
static double fd_check(struct vlm *m, const struct vlm_batch *b, struct vlm_tensor *t,
		       int npick, double *worst_an, double *worst_fd)
{
	float logp[NB];
	struct rng r;
	rng_seed(&r, 11, t->name, "pick");
	double worst = 0;
	for (int k = 0; k < npick; k++) {
		long best = -1;
		for (int tries = 0; tries < 24; tries++) {
			long j = (long)rng_below(&r, t->numel);
			if (best < 0 || fabsf(t->grad[j]) > fabsf(t->grad[best]))
				best = j;
		}
		float save = t->data[best];
		float eps = 3e-3f * fmaxf(1.0f, fabsf(save));
		t->data[best] = save + eps;
		vlm_forward(m, b, logp, fd_keep);
		double lp = objective(logp, coef, b->B);
		t->data[best] = save - eps;
		vlm_forward(m, b, logp, fd_keep);
		double lm = objective(logp, coef, b->B);
		t->data[best] = save;
		double fd = (lp - lm) / (2.0 * ((double)(save + eps) - save));
		double an = t->grad[best];
		double ratio = fabs(fd - an) / (2e-3 + 2e-2 * fabs(an));
		if (ratio > worst) {
			worst = ratio;
			*worst_an = an;
			*worst_fd = fd;
		}
	}
	return worst;
}

static void grads_of(struct vlm *m, const struct vlm_batch *b, unsigned trainable)
{
	float logp[NB];
	vlm_train_init(m, trainable);
	memset(m->grads, 0, m->nparams * sizeof(float));
	if (vlm_forward(m, b, logp, 1))
		exit(1);
	vlm_backward(m, coef);
}

static void test_layout(void)
{
	struct vlm_config c;
	tiny_config(&c, 0);
	struct vlm *m = vlm_new(&c);
	long n = 0;
	int ok = 1;
	for (int i = 0; i < m->ntensors; i++) {
		if (m->tensors[i].data != m->params + n)
			ok = 0;
		n += m->tensors[i].numel;
	}
	tap_ok(ok && n == m->nparams, "tensor table tiles the flat buffer (%d tensors, %ld floats)",
	       m->ntensors, m->nparams);
	struct vlm_tensor *t = vlm_tensor_find(m, "vision_tower.vision_model.embeddings.patch_embedding.weight");
	tap_ok(t && t->ndim == 4 && t->shape[0] == 16 && t->shape[1] == 3 && t->shape[2] == 4 &&
	       t == &m->tensors[0], "patch embedding first, (VC, 3, P, P)");
	t = vlm_tensor_find(m, "language_model.model.layers.1.self_attn.k_proj.weight");
	tap_ok(t && t->shape[0] == 16 && t->shape[1] == 32, "GQA k_proj is (NKV*HS, C)");
	t = vlm_tensor_find(m, "vision_tower.vision_model.embeddings.position_embedding.weight");
	tap_ok(t && t->shape[0] == 17, "position embedding has NP+1 rows");
	t = vlm_tensor_find(m, "vision_tower.vision_model.post_layernorm.weight");
	tap_ok(t && t->optional, "post_layernorm present and optional");
	tap_ok(vlm_tensor_find(m, "language_model.lm_head.weight") != NULL, "untied: lm_head present");
	tap_ok(vlm_tensor_find(m, "vision_tower.vision_model.encoder.layers.2.mlp.fc2.bias") != NULL,
	       "all v_layers in the table (the unused one too)");
	vlm_init_random(m, 1);
	t = vlm_tensor_find(m, "language_model.model.norm.weight");
	struct vlm_tensor *q = vlm_tensor_find(m, "language_model.model.layers.0.self_attn.q_proj.weight");
	double s = 0;
	for (long j = 0; j < q->numel; j++)
		s += q->data[j] * q->data[j];
	s = sqrt(s / q->numel);
	tap_ok(t->data[0] == 1 && fabs(s - 0.02) < 0.004, "init: unit norms, weights std %.4f ~ 0.02", s);
	vlm_lora_add(m, 4, 8, LORA_Q | LORA_DOWN, 3);
	struct vlm_tensor *a = vlm_tensor_find(m, "language_model.model.layers.1.mlp.down_proj.lora_A.weight");
	struct vlm_tensor *bb = vlm_tensor_find(m, "language_model.model.layers.1.mlp.down_proj.lora_B.weight");
	int bzero = 1;
	float amax = 0;
	for (long j = 0; bb && j < bb->numel; j++)
		bzero &= bb->data[j] == 0;
	for (long j = 0; a && j < a->numel; j++)
		amax = fmaxf(amax, fabsf(a->data[j]));
	tap_ok(a && bb && a->part == VLM_PART_LORA && a->shape[0] == 4 && a->shape[1] == 40 &&
	       bb->shape[0] == 32 && bzero && amax > 0 && amax <= 1 / sqrtf(40),
	       "LoRA: A (r, in) kaiming-uniform within 1/sqrt(in), B (out, r) zero");
	n = 0;
	ok = 1;
	for (int i = 0; i < m->ntensors; i++) {
		if (m->tensors[i].data != m->params + n)
			ok = 0;
		n += m->tensors[i].numel;
	}
	tap_ok(ok && n == m->nparams && m->ntensors == 2 + (int)(a - m->tensors),
	       "LoRA tensors appended to the table and the flat buffer");
	vlm_free(m);

	tiny_config(&c, 1);
	m = vlm_new(&c);
	tap_ok(!vlm_tensor_find(m, "language_model.lm_head.weight"), "tied: no lm_head tensor");
	vlm_free(m);
}

static void test_gradients(void)
{
	struct vlm_config c;
	struct vlm_batch b;
	struct vlm *m = untied_model(&c, &b);
	vlm_lora_add(m, 3, 6, LORA_ALL, 9);
	randomize(m, 6, ((struct vlm_impl *)m->impl)->nbase); /* B != 0 so A gets a gradient */
	grads_of(m, &b, VLM_PART_VISION | VLM_PART_PROJECTOR | VLM_PART_DECODER | VLM_PART_LORA);

	/* every tensor kind: every tensor */
	double worst[4] = {0}, wan[4] = {0}, wfd[4] = {0};
	const char *wname[4] = {"", "", "", ""};
	int count[4] = {0};
	int nv = 0, ntot = 0, zero_unused = 1;
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		int unused = strstr(t->name, "encoder.layers.2.") || strstr(t->name, "post_layernorm");
		if (unused) {
			for (long j = 0; j < t->numel; j++)
				zero_unused &= t->grad[j] == 0;
			continue;
		}
		/* both decoder layers: the last computes q onwards only on the head's rows */
		int k = t->part == VLM_PART_VISION ? 0 : t->part == VLM_PART_PROJECTOR ? 1
			: t->part == VLM_PART_DECODER ? 2 : 3;
		double an, fd;
		double w = fd_check(m, &b, t, 2, &an, &fd);
		count[k]++;
		ntot++;
		if (w > worst[k]) {
			worst[k] = w;
			wan[k] = an;
			wfd[k] = fd;
			wname[k] = t->name;
		}
		nv += w <= 1;
	}
	const char *kinds[4] = {"vision", "projector", "decoder", "LoRA A/B"};
	for (int k = 0; k < 4; k++) {
		tap_ok(count[k] > 0 && worst[k] <= 1, "d logp/d theta vs finite differences: %s (%d tensors, worst ratio %.3f)",
		       kinds[k], count[k], worst[k]);
		if (worst[k] > 1)
			tap_diag("worst %s: analytic %.6g, finite difference %.6g", wname[k], wan[k], wfd[k]);
	}
	tap_ok(zero_unused, "the vision layer past the feature layer and post_layernorm get no gradient");

	/* frozen parts: same gradients where training, nothing elsewhere */
	float *full = xmalloc(m->nparams * sizeof(float));
	memcpy(full, m->grads, m->nparams * sizeof(float));
	unsigned masks[] = {VLM_PART_PROJECTOR | VLM_PART_LORA, VLM_PART_LORA, VLM_PART_DECODER,
			    VLM_PART_VISION, VLM_PART_PROJECTOR};
	for (size_t mi = 0; mi < ARRAY_LEN(masks); mi++) {
		grads_of(m, &b, masks[mi]);
		double worst_tr = 0;
		int frozen_ok = 1;
		for (int i = 0; i < m->ntensors; i++) {
			struct vlm_tensor *t = &m->tensors[i];
			long off = t->data - m->params;
			int tr = (masks[mi] & t->part) != 0;
			if (!tr && t->grad)
				frozen_ok = 0;
			for (long j = 0; j < t->numel; j++) {
				float g = m->grads[off + j];
				if (!tr && g != 0)
					frozen_ok = 0;
				if (tr) {
					double d = fabs(g - full[off + j]) / (1e-6 + 1e-4 * fabs(full[off + j]));
					if (d > worst_tr)
						worst_tr = d;
				}
			}
		}
		tap_ok(frozen_ok && worst_tr <= 1,
		       "trainable mask %u: frozen gradients untouched, trainable ones equal full training's (worst %.3g)",
		       masks[mi], worst_tr);
	}
	free(full);

	/* the gradient norm and zeroing */
	grads_of(m, &b, VLM_PART_LORA);
	double gn = vlm_grad_norm(m), want = 0;
	for (int i = 0; i < m->ntensors; i++)
		if (m->tensors[i].part == VLM_PART_LORA)
			for (long j = 0; j < m->tensors[i].numel; j++)
				want += (double)m->tensors[i].grad[j] * m->tensors[i].grad[j];
	tap_ok(fabs(gn - sqrt(want)) <= 1e-9 * sqrt(want) + 1e-12 && gn > 0, "grad norm over the trainable tensors (%g)", gn);
	vlm_zero_grad(m);
	tap_ok(vlm_grad_norm(m) == 0, "zero_grad");
	vlm_free(m);
}

static void test_lora_and_batch(void)
{
	struct vlm_config c;
	struct vlm_batch b;
	struct vlm *m = untied_model(&c, &b);
	float base[NB], lora[NB], off[NB], merged[NB], one[1];
	vlm_forward(m, &b, base, 0);
	vlm_lora_add(m, 4, 16, LORA_Q | LORA_V | LORA_O | LORA_UP | LORA_DOWN, 9);
	randomize(m, 6, ((struct vlm_impl *)m->impl)->nbase);
	vlm_forward(m, &b, lora, 0);
	m->lora.enabled = 0;
	vlm_forward(m, &b, off, 0);
	m->lora.enabled = 1;
	tap_close(off, base, NB, 1e-30f, 0, "LoRA disabled computes exactly the base model");
	double d = 0;
	for (int i = 0; i < NB; i++)
		d += fabs(lora[i] - base[i]);
	tap_ok(d > 1e-2, "LoRA enabled changes the output (sum |diff| %.3g)", d);
	long nbase = ((struct vlm_impl *)m->impl)->nbase_params;
	vlm_lora_merge(m);
	vlm_forward(m, &b, merged, 0);
	tap_close(merged, lora, NB, 1e-4f, 1e-4f, "merged weights compute the LoRA forward");
	tap_ok(m->nparams == nbase && m->lora.rank == 0 && !vlm_tensor_find(m,
		"language_model.model.layers.0.self_attn.q_proj.lora_A.weight"),
	       "merge drops the adapters");

	/* each sequence alone (no padding, its image alone) vs in the batch */
	float alone[NB];
	for (int s = 0; s < NB; s++) {
		struct vlm_batch b1 = b;
		b1.B = 1;
		b1.ids = &idp[s];
		b1.len = &lens[s];
		b1.weight = &wp[s];
		int io = image_of[s] >= 0 ? 0 : -1;
		b1.image_of = &io;
		b1.n_images = image_of[s] >= 0 ? 1 : 0;
		b1.images = images + (image_of[s] >= 0 ? image_of[s] : 0) * 3 * 16 * 16;
		vlm_forward(m, &b1, one, 0);
		alone[s] = one[0];
	}
	/* bit for bit where OpenBLAS's rows do not depend on the row count:
	 * sharded runs must equal the serial run (DESIGN sec. 6) */
	if (tensor_sgemm_row_invariant())
		tap_close(alone, merged, NB, 1e-30f, 0, "a sequence alone equals it padded in a batch, bit for bit");
	else
		tap_close(alone, merged, NB, 0, 1e-6f,
			  "a sequence alone equals it padded in a batch, to f32 rounding (this OpenBLAS core's sgemm rows depend on the row count)");
	/* the kept path computes the same numbers */
	float kept[NB];
	vlm_train_init(m, VLM_PART_DECODER);
	vlm_forward(m, &b, kept, 1);
	tap_close(kept, merged, NB, 1e-30f, 0, "keep=1 forward equals keep=0");

	/* errors */
	int bad[3] = {1, c.image_token_index, c.image_token_index};
	const int *bp = bad;
	int bl = 3, bio = 0;
	struct vlm_batch eb = {.B = 1, .ids = &bp, .len = &bl, .n_images = 1, .images = images, .image_of = &bio};
	fprintf(stderr, "(expected errors follow)\n");
	tap_ok(vlm_forward(m, &eb, one, 0) < 0, "two image tokens: error");
	bad[1] = 5;
	bad[2] = 41;
	tap_ok(vlm_forward(m, &eb, one, 0) < 0, "image without image token / id out of vocabulary: error");
	static int longseq[64];
	const int *lp = longseq;
	int ll = 64 - 15 + 1;
	longseq[1] = c.image_token_index;
	eb.ids = &lp;
	eb.len = &ll;
	tap_ok(vlm_forward(m, &eb, one, 0) < 0, "too long once the image expands: error");
	ll = 64 - 15;
	tap_ok(vlm_forward(m, &eb, one, 0) == 0, "exactly the context: fine");
	vlm_free(m);
}

/* DPO-shaped batches: sequences that agree on their first slots (image and
 * prompt) compute those rows once. Each sequence's log-prob and the summed
 * gradients must equal those of the sequences run one at a time (nothing
 * shared): the shared rows' gradients are the sum of both branches'. */
static void test_shared_prefix(void)
{
	enum { NS = 6, SL = 14 };
	struct vlm_config c;
	struct vlm_batch b0;
	struct vlm *m = untied_model(&c, &b0); /* the images */
	vlm_lora_add(m, 2, 4, LORA_ALL, 9);
	randomize(m, 6, ((struct vlm_impl *)m->impl)->nbase);
	unsigned all = VLM_PART_VISION | VLM_PART_PROJECTOR | VLM_PART_DECODER | VLM_PART_LORA;
	vlm_train_init(m, all);

	/* 0/1: a pair on image 0 (prompt 5 tokens, answers of 4 and 6);
	 * 2: the same prompt on image 1 (shares the first token only);
	 * 3: a copy of 0 (everything shared); 4: 0's prompt without the image;
	 * 5: a prefix of 1 (its rows all inside 1's) */
	static int sid[NS][SL];
	static float sw[NS][SL];
	const int *sp[NS];
	const float *swp[NS];
	int slen[NS] = {9, 11, 9, 9, 8, 7}, simg[NS] = {0, 0, 1, 0, -1, 0};
	const int prompt[5] = {1, c.image_token_index, 7, 8, 9};
	struct rng r;
	rng_seed(&r, 3, "shared", "test");
	for (int s = 0; s < NS; s++) {
		for (int t = 0; t < slen[s]; t++) {
			sid[s][t] = t < 5 ? prompt[t] : 3 + (int)rng_below(&r, c.vocab - 4);
			sw[s][t] = t >= 5 ? 1.0f : 0.0f;
		}
		sp[s] = sid[s];
		swp[s] = sw[s];
	}
	memcpy(sid[3], sid[0], sizeof sid[0]);
	memcpy(sid[5], sid[1], sizeof sid[1]);
	sid[4][1] = 5;
	struct vlm_batch b = {.B = NS, .ids = sp, .len = slen, .weight = swp, .n_images = 2,
			      .images = images, .image_of = simg};
	const float cf[NS] = {1.0f, -0.8f, 0.6f, 0.3f, -0.5f, 0.7f};

	float lp[NS], lp1[NS];
	vlm_zero_grad(m);
	if (vlm_forward(m, &b, lp, 1))
		exit(1);
	struct vlm_shape ks = ((struct vlm_impl *)m->impl)->ks;
	vlm_backward(m, cf);
	float *g = xmalloc(m->nparams * sizeof(float));
	memcpy(g, m->grads, m->nparams * sizeof(float));
	int slots = 0;
	for (int s = 0; s < NS; s++)
		slots += slen[s] + (simg[s] >= 0 ? c.img_tokens - 1 : 0);
	/* rows: 0 and 1 share 4 + 16 slots, 2 the first token, 3 and 5 all of theirs */
	int want = slots - (20 + 1 + (9 + 15) + (7 + 15) + 1);
	tap_ok(ks.NU == want, "shared prefixes computed once: %d rows for %d slots (want %d)",
	       ks.NU, slots, want);

	vlm_zero_grad(m);
	for (int s = 0; s < NS; s++) {
		int io = simg[s] >= 0 ? 0 : -1;
		struct vlm_batch b1 = {.B = 1, .ids = &sp[s], .len = &slen[s], .weight = &swp[s],
				       .n_images = io >= 0, .images = images + (io >= 0 ? simg[s] : 0) * 3 * 16 * 16,
				       .image_of = &io};
		if (vlm_forward(m, &b1, &lp1[s], 1))
			exit(1);
		vlm_backward(m, &cf[s]);
	}
	tap_close(lp, lp1, NS, 1e-30f, 0, "shared prefixes: each log-prob equals the sequence alone's, bit for bit");
	/* per tensor, against its largest gradient: the sums run in other
	 * orders. The key bias's is rounding alone (softmax ignores a constant
	 * added to every score of a row): not compared. */
	double worst = 0;
	const char *wn = "";
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (strstr(t->name, "k_proj.bias"))
			continue;
		const float *gs = g + (t->data - m->params);
		double big = 0, d = 0;
		for (long j = 0; j < t->numel; j++) {
			big = fmax(big, fabs(t->grad[j]));
			d = fmax(d, fabs(gs[j] - t->grad[j]));
		}
		if (d / (1e-7 + 1e-4 * big) > worst)
			worst = d / (1e-7 + 1e-4 * big), wn = t->name;
	}
	tap_ok(worst <= 1, "shared prefixes: gradients equal the sum of the sequences' alone (worst %.3g, %s)",
	       worst, wn);
	free(g);
	vlm_free(m);
}

static void test_tied_full(void)
{
	struct vlm_config c;
	struct vlm_batch b;
	tiny_config(&c, 1);
	make_batch(&c, &b);
	struct vlm *m = vlm_new(&c);
	randomize(m, 8, 0);
	grads_of(m, &b, VLM_PART_VISION | VLM_PART_PROJECTOR | VLM_PART_DECODER);
	const char *names[] = {
		"language_model.model.embed_tokens.weight",
		"language_model.model.layers.1.self_attn.k_proj.weight",
		"multi_modal_projector.linear_1.weight",
		"vision_tower.vision_model.encoder.layers.2.mlp.fc2.weight",
		"vision_tower.vision_model.embeddings.class_embedding",
	};
	double worst = 0, an = 0, fd = 0, a1, f1;
	const char *wn = "";
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		struct vlm_tensor *t = vlm_tensor_find(m, names[i]);
		double w = fd_check(m, &b, t, 3, &a1, &f1);
		if (w > worst)
			worst = w, an = a1, fd = f1, wn = names[i];
	}
	tap_ok(worst <= 1, "tied embeddings, MHA, feature layer -1 with CLS kept: finite differences (worst %.3f)", worst);
	if (worst > 1)
		tap_diag("%s: analytic %.6g finite difference %.6g", wn, an, fd);
	vlm_free(m);
}

/* sum(features * R): a loss on the vision features alone. */
static double feature_objective(struct vlm *m, const struct vlm_batch *b, const float *R, long n)
{
	int ni, nt;
	if (vlm_forward_features(m, b, 1))
		exit(1);
	const float *f = vlm_image_features(m, &ni, &nt);
	double s = 0;
	for (long i = 0; i < n; i++)
		s += (double)f[i] * R[i];
	return s;
}

/* vlm_backward_features (seva-sft --vision-labels): the vision tower's
 * gradients of a loss on the features, against finite differences. */
static void test_feature_gradients(void)
{
	struct vlm_config c;
	struct vlm_batch b;
	struct vlm *m = untied_model(&c, &b);
	float logp[NB];
	int ni = 0, nt = 0;
	vlm_train_init(m, VLM_PART_VISION);
	memset(m->grads, 0, m->nparams * sizeof(float));
	if (vlm_forward(m, &b, logp, 1))
		exit(1);
	const float *f = vlm_image_features(m, &ni, &nt);
	tap_ok(f && ni == 2 && nt == c.img_tokens, "features of the batch's 2 images, %d tokens each (%d, %d)",
	       c.img_tokens, ni, nt);
	long n = (long)ni * nt * c.v_hidden;
	float *full = xmalloc((size_t)n * sizeof *full);
	memcpy(full, f, (size_t)n * sizeof *full);
	if (vlm_forward_features(m, &b, 1))
		exit(1);
	f = vlm_image_features(m, &ni, &nt);
	long differ = 0;
	for (long i = 0; i < n; i++)
		differ += memcmp(&f[i], &full[i], sizeof *f) != 0;
	tap_ok(differ == 0, "the vision-only forward gives the full forward's features bit for bit (%ld differ)",
	       differ);
	free(full);
	float *R = xmalloc((size_t)n * sizeof *R);
	struct rng r;
	rng_seed(&r, 3, "features", "test");
	rng_normal_fill(&r, R, (size_t)n);
	vlm_backward_features(m, R);

	double worst = 0, wan = 0, wfd = 0;
	const char *wname = "";
	int checked = 0, others_zero = 1;
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		if (t->part != VLM_PART_VISION) {
			for (long j = 0; t->grad && j < t->numel; j++)
				others_zero &= t->grad[j] == 0;
			continue;
		}
		if (strstr(t->name, "encoder.layers.2.") || strstr(t->name, "post_layernorm"))
			continue;
		struct rng pick;
		rng_seed(&pick, 11, t->name, "pick");
		long best = -1;
		for (int tries = 0; tries < 24; tries++) {
			long j = (long)rng_below(&pick, t->numel);
			if (best < 0 || fabsf(t->grad[j]) > fabsf(t->grad[best]))
				best = j;
		}
		float save = t->data[best], eps = 3e-3f * fmaxf(1.0f, fabsf(save));
		t->data[best] = save + eps;
		double lp = feature_objective(m, &b, R, n);
		t->data[best] = save - eps;
		double lm = feature_objective(m, &b, R, n);
		t->data[best] = save;
		double fd = (lp - lm) / (2.0 * ((double)(save + eps) - save)), an = t->grad[best];
		double ratio = fabs(fd - an) / (2e-3 + 2e-2 * fabs(an));
		checked++;
		if (ratio > worst)
			worst = ratio, wan = an, wfd = fd, wname = t->name;
	}
	tap_ok(checked > 20 && worst <= 1,
	       "d sum(features * R)/d theta vs finite differences: %d vision tensors, worst ratio %.3f",
	       checked, worst);
	if (worst > 1)
		tap_diag("worst %s: analytic %.6g, finite difference %.6g", wname, wan, wfd);
	tap_ok(others_zero, "only the vision tower gets a gradient");
	float dl[NB] = {0};
	capture();
	vlm_backward(m, dl);
	captured();
	tap_ok(strstr(errbuf, "the kept forward ran the vision tower only") != NULL,
	       "vlm_backward refuses a vision-only forward");
	free(R);
	vlm_free(m);
}

/* rsLoRA's scale alpha / sqrt(r), and PEFT's lora_dropout on the adapters'
 * inputs: masks only in forwards given drop_key and kept, the same for the
 * same keys and seed, and a backward that matches finite differences of
 * the dropped forward for every tensor kind. */
static void test_lora_rslora_dropout(void)
{
	struct vlm_config c;
	struct vlm_batch b;
	struct vlm *m = untied_model(&c, &b);
	float plain[NB], rs[NB], drop[NB], again[NB], other[NB], nokey[NB], notkept[NB];
	vlm_lora_add(m, 4, 12, LORA_ALL, 9);
	randomize(m, 6, ((struct vlm_impl *)m->impl)->nbase);
	/* adapters that move the model less than random ones do: seven of them
	 * at scale 3 make it too curved for the finite differences' step */
	for (int i = ((struct vlm_impl *)m->impl)->nbase; i < m->ntensors; i++)
		for (long j = 0; j < m->tensors[i].numel; j++)
			m->tensors[i].data[j] *= 0.5f;
	vlm_forward(m, &b, plain, 0);
	/* alpha 6 over sqrt(4) is alpha 12 over 4: the same forward */
	m->lora.rslora = 1;
	m->lora.alpha = 6;
	tap_ok(vlm_lora_scale(m) == 3.0f, "rsLoRA: scale alpha/sqrt(r) = %g (want 3)",
	       vlm_lora_scale(m));
	vlm_forward(m, &b, rs, 0);
	tap_close(rs, plain, NB, 1e-30f, 0, "rsLoRA alpha 6, r 4 computes as LoRA alpha 12, r 4");

	static const uint64_t keys[NB] = { 11, 12, 13, 14 }, keys2[NB] = { 21, 22, 23, 24 };
	m->lora.dropout = 0.3f;
	m->lora.dropout_seed = 77;
	vlm_forward(m, &b, nokey, 1);
	tap_close(nokey, rs, NB, 1e-30f, 0, "dropout > 0 without drop_key: no dropout");
	b.drop_key = keys;
	vlm_forward(m, &b, notkept, 0);
	tap_close(notkept, rs, NB, 1e-30f, 0, "dropout in a forward that does not keep (evaluation): none");
	vlm_forward(m, &b, drop, 1);
	vlm_forward(m, &b, again, 1);
	tap_close(again, drop, NB, 1e-30f, 0, "the same keys and seed: the same masks, bit for bit");
	double d = 0;
	for (int i = 0; i < NB; i++)
		d += fabs(drop[i] - rs[i]);
	tap_ok(d > 1e-3, "dropout 0.3 changes the training forward (sum |diff| %.3g)", d);
	b.drop_key = keys2;
	vlm_forward(m, &b, other, 1);
	d = 0;
	for (int i = 0; i < NB; i++)
		d += fabs(other[i] - drop[i]);
	tap_ok(d > 1e-3, "other keys: other masks (sum |diff| %.3g)", d);
	m->lora.dropout_seed = 78;
	b.drop_key = keys;
	vlm_forward(m, &b, other, 1);
	d = 0;
	for (int i = 0; i < NB; i++)
		d += fabs(other[i] - drop[i]);
	tap_ok(d > 1e-3, "another step's seed: other masks (sum |diff| %.3g)", d);
	m->lora.dropout_seed = 77;
	m->lora.dropout = 0;
	vlm_forward(m, &b, other, 1);
	tap_close(other, rs, NB, 1e-30f, 0, "dropout 0 with keys: no dropout");

	/* gradients of the dropped forward, every tensor kind */
	m->lora.dropout = 0.3f;
	fd_keep = 1;
	grads_of(m, &b, VLM_PART_VISION | VLM_PART_PROJECTOR | VLM_PART_DECODER | VLM_PART_LORA);
	double worst[4] = {0}, wan[4] = {0}, wfd[4] = {0};
	int count[4] = {0};
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		if (strstr(t->name, "encoder.layers.2.") || strstr(t->name, "post_layernorm"))
			continue;
		int k = t->part == VLM_PART_VISION ? 0 : t->part == VLM_PART_PROJECTOR ? 1
			: t->part == VLM_PART_DECODER ? 2 : 3;
		double an, fd, w = fd_check(m, &b, t, 2, &an, &fd);
		count[k]++;
		if (w > worst[k]) {
			worst[k] = w;
			wan[k] = an;
			wfd[k] = fd;
		}
	}
	fd_keep = 0;
	const char *kinds[4] = {"vision", "projector", "decoder", "LoRA A/B"};
	for (int k = 0; k < 4; k++) {
		tap_ok(count[k] > 0 && worst[k] <= 1,
		       "rsLoRA + dropout 0.3: d logp/d theta vs finite differences: %s (%d tensors, "
		       "worst ratio %.3f)", kinds[k], count[k], worst[k]);
		if (worst[k] > 1)
			tap_diag("analytic %.6g, finite difference %.6g", wan[k], wfd[k]);
	}
	/* merged weights use the rsLoRA scale */
	b.drop_key = NULL;
	vlm_forward(m, &b, rs, 0);
	vlm_lora_merge(m);
	vlm_forward(m, &b, plain, 0);
	tap_close(plain, rs, NB, 1e-4f, 1e-4f, "rsLoRA merged: the weights compute the adapter's forward");
	vlm_free(m);
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init(argv[0]);
	test_layout();
	test_gradients();
	test_lora_and_batch();
	test_lora_rslora_dropout();
	test_shared_prefix();
	test_tied_full();
	test_feature_gradients();
	return tap_done();
}
