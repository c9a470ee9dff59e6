/* dist — data-parallel training over MPI, and a single process without it.
 *
 * Built with MPI when the Makefile finds it (make MPI=1 forces it, MPI=0
 * leaves it out; -DSEVA_MPI). Even then a tool started without a launcher
 * (mpirun, srun) runs as one process and never touches MPI; SEVA_MPI=1 in
 * the environment forces MPI_Init, SEVA_MPI=0 forbids it. Without MPI
 * every call below is the one-process identity: rank 0 of 1.
 *
 * After dist_init, a rank whose process exits with a non-zero status takes
 * the whole job down (MPI_Abort), so no rank waits forever for a peer that
 * died; a zero status finalizes MPI. Errors inside MPI are fatal
 * (MPI_ERRORS_ARE_FATAL). Call the collectives from the main thread only.
 * Depends on util. */
#ifndef SEVA_DIST_H
#define SEVA_DIST_H

/* Joins the job if the process was started by an MPI launcher (or
 * SEVA_MPI=1). Call once, after util_init (ranks above 0 then prefix their
 * messages with "[rank R]"). Dies if launched as one of several ranks by a
 * build without MPI. Returns the number of ranks. */
int dist_init(int *argc, char ***argv);
int dist_rank(void);
int dist_size(void);
/* Ranks on this host (for dividing its cores between them); 1 without MPI. */
int dist_local_size(void);

/* In-place element-wise sum / mean of BUF (n floats) over every rank; every
 * rank gets the same result. */
void dist_allreduce_sum(float *buf, long n);
void dist_allreduce_mean(float *buf, long n);
/* In-place sum of V (n doubles) over every rank: metrics, token counts. */
void dist_allreduce_sum_double(double *v, int n);
/* 1 on every rank if FLAG is non-zero on any rank (e.g. a stop signal), so
 * that all ranks leave a loop at the same step. */
int dist_any(int flag);
/* BYTES of BUF from rank ROOT to every rank. */
void dist_bcast(void *buf, long bytes, int root);
void dist_barrier(void);
/* Ends every rank of the job with status CODE (exit(CODE) without MPI). */
_Noreturn void dist_abort(int code);
/* Leaves MPI; later calls act as one process. Idempotent; dist_init
 * arranges for it at a zero exit status anyway. */
void dist_finalize(void);

#endif
