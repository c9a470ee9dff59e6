/* test_dist — the collectives on known values, for any number of ranks: run
 * alone (one process: identities) and by t9500 as mpirun -np 2. Rank 0
 * prints the TAP; a failure on any rank fails the job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "tap.h"
#include "util.h"

int main(int argc, char **argv)
{
	util_init(argv[0]);
	int N = dist_init(&argc, &argv), r = dist_rank();
	if (r > 0 && !freopen("/dev/null", "w", stdout))
		return 1;
	tap_ok(N == dist_size() && N >= 1 && r >= 0 && r < N, "rank %d of %d", r, N);
	tap_ok(dist_local_size() >= 1 && dist_local_size() <= N, "%d ranks on this host",
	       dist_local_size());

	/* more than one chunk would need 2^28 floats: one call, but not a tiny one */
	long n = 1000003, bad = -1;
	float *buf = xmalloc((size_t)n * sizeof *buf);
	for (long i = 0; i < n; i++)
		buf[i] = (float)(r + i % 7);
	dist_allreduce_sum(buf, n);
	for (long i = 0; i < n && bad < 0; i++)
		if (buf[i] != (float)(N * (i % 7) + N * (N - 1) / 2))
			bad = i;
	if (!tap_ok(bad < 0, "allreduce_sum of %ld floats: N * (i %% 7) + N(N-1)/2", n))
		tap_diag("[%ld] = %g", bad, (double)buf[bad]);
	for (long i = 0; i < n; i++)
		buf[i] = (float)(r + i % 7);
	dist_allreduce_mean(buf, n);
	bad = -1;
	for (long i = 0; i < n && bad < 0; i++)
		if (buf[i] != (float)(i % 7) + (float)(N - 1) / 2)
			bad = i;
	if (!tap_ok(bad < 0, "allreduce_mean: (i %% 7) + (N-1)/2"))
		tap_diag("[%ld] = %g", bad, (double)buf[bad]);
	free(buf);

	double v[2] = { r, 1.5 };
	dist_allreduce_sum_double(v, 2);
	if (!tap_ok(v[0] == N * (N - 1) / 2.0 && v[1] == 1.5 * N, "allreduce_sum_double"))
		tap_diag("got %g %g, want %g %g", v[0], v[1], N * (N - 1) / 2.0, 1.5 * N);

	tap_ok(dist_any(r == N - 1) == 1, "any: true when only the last rank says so");
	tap_ok(dist_any(0) == 0, "any: false when no rank does");

	char msg[32] = "";
	if (r == N - 1)
		snprintf(msg, sizeof msg, "from rank %d", r);
	dist_bcast(msg, sizeof msg, N - 1);
	char want[32];
	snprintf(want, sizeof want, "from rank %d", N - 1);
	if (!tap_ok(!strcmp(msg, want), "bcast from the last rank"))
		tap_diag("got '%s'", msg);
	dist_barrier();
	tap_ok(1, "barrier returns");
	return tap_done();
}
