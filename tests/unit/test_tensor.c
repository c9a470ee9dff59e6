/* test_tensor — every fast kernel against its naive twin or a double
 * reference, every backward against central finite differences of a
 * random linear functional of the output, conventions against torch
 * (tensor_ref.h), the half-precision conversions bit by bit, and the
 * OpenBLAS core selection (including the restart, in a child process). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "tensor.h"
#include "tensor_ref.h"

#define ARRAY_LEN_(a) (sizeof(a) / sizeof((a)[0]))

/* in OpenBLAS; only the test asks it directly (which core really runs) */
extern char *openblas_get_corename(void);

/* ---------------------------------------------------------------------- */
/* helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) /* uniform in [-1, 1) */
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((rng_state >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

static float *rnd(long n, float scale)
{
	float *x = malloc(sizeof(float) * (n > 0 ? n : 1));
	for (long i = 0; i < n; i++)
		x[i] = frand() * scale;
	return x;
}

static float *zeros(long n)
{
	return calloc(n > 0 ? n : 1, sizeof(float));
}

static float *copy(const float *x, long n)
{
	float *y = malloc(sizeof(float) * (n > 0 ? n : 1));
	memcpy(y, x, sizeof(float) * n);
	return y;
}

static float *seqf(long n, double ph) /* the inputs of tensor_ref.py */
{
	float *x = malloc(sizeof(float) * n);
	for (long i = 0; i < n; i++)
		x[i] = (float)sin(0.37 * i + ph);
	return x;
}

static double dotd(const float *a, const float *b, long n)
{
	double s = 0;
	for (long i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* The first failure of a loop of checks, printed under its "not ok" line. */
static char first_bad[256];

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	if (first_bad[0])
		return;
	va_start(ap, fmt);
	vsnprintf(first_bad, sizeof(first_bad), fmt, ap);
	va_end(ap);
}

/* tap_ok for a loop of checks: says what the first failure was */
static void loop_ok(int bad, const char *what)
{
	if (!tap_ok(!bad, "%s (%d wrong)", what, bad))
		tap_diag("first: %s", first_bad);
	first_bad[0] = 0;
}

/* The loss of a finite-difference check: sum(r . forward(inputs)). */
typedef double (*loss_fn)(void *ctx);

/* Central differences of f with respect to each x[i], against the analytic
 * gradient g. Tolerances scale with the largest gradient of the array. */
static int fd_check(const char *what, float *x, long n, const float *g, loss_fn f, void *ctx,
		    float h)
{
	float *fd = zeros(n);
	double scale = 0;
	for (long i = 0; i < n; i++) {
		float save = x[i];
		x[i] = save + h;
		float up = x[i];
		double lp = f(ctx);
		x[i] = save - h;
		float dn = x[i];
		double lm = f(ctx);
		x[i] = save;
		fd[i] = (float)((lp - lm) / ((double)up - dn));
		if (fabs(fd[i]) > scale)
			scale = fabs(fd[i]);
	}
	int ok = tap_close(g, fd, n, (float)(2e-3 * scale + 1e-5), 2e-2f, what);
	free(fd);
	return ok;
}

/* d-arrays start from a known pattern, so "accumulates" is checked too:
 * returns (after - before) in a new array. */
static float *pattern(long n)
{
	float *x = zeros(n);
	for (long i = 0; i < n; i++)
		x[i] = 0.25f * (float)(i % 7) - 0.5f;
	return x;
}

static float *delta(const float *after, long n)
{
	float *p = pattern(n), *d = zeros(n);
	for (long i = 0; i < n; i++)
		d[i] = after[i] - p[i];
	free(p);
	return d;
}

/* ---------------------------------------------------------------------- */
/* matmul */

struct mm { float *inp, *w, *bias, *r, *out; int N, C, OC; };

static double mm_loss(void *p)
{
	struct mm *m = p;
	matmul_forward(m->out, m->inp, m->w, m->bias, m->N, m->C, m->OC);
	return dotd(m->r, m->out, (long)m->N * m->OC);
}

static void test_matmul_size(int N, int C, int OC, int with_bias)
{
	float *inp = rnd((long)N * C, 1), *w = rnd((long)OC * C, 1);
	float *bias = with_bias ? rnd(OC, 1) : NULL;
	float *o1 = rnd((long)N * OC, 9), *o2 = zeros((long)N * OC);
	char what[96];

	matmul_forward(o1, inp, w, bias, N, C, OC);
	matmul_forward_naive(o2, inp, w, bias, N, C, OC);
	snprintf(what, sizeof(what), "matmul_forward vs naive N=%d C=%d OC=%d bias=%d", N, C, OC,
		 with_bias);
	tap_close(o1, o2, (long)N * OC, 1e-4f * sqrtf((float)C + 1), 1e-4f, what);

	float *dout = rnd((long)N * OC, 1);
	float *di1 = pattern((long)N * C), *dw1 = pattern((long)OC * C), *db1 = pattern(OC);
	float *di2 = pattern((long)N * C), *dw2 = pattern((long)OC * C), *db2 = pattern(OC);
	matmul_backward(di1, dw1, db1, dout, inp, w, N, C, OC);
	matmul_backward_naive(di2, dw2, db2, dout, inp, w, N, C, OC);
	snprintf(what, sizeof(what), "matmul_backward dinp vs naive N=%d C=%d OC=%d", N, C, OC);
	tap_close(di1, di2, (long)N * C, 1e-4f * sqrtf((float)OC + 1), 1e-4f, what);
	snprintf(what, sizeof(what), "matmul_backward dw vs naive N=%d C=%d OC=%d", N, C, OC);
	tap_close(dw1, dw2, (long)OC * C, 1e-4f * sqrtf((float)N + 1), 1e-4f, what);
	snprintf(what, sizeof(what), "matmul_backward dbias vs naive N=%d C=%d OC=%d", N, C, OC);
	tap_close(db1, db2, OC, 1e-4f * sqrtf((float)N + 1), 1e-4f, what);
	free(inp), free(w), free(bias), free(o1), free(o2), free(dout);
	free(di1), free(dw1), free(db1), free(di2), free(dw2), free(db2);
}

static void test_matmul(void)
{
	static const int sz[][3] = {{1, 1, 1}, {1, 37, 5}, {7, 13, 5}, {33, 64, 17},
				    {128, 96, 130}, {65, 256, 257}};
	for (size_t i = 0; i < ARRAY_LEN_(sz); i++)
		test_matmul_size(sz[i][0], sz[i][1], sz[i][2], (int)(i & 1) || i == 4);
	test_matmul_size(5, 3, 4, 0);

	/* finite differences, with the accumulation and NULL d-arrays */
	struct mm m = {.N = 4, .C = 6, .OC = 5};
	m.inp = rnd(24, 1), m.w = rnd(30, 1), m.bias = rnd(5, 1), m.r = rnd(20, 1);
	m.out = zeros(20);
	float *di = pattern(24), *dw = pattern(30), *db = pattern(5);
	matmul_backward(di, dw, db, m.r, m.inp, m.w, m.N, m.C, m.OC);
	float *g;
	fd_check("matmul_backward dinp vs finite differences", m.inp, 24, g = delta(di, 24),
		 mm_loss, &m, 1e-2f), free(g);
	fd_check("matmul_backward dw vs finite differences", m.w, 30, g = delta(dw, 30), mm_loss,
		 &m, 1e-2f), free(g);
	fd_check("matmul_backward dbias vs finite differences", m.bias, 5, g = delta(db, 5),
		 mm_loss, &m, 1e-2f), free(g);
	float *dw2 = pattern(30);
	matmul_backward(NULL, dw2, NULL, m.r, m.inp, m.w, m.N, m.C, m.OC);
	tap_close(dw2, dw, 30, 1e-6f, 1e-6f, "matmul_backward with NULL dinp, dbias: same dw");
	free(m.inp), free(m.w), free(m.bias), free(m.r), free(m.out);
	free(di), free(dw), free(db), free(dw2);
}

/* ---------------------------------------------------------------------- */
/* layernorm, rmsnorm */

struct norm { float *inp, *w, *b, *r, *out, *s1, *s2; int N, C, rms; };

static double norm_loss(void *p)
{
	struct norm *m = p;
	if (m->rms)
		rmsnorm_forward(m->out, m->s2, m->inp, m->w, m->N, m->C, 1e-5f);
	else
		layernorm_forward(m->out, m->s1, m->s2, m->inp, m->w, m->b, m->N, m->C, 1e-5f);
	return dotd(m->r, m->out, (long)m->N * m->C);
}

/* double reference of both norms */
static void norm_ref(float *out, const float *x, const float *w, const float *b, int N, int C,
		     int rms)
{
	for (int n = 0; n < N; n++) {
		const float *r = x + (long)n * C;
		double m = 0, v = 0;
		for (int c = 0; c < C; c++)
			m += r[c];
		m /= C;
		for (int c = 0; c < C; c++)
			v += rms ? (double)r[c] * r[c] : (r[c] - m) * (r[c] - m);
		v /= C;
		for (int c = 0; c < C; c++)
			out[(long)n * C + c] =
				rms ? (float)(r[c] / sqrt(v + 1e-5) * w[c])
				    : (float)((r[c] - m) / sqrt(v + 1e-5) * w[c] + b[c]);
	}
}

static void test_norm(int rms)
{
	const char *name = rms ? "rmsnorm" : "layernorm";
	char what[96];
	static const int sz[][2] = {{1, 1}, {1, 7}, {5, 33}, {300, 96}, {64, 512}};

	for (size_t i = 0; i < ARRAY_LEN_(sz); i++) {
		int N = sz[i][0], C = sz[i][1];
		long n = (long)N * C;
		float *x = rnd(n, 2), *w = rnd(C, 1), *b = rnd(C, 1), *o1 = zeros(n), *o2 = zeros(n);
		float *s1 = zeros(N), *s2 = zeros(N);
		for (long j = 0; j < n; j++)
			x[j] += 0.3f; /* a mean away from 0 */
		if (rms)
			rmsnorm_forward(o1, s2, x, w, N, C, 1e-5f);
		else
			layernorm_forward(o1, s1, s2, x, w, b, N, C, 1e-5f);
		norm_ref(o2, x, w, b, N, C, rms);
		snprintf(what, sizeof(what), "%s_forward vs double reference N=%d C=%d", name, N, C);
		tap_close(o1, o2, n, 1e-5f, 1e-4f, what);
		free(x), free(w), free(b), free(o1), free(o2), free(s1), free(s2);
	}

	/* against torch */
	float *x = seqf(21, 0.4), *w = seqf(7, 2.0), *b = seqf(7, 2.5), *o = zeros(21);
	float mean[3], rstd[3];
	for (int j = 0; j < 21; j++)
		x[j] = x[j] * 3 + 0.5f;
	if (rms)
		rmsnorm_forward(o, rstd, x, w, 3, 7, 1e-5f);
	else
		layernorm_forward(o, mean, rstd, x, w, b, 3, 7, 1e-5f);
	snprintf(what, sizeof(what), "%s_forward vs torch", name);
	tap_close(o, rms ? ref_rmsnorm : ref_layernorm, 21, 1e-6f, 1e-5f, what);
	free(x), free(w), free(b), free(o);

	/* finite differences */
	struct norm m = {.N = 3, .C = 9, .rms = rms};
	long n = 27;
	m.inp = rnd(n, 2), m.w = rnd(9, 1), m.b = rnd(9, 1), m.r = rnd(n, 1), m.out = zeros(n);
	m.s1 = zeros(3), m.s2 = zeros(3);
	norm_loss(&m);
	float *di = pattern(n), *dw = pattern(9), *db = pattern(9), *g;
	if (rms)
		rmsnorm_backward(di, dw, m.r, m.inp, m.w, m.s2, m.N, m.C);
	else
		layernorm_backward(di, dw, db, m.r, m.inp, m.w, m.s1, m.s2, m.N, m.C);
	snprintf(what, sizeof(what), "%s_backward dinp vs finite differences", name);
	fd_check(what, m.inp, n, g = delta(di, n), norm_loss, &m, 1e-2f), free(g);
	snprintf(what, sizeof(what), "%s_backward dw vs finite differences", name);
	fd_check(what, m.w, 9, g = delta(dw, 9), norm_loss, &m, 1e-2f), free(g);
	if (!rms) {
		fd_check("layernorm_backward db vs finite differences", m.b, 9, g = delta(db, 9),
			 norm_loss, &m, 1e-2f), free(g);
	}
	/* a large, parallel case: backward against the same formula in double
	 * is what the FD check above established; here threads must agree
	 * with one thread */
	{
		int N = 300, C = 200;
		long nn = (long)N * C;
		float *xx = rnd(nn, 2), *ww = rnd(C, 1), *bb = rnd(C, 1), *oo = zeros(nn);
		float *dd = rnd(nn, 1), *mu = zeros(N), *rs = zeros(N);
		float *a1 = zeros(nn), *a2 = zeros(nn), *w1 = zeros(C), *w2 = zeros(C);
		if (rms)
			rmsnorm_forward(oo, rs, xx, ww, N, C, 1e-5f);
		else
			layernorm_forward(oo, mu, rs, xx, ww, bb, N, C, 1e-5f);
		tensor_set_threads(1);
		if (rms)
			rmsnorm_backward(a1, w1, dd, xx, ww, rs, N, C);
		else
			layernorm_backward(a1, w1, NULL, dd, xx, ww, mu, rs, N, C);
		tensor_set_threads(0);
		if (rms)
			rmsnorm_backward(a2, w2, dd, xx, ww, rs, N, C);
		else
			layernorm_backward(a2, w2, NULL, dd, xx, ww, mu, rs, N, C);
		snprintf(what, sizeof(what), "%s_backward threaded = one thread (N=%d C=%d)", name,
			 N, C);
		tap_ok(!memcmp(a1, a2, sizeof(float) * nn) && !memcmp(w1, w2, sizeof(float) * C),
		       "%s", what);
		free(xx), free(ww), free(bb), free(oo), free(dd), free(mu), free(rs);
		free(a1), free(a2), free(w1), free(w2);
	}
	free(m.inp), free(m.w), free(m.b), free(m.r), free(m.out), free(m.s1), free(m.s2);
	free(di), free(dw), free(db);
}

/* ---------------------------------------------------------------------- */
/* rope */

struct rp { float *x, *r, *out; const int *pos; int N, NH, HS; };

static double rope_loss(void *p)
{
	struct rp *m = p;
	long n = (long)m->N * m->NH * m->HS;
	memcpy(m->out, m->x, sizeof(float) * n);
	rope_forward(m->out, m->pos, m->N, m->NH, m->HS, 10000.0f);
	return dotd(m->r, m->out, n);
}

static void test_rope(void)
{
	int pos3[3] = {0, 5, 17};
	float *x = seqf(48, 0.1);
	rope_forward(x, pos3, 3, 2, 8, 10000.0f);
	tap_close(x, ref_rope, 48, 1e-6f, 1e-5f, "rope_forward vs torch (HF half-split)");
	free(x);

	/* inverse property: backward is the transpose of a rotation */
	int N = 37, NH = 3, HS = 64;
	long n = (long)N * NH * HS;
	int *pos = malloc(sizeof(int) * N);
	for (int i = 0; i < N; i++)
		pos[i] = (i * 53) % 2000;
	float *a = rnd(n, 1), *b = copy(a, n);
	rope_forward(b, pos, N, NH, HS, 500000.0f);
	double moved = 0;
	for (long i = 0; i < n; i++)
		moved = fmax(moved, fabs(a[i] - b[i]));
	rope_backward(b, pos, N, NH, HS, 500000.0f);
	tap_close(b, a, n, 2e-6f, 1e-6f, "rope_backward(rope_forward(x)) = x");
	tap_ok(moved > 0.1, "rope_forward moves x (max change %g)", moved);
	free(a), free(b), free(pos);

	struct rp m = {.N = 3, .NH = 2, .HS = 6, .pos = pos3};
	n = 36;
	m.x = rnd(n, 1), m.r = rnd(n, 1), m.out = zeros(n);
	float *g = copy(m.r, n), *base = pattern(n), *acc = pattern(n);
	rope_backward(g, pos3, 3, 2, 6, 10000.0f);
	for (long i = 0; i < n; i++)
		acc[i] += g[i];
	float *d = delta(acc, n);
	fd_check("rope_backward vs finite differences", m.x, n, d, rope_loss, &m, 1e-2f);
	free(m.x), free(m.r), free(m.out), free(g), free(base), free(acc), free(d);
}

/* ---------------------------------------------------------------------- */
/* attention */

struct at { float *q, *k, *v, *r, *out, *att; const int *len; int B, T, NH, NKV, HS, causal; };

static double att_loss(void *p)
{
	struct at *m = p;
	attention_forward(m->out, m->att, m->q, m->k, m->v, m->len, m->B, m->T, m->NH, m->NKV,
			  m->HS, m->causal);
	return dotd(m->r, m->out, (long)m->B * m->T * m->NH * m->HS);
}

static void test_attention_case(int B, int T, int NH, int NKV, int HS, const int *len,
				int causal)
{
	long nq = (long)B * T * NH * HS, nk = (long)B * T * NKV * HS, na = (long)B * NH * T * T;
	float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1);
	float *o1 = rnd(nq, 5), *o2 = zeros(nq), *o3 = zeros(nq), *a1 = rnd(na, 5), *a2 = zeros(na);
	char what[128];

	attention_forward(o1, a1, q, k, v, len, B, T, NH, NKV, HS, causal);
	attention_forward_naive(o2, a2, q, k, v, len, B, T, NH, NKV, HS, causal);
	snprintf(what, sizeof(what), "attention_forward vs naive B=%d T=%d NH=%d NKV=%d HS=%d%s%s",
		 B, T, NH, NKV, HS, len ? " padded" : "", causal ? " causal" : "");
	tap_close(o1, o2, nq, 1e-5f, 1e-4f, what);
	tap_close(a1, a2, na, 1e-6f, 1e-4f, "  ... and the saved probabilities");
	attention_forward(o3, NULL, q, k, v, len, B, T, NH, NKV, HS, causal);
	tap_close(o3, o2, nq, 1e-5f, 1e-4f, "  ... and with att NULL (the row-by-row path)");
	free(q), free(k), free(v), free(o1), free(o2), free(o3), free(a1), free(a2);
}

static void test_attention_fd(int B, int T, int NH, int NKV, int HS, const int *len,
			      int causal)
{
	struct at m = {.B = B, .T = T, .NH = NH, .NKV = NKV, .HS = HS, .len = len,
		       .causal = causal};
	long nq = (long)B * T * NH * HS, nk = (long)B * T * NKV * HS, na = (long)B * NH * T * T;
	char what[160], tail[64];
	m.q = rnd(nq, 1.5f), m.k = rnd(nk, 1.5f), m.v = rnd(nk, 1), m.r = rnd(nq, 1);
	m.out = zeros(nq), m.att = zeros(na);
	att_loss(&m);
	float *dq = pattern(nq), *dk = pattern(nk), *dv = pattern(nk), *g;
	attention_backward(dq, dk, dv, m.r, m.att, m.q, m.k, m.v, len, B, T, NH, NKV, HS, causal);
	snprintf(tail, sizeof(tail), "B=%d T=%d NH=%d NKV=%d HS=%d%s%s", B, T, NH, NKV, HS,
		 len ? " padded" : "", causal ? " causal" : "");
	snprintf(what, sizeof(what), "attention_backward dq vs finite differences %s", tail);
	fd_check(what, m.q, nq, g = delta(dq, nq), att_loss, &m, 1e-2f), free(g);
	snprintf(what, sizeof(what), "attention_backward dk vs finite differences %s", tail);
	fd_check(what, m.k, nk, g = delta(dk, nk), att_loss, &m, 1e-2f), free(g);
	snprintf(what, sizeof(what), "attention_backward dv vs finite differences %s", tail);
	fd_check(what, m.v, nk, g = delta(dv, nk), att_loss, &m, 1e-2f), free(g);
	/* padding slots: untouched (exactly the pattern) */
	if (len) {
		float *p = pattern(nq);
		int bad = 0;
		for (int b = 0; b < B; b++)
			for (long i = (long)(b * T + len[b]) * NH * HS; i < (long)(b + 1) * T * NH * HS;
			     i++)
				bad += dq[i] != p[i];
		tap_ok(!bad, "attention_backward leaves dq of padding slots alone (%d changed)", bad);
		free(p);
	}
	/* NULL d-arrays */
	float *dv2 = pattern(nk);
	attention_backward(NULL, NULL, dv2, m.r, m.att, m.q, m.k, m.v, len, B, T, NH, NKV, HS,
			   causal);
	tap_close(dv2, dv, nk, 1e-6f, 1e-6f, "attention_backward with NULL dq, dk: same dv");
	free(m.q), free(m.k), free(m.v), free(m.r), free(m.out), free(m.att);
	free(dq), free(dk), free(dv), free(dv2);
}

static void test_attention(void)
{
	/* torch: causal GQA, and full attention over the first 3 of 5 slots */
	float *q = seqf(80, 0.2), *k = seqf(40, 0.7), *v = seqf(40, 1.3);
	float out[80], att[4 * 25];
	int len3 = 3;
	attention_forward(out, att, q, k, v, NULL, 1, 5, 4, 2, 4, 1);
	tap_close(out, ref_att_causal, 80, 1e-6f, 1e-5f, "attention_forward causal GQA vs torch");
	attention_forward(out, att, q, k, v, &len3, 1, 5, 4, 2, 4, 0);
	tap_close(out, ref_att_full3, 48, 1e-6f, 1e-5f, "attention_forward full, len 3 vs torch");
	int zero = 1;
	for (int i = 48; i < 80; i++)
		zero &= out[i] == 0;
	tap_ok(zero, "attention_forward writes 0 to padding slots");
	free(q), free(k), free(v);

	static const int len_a[3] = {7, 3, 1}, len_b[2] = {33, 20}, len_c[4] = {70, 64, 1, 41};
	test_attention_case(1, 1, 1, 1, 1, NULL, 1);
	test_attention_case(3, 7, 4, 2, 5, len_a, 1);
	test_attention_case(3, 7, 4, 2, 5, len_a, 0);
	test_attention_case(2, 33, 6, 3, 16, len_b, 1);
	test_attention_case(2, 33, 6, 6, 16, NULL, 0);
	test_attention_case(4, 70, 8, 2, 64, len_c, 1);

	static const int len_f[2] = {4, 2};
	test_attention_fd(2, 4, 4, 2, 3, len_f, 1);
	test_attention_fd(2, 4, 2, 1, 3, len_f, 0);
	test_attention_fd(1, 3, 3, 3, 2, NULL, 1);
}

/* decoding against the cache = the causal forward's row at the last slot */
static void test_attention_decode(void)
{
	int B = 3, T = 9, NH = 6, NKV = 2, HS = 8, S = 12;
	int n[3] = {9, 4, 1};
	long nq = (long)B * T * NH * HS, nk = (long)B * T * NKV * HS;
	float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1), *out = zeros(nq);
	float *att = zeros((long)B * NH * T * T);
	attention_forward_naive(out, att, q, k, v, n, B, T, NH, NKV, HS, 1);

	float *kc = rnd((long)B * S * NKV * HS, 9), *vc = rnd((long)B * S * NKV * HS, 9);
	float *qd = zeros((long)B * NH * HS), *od = zeros((long)B * NH * HS), *want = zeros((long)B * NH * HS);
	float *scratch = zeros((long)B * NH * S);
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < T; t++)
			memcpy(kc + ((long)b * S + t) * NKV * HS, k + ((long)b * T + t) * NKV * HS,
			       sizeof(float) * NKV * HS),
			memcpy(vc + ((long)b * S + t) * NKV * HS, v + ((long)b * T + t) * NKV * HS,
			       sizeof(float) * NKV * HS);
		long last = ((long)b * T + n[b] - 1) * NH * HS;
		memcpy(qd + (long)b * NH * HS, q + last, sizeof(float) * NH * HS);
		memcpy(want + (long)b * NH * HS, out + last, sizeof(float) * NH * HS);
	}
	attention_decode(od, scratch, qd, kc, vc, n, B, S, NH, NKV, HS);
	tap_close(od, want, (long)B * NH * HS, 1e-5f, 1e-4f,
		  "attention_decode = causal attention at the last slot (GQA, 3 lengths)");
	free(q), free(k), free(v), free(out), free(att), free(kc), free(vc);
	free(qd), free(od), free(want), free(scratch);
}

/* ---------------------------------------------------------------------- */
/* element-wise */

enum { GELU, QUICK_GELU, SWIGLU_GATE, SWIGLU_UP };
struct ew { float *x, *y, *r, *out; long N; int kind; };

static double ew_loss(void *p)
{
	struct ew *m = p;
	if (m->kind == GELU)
		gelu_forward(m->out, m->x, m->N);
	else if (m->kind == QUICK_GELU)
		quick_gelu_forward(m->out, m->x, m->N);
	else
		swiglu_forward(m->out, m->x, m->y, m->N);
	return dotd(m->r, m->out, m->N);
}

static void test_elementwise(void)
{
	float *x = seqf(9, 0.9), *u = seqf(9, 3.0), out[9];
	for (int i = 0; i < 9; i++)
		x[i] *= 4;
	gelu_forward(out, x, 9);
	tap_close(out, ref_gelu, 9, 1e-6f, 1e-5f, "gelu_forward vs torch (erf)");
	quick_gelu_forward(out, x, 9);
	tap_close(out, ref_quick_gelu, 9, 1e-6f, 1e-5f, "quick_gelu_forward vs torch");
	swiglu_forward(out, x, u, 9);
	tap_close(out, ref_swiglu, 9, 1e-6f, 1e-5f, "swiglu_forward vs torch");
	free(x), free(u);

	/* large arrays (threaded) against a double formula */
	long N = 100003;
	float *a = rnd(N, 6), *b = rnd(N, 2), *o = zeros(N), *w = zeros(N);
	gelu_forward(o, a, N);
	for (long i = 0; i < N; i++)
		w[i] = (float)(0.5 * a[i] * (1 + erf(a[i] / sqrt(2.0))));
	tap_close(o, w, N, 1e-6f, 1e-5f, "gelu_forward vs double, threaded");
	quick_gelu_forward(o, a, N);
	for (long i = 0; i < N; i++)
		w[i] = (float)(a[i] / (1 + exp(-1.702 * a[i])));
	tap_close(o, w, N, 1e-6f, 1e-5f, "quick_gelu_forward vs double, threaded");
	swiglu_forward(o, a, b, N);
	for (long i = 0; i < N; i++)
		w[i] = (float)(a[i] / (1 + exp(-(double)a[i])) * b[i]);
	tap_close(o, w, N, 1e-6f, 1e-5f, "swiglu_forward vs double, threaded");
	residual_forward(o, a, b, N);
	for (long i = 0; i < N; i++)
		w[i] = a[i] + b[i];
	tap_ok(!memcmp(o, w, sizeof(float) * N), "residual_forward = a + b");
	residual_forward(a, a, b, N);
	tap_ok(!memcmp(o, a, sizeof(float) * N), "residual_forward with out aliasing a");
	free(a), free(b), free(o), free(w);

	static const char *names[] = {"gelu_backward", "quick_gelu_backward",
				      "swiglu_backward dgate", "swiglu_backward dup"};
	for (int kind = GELU; kind <= SWIGLU_UP; kind++) {
		struct ew m = {.N = 40, .kind = kind};
		m.x = rnd(40, 4), m.y = rnd(40, 2), m.r = rnd(40, 1), m.out = zeros(40);
		float *d = pattern(40), *g;
		char what[96];
		if (kind == GELU)
			gelu_backward(d, m.x, m.r, 40);
		else if (kind == QUICK_GELU)
			quick_gelu_backward(d, m.x, m.r, 40);
		else if (kind == SWIGLU_GATE)
			swiglu_backward(d, NULL, m.r, m.x, m.y, 40);
		else
			swiglu_backward(NULL, d, m.r, m.x, m.y, 40);
		snprintf(what, sizeof(what), "%s vs finite differences", names[kind]);
		fd_check(what, kind == SWIGLU_UP ? m.y : m.x, 40, g = delta(d, 40), ew_loss, &m,
			 1e-2f), free(g);
		free(m.x), free(m.y), free(m.r), free(m.out), free(d);
	}
}

/* ---------------------------------------------------------------------- */
/* embedding */

static void test_embedding(void)
{
	int V = 11, C = 5, N = 8;
	int ids[8] = {3, 0, 10, 3, -1, 7, 3, 0};
	float *table = rnd((long)V * C, 1), *out = rnd((long)N * C, 9);
	embedding_forward(out, ids, table, N, C);
	int bad = 0;
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			if (out[n * C + c] != (ids[n] < 0 ? 0 : table[ids[n] * C + c]))
				bad++, note("row %d (id %d) column %d: %g", n, ids[n], c, out[n * C + c]);
	loop_ok(bad, "embedding_forward copies rows (id -1 gives zeros)");

	float *dout = rnd((long)N * C, 1), *dt = pattern((long)V * C), *want = pattern((long)V * C);
	embedding_backward(dt, dout, ids, N, C);
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C && ids[n] >= 0; c++)
			want[ids[n] * C + c] += dout[n * C + c];
	tap_close(dt, want, (long)V * C, 1e-6f, 1e-6f,
		  "embedding_backward accumulates repeated ids");
	free(table), free(out), free(dout), free(dt), free(want);

	/* threaded size */
	V = 300, C = 256, N = 700;
	int *id2 = malloc(sizeof(int) * N);
	for (int n = 0; n < N; n++)
		id2[n] = (n * 7) % V;
	table = zeros((long)V * C), dout = rnd((long)N * C, 1), want = zeros((long)V * C);
	embedding_backward(table, dout, id2, N, C);
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			want[id2[n] * C + c] += dout[n * C + c];
	tap_close(table, want, (long)V * C, 1e-6f, 1e-6f, "embedding_backward threaded");
	free(id2), free(table), free(dout), free(want);
}

/* ---------------------------------------------------------------------- */
/* logprob */

struct lpb { float *x, *r, *lp; const int *tg; int N, V; };

static double lp_loss(void *p)
{
	struct lpb *m = p;
	logprob_forward(m->lp, m->x, m->tg, m->N, m->V);
	return dotd(m->r, m->lp, m->N);
}

static void test_logprob(void)
{
	float *lg = seqf(33, 1.1), lp[3];
	int tg[3] = {4, 0, 10};
	for (int i = 0; i < 33; i++)
		lg[i] *= 5;
	logprob_forward(lp, lg, tg, 3, 11);
	tap_close(lp, ref_logprob, 3, 1e-6f, 1e-5f, "logprob_forward vs torch log_softmax");
	free(lg);

	int N = 37, V = 2051;
	float *x = rnd((long)N * V, 8), *lp1 = zeros(N), *lp2 = zeros(N);
	int *t = malloc(sizeof(int) * N);
	for (int n = 0; n < N; n++)
		t[n] = n == 5 ? -1 : (n * 131) % V;
	x[0] = 1000.0f; /* stability */
	logprob_forward(lp1, x, t, N, V);
	for (int n = 0; n < N; n++) {
		const float *r = x + (long)n * V;
		double mx = -INFINITY, s = 0;
		for (int i = 0; i < V; i++)
			mx = fmax(mx, r[i]);
		for (int i = 0; i < V; i++)
			s += exp(r[i] - mx);
		lp2[n] = t[n] < 0 ? 0 : (float)(r[t[n]] - mx - log(s));
	}
	tap_close(lp1, lp2, N, 1e-5f, 1e-5f, "logprob_forward vs double (V=2051, a logit 1000, a target -1)");
	free(x), free(lp1), free(lp2), free(t);

	/* A confident token over LLaMA's 32000: the other terms of the sum
	 * are ~1e-10, below half an f32 ulp of 1, and an f32 sum drops the
	 * ones that share a lane with the 1; the log-prob came out ~1e-5
	 * nats high. Against a double reference. */
	{
		int Vb = 32000, tb = 1234;
		float *xb = malloc(sizeof(float) * Vb), lpb;
		for (int i = 0; i < Vb; i++)
			xb[i] = 3.0f * sinf(0.37f * (float)i);
		xb[tb] = 22.0f;
		logprob_forward(&lpb, xb, &tb, 1, Vb);
		double mx = -INFINITY, sb = 0;
		for (int i = 0; i < Vb; i++)
			mx = fmax(mx, xb[i]);
		for (int i = 0; i < Vb; i++)
			sb += exp((double)xb[i] - mx);
		double want = (double)xb[tb] - mx - log(sb);
		tap_ok(fabs(lpb - want) < 1e-9 + 1e-4 * fabs(want),
		       "a confident token's log-prob (V=32000): %.9g, double %.9g, off by %.3g", lpb,
		       want, lpb - want);
		free(xb);
	}

	struct lpb m = {.N = 4, .V = 7};
	int tg2[4] = {2, -1, 6, 0};
	m.tg = tg2, m.x = rnd(28, 3), m.r = rnd(4, 1), m.lp = zeros(4);
	float *d = pattern(28), *g;
	logprob_backward(d, m.x, m.tg, m.r, m.N, m.V);
	fd_check("logprob_backward vs finite differences", m.x, 28, g = delta(d, 28), lp_loss, &m,
		 1e-2f), free(g);
	free(m.x), free(m.r), free(m.lp), free(d);
}

/* ---------------------------------------------------------------------- */
/* batch invariance: matmul_forward_rowwise, logprob_forward */

/* rows `pick` (n of them) of pool (., C) copied to dst */
static void gather(float *dst, const float *pool, const int *pick, int n, int C)
{
	for (int i = 0; i < n; i++)
		memcpy(dst + (long)i * C, pool + (long)pick[i] * C, sizeof(float) * C);
}

/* a random order of 0..n-1 */
static void shuffle(int *p, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)((frand() + 1) * 0.5f * (i + 1)) % (i + 1), t = p[i];
		p[i] = p[j], p[j] = t;
	}
}

/* rows of got (n, len) bit for bit equal to ref's rows pick[] */
static int same_rows(const float *got, const float *ref, const int *pick, int n, int len,
		     const char *what, int N, int threads, int level)
{
	for (int i = 0; i < n; i++) {
		const float *a = got + (long)i * len, *b = ref + (long)pick[i] * len;
		if (memcmp(a, b, sizeof(float) * len)) {
			int j = 0;
			while (a[j] == b[j] && j < len - 1)
				j++;
			note("%s: N=%d threads=%d level=%d: row %d (pool row %d) [%d] %.9g != alone "
			     "%.9g", what, N, threads, level, i, pick[i], j, (double)a[j], (double)b[j]);
			return 1;
		}
	}
	return 0;
}

static void test_rowwise(void)
{
	static const int sz[][3] = {{1, 1, 1}, {1, 37, 5}, {3, 16, 33}, {5, 47, 70},
				    {8, 512, 130}, {13, 100, 64}, {2, 0, 3}};
	char what[112];
	for (size_t i = 0; i < ARRAY_LEN_(sz); i++) {
		int N = sz[i][0], C = sz[i][1], OC = sz[i][2];
		float *inp = rnd((long)N * C, 1), *w = rnd((long)OC * C, 1), *bias = rnd(OC, 1);
		float *o1 = rnd((long)N * OC, 9), *o2 = zeros((long)N * OC);
		for (int b = 0; b < 2; b++) {
			matmul_forward_rowwise(o1, inp, w, b ? bias : NULL, N, C, OC);
			matmul_forward_naive(o2, inp, w, b ? bias : NULL, N, C, OC);
			snprintf(what, sizeof(what),
				 "matmul_forward_rowwise vs naive N=%d C=%d OC=%d bias=%d", N, C, OC, b);
			tap_close(o1, o2, (long)N * OC, 1e-4f * sqrtf((float)C + 1), 1e-4f, what);
		}
		free(inp), free(w), free(bias), free(o1), free(o2);
	}

	/* Every row alone (N=1, one thread) is the reference; then batches of
	 * 1..20 of the pool's rows in random order, at an odd float offset, on
	 * 1 and 2 threads, with each instruction set's copy this CPU runs.
	 * C=515: 32 lanes-blocks and a tail of 3; OC=161: a partial block of
	 * output channels; from N = 13 on, N*C*OC >= 2^20, so that two
	 * threads do split it (checked below). */
	enum { P = 20, C = 515, OC = 161 };
	int top = tensor_rowwise_level(-1), bad = 0, pick[P];
	float *pool = rnd((long)P * C, 1), *w = rnd((long)OC * C, 0.1f), *bias = rnd(OC, 1);
	float *ref = zeros((long)P * OC), *xin = zeros((long)P * C + 1), *y = zeros((long)P * OC + 1);
	tap_diag("matmul_forward_rowwise: this CPU runs instruction-set copies 0..%d", top);
	tensor_set_threads(1);
	for (int p = 0; p < P; p++)
		matmul_forward_rowwise(ref + (long)p * OC, pool + (long)p * C, w, bias, 1, C, OC);
	for (int level = 0; level <= top; level++) {
		tensor_rowwise_level(level);
		for (int threads = 1; threads <= 2; threads++) {
			tensor_set_threads(threads);
			for (int N = 1; N <= P; N++) {
				shuffle(pick, P);
				gather(xin + 1, pool, pick, N, C);
				matmul_forward_rowwise(y + 1, xin + 1, w, bias, N, C, OC);
				bad += same_rows(y + 1, ref, pick, N, OC, "rowwise", N, threads, level);
			}
		}
	}
	tensor_rowwise_level(top);
	tensor_set_threads(2);
	int t1 = tensor_rowwise_threads(1, C, OC), t12 = tensor_rowwise_threads(12, C, OC);
	int t13 = tensor_rowwise_threads(13, C, OC), tp = tensor_rowwise_threads(P, C, OC);
	if (!tap_ok(t1 == 1 && t12 == 1 && t13 == 2 && tp == 2,
		"matmul_forward_rowwise splits a product over 2 threads from 2^20 multiply-adds on, "
		"not below (so the loop above ran both)"))
		tap_diag("threads for N = 1, 12, 13, %d: %d %d %d %d", P, t1, t12, t13, tp);
	tensor_set_threads(1);
	loop_ok(bad, "matmul_forward_rowwise: each row's bits independent of N (1..20), its place, "
		     "alignment, threads (1, 2) and instruction set");
	float *n1 = zeros((long)P * OC);
	matmul_forward_naive(n1, pool, w, bias, P, C, OC);
	tap_close(ref, n1, (long)P * OC, 1e-4f * sqrtf((float)C), 1e-4f,
		  "matmul_forward_rowwise reference rows vs naive");
	free(pool), free(w), free(bias), free(ref), free(xin), free(y), free(n1);

	/* logprob_forward: a row's log-probability from its row alone. V=2051
	 * (odd) puts consecutive rows at every alignment. */
	enum { V = 2051 };
	float *lpool = rnd((long)P * V, 6), *lref = zeros(P), *lx = zeros((long)P * V + 3);
	float *lp = zeros(P);
	int tpool[P], tg[P];
	for (int p = 0; p < P; p++)
		tpool[p] = (p * 977) % V;
	tensor_set_threads(1);
	for (int p = 0; p < P; p++)
		logprob_forward(lref + p, lpool + (long)p * V, tpool + p, 1, V);
	bad = 0;
	for (int threads = 1; threads <= 2; threads++) {
		tensor_set_threads(threads);
		for (int N = 1; N <= P; N++) {
			shuffle(pick, P);
			int off = N % 4;
			gather(lx + off, lpool, pick, N, V);
			for (int i = 0; i < N; i++)
				tg[i] = tpool[pick[i]];
			logprob_forward(lp, lx + off, tg, N, V);
			bad += same_rows(lp, lref, pick, N, 1, "logprob", N, threads, -1);
		}
	}
	loop_ok(bad, "logprob_forward: each row's bits independent of N (1..20), its place, "
		     "alignment and threads (1, 2)");
	tensor_set_threads(0);
	free(lpool), free(lref), free(lx), free(lp);
}

/* ---------------------------------------------------------------------- */
/* AdamW: three steps against torch.optim.AdamW(lr=0.01, betas=(0.9, 0.95),
 * eps=1e-8, weight_decay=0.1); the first step by hand for element 0:
 * p = 0.5 (1 - 0.001) - 0.01 * (0.01/0.1) / (sqrt(5e-4/0.05) + 1e-8) = 0.4895 */
static void test_adamw(void)
{
	float p[5] = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f}, m[5] = {0}, v[5] = {0};
	static const float g[3][5] = {{0.1f, -0.2f, 0.3f, 1e-3f, -5.0f},
				      {0.2f, 0.1f, -0.3f, 0.0f, -4.0f},
				      {-0.05f, 0.3f, 0.3f, 2e-3f, 1.0f}};
	static const float want[3][5] = {
		{0.489500016f, -1.23874998f, 1.98800004f, -0.00999990012f, -0.289700031f},
		{0.479430646f, -1.23482764f, 1.98653841f, -0.0167762805f, -0.279501677f},
		{0.47304222f, -1.23745167f, 1.98119402f, -0.0246687979f, -0.272565484f}};
	static const float want_m[5] = {0.0210999995f, 0.0228000004f, 0.0273000002f,
					0.000281000015f, -0.664999962f};
	static const float want_v[5] = {0.00247625029f, 0.0067800004f, 0.0128362514f,
					2.45125023e-07f, 1.9381249f};
	char what[64];
	for (int t = 1; t <= 3; t++) {
		adamw_update(p, g[t - 1], m, v, 5, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
		snprintf(what, sizeof(what), "adamw_update step %d vs torch AdamW", t);
		tap_close(p, want[t - 1], 5, 1e-7f, 2e-6f, what);
	}
	tap_close(m, want_m, 5, 1e-9f, 1e-6f, "adamw_update first moment");
	tap_close(v, want_v, 5, 1e-12f, 1e-6f, "adamw_update second moment");
}

/* ---------------------------------------------------------------------- */
/* bf16, f16 */

static uint32_t fbits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bitsf(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static uint16_t f16_bits_of(_Float16 h)
{
	uint16_t u;
	memcpy(&u, &h, 2);
	return u;
}

/* bf16 rounding done the slow way: the two neighbours in double, nearer
 * wins, a tie goes to the even one. */
static uint16_t bf16_ref(float f)
{
	uint32_t u = fbits(f);
	uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
	double x = f, a = bitsf((uint32_t)lo << 16), b = bitsf((uint32_t)hi << 16);
	if ((hi & 0x7fff) == 0x7f80) /* the next one up is inf */
		b = (f > 0 ? 1 : -1) * 0x1p128;
	double da = fabs(x - a), db = fabs(b - x);
	if (da < db)
		return lo;
	if (db < da)
		return hi;
	return (lo & 1) ? hi : lo;
}

static void test_half(void)
{
	/* known bit patterns */
	static const struct { float f; uint16_t h; } f16k[] = {
		{1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65519.0f, 0x7bff},
		{65520.0f, 0x7c00}, {1e9f, 0x7c00}, {0x1p-14f, 0x0400}, {0x1p-24f, 0x0001},
		{0x1p-25f, 0x0000}, {0x1.8p-25f, 0x0001}, {0x1.8p-24f, 0x0002}, {0.1f, 0x2e66},
		{-0.0f, 0x8000}, {INFINITY, 0x7c00}, {-INFINITY, 0xfc00}, {0x1.ffcp-15f, 0x0400},
		{1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02}};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN_(f16k); i++) {
		uint16_t h = f32_to_f16(f16k[i].f);
		if (h != f16k[i].h) {
			if (!bad)
				note("f32_to_f16(%a) = 0x%04x, want 0x%04x", f16k[i].f, h, f16k[i].h);
			bad++;
		}
	}
	loop_ok(bad, "f32_to_f16 known bit patterns");

	/* every f16 value: decode against the compiler's _Float16, and back */
	int bad_dec = 0, bad_rt = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		_Float16 ch;
		uint16_t hh = (uint16_t)h;
		memcpy(&ch, &hh, 2);
		float f = f16_to_f32(hh), cf = (float)ch;
		int nan = isnan(cf);
		if (nan ? !isnan(f) : fbits(f) != fbits(cf)) {
			if (!bad_dec)
				note("f16_to_f32(0x%04x) = %a, want %a", hh, f, cf);
			bad_dec++;
		}
		uint16_t back = f32_to_f16(f);
		if (nan ? !((back & 0x7c00) == 0x7c00 && (back & 0x3ff)) : back != hh) {
			if (!bad_rt)
				note("f32_to_f16(f16_to_f32(0x%04x)) = 0x%04x", hh, back);
			bad_rt++;
		}
	}
	loop_ok(bad_dec, "f16_to_f32 of all 65536 values = _Float16");
	loop_ok(bad_rt, "f16 -> f32 -> f16 round trip of all values");

	/* random floats of every magnitude against the compiler's rounding */
	int bad_enc = 0;
	for (int i = 0; i < 2000000; i++) {
		float f;
		if (i & 1) {
			f = bitsf((uint32_t)(frand() * 2147483648.0f) ^ ((uint32_t)i << 31));
		} else {
			/* concentrate on the f16 range, subnormals included */
			f = ldexpf(frand(), (i >> 1) % 44 - 28);
		}
		uint16_t h = f32_to_f16(f), want = f16_bits_of((_Float16)f);
		if (isnan(f) ? !((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) : h != want) {
			if (!bad_enc)
				note("f32_to_f16(%a) = 0x%04x, want 0x%04x", f, h, want);
			bad_enc++;
		}
	}
	loop_ok(bad_enc, "f32_to_f16 = _Float16 rounding on 2e6 random floats");

	/* bf16 */
	static const struct { uint32_t f; uint16_t h; } bfk[] = {
		{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82},
		{0x3f808001, 0x3f81}, {0x7f7fffff, 0x7f80}, {0xff7fffff, 0xff80},
		{0x7f800000, 0x7f80}, {0xff800000, 0xff80}, {0x7fc00000, 0x7fc0},
		{0x00000001, 0x0000}, {0x80000000, 0x8000}, {0x40490fdb, 0x4049}};
	bad = 0;
	for (size_t i = 0; i < ARRAY_LEN_(bfk); i++) {
		uint16_t h = f32_to_bf16(bitsf(bfk[i].f));
		if (h != bfk[i].h) {
			if (!bad)
				note("f32_to_bf16(0x%08x) = 0x%04x, want 0x%04x", bfk[i].f, h,
					 bfk[i].h);
			bad++;
		}
	}
	uint16_t sn = f32_to_bf16(bitsf(0x7f800001)); /* signalling NaN, payload in low bits */
	if ((sn & 0x7f80) != 0x7f80 || !(sn & 0x7f))
		bad++, note("f32_to_bf16(sNaN 0x7f800001) = 0x%04x, not a NaN", sn);
	loop_ok(bad, "f32_to_bf16 known bit patterns and NaN");

	bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = bf16_to_f32((uint16_t)h);
		if (fbits(f) != h << 16 || (!isnan(f) && f32_to_bf16(f) != h))
			bad++, note("0x%04x -> %a -> 0x%04x", h, f, f32_to_bf16(f));
	}
	loop_ok(bad, "bf16 -> f32 -> bf16 round trip of all values");

	bad = 0;
	for (int i = 0; i < 2000000; i++) {
		float f = bitsf((uint32_t)(frand() * 2147483648.0f) ^ ((uint32_t)i << 31));
		if (i % 3 == 0) /* exact ties */
			f = bitsf((fbits(f) & 0xffff0000u) | 0x8000u);
		if (isnan(f))
			continue;
		uint16_t h = f32_to_bf16(f), want = bf16_ref(f);
		if (h != want) {
			if (!bad)
				note("f32_to_bf16(%a) = 0x%04x, want 0x%04x", f, h, want);
			bad++;
		}
	}
	loop_ok(bad, "f32_to_bf16 = nearest-even reference on 2e6 random floats");
}

/* ---------------------------------------------------------------------- */
/* OpenBLAS core selection */

/* sgemm under whatever core this process runs, against the naive kernel */
static int sgemm_ok(void)
{
	int N = 67, C = 300, OC = 129;
	float *inp = rnd((long)N * C, 1), *w = rnd((long)OC * C, 1), *b = rnd(OC, 1);
	float *o1 = zeros((long)N * OC), *o2 = zeros((long)N * OC);
	matmul_forward(o1, inp, w, b, N, C, OC);
	matmul_forward_naive(o2, inp, w, b, N, C, OC);
	int ok = tap_close(o1, o2, (long)N * OC, 2e-4f, 1e-4f, "sgemm vs naive");
	free(inp), free(w), free(b), free(o1), free(o2);
	return ok;
}

/* Runs this program again as "--blas-child" with the given environment
 * and returns its first output line (the core, the info) in out. */
static int run_child(const char *self, const char *env, char *out, size_t n)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd),
		 "env -u OPENBLAS_CORETYPE -u SEVA_BLAS_SELECTED -u SEVA_RESTARTED -u LD_PRELOAD "
		 "-u OMP_WAIT_POLICY -u OPENBLAS_NUM_THREADS %s '%s' --blas-child",
		 env, self);
	FILE *p = popen(cmd, "r");
	out[0] = 0;
	if (!p)
		return -1;
	if (!fgets(out, (int)n, p))
		out[0] = 0;
	char sink[256];
	while (fgets(sink, sizeof(sink), p))
		;
	int st = pclose(p);
	out[strcspn(out, "\n")] = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_blas(const char *self)
{
	static const struct { const char *core; int a512, a2; const char *want; } t[] = {
		{"Prescott", 1, 1, "SkylakeX"}, {"Generic", 1, 1, "SkylakeX"},
		{"Haswell", 1, 1, "SkylakeX"},  {"Zen", 0, 1, NULL},
		{"Nehalem", 0, 1, "Haswell"},   {"Sandybridge", 0, 1, "Haswell"},
		{"Cooperlake", 1, 1, NULL},     {"SkylakeX", 1, 1, NULL},
		{"Prescott", 0, 0, NULL},       {"SomethingNew", 1, 1, NULL},
		{"haswell", 0, 1, NULL}};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN_(t); i++) {
		const char *got = tensor_blas_choose(t[i].core, t[i].a512, t[i].a2);
		if (!got != !t[i].want || (got && strcmp(got, t[i].want))) {
			note("tensor_blas_choose(%s, avx512f %d, avx2+fma %d) = %s, want %s",
				 t[i].core, t[i].a512, t[i].a2, got ? got : "NULL",
				 t[i].want ? t[i].want : "NULL");
			bad++;
		}
	}
	loop_ok(bad, "tensor_blas_choose decision table");

	__builtin_cpu_init();
	int a512 = __builtin_cpu_supports("avx512f") != 0;
	int a2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	const char *want = a512 ? "SkylakeX" : a2 ? "Haswell" : NULL;
	char line[512], exp[128];

	/* A weak core (pretended: this machine's OpenBLAS may know its CPU)
	 * makes the program restart itself with the right OPENBLAS_CORETYPE,
	 * and sgemm there must match the naive kernel. */
	int rc = run_child(self, "SEVA_BLAS_TEST_CORENAME=Prescott", line, sizeof(line));
	const char *cw = strstr(line, "|want=");
	want = cw && cw[6] ? cw + 6 : NULL;
	snprintf(exp, sizeof(exp), "%s|", want ? want : "");
	if (want)
		tap_ok(rc == 0 && !strncmp(line, exp, strlen(exp)) && strstr(line, "selected by seva"),
		       "a generic core restarts the program with OPENBLAS_CORETYPE=%s, sgemm right",
		       want);
	else
		tap_ok(rc == 0 && cw, "no AVX2: nothing to select, sgemm right");
	if (rc != 0 || (want && !strstr(line, "selected by seva")))
		tap_diag("child exit %d, said: %s", rc, line);

	tap_ok(strstr(line, "|wait=passive|restarted=1|") != NULL,
	       "the restart also makes idle OpenMP threads wait passively (%s)", line);

	/* a value the user set is never overridden */
	rc = run_child(self, "SEVA_BLAS_TEST_CORENAME=Prescott OPENBLAS_CORETYPE=Sandybridge "
		       "OMP_WAIT_POLICY=active", line, sizeof(line));
	tap_ok(rc == 0 && !strncmp(line, "Sandybridge|", 12) && strstr(line, "from the environment") &&
	       strstr(line, "|wait=active|"),
	       "OPENBLAS_CORETYPE and OMP_WAIT_POLICY from the user are kept, sgemm right "
	       "(exit %d: %s)", rc, line);

	/* nothing to change: no restart */
	rc = run_child(self, "OPENBLAS_CORETYPE=Haswell OMP_WAIT_POLICY=active OPENBLAS_NUM_THREADS=2",
		       line, sizeof(line));
	tap_ok(rc == 0 && strstr(line, "|restarted=") && !strstr(line, "|restarted=1"),
	       "no restart when the environment already says everything (%s)", line);

	/* the kernel sets this CPU can run, each against the naive kernel */
	static const char *cores[] = {"Haswell", "SkylakeX", "Cooperlake"};
	for (int i = 0; i < 3; i++) {
		if ((i == 0 && !a2) || (i > 0 && !a512))
			continue;
		char env[64];
		snprintf(env, sizeof(env), "OPENBLAS_CORETYPE=%s", cores[i]);
		rc = run_child(self, env, line, sizeof(line));
		tap_ok(rc == 0 && !strncmp(line, cores[i], strlen(cores[i])),
		       "sgemm with OPENBLAS_CORETYPE=%s matches the naive kernel (exit %d: %s)",
		       cores[i], rc, line);
	}
}

static int blas_child(char **argv)
{
	tensor_blas_setup(argv);
	const char *wp = getenv("OMP_WAIT_POLICY"), *rs = getenv("SEVA_RESTARTED");
	/* what this process's CPU asks for instead of a generic core (the
	 * parent may see other features: valgrind hides AVX-512) */
	__builtin_cpu_init();
	const char *want = tensor_blas_choose("Prescott", __builtin_cpu_supports("avx512f") != 0,
					      __builtin_cpu_supports("avx2") &&
						      __builtin_cpu_supports("fma"));
	printf("%s|%s|wait=%s|restarted=%s|want=%s\n", openblas_get_corename(), tensor_blas_info(),
	       wp ? wp : "", rs ? rs : "", want ? want : "");
	return sgemm_ok() ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--blas-child"))
		return blas_child(argv);
	tensor_blas_setup(argv);
	tap_diag("%s", tensor_blas_info());

	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;

	test_matmul();
	test_rowwise();
	test_norm(0);
	test_norm(1);
	test_rope();
	test_attention();
	test_attention_decode();
	test_elementwise();
	test_embedding();
	test_logprob();
	test_adamw();
	test_half();
	sgemm_ok(); /* under the core tensor_blas_setup left this process with */
	if (n > 0)
		test_blas(self);
	return tap_done();
}
