/* kernels — time of each kernel on the shapes of a DPO step on
 * ../shared/bench/configs/small.json (16 sequences of 128 slots: 64 image
 * tokens and 64 of text; C 512, FF 1376, NH 8, NKV 4, HS 64, V 2048), so
 * the share of the non-BLAS kernels beside the matrix products shows.
 * Built and run by tests/bench/kernels.sh. Usage: kernels [-j THREADS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor.h"
#include "util.h"

static float *fill(long n, float scale)
{
	float *x = xmalloc(sizeof(float) * n);
	unsigned s = 12345;
	for (long i = 0; i < n; i++) {
		s = s * 1103515245u + 12345u;
		x[i] = ((float)(s >> 8) / 16777216.0f * 2 - 1) * scale;
	}
	return x;
}

/* Best wall time of 5 and the process CPU time of that run: on a shared,
 * busy machine the CPU time (all threads, spinning included) is the
 * steadier figure. */
static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define TIME(label, flops, stmt) do { \
	stmt; \
	double best_ = 1e30, cpu_ = 1e30; \
	for (int r_ = 0; r_ < 5; r_++) { \
		double t_ = now_seconds(), c_ = cpu_seconds(); \
		stmt; \
		t_ = now_seconds() - t_; \
		c_ = cpu_seconds() - c_; \
		if (t_ < best_) best_ = t_; \
		if (c_ < cpu_) cpu_ = c_; \
	} \
	printf("%-38s %8.3f ms  cpu %8.3f ms", label, best_ * 1e3, cpu_ * 1e3); \
	if ((flops) > 0) \
		printf("  %6.1f GFLOP/s", (flops) / best_ / 1e9); \
	printf("\n"); \
} while (0)

int main(int argc, char **argv)
{
	int B = 16, T = 128, C = 512, FF = 1376, NH = 8, NKV = 4, HS = 64, V = 2048;
	long N = (long)B * T;
	int threads = 2;

	util_init(argv[0]);
	tensor_blas_setup(argv);
	if (argc > 2 && !strcmp(argv[1], "-j"))
		threads = (int)arg_long("-j", argv[2], 0, 1024);
	tensor_set_threads(threads);
	printf("# %s, %d threads, B %d T %d C %d FF %d NH %d NKV %d HS %d V %d\n",
	       tensor_blas_info(), threads, B, T, C, FF, NH, NKV, HS, V);

	float *x = fill(N * C, 1), *y = fill(N * C, 1), *w = fill((long)FF * C, 0.05f);
	float *big = fill(N * FF, 1), *big2 = fill(N * FF, 1), *big3 = fill(N * FF, 1);
	float *q = fill(N * C, 1), *k = fill(N * NKV * HS, 1), *v = fill(N * NKV * HS, 1);
	float *dq = fill(N * C, 0), *dk = fill(N * NKV * HS, 0), *dv = fill(N * NKV * HS, 0);
	float *att = fill((long)B * NH * T * T, 0), *o = fill(N * C, 1);
	float *lw = fill(C, 1), *lb = fill(C, 1), *mean = fill(N, 0), *rstd = fill(N, 0);
	float *logits = fill(N * V, 3), *dlogits = fill(N * V, 0), *lp = fill(N, 0), *dlp = fill(N, 1);
	int *len = xmalloc(sizeof(int) * B), *pos = xmalloc(sizeof(int) * N), *tg = xmalloc(sizeof(int) * N);
	for (int b = 0; b < B; b++)
		len[b] = T - (b % 4) * 8;
	for (long i = 0; i < N; i++)
		pos[i] = (int)(i % T), tg[i] = (int)(i * 7 % V);

	double attf = 4.0 * B * NH * T * T * HS / 2; /* causal: half the square */
	TIME("matmul_forward (N,C)x(FF,C)", 2.0 * N * C * FF, matmul_forward(big, x, w, NULL, N, C, FF));
	TIME("matmul_forward decode (1,C)x(FF,C)", 2.0 * C * FF, matmul_forward(big, x, w, NULL, 1, C, FF));
	TIME("matmul_forward decode (8,C)x(FF,C)", 16.0 * C * FF, matmul_forward(big, x, w, NULL, 8, C, FF));
	TIME("matmul_forward decode (8,FF)x(C,FF)", 16.0 * C * FF, matmul_forward(big, big2, w, NULL, 8, FF, C));
	TIME("matmul_forward_rowwise (1,C)x(FF,C)", 2.0 * C * FF,
	     matmul_forward_rowwise(big, x, w, NULL, 1, C, FF));
	TIME("matmul_forward_rowwise (8,C)x(FF,C)", 16.0 * C * FF,
	     matmul_forward_rowwise(big, x, w, NULL, 8, C, FF));
	TIME("matmul_forward_rowwise (8,FF)x(C,FF)", 16.0 * C * FF,
	     matmul_forward_rowwise(big, big2, w, NULL, 8, FF, C));
	TIME("matmul_backward (N,FF)->(N,C),(FF,C)", 4.0 * N * C * FF,
	     matmul_backward(x, w, NULL, big, y, w, N, C, FF));
	TIME("attention_forward causal", attf,
	     attention_forward(o, att, q, k, v, len, B, T, NH, NKV, HS, 1));
	TIME("attention_backward causal", 2 * attf,
	     attention_backward(dq, dk, dv, o, att, q, k, v, len, B, T, NH, NKV, HS, 1));
	TIME("rmsnorm_forward (N,C)", 0, rmsnorm_forward(y, rstd, x, lw, N, C, 1e-5f));
	TIME("rmsnorm_backward (N,C)", 0, rmsnorm_backward(o, lb, y, x, lw, rstd, N, C));
	TIME("layernorm_forward (N,C)", 0, layernorm_forward(y, mean, rstd, x, lw, lb, N, C, 1e-5f));
	TIME("layernorm_backward (N,C)", 0,
	     layernorm_backward(o, lw, lb, y, x, lw, mean, rstd, N, C));
	TIME("rope_forward (N,NH,HS)", 0, rope_forward(q, pos, N, NH, HS, 10000.0f));
	TIME("swiglu_forward (N,FF)", 0, swiglu_forward(big3, big, big2, N * FF));
	TIME("swiglu_backward (N,FF)", 0, swiglu_backward(big, big2, big3, big, big2, N * FF));
	TIME("gelu_forward (N,FF)", 0, gelu_forward(big3, big, N * FF));
	TIME("gelu_backward (N,FF)", 0, gelu_backward(big3, big, big2, N * FF));
	TIME("quick_gelu_forward (N,FF)", 0, quick_gelu_forward(big3, big, N * FF));
	TIME("residual_forward (N,C)", 0, residual_forward(o, x, y, N * C));
	TIME("logprob_forward (N,V)", 0, logprob_forward(lp, logits, tg, N, V));
	TIME("logprob_backward (N,V)", 0, logprob_backward(dlogits, logits, tg, dlp, N, V));
	for (long i = 0; i < N * C; i++) /* a second moment is never negative */
		o[i] = o[i] * o[i];
	TIME("adamw_update (N*C)", 0, adamw_update(big, big2, big3, o, N * C, 1e-4f, 0.9f, 0.999f, 1e-8f, 0, 3));
	free(x), free(y), free(w), free(big), free(big2), free(big3), free(q), free(k), free(v);
	free(dq), free(dk), free(dv), free(att), free(o), free(lw), free(lb), free(mean), free(rstd);
	free(logits), free(dlogits), free(lp), free(dlp), free(len), free(pos), free(tg);
	return 0;
}
