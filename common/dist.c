/* dist — data-parallel training over MPI, and a single process without it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "util.h"

#ifdef SEVA_MPI
#include <mpi.h>
#endif

static int rank, size = 1, local_size = 1;
#ifdef SEVA_MPI
static int active; /* MPI_Init done, MPI_Finalize not yet */
#endif

/* The largest count handed to one MPI call (MPI counts are int). */
#define DIST_CHUNK (1L << 28)

/* Set by the launchers we know: OpenMPI's mpirun, PMIx (srun --mpi=pmix,
 * OpenMPI 4), PMI (MPICH's hydra, srun --mpi=pmi2). */
static long launcher_size(void)
{
	static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE" };
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
		const char *v = getenv(vars[i]);
		if (v && *v)
			return strtol(v, NULL, 10);
	}
	return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 1 : 0;
}

#ifdef SEVA_MPI
static void dist_on_exit(int status, void *arg)
{
	(void)arg;
	if (!active)
		return;
	if (status != 0 && size > 1)
		MPI_Abort(MPI_COMM_WORLD, status);
	dist_finalize();
}
#endif

int dist_init(int *argc, char ***argv)
{
	const char *force = getenv("SEVA_MPI");
	long launched = launcher_size();
	int want = force && *force ? strcmp(force, "0") != 0 : launched > 0;

#ifdef SEVA_MPI
	if (want && !active) {
		int provided;
		/* OpenMP threads compute; only the main thread calls MPI */
		if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
			die("MPI_Init failed");
		active = 1;
		MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
		MPI_Comm_rank(MPI_COMM_WORLD, &rank);
		MPI_Comm_size(MPI_COMM_WORLD, &size);
		MPI_Comm local;
		MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL,
				    &local);
		MPI_Comm_size(local, &local_size);
		MPI_Comm_free(&local);
		on_exit(dist_on_exit, NULL);
		if (rank > 0)
			progname = xasprintf("%s: rank %d", progname, rank);
	}
#else
	(void)argc;
	(void)argv;
	if (want && launched > 1)
		die("started as one of %ld MPI ranks, but built without MPI: every rank would "
		    "train alone (rebuild with make MPI=1, OpenMPI installed)", launched);
#endif
	return size;
}

int dist_rank(void)
{
	return rank;
}

int dist_size(void)
{
	return size;
}

int dist_local_size(void)
{
	return local_size;
}

void dist_allreduce_sum(float *buf, long n)
{
#ifdef SEVA_MPI
	if (!active || size == 1)
		return;
	for (long i = 0; i < n; i += DIST_CHUNK) {
		long c = n - i < DIST_CHUNK ? n - i : DIST_CHUNK;
		MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
	}
#else
	(void)buf;
	(void)n;
#endif
}

void dist_allreduce_mean(float *buf, long n)
{
	if (size == 1)
		return;
	dist_allreduce_sum(buf, n);
	float s = 1.0f / (float)size;
	for (long i = 0; i < n; i++)
		buf[i] *= s;
}

void dist_allreduce_sum_double(double *v, int n)
{
#ifdef SEVA_MPI
	if (active && size > 1)
		MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
	(void)v;
	(void)n;
#endif
}

int dist_any(int flag)
{
	int any = flag != 0;
#ifdef SEVA_MPI
	if (active && size > 1)
		MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
#endif
	return any;
}

void dist_bcast(void *buf, long bytes, int root)
{
#ifdef SEVA_MPI
	if (!active || size == 1)
		return;
	for (long i = 0; i < bytes; i += DIST_CHUNK) {
		long c = bytes - i < DIST_CHUNK ? bytes - i : DIST_CHUNK;
		MPI_Bcast((char *)buf + i, (int)c, MPI_BYTE, root, MPI_COMM_WORLD);
	}
#else
	(void)buf;
	(void)bytes;
	(void)root;
#endif
}

void dist_barrier(void)
{
#ifdef SEVA_MPI
	if (active && size > 1)
		MPI_Barrier(MPI_COMM_WORLD);
#endif
}

_Noreturn void dist_abort(int code)
{
#ifdef SEVA_MPI
	if (active && size > 1) {
		fflush(NULL);
		MPI_Abort(MPI_COMM_WORLD, code);
	}
#endif
	exit(code);
}

void dist_finalize(void)
{
#ifdef SEVA_MPI
	if (active) {
		active = 0;
		MPI_Finalize();
	}
#endif
}
