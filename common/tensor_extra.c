/* tensor_extra.c — see tensor_extra.h. */
#include "tensor_extra.h"

#include <math.h>
#include <stddef.h>

/* the kernels compiled for the baseline, AVX2+FMA and AVX-512, picked at
 * load time (as tensor.c's) */
#define HOT __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4"), \
			     optimize("fp-contract=fast")))

/* 16 floats; unaligned loads through the aligned(4) type */
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

enum { LANES = 16, OB = 32 /* output channels per cache block */ };

/* The lanes' sum as a fixed tree (halves added pairwise). */
static inline float hsum(const v16 *a)
{
	float t[8];
	for (int i = 0; i < 8; i++)
		t[i] = (*a)[i] + (*a)[i + 8];
	for (int i = 0; i < 4; i++)
		t[i] += t[i + 4];
	return (t[0] + t[2]) + (t[1] + t[3]);
}

/* Four rows from n0 against output channels [o0, o1): one load of w per
 * four multiply-adds, the accumulators in registers. The tails use fmaf,
 * so that rows1 rounds alike whatever the compiler contracts. */
HOT static void rows4(float *out, const float *inp, const float *w, int n0, int C, int OC, int o0,
		      int o1)
{
	int CV = C - C % LANES;
	const float *x0 = inp + (size_t)n0 * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
	for (int o = o0; o < o1; o++) {
		const float *wr = w + (size_t)o * C;
		v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
		for (int c = 0; c < CV; c += LANES) {
			v16 wv = *(const v16u *)(wr + c);
			a0 += wv * *(const v16u *)(x0 + c);
			a1 += wv * *(const v16u *)(x1 + c);
			a2 += wv * *(const v16u *)(x2 + c);
			a3 += wv * *(const v16u *)(x3 + c);
		}
		float s0 = hsum(&a0), s1 = hsum(&a1), s2 = hsum(&a2), s3 = hsum(&a3);
		for (int c = CV; c < C; c++) {
			s0 = fmaf(wr[c], x0[c], s0);
			s1 = fmaf(wr[c], x1[c], s1);
			s2 = fmaf(wr[c], x2[c], s2);
			s3 = fmaf(wr[c], x3[c], s3);
		}
		float *y = out + (size_t)n0 * OC + o;
		y[0] = s0;
		y[OC] = s1;
		y[2 * (size_t)OC] = s2;
		y[3 * (size_t)OC] = s3;
	}
}

/* Row n alone, summed in the same order as rows4's. */
HOT static void rows1(float *out, const float *inp, const float *w, int n, int C, int OC, int o0,
		      int o1)
{
	int CV = C - C % LANES;
	const float *x = inp + (size_t)n * C;
	for (int o = o0; o < o1; o++) {
		const float *wr = w + (size_t)o * C;
		v16 a = {0};
		for (int c = 0; c < CV; c += LANES)
			a += *(const v16u *)(wr + c) * *(const v16u *)(x + c);
		float s = hsum(&a);
		for (int c = CV; c < C; c++)
			s = fmaf(wr[c], x[c], s);
		out[(size_t)n * OC + o] = s;
	}
}

void matmul_rows_forward(float *out, const float *inp, const float *w, int N, int C, int OC)
{
	if (N <= 0 || OC <= 0)
		return;
	int nb = (OC + OB - 1) / OB;
	#pragma omp parallel for schedule(static) if ((long)N * C * OC > 65536L)
	for (int b = 0; b < nb; b++) {
		int o0 = b * OB, o1 = o0 + OB < OC ? o0 + OB : OC;
		int n = 0;
		for (; n + 4 <= N; n += 4)
			rows4(out, inp, w, n, C, OC, o0, o1);
		for (; n < N; n++)
			rows1(out, inp, w, n, C, OC, o0, o1);
	}
}

void matmul_rows_forward_naive(float *out, const float *inp, const float *w, int N, int C, int OC)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double s = 0;
			for (int c = 0; c < C; c++)
				s += (double)inp[(size_t)n * C + c] * w[(size_t)o * C + c];
			out[(size_t)n * OC + o] = (float)s;
		}
}
