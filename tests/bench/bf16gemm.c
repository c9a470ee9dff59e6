/* bf16gemm — the machine's bf16 matrix-product ceiling, what the bf16 DPO
 * step is quoted against: matmul_forward_bf16 (oneDNN's matmul, bf16
 * operands, f32 accumulation and result; the entry point the model uses)
 * on N x N x N, and on the linear-layer products of a DPO step on each
 * CONFIG (the decoder's q, k, v, o, gate, up, down and the lm head, each
 * forward, dinp and dw, at the step's row count), weighted by how often the
 * step runs each; the f32 kernels on the same shapes beside them. Weights
 * are bound (converted once, as in training); the activations' conversion
 * is timed, since the step pays it. Best of R runs each.
 *
 *   bf16gemm [-n N] [-j THREADS] [-r REPEATS] [--rows R] [CONFIG...]
 *
 * One JSON line per figure, each also per CPU second of the process
 * (_cpu: FLOPs / (CPU seconds / threads)), steadier on a shared machine.
 * --rows: the step's rows (default 2048: 8 pairs
 * x 2 sequences x 128 slots, the bench configs' 64 image + 32 + 32).
 * Built by tests/bench/engine.sh. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor.h"
#include "util.h"
#include "vlm.h"

static int reps = 3, threads = 2;
static double cpu_best; /* best_time's best CPU seconds / threads (all threads) */

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* best seconds of the product KIND (0 forward, 1 dinp, 2 dw) on (N rows,
 * C in, OC out), in bf16 or f32 */
static double best_time(int kind, int bf16, int N, int C, int OC, float *x, float *w, float *y,
			float *d)
{
	double best = 1e30;
	cpu_best = 1e30;
	for (int r = 0; r <= reps; r++) {
		double t = now_seconds(), ct = cpu_seconds();
		if (kind == 0 && bf16)
			matmul_forward_bf16(y, x, w, NULL, N, C, OC);
		else if (kind == 0)
			matmul_forward(y, x, w, NULL, N, C, OC);
		else if (bf16)
			matmul_backward_bf16(kind == 1 ? x : NULL, kind == 2 ? w : NULL, NULL, d, x, w,
					     N, C, OC);
		else
			matmul_backward(kind == 1 ? x : NULL, kind == 2 ? w : NULL, NULL, d, x, w, N,
					C, OC);
		t = now_seconds() - t;
		ct = (cpu_seconds() - ct) / threads;
		if (r > 0 && t < best) /* the first: primitive, pages */
			best = t;
		if (r > 0 && ct < cpu_best)
			cpu_best = ct;
	}
	return best;
}

static float *fill(long n, float scale)
{
	float *a = xmalloc(sizeof(float) * n);
	for (long i = 0; i < n; i++)
		a[i] = ((float)(i % 17) - 8) * scale;
	return a;
}

static void square(int n)
{
	float *x = fill((long)n * n, 0.01f), *w = fill((long)n * n, 0.01f);
	float *y = xmalloc(sizeof(float) * n * n);
	int owner;
	tensor_weights_bind(&owner, w, (long)n * n);
	double tb = best_time(0, 1, n, n, n, x, w, y, NULL), cb = cpu_best;
	double tf = best_time(0, 0, n, n, n, x, w, y, NULL), cf = cpu_best;
	double fl = 2.0 * n * n * n;
	printf("{\"what\":\"bf16_ceiling\",\"n\":%d,\"gflops\":%.1f,\"f32_gflops\":%.1f,"
	       "\"gflops_cpu\":%.1f,\"f32_gflops_cpu\":%.1f}\n",
	       n, fl / tb / 1e9, fl / tf / 1e9, fl / cb / 1e9, fl / cf / 1e9);
	fflush(stdout);
	tensor_weights_bind(&owner, NULL, 0);
	free(x), free(w), free(y);
}

static void step_shapes(const char *path, int rows)
{
	struct vlm_config c;
	if (vlm_config_load(&c, path) < 0 || vlm_config_finish(&c) < 0)
		exit(1);
	int C = c.hidden, KV = c.kv_heads * (c.hidden / c.heads), FF = c.inter, V = c.vocab;
	/* (in, out, times per layer) of the decoder's linears: q and o (C, C),
	 * k and v (C, KV), down (FF, C), gate and up (C, FF); then the lm head
	 * (C, V), which runs on the response positions only: 2 x 32 of a
	 * pair's 2 x 128 slots, rows / 4 */
	int shapes[][3] = { { C, C, 2 }, { C, KV, 2 }, { FF, C, 1 }, { C, FF, 2 } };
	double fl = 0, tb = 0, tf = 0, cb = 0, cf = 0;
	long most = (long)rows * (FF > V ? FF : V) + (long)FF * C;
	float *x = fill(most, 1e-3f), *w = fill((long)(FF > V ? FF : V) * C, 1e-3f);
	float *y = xmalloc(sizeof(float) * most), *d = fill(most, 1e-3f);
	int owner;
	tensor_weights_bind(&owner, w, (long)(FF > V ? FF : V) * C);
	for (int s = 0; s < 5; s++) {
		int in = s < 4 ? shapes[s][0] : C, out = s < 4 ? shapes[s][1] : V;
		double times = s < 4 ? (double)shapes[s][2] * c.layers : 1;
		int n = s < 4 ? rows : rows / 4;
		for (int kind = 0; kind < 3; kind++) {
			double f = 2.0 * n * in * out * times;
			fl += f;
			tb += times * best_time(kind, 1, n, in, out, x, w, y, d);
			cb += times * cpu_best;
			tf += times * best_time(kind, 0, n, in, out, x, w, y, d);
			cf += times * cpu_best;
		}
	}
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	printf("{\"what\":\"bf16_step_shapes\",\"config\":\"%.*s\",\"rows\":%d,\"gflop\":%.2f,"
	       "\"gflops\":%.1f,\"f32_gflops\":%.1f,\"gflops_cpu\":%.1f,\"f32_gflops_cpu\":%.1f}\n",
	       (int)(strrchr(name, '.') ? strrchr(name, '.') - name : (long)strlen(name)), name, rows,
	       fl / 1e9, fl / tb / 1e9, fl / tf / 1e9, fl / cb / 1e9, fl / cf / 1e9);
	fflush(stdout);
	tensor_weights_bind(&owner, NULL, 0);
	free(x), free(w), free(y), free(d);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"threads", required_argument, NULL, 'j'}, {"rows", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0}};
	static const char usage[] = "bf16gemm [-n N] [-j THREADS] [-r REPEATS] [--rows R] [CONFIG...]";
	long n = 2048, rows = 2048;
	int c;

	util_init(argv[0]);
	tensor_blas_setup(argv);
	while ((c = getopt_long(argc, argv, "n:j:r:", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': n = arg_long("-n", optarg, 16, 16384); break;
		case 'j': threads = (int)arg_long("-j", optarg, 1, 1024); break;
		case 'r': reps = (int)arg_long("-r", optarg, 1, 1000); break;
		case 'R': rows = arg_long("--rows", optarg, 4, 1 << 20); break;
		default: usage_die(usage);
		}
	}
	tensor_set_threads(threads);
	float probe;
	if (matmul_forward_bf16(&probe, &probe, &probe, NULL, 1, 1, 1) < 0) {
		printf("{\"what\":\"bf16_ceiling\",\"n\":%ld,\"gflops\":null,\"note\":\"bf16 is not built in\"}\n", n);
		return 0;
	}
	square((int)n);
	for (int i = optind; i < argc; i++)
		step_shapes(argv[i], (int)rows);
	return 0;
}
