/* test_tensor_extra — tensor_extra's kernels against their naive twins:
 * the few-row product on shapes with tails (C not a multiple of 16, OC not
 * of the block), and its promise that a row's result does not depend on
 * the other rows or the threads (bit for bit). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rng.h"
#include "tap.h"
#include "tensor.h"
#include "tensor_extra.h"
#include "util.h"

static void check_rows(int N, int C, int OC)
{
	struct rng r;
	rng_seed(&r, (uint64_t)N * 1000003 + C * 1009 + OC, "rows", "test");
	float *x = xmalloc(sizeof(float) * N * C), *w = xmalloc(sizeof(float) * OC * C);
	float *y = xmalloc(sizeof(float) * N * OC), *ref = xmalloc(sizeof(float) * N * OC);
	float *one = xmalloc(sizeof(float) * OC);
	rng_normal_fill(&r, x, (long)N * C);
	rng_normal_fill(&r, w, (long)OC * C);
	matmul_rows_forward(y, x, w, N, C, OC);
	matmul_rows_forward_naive(ref, x, w, N, C, OC);
	/* float sums of C products of N(0,1) terms: error ~ sqrt(C) ulps of sqrt(C) */
	char what[80];
	snprintf(what, sizeof what, "matmul_rows_forward = naive (N %d, C %d, OC %d)", N, C, OC);
	tap_close(y, ref, (long)N * OC, 1e-6f * C, 1e-5f, what);
	int same = 1;
	for (int n = 0; n < N; n++) {
		matmul_rows_forward(one, x + (long)n * C, w, 1, C, OC);
		same &= !memcmp(one, y + (long)n * OC, sizeof(float) * OC);
	}
	tensor_set_threads(1);
	matmul_rows_forward(ref, x, w, N, C, OC);
	tensor_set_threads(2);
	same &= !memcmp(ref, y, sizeof(float) * N * OC);
	tap_ok(same, "matmul_rows_forward: each row alone and on 1 thread, bit for bit (N %d)", N);
	free(x), free(w), free(y), free(ref), free(one);
}

int main(int argc, char **argv)
{
	(void)argc;
	util_init(argv[0]);
	tensor_set_threads(2);
	check_rows(1, 16, 1);
	check_rows(3, 37, 33);
	check_rows(8, 512, 100);
	check_rows(9, 200, 70);
	check_rows(17, 1376, 65);
	return tap_done();
}
