/* test_bf16 — the bf16 products (matmul_forward_bf16, matmul_backward_bf16)
 * against the f32 ones, the weights' bf16 copies (made once, kept, renewed
 * by adamw_update and tensor_weights_changed), and --precision's choice.
 *
 * The bound, and why. bf16 keeps 8 significant bits, so rounding a value
 * to it (to nearest) changes it by at most u = 2^-8 of itself. A product
 * term a*b computed from the rounded operands is then off by at most
 * (2u + u^2)|a b|, and the sum of K terms, accumulated in f32 (unit
 * roundoff 2^-24, at most K roundings, plus one for the bias or the value
 * accumulated into), by at most
 *     bound = (2u + u^2 + (K + 1) 2^-24) * S,   S = sum_k |a_k| |b_k| (+ |c0|)
 * per output element: worst case, not a statistical estimate. The f32
 * kernel's own error is within (K + 1) 2^-24 S of the exact value, so the
 * two may differ by bound + (K + 1) 2^-24 S; that is what is checked, for
 * every element, with S computed in double. A second check shows that the
 * error is the operands' rounding and nothing else: against the exact sum
 * of the bf16-rounded operands (double) the kernel is within the f32 part
 * alone, (K + 1) 2^-24 S. And a product that differs from the f32 one in no
 * element would mean that bf16 did not run: that is checked too. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tensor.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float frand(void) /* uniform in [-1, 1) */
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((rng_state >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

static float *rnd(long n)
{
	float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
	for (long i = 0; i < n; i++)
		x[i] = frand();
	return x;
}

static float *pattern(long n) /* what backward accumulates into */
{
	float *x = malloc(sizeof(float) * (size_t)n);
	for (long i = 0; i < n; i++)
		x[i] = 0.25f * (float)(i % 7) - 0.5f;
	return x;
}

static float *rounded(const float *x, long n) /* x rounded to bf16 */
{
	float *y = malloc(sizeof(float) * (size_t)n);
	for (long i = 0; i < n; i++)
		y[i] = bf16_to_f32(f32_to_bf16(x[i]));
	return y;
}

static const double U = 1.0 / 256, F32U = 1.0 / 16777216;

/* C (M,N) = c0 + A . B with A(m,k) = a[m*sam + k*sak], B(k,n) = b[k*sbk +
 * n*sbn]: the exact value (double) and S = sum |a||b| + |c0| */
static void ref_product(double *exact, double *S, const float *a, long sam, long sak,
			const float *b, long sbk, long sbn, const float *c0, long c0n, int M,
			int K, int N)
{
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double e = 0, s = 0;
			if (c0) {
				e = c0[(long)m * c0n + n];
				s = fabs(e);
			}
			for (int k = 0; k < K; k++) {
				double p = (double)a[m * sam + k * sak] * b[k * sbk + n * sbn];
				e += p;
				s += fabs(p);
			}
			exact[(long)m * N + n] = e;
			S[(long)m * N + n] = s;
		}
}

/* got (bf16 kernel) against f32 (f32 kernel) and exact16 (exact from the
 * rounded operands), element by element, with the bounds above */
static void check(const char *what, const float *got, const float *f32, const double *exact16,
		  const double *S, long n, int K)
{
	long bad = 0, bad16 = 0, differ = 0, wi = 0, wi16 = 0;
	double worst = 0, worst16 = 0;
	double k32 = (K + 1) * F32U / (1 - (K + 1) * F32U);
	for (long i = 0; i < n; i++) {
		double bound = (2 * U + U * U + 2 * k32) * S[i] + 1e-30;
		double d = fabs((double)got[i] - f32[i]), d16 = fabs((double)got[i] - exact16[i]);
		double r = d / bound, r16 = d16 / (k32 * S[i] + 1e-30);
		if (!(r <= 1))
			bad++;
		if (!(r16 <= 1))
			bad16++;
		if (!(r <= worst))
			worst = r, wi = i;
		if (!(r16 <= worst16))
			worst16 = r16, wi16 = i;
		differ += got[i] != f32[i];
	}
	if (!tap_ok(!bad, "%s: within (2^-7 + 2^-16 + 2(K+1) 2^-24) sum|a||b| of f32, K=%d (n=%ld)",
		    what, K, n))
		tap_diag("%ld outside; worst at [%ld]: bf16 %.9g f32 %.9g, %.3g of the bound", bad, wi,
			 got[wi], f32[wi], worst);
	else
		tap_diag("largest |bf16 - f32| is %.3g of the bound", worst);
	if (!tap_ok(!bad16, "%s: = the rounded operands' exact product within (K+1) 2^-24 sum|a||b|",
		    what))
		tap_diag("%ld outside; worst at [%ld]: got %.9g exact %.9g, %.3g of the bound", bad16,
			 wi16, got[wi16], exact16[wi16], worst16);
	tap_ok(differ > 0, "%s: the operands were rounded (%ld of %ld elements differ from f32)",
	       what, differ, n);
}

static void test_shape(int N, int C, int OC, int with_bias)
{
	float *x = rnd((long)N * C), *w = rnd((long)OC * C), *bias = with_bias ? rnd(OC) : NULL;
	float *dout = rnd((long)N * OC);
	float *x16 = rounded(x, (long)N * C), *w16 = rounded(w, (long)OC * C);
	float *d16 = rounded(dout, (long)N * OC);
	long nmax = (long)(N > OC ? N : OC) * (C > OC ? C : OC);
	double *exact = malloc(sizeof(double) * (size_t)nmax), *S = malloc(sizeof(double) * (size_t)nmax);
	double *S32 = malloc(sizeof(double) * (size_t)nmax), *tmp = malloc(sizeof(double) * (size_t)nmax);
	float *y = malloc(sizeof(float) * (size_t)N * OC), *y32 = malloc(sizeof(float) * (size_t)N * OC);
	char what[96];

	/* forward: out (N,OC) = bias + x (N,C) . w^T */
	tensor_set_precision(TENSOR_F32);
	matmul_forward(y32, x, w, bias, N, C, OC);
	if (!tap_ok(matmul_forward_bf16(y, x, w, bias, N, C, OC) == 0, "matmul_forward_bf16 runs"))
		goto out;
	/* exact from the rounded operands; S from the f32 ones */
	ref_product(exact, S, x16, C, 1, w16, 1, C, NULL, 0, N, C, OC);
	ref_product(tmp, S32, x, C, 1, w, 1, C, NULL, 0, N, C, OC);
	for (long i = 0; bias && i < (long)N * OC; i++) {
		exact[i] += bias[i % OC];
		S32[i] += fabs(bias[i % OC]);
	}
	snprintf(what, sizeof what, "forward N=%d C=%d OC=%d bias=%d", N, C, OC, with_bias);
	check(what, y, y32, exact, S32, (long)N * OC, C);

	/* dinp (N,C) += dout (N,OC) . w (OC,C) */
	float *di = pattern((long)N * C), *di32 = pattern((long)N * C), *p = pattern((long)N * C);
	float *dw = pattern((long)OC * C), *dw32 = pattern((long)OC * C), *q = pattern((long)OC * C);
	float *db = pattern(OC), *db32 = pattern(OC);
	matmul_backward(di32, dw32, db32, dout, x, w, N, C, OC);
	tap_ok(matmul_backward_bf16(di, dw, db, dout, x, w, N, C, OC) == 0, "matmul_backward_bf16 runs");
	ref_product(exact, S, d16, OC, 1, w16, C, 1, p, C, N, OC, C);
	ref_product(tmp, S32, dout, OC, 1, w, C, 1, p, C, N, OC, C);
	snprintf(what, sizeof what, "backward dinp N=%d C=%d OC=%d", N, C, OC);
	check(what, di, di32, exact, S32, (long)N * C, OC);
	/* dw (OC,C) += dout^T (OC,N) . x (N,C) */
	ref_product(exact, S, d16, 1, OC, x16, C, 1, q, C, OC, N, C);
	ref_product(tmp, S32, dout, 1, OC, x, C, 1, q, C, OC, N, C);
	snprintf(what, sizeof what, "backward dw N=%d C=%d OC=%d", N, C, OC);
	check(what, dw, dw32, exact, S32, (long)OC * C, N);
	/* dbias is a sum of f32 gradients: the same bits as the f32 kernel's */
	tap_ok(!memcmp(db, db32, sizeof(float) * OC), "backward dbias N=%d OC=%d: f32, as before", N, OC);
	free(di), free(di32), free(p), free(dw), free(dw32), free(q), free(db), free(db32);
out:
	free(x), free(w), free(bias), free(dout), free(x16), free(w16), free(d16);
	free(exact), free(S), free(S32), free(tmp), free(y), free(y32);
}

/* --precision's switch: f32 keeps the f32 bits, bf16 sends the products of
 * matmul_forward/_backward to the bf16 kernels, small ones stay f32. */
static void test_dispatch(void)
{
	int N = 40, C = 96, OC = 80;
	float *x = rnd((long)N * C), *w = rnd((long)OC * C), *b = rnd(OC), *d = rnd((long)N * OC);
	float *a = malloc(sizeof(float) * N * OC), *e = malloc(sizeof(float) * N * OC);
	float *f = malloc(sizeof(float) * N * OC);

	tensor_set_precision(TENSOR_F32);
	matmul_forward(a, x, w, b, N, C, OC);
	matmul_forward_naive(e, x, w, b, N, C, OC);
	tap_ok(tensor_precision() == TENSOR_F32, "--precision f32 is f32");
	tap_ok(tensor_set_precision(TENSOR_BF16) == 0 && tensor_precision() == TENSOR_BF16,
	       "--precision bf16 is bf16 where it is built in");
	matmul_forward(f, x, w, b, N, C, OC);
	matmul_forward_bf16(e, x, w, b, N, C, OC);
	tap_ok(!memcmp(f, e, sizeof(float) * N * OC), "under bf16 matmul_forward is the bf16 kernel");
	tap_ok(memcmp(f, a, sizeof(float) * N * OC), "... and not the f32 one");
	float *g1 = pattern((long)OC * C), *g2 = pattern((long)OC * C);
	matmul_backward(NULL, g1, NULL, d, x, w, N, C, OC);
	matmul_backward_bf16(NULL, g2, NULL, d, x, w, N, C, OC);
	tap_ok(!memcmp(g1, g2, sizeof(float) * OC * C), "under bf16 matmul_backward is the bf16 kernel");
	/* a product under 2^18 multiply-adds, or with a side under 32 (LoRA),
	 * stays f32 */
	float *s1 = malloc(sizeof(float) * 8 * 16), *s2 = malloc(sizeof(float) * 8 * 16);
	matmul_forward(s1, x, w, NULL, 8, 16, 16);
	tensor_set_precision(TENSOR_F32);
	matmul_forward(s2, x, w, NULL, 8, 16, 16);
	tap_ok(!memcmp(s1, s2, sizeof(float) * 8 * 16), "a small product stays f32 under bf16");
	matmul_forward(f, x, w, b, N, C, OC);
	tap_ok(!memcmp(f, a, sizeof(float) * N * OC), "back to f32: the f32 bits again");

	tap_ok(tensor_set_precision(TENSOR_AUTO) == 0, "auto chooses");
	int p = tensor_precision();
	const char *info = tensor_precision_info();
	tap_ok((p == TENSOR_F32 || p == TENSOR_BF16) &&
		       !strncmp(info, tensor_precision_names[p], strlen(tensor_precision_names[p])) &&
		       strstr(info, "auto"),
	       "auto picked %s and says why: %s", tensor_precision_names[p], info);
	tensor_set_precision(TENSOR_F32);
	free(x), free(w), free(b), free(d), free(a), free(e), free(f), free(g1), free(g2), free(s1),
		free(s2);
}

/* The weights' bf16 copy: made once for a bound arena, kept across calls,
 * rewritten by adamw_update, made again after tensor_weights_changed; a
 * weight outside every arena is converted per call. */
static void test_weights(void)
{
	int N = 64, C = 64, OC = 96;
	long nw = (long)OC * C;
	float *arena = rnd(nw + 100), *w = arena + 100; /* the weight inside a model's buffer */
	float *x = rnd((long)N * C), *g = rnd(nw), *m = calloc((size_t)nw, sizeof(float));
	float *v = calloc((size_t)nw, sizeof(float)), *free_w = malloc(sizeof(float) * nw);
	float *y = malloc(sizeof(float) * N * OC), *want = malloc(sizeof(float) * N * OC);
	int owner;

	tensor_weights_bind(&owner, arena, nw + 100);
	matmul_forward_bf16(y, x, w, NULL, N, C, OC);
	memcpy(free_w, w, sizeof(float) * nw);
	matmul_forward_bf16(want, x, free_w, NULL, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "a bound weight's copy gives the bits of a fresh conversion");

	/* changed behind the arena's back: the copy is kept, not made per call */
	for (long i = 0; i < nw; i++)
		w[i] *= -1;
	matmul_forward_bf16(y, x, w, NULL, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "the copy is made once and kept (not per call)");
	tensor_weights_changed(w);
	matmul_forward_bf16(y, x, w, NULL, N, C, OC);
	memcpy(free_w, w, sizeof(float) * nw);
	matmul_forward_bf16(want, x, free_w, NULL, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "tensor_weights_changed: the copy is made again");

	/* the optimizer writes the copy as it writes the weights */
	adamw_update(w, g, m, v, nw, 0.05f, 0.9f, 0.95f, 1e-8f, 0.1f, 1);
	matmul_forward_bf16(y, x, w, NULL, N, C, OC);
	memcpy(free_w, w, sizeof(float) * nw);
	matmul_forward_bf16(want, x, free_w, NULL, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "after adamw_update the copy is the new weights'");
	float *d = rnd((long)N * OC), *di = pattern((long)N * C), *di2 = pattern((long)N * C);
	matmul_backward_bf16(di, NULL, NULL, d, x, w, N, C, OC);
	matmul_backward_bf16(di2, NULL, NULL, d, x, free_w, N, C, OC);
	tap_ok(!memcmp(di, di2, sizeof(float) * N * C), "... in the dinp product too");

	/* a dropped arena converts per call again */
	tensor_weights_bind(&owner, NULL, 0);
	for (long i = 0; i < nw; i++)
		w[i] *= 0.5f;
	matmul_forward_bf16(y, x, w, NULL, N, C, OC);
	memcpy(free_w, w, sizeof(float) * nw);
	matmul_forward_bf16(want, x, free_w, NULL, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "an unbound weight is converted per call");
	free(arena), free(x), free(g), free(m), free(v), free(free_w), free(y), free(want), free(d);
	free(di), free(di2);
}

/* tensor_to_bf16 (the products' operand conversion, 16 values at a time)
 * gives f32_to_bf16's bits for every value: random ones, and the special
 * patterns (NaNs with payloads, infinities, subnormals, the largest finite
 * values, ties to even both ways) at every place of a vector, on every
 * length from 0 to 40 (the scalar tail) and on a long buffer (threads). */
static void test_convert(void)
{
	static const uint32_t special[] = {
		0x7fc00001u, 0xffc12345u, 0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x7f800000u,
		0xff800000u, 0x00000001u, 0x807fffffu, 0x00008000u, 0x7f7fffffu, 0xff7f8000u,
		0x3f808000u, 0x3f818000u, 0x3f808001u, 0x00000000u, 0x80000000u };
	enum { NS = sizeof special / sizeof *special, LONG = 100003 };
	float *x = rnd(LONG);
	uint16_t *h = malloc(sizeof(uint16_t) * LONG);
	long bad = 0;
	for (long i = 0; i < LONG; i += 5) /* specials at every place modulo 16 */
		memcpy(&x[i], &special[(i / 5) % NS], sizeof(float));
	for (int n = 0; n <= 40; n++) {
		tensor_to_bf16(h, x + n, n);
		for (int i = 0; i < n; i++)
			if (h[i] != f32_to_bf16(x[n + i]) && bad++ < 5)
				tap_diag("n=%d [%d]: 0x%04x, f32_to_bf16 0x%04x", n, i, h[i],
					 f32_to_bf16(x[n + i]));
	}
	tensor_to_bf16(h, x, LONG);
	for (long i = 0; i < LONG; i++)
		if (h[i] != f32_to_bf16(x[i]) && bad++ < 10)
			tap_diag("[%ld]: 0x%04x, f32_to_bf16 0x%04x", i, h[i], f32_to_bf16(x[i]));
	tap_ok(!bad, "tensor_to_bf16 = f32_to_bf16 on every value, specials included (%ld differ)", bad);
	free(x), free(h);
}

/* The bf16 row-wise product (decoding under bf16) against f32 with the
 * bound above, K = C: its sums are in f32 over at most C/16 + 2 products
 * per lane, 4 lane additions and the bias, fewer than C + 1 roundings.
 * Every instruction-set copy the CPU runs gives the same bits (the
 * products are exact, so fused or not, vdpbf16ps or shifts, the roundings
 * are the same ones), and a row's bits do not depend on the batch. */
static void test_rowwise_shape(int N, int C, int OC, int with_bias)
{
	float *x = rnd((long)N * C), *w = rnd((long)OC * C), *bias = with_bias ? rnd(OC) : NULL;
	float *x16 = rounded(x, (long)N * C), *w16 = rounded(w, (long)OC * C);
	size_t no = (size_t)N * OC;
	double *exact = malloc(sizeof(double) * no), *S = malloc(sizeof(double) * no);
	double *S32 = malloc(sizeof(double) * no), *tmp = malloc(sizeof(double) * no);
	float *y = malloc(sizeof(float) * no), *y32 = malloc(sizeof(float) * no);
	float *yl = malloc(sizeof(float) * no);
	char what[96];
	int top = tensor_rowwise_bf16_level(-1), same = 1, at = -1;

	matmul_forward_rowwise(y32, x, w, bias, N, C, OC);
	ref_product(exact, S, x16, C, 1, w16, 1, C, NULL, 0, N, C, OC);
	ref_product(tmp, S32, x, C, 1, w, 1, C, NULL, 0, N, C, OC);
	for (long i = 0; bias && i < (long)N * OC; i++) {
		exact[i] += bias[i % OC];
		S32[i] += fabs(bias[i % OC]);
	}
	matmul_forward_rowwise_bf16(y, x, w, bias, N, C, OC);
	snprintf(what, sizeof what, "rowwise bf16 N=%d C=%d OC=%d bias=%d (copy %d)", N, C, OC,
		 with_bias, top);
	check(what, y, y32, exact, S32, (long)N * OC, C);
	for (int level = 0; level < top; level++) {
		tensor_rowwise_bf16_level(level);
		matmul_forward_rowwise_bf16(yl, x, w, bias, N, C, OC);
		for (long i = 0; i < (long)N * OC && same; i++)
			if (memcmp(&yl[i], &y[i], sizeof(float)))
				same = 0, at = level, tap_diag("copy %d [%ld]: %.9g, copy %d: %.9g", level,
							       i, yl[i], top, y[i]);
	}
	tensor_rowwise_bf16_level(top);
	tap_ok(same, "rowwise bf16 N=%d C=%d OC=%d: copies 0..%d give the same bits%s", N, C, OC, top,
	       at >= 0 ? " (not so)" : "");
	free(x), free(w), free(bias), free(x16), free(w16), free(exact), free(S), free(S32), free(tmp);
	free(y), free(y32), free(yl);
}

/* Each row alone, then inside batches of 1..9 rows at each place, on 1
 * and 2 threads: the same bits. */
static void test_rowwise_invariance(void)
{
	enum { C = 160, OC = 2100, P = 9 };
	float *pool = rnd((long)P * C), *w = rnd((long)OC * C), *b = rnd(OC);
	float *ref = malloc(sizeof(float) * P * OC), *y = malloc(sizeof(float) * P * OC);
	long bad = 0;
	for (int p = 0; p < P; p++)
		matmul_forward_rowwise_bf16(ref + (long)p * OC, pool + (long)p * C, w, b, 1, C, OC);
	for (int threads = 1; threads <= 2; threads++) {
		tensor_set_threads(threads);
		for (int N = 1; N <= P; N++)
			for (int first = 0; first + N <= P; first++) {
				matmul_forward_rowwise_bf16(y, pool + (long)first * C, w, b, N, C, OC);
				bad += memcmp(y, ref + (long)first * OC, sizeof(float) * N * OC) != 0;
			}
	}
	tap_ok(tensor_rowwise_threads(P, C, OC) == 2, "the batches of 9 rows ran on 2 threads");
	tensor_set_threads(0);
	tap_ok(!bad, "rowwise bf16: each row's bits independent of N (1..%d), its place and the "
	       "threads (%ld batches differ)", P, bad);
	free(pool), free(w), free(b), free(ref), free(y);
}

/* matmul_forward_step: f32's row-wise bits under f32; under bf16 the bf16
 * row-wise product for a bound weight with both sides >= 32, else f32
 * (LoRA's thin products, a weight with no copy). */
static void test_step_dispatch(void)
{
	int N = 3, C = 96, OC = 80;
	long nw = (long)OC * C;
	float *arena = rnd(nw + 64), *w = arena + 64, *x = rnd((long)N * C), *b = rnd(OC);
	float *free_w = malloc(sizeof(float) * nw), *want = malloc(sizeof(float) * N * OC);
	float *y = malloc(sizeof(float) * N * OC), *f32 = malloc(sizeof(float) * N * OC);
	int owner;
	memcpy(free_w, w, sizeof(float) * nw);
	tensor_weights_bind(&owner, arena, nw + 64);
	tensor_set_precision(TENSOR_F32);
	matmul_forward_rowwise(f32, x, w, b, N, C, OC);
	matmul_forward_step(y, x, w, b, N, C, OC);
	tap_ok(!memcmp(y, f32, sizeof(float) * N * OC),
	       "under f32 a step's product is the f32 row-wise one");
	tensor_set_precision(TENSOR_BF16);
	matmul_forward_step(y, x, w, b, N, C, OC);
	matmul_forward_rowwise_bf16(want, x, free_w, b, N, C, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC) && memcmp(y, f32, sizeof(float) * N * OC),
	       "under bf16 a bound weight's step product is the bf16 row-wise one");
	matmul_forward_step(y, x, free_w, b, N, C, OC);
	tap_ok(!memcmp(y, f32, sizeof(float) * N * OC), "... an unbound weight's stays f32");
	matmul_forward_step(y, x, w, b, N, 16, OC);
	matmul_forward_rowwise(want, x, w, b, N, 16, OC);
	tap_ok(!memcmp(y, want, sizeof(float) * N * OC), "... and one with a side under 32 (LoRA's)");
	tensor_set_precision(TENSOR_F32);
	tensor_weights_bind(&owner, NULL, 0);
	free(arena), free(x), free(b), free(free_w), free(want), free(y), free(f32);
}

int main(int argc, char **argv)
{
	(void)argc;
	tensor_blas_setup(argv);
	tensor_set_threads(0);
	test_convert();
	/* the bf16 row-wise product needs no oneDNN */
	static const int rw[][4] = { { 1, 512, 96, 0 }, { 5, 100, 70, 1 }, { 8, 33, 40, 1 },
				     { 3, 1376, 64, 0 }, { 4, 31, 33, 1 } };
	tap_diag("bf16 row-wise: this CPU runs copies 0..%d", tensor_rowwise_bf16_level(-1));
	for (size_t i = 0; i < sizeof rw / sizeof *rw; i++)
		test_rowwise_shape(rw[i][0], rw[i][1], rw[i][2], rw[i][3]);
	test_rowwise_invariance();
#ifndef SEVA_DNNL
	/* built without oneDNN: f32 only, and bf16 says so */
	tap_ok(tensor_set_precision(TENSOR_BF16) < 0, "--precision bf16 fails: not built in");
	tap_ok(tensor_set_precision(TENSOR_AUTO) == 0 && tensor_precision() == TENSOR_F32,
	       "auto is f32: %s", tensor_precision_info());
	float o;
	tap_ok(matmul_forward_bf16(&o, &o, &o, NULL, 1, 1, 1) < 0, "matmul_forward_bf16: not built in");
	return tap_done();
#endif
	static const int sz[][4] = { { 96, 64, 130, 1 }, { 7, 256, 257, 0 }, { 300, 96, 48, 1 },
				     { 33, 512, 40, 0 } };
	for (size_t i = 0; i < sizeof sz / sizeof *sz; i++)
		test_shape(sz[i][0], sz[i][1], sz[i][2], sz[i][3]);
	test_dispatch();
	test_weights();
	test_step_dispatch();
	return tap_done();
}
