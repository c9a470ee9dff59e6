/* sgemm — the machine's matrix-product ceiling, the figure every other
 * benchmark is quoted against: cblas_sgemm (through matmul_forward, the
 * model's own entry point) on N x N x N, best of several runs.
 *
 *   sgemm [-n N] [-j THREADS] [-r REPEATS] [--default] [--value]
 *
 * --default skips tensor_blas_setup, so OpenBLAS runs the core it picked
 * itself (what a program that does not know the trap gets); --value prints
 * only the GFLOP/s figure, for scripts. Built by tests/bench/kernels.sh. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"
#include "util.h"

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"default", no_argument, NULL, 'D'}, {"value", no_argument, NULL, 'V'},
		{"threads", required_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	long n = 2048, threads = 2, reps = 5;
	int setup = 1, value = 0, c;

	util_init(argv[0]);
	/* the restart must see the original argv, so look before getopt permutes it */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--default"))
			setup = 0;
	if (setup)
		tensor_blas_setup(argv);
	while ((c = getopt_long(argc, argv, "n:j:r:", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': n = arg_long("-n", optarg, 1, 16384); break;
		case 'j': threads = arg_long("-j", optarg, 0, 1024); break;
		case 'r': reps = arg_long("-r", optarg, 1, 1000); break;
		case 'D': break;
		case 'V': value = 1; break;
		default: usage_die("sgemm [-n N] [-j THREADS] [-r REPEATS] [--default] [--value]");
		}
	}
	tensor_set_threads((int)threads);

	float *a = xmalloc(sizeof(float) * n * n), *b = xmalloc(sizeof(float) * n * n);
	float *o = xmalloc(sizeof(float) * n * n);
	for (long i = 0; i < n * n; i++) {
		a[i] = (float)(i % 17) * 0.01f - 0.08f;
		b[i] = (float)(i % 13) * 0.01f - 0.06f;
	}
	matmul_forward(o, a, b, NULL, (int)n, (int)n, (int)n); /* warm-up: threads, pages */
	double best = 1e30;
	for (long r = 0; r < reps; r++) {
		double t = now_seconds();
		matmul_forward(o, a, b, NULL, (int)n, (int)n, (int)n);
		t = now_seconds() - t;
		if (t < best)
			best = t;
	}
	double gflops = 2.0 * n * n * n / best / 1e9;
	if (value)
		printf("%.1f\n", gflops);
	else
		printf("sgemm %ld^3: %.1f GFLOP/s on %ld threads (%s)\n", n, gflops, threads,
		       tensor_blas_info());
	free(a), free(b), free(o);
	return 0;
}
