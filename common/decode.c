/* decode.c — generation with a KV cache: every prompt (image + text)
 * prefilled in one batched forward, then one token per active sequence per
 * step, the active rows batched through each matrix product (tensor's
 * matmul_forward_step, which reads each weight once per step). A sequence's
 * tokens depend only on its prompt and seed, never on the rest of the
 * batch: every per-row computation is independent of the other rows, and
 * each sequence samples from its own RNG stream. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "tensor.h"
#include "util.h"
#include "vlm.h"
#include "vlm_impl.h"

#define P(i) (m->tensors[i].data)

struct cand {
	float v;
	int i;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->v != y->v)
		return x->v < y->v ? 1 : -1;
	return x->i - y->i;
}

/* Picks the next token from LOGITS (V) and sets *LP to its log-prob under
 * the model (log-softmax of the unscaled logits). Temperature, then top-k,
 * then top-p, as Hugging Face's warpers; temperature 0 is greedy. */
static int sample(const float *logits, int V, const struct gen_settings *gs, struct rng *r,
		  struct cand *w, float *lp)
{
	float mx = logits[0];
	int best = 0;
	for (int i = 1; i < V; i++)
		if (logits[i] > mx)
			mx = logits[i], best = i;
	double z = 0;
	for (int i = 0; i < V; i++)
		z += exp((double)logits[i] - mx);
	double lse = mx + log(z);
	int tok = best;
	if (gs->temperature > 0) {
		int n = V;
		for (int i = 0; i < V; i++)
			w[i].v = logits[i], w[i].i = i;
		int topk = gs->top_k > 0 && gs->top_k < V;
		int topp = gs->top_p > 0 && gs->top_p < 1;
		if (topk || topp) {
			qsort(w, V, sizeof *w, cand_cmp);
			if (topk)
				n = gs->top_k;
		}
		/* unnormalised probabilities at the temperature, largest first if sorted */
		double sum = 0;
		for (int j = 0; j < n; j++) {
			w[j].v = (float)exp(((double)w[j].v - mx) / gs->temperature);
			sum += w[j].v;
		}
		if (topp) {
			double cum = 0;
			int keep = n;
			for (int j = 0; j < n; j++) {
				cum += w[j].v;
				if (cum >= gs->top_p * sum) {
					keep = j + 1;
					break;
				}
			}
			n = keep;
			sum = cum;
		}
		double u = rng_uniform(r) * sum, acc = 0;
		tok = w[n - 1].i;
		for (int j = 0; j < n; j++) {
			acc += w[j].v;
			if (u < acc) {
				tok = w[j].i;
				break;
			}
		}
	}
	*lp = (float)(logits[tok] - lse);
	return tok;
}

/* Scratch of one decoding step for up to B rows. */
struct step {
	float *x, *ln, *q, *k, *v, *atty, *tmp, *gate, *up, *swi, *xa, *att, *rstd, *logits;
	int *pos;
};

static float *take(float **p, size_t n)
{
	float *r = *p;
	*p += (n + 15) & ~(size_t)15;
	return r;
}

static size_t step_bind(struct step *st, float *base, const struct vlm *m, int B, int S)
{
	const struct vlm_config *c = &m->cfg;
	size_t C = c->hidden, HS = C / c->heads, QD = c->heads * HS, KVD = c->kv_heads * HS;
	size_t FF = c->inter, wide = FF > QD ? FF : QD;
	wide = wide > C ? wide : C;
	float *p = base;
	st->x = take(&p, B * C);
	st->ln = take(&p, B * C);
	st->q = take(&p, B * QD);
	st->k = take(&p, B * KVD);
	st->v = take(&p, B * KVD);
	st->atty = take(&p, B * QD);
	st->tmp = take(&p, B * wide);
	st->gate = take(&p, B * FF);
	st->up = take(&p, B * FF);
	st->swi = take(&p, B * FF);
	st->xa = take(&p, (size_t)B * (m->lora.rank > 0 ? m->lora.rank : 1));
	st->att = take(&p, (size_t)B * c->heads * S);
	st->rstd = take(&p, B);
	st->logits = take(&p, (size_t)B * c->vocab);
	st->pos = (int *)take(&p, B);
	return p - base;
}

/* One token for each of NA active sequences: TOK (NA) at slot cnt[i] of
 * cache block i; writes its k/v there and the next logits to st->logits. */
static void step_forward(struct vlm *m, struct step *st, const int *tok, int *cnt, int NA,
			 float *kc, float *vc, int B, int S)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HS = C / NH;
	int QD = NH * HS, KVD = NKV * HS, FF = c->inter;
	float *xa = m->lora.rank > 0 ? st->xa : NULL;
	embedding_forward(st->x, tok, P(im->embed), NA, C);
	for (int i = 0; i < NA; i++)
		st->pos[i] = cnt[i];
	for (int l = 0; l < c->layers; l++) {
		const int *w = im->dl + l * DL_N;
		float *kl = kc + (size_t)l * B * S * KVD, *vl = vc + (size_t)l * B * S * KVD;
		rmsnorm_forward(st->ln, st->rstd, st->x, P(w[DL_LN1]), NA, C, c->rms_eps);
		matmul_forward_step(st->q, st->ln, P(w[DL_Q]), NULL, NA, C, QD);
		vlm_lora_apply(m, l, LT_Q, st->q, st->ln, xa, st->tmp, NA);
		matmul_forward_step(st->k, st->ln, P(w[DL_K]), NULL, NA, C, KVD);
		vlm_lora_apply(m, l, LT_K, st->k, st->ln, xa, st->tmp, NA);
		matmul_forward_step(st->v, st->ln, P(w[DL_V]), NULL, NA, C, KVD);
		vlm_lora_apply(m, l, LT_V, st->v, st->ln, xa, st->tmp, NA);
		rope_forward(st->q, st->pos, NA, NH, HS, c->rope_theta);
		rope_forward(st->k, st->pos, NA, NKV, HS, c->rope_theta);
		for (int i = 0; i < NA; i++) {
			size_t at = ((size_t)i * S + cnt[i]) * KVD;
			memcpy(kl + at, st->k + (size_t)i * KVD, KVD * sizeof(float));
			memcpy(vl + at, st->v + (size_t)i * KVD, KVD * sizeof(float));
		}
		for (int i = 0; i < NA; i++)
			st->pos[i] = cnt[i] + 1; /* valid slots, the new one included */
		attention_decode(st->atty, st->att, st->q, kl, vl, st->pos, NA, S, NH, NKV, HS);
		for (int i = 0; i < NA; i++)
			st->pos[i] = cnt[i];
		/* x += o(atty) */
		matmul_forward_step(st->ln, st->atty, P(w[DL_O]), NULL, NA, QD, C);
		vlm_lora_apply(m, l, LT_O, st->ln, st->atty, xa, st->tmp, NA);
		residual_forward(st->x, st->x, st->ln, (long)NA * C);
		rmsnorm_forward(st->ln, st->rstd, st->x, P(w[DL_LN2]), NA, C, c->rms_eps);
		matmul_forward_step(st->gate, st->ln, P(w[DL_GATE]), NULL, NA, C, FF);
		vlm_lora_apply(m, l, LT_GATE, st->gate, st->ln, xa, st->tmp, NA);
		matmul_forward_step(st->up, st->ln, P(w[DL_UP]), NULL, NA, C, FF);
		vlm_lora_apply(m, l, LT_UP, st->up, st->ln, xa, st->tmp, NA);
		swiglu_forward(st->swi, st->gate, st->up, (long)NA * FF);
		matmul_forward_step(st->ln, st->swi, P(w[DL_DOWN]), NULL, NA, FF, C);
		vlm_lora_apply(m, l, LT_DOWN, st->ln, st->swi, xa, st->tmp, NA);
		residual_forward(st->x, st->x, st->ln, (long)NA * C);
	}
	rmsnorm_forward(st->ln, st->rstd, st->x, P(im->norm), NA, C, c->rms_eps);
	matmul_forward_step(st->logits, st->ln, P(im->lm_head), NULL, NA, C, c->vocab);
}

static int is_stop(const struct gen_settings *gs, int tok)
{
	for (int i = 0; i < gs->n_stop_ids; i++)
		if (gs->stop_ids[i] == tok)
			return 1;
	return 0;
}

int vlm_generate(struct vlm *m, const struct vlm_batch *prompts, const uint64_t *seeds,
		 const struct gen_settings *gs, struct gen_out *out)
{
	struct vlm_impl *im = m->impl;
	const struct vlm_config *c = &m->cfg;
	int B = prompts->B, V = c->vocab, L = c->layers;
	size_t KVD = (size_t)c->kv_heads * (c->hidden / c->heads);
	memset(out, 0, B * sizeof *out);
	if (B <= 0)
		return 0;
	int maxnew = gs->max_new_tokens > 0 ? gs->max_new_tokens : 0;
	int maxlen = 0;
	for (int b = 0; b < B; b++) {
		int n = prompts->len[b];
		if (prompts->image_of && prompts->image_of[b] >= 0)
			n += c->img_tokens - 1;
		if (n > maxlen)
			maxlen = n;
	}
	int S = maxlen + maxnew < c->max_pos ? maxlen + maxnew : c->max_pos;
	if (S < maxlen)
		S = maxlen; /* too long: the prefill says so */

	size_t kvn = 2 * (size_t)L * B * S * KVD;
	if (kvn > im->kv_cap) {
		free(im->kv);
		im->kv = xmalloc(kvn * sizeof(float));
		im->kv_cap = kvn;
	}
	float *kc = im->kv, *vc = im->kv + kvn / 2;
	struct step st;
	size_t nd = step_bind(&st, NULL, m, B, S);
	if (nd > im->dec_cap) {
		free(im->dec);
		im->dec = xmalloc(nd * sizeof(float));
		im->dec_cap = nd;
	}
	step_bind(&st, im->dec, m, B, S);

	int *cnt = xmalloc(B * sizeof(int));     /* valid cache slots of block i */
	int *seq = xmalloc(B * sizeof(int));     /* block i holds sequence seq[i] */
	int *tok = xmalloc(B * sizeof(int));
	float *tlp = xmalloc(B * sizeof(float));
	struct rng *rng = xmalloc(B * sizeof *rng);
	struct cand *work = xmalloc((size_t)B * V * sizeof *work);
	struct vlm_fwd_opts o = {.keep = 0, .kc = kc, .vc = vc, .S = S,
				 .last_logits = st.logits, .out_len = cnt};
	int rc = vlm_forward_ex(m, prompts, NULL, &o);
	if (rc < 0)
		goto done;
	for (int b = 0; b < B; b++) {
		seq[b] = b;
		rng_seed(&rng[b], seeds ? seeds[b] : 0, "", "sample");
		out[b].ids = xmalloc((maxnew + 1) * sizeof(int));
		out[b].logp = xmalloc((maxnew + 1) * sizeof(float));
	}
	int NA = maxnew > 0 ? B : 0;
	while (NA > 0) {
		/* one exp per vocabulary entry: under 16k of them a second
		 * thread costs about what it saves (tensor.c, DECODE_MACS_PER_THREAD) */
#pragma omp parallel for schedule(dynamic) if (NA > 1 && (long)NA * V >= 16384)
		for (int i = 0; i < NA; i++)
			tok[i] = sample(st.logits + (size_t)i * V, V, gs, &rng[seq[i]],
					work + (size_t)i * V, &tlp[i]);
		/* who goes on; survivors move down to keep blocks 0..NA-1 active */
		int na = 0;
		for (int i = 0; i < NA; i++) {
			struct gen_out *g = &out[seq[i]];
			if (is_stop(gs, tok[i])) {
				g->stopped = 1;
				g->stop_logp = tlp[i];
				continue;
			}
			g->ids[g->n] = tok[i];
			g->logp[g->n] = tlp[i];
			g->n++;
			if (gs->stop && gs->stop(gs->stop_ctx, seq[i], g->ids, g->n)) {
				g->stopped = 2;
				continue;
			}
			if (g->n >= maxnew || cnt[i] >= S)
				continue;
			if (na != i) {
				for (int l = 0; l < L; l++) {
					size_t lo = (size_t)l * B * S * KVD;
					memmove(kc + lo + (size_t)na * S * KVD, kc + lo + (size_t)i * S * KVD,
						cnt[i] * KVD * sizeof(float));
					memmove(vc + lo + (size_t)na * S * KVD, vc + lo + (size_t)i * S * KVD,
						cnt[i] * KVD * sizeof(float));
				}
				cnt[na] = cnt[i];
				seq[na] = seq[i];
				tok[na] = tok[i];
			}
			na++;
		}
		NA = na;
		if (NA == 0)
			break;
		step_forward(m, &st, tok, cnt, NA, kc, vc, B, S);
		for (int i = 0; i < NA; i++)
			cnt[i]++;
	}
done:
	free(cnt);
	free(seq);
	free(tok);
	free(tlp);
	free(rng);
	free(work);
	if (rc < 0)
		for (int b = 0; b < B; b++)
			gen_out_release(&out[b]);
	return rc;
}

void gen_out_release(struct gen_out *o)
{
	free(o->ids);
	free(o->logp);
	memset(o, 0, sizeof *o);
}
