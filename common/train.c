#include "train.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dist.h"
#include "safetensors.h"
#include "sha256.h"
#include "tensor.h"
#include "util.h"

/* --- schedules --- */

static const char *const schedule_names[] = { "constant", "linear", "cosine" };

int lr_schedule_parse(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(schedule_names); i++)
		if (!strcmp(name, schedule_names[i]))
			return (int)i;
	return -1;
}

const char *lr_schedule_name(enum lr_schedule s)
{
	return schedule_names[s];
}

long lr_warmup_steps(long total, double ratio)
{
	return (long)ceil((double)total * ratio);
}

double lr_at(enum lr_schedule s, double base, long step, long total, long warmup)
{
	if (step < warmup)
		return base * (double)step / (double)(warmup > 1 ? warmup : 1);
	long rest = total - warmup > 1 ? total - warmup : 1;
	double progress = (double)(step - warmup) / (double)rest;
	double f;
	switch (s) {
	case LR_LINEAR:
		f = (double)(total - step) / (double)rest;
		break;
	case LR_COSINE:
		f = 0.5 * (1.0 + cos(M_PI * progress));
		break;
	default:
		f = 1.0;
	}
	return base * (f > 0 ? f : 0);
}

/* --- AdamW --- */

int train_tensor_trains(const struct vlm *m, const struct vlm_tensor *t)
{
	return t->grad && (t->part & (int)m->trainable);
}

/* The offset of T's parameters in the flat buffer: the moments use it. LoRA
 * tensors may live in their own allocation, so fall back to the tensor's
 * rank in the table when the pointer is outside m->params. */
static long tensor_offset(const struct vlm *m, const struct vlm_tensor *t, long *next)
{
	if (t->data >= m->params && t->data + t->numel <= m->params + m->nparams)
		return (long)(t->data - m->params);
	long off = *next;
	*next += t->numel;
	return off;
}

/* Moments for tensors outside m->params (LoRA in its own buffer) are laid
 * out after m->nparams in table order; this is how many floats they need. */
static long extra_floats(const struct vlm *m)
{
	long n = 0;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (!(t->data >= m->params && t->data + t->numel <= m->params + m->nparams))
			n += t->numel;
	}
	return n;
}

void train_opt_init(struct train_opt *o, const struct vlm *m, float beta1, float beta2,
		    float eps, float weight_decay)
{
	o->beta1 = beta1;
	o->beta2 = beta2;
	o->eps = eps;
	o->weight_decay = weight_decay;
	o->t = 0;
	o->n = m->nparams + extra_floats(m);
	o->mem = xcalloc((size_t)(2 * o->n), sizeof(float));
	o->m = o->mem;
	o->v = o->mem + o->n;
}

void train_opt_release(struct train_opt *o)
{
	free(o->mem);
	memset(o, 0, sizeof *o);
}

void train_opt_step(struct train_opt *o, struct vlm *m, float lr)
{
	train_opt_step_groups(o, m, lr, lr);
}

void train_opt_step_groups(struct train_opt *o, struct vlm *m, float lr, float projector_lr)
{
	long next = m->nparams;
	o->t++;
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		long off = tensor_offset(m, t, &next);
		if (!train_tensor_trains(m, t))
			continue;
		float wd = t->ndim >= 2 ? o->weight_decay : 0.0f;
		adamw_update(t->data, t->grad, o->m + off, o->v + off, t->numel,
			     t->part == VLM_PART_PROJECTOR ? projector_lr : lr, o->beta1,
			     o->beta2, o->eps, wd, (int)o->t);
	}
}

double train_clip_grad(struct vlm *m, double max_norm)
{
	double ss = 0;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (!train_tensor_trains(m, t))
			continue;
		for (long j = 0; j < t->numel; j++)
			ss += (double)t->grad[j] * t->grad[j];
	}
	double norm = sqrt(ss);
	if (max_norm > 0 && isfinite(norm) && norm > max_norm)
		train_scale_grad(m, (float)(max_norm / (norm + 1e-6)));
	return norm;
}

void train_allreduce_grad(struct vlm *m)
{
	if (dist_size() == 1)
		return;
	long n = 0, off = 0;
	for (int i = 0; i < m->ntensors; i++)
		if (train_tensor_trains(m, &m->tensors[i]))
			n += m->tensors[i].numel;
	float *buf = xmalloc((size_t)(n ? n : 1) * sizeof(float));
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (train_tensor_trains(m, t)) {
			memcpy(buf + off, t->grad, (size_t)t->numel * sizeof(float));
			off += t->numel;
		}
	}
	dist_allreduce_sum(buf, n);
	off = 0;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (train_tensor_trains(m, t)) {
			memcpy(t->grad, buf + off, (size_t)t->numel * sizeof(float));
			off += t->numel;
		}
	}
	free(buf);
}

void train_scale_grad(struct vlm *m, float s)
{
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		if (!train_tensor_trains(m, t))
			continue;
		for (long j = 0; j < t->numel; j++)
			t->grad[j] *= s;
	}
}

/* --- data order --- */

void train_order(uint32_t *order, long n, uint64_t seed, int epoch)
{
	struct rng r;
	char key[32];
	snprintf(key, sizeof key, "epoch %d", epoch);
	rng_seed(&r, seed, key, "shuffle");
	for (long i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	for (long i = n - 1; i > 0; i--) {
		long j = (long)rng_below(&r, (uint64_t)i + 1);
		uint32_t tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
}

void train_state_init(struct train_state *st, long n, long total, uint64_t seed)
{
	memset(st, 0, sizeof *st);
	st->n = n;
	st->total = total;
	st->seed = seed;
	st->order = xcalloc((size_t)(n > 0 ? n : 1), sizeof *st->order);
	train_order(st->order, n, seed, 0);
	rng_seed(&st->rng, seed, "train", "run");
}

void train_state_release(struct train_state *st)
{
	free(st->order);
	st->order = NULL;
}

int train_next_batch(struct train_state *st, int want, uint32_t *idx)
{
	if (st->n <= 0)
		return 0;
	if (st->pos >= st->n) {
		st->epoch++;
		st->pos = 0;
		train_order(st->order, st->n, st->seed, st->epoch);
	}
	int k = 0;
	while (k < want && st->pos < st->n)
		idx[k++] = st->order[st->pos++];
	return k;
}

double train_epoch_f(const struct train_state *st)
{
	return st->n > 0 ? st->epoch + (double)st->pos / (double)st->n : 0;
}

/* --- checkpoint --- */

/* Version 2: the file ends with the SHA-256 of every byte before it, and
 * a resume checks it before anything read is used. */
#define CKPT_MAGIC "SEVACKP2"
#define CKPT_MAGIC_V1 "SEVACKP1"
#define CKPT_END "SEVAEND2"

/* Fixed-size binary header: this machine's byte order (checkpoints are for
 * resuming here, not for exchange; the model directory is the exchange). */
struct ckpt_header {
	char magic[8];
	uint64_t layout;       /* hash of tensor names, sizes, parts */
	int64_t nparams, opt_n, n, settings_len;
	int64_t step, total, pos, tokens, opt_t;
	int64_t epoch;
	uint64_t seed;
	uint64_t rng_s[4];
	int64_t rng_have_normal;
	double rng_normal;
	float beta1, beta2, eps, weight_decay;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t layout_hash(const struct vlm *m)
{
	uint64_t h = 14695981039346656037ULL;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		h = fnv(h, t->name, strlen(t->name) + 1);
		h = fnv(h, &t->numel, sizeof t->numel);
		h = fnv(h, &t->part, sizeof t->part);
	}
	return h;
}

/* Writes and reads that add their bytes to the file's digest. Large
 * buffers go in pieces: fwrite/fread of more than 2 GiB at once is not
 * portable. */
#define CKPT_CHUNK ((size_t)1 << 26)

static int write_all(FILE *f, struct sha256 *h, const void *p, size_t n)
{
	const unsigned char *c = p;
	while (n > 0) {
		size_t k = n < CKPT_CHUNK ? n : CKPT_CHUNK;
		if (fwrite(c, 1, k, f) != k)
			return -1;
		sha256_update(h, c, k);
		c += k;
		n -= k;
	}
	return 0;
}

static int read_all(FILE *f, struct sha256 *h, void *p, size_t n)
{
	unsigned char *c = p;
	while (n > 0) {
		size_t k = n < CKPT_CHUNK ? n : CKPT_CHUNK;
		if (fread(c, 1, k, f) != k)
			return -1;
		sha256_update(h, c, k);
		c += k;
		n -= k;
	}
	return 0;
}

/* Every parameter in table order (covers tensors in other allocations). */
static int write_params(FILE *f, struct sha256 *h, const struct vlm *m)
{
	for (int i = 0; i < m->ntensors; i++)
		if (write_all(f, h, m->tensors[i].data, (size_t)m->tensors[i].numel * sizeof(float)))
			return -1;
	return 0;
}

static char *state_json(const struct train_state *st, const struct train_opt *o,
			const char *settings)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddNumberToObject(j, "step", (double)st->step);
	cJSON_AddNumberToObject(j, "total_steps", (double)st->total);
	cJSON_AddNumberToObject(j, "epoch", st->epoch);
	cJSON_AddNumberToObject(j, "pos", (double)st->pos);
	cJSON_AddNumberToObject(j, "examples", (double)st->n);
	cJSON_AddNumberToObject(j, "seed", (double)st->seed); /* -s: exact below 2^53 */
	cJSON_AddNumberToObject(j, "adamw_t", (double)o->t);
	cJSON *s = cJSON_Parse(settings ? settings : "{}");
	if (s)
		cJSON_AddItemToObject(j, "settings", s);
	char *text = sample_json_print(j, 1);
	cJSON_Delete(j);
	return text;
}

int train_ckpt_save(const char *dir, const struct vlm *m, const struct train_opt *o,
		    const struct train_state *st, const char *settings)
{
	struct ckpt_header h;
	struct sha256 sum;
	unsigned char digest[32];
	if (!settings)
		settings = "{}";
	if (mkdir_p(dir) < 0)
		return -1;
	memset(&h, 0, sizeof h);
	memcpy(h.magic, CKPT_MAGIC, 8);
	h.layout = layout_hash(m);
	h.nparams = m->nparams;
	h.opt_n = o->n;
	h.n = st->n;
	h.settings_len = (int64_t)strlen(settings);
	h.step = st->step;
	h.total = st->total;
	h.pos = st->pos;
	h.tokens = st->tokens;
	h.opt_t = o->t;
	h.epoch = st->epoch;
	h.seed = st->seed;
	memcpy(h.rng_s, st->rng.s, sizeof h.rng_s);
	h.rng_have_normal = st->rng.have_normal;
	h.rng_normal = st->rng.normal;
	h.beta1 = o->beta1;
	h.beta2 = o->beta2;
	h.eps = o->eps;
	h.weight_decay = o->weight_decay;

	char *path = xasprintf("%s/trainer.bin", dir);
	struct out_file of;
	int rc = -1;
	if (out_open(&of, path) < 0)
		goto out;
	FILE *f = of.f;
	sha256_init(&sum);
	if (write_all(f, &sum, &h, sizeof h) || write_all(f, &sum, settings, strlen(settings)) ||
	    write_all(f, &sum, st->order, (size_t)st->n * sizeof *st->order) ||
	    write_params(f, &sum, m) ||
	    write_all(f, &sum, o->mem, (size_t)(2 * o->n) * sizeof(float)) ||
	    write_all(f, &sum, CKPT_END, 8) || (sha256_final(&sum, digest), 0) ||
	    fwrite(digest, 1, 32, f) != 32) {
		error("write '%s':", of.tmp ? of.tmp : path);
		out_abort(&of);
		goto out;
	}
	if (out_commit(&of) < 0)
		goto out;
	/* For people only; trainer.bin is the authority. */
	char *js = state_json(st, o, settings);
	char *jpath = xasprintf("%s/state.json", dir);
	rc = write_file_atomic(jpath, js, strlen(js));
	free(jpath);
	free(js);
out:
	free(path);
	return rc;
}

/* The header's run position against what a run can reach: -1 with a
 * message naming the field. N examples, TOTAL steps planned, SEED. */
static int ckpt_check_header(const char *path, const struct ckpt_header *h,
			     const struct train_state *st, const struct train_opt *o)
{
	if (h->total != st->total)
		return error("%s: corrupt checkpoint: total %lld, this run plans %ld steps", path,
			     (long long)h->total, st->total);
	if (h->step < 0 || h->step > h->total)
		return error("%s: corrupt checkpoint: step %lld not in [0, %lld]", path,
			     (long long)h->step, (long long)h->total);
	if (h->opt_t != h->step)
		return error("%s: corrupt checkpoint: AdamW t %lld is not the step %lld", path,
			     (long long)h->opt_t, (long long)h->step);
	/* each step takes at least one example of the current epoch */
	if (h->epoch < 0 || h->epoch > h->step || h->epoch > INT_MAX)
		return error("%s: corrupt checkpoint: epoch %lld not in [0, %lld]", path,
			     (long long)h->epoch, (long long)h->step);
	if (h->pos < 0 || h->pos > h->n || (h->step == 0) != (h->pos == 0 && h->epoch == 0) ||
	    (h->step > 0 && h->pos == 0))
		return error("%s: corrupt checkpoint: position %lld in epoch %lld at step %lld "
			     "(a data set of %lld)", path, (long long)h->pos, (long long)h->epoch,
			     (long long)h->step, (long long)h->n);
	if (h->tokens < 0)
		return error("%s: corrupt checkpoint: tokens %lld", path, (long long)h->tokens);
	if (h->seed != st->seed)
		return error("%s: corrupt checkpoint: seed %llu, this run's is %llu", path,
			     (unsigned long long)h->seed, (unsigned long long)st->seed);
	if (!(h->rng_s[0] | h->rng_s[1] | h->rng_s[2] | h->rng_s[3]) ||
	    (h->rng_have_normal != 0 && h->rng_have_normal != 1) ||
	    (h->rng_have_normal && !isfinite(h->rng_normal)))
		return error("%s: corrupt checkpoint: random generator state", path);
	/* the optimizer's constants are the run's (they are in its settings) */
	if (memcmp(&h->beta1, &o->beta1, sizeof h->beta1) ||
	    memcmp(&h->beta2, &o->beta2, sizeof h->beta2) ||
	    memcmp(&h->eps, &o->eps, sizeof h->eps) ||
	    memcmp(&h->weight_decay, &o->weight_decay, sizeof h->weight_decay))
		return error("%s: corrupt checkpoint: AdamW beta1 %g, beta2 %g, eps %g, weight "
			     "decay %g; this run has %g, %g, %g, %g", path, h->beta1, h->beta2, h->eps,
			     h->weight_decay, o->beta1, o->beta2, o->eps, o->weight_decay);
	return 0;
}

/* ORDER (n) must be the order of EPOCH for SEED, a permutation of [0, n):
 * the entries index the examples. */
static int ckpt_check_order(const char *path, const uint32_t *order, long n, uint64_t seed,
			    int epoch)
{
	unsigned char *seen = xcalloc((size_t)(n > 0 ? n : 1), 1);
	uint32_t *want = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *want);
	int rc = 0;
	train_order(want, n, seed, epoch);
	for (long i = 0; i < n && !rc; i++) {
		if (order[i] >= (uint64_t)n || seen[order[i]])
			rc = error("%s: corrupt checkpoint: data order entry %ld is %u: not a "
				   "permutation of [0, %ld)", path, i, order[i], n);
		else if (order[i] != want[i])
			rc = error("%s: corrupt checkpoint: data order entry %ld is %u, epoch %d's "
				   "order has %u", path, i, order[i], epoch, want[i]);
		else
			seen[order[i]] = 1;
	}
	free(seen);
	free(want);
	return rc;
}

/* Every parameter and moment a number; second moments not negative. */
static int ckpt_check_values(const char *path, const struct vlm *m, const struct train_opt *o)
{
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		for (long j = 0; j < t->numel; j++)
			if (!isfinite(t->data[j]))
				return error("%s: corrupt checkpoint: tensor '%s' element %ld is %g",
					     path, t->name, j, t->data[j]);
	}
	for (long j = 0; j < o->n; j++)
		if (!isfinite(o->m[j]) || !isfinite(o->v[j]) || o->v[j] < 0)
			return error("%s: corrupt checkpoint: AdamW moment %ld is %g, %g", path, j,
				     o->m[j], o->v[j]);
	return 0;
}

int train_ckpt_load(const char *dir, struct vlm *m, struct train_opt *o,
		    struct train_state *st, const char *settings)
{
	struct ckpt_header h;
	struct sha256 sum;
	unsigned char digest[32], stored[32];
	char *path = xasprintf("%s/trainer.bin", dir);
	char *saved = NULL;
	uint32_t *order = NULL;
	int rc = -1;
	FILE *f = fopen(path, "rb");
	if (!f) {
		rc = errno == ENOENT ? 1 : error("open '%s':", path);
		free(path);
		return rc;
	}
	if (!settings)
		settings = "{}";
	sha256_init(&sum);
	if (read_all(f, &sum, &h, sizeof h) ||
	    (memcmp(h.magic, CKPT_MAGIC, 8) && memcmp(h.magic, CKPT_MAGIC_V1, 8))) {
		error("%s: not a seva trainer checkpoint", path);
		goto out;
	}
	if (!memcmp(h.magic, CKPT_MAGIC_V1, 8)) {
		error("%s: a checkpoint of an older seva, without a checksum: start again "
		      "without --resume", path);
		goto out;
	}
	if (h.layout != layout_hash(m) || h.nparams != m->nparams || h.opt_n != o->n) {
		error("%s: checkpoint of another model layout (%lld parameters, this run has %ld)",
		      path, (long long)h.nparams, m->nparams);
		goto out;
	}
	if (h.n != st->n) {
		error("%s: checkpoint of a data set of %lld examples, this run has %ld", path,
		      (long long)h.n, st->n);
		goto out;
	}
	if (h.settings_len < 0 || h.settings_len > (1 << 24)) {
		error("%s: corrupt header", path);
		goto out;
	}
	/* Everything into buffers (the parameters into M, which the caller
	 * discards on failure), and nothing used before the digest matches. */
	saved = xmalloc((size_t)h.settings_len + 1);
	order = xmalloc((size_t)(st->n > 0 ? st->n : 1) * sizeof *order);
	if (read_all(f, &sum, saved, (size_t)h.settings_len) ||
	    read_all(f, &sum, order, (size_t)st->n * sizeof *order))
		goto truncated;
	saved[h.settings_len] = 0;
	for (int i = 0; i < m->ntensors; i++)
		if (read_all(f, &sum, m->tensors[i].data, (size_t)m->tensors[i].numel * sizeof(float)))
			goto truncated;
	tensor_weights_changed(m->params); /* overwritten, whatever follows */
	if (read_all(f, &sum, o->mem, (size_t)(2 * o->n) * sizeof(float)))
		goto truncated;
	char end[8];
	if (read_all(f, &sum, end, 8) || memcmp(end, CKPT_END, 8) || fread(stored, 1, 32, f) != 32)
		goto truncated;
	if (fgetc(f) != EOF) {
		error("%s: corrupt checkpoint: bytes after its end", path);
		goto out;
	}
	sha256_final(&sum, digest);
	if (memcmp(digest, stored, 32)) {
		error("%s: corrupt checkpoint: its SHA-256 does not match its contents", path);
		goto out;
	}
	if (strcmp(saved, settings)) {
		error("%s: checkpoint was made with other settings: %s (this run: %s)", path, saved,
		      settings);
		goto out;
	}
	if (ckpt_check_header(path, &h, st, o) < 0 ||
	    ckpt_check_order(path, order, st->n, st->seed, (int)h.epoch) < 0 ||
	    ckpt_check_values(path, m, o) < 0)
		goto out;
	memcpy(st->order, order, (size_t)st->n * sizeof *order);
	st->step = h.step;
	st->pos = h.pos;
	st->tokens = h.tokens;
	st->epoch = (int)h.epoch;
	memcpy(st->rng.s, h.rng_s, sizeof h.rng_s);
	st->rng.have_normal = (int)h.rng_have_normal;
	st->rng.normal = h.rng_normal;
	o->t = h.opt_t;
	rc = 0;
	goto out;
truncated:
	error("%s: truncated checkpoint", path);
out:
	fclose(f);
	free(saved);
	free(order);
	free(path);
	return rc;
}

/* A multiply-xorshift mix per 64-bit word: several GB/s, enough to name
 * a 7B model in seconds; not a cryptographic digest (a stale file, not an
 * adversary, is what it is for). */
static uint64_t id_mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
	return h ^ (h >> 29);
}

void train_model_id(const struct vlm *m, char hex[17])
{
	uint64_t h = 0x5EFA1D5EFA1D5EFAULL;
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (t->part == VLM_PART_LORA)
			continue;
		h = fnv(h, t->name, strlen(t->name) + 1);
		for (int d = 0; d < t->ndim; d++)
			h = id_mix(h, (uint64_t)t->shape[d]);
		long j = 0;
		for (uint64_t w; j + 1 < t->numel; j += 2) {
			memcpy(&w, t->data + j, sizeof w); /* the bits, not the values */
			h = id_mix(h, w);
		}
		if (j < t->numel) {
			uint32_t w;
			memcpy(&w, t->data + j, sizeof w);
			h = id_mix(h, w);
		}
	}
	snprintf(hex, 17, "%016llx", (unsigned long long)h);
}

int train_save_model(struct vlm *m, const char *out, const char *dtype, const char *args_json)
{
	return vlm_save_merged(m, out, dtype ? dtype : train_base_dtype(m),
			       args_json ? "training_args.json" : NULL, args_json);
}

const char *train_base_dtype(const struct vlm *m)
{
	struct safetensors st;
	char *one = m->dir ? xasprintf("%s/model.safetensors", m->dir) : NULL;
	char *index = m->dir ? xasprintf("%s/model.safetensors.index.json", m->dir) : NULL;
	int have = one && (access(one, F_OK) == 0 || access(index, F_OK) == 0);
	const char *dtype = "F32";
	free(one);
	free(index);
	if (!have || safetensors_open_dir(&st, m->dir, "model") < 0)
		return dtype;
	int n[3] = { 0, 0, 0 }; /* F32/F64, F16, BF16 */
	for (int i = 0; i < st.ntensors; i++) {
		int d = st.tensors[i].dtype;
		n[d == ST_F16 ? 1 : d == ST_BF16 ? 2 : 0] += d != ST_OTHER;
	}
	if (!n[0] && (n[1] || n[2]))
		dtype = n[1] && !n[2] ? "F16" : !n[1] ? "BF16" : "F32";
	safetensors_release(&st);
	return dtype;
}

static char **cmd_argv;
static int cmd_argc;

void train_args_command(int argc, char **argv)
{
	cmd_argc = argc;
	cmd_argv = xcalloc((size_t)argc + 1, sizeof *cmd_argv);
	for (int i = 0; i < argc; i++)
		cmd_argv[i] = xstrdup(argv[i]);
}

/* training_args.json: every setting of the run (TrainingArguments'
 * file, in JSON): the tool's settings that a resume must match, then
 * what does not shape the trajectory, the seva version and the command. */
static char *training_args(const struct train_loop *L, const char *dtype)
{
	const struct train_args *a = L->a;
	cJSON *j = cJSON_CreateObject(), *s = cJSON_Parse(L->settings ? L->settings : "{}"), *it;
	cJSON_AddStringToObject(j, "seva_version", seva_version());
	cJSON_AddStringToObject(j, "tool", progname);
	cJSON *cmd = cJSON_AddArrayToObject(j, "command");
	for (int i = 0; i < cmd_argc; i++)
		cJSON_AddItemToArray(cmd, cJSON_CreateString(cmd_argv[i]));
	while (s && (it = s->child)) {
		cJSON_DetachItemViaPointer(s, it);
		cJSON_AddItemToObject(j, it->string, it);
	}
	cJSON_Delete(s);
	cJSON_AddNumberToObject(j, "examples", (double)L->n);
	cJSON_AddStringToObject(j, "output_dir", a->out);
	cJSON_AddStringToObject(j, "dtype", dtype);
	cJSON_AddNumberToObject(j, "epochs", a->epochs);
	cJSON_AddNumberToObject(j, "max_steps", (double)a->max_steps);
	cJSON_AddNumberToObject(j, "save_every", (double)a->save_every);
	cJSON_AddNumberToObject(j, "stop_after", (double)a->stop_after);
	cJSON_AddBoolToObject(j, "resumed", a->resume);
	cJSON_AddBoolToObject(j, "keep_going", a->keep);
	if (a->metrics)
		cJSON_AddStringToObject(j, "metrics", a->metrics);
	cJSON_AddNumberToObject(j, "threads", a->threads);
	cJSON_AddNumberToObject(j, "world_size", dist_size());
	char *text = sample_json_print(j, 1);
	cJSON_Delete(j);
	return text;
}

/* --- DPO --- */

static const char *const dpo_names[DPO_NTERMS] = {
	"sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
	"aot", "aot_unpaired", "apo_zero", "apo_down", "sigmoid_norm", "dpop", "sft",
	"mdpo_cond", "mdpo_anchor",
};

const char *dpo_term_name(enum dpo_term t)
{
	return dpo_names[t];
}

void dpo_opts_init(struct dpo_opts *o)
{
	memset(o, 0, sizeof *o);
	o->nterms = 1;
	o->term[0] = DPO_SIGMOID;
	o->weight[0] = 1;
	o->beta = 0.1;
	o->dpop_lambda = 50;
}

int dpo_loss_parse(struct dpo_opts *o, const char *opt, const char *spec)
{
	char *copy = xstrdup(spec), *save = NULL;
	int n = 0, rc = -1;
	enum dpo_term term[DPO_MAX_TERMS];
	double weight[DPO_MAX_TERMS];
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(t, ':');
		double w = 1;
		if (colon) {
			*colon = 0;
			if (parse_double(opt, colon + 1, 0, 1e6, &w) < 0)
				goto out;
		}
		int i = parse_choice(opt, t, dpo_names, DPO_NTERMS);
		if (i < 0)
			goto out;
		for (int j = 0; j < n; j++)
			if (term[j] == (enum dpo_term)i) {
				warn("%s: '%s' named twice", opt, t);
				goto out;
			}
		if (n == DPO_MAX_TERMS) {
			warn("%s: more than %d terms", opt, DPO_MAX_TERMS);
			goto out;
		}
		term[n] = (enum dpo_term)i;
		weight[n++] = w;
	}
	if (!n) {
		warn("%s: no loss named", opt);
		goto out;
	}
	o->nterms = n;
	memcpy(o->term, term, sizeof term);
	memcpy(o->weight, weight, sizeof weight);
	rc = 0;
out:
	free(copy);
	return rc;
}

void dpo_set_term(struct dpo_opts *o, enum dpo_term t, double weight)
{
	int i = 0;
	while (i < o->nterms && o->term[i] != t)
		i++;
	if (weight == 0) {
		if (i < o->nterms) {
			memmove(o->term + i, o->term + i + 1, (size_t)(o->nterms - i - 1) * sizeof *o->term);
			memmove(o->weight + i, o->weight + i + 1,
				(size_t)(o->nterms - i - 1) * sizeof *o->weight);
			o->nterms--;
		}
		return;
	}
	if (i == o->nterms) {
		assert(o->nterms < DPO_MAX_TERMS);
		o->term[o->nterms++] = t;
	}
	o->weight[i] = weight;
}

double dpo_term_weight(const struct dpo_opts *o, enum dpo_term t)
{
	for (int i = 0; i < o->nterms; i++)
		if (o->term[i] == t)
			return o->weight[i];
	return 0;
}

char *dpo_loss_text(const struct dpo_opts *o)
{
	struct buf b;
	size_t len;
	buf_init(&b);
	for (int i = 0; i < o->nterms; i++)
		buf_printf(&b, "%s%s:%.9g", i ? "," : "", dpo_names[o->term[i]], o->weight[i]);
	buf_add(&b, "", 1);
	return (char *)buf_detach(&b, &len);
}

int dpo_needs_corrupted(const struct dpo_opts *o)
{
	return dpo_term_weight(o, DPO_MDPO_COND) != 0;
}

/* log σ(x) without overflow; log σ(0) = -log 2 exactly (log1p(1)). */
static double log_sigmoid(double x)
{
	return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double sigmoid(double x)
{
	return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* -(1 - ε) log σ(x) - ε log σ(-x) and its derivative: DPO's sigmoid with
 * cDPO's smoothing, the aot losses' per-position term. */
static double smoothed(double x, double eps, double *d)
{
	*d = -(1 - eps) * sigmoid(-x) + eps * sigmoid(x);
	return -(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x);
}

/* The order that sorts V (k) ascending, in IDX; insertion sort: k is a
 * forward pass's pairs. */
static void sort_order(const double *v, int k, int *idx)
{
	for (int i = 0; i < k; i++) {
		int j = i;
		while (j > 0 && v[idx[j - 1]] > v[i]) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = i;
	}
}

/* aot (PAIRED) and aot_unpaired: the log-ratios A (policy) and B
 * (reference, or rejected for unpaired) sorted on their own, the smoothed
 * sigmoid of β(a_(j) − b_(j)) at each rank j. Adds W times the per-rank
 * losses to LOSS (spread one per pair) and the gradients to DA, DB. */
static void aot_term(const double *a, const double *b, int k, double beta, double eps, double w,
		     double *loss, double *da, double *db)
{
	int *ia = xmalloc((size_t)k * sizeof *ia), *ib = xmalloc((size_t)k * sizeof *ib);
	sort_order(a, k, ia);
	sort_order(b, k, ib);
	for (int j = 0; j < k; j++) {
		double d, l = smoothed(beta * (a[ia[j]] - b[ib[j]]), eps, &d);
		loss[j] += w * l;
		da[ia[j]] += w * beta * d;
		db[ib[j]] -= w * beta * d;
	}
	free(ia);
	free(ib);
}

void dpo_batch_loss(const struct dpo_opts *o, const struct dpo_in *in, int k,
		    double sft_tokens, struct dpo_out *out)
{
	const double beta = o->beta, eps = o->label_smoothing;
	double *lc = xmalloc((size_t)(k ? 4 * k : 1) * sizeof *lc), *lr = lc + k;
	double *tmp = lc + 2 * k, *dtmp = lc + 3 * k;
	if (sft_tokens <= 0) {
		double sum = 0;
		for (int i = 0; i < k; i++)
			sum += in[i].nc;
		sft_tokens = k ? sum / k : 1;
	}
	if (sft_tokens <= 0)
		sft_tokens = 1;
	for (int i = 0; i < k; i++) {
		double rc = o->reference_free ? 0 : in[i].rc, rr = o->reference_free ? 0 : in[i].rr;
		lc[i] = in[i].pc - rc;
		lr[i] = in[i].pr - rr;
		memset(&out[i], 0, sizeof out[i]);
		out[i].reward_c = beta * lc[i];
		out[i].reward_r = beta * lr[i];
	}
	for (int t = 0; t < o->nterms; t++) {
		const double w = o->weight[t];
		enum dpo_term term = o->term[t];
		if (term == DPO_AOT || term == DPO_AOT_UNPAIRED) {
			double *dl = xcalloc((size_t)(k ? 2 * k : 1), sizeof *dl), *loss = dl;
			double *da = xcalloc((size_t)(k ? 2 * k : 1), sizeof *da), *db = da + k;
			if (term == DPO_AOT) {
				/* policy log-ratio chosen/rejected against the reference's */
				for (int i = 0; i < k; i++) {
					tmp[i] = in[i].pc - in[i].pr;
					dtmp[i] = o->reference_free ? 0 : in[i].rc - in[i].rr;
				}
				aot_term(tmp, dtmp, k, beta, eps, w, loss, da, db);
				for (int i = 0; i < k; i++) {
					out[i].dpc += da[i];
					out[i].dpr -= da[i];
				}
			} else {
				aot_term(lc, lr, k, beta, eps, w, loss, da, db);
				for (int i = 0; i < k; i++) {
					out[i].dpc += da[i];
					out[i].dpr += db[i];
				}
			}
			for (int i = 0; i < k; i++)
				out[i].loss += loss[i];
			free(dl);
			free(da);
			continue;
		}
		for (int i = 0; i < k; i++) {
			const struct dpo_in *p = &in[i];
			double c = lc[i], r = lr[i], z = c - r, h = beta * z;
			double nc = p->nc > 0 ? p->nc : 1, nr = p->nr > 0 ? p->nr : 1;
			double l = 0, dc = 0, dr = 0, dm = 0, d;
			switch (term) {
			case DPO_SIGMOID:
				l = smoothed(h, eps, &d);
				dc = beta * d, dr = -beta * d;
				break;
			case DPO_SIGMOID_NORM:
				l = smoothed(beta * (c / nc - r / nr), 0, &d);
				dc = beta * d / nc, dr = -beta * d / nr;
				break;
			case DPO_IPO: {
				double q = c / nc - r / nr - 1 / (2 * beta);
				l = q * q;
				dc = 2 * q / nc, dr = -2 * q / nr;
				break;
			}
			case DPO_HINGE:
				l = 1 - h > 0 ? 1 - h : 0;
				dc = 1 - h > 0 ? -beta : 0, dr = -dc;
				break;
			case DPO_ROBUST:
				l = (-(1 - eps) * log_sigmoid(h) + eps * log_sigmoid(-h)) / (1 - 2 * eps);
				d = (-(1 - eps) * sigmoid(-h) - eps * sigmoid(h)) / (1 - 2 * eps);
				dc = beta * d, dr = -beta * d;
				break;
			case DPO_EXO_PAIR: {
				/* KL(softmax of the two rewards || (1 - ε, ε)) */
				double qw = sigmoid(h), ql = sigmoid(-h);
				l = qw * (log_sigmoid(h) - log1p(-eps)) + ql * (log_sigmoid(-h) - log(eps));
				d = qw * ql * (h - log1p(-eps) + log(eps));
				dc = beta * d, dr = -beta * d;
				break;
			}
			case DPO_NCA_PAIR:
				l = -log_sigmoid(beta * c) - 0.5 * log_sigmoid(-beta * c) -
				    0.5 * log_sigmoid(-beta * r);
				dc = beta * (-sigmoid(-beta * c) + 0.5 * sigmoid(beta * c));
				dr = beta * 0.5 * sigmoid(beta * r);
				break;
			case DPO_BCO_PAIR:
				l = -log_sigmoid(beta * c) - log_sigmoid(-beta * r);
				dc = -beta * sigmoid(-beta * c), dr = beta * sigmoid(beta * r);
				break;
			case DPO_SPPO_HARD: {
				double a = c - 0.5 / beta, b = r + 0.5 / beta;
				l = a * a + b * b;
				dc = 2 * a, dr = 2 * b;
				break;
			}
			case DPO_APO_ZERO: {
				double sc = sigmoid(beta * c), sr = sigmoid(beta * r);
				l = 1 - sc + sr;
				dc = -beta * sc * (1 - sc), dr = beta * sr * (1 - sr);
				break;
			}
			case DPO_APO_DOWN: {
				double sc = sigmoid(beta * c), sz = sigmoid(h);
				l = sc + 1 - sz;
				dc = beta * sc * (1 - sc) - beta * sz * (1 - sz);
				dr = beta * sz * (1 - sz);
				break;
			}
			case DPO_DPOP: {
				/* the chosen answer's fall below the reference, penalised */
				double rc = o->reference_free ? 0 : p->rc;
				int below = rc > p->pc;
				double u = z - o->dpop_lambda * (below ? rc - p->pc : 0);
				l = -log_sigmoid(beta * u);
				d = -beta * sigmoid(-beta * u);
				dc = d * (1 + (below ? o->dpop_lambda : 0)), dr = -d;
				break;
			}
			case DPO_SFT:
				l = -p->pc / sft_tokens;
				dc = -1 / sft_tokens;
				break;
			case DPO_MDPO_COND: {
				double m = p->pcm - (o->reference_free ? 0 : p->rcm);
				l = -log_sigmoid(beta * (c - m));
				d = -beta * sigmoid(-beta * (c - m));
				dc = d, dm = -d;
				break;
			}
			case DPO_MDPO_ANCHOR:
				l = -log_sigmoid(beta * c - o->mdpo_delta);
				dc = -beta * sigmoid(-(beta * c - o->mdpo_delta));
				break;
			default:
				abort();
			}
			out[i].loss += w * l;
			out[i].dpc += w * dc;
			out[i].dpr += w * dr;
			out[i].dpcm += w * dm;
		}
	}
	free(lc);
}

/* --- run control --- */

volatile sig_atomic_t train_stop_signal;

static void on_signal(int sig)
{
	train_stop_signal = sig;
}

void train_signals_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

FILE *train_metrics_open(const char *path, long resume_step)
{
	if (resume_step >= 0) {
		size_t len;
		FILE *old = fopen(path, "r");
		if (old) {
			struct buf keep;
			char *line = NULL;
			size_t cap = 0;
			buf_init(&keep);
			while (getline(&line, &cap, old) > 0) {
				cJSON *j = cJSON_Parse(line);
				cJSON *s = j ? cJSON_GetObjectItem(j, "step") : NULL;
				if (cJSON_IsNumber(s) && s->valuedouble <= (double)resume_step)
					buf_addstr(&keep, line);
				cJSON_Delete(j);
			}
			free(line);
			fclose(old);
			unsigned char *data = buf_detach(&keep, &len);
			int rc = write_file_atomic(path, data, len);
			free(data);
			if (rc < 0)
				return NULL;
		}
	}
	FILE *f = fopen(path, resume_step >= 0 ? "a" : "w");
	if (!f)
		error("open '%s':", path);
	return f;
}

int train_metrics_line(FILE *f, const char *const *names, const double *values, int n)
{
	cJSON *j = cJSON_CreateObject();
	for (int i = 0; i < n; i++)
		cJSON_AddNumberToObject(j, names[i], values[i]);
	char *text = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	int rc = fputs(text, f) < 0 || fputc('\n', f) < 0 || fflush(f) != 0 ? -1 : 0;
	free(text);
	return rc;
}

/* --- the options both training tools take --- */

void train_args_init(struct train_args *a)
{
	memset(a, 0, sizeof *a);
	a->batch = 8;
	a->accum = 1;
	a->epochs = 1;
	a->warmup = 0.03;
	a->warmup_steps = -1;
	a->adam_beta1 = 0.9;
	a->adam_beta2 = 0.999;
	a->adam_eps = 1e-8;
	a->projector_lr = -1; /* --lr */
	a->clip = 1.0;
	a->schedule = LR_COSINE;
	a->dtype = NULL; /* the base's */
	a->precision = TENSOR_F32; /* bits that do not depend on a timing */
}

int train_args_option(struct train_args *a, int c, const char *arg, const char *usage)
{
	/* a bad value names its option and the values it takes, not the usage */
	static const char *const dtype_names[] = { "f32", "bf16" };
	(void)usage;
	switch (c) {
	case 'm': a->model = arg; break;
	case 'o': a->out = arg; break;
	case TRAIN_O_TRAIN: a->train = arg; break;
	case TRAIN_O_LORA: a->lora = (int)arg_long("--lora", arg, 1, 4096); break;
	case TRAIN_O_ALPHA: a->lora_alpha = arg_double("--lora-alpha", arg, 1e-6, 1e6); break;
	case TRAIN_O_RSLORA: a->rslora = 1; break;
	/* 1 would drop every input and divide by zero */
	case TRAIN_O_LORA_DROPOUT: a->lora_dropout = arg_double("--lora-dropout", arg, 0, 0.999); break;
	case TRAIN_O_PROJECTOR_LR: a->projector_lr = arg_double("--projector-lr", arg, 0, 10); break;
	case TRAIN_O_LR: a->lr = arg_double("--lr", arg, 0, 10); break;
	case TRAIN_O_EPOCHS: a->epochs = (int)arg_long("--epochs", arg, 1, 1000000); break;
	case TRAIN_O_MAXSTEPS: a->max_steps = arg_long("--max-steps", arg, 1, LONG_MAX); break;
	case 'b': a->batch = (int)arg_long("-b", arg, 1, 65536); break;
	case TRAIN_O_ACCUM: a->accum = (int)arg_long("--accum", arg, 1, 65536); break;
	case TRAIN_O_SCHED:
		a->schedule = (enum lr_schedule)arg_choice("--schedule", arg, schedule_names,
							   (int)ARRAY_LEN(schedule_names));
		break;
	case TRAIN_O_WARMUP: a->warmup = arg_double("--warmup-ratio", arg, 0, 1); break;
	case TRAIN_O_WARMUP_STEPS:
		a->warmup_steps = arg_long("--warmup-steps", arg, 0, LONG_MAX);
		break;
	/* β = 1 would divide by zero in the bias correction 1 - β^t */
	case TRAIN_O_BETA1: a->adam_beta1 = arg_double("--adam-beta1", arg, 0, 0.999999); break;
	case TRAIN_O_BETA2: a->adam_beta2 = arg_double("--adam-beta2", arg, 0, 0.999999); break;
	case TRAIN_O_EPS: a->adam_eps = arg_double("--adam-eps", arg, 1e-30, 1); break;
	case TRAIN_O_CLIP: a->clip = arg_double("--clip", arg, 0, 1e9); break;
	case TRAIN_O_WD: a->wd = arg_double("--weight-decay", arg, 0, 10); break;
	case 's': a->seed = arg_seed("-s", arg); break;
	case TRAIN_O_SAVE: a->save_every = arg_long("--save-every", arg, 0, LONG_MAX); break;
	case TRAIN_O_STOP: a->stop_after = arg_long("--stop-after", arg, 1, LONG_MAX); break;
	case TRAIN_O_RESUME: a->resume = 1; break;
	case TRAIN_O_METRICS: a->metrics = arg; break;
	case TRAIN_O_DTYPE:
		a->dtype = arg_choice("--dtype", arg, dtype_names, 2) ? "BF16" : "F32";
		break;
	case 'j': a->threads = (int)arg_long("-j", arg, 0, 1024); break;
	case 'k': a->keep = 1; break;
	case 'q': a->quiet = 1; break;
	case 'v': a->verbose = 1; break;
	case TRAIN_O_PRECISION:
		a->precision = arg_choice("--precision", arg, tensor_precision_names, 3);
		break;
	default: return 0;
	}
	return 1;
}

void train_args_setup(struct train_args *a)
{
	if ((long)a->batch * a->accum > TRAIN_MAX_GLOBAL) {
		warn("-b %d x --accum %d = %ld examples a step: at most %ld", a->batch, a->accum,
		     (long)a->batch * a->accum, TRAIN_MAX_GLOBAL);
		exit(2);
	}
	if (dist_size() > 1) {
		/* rank 0 speaks and writes; the ranks of a host share its cores */
		if (dist_rank() > 0)
			a->quiet = 1;
		if (!a->threads) {
			long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
			a->threads = cores > 1 ? (int)cores : 1;
		}
	}
	tensor_set_threads(a->threads);
	if (tensor_set_precision(a->precision) < 0)
		exit(1);
	if (dist_size() > 1) {
		/* one precision for the whole job: rank 0's probe decides */
		int p = tensor_precision();
		dist_bcast(&p, sizeof p, 0);
		if (p != tensor_precision() && tensor_set_precision(p) < 0)
			exit(1);
	}
	if (a->verbose && !a->quiet)
		fprintf(stderr, "%s: %s; products in %s\n", progname, tensor_blas_info(),
			tensor_precision_info());
}

int train_output_check(const struct train_args *a)
{
	if (dist_rank() > 0)
		return 0;
	if (a->resume) {
		char *ckpt = xasprintf("%s.ckpt", a->out);
		char *bin = xasprintf("%s/trainer.bin", ckpt);
		char *state = xasprintf("%s/state.json", ckpt);
		tmp_reclaim(a->out, a->quiet);
		tmp_reclaim(bin, a->quiet);
		tmp_reclaim(state, a->quiet);
		if (a->metrics)
			tmp_reclaim(a->metrics, a->quiet);
		free(state);
		free(bin);
		free(ckpt);
	} else {
		/* an earlier run's checkpoint is not this run's start: say so
		 * (even with -q: it is about the data, not progress), since
		 * this run's checkpoints will replace it */
		char *bin = xasprintf("%s.ckpt/trainer.bin", a->out);
		if (!access(bin, F_OK))
			warn("%s.ckpt holds an earlier run's checkpoint: this run starts from step 0 "
			     "(--resume continues that one) and its checkpoints replace it", a->out);
		free(bin);
	}
	return vlm_save_check(a->out);
}

void train_args_check(const struct train_args *a, int lora, unsigned parts)
{
	const char *bad = lora ? NULL : a->rslora ? "--use-rslora" : a->lora_dropout ? "--lora-dropout"
										   : NULL;
	if (bad) {
		warn("%s: shapes LoRA adapters, and this run has none (give --lora R)", bad);
		exit(2);
	}
	if (a->projector_lr >= 0 && !(parts & VLM_PART_PROJECTOR)) {
		warn("--projector-lr: the projector does not train (--train has no projector)");
		exit(2);
	}
}

void train_lora_add(const struct train_args *a, struct vlm *m, unsigned targets)
{
	vlm_lora_add(m, a->lora, (float)a->lora_alpha, targets, a->seed);
	m->lora.rslora = a->rslora;
	m->lora.dropout = (float)a->lora_dropout;
}

uint64_t train_drop_key(uint32_t example, int seq)
{
	return (uint64_t)example << 2 | (uint64_t)(seq & 3);
}

unsigned train_parse_parts(const char *s)
{
	/* bit i is VLM_PART_VISION, _PROJECTOR, _DECODER */
	static const char *const parts[] = { "vision", "projector", "decoder" };
	return arg_names("--train", s, parts, 3);
}

long train_warmup(const struct train_args *a, long total)
{
	return a->warmup_steps >= 0 ? a->warmup_steps : lr_warmup_steps(total, a->warmup);
}

long train_total_steps(const struct train_args *a, long n)
{
	long global = (long)a->batch * a->accum;
	return a->max_steps ? a->max_steps : (n + global - 1) / global * a->epochs;
}

char *train_settings(const struct train_args *a, long total, unsigned parts, int lora)
{
	return xasprintf("\"lr\":%.9g,\"schedule\":\"%s\",\"warmup_ratio\":%.9g,"
			 "\"total_steps\":%ld,\"batch\":%d,\"accum\":%d,\"clip\":%.9g,"
			 "\"weight_decay\":%.9g,\"seed\":%llu,\"train\":%u,\"lora\":%d,"
			 "\"lora_alpha\":%.9g,\"precision\":\"%s\",\"warmup_steps\":%ld,"
			 "\"adam_beta1\":%.9g,\"adam_beta2\":%.9g,\"adam_eps\":%.9g,"
			 "\"use_rslora\":%s,\"lora_dropout\":%.9g,\"projector_lr\":%.9g",
			 a->lr, lr_schedule_name(a->schedule), a->warmup, total, a->batch,
			 a->accum, a->clip, a->wd, (unsigned long long)a->seed, parts, lora,
			 a->lora_alpha, tensor_precision_names[tensor_precision()],
			 train_warmup(a, total), a->adam_beta1, a->adam_beta2, a->adam_eps,
			 lora && a->rslora ? "true" : "false", lora ? a->lora_dropout : 0.0,
			 a->projector_lr >= 0 ? a->projector_lr : a->lr);
}

/* --- the training loop --- */

/* --- the best evaluation's model (--keep best) --- */

/* The trainable tensors as they were at the best evaluation so far. */
struct best {
	long step;    /* -1: none yet */
	double value;
	long n;       /* floats: the trainable tensors' in table order */
	float *data;
};

#define BEST_MAGIC "SEVABST1"

static void best_init(struct best *b, const struct vlm *m)
{
	b->step = -1;
	b->value = 0;
	b->n = 0;
	for (int i = 0; i < m->ntensors; i++)
		if (train_tensor_trains(m, &m->tensors[i]))
			b->n += m->tensors[i].numel;
	b->data = xmalloc((size_t)(b->n ? b->n : 1) * sizeof(float));
}

/* Copies the trainable tensors into B (TO_B) or back into M. */
static void best_copy(struct best *b, struct vlm *m, int to_b)
{
	long off = 0;
	for (int i = 0; i < m->ntensors; i++) {
		struct vlm_tensor *t = &m->tensors[i];
		if (!train_tensor_trains(m, t))
			continue;
		if (to_b)
			memcpy(b->data + off, t->data, (size_t)t->numel * sizeof(float));
		else
			memcpy(t->data, b->data + off, (size_t)t->numel * sizeof(float));
		off += t->numel;
	}
}

/* DIR/best.bin: magic, step, value, count, the floats; written atomically. */
static int best_save(const struct best *b, const char *dir)
{
	struct buf f;
	size_t len;
	int64_t step = b->step, n = b->n;
	buf_init(&f);
	buf_add(&f, BEST_MAGIC, 8);
	buf_add(&f, &step, sizeof step);
	buf_add(&f, &b->value, sizeof b->value);
	buf_add(&f, &n, sizeof n);
	buf_add(&f, b->data, (size_t)b->n * sizeof(float));
	unsigned char *data = buf_detach(&f, &len);
	char *path = xasprintf("%s/best.bin", dir);
	int rc = write_file_atomic(path, data, len);
	free(path);
	free(data);
	return rc;
}

/* Reads DIR/best.bin into B: 0, 1 if there is none, -1 (message) if it is
 * not one of this run's. */
static int best_load(struct best *b, const char *dir)
{
	char *path = xasprintf("%s/best.bin", dir);
	size_t len;
	int rc = -1;
	if (access(path, F_OK) < 0) {
		free(path);
		return 1;
	}
	unsigned char *d = read_file(path, &len);
	size_t head = 8 + 2 * sizeof(int64_t) + sizeof(double);
	int64_t step, n;
	if (!d)
		goto out;
	if (len < head || memcmp(d, BEST_MAGIC, 8)) {
		error("%s: not a best-model file", path);
		goto out;
	}
	memcpy(&step, d + 8, sizeof step);
	memcpy(&n, d + 8 + sizeof step + sizeof(double), sizeof n);
	if (n != b->n || len != head + (size_t)n * sizeof(float) || step < 0) {
		error("%s: of another model layout or truncated (%lld floats, this run trains %ld)",
		      path, (long long)n, b->n);
		goto out;
	}
	b->step = (long)step;
	memcpy(&b->value, d + 8 + sizeof step, sizeof b->value);
	memcpy(b->data, d + head, (size_t)n * sizeof(float));
	rc = 0;
out:
	free(d);
	free(path);
	return rc;
}

/* Checkpoint of the run so far, on rank 0, with the best model so far. */
static int save_ckpt(const struct train_loop *L, const char *ckpt, const struct train_opt *o,
		     const struct train_state *st, const struct best *b)
{
	if (dist_rank() > 0)
		return 0;
	if (train_ckpt_save(ckpt, L->m, o, st, L->settings) < 0)
		return -1;
	return L->keep_best && b->step >= 0 ? best_save(b, ckpt) : 0;
}

/* The evaluation at the step ST stands at: a metrics line, and the model
 * kept if it is the best so far. */
static int evaluate(const struct train_loop *L, FILE *mf, const struct train_state *st,
		    struct best *b)
{
	const char *names[TRAIN_SUMS + 2];
	double v[TRAIN_SUMS + 2];
	names[0] = "step", v[0] = (double)st->step;
	names[1] = "epoch", v[1] = train_epoch_f(st);
	L->eval(L->ctx, v + 2);
	for (int i = 0; i < L->n_eval; i++)
		names[2 + i] = L->eval_names[i];
	if (mf && train_metrics_line(mf, names, v, 2 + L->n_eval) < 0)
		return error("write '%s':", L->a->metrics);
	if (L->keep_best) {
		double x = v[2 + L->keep_metric];
		if (isfinite(x) && (b->step < 0 || (L->keep_greater ? x > b->value : x < b->value))) {
			b->step = st->step;
			b->value = x;
			best_copy(b, L->m, 1);
		}
	}
	return 0;
}

/* The gradient of the next global batch: the tool's forward and backward
 * on this rank's rows, then the sums over ranks and clipping. Fills SUMS
 * (added over ranks), the batch's DENOM and the grad NORM before clipping;
 * returns the loss. */
static double batch_grad(const struct train_loop *L, struct train_state *st, uint32_t *idx,
			 double *sums, double *denom, double *norm)
{
	const struct train_args *a = L->a;
	int k = train_next_batch(st, (int)((long)a->batch * a->accum), idx);
	*denom = L->denom ? L->denom(L->ctx, idx, k) : k;
	/* rank r takes rows r, r + N, ... of the global batch */
	int kl = 0;
	for (int i = dist_rank(); i < k; i += dist_size())
		idx[kl++] = idx[i];
	memset(sums, 0, TRAIN_SUMS * sizeof *sums);
	vlm_zero_grad(L->m);
	for (int i = 0; i < kl; i += a->batch)
		L->micro(L->ctx, idx + i, kl - i < a->batch ? kl - i : a->batch, *denom, sums);
	train_allreduce_grad(L->m);
	dist_allreduce_sum_double(sums, L->nsums);
	*norm = train_clip_grad(L->m, a->clip);
	return sums[0] / *denom;
}

/* The step's metrics line and progress text. */
static int report(const struct train_loop *L, FILE *mf, struct progress *p,
		  const struct train_state *st, double loss, const double *sums, double denom,
		  double lr, double norm, double dt)
{
	const char *names[TRAIN_SUMS + 5];
	double v[TRAIN_SUMS + 5];
	int n = 0, nv = L->nsums - 1;
	double rate = denom / (dt > 0 ? dt : 1e-9);
	char rate_name[64], text[160];
	snprintf(rate_name, sizeof rate_name, "%s_per_s", L->unit);
	names[n] = "step", v[n++] = (double)st->step;
	names[n] = "epoch", v[n++] = train_epoch_f(st);
	names[n] = "loss", v[n++] = loss;
	for (int i = 0; i < nv; i++)
		names[n] = L->names[i], v[n++] = sums[1 + i] / denom;
	names[n] = "lr", v[n++] = lr;
	names[n] = "grad_norm", v[n++] = norm;
	names[n] = rate_name, v[n++] = rate;
	if (mf && train_metrics_line(mf, names, v, n) < 0)
		return error("write '%s':", L->a->metrics);
	int len = snprintf(text, sizeof text, "loss %.4f, ", loss);
	if (L->progress) {
		L->progress(L->ctx, v + 3, text + len, sizeof text - (size_t)len);
		len += (int)strlen(text + len);
		len += snprintf(text + len, sizeof text - (size_t)len, ", ");
	}
	snprintf(text + len, sizeof text - (size_t)len, "lr %.2e, %.1f %s/s", lr, rate, L->unit);
	progress_update(p, st->step, text);
	return 0;
}

int train_run(const struct train_loop *L)
{
	const struct train_args *a = L->a;
	char *ckpt = xasprintf("%s.ckpt", a->out);
	long warmup = train_warmup(a, L->total);
	/* before training: the file read is the base, even for -m X -o X */
	const char *dtype = a->dtype ? a->dtype : train_base_dtype(L->m);
	uint32_t *idx = xmalloc((size_t)a->batch * (size_t)a->accum * sizeof *idx);
	struct train_opt o;
	struct train_state st;
	struct progress p;
	struct best best;
	FILE *mf = NULL;
	int rc = -1;

	assert(L->nsums >= 1 && L->nsums <= TRAIN_SUMS);
	assert(!L->eval || L->n_eval <= TRAIN_SUMS);
	assert(!L->keep_best || (L->eval && L->keep_metric < L->n_eval));
	best_init(&best, L->m);
	train_opt_init(&o, L->m, (float)a->adam_beta1, (float)a->adam_beta2, (float)a->adam_eps,
		       (float)a->wd);
	train_state_init(&st, L->n, L->total, a->seed);
	if (a->resume) {
		int r = train_ckpt_load(ckpt, L->m, &o, &st, L->settings);
		if (r < 0)
			goto out;
		if (r == 1 && !a->quiet)
			warn("--resume: no checkpoint in '%s', starting from step 0", ckpt);
		if (r == 0 && L->keep_best && best_load(&best, ckpt) < 0)
			goto out;
	}
	long resumed_at = st.step, last_saved = st.step;
	if (a->metrics && dist_rank() == 0 &&
	    !(mf = train_metrics_open(a->metrics, a->resume ? st.step : -1)))
		goto out;
	train_signals_install();
	progress_init(&p, "steps", L->total, a->quiet);
	if (L->eval && st.step == 0 && evaluate(L, mf, &st, &best) < 0)
		goto out;

	while (st.step < L->total) {
		if (dist_any(train_stop_signal)) { /* a signal to any rank stops all */
			progress_done(&p);
			if (save_ckpt(L, ckpt, &o, &st, &best) < 0)
				goto out;
			if (dist_rank() == 0)
				warn("interrupted by signal %d: checkpoint of step %ld saved in '%s' "
				     "(continue with --resume)", (int)train_stop_signal, st.step, ckpt);
			goto stop; /* no rank ends the job before that is written */
		}
		double sums[TRAIN_SUMS], denom, norm, t0 = now_seconds();
		/* LoRA dropout's masks: this step's (and the example's, see train_drop_key) */
		L->m->lora.dropout_seed = a->seed ^ ((uint64_t)st.step + 1) * 0xd1b54a32d192ed03ull;
		double loss = batch_grad(L, &st, idx, sums, &denom, &norm);
		if (!isfinite(loss) || !isfinite(norm)) {
			error("step %ld: %s is %g; stopped, the last good checkpoint (step %ld) is "
			      "in '%s'", st.step + 1, isfinite(loss) ? "grad norm" : "loss",
			      isfinite(loss) ? norm : loss, last_saved, ckpt);
			goto out;
		}
		double lr = lr_at(a->schedule, a->lr, st.step, L->total, warmup);
		/* LLaVA's mm_projector_lr: its own group, on the same schedule */
		double plr = a->projector_lr < 0 ? lr
			     : lr_at(a->schedule, a->projector_lr, st.step, L->total, warmup);
		train_opt_step_groups(&o, L->m, (float)lr, (float)plr);
		st.step++;
		st.tokens += (long)denom;
		if (report(L, mf, &p, &st, loss, sums, denom, lr, norm, now_seconds() - t0) < 0)
			goto out;
		if (L->eval && ((L->eval_every && st.step % L->eval_every == 0) || st.step == L->total) &&
		    evaluate(L, mf, &st, &best) < 0)
			goto out;
		int stop_here = a->stop_after && st.step - resumed_at >= a->stop_after &&
				st.step < L->total;
		if ((a->save_every && st.step % a->save_every == 0 && st.step < L->total) ||
		    stop_here) {
			if (save_ckpt(L, ckpt, &o, &st, &best) < 0)
				goto out;
			last_saved = st.step;
		}
		if (stop_here) {
			progress_done(&p);
			if (!a->quiet)
				warn("stopped after step %ld (--stop-after): continue with --resume",
				     st.step);
			rc = 1;
			goto stop;
		}
	}
	progress_done(&p);
	if (L->keep_best && best.step >= 0) {
		static const char *const names[] = { "step", "best_global_step", "best_metric" };
		double v[3] = { (double)st.step, (double)best.step, best.value };
		if (best.step != st.step)
			best_copy(&best, L->m, 0);
		if (mf && train_metrics_line(mf, names, v, 3) < 0) {
			error("write '%s':", a->metrics);
			goto out;
		}
		if (!a->quiet)
			warn("--keep best: the model of step %ld (%s %.6g) is the one written",
			     best.step, L->eval_names[L->keep_metric], best.value);
	}
	int bad = mf && fclose(mf) != 0;
	mf = NULL;
	if (bad) {
		error("write '%s':", a->metrics);
		goto out;
	}
	if (dist_rank() == 0) {
		char *args = training_args(L, dtype);
		int bad = train_save_model(L->m, a->out, dtype, args) < 0;
		free(args);
		if (bad)
			goto out;
	}
	rc = 0;
stop:
	dist_barrier(); /* a rank exiting non-zero (-k skips) must not end rank 0's write */
out:
	if (mf)
		fclose(mf);
	train_opt_release(&o);
	train_state_release(&st);
	free(best.data);
	free(idx);
	free(ckpt);
	return rc;
}
