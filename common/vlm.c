/* vlm.c — the model's layout (the tensor table of names.md over one flat
 * buffer), LoRA, and the training passes: a batched forward that keeps what
 * backward needs, and a backward that skips what is frozen. The parts are
 * components that the family picks (vlm_family.h): the ViT with or without
 * a class token, pre- and post-LayerNorm and patch bias; the connector by
 * its ops table; the LLaMA decoder.
 *
 * Shapes use tensor.h's letters; the vision tower's are VC (hidden), VI
 * (intermediate), VNH heads of VHS, VT = NP (+1 class token) rows per
 * image, NI distinct images, VN = NI*VT rows, FT feature rows per image
 * (the connector's input), IT image rows in the decoder (FT, or FT/r² after
 * a pixel shuffle by r), NIT = NI*IT. QD = NH*HS and KVD = NKV*HS. The
 * decoder runs B sequences of up to T slots (N = B*T): NU distinct rows,
 * a prefix that sequences share computed once (see struct fwd); only the
 * NR rows that carry a loss weight reach the lm head.
 *
 * A forward runs in phases (vlm_forward_ex): 1 batch_scan, 2 rows_share,
 * the arena, 3 rows_index, 4 vision_forward + the connector, 5
 * decoder_forward, 6 head_forward; vlm_backward goes back through 6..4. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "tensor.h"
#include "util.h"
#include "vlm.h"
#include "vlm_family.h"
#include "vlm_impl.h"

/* --- the tensor table --- */

static int tensor_add(struct vlm *m, int *cap, int part, int optional, int ndim,
		      const long *shape, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static int tensor_add(struct vlm *m, int *cap, int part, int optional, int ndim,
		      const long *shape, const char *fmt, ...)
{
	if (m->ntensors == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		m->tensors = xrealloc(m->tensors, *cap * sizeof *m->tensors);
	}
	struct vlm_tensor *t = &m->tensors[m->ntensors];
	memset(t, 0, sizeof *t);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->name, sizeof t->name, fmt, ap);
	va_end(ap);
	t->ndim = ndim;
	t->numel = 1;
	for (int i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		t->numel *= shape[i];
	}
	t->part = part;
	t->optional = optional;
	return m->ntensors++;
}

#define ADD(part, opt, shape, ...) tensor_add(m, &cap, part, opt, shape, __VA_ARGS__)
/* tensor_add's ndim/shape argument order, flipped for the macro */
#define T1(a) 1, (const long[]){a}
#define T2(a, b) 2, (const long[]){a, b}

/* Points every tensor's data (and grad, for the trainable) into the flat
 * buffers, in table order. */
static void bind_views(struct vlm *m)
{
	long off = 0;
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		t->data = m->params + off;
		t->grad = m->grads && (m->trainable & t->part) ? m->grads + off : NULL;
		off += t->numel;
	}
	struct vlm_impl *im = m->impl;
	if (m->cfg.tie_embeddings)
		im->lm_head = im->embed;
	tensor_weights_bind(m, m->params, m->nparams); /* bf16 copies follow the buffer */
}

/* The vision tower's tensors: a ViT whose embeddings differ by family
 * (CLIP: class token and pre-LayerNorm; SigLIP: a patch bias), then the
 * encoder layers and the post-LayerNorm (optional where unused: CLIP). */
static void vit_tensors(struct vlm *m, int *capp, const char *vp)
{
	struct vlm_impl *im = m->impl;
	const struct vlm_config *c = &m->cfg;
	long VC = c->v_hidden, VI = c->v_inter, P = c->patch_size;
	long NC = c->num_channels > 0 ? c->num_channels : 3;
	int cap = *capp;
	const int VIS = VLM_PART_VISION;

	im->patch = tensor_add(m, &cap, VIS, 0, 4, (const long[]){VC, NC, P, P},
			       "%sembeddings.patch_embedding.weight", vp);
	im->patch_b = c->v_patch_bias ? ADD(VIS, 0, T1(VC), "%sembeddings.patch_embedding.bias", vp) : -1;
	im->cls = c->v_cls ? ADD(VIS, 0, T1(VC), "%sembeddings.class_embedding", vp) : -1;
	im->pos = ADD(VIS, 0, T2(c->vt, VC), "%sembeddings.position_embedding.weight", vp);
	im->pre_w = c->v_pre_ln ? ADD(VIS, 0, T1(VC), "%spre_layrnorm.weight", vp) : -1;
	im->pre_b = c->v_pre_ln ? ADD(VIS, 0, T1(VC), "%spre_layrnorm.bias", vp) : -1;
	im->vl = xcalloc((size_t)c->v_layers * VL_N + 1, sizeof(int));
	for (int l = 0; l < c->v_layers; l++) {
		int *x = im->vl + l * VL_N;
		const char *lp = "encoder.layers";
		x[VL_LN1_W] = ADD(VIS, 0, T1(VC), "%s%s.%d.layer_norm1.weight", vp, lp, l);
		x[VL_LN1_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.layer_norm1.bias", vp, lp, l);
		x[VL_Q_W] = ADD(VIS, 0, T2(VC, VC), "%s%s.%d.self_attn.q_proj.weight", vp, lp, l);
		x[VL_Q_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.self_attn.q_proj.bias", vp, lp, l);
		x[VL_K_W] = ADD(VIS, 0, T2(VC, VC), "%s%s.%d.self_attn.k_proj.weight", vp, lp, l);
		x[VL_K_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.self_attn.k_proj.bias", vp, lp, l);
		x[VL_V_W] = ADD(VIS, 0, T2(VC, VC), "%s%s.%d.self_attn.v_proj.weight", vp, lp, l);
		x[VL_V_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.self_attn.v_proj.bias", vp, lp, l);
		x[VL_O_W] = ADD(VIS, 0, T2(VC, VC), "%s%s.%d.self_attn.out_proj.weight", vp, lp, l);
		x[VL_O_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.self_attn.out_proj.bias", vp, lp, l);
		x[VL_LN2_W] = ADD(VIS, 0, T1(VC), "%s%s.%d.layer_norm2.weight", vp, lp, l);
		x[VL_LN2_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.layer_norm2.bias", vp, lp, l);
		x[VL_FC1_W] = ADD(VIS, 0, T2(VI, VC), "%s%s.%d.mlp.fc1.weight", vp, lp, l);
		x[VL_FC1_B] = ADD(VIS, 0, T1(VI), "%s%s.%d.mlp.fc1.bias", vp, lp, l);
		x[VL_FC2_W] = ADD(VIS, 0, T2(VC, VI), "%s%s.%d.mlp.fc2.weight", vp, lp, l);
		x[VL_FC2_B] = ADD(VIS, 0, T1(VC), "%s%s.%d.mlp.fc2.bias", vp, lp, l);
	}
	int opt = !c->v_post_ln; /* CLIP's is in the file but LLaVA never runs it */
	im->post_w = ADD(VIS, opt, T1(VC), "%spost_layernorm.weight", vp);
	im->post_b = ADD(VIS, opt, T1(VC), "%spost_layernorm.bias", vp);
	*capp = cap;
}

/* A connector: vision features (NI*FT, VC) → decoder rows (NI*IT, C). */
struct connector_ops {
	/* Adds the connector's tensors to the table, named NAMES in its order. */
	void (*tensors)(struct vlm *m, int *cap, const char *const *names);
	/* Floats of its saved activations (cx) and of its backward scratch. */
	size_t (*acts)(const struct vlm_config *c, int NI);
	size_t (*scratch)(const struct vlm_config *c, int NI);
	/* img (NI*IT, C) from feat (NI*FT, VC); writes cx. */
	void (*forward)(struct vlm *m, float *img, float *cx, const float *feat, int NI);
	/* Accumulates the connector's gradients and, unless DFEAT is NULL,
	 * dfeat (NI*FT, VC), from dimg (NI*IT, C); ds is scratch. */
	void (*backward)(struct vlm *m, float *dfeat, float *ds, const float *dimg, const float *cx,
			 const float *feat, int NI);
	/* The one product that reads the features (their values, regrouped
	 * or not): ROWS per image of (C) into (OC). */
	void (*feat_product)(const struct vlm_config *c, int *rows, int *C, int *OC);
};

static const struct connector_ops *connector_of(const struct vlm_config *c);

/* The LLaMA decoder: embeddings, layers, final norm, and the lm head
 * unless it is tied to the embeddings. */
static void decoder_tensors(struct vlm *m, int *capp, const char *dp, const char *head)
{
	struct vlm_impl *im = m->impl;
	const struct vlm_config *c = &m->cfg;
	long C = c->hidden, FF = c->inter, V = c->vocab, HS = c->hidden / c->heads;
	long QD = c->heads * HS, KVD = c->kv_heads * HS;
	int cap = *capp;
	const int DEC = VLM_PART_DECODER;

	im->embed = ADD(DEC, 0, T2(V, C), "%sembed_tokens.weight", dp);
	im->dl = xcalloc((size_t)c->layers * DL_N + 1, sizeof(int));
	for (int l = 0; l < c->layers; l++) {
		int *x = im->dl + l * DL_N;
		x[DL_LN1] = ADD(DEC, 0, T1(C), "%slayers.%d.input_layernorm.weight", dp, l);
		x[DL_Q] = ADD(DEC, 0, T2(QD, C), "%slayers.%d.self_attn.q_proj.weight", dp, l);
		x[DL_K] = ADD(DEC, 0, T2(KVD, C), "%slayers.%d.self_attn.k_proj.weight", dp, l);
		x[DL_V] = ADD(DEC, 0, T2(KVD, C), "%slayers.%d.self_attn.v_proj.weight", dp, l);
		x[DL_O] = ADD(DEC, 0, T2(C, QD), "%slayers.%d.self_attn.o_proj.weight", dp, l);
		x[DL_LN2] = ADD(DEC, 0, T1(C), "%slayers.%d.post_attention_layernorm.weight", dp, l);
		x[DL_GATE] = ADD(DEC, 0, T2(FF, C), "%slayers.%d.mlp.gate_proj.weight", dp, l);
		x[DL_UP] = ADD(DEC, 0, T2(FF, C), "%slayers.%d.mlp.up_proj.weight", dp, l);
		x[DL_DOWN] = ADD(DEC, 0, T2(C, FF), "%slayers.%d.mlp.down_proj.weight", dp, l);
	}
	im->norm = ADD(DEC, 0, T1(C), "%snorm.weight", dp);
	if (!c->tie_embeddings)
		im->lm_head = ADD(DEC, 0, T2(V, C), "%s", head);
	*capp = cap;
}

/* Idefics3VisionEmbeddings' position ids for an image of whole patches,
 * GW a side: each patch's fractional coordinate i * (1/GW) in float, below
 * 1 - 1e-6, bucketized (right) against arange(1/GW, 1, 1/GW) as torch's
 * CPU kernel computes it: in blocks of two 8-lane vectors, each lane its
 * vector's first value (in double, rounded to float) plus lane * step in
 * double; the tail one by one in double (checked against torch 2.13 for
 * every GW below 2000). For most GW the bucket is the index; for some (19,
 * 25, ...) rounding puts a patch in its neighbour's bucket, and
 * transformers runs it so. */
static void frac_positions(int *vpos, int GW)
{
	double st = 1.0 / GW;
	int nb = (int)ceil((1.0 - st) / st); /* torch.arange's length */
	float *bd = xmalloc((size_t)(nb + 1) * sizeof(float));
	int body = nb / 16 * 16;
	for (int k = 0; k < nb; k++)
		bd[k] = k < body ? (float)((double)(float)(st + st * (k - k % 8)) + (k % 8) * st)
				 : (float)(st + st * k);
	float step = 1.0f / (float)GW, top = 1.0f - 1e-6f;
	int *bucket = xmalloc((size_t)GW * sizeof(int));
	for (int i = 0; i < GW; i++) {
		float x = (float)i * step;
		if (x > top)
			x = top;
		int b = 0;
		while (b < nb && bd[b] <= x)
			b++;
		bucket[i] = b;
	}
	for (int y = 0; y < GW; y++)
		for (int x = 0; x < GW; x++)
			vpos[y * GW + x] = bucket[y] * GW + bucket[x];
	free(bd);
	free(bucket);
}

struct vlm *vlm_new(const struct vlm_config *cfg)
{
	struct vlm *m = xcalloc(1, sizeof *m);
	struct vlm_impl *im = xcalloc(1, sizeof *im);
	m->cfg = *cfg;
	m->cfg.family = vlm_family_of(cfg);
	m->impl = im;
	const struct vlm_config *c = &m->cfg;
	const struct vlm_family *fam = c->family;
	int cap = 0;

	/* vision tower, connector, decoder: table order is the flat buffer's */
	vit_tensors(m, &cap, fam->vision_prefix);
	connector_of(c)->tensors(m, &cap, fam->connector_names);
	decoder_tensors(m, &cap, fam->decoder_prefix, fam->head_name);

	im->nbase = m->ntensors;
	for (int i = 0; i < m->ntensors; i++)
		m->nparams += m->tensors[i].numel;
	im->nbase_params = m->nparams;
	im->la = xmalloc(((size_t)c->layers * LT_N + 1) * sizeof(int));
	for (int i = 0; i < c->layers * LT_N; i++)
		im->la[i] = -1;
	m->params = xcalloc(m->nparams, sizeof(float));
	bind_views(m);
	preprocess_defaults(&m->pre, c->image_size);
	im->vpos = xmalloc(((size_t)c->vt + 1) * sizeof(int));
	for (int t = 0; t < c->vt; t++)
		im->vpos[t] = t;
	if (c->v_frac_pos)
		frac_positions(im->vpos + (c->v_cls ? 1 : 0), c->image_size / c->patch_size);
	return m;
}

void vlm_free(struct vlm *m)
{
	if (!m)
		return;
	tensor_weights_bind(m, NULL, 0);
	struct vlm_impl *im = m->impl;
	if (im) {
		free(im->vl);
		free(im->vpos);
		free(im->dl);
		free(im->la);
		for (int i = 0; i < 2; i++) {
			free(im->acts[i]);
			free(im->iacts[i]);
		}
		free(im->dacts);
		free(im->mmx);
		free(im->dkey);
		free(im->drop);
		free(im->kv);
		free(im->dec);
		free(im);
	}
	free(m->dir);
	free(m->params);
	free(m->grads);
	free(m->tensors);
	free(m);
}

struct vlm_tensor *vlm_tensor_find(struct vlm *m, const char *name)
{
	for (int i = 0; i < m->ntensors; i++)
		if (!strcmp(m->tensors[i].name, name))
			return &m->tensors[i];
	return NULL;
}

/* The decoder and projector start as LLaMA's do (0.02); the vision tower
 * as transformers' CLIP does (_init_weights, factor 1), whose larger output
 * and MLP weights let a tower trained from scratch start learning shapes. */
static double init_std(const struct vlm *m, const struct vlm_tensor *t)
{
	double d = m->cfg.v_hidden, l = m->cfg.v_layers;
	const char *name = t->name;
	if (t->part != VLM_PART_VISION)
		return 0.02;
	if (strstr(name, "class_embedding"))
		return 1 / sqrt(d);
	if (strstr(name, "_proj.weight"))
		return strstr(name, "out_proj") ? 1 / sqrt(d) : 1 / sqrt(d) / sqrt(2 * l);
	if (strstr(name, "fc1.weight"))
		return 1 / sqrt(2 * d);
	if (strstr(name, "fc2.weight"))
		return 1 / sqrt(d) / sqrt(2 * l);
	return 0.02; /* patch and position embeddings */
}

void vlm_init_random(struct vlm *m, uint64_t seed)
{
	struct vlm_impl *im = m->impl;
#pragma omp parallel for schedule(dynamic)
	for (int i = 0; i < im->nbase; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		size_t n = strlen(t->name);
		int bias = n > 5 && !strcmp(t->name + n - 5, ".bias");
		if (bias) {
			memset(t->data, 0, t->numel * sizeof(float));
		} else if (strstr(t->name, "norm")) {
			for (long j = 0; j < t->numel; j++)
				t->data[j] = 1;
		} else {
			/* a stream per tensor: the values do not depend on the table order */
			struct rng r;
			double std = init_std(m, t);
			rng_seed(&r, seed, t->name, "init");
			for (long j = 0; j < t->numel; j++)
				t->data[j] = (float)(std * rng_normal(&r));
		}
	}
}

/* --- LoRA --- */

static void lora_dims(const struct vlm_config *c, int lt, long *in, long *out)
{
	long HS = c->hidden / c->heads, QD = c->heads * HS, KVD = c->kv_heads * HS;
	switch (lt) {
	case LT_Q: *in = c->hidden; *out = QD; break;
	case LT_K:
	case LT_V: *in = c->hidden; *out = KVD; break;
	case LT_O: *in = QD; *out = c->hidden; break;
	case LT_GATE:
	case LT_UP: *in = c->hidden; *out = c->inter; break;
	default: *in = c->inter; *out = c->hidden; break;
	}
}

/* The decoder weight each LoRA slot adapts. */
static const int lt_dl[LT_N] = { DL_Q, DL_K, DL_V, DL_O, DL_GATE, DL_UP, DL_DOWN };

static const char *const lora_module[LT_N] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

/* Resizes the flat buffers to NPARAMS floats, keeping each tensor's values
 * (the first NKEEP tensors: their offsets do not move). */
static void resize_params(struct vlm *m, long nparams)
{
	m->params = xrealloc(m->params, nparams * sizeof(float));
	if (nparams > m->nparams)
		memset(m->params + m->nparams, 0, (nparams - m->nparams) * sizeof(float));
	if (m->grads) {
		m->grads = xrealloc(m->grads, nparams * sizeof(float));
		if (nparams > m->nparams)
			memset(m->grads + m->nparams, 0, (nparams - m->nparams) * sizeof(float));
	}
	m->nparams = nparams;
	bind_views(m);
}

static void lora_drop(struct vlm *m)
{
	struct vlm_impl *im = m->impl;
	m->ntensors = im->nbase;
	for (int i = 0; i < m->cfg.layers * LT_N; i++)
		im->la[i] = -1;
	resize_params(m, im->nbase_params);
	memset(&m->lora, 0, sizeof m->lora);
}

void vlm_lora_add(struct vlm *m, int rank, float alpha, unsigned targets, uint64_t seed)
{
	struct vlm_impl *im = m->impl;
	if (m->lora.rank > 0)
		lora_drop(m);
	int cap = m->ntensors;
	long n = m->nparams;
	for (int l = 0; l < m->cfg.layers; l++)
		for (int lt = 0; lt < LT_N; lt++) {
			if (!(targets & (1u << lt)))
				continue;
			long in, out;
			lora_dims(&m->cfg, lt, &in, &out);
			const char *dp = m->cfg.family->decoder_prefix;
			im->la[l * LT_N + lt] = tensor_add(m, &cap, VLM_PART_LORA, 0, T2(rank, in),
							   "%slayers.%d.%s.lora_A.weight", dp, l, lora_module[lt]);
			tensor_add(m, &cap, VLM_PART_LORA, 0, T2(out, rank),
				   "%slayers.%d.%s.lora_B.weight", dp, l, lora_module[lt]);
			n += rank * in + out * rank;
		}
	resize_params(m, n);
	m->lora.rank = rank;
	m->lora.alpha = alpha;
	m->lora.targets = targets & LORA_ALL;
	m->lora.enabled = 1;
	/* A ~ U(-1/sqrt(in), 1/sqrt(in)): kaiming_uniform(a=sqrt(5)) as PEFT; B = 0 */
	for (int i = im->nbase; i < m->ntensors; i += 2) {
		struct vlm_tensor *a = &m->tensors[i];
		struct rng r;
		rng_seed(&r, seed, a->name, "init");
		double bound = 1 / sqrt((double)a->shape[1]);
		for (long j = 0; j < a->numel; j++)
			a->data[j] = (float)rng_range(&r, -bound, bound);
	}
}

float vlm_lora_scale(const struct vlm *m)
{
	if (m->lora.rank <= 0)
		return 0;
	return (float)(m->lora.rslora ? m->lora.alpha / sqrt((double)m->lora.rank)
				      : (double)m->lora.alpha / m->lora.rank);
}

void vlm_lora_merge(struct vlm *m)
{
	struct vlm_impl *im = m->impl;
	if (m->lora.rank <= 0)
		return;
	float s = vlm_lora_scale(m);
	for (int l = 0; l < m->cfg.layers; l++)
		for (int lt = 0; lt < LT_N; lt++) {
			int ia = im->la[l * LT_N + lt];
			if (ia < 0)
				continue;
			const struct vlm_tensor *A = &m->tensors[ia], *B = &m->tensors[ia + 1];
			struct vlm_tensor *W = &m->tensors[im->dl[l * DL_N + lt_dl[lt]]];
			long r = A->shape[0], in = A->shape[1], out = B->shape[0];
			float *at = xmalloc(in * r * sizeof(float));   /* (in, r) = Aᵀ */
			float *ba = xmalloc(out * in * sizeof(float)); /* (out, in) = B·A */
			for (long i = 0; i < r; i++)
				for (long j = 0; j < in; j++)
					at[j * r + i] = A->data[i * in + j];
			matmul_forward(ba, B->data, at, NULL, out, r, in);
			for (long j = 0; j < out * in; j++)
				W->data[j] += s * ba[j];
			free(at);
			free(ba);
		}
	lora_drop(m);
}

/* --- training state --- */

void vlm_train_init(struct vlm *m, unsigned trainable)
{
	m->trainable = trainable;
	if (!m->grads)
		m->grads = xcalloc(m->nparams, sizeof(float));
	bind_views(m);
}

void vlm_zero_grad(struct vlm *m)
{
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		if (t->grad)
			memset(t->grad, 0, t->numel * sizeof(float));
	}
}

double vlm_grad_norm(struct vlm *m)
{
	double s = 0;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (!t->grad)
			continue;
		double ts = 0;
#pragma omp parallel for reduction(+ : ts) if (t->numel > 65536)
		for (long j = 0; j < t->numel; j++)
			ts += (double)t->grad[j] * t->grad[j];
		s += ts;
	}
	return sqrt(s);
}

/* --- activations --- */


/* One ViT layer's saved activations, each (VN, VC) unless named: m1, r1,
 * m2, r2 (VN); att (NI, VNH, VT, VT); fc1, act (VN, VI). */
struct vlay {
	float *ln1, *m1, *r1, *q, *k, *v, *att, *atty, *mid, *ln2, *m2, *r2, *fc1, *act;
};
/* One LLaMA layer's saved activations: ln1, mid, ln2 (NU, C); r1, r2 (NU);
 * q (N, QD), k, v (N, KVD) over the padded slots; att (B, NH, T, T); atty
 * (NU, QD); gate, up, swi (NU, FF); xa[lt] (NU, r) LoRA's x·Aᵀ. */
struct dlay {
	float *ln1, *r1, *q, *k, *v, *att, *atty, *mid, *ln2, *r2, *gate, *up, *swi;
	float *xa[LT_N];
};
/* The decoder works on NU distinct rows: a prefix (image and prompt) that
 * sequences share is computed once (chosen and rejected of a DPO pair), and
 * padding not at all. Only attention sees the padded (B, T) slots: q, k, v
 * are gathered into them (q, k, v of dlay) and its output scattered back
 * from each row's first slot (its owner); in backward the slots' dk, dv
 * (and dq) are summed back onto the rows. urow[slot] is the row of a slot
 * (-1: padding); the slots of row u are uslot[ustart[u] .. ustart[u+1]),
 * its owner first.
 * The last layer computes k and v for every row but q, the attention output,
 * o and the MLP only for the NQ rows the head reads: hrow[i] is the i-th of
 * them (hpos its position), hidx[u] = i (-1: not read), and its output and
 * grow index them. */
/* Everything else of a forward, and the layer blocks' bases. */
struct fwd {
	/* vision tower: patches (NI*NP, NC*P*P), pe (NI*NP, VC) patch
	 * embeddings, vemb (VN, VC) with positions, vpm, vpr (VN) its
	 * pre-LayerNorm's mean and 1/std, vres (nvres, VN, VC) residual
	 * stream, fsel (NI*FT, VC) the selected rows before the post-LayerNorm
	 * (vfm, vfr (NI*FT) its statistics), feat (NI*FT, VC) the features */
	float *patches, *pe, *vemb, *vpm, *vpr, *vres, *fsel, *vfm, *vfr, *feat;
	/* connector: cx its saved activations (connector_ops.acts floats),
	 * img (NIT, C) the image rows of the decoder */
	float *cx, *img;
	/* decoder: res (ndres, NU, C) residual stream, tmp (NU, max(C, QD, FF))
	 * scratch, uq (NU, QD), uk, uv (NU, KVD) per row, patt (N, QD) the
	 * attention output over slots, hx (NR, C) the last layer's query
	 * input; head: xg, xn (NR, C) its rows before and after the final norm
	 * (hr (NR) 1/rms), logits (NR, V), lp, gw (NR) log-probs and weights */
	float *res, *tmp, *uq, *uk, *uv, *patt, *hx, *xg, *xn, *hr, *logits, *lp, *gw;
	float *vbase, *dbase;
	size_t vstride, dstride;
	int *urow, *ustart, *uslot, *pos, *len2, *rowid, *imgrow, *grow, *gtgt, *gb, *vlen, *ilist;
	int *hrow, *hidx, *hpos;
};

/* Bump allocation over BASE (NULL: only count). Each view starts on a
 * 64-byte boundary. */
struct bump {
	float *base;
	size_t off;
};
static float *take(struct bump *b, size_t n)
{
	float *p = b->base ? b->base + b->off : NULL;
	b->off += (n + 15) & ~(size_t)15;
	return p;
}
_Static_assert(sizeof(int) == sizeof(float), "int views share the float arenas' slots");
static int *takei(struct bump *b, size_t n)
{
	int *p = b->base ? (int *)b->base + b->off : NULL;
	b->off += (n + 15) & ~(size_t)15;
	return p;
}

static size_t vlay_bind(struct vlay *v, float *base, const struct vlm_config *c, const struct vlm_shape *s)
{
	struct bump b = {base, 0};
	size_t VN = s->VN, VC = c->v_hidden;
	v->ln1 = take(&b, VN * VC);
	v->m1 = take(&b, VN);
	v->r1 = take(&b, VN);
	v->q = take(&b, VN * VC);
	v->k = take(&b, VN * VC);
	v->v = take(&b, VN * VC);
	v->att = take(&b, (size_t)s->NI * c->v_heads * s->VT * s->VT);
	v->atty = take(&b, VN * VC);
	v->mid = take(&b, VN * VC);
	v->ln2 = take(&b, VN * VC);
	v->m2 = take(&b, VN);
	v->r2 = take(&b, VN);
	v->fc1 = take(&b, VN * c->v_inter);
	v->act = take(&b, VN * c->v_inter);
	return b.off;
}

static size_t dlay_bind(struct dlay *d, float *base, const struct vlm *m, const struct vlm_shape *s)
{
	const struct vlm_config *c = &m->cfg;
	struct bump b = {base, 0};
	size_t N = s->N, NU = s->NU, C = c->hidden, HS = c->hidden / c->heads;
	size_t QD = c->heads * HS, KVD = c->kv_heads * HS;
	d->ln1 = take(&b, NU * C);
	d->r1 = take(&b, NU);
	d->q = take(&b, N * QD);
	d->k = take(&b, N * KVD);
	d->v = take(&b, N * KVD);
	d->att = take(&b, (size_t)s->B * c->heads * s->T * s->T);
	d->atty = take(&b, NU * QD);
	d->mid = take(&b, NU * C);
	d->ln2 = take(&b, NU * C);
	d->r2 = take(&b, NU);
	d->gate = take(&b, NU * c->inter);
	d->up = take(&b, NU * c->inter);
	d->swi = take(&b, NU * c->inter);
	for (int lt = 0; lt < LT_N; lt++)
		d->xa[lt] = s->r && (m->lora.targets & (1u << lt)) ? take(&b, NU * s->r) : NULL;
	return b.off;
}

/* Lays out the whole forward arena; returns floats needed. */
static size_t fwd_bind(struct fwd *f, float *base, int *ibase, const struct vlm *m,
		       const struct vlm_shape *s, size_t *ints)
{
	const struct vlm_config *c = &m->cfg;
	struct bump b = {base, 0};
	size_t VC = c->v_hidden, C = c->hidden, NC = c->num_channels > 0 ? c->num_channels : 3;
	size_t NP = c->np, PP = (size_t)c->patch_size * c->patch_size;
	size_t HS = c->hidden / c->heads, QD = c->heads * HS, KVD = c->kv_heads * HS;
	size_t NIT = (size_t)s->NI * s->IT, NU = s->NU;
	f->patches = take(&b, s->NI * NP * NC * PP);
	f->pe = take(&b, s->NI * NP * VC);
	f->vemb = take(&b, s->VN * VC);
	f->vpm = take(&b, s->VN);
	f->vpr = take(&b, s->VN);
	f->vres = take(&b, (size_t)s->nvres * s->VN * VC);
	size_t NFT = (size_t)s->NI * s->FT, post = c->v_post_ln;
	f->fsel = take(&b, post ? NFT * VC : 0);
	f->vfm = take(&b, post ? NFT : 0);
	f->vfr = take(&b, post ? NFT : 0);
	f->feat = take(&b, NFT * VC);
	f->cx = take(&b, connector_of(c)->acts(c, s->NI));
	f->img = take(&b, NIT * C);
	f->res = take(&b, (size_t)s->ndres * NU * C);
	size_t wide = C > QD ? C : QD;
	if ((size_t)c->inter > wide)
		wide = c->inter;
	f->tmp = take(&b, NU * wide);
	f->uq = take(&b, NU * QD);
	f->uk = take(&b, NU * KVD);
	f->uv = take(&b, NU * KVD);
	f->patt = take(&b, s->N * QD);
	f->hx = take(&b, (size_t)s->NR * C);
	f->xg = take(&b, (size_t)s->NR * C);
	f->xn = take(&b, (size_t)s->NR * C);
	f->hr = take(&b, s->NR);
	f->logits = take(&b, (size_t)s->NR * c->vocab);
	f->lp = take(&b, s->NR);
	f->gw = take(&b, s->NR);
	struct vlay vl;
	struct dlay dl;
	f->vstride = (vlay_bind(&vl, NULL, c, s) + 15) & ~(size_t)15;
	f->dstride = (dlay_bind(&dl, NULL, m, s) + 15) & ~(size_t)15;
	f->vbase = take(&b, f->vstride * s->nv);
	f->dbase = take(&b, f->dstride * s->nd);

	struct bump bi = {(float *)ibase, 0};
	f->urow = takei(&bi, s->N);
	f->ustart = takei(&bi, NU + 1);
	f->uslot = takei(&bi, s->N);
	f->pos = takei(&bi, NU);
	f->len2 = takei(&bi, s->B);
	f->rowid = takei(&bi, NU);
	f->imgrow = takei(&bi, NU);
	f->grow = takei(&bi, s->NR);
	f->gtgt = takei(&bi, s->NR);
	f->gb = takei(&bi, s->NR);
	f->vlen = takei(&bi, s->NI);
	f->ilist = takei(&bi, s->NI);
	f->hrow = takei(&bi, NU);
	f->hidx = takei(&bi, NU);
	f->hpos = takei(&bi, NU);
	*ints = bi.off;
	return b.off;
}

static struct vlay vlay_at(const struct fwd *f, const struct vlm *m, const struct vlm_shape *s, int l)
{
	struct vlay v;
	vlay_bind(&v, f->vbase + (s->nv > 1 ? (size_t)l : 0) * f->vstride, &m->cfg, s);
	return v;
}
static struct dlay dlay_at(const struct fwd *f, const struct vlm *m, const struct vlm_shape *s, int l)
{
	struct dlay d;
	dlay_bind(&d, f->dbase + (s->nd > 1 ? (size_t)l : 0) * f->dstride, m, s);
	return d;
}
static float *vres_at(const struct fwd *f, const struct vlm *m, const struct vlm_shape *s, int i)
{
	return f->vres + (size_t)(s->nvres > 2 ? i : (i & 1)) * s->VN * m->cfg.v_hidden;
}
static float *res_at(const struct fwd *f, const struct vlm *m, const struct vlm_shape *s, int i)
{
	return f->res + (size_t)(s->ndres > 2 ? i : (i & 1)) * s->NU * m->cfg.hidden;
}

/* --- activations of the MLPs --- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static void act_forward(enum act a, float *out, const float *inp, long n)
{
	switch (a) {
	case ACT_GELU: gelu_forward(out, inp, n); break;
	case ACT_QUICK_GELU: quick_gelu_forward(out, inp, n); break;
	case ACT_SILU:
#pragma omp parallel for if (n > 65536)
		for (long i = 0; i < n; i++)
			out[i] = inp[i] / (1 + expf(-inp[i]));
		break;
	case ACT_GELU_TANH: /* PyTorch's gelu(approximate="tanh"), SigLIP's */
#pragma omp parallel for if (n > 65536)
		for (long i = 0; i < n; i++) {
			float x = inp[i];
			out[i] = 0.5f * x * (1 + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
		}
		break;
	}
}

static void act_backward(enum act a, float *dinp, const float *inp, const float *dout, long n)
{
	switch (a) {
	case ACT_GELU: gelu_backward(dinp, inp, dout, n); break;
	case ACT_QUICK_GELU: quick_gelu_backward(dinp, inp, dout, n); break;
	case ACT_SILU:
#pragma omp parallel for if (n > 65536)
		for (long i = 0; i < n; i++) {
			float sg = 1 / (1 + expf(-inp[i]));
			dinp[i] += dout[i] * sg * (1 + inp[i] * (1 - sg));
		}
		break;
	case ACT_GELU_TANH:
#pragma omp parallel for if (n > 65536)
		for (long i = 0; i < n; i++) {
			float x = inp[i], u = GELU_K * (x + 0.044715f * x * x * x), th = tanhf(u);
			float du = GELU_K * (1 + 3 * 0.044715f * x * x);
			dinp[i] += dout[i] * (0.5f * (1 + th) + 0.5f * x * (1 - th * th) * du);
		}
		break;
	}
}

/* --- forward --- */

#define P(i) (m->tensors[i].data)
#define G(i) (m->tensors[i].grad)
/* the same for a tensor the part may not have (index -1) */
#define PO(i) ((i) >= 0 ? P(i) : NULL)
#define GO(i) ((i) >= 0 ? G(i) : NULL)

static size_t grow_arena(float **p, size_t *cap, size_t n);

/* out (N,OC) = inp (N,C) . w^T + bias for the forward passes, where a row's
 * result must not depend on the rest of the batch (DESIGN sec. 6: sharded
 * runs equal the serial run byte for byte). OpenBLAS does not promise it:
 * sgemv for one row, its small-matrix kernels, and matmul_forward's column
 * slicing below 32 rows a thread sum in other orders. So small or thin
 * weights (C*OC < 16384, or a side of 64 or less: test-sized models, LoRA)
 * go through matmul_forward_rowwise's fixed-order product, and the others through
 * sgemm on at least 64 rows (padded), where OpenBLAS's blocked kernels sum
 * every row alike whatever the row count (checked on this machine for the
 * shapes of the bench configs; test_vlm checks the whole forward). */
static int mm_rowwise(int C, int OC)
{
	return (long)C * OC < 16384 || C <= 64 || OC <= 64;
}

static void mm_fwd(struct vlm *m, float *out, const float *inp, const float *w, const float *bias,
		   int N, int C, int OC)
{
	struct vlm_impl *im = m->impl;
	if (N <= 0)
		return;
	if (mm_rowwise(C, OC)) {
		matmul_forward_rowwise(out, inp, w, bias, N, C, OC);
		return;
	}
	if (N >= 64) {
		matmul_forward(out, inp, w, bias, N, C, OC);
		return;
	}
	grow_arena(&im->mmx, &im->mmx_cap, 64 * ((size_t)C + OC));
	float *x = im->mmx, *y = im->mmx + 64 * (size_t)C;
	memcpy(x, inp, (size_t)N * C * sizeof(float));
	memset(x + (size_t)N * C, 0, (size_t)(64 - N) * C * sizeof(float));
	matmul_forward(y, x, w, bias, 64, C, OC);
	memcpy(out, y, (size_t)N * OC * sizeof(float));
}

/* splitmix64's finaliser: the mixing of LoRA dropout's keys. */
static uint64_t drop_mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* LoRA dropout's mask on the input X (N, in) of adapter (L, LT), whose row
 * i is decoder row SEL[i] (SEL NULL: i): element j of a row with key K is
 * dropped when the 53-bit uniform of drop_mix(drop_mix(K + slot) + j) is
 * below p. OUT = X ⊙ mask / (1 - p); with DY (the gradient of OUT), OUT =
 * DY ⊙ mask / (1 - p) instead. A pure function of the keys: the backward
 * redraws the forward's mask, and threads do not change it. */
static void lora_dropout(const struct vlm *m, int l, int lt, float *out, const float *x,
			 const int *sel, int N, int in)
{
	const struct vlm_impl *im = m->impl;
	double p = m->lora.dropout;
	float keep = (float)(1 / (1 - p));
	uint64_t slot = (uint64_t)(l * LT_N + lt + 1) * 0x632be59bd9b4e019ull;
#pragma omp parallel for
	for (int i = 0; i < N; i++) {
		uint64_t h = drop_mix(im->dkey[sel ? sel[i] : i] + slot);
		const float *xi = x + (size_t)i * in;
		float *oi = out + (size_t)i * in;
		for (int j = 0; j < in; j++)
			oi[j] = (double)(drop_mix(h + (uint64_t)j) >> 11) * 0x1p-53 < p ? 0.0f
											 : xi[j] * keep;
	}
}

/* The LoRA term of projection (L, LT) on X (N, in): y += s·(drop(x)·Aᵀ)·Bᵀ,
 * xa (N, r) = s·drop(x)·Aᵀ kept for backward; drop() with DROP (the rows
 * are SEL's, see lora_dropout), else the identity. */
static void lora_forward(struct vlm *m, int l, int lt, float *y, const float *x, float *xa,
			 float *tmp, int N, int drop, const int *sel)
{
	struct vlm_impl *im = m->impl;
	int ia = im->la[l * LT_N + lt];
	if (ia < 0 || !m->lora.enabled || !xa)
		return;
	const struct vlm_tensor *A = &m->tensors[ia], *B = &m->tensors[ia + 1];
	int r = A->shape[0], in = A->shape[1], out = B->shape[0];
	float s = vlm_lora_scale(m);
	if (drop) {
		grow_arena(&im->drop, &im->drop_cap, 2 * (size_t)N * in);
		lora_dropout(m, l, lt, im->drop, x, sel, N, in);
		x = im->drop;
	}
	mm_fwd(m, xa, x, A->data, NULL, N, in, r);
	for (long i = 0; i < (long)N * r; i++)
		xa[i] *= s;
	mm_fwd(m, tmp, xa, B->data, NULL, N, r, out);
	residual_forward(y, y, tmp, (long)N * out);
}

void vlm_lora_apply(struct vlm *m, int l, int lt, float *y, const float *x, float *xa,
		    float *tmp, int N)
{
	lora_forward(m, l, lt, y, x, xa, tmp, N, 0, NULL);
}

/* The ViT over NI images (NI, NC, S, S) → f->feat (NI*FT, VC): patch
 * embedding (+ bias), the class token (CLIP), positions, pre-LayerNorm
 * (CLIP), v_used encoder layers, the FT selected rows (the class token
 * dropped or kept), post-LayerNorm (SigLIP). */
static void vision_forward(struct vlm *m, const struct fwd *f, const struct vlm_shape *s,
			   const float *images)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int VC = c->v_hidden, VI = c->v_inter, VNH = c->v_heads, VHS = VC / VNH;
	int P = c->patch_size, S = c->image_size, GW = S / P, NP = c->np;
	int NC = c->num_channels > 0 ? c->num_channels : 3, CPP = NC * P * P;
	int NI = s->NI, VT = s->VT, VN = s->VN, FT = s->FT, ncls = c->v_cls ? 1 : 0;

	/* patches (NI*NP, NC*P*P) in (c, py, px) order: the conv weight's layout */
#pragma omp parallel for collapse(2)
	for (int i = 0; i < NI; i++)
		for (int p = 0; p < NP; p++) {
			const float *img = images + (size_t)f->ilist[i] * NC * S * S;
			float *dst = f->patches + ((size_t)i * NP + p) * CPP;
			int gy = p / GW, gx = p % GW;
			for (int ch = 0; ch < NC; ch++)
				for (int y = 0; y < P; y++)
					memcpy(dst + (ch * P + y) * P,
					       img + ((size_t)ch * S + gy * P + y) * S + gx * P,
					       P * sizeof(float));
		}
	/* pe (NI*NP, VC) = patches · Wᵀ (+ b): the stride-P convolution */
	mm_fwd(m, f->pe, f->patches, P(im->patch), PO(im->patch_b), NI * NP, CPP, VC);
	/* vemb (VN, VC): [class token,] patches, each plus its position */
	const float *pos = P(im->pos), *cls = PO(im->cls);
#pragma omp parallel for collapse(2)
	for (int i = 0; i < NI; i++)
		for (int t = 0; t < VT; t++) {
			float *dst = f->vemb + ((size_t)i * VT + t) * VC;
			const float *src = t >= ncls ? f->pe + ((size_t)i * NP + t - ncls) * VC : cls;
			const float *pt = pos + (size_t)im->vpos[t] * VC;
			for (int j = 0; j < VC; j++)
				dst[j] = src[j] + pt[j];
		}
	/* the residual stream's start (VN, VC) */
	if (c->v_pre_ln)
		layernorm_forward(vres_at(f, m, s, 0), f->vpm, f->vpr, f->vemb, P(im->pre_w),
				  P(im->pre_b), VN, VC, c->v_eps);
	else
		memcpy(vres_at(f, m, s, 0), f->vemb, (size_t)VN * VC * sizeof(float));
	for (int i = 0; i < NI; i++)
		f->vlen[i] = VT;
	for (int l = 0; l < c->v_used; l++) {
		const int *w = im->vl + l * VL_N;
		struct vlay a = vlay_at(f, m, s, l);
		float *x = vres_at(f, m, s, l), *out = vres_at(f, m, s, l + 1);
		/* mid = x + out_proj(attention(q(ln1), k(ln1), v(ln1))), no mask */
		layernorm_forward(a.ln1, a.m1, a.r1, x, P(w[VL_LN1_W]), P(w[VL_LN1_B]), VN, VC, c->v_eps);
		mm_fwd(m, a.q, a.ln1, P(w[VL_Q_W]), P(w[VL_Q_B]), VN, VC, VC);
		mm_fwd(m, a.k, a.ln1, P(w[VL_K_W]), P(w[VL_K_B]), VN, VC, VC);
		mm_fwd(m, a.v, a.ln1, P(w[VL_V_W]), P(w[VL_V_B]), VN, VC, VC);
		attention_forward(a.atty, a.att, a.q, a.k, a.v, f->vlen, NI, VT, VNH, VNH, VHS, 0);
		mm_fwd(m, a.mid, a.atty, P(w[VL_O_W]), P(w[VL_O_B]), VN, VC, VC);
		residual_forward(a.mid, a.mid, x, (long)VN * VC);
		/* out = mid + fc2(act(fc1(ln2))) */
		layernorm_forward(a.ln2, a.m2, a.r2, a.mid, P(w[VL_LN2_W]), P(w[VL_LN2_B]), VN, VC, c->v_eps);
		mm_fwd(m, a.fc1, a.ln2, P(w[VL_FC1_W]), P(w[VL_FC1_B]), VN, VC, VI);
		act_forward(c->v_act, a.act, a.fc1, (long)VN * VI);
		mm_fwd(m, out, a.act, P(w[VL_FC2_W]), P(w[VL_FC2_B]), VN, VI, VC);
		residual_forward(out, out, a.mid, (long)VN * VC);
	}
	/* the selected rows (NI*FT, VC) of the chosen layer, post-normed if the tower says so */
	const float *hid = vres_at(f, m, s, c->v_used);
	int skip = VT - FT;
	float *sel = c->v_post_ln ? f->fsel : f->feat;
#pragma omp parallel for
	for (int i = 0; i < NI; i++)
		memcpy(sel + (size_t)i * FT * VC, hid + ((size_t)i * VT + skip) * VC,
		       (size_t)FT * VC * sizeof(float));
	if (c->v_post_ln)
		layernorm_forward(f->feat, f->vfm, f->vfr, f->fsel, P(im->post_w), P(im->post_b),
				  NI * FT, VC, c->v_eps);
}

/* --- connectors: vision features (NI*FT, VC) → decoder rows (NI*IT, C) --- */


/* LLaVA's projector: img = linear_2(act(linear_1(feat))); cx = p1 (NIT, C)
 * before the activation, then p1a (NIT, C) after it. */
static void mlp2_tensors(struct vlm *m, int *capp, const char *const *names)
{
	struct vlm_impl *im = m->impl;
	long C = m->cfg.hidden, VC = m->cfg.v_hidden;
	int cap = *capp;
	const int PRJ = VLM_PART_PROJECTOR;
	im->conn[0] = ADD(PRJ, 0, T2(C, VC), "%s", names[0]);
	im->conn[1] = ADD(PRJ, 0, T1(C), "%s", names[1]);
	im->conn[2] = ADD(PRJ, 0, T2(C, C), "%s", names[2]);
	im->conn[3] = ADD(PRJ, 0, T1(C), "%s", names[3]);
	*capp = cap;
}

static size_t mlp2_acts(const struct vlm_config *c, int NI)
{
	return 2 * (((size_t)NI * c->img_tokens * c->hidden + 15) & ~(size_t)15);
}

static void mlp2_forward(struct vlm *m, float *img, float *cx, const float *feat, int NI)
{
	const struct vlm_impl *im = m->impl;
	int C = m->cfg.hidden, NIT = NI * m->cfg.img_tokens;
	float *p1 = cx, *p1a = cx + mlp2_acts(&m->cfg, NI) / 2;
	mm_fwd(m, p1, feat, P(im->conn[0]), P(im->conn[1]), NIT, m->cfg.v_hidden, C);
	act_forward(m->cfg.proj_act, p1a, p1, (long)NIT * C);
	mm_fwd(m, img, p1a, P(im->conn[2]), P(im->conn[3]), NIT, C, C);
}

static void zero(float *p, size_t n);

static void mlp2_feat_product(const struct vlm_config *c, int *rows, int *C, int *OC)
{
	*rows = c->img_tokens;
	*C = c->v_hidden;
	*OC = c->hidden;
}

static void mlp2_backward(struct vlm *m, float *dfeat, float *ds, const float *dimg,
			  const float *cx, const float *feat, int NI)
{
	const struct vlm_impl *im = m->impl;
	int C = m->cfg.hidden, NIT = NI * m->cfg.img_tokens;
	size_t half = mlp2_acts(&m->cfg, NI) / 2;
	const float *p1 = cx, *p1a = cx + half;
	float *dp1a = ds, *dp1 = ds + half;
	zero(dp1a, (size_t)NIT * C);
	matmul_backward(dp1a, G(im->conn[2]), G(im->conn[3]), dimg, p1a, P(im->conn[2]), NIT, C, C);
	zero(dp1, (size_t)NIT * C);
	act_backward(m->cfg.proj_act, dp1, p1, dp1a, (long)NIT * C);
	matmul_backward(dfeat, G(im->conn[0]), G(im->conn[1]), dp1, feat, P(im->conn[0]), NIT,
			m->cfg.v_hidden, C);
}

/* Idefics3's connector: the features of an image, a GW x GW grid, become
 * (GW/r)² rows of r² features each — row (ky, kx) holds the patches
 * (ky*r + a, kx*r + b) in (a, b) order, as transformers' pixel_shuffle
 * lays them out — then one linear map without bias. cx = the shuffled
 * rows (NIT, VC*r²). */
static void shuffle_tensors(struct vlm *m, int *capp, const char *const *names)
{
	struct vlm_impl *im = m->impl;
	long C = m->cfg.hidden, R2 = (long)m->cfg.shuffle * m->cfg.shuffle;
	int cap = *capp;
	im->conn[0] = ADD(VLM_PART_PROJECTOR, 0, T2(C, m->cfg.v_hidden * R2), "%s", names[0]);
	im->conn[1] = im->conn[2] = im->conn[3] = -1;
	*capp = cap;
}

static size_t shuffle_acts(const struct vlm_config *c, int NI)
{
	return (size_t)NI * c->feat_tokens * c->v_hidden;
}

static void shuffle_feat_product(const struct vlm_config *c, int *rows, int *C, int *OC)
{
	*rows = c->img_tokens;
	*C = c->v_hidden * c->shuffle * c->shuffle;
	*OC = c->hidden;
}

/* The feature row of one image that part k (of r²) of shuffled row u comes from. */
static void shuffle_src(const struct vlm_config *c, int u, int k, int *row)
{
	int r = c->shuffle, GW = c->image_size / c->patch_size, KW = GW / r;
	int ky = u / KW, kx = u % KW, a = k / r, b = k % r;
	*row = (ky * r + a) * GW + kx * r + b;
}

static void shuffle_forward(struct vlm *m, float *img, float *cx, const float *feat, int NI)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int VC = c->v_hidden, R2 = c->shuffle * c->shuffle, IT = c->img_tokens, FT = c->feat_tokens;
#pragma omp parallel for collapse(2)
	for (int i = 0; i < NI; i++)
		for (int u = 0; u < IT; u++)
			for (int k = 0; k < R2; k++) {
				int row;
				shuffle_src(c, u, k, &row);
				memcpy(cx + (((size_t)i * IT + u) * R2 + k) * VC,
				       feat + ((size_t)i * FT + row) * VC, VC * sizeof(float));
			}
	mm_fwd(m, img, cx, P(im->conn[0]), NULL, NI * IT, VC * R2, c->hidden);
}

static void shuffle_backward(struct vlm *m, float *dfeat, float *ds, const float *dimg,
			     const float *cx, const float *feat, int NI)
{
	(void)feat;
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int VC = c->v_hidden, R2 = c->shuffle * c->shuffle, IT = c->img_tokens, FT = c->feat_tokens;
	if (dfeat)
		zero(ds, (size_t)NI * IT * R2 * VC);
	matmul_backward(dfeat ? ds : NULL, G(im->conn[0]), NULL, dimg, cx, P(im->conn[0]), NI * IT,
			VC * R2, c->hidden);
	if (!dfeat)
		return;
	/* the shuffle is a permutation: each feature row gets one part back */
#pragma omp parallel for collapse(2)
	for (int i = 0; i < NI; i++)
		for (int u = 0; u < IT; u++)
			for (int k = 0; k < R2; k++) {
				int row;
				shuffle_src(c, u, k, &row);
				float *d = dfeat + ((size_t)i * FT + row) * VC;
				const float *g = ds + (((size_t)i * IT + u) * R2 + k) * VC;
				for (int j = 0; j < VC; j++)
					d[j] += g[j];
			}
}

static const struct connector_ops connectors[] = {
	[VLM_CONN_MLP2] = {mlp2_tensors, mlp2_acts, mlp2_acts, mlp2_forward, mlp2_backward,
			   mlp2_feat_product},
	[VLM_CONN_SHUFFLE] = {shuffle_tensors, shuffle_acts, shuffle_acts, shuffle_forward,
			      shuffle_backward, shuffle_feat_product},
};

static const struct connector_ops *connector_of(const struct vlm_config *c)
{
	return &connectors[c->connector];
}

/* The features reach nothing but the connector's product (its forward on
 * at least 64 rows, mm_fwd's padding, and its dw on NI * ROWS >= ROWS),
 * so when both round their input to bf16, features stored in bf16 are
 * those products' very operands. */
int vlm_features_bf16_exact(const struct vlm *m)
{
	int rows, C, OC;
	connector_of(&m->cfg)->feat_product(&m->cfg, &rows, &C, &OC);
	return !mm_rowwise(C, OC) && tensor_bf16_rounds(rows < 64 ? 64 : rows, C, OC) &&
	       tensor_bf16_rounds(rows, C, OC);
}

static size_t grow_arena(float **p, size_t *cap, size_t n)
{
	if (n > *cap) {
		free(*p);
		*p = xmalloc(n * sizeof(float));
		*cap = n;
	}
	return n;
}

/* What slot t of sequence b holds once the image is expanded: its token id
 * (>= 0), or -1 - the row of the image rows f->img it takes. */
static int slot_key(const struct vlm_batch *batch, const int *ipos, const int *imap, int IT,
		    int b, int t)
{
	int p = ipos[b];
	if (p >= 0 && t >= p) {
		if (t < p + IT)
			return -1 - (imap[batch->image_of[b]] * IT + t - p);
		t -= IT - 1;
	}
	return batch->ids[b][t];
}

/* dst (N slots, D) = the rows' src (NU, D); padding slots 0. With OWNER,
 * only each row's owner slot gets it, the other slots 0. With MAP, row u
 * of the slots is row map[u] of src (-1: 0). */
static void rows_to_slots(float *dst, const float *src, const struct fwd *f, const int *map,
			  int owner, int N, int D)
{
#pragma omp parallel for if ((long)N * D > 65536)
	for (int sl = 0; sl < N; sl++) {
		int u = f->urow[sl], k = u >= 0 && map ? map[u] : u;
		float *d = dst + (size_t)sl * D;
		if (k >= 0 && (!owner || f->uslot[f->ustart[u]] == sl))
			memcpy(d, src + (size_t)k * D, D * sizeof(float));
		else
			memset(d, 0, D * sizeof(float));
	}
}

/* dst (n, D): row i = src at the owner slot of row rows[i] (all rows if
 * ROWS is NULL) with SUM 0, or the sum over all its slots in (b, t) order
 * with SUM 1. */
static void slots_to_rows(float *dst, const float *src, const struct fwd *f, const int *rows,
			  int sum, int n, int D)
{
#pragma omp parallel for if ((long)n * D > 65536)
	for (int r = 0; r < n; r++) {
		int u = rows ? rows[r] : r;
		float *d = dst + (size_t)r * D;
		int i = f->ustart[u], end = sum ? f->ustart[u + 1] : i + 1;
		memcpy(d, src + (size_t)f->uslot[i] * D, D * sizeof(float));
		for (i++; i < end; i++) {
			const float *g = src + (size_t)f->uslot[i] * D;
			for (int j = 0; j < D; j++)
				d[j] += g[j];
		}
	}
}

/* Phase 1 of a forward: checks every sequence and sizes the batch. IMAP
 * (n_images) gets each used image's index among the NI distinct ones (-1:
 * unused), IPOS (B) each sequence's image token position (-1: none); S
 * gets NI, T (the longest expanded sequence) and NR (the loss rows, or B
 * when generating). -1 with a message. */
static int batch_scan(const struct vlm *m, const struct vlm_batch *batch, int gen,
		      struct vlm_shape *s, int *imap, int *ipos)
{
	const struct vlm_config *c = &m->cfg;
	int B = batch->B, V = c->vocab, T = 0;
	long NR = 0;
	for (int i = 0; i < batch->n_images; i++)
		imap[i] = -1;
	for (int b = 0; b < B; b++) {
		int io = batch->image_of ? batch->image_of[b] : -1;
		int n = batch->len[b];
		ipos[b] = -1;
		if (n < 1)
			return error("sequence %d: empty", b);
		for (int t = 0; t < n; t++) {
			int id = batch->ids[b][t];
			if (id == c->image_token_index) {
				if (ipos[b] >= 0)
					return error("sequence %d: more than one image token (at %d and %d)",
						     b, ipos[b], t);
				ipos[b] = t;
			} else if (id < 0 || id >= V) {
				return error("sequence %d: token %d: id %d outside the vocabulary [0, %d)",
					     b, t, id, V);
			}
		}
		if (io >= batch->n_images || io < -1)
			return error("sequence %d: image %d of %d", b, io, batch->n_images);
		if ((io >= 0) != (ipos[b] >= 0))
			return error("sequence %d: %s", b, io >= 0 ? "an image but no image token"
								 : "an image token but no image");
		if (io >= 0 && imap[io] < 0)
			imap[io] = s->NI++;
		int n2 = n + (io >= 0 ? s->IT - 1 : 0);
		if (n2 > c->max_pos)
			return error("sequence %d: %d positions (image included) exceed the context of %d",
				     b, n2, c->max_pos);
		if (n2 > T)
			T = n2;
		if (!gen && batch->weight)
			for (int t = 1; t < n; t++)
				NR += batch->weight[b][t] != 0 && t != ipos[b];
	}
	s->T = T;
	s->NR = gen ? B : NR;
	return 0;
}

/* Phase 2: each sequence's expanded length LEN2 (B) and the row of each
 * slot URW (B, T), -1 for padding: a slot reuses the row of an earlier
 * sequence's slot while the two sequences agree on every slot so far (same
 * token or same image row). Returns NU, the distinct rows. */
static int rows_share(const struct vlm_batch *batch, const int *ipos, const int *imap,
		      const struct vlm_shape *s, int *len2, int *urow)
{
	int B = batch->B, T = s->T, NU = 0;
	for (int b = 0; b < B; b++) {
		int io = batch->image_of ? batch->image_of[b] : -1;
		len2[b] = batch->len[b] + (io >= 0 ? s->IT - 1 : 0);
		int best = 0, from = -1;
		for (int a = 0; a < b; a++) {
			int n = len2[a] < len2[b] ? len2[a] : len2[b], t = 0;
			while (t < n && slot_key(batch, ipos, imap, s->IT, a, t) ==
					slot_key(batch, ipos, imap, s->IT, b, t))
				t++;
			if (t > best)
				best = t, from = a;
		}
		for (int t = 0; t < T; t++)
			urow[b * T + t] = t < best ? urow[from * T + t] : t < len2[b] ? NU++ : -1;
	}
	return NU;
}

/* Phase 3: the tables of the rows, given f->urow and f->len2: the images
 * in use (ilist), the slots of each row (ustart, uslot), its position,
 * token id or image row (pos, rowid, imgrow); the loss rows (grow, gtgt,
 * gb, gw; for generation each sequence's last row) and the rows the head
 * reads (hrow, hidx, hpos; s->NQ). */
static void rows_index(const struct vlm_batch *batch, const int *ipos, const int *imap, int L,
		       struct vlm_shape *s, struct fwd *f)
{
	int B = s->B, T = s->T, NU = s->NU;
	for (int i = 0; i < batch->n_images; i++)
		if (imap[i] >= 0)
			f->ilist[imap[i]] = i;
	memset(f->ustart, 0, (NU + 1) * sizeof(int));
	for (int sl = 0; sl < s->N; sl++)
		if (f->urow[sl] >= 0)
			f->ustart[f->urow[sl] + 1]++;
	for (int u = 0; u < NU; u++)
		f->ustart[u + 1] += f->ustart[u];
	int *fill = xmalloc((NU + 1) * sizeof(int));
	memcpy(fill, f->ustart, NU * sizeof(int));
	for (int sl = 0; sl < s->N; sl++) {
		int u = f->urow[sl];
		if (u < 0)
			continue;
		if (fill[u] == f->ustart[u]) { /* the owner: first slot in (b, t) order */
			int b = sl / T, t = sl % T, key = slot_key(batch, ipos, imap, s->IT, b, t);
			f->pos[u] = t;
			f->rowid[u] = key >= 0 ? key : -1;
			f->imgrow[u] = key >= 0 ? -1 : -1 - key;
		}
		f->uslot[fill[u]++] = sl;
	}
	free(fill);
	int r = 0;
	for (int b = 0; b < B; b++) {
		int n = batch->len[b], io = batch->image_of ? batch->image_of[b] : -1;
		int shift = io >= 0 ? s->IT - 1 : 0;
		if (s->gen) {
			f->grow[b] = f->urow[b * T + f->len2[b] - 1];
			f->gtgt[b] = -1;
			f->gb[b] = b;
			f->gw[b] = 0;
			continue;
		}
		if (!batch->weight)
			continue;
		for (int t = 1; t < n; t++) {
			float w = batch->weight[b][t];
			if (w == 0 || t == ipos[b])
				continue;
			int p = ipos[b] >= 0 && t > ipos[b] ? t + shift : t;
			f->grow[r] = f->urow[b * T + p - 1];
			f->gtgt[r] = batch->ids[b][t];
			f->gb[r] = b;
			f->gw[r] = w;
			r++;
		}
	}
	/* the rows the head reads, in row order; grow then indexes them */
	int NQ = 0;
	for (int u = 0; u < NU; u++)
		f->hidx[u] = -1;
	for (int i = 0; i < s->NR; i++)
		f->hidx[f->grow[i]] = 0;
	for (int u = 0; u < NU; u++)
		if (f->hidx[u] == 0) {
			f->hidx[u] = NQ;
			f->hrow[NQ] = u;
			f->hpos[NQ++] = f->pos[u];
		}
	if (L > 0)
		for (int i = 0; i < s->NR; i++)
			f->grow[i] = f->hidx[f->grow[i]];
	s->NQ = NQ;
}

/* LoRA dropout's key of each row (im->dkey, NU): its owner's (the first
 * sequence whose slot it is) drop_key, the step's seed and its position. */
static void drop_keys(struct vlm *m, const struct vlm_batch *batch, const struct vlm_shape *s,
		      const struct fwd *f)
{
	struct vlm_impl *im = m->impl;
	if ((size_t)s->NU > im->dkey_cap) {
		free(im->dkey);
		im->dkey = xmalloc((size_t)s->NU * sizeof *im->dkey);
		im->dkey_cap = (size_t)s->NU;
	}
	uint64_t seed = drop_mix(m->lora.dropout_seed);
	for (int u = 0; u < s->NU; u++) {
		int b = f->uslot[f->ustart[u]] / s->T;
		im->dkey[u] = drop_mix(drop_mix(seed ^ batch->drop_key[b]) + (uint64_t)f->pos[u]);
	}
}

/* Phase 5: the decoder over the NU rows: x0 (NU, C) from the token
 * embeddings and the image rows f->img, then L LLaMA layers (RMSNorm,
 * GQA attention with RoPE over the padded slots, SwiGLU MLP); the last
 * one computes q onwards only for the NQ rows the head reads. With O->kc,
 * each layer's k and v go to the cache. */
static void decoder_forward(struct vlm *m, const struct fwd *f, const struct vlm_shape *s,
			    const struct vlm_fwd_opts *o)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int B = s->B, T = s->T, NU = s->NU, NQ = s->NQ, C = c->hidden, L = c->layers;
	int NH = c->heads, NKV = c->kv_heads, HS = C / NH, QD = NH * HS, KVD = NKV * HS, FF = c->inter;

	/* x0 (NU, C): token embeddings and the image's rows */
	float *x0 = res_at(f, m, s, 0);
	const float *emb = P(im->embed);
#pragma omp parallel for
	for (int u = 0; u < NU; u++) {
		float *dst = x0 + (size_t)u * C;
		if (f->rowid[u] >= 0)
			memcpy(dst, emb + (size_t)f->rowid[u] * C, C * sizeof(float));
		else
			memcpy(dst, f->img + (size_t)f->imgrow[u] * C, C * sizeof(float));
	}
	for (int l = 0; l < L; l++) {
		const int *w = im->dl + l * DL_N;
		struct dlay a = dlay_at(f, m, s, l);
		float *x = res_at(f, m, s, l), *out = res_at(f, m, s, l + 1);
		/* the last layer's queries and what follows them: the head's rows */
		int last = l == L - 1, n = last ? NQ : NU;
		const int *sel = last ? f->hrow : NULL;
		/* q (n, QD), k, v (NU, KVD) from ln1 = rmsnorm(x), RoPE on q and k */
		rmsnorm_forward(a.ln1, a.r1, x, P(w[DL_LN1]), NU, C, c->rms_eps);
		const float *qx = a.ln1;
		if (last) {
			for (int i = 0; i < n; i++)
				memcpy(f->hx + (size_t)i * C, a.ln1 + (size_t)sel[i] * C, C * sizeof(float));
			qx = f->hx;
		}
		mm_fwd(m, f->uq, qx, P(w[DL_Q]), NULL, n, C, QD);
		lora_forward(m, l, LT_Q, f->uq, qx, a.xa[LT_Q], f->tmp, n, s->drop, sel);
		mm_fwd(m, f->uk, a.ln1, P(w[DL_K]), NULL, NU, C, KVD);
		lora_forward(m, l, LT_K, f->uk, a.ln1, a.xa[LT_K], f->tmp, NU, s->drop, NULL);
		mm_fwd(m, f->uv, a.ln1, P(w[DL_V]), NULL, NU, C, KVD);
		lora_forward(m, l, LT_V, f->uv, a.ln1, a.xa[LT_V], f->tmp, NU, s->drop, NULL);
		rope_forward(f->uq, last ? f->hpos : f->pos, n, NH, HS, c->rope_theta);
		rope_forward(f->uk, f->pos, NU, NKV, HS, c->rope_theta);
		/* causal attention over the (B, T) slots; atty (n, QD) back on the rows */
		rows_to_slots(a.q, f->uq, f, last ? f->hidx : NULL, 0, s->N, QD);
		rows_to_slots(a.k, f->uk, f, NULL, 0, s->N, KVD);
		rows_to_slots(a.v, f->uv, f, NULL, 0, s->N, KVD);
		if (o->kc) {
			size_t lo = (size_t)l * B * o->S * KVD;
#pragma omp parallel for
			for (int b = 0; b < B; b++)
				for (int t = 0; t < f->len2[b]; t++) {
					size_t dst = lo + ((size_t)b * o->S + t) * KVD;
					size_t src = ((size_t)b * T + t) * KVD;
					memcpy(o->kc + dst, a.k + src, KVD * sizeof(float));
					memcpy(o->vc + dst, a.v + src, KVD * sizeof(float));
				}
		}
		if (n > 0) /* else no row reads the last layer (no loss rows) */
			attention_forward(f->patt, a.att, a.q, a.k, a.v, f->len2, B, T, NH, NKV, HS, 1);
		slots_to_rows(a.atty, f->patt, f, sel, 0, n, QD);
		/* mid (n, C) = x + o(atty) */
		mm_fwd(m, a.mid, a.atty, P(w[DL_O]), NULL, n, QD, C);
		lora_forward(m, l, LT_O, a.mid, a.atty, a.xa[LT_O], f->tmp, n, s->drop, sel);
		if (last)
			for (int i = 0; i < n; i++)
				residual_forward(a.mid + (size_t)i * C, a.mid + (size_t)i * C,
						 x + (size_t)sel[i] * C, C);
		else
			residual_forward(a.mid, a.mid, x, (long)n * C);
		/* out (n, C) = mid + down(silu(gate(ln2)) * up(ln2)) */
		rmsnorm_forward(a.ln2, a.r2, a.mid, P(w[DL_LN2]), n, C, c->rms_eps);
		mm_fwd(m, a.gate, a.ln2, P(w[DL_GATE]), NULL, n, C, FF);
		lora_forward(m, l, LT_GATE, a.gate, a.ln2, a.xa[LT_GATE], f->tmp, n, s->drop, sel);
		mm_fwd(m, a.up, a.ln2, P(w[DL_UP]), NULL, n, C, FF);
		lora_forward(m, l, LT_UP, a.up, a.ln2, a.xa[LT_UP], f->tmp, n, s->drop, sel);
		swiglu_forward(a.swi, a.gate, a.up, (long)n * FF);
		mm_fwd(m, out, a.swi, P(w[DL_DOWN]), NULL, n, FF, C);
		lora_forward(m, l, LT_DOWN, out, a.swi, a.xa[LT_DOWN], f->tmp, n, s->drop, sel);
		residual_forward(out, out, a.mid, (long)n * C);
	}
}

/* Phase 6: the head, only on the NR rows that are scored: xg (NR, C) the
 * last layer's rows, xn = rmsnorm(xg), logits (NR, V); then logp (B) the
 * weighted sums of the targets' log-probs, or (generating) the logits of
 * each sequence's last row to O->last_logits (B, V). */
static void head_forward(struct vlm *m, const struct fwd *f, const struct vlm_shape *s,
			 const struct vlm_fwd_opts *o, float *logp)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int B = s->B, C = c->hidden, V = c->vocab;
	if (logp)
		memset(logp, 0, B * sizeof(float));
	if (s->NR <= 0)
		return;
	const float *xl = res_at(f, m, s, c->layers);
#pragma omp parallel for
	for (int i = 0; i < s->NR; i++)
		memcpy(f->xg + (size_t)i * C, xl + (size_t)f->grow[i] * C, C * sizeof(float));
	rmsnorm_forward(f->xn, f->hr, f->xg, P(im->norm), s->NR, C, c->rms_eps);
	mm_fwd(m, f->logits, f->xn, P(im->lm_head), NULL, s->NR, C, V);
	if (s->gen) {
		memcpy(o->last_logits, f->logits, (size_t)B * V * sizeof(float));
		return;
	}
	logprob_forward(f->lp, f->logits, f->gtgt, s->NR, V);
	/* in row order, so a sequence's sum does not depend on threads */
	for (int i = 0; i < s->NR; i++)
		logp[f->gb[i]] += f->gw[i] * f->lp[i];
}

/* Precomputed features stand for the tower's output: refused while the
 * tower trains (its gradient would need the tower's activations, and its
 * output moves with every step). An image without them needs its pixels. */
static int features_check(const struct vlm *m, const struct vlm_batch *batch, const int *imap)
{
	if (!batch->features)
		return 0;
	if (m->trainable & VLM_PART_VISION)
		return error("precomputed image features, but the vision tower trains");
	for (int i = 0; i < batch->n_images; i++)
		if (imap[i] >= 0 && !batch->features[i] && !batch->images)
			return error("image %d: neither features nor pixels", i);
	return 0;
}

/* Phase 4 with batch->features: the tower runs on the NT images that have
 * none (in f->ilist order, as a forward of those alone: each image's rows
 * do not depend on the others'), then every image's (FT, VC) rows go to
 * its place in f->feat, the given ones copied. */
static void vision_or_given(struct vlm *m, struct fwd *f, const struct vlm_shape *s,
			    const struct vlm_batch *batch)
{
	size_t rows = (size_t)s->FT * m->cfg.v_hidden;
	int NI = s->NI, NT = 0;
	int *all = xmalloc((size_t)NI * sizeof(int));
	memcpy(all, f->ilist, (size_t)NI * sizeof(int));
	for (int i = 0; i < NI; i++)
		if (!batch->features[all[i]])
			f->ilist[NT++] = all[i];
	if (NT > 0) {
		struct vlm_shape t = *s;
		t.NI = NT;
		t.VN = NT * s->VT;
		vision_forward(m, f, &t, batch->images);
	}
	/* backwards: the tower's row k of image i (k <= i) is moved before
	 * anything lands on it */
	for (int i = NI - 1, k = NT - 1; i >= 0; i--) {
		const float *given = batch->features[all[i]];
		float *dst = f->feat + (size_t)i * rows;
		if (given)
			memcpy(dst, given, rows * sizeof(float));
		else
			memmove(dst, f->feat + (size_t)(k--) * rows, rows * sizeof(float));
	}
	memcpy(f->ilist, all, (size_t)NI * sizeof(int));
	free(all);
}

int vlm_forward_ex(struct vlm *m, const struct vlm_batch *batch, float *logp,
		   const struct vlm_fwd_opts *o)
{
	struct vlm_impl *im = m->impl;
	const struct vlm_config *c = &m->cfg;
	int B = batch->B, L = c->layers;
	int keep = o->keep, gen = o->last_logits != NULL;
	if (keep)
		im->kept = 0;
	if (B <= 0)
		return 0;

	/* 1. the batch: images used, each sequence's image position, T, NR */
	struct vlm_shape s = {0};
	s.IT = c->img_tokens;
	s.FT = c->feat_tokens;
	s.VT = c->vt;
	s.gen = gen;
	int *imap = xmalloc((batch->n_images + 1) * sizeof(int));
	int *ipos = xmalloc(B * sizeof(int));
	int rc = -1;
	if (batch_scan(m, batch, gen, &s, imap, ipos) || features_check(m, batch, imap))
		goto out;
	s.B = B;
	s.N = B * s.T;
	s.VN = s.NI * s.VT;
	s.r = m->lora.rank > 0 && m->lora.enabled ? m->lora.rank : 0;
	s.vkeep = keep && (m->trainable & VLM_PART_VISION);
	s.nv = s.vkeep ? c->v_used : 1;
	s.nvres = s.vkeep ? c->v_used + 1 : 2;
	s.nd = keep ? L : 1;
	s.ndres = keep ? L + 1 : 2;
	s.vonly = o->vision_only;
	s.drop = keep && !gen && s.r > 0 && batch->drop_key && m->lora.dropout > 0;

	/* 2. the decoder's rows (NU): shared prefixes once, no padding */
	int *len2 = xmalloc(B * sizeof(int)), *urow = xmalloc((size_t)B * s.T * sizeof(int));
	s.NU = rows_share(batch, ipos, imap, &s, len2, urow);

	/* the arena (kept forwards in their own) and its views */
	struct fwd f;
	size_t ni, nf = fwd_bind(&f, NULL, NULL, m, &s, &ni);
	int ar = keep ? 1 : 0;
	grow_arena(&im->acts[ar], &im->acts_cap[ar], nf);
	grow_arena((float **)&im->iacts[ar], &im->iacts_cap[ar], ni);
	fwd_bind(&f, im->acts[ar], im->iacts[ar], m, &s, &ni);
	memcpy(f.len2, len2, B * sizeof(int));
	memcpy(f.urow, urow, (size_t)B * s.T * sizeof(int));
	free(len2);
	free(urow);

	/* 3. the rows' tables: ids, image rows, positions, loss and head rows */
	rows_index(batch, ipos, imap, L, &s, &f);
	if (s.drop)
		drop_keys(m, batch, &s, &f);
	if (o->out_len)
		memcpy(o->out_len, f.len2, B * sizeof(int));

	/* 4. the images, once per distinct image: tower (NI*FT, VC), connector (NIT, C) */
	if (s.NI > 0) {
		if (batch->features)
			vision_or_given(m, &f, &s, batch);
		else
			vision_forward(m, &f, &s, batch->images);
		if (s.vonly)
			goto done;
		connector_of(c)->forward(m, f.img, f.cx, f.feat, s.NI);
	}

	/* 5. the decoder; 6. the head */
	decoder_forward(m, &f, &s, o);
	head_forward(m, &f, &s, o, logp);
done:
	if (keep && !gen) {
		im->ks = s;
		im->kept = 1;
	}
	rc = 0;
out:
	free(imap);
	free(ipos);
	return rc;
}

int vlm_forward(struct vlm *m, const struct vlm_batch *batch, float *logp, int keep)
{
	struct vlm_fwd_opts o = {.keep = keep};
	return vlm_forward_ex(m, batch, logp, &o);
}

int vlm_forward_features(struct vlm *m, const struct vlm_batch *batch, int keep)
{
	struct vlm_fwd_opts o = {.keep = keep, .vision_only = 1};
	return vlm_forward_ex(m, batch, NULL, &o);
}

/* --- backward --- */

struct bwd {
	float *dlp, *dlogits, *dxn, *dxg, *dres, *dln, *dq, *dk, *dv, *datty;
	float *pdq, *pdk, *pdv, *patty; /* the same over the padded slots */
	float *dres2, *dhx;             /* below the last layer: all rows; its q input */
	float *dswi, *dgate, *dup, *dxa;
	float *dimg, *dcx, *dfeat;
	float *dvres, *dvln, *dvq, *dvk, *dvv, *dvatty, *dvfc1, *dvact, *dvemb, *dpe;
};

static size_t bwd_bind(struct bwd *d, float *base, const struct vlm *m, const struct vlm_shape *s)
{
	const struct vlm_config *c = &m->cfg;
	struct bump b = {base, 0};
	size_t N = s->N, NU = s->NU, C = c->hidden, HS = c->hidden / c->heads;
	size_t QD = c->heads * HS, KVD = c->kv_heads * HS, FF = c->inter;
	size_t NIT = (size_t)s->NI * s->IT, VN = s->VN, VC = c->v_hidden, VI = c->v_inter;
	int vis = m->trainable & VLM_PART_VISION;
	d->dlp = take(&b, s->NR);
	d->dlogits = take(&b, (size_t)s->NR * c->vocab);
	d->dxn = take(&b, (size_t)s->NR * C);
	d->dxg = take(&b, (size_t)s->NR * C);
	d->dres = take(&b, NU * C);
	d->dln = take(&b, NU * C);
	d->dq = take(&b, NU * QD);
	d->dk = take(&b, NU * KVD);
	d->dv = take(&b, NU * KVD);
	d->datty = take(&b, NU * QD);
	d->pdq = take(&b, N * QD);
	d->pdk = take(&b, N * KVD);
	d->pdv = take(&b, N * KVD);
	d->patty = take(&b, N * QD);
	d->dres2 = take(&b, NU * C);
	d->dhx = take(&b, (size_t)s->NR * C);
	d->dswi = take(&b, NU * FF);
	d->dgate = take(&b, NU * FF);
	d->dup = take(&b, NU * FF);
	d->dxa = take(&b, NU * (size_t)s->r);
	size_t NFT = (size_t)s->NI * s->FT;
	d->dimg = take(&b, NIT * C);
	d->dcx = take(&b, connector_of(c)->scratch(c, s->NI));
	d->dfeat = take(&b, vis ? NFT * VC : 0);
	d->dvres = take(&b, vis ? VN * VC : 0);
	d->dvln = take(&b, vis ? VN * VC : 0);
	d->dvq = take(&b, vis ? VN * VC : 0);
	d->dvk = take(&b, vis ? VN * VC : 0);
	d->dvv = take(&b, vis ? VN * VC : 0);
	d->dvatty = take(&b, vis ? VN * VC : 0);
	d->dvfc1 = take(&b, vis ? VN * VI : 0);
	d->dvact = take(&b, vis ? VN * VI : 0);
	d->dvemb = take(&b, vis ? VN * VC : 0);
	d->dpe = take(&b, vis ? (size_t)s->NI * c->np * VC : 0);
	return b.off;
}

static void zero(float *p, size_t n)
{
	memset(p, 0, n * sizeof(float));
}

/* LoRA's share of a projection's backward: y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ,
 * given dy; accumulates into dx (may be NULL) and the adapter's gradients.
 * With DROP the forward's mask is drawn again (lora_dropout): dA takes
 * drop(x), and dx the masked, rescaled gradient of drop(x). */
static void lora_backward(struct vlm *m, int l, int lt, float *dx, const float *dy,
			  const float *x, const float *xa, float *dxa, int N, int drop,
			  const int *sel)
{
	struct vlm_impl *im = m->impl;
	int ia = im->la[l * LT_N + lt];
	if (ia < 0 || !xa)
		return;
	const struct vlm_tensor *A = &m->tensors[ia], *B = &m->tensors[ia + 1];
	int r = A->shape[0], in = A->shape[1], out = B->shape[0];
	float s = vlm_lora_scale(m);
	if (!dx && !A->grad) {
		if (B->grad)
			matmul_backward(NULL, B->grad, NULL, dy, xa, B->data, N, r, out);
		return;
	}
	zero(dxa, (size_t)N * r);
	matmul_backward(dxa, B->grad, NULL, dy, xa, B->data, N, r, out);
	for (long i = 0; i < (long)N * r; i++)
		dxa[i] *= s;
	if (!drop) {
		matmul_backward(dx, A->grad, NULL, dxa, x, A->data, N, in, r);
		return;
	}
	/* drop (N, in) the forward's dropped input, then (N, in) d drop(x) */
	grow_arena(&im->drop, &im->drop_cap, 2 * (size_t)N * in);
	float *xd = im->drop, *dxd = im->drop + (size_t)N * in;
	lora_dropout(m, l, lt, xd, x, sel, N, in);
	if (A->grad)
		matmul_backward(NULL, A->grad, NULL, dxa, xd, A->data, N, in, r);
	if (dx) {
		zero(dxd, (size_t)N * in);
		matmul_backward(dxd, NULL, NULL, dxa, xd, A->data, N, in, r);
		/* the mask applied to the gradient: drop(dxd) */
		lora_dropout(m, l, lt, xd, dxd, sel, N, in);
		residual_forward(dx, dx, xd, (long)N * in);
	}
}

/* The ViT's backward from d->dfeat (NI*FT, VC), accumulating into the
 * tower's gradients: post-LayerNorm, the selected rows back into the
 * residual stream, the layers, pre-LayerNorm, positions, class token and
 * patch embedding. */
static void vision_backward(struct vlm *m, const struct fwd *f, const struct vlm_shape *s,
			    const struct bwd *d)
{
	const struct vlm_config *c = &m->cfg;
	const struct vlm_impl *im = m->impl;
	int VC = c->v_hidden, VI = c->v_inter, VNH = c->v_heads, VHS = VC / VNH;
	int NI = s->NI, VT = s->VT, VN = s->VN, FT = s->FT, NP = c->np;
	int CPP = (c->num_channels > 0 ? c->num_channels : 3) * c->patch_size * c->patch_size;
	int skip = VT - FT, ncls = c->v_cls ? 1 : 0;
	/* dsel (NI*FT, VC): the selected rows' gradient, through the post-LayerNorm */
	const float *dsel = d->dfeat;
	if (c->v_post_ln) {
		zero(d->dvln, (size_t)NI * FT * VC);
		layernorm_backward(d->dvln, G(im->post_w), G(im->post_b), d->dfeat, f->fsel,
				   P(im->post_w), f->vfm, f->vfr, NI * FT, VC);
		dsel = d->dvln;
	}
	zero(d->dvres, (size_t)VN * VC);
	for (int i = 0; i < NI; i++)
		memcpy(d->dvres + ((size_t)i * VT + skip) * VC, dsel + (size_t)i * FT * VC,
		       (size_t)FT * VC * sizeof(float));
	for (int l = c->v_used - 1; l >= 0; l--) {
		const int *w = im->vl + l * VL_N;
		struct vlay a = vlay_at(f, m, s, l);
		const float *x = vres_at(f, m, s, l);
		/* out = mid + fc2(act(fc1(ln2))) */
		zero(d->dvact, (size_t)VN * VI);
		matmul_backward(d->dvact, G(w[VL_FC2_W]), G(w[VL_FC2_B]), d->dvres, a.act,
				P(w[VL_FC2_W]), VN, VI, VC);
		zero(d->dvfc1, (size_t)VN * VI);
		act_backward(c->v_act, d->dvfc1, a.fc1, d->dvact, (long)VN * VI);
		zero(d->dvln, (size_t)VN * VC);
		matmul_backward(d->dvln, G(w[VL_FC1_W]), G(w[VL_FC1_B]), d->dvfc1, a.ln2,
				P(w[VL_FC1_W]), VN, VC, VI);
		layernorm_backward(d->dvres, G(w[VL_LN2_W]), G(w[VL_LN2_B]), d->dvln, a.mid,
				   P(w[VL_LN2_W]), a.m2, a.r2, VN, VC);
		/* mid = x + out_proj(attention(q(ln1), k(ln1), v(ln1))) */
		zero(d->dvatty, (size_t)VN * VC);
		matmul_backward(d->dvatty, G(w[VL_O_W]), G(w[VL_O_B]), d->dvres, a.atty,
				P(w[VL_O_W]), VN, VC, VC);
		zero(d->dvq, (size_t)VN * VC);
		zero(d->dvk, (size_t)VN * VC);
		zero(d->dvv, (size_t)VN * VC);
		attention_backward(d->dvq, d->dvk, d->dvv, d->dvatty, a.att, a.q, a.k, a.v, f->vlen,
				   NI, VT, VNH, VNH, VHS, 0);
		zero(d->dvln, (size_t)VN * VC);
		matmul_backward(d->dvln, G(w[VL_Q_W]), G(w[VL_Q_B]), d->dvq, a.ln1, P(w[VL_Q_W]), VN, VC, VC);
		matmul_backward(d->dvln, G(w[VL_K_W]), G(w[VL_K_B]), d->dvk, a.ln1, P(w[VL_K_W]), VN, VC, VC);
		matmul_backward(d->dvln, G(w[VL_V_W]), G(w[VL_V_B]), d->dvv, a.ln1, P(w[VL_V_W]), VN, VC, VC);
		layernorm_backward(d->dvres, G(w[VL_LN1_W]), G(w[VL_LN1_B]), d->dvln, x,
				   P(w[VL_LN1_W]), a.m1, a.r1, VN, VC);
	}
	/* dvemb (VN, VC): through the pre-LayerNorm, or the stream's own */
	const float *dvemb = d->dvres;
	if (c->v_pre_ln) {
		zero(d->dvemb, (size_t)VN * VC);
		layernorm_backward(d->dvemb, G(im->pre_w), G(im->pre_b), d->dvres, f->vemb,
				   P(im->pre_w), f->vpm, f->vpr, VN, VC);
		dvemb = d->dvemb;
	}
	float *dcls = GO(im->cls), *dpos = G(im->pos);
	for (int i = 0; i < NI; i++)
		for (int t = 0; t < VT; t++) {
			const float *g = dvemb + ((size_t)i * VT + t) * VC;
			float *dpt = dpos + (size_t)im->vpos[t] * VC;
			for (int j = 0; j < VC; j++)
				dpt[j] += g[j];
			if (t < ncls)
				for (int j = 0; j < VC; j++)
					dcls[j] += g[j];
			else
				memcpy(d->dpe + ((size_t)i * NP + t - ncls) * VC, g, VC * sizeof(float));
		}
	matmul_backward(NULL, G(im->patch), GO(im->patch_b), d->dpe, f->patches, P(im->patch),
			NI * NP, CPP, VC);
}

/* Views of the kept forward's activations and of the gradient arena. */
static void bind_kept(struct vlm *m, struct vlm_shape *s, struct fwd *f, struct bwd *d)
{
	struct vlm_impl *im = m->impl;
	size_t ni;
	fwd_bind(f, im->acts[1], im->iacts[1], m, s, &ni);
	size_t nb = bwd_bind(d, NULL, m, s);
	grow_arena(&im->dacts, &im->dacts_cap, nb);
	bwd_bind(d, im->dacts, m, s);
}

const float *vlm_image_features(const struct vlm *m, int *n_images, int *tokens)
{
	const struct vlm_impl *im = m->impl;
	if (!im->kept || im->ks.NI == 0)
		return NULL;
	struct vlm_shape s = im->ks;
	struct fwd f;
	size_t ni;
	fwd_bind(&f, im->acts[1], im->iacts[1], m, &s, &ni);
	*n_images = s.NI;
	*tokens = s.FT;
	return f.feat;
}

void vlm_backward_features(struct vlm *m, const float *dfeat)
{
	struct vlm_impl *im = m->impl;
	if (!im->kept || !im->ks.vkeep || !m->grads || !(m->trainable & VLM_PART_VISION)) {
		error("vlm_backward_features: no kept forward with a trainable vision tower");
		return;
	}
	struct vlm_shape s = im->ks;
	struct fwd f;
	struct bwd d;
	bind_kept(m, &s, &f, &d);
	memcpy(d.dfeat, dfeat, (size_t)s.NI * s.FT * m->cfg.v_hidden * sizeof(float));
	vision_backward(m, &f, &s, &d);
}

void vlm_backward(struct vlm *m, const float *dlogp)
{
	struct vlm_impl *im = m->impl;
	const struct vlm_config *c = &m->cfg;
	if (!im->kept) {
		error("vlm_backward: no kept forward to backpropagate");
		return;
	}
	if (im->ks.vonly) {
		error("vlm_backward: the kept forward ran the vision tower only");
		return;
	}
	if (!m->grads || !m->trainable)
		return;
	int C = c->hidden, V = c->vocab, L = c->layers;
	int NH = c->heads, NKV = c->kv_heads, HS = C / NH, QD = NH * HS, KVD = NKV * HS, FF = c->inter;
	struct vlm_shape s = im->ks;
	struct fwd f;
	struct bwd d;
	bind_kept(m, &s, &f, &d);

	int N = s.NU, NR = s.NR;
	unsigned tr = m->trainable;
	int need_img = s.NI > 0 && (tr & (VLM_PART_PROJECTOR | VLM_PART_VISION));
	/* the decoder's input gradient matters for the embeddings and the image */
	int need_dx0 = (tr & VLM_PART_DECODER) || need_img;

	/* head: logprob → lm_head → final norm, scattered back to the rows */
	float *dres = d.dres; /* the last layer's NQ rows, then all rows */
	zero(dres, (size_t)N * C);
	if (NR > 0) {
		for (int i = 0; i < NR; i++)
			d.dlp[i] = dlogp[f.gb[i]] * f.gw[i];
		zero(d.dlogits, (size_t)NR * V);
		logprob_backward(d.dlogits, f.logits, f.gtgt, d.dlp, NR, V);
		zero(d.dxn, (size_t)NR * C);
		matmul_backward(d.dxn, G(im->lm_head), NULL, d.dlogits, f.xn, P(im->lm_head), NR, C, V);
		zero(d.dxg, (size_t)NR * C);
		rmsnorm_backward(d.dxg, G(im->norm), d.dxn, f.xg, P(im->norm), f.hr, NR, C);
		for (int i = 0; i < NR; i++) {
			float *dst = dres + (size_t)f.grow[i] * C;
			const float *g = d.dxg + (size_t)i * C;
			for (int j = 0; j < C; j++)
				dst[j] += g[j];
		}
	}

	for (int l = L - 1; l >= 0; l--) {
		const int *w = im->dl + l * DL_N;
		struct dlay a = dlay_at(&f, m, &s, l);
		const float *x = res_at(&f, m, &s, l);
		/* the last layer: q onwards on the head's n rows (see struct fwd) */
		int last = l == L - 1, n = last ? s.NQ : N;
		const int *sel = last ? f.hrow : NULL;
		/* out = mid + down(swiglu(gate(ln2), up(ln2))) */
		zero(d.dswi, (size_t)n * FF);
		matmul_backward(d.dswi, G(w[DL_DOWN]), NULL, dres, a.swi, P(w[DL_DOWN]), n, FF, C);
		lora_backward(m, l, LT_DOWN, d.dswi, dres, a.swi, a.xa[LT_DOWN], d.dxa, n, s.drop, sel);
		zero(d.dgate, (size_t)n * FF);
		zero(d.dup, (size_t)n * FF);
		swiglu_backward(d.dgate, d.dup, d.dswi, a.gate, a.up, (long)n * FF);
		zero(d.dln, (size_t)n * C);
		matmul_backward(d.dln, G(w[DL_GATE]), NULL, d.dgate, a.ln2, P(w[DL_GATE]), n, C, FF);
		lora_backward(m, l, LT_GATE, d.dln, d.dgate, a.ln2, a.xa[LT_GATE], d.dxa, n, s.drop, sel);
		matmul_backward(d.dln, G(w[DL_UP]), NULL, d.dup, a.ln2, P(w[DL_UP]), n, C, FF);
		lora_backward(m, l, LT_UP, d.dln, d.dup, a.ln2, a.xa[LT_UP], d.dxa, n, s.drop, sel);
		rmsnorm_backward(dres, G(w[DL_LN2]), d.dln, a.mid, P(w[DL_LN2]), a.r2, n, C);
		/* mid = x + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))) */
		zero(d.datty, (size_t)n * QD);
		matmul_backward(d.datty, G(w[DL_O]), NULL, dres, a.atty, P(w[DL_O]), n, QD, C);
		lora_backward(m, l, LT_O, d.datty, dres, a.atty, a.xa[LT_O], d.dxa, n, s.drop, sel);
		if (last) {
			/* below the last layer every row has a gradient: its residual's
			 * on the head's rows, the rest through k and v */
			zero(d.dres2, (size_t)N * C);
			for (int i = 0; i < n; i++)
				memcpy(d.dres2 + (size_t)sel[i] * C, dres + (size_t)i * C, C * sizeof(float));
			dres = d.dres2;
		}
		/* attention over the padded slots; a row's output was its owner slot's */
		rows_to_slots(d.patty, d.datty, &f, last ? f.hidx : NULL, 1, s.N, QD);
		zero(d.pdq, (size_t)s.N * QD);
		zero(d.pdk, (size_t)s.N * KVD);
		zero(d.pdv, (size_t)s.N * KVD);
		if (n > 0)
			attention_backward(d.pdq, d.pdk, d.pdv, d.patty, a.att, a.q, a.k, a.v, f.len2,
					   s.B, s.T, NH, NKV, HS, 1);
		slots_to_rows(d.dq, d.pdq, &f, sel, 1, n, QD);
		slots_to_rows(d.dk, d.pdk, &f, NULL, 1, N, KVD);
		slots_to_rows(d.dv, d.pdv, &f, NULL, 1, N, KVD);
		rope_backward(d.dq, last ? f.hpos : f.pos, n, NH, HS, c->rope_theta);
		rope_backward(d.dk, f.pos, N, NKV, HS, c->rope_theta);
		float *dln = l > 0 || need_dx0 ? d.dln : NULL;
		if (dln)
			zero(dln, (size_t)N * C);
		float *dqx = last && dln ? d.dhx : dln;
		if (last && dln)
			zero(dqx, (size_t)n * C);
		matmul_backward(dqx, G(w[DL_Q]), NULL, d.dq, last ? f.hx : a.ln1, P(w[DL_Q]), n, C, QD);
		lora_backward(m, l, LT_Q, dqx, d.dq, last ? f.hx : a.ln1, a.xa[LT_Q], d.dxa, n, s.drop, sel);
		if (last && dln)
			for (int i = 0; i < n; i++)
				residual_forward(dln + (size_t)sel[i] * C, dln + (size_t)sel[i] * C,
						 dqx + (size_t)i * C, C);
		matmul_backward(dln, G(w[DL_K]), NULL, d.dk, a.ln1, P(w[DL_K]), N, C, KVD);
		lora_backward(m, l, LT_K, dln, d.dk, a.ln1, a.xa[LT_K], d.dxa, N, s.drop, NULL);
		matmul_backward(dln, G(w[DL_V]), NULL, d.dv, a.ln1, P(w[DL_V]), N, C, KVD);
		lora_backward(m, l, LT_V, dln, d.dv, a.ln1, a.xa[LT_V], d.dxa, N, s.drop, NULL);
		if (dln)
			rmsnorm_backward(dres, G(w[DL_LN1]), dln, x, P(w[DL_LN1]), a.r1, N, C);
	}
	if (!need_dx0)
		return;

	/* embeddings of the text rows */
	if (G(im->embed))
		for (int row = 0; row < N; row++)
			if (f.rowid[row] >= 0)
				embedding_backward(G(im->embed), dres + (size_t)row * C, &f.rowid[row], 1, C);
	if (!need_img)
		return;

	/* the image rows: summed over the sequences sharing an image */
	int NIT = s.NI * s.IT;
	zero(d.dimg, (size_t)NIT * C);
	for (int row = 0; row < N; row++)
		if (f.imgrow[row] >= 0) {
			float *dst = d.dimg + (size_t)f.imgrow[row] * C;
			const float *g = dres + (size_t)row * C;
			for (int j = 0; j < C; j++)
				dst[j] += g[j];
		}
	/* the connector, then the tower if it trains */
	int vis = (tr & VLM_PART_VISION) && s.vkeep;
	if (vis)
		zero(d.dfeat, (size_t)s.NI * s.FT * c->v_hidden);
	connector_of(c)->backward(m, vis ? d.dfeat : NULL, d.dcx, d.dimg, f.cx, f.feat, s.NI);
	if (vis)
		vision_backward(m, &f, &s, &d);
}
