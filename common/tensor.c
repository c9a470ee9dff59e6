/* tensor — the numeric kernels (see tensor.h for the contract).
 *
 * Matrix products go to cblas_sgemm; everything else is our own loops,
 * threaded with OpenMP over rows or heads (never from inside a BLAS call,
 * and BLAS is never called from inside an OpenMP region). Backward kernels
 * accumulate. Nothing here allocates: per-row scratch lives on the stack. */
#include "tensor.h"
#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* avx512_bf16's intrinsics (GCC 10 on) for the bf16 row-wise product */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10 && defined(__x86_64__)
#include <immintrin.h>
#define RWB_DP 1
#else
#define RWB_DP 0
#endif

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384L
/* A decoding step's products are small (a few rows) and many (seven per
 * layer): a thread joins one only for at least this many multiply-adds of
 * its own. Waking a sleeping OpenMP thread (OMP_WAIT_POLICY=passive, see
 * tensor_blas_setup) and joining it costs about 10 us of CPU and 25 us of
 * wall time on the 2-core Zen 5 machine under load, while one core does
 * 2^19 multiply-adds of the row-wise product in about 25 us from cache;
 * below that the second thread cost more than it saved (perf on a batch-1
 * generation with tiny.json: a third of the CPU time in futex and context
 * switches, every layer's product split in two). */
#define DECODE_MACS_PER_THREAD 524288.0

/* The build targets x86-64-v2 (SSE4.2); the hot loops also get AVX2+FMA and
 * AVX-512 clones, picked at load time for the CPU at hand. */
#define HOT __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))

/* [lo, hi) of n for this OpenMP thread */
static inline void my_range(long n, long *lo, long *hi)
{
	int nt = omp_get_num_threads(), id = omp_get_thread_num();
	*lo = n * id / nt;
	*hi = n * (id + 1) / nt;
}

/* e^x for x in [-87, 88] (clamped outside) within ~2 ulp, branch-free so
 * that loops over it vectorize (libm's expf does not here): Cephes' expf,
 * x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r, 2^k built in
 * the exponent bits. */
static inline float exp_approx(float x)
{
	union { float f; int32_t i; } s;
	float in = x;
	/* NaN fails both tests and would reach the int conversion (undefined
	 * for NaN): 0 stands in, and NaN comes back out at the end. */
	x = x < -87.0f ? -87.0f : x;
	x = x > 88.0f ? 88.0f : x;
	x = x == x ? x : 0.0f;
	/* round to nearest by the 1.5 * 2^23 trick: floorf would be a call */
	float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	float r = x - k * 0.693359375f + k * 2.12194440e-4f;
	float r2 = r * r;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r2 + r + 1.0f;
	s.i = ((int32_t)k + 127) << 23;
	return in == in ? p * s.f : in;
}

/* ---------------------------------------------------------------------- */
/* OpenBLAS set-up */

static char blas_info[256];

/* How much of the x86 vector hardware a kernel set of OpenBLAS uses:
 * 3 AVX-512, 2 AVX2+FMA, 1 AVX, 0 SSE only; -1 a name we do not know
 * (possibly newer than this table: left alone). */
static int core_rank(const char *name)
{
	static const char *avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
	static const char *avx2[] = {"Haswell", "Zen"};
	static const char *avx[] = {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller",
				    "Excavator"};
	static const char *sse[] = {"Generic", "Prescott", "Core2", "Penryn", "Dunnington",
				    "Nehalem", "Atom", "Opteron", "Opteron_SSE3", "Barcelona",
				    "Bobcat", "Katmai", "Coppermine", "Northwood", "Banias",
				    "Athlon", "Nano"};
	size_t i;

	if (!name)
		return -1;
	for (i = 0; i < sizeof(avx512) / sizeof(*avx512); i++)
		if (!strcasecmp(name, avx512[i]))
			return 3;
	for (i = 0; i < sizeof(avx2) / sizeof(*avx2); i++)
		if (!strcasecmp(name, avx2[i]))
			return 2;
	for (i = 0; i < sizeof(avx) / sizeof(*avx); i++)
		if (!strcasecmp(name, avx[i]))
			return 1;
	for (i = 0; i < sizeof(sse) / sizeof(*sse); i++)
		if (!strcasecmp(name, sse[i]))
			return 0;
	return -1;
}

const char *tensor_blas_choose(const char *corename, int avx512f, int avx2_fma)
{
	int have = core_rank(corename);
	int cpu = avx512f ? 3 : avx2_fma ? 2 : 0;

	if (have < 0 || have >= cpu)
		return NULL;
	return cpu == 3 ? "SkylakeX" : "Haswell";
}

static void cpu_features(int *avx512f, int *avx2_fma)
{
	__builtin_cpu_init();
	*avx512f = __builtin_cpu_supports("avx512f") != 0;
	*avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* "OpenBLAS 0.3.21" out of openblas_get_config()'s "OpenBLAS 0.3.21 NO_LAPACKE ..." */
static void blas_version(char *out, size_t n)
{
	const char *cfg = openblas_get_config();
	const char *sp = cfg ? strchr(cfg, ' ') : NULL;
	size_t len;

	if (!cfg) {
		snprintf(out, n, "OpenBLAS");
		return;
	}
	if (sp)
		sp = strchr(sp + 1, ' ');
	len = sp ? (size_t)(sp - cfg) : strlen(cfg);
	snprintf(out, n, "%.*s", (int)len, cfg);
}

/* Sets name=value unless the environment has it; returns 1 if it did. */
static int env_default(const char *name, const char *value)
{
	const char *cur = getenv(name);
	if (cur && *cur)
		return 0;
	setenv(name, value, 1);
	return 1;
}

/* A restart would leave valgrind (which follows no exec by default) with
 * nothing to check: under it, keep the process as it is. */
static int under_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");
	return pre && strstr(pre, "vgpreload");
}

void tensor_blas_setup(char **argv)
{
	const char *user = getenv("OPENBLAS_CORETYPE");
	const char *chosen = getenv("SEVA_BLAS_SELECTED");
	const char *restarted = getenv("SEVA_RESTARTED");
	const char *core = openblas_get_corename();
	/* Tests pretend to be on a CPU that OpenBLAS does not know. */
	const char *pretend = getenv("SEVA_BLAS_TEST_CORENAME");
	const char *want = NULL;
	char ver[64], self[4096];
	int avx512f, avx2_fma, change = 0;
	ssize_t n;

	blas_version(ver, sizeof(ver));
	cpu_features(&avx512f, &avx2_fma);
	if (user && *user) {
		if (chosen && !strcmp(chosen, user))
			snprintf(blas_info, sizeof(blas_info),
				 "%s core %s (selected by seva: cpu has %s)", ver, core,
				 avx512f ? "avx512f" : "avx2+fma");
		else
			snprintf(blas_info, sizeof(blas_info),
				 "%s core %s (OPENBLAS_CORETYPE=%s from the environment)", ver,
				 core, user);
	} else {
		want = tensor_blas_choose(pretend && *pretend ? pretend : core, avx512f, avx2_fma);
		snprintf(blas_info, sizeof(blas_info), "%s core %s (detected by OpenBLAS)", ver,
			 core);
	}
	if ((restarted && *restarted) || !argv || !argv[0] || under_valgrind())
		return;

	/* Both libraries read these when they are loaded, before main(), so
	 * the only way to change them is to start again with them set. The
	 * guard makes sure that happens at most once; a value the user set is
	 * never touched.
	 * - OPENBLAS_CORETYPE: the kernel set for this CPU (the trap above).
	 * - OMP_WAIT_POLICY=passive: idle OpenMP threads sleep instead of
	 *   spinning; on a shared machine spinning took a third of our CPU
	 *   time and made a DPO step slower, not faster.
	 * - OPENBLAS_NUM_THREADS=1: we run OpenBLAS inside our own threads,
	 *   so its pool is never used; do not start it. */
	if (want) {
		change |= env_default("OPENBLAS_CORETYPE", want);
		setenv("SEVA_BLAS_SELECTED", want, 1);
	}
	change |= env_default("OMP_WAIT_POLICY", "passive");
	change |= env_default("OPENBLAS_NUM_THREADS", "1");
	if (!change)
		return;
	setenv("SEVA_RESTARTED", "1", 1);
	fflush(NULL);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		execv(self, argv);
	}
	snprintf(blas_info, sizeof(blas_info),
		 "%s core %s (detected by OpenBLAS; restart with %s failed: %s)", ver, core,
		 want ? want : "OMP_WAIT_POLICY=passive", strerror(errno));
}

const char *tensor_blas_info(void)
{
	if (!blas_info[0]) {
		char ver[64];
		blas_version(ver, sizeof(ver));
		snprintf(blas_info, sizeof(blas_info), "%s core %s", ver,
			 openblas_get_corename());
	}
	return blas_info;
}

/* OpenBLAS runs single-threaded inside our own OpenMP threads, each on its
 * slice of the product. Its own thread pool would otherwise spin for a long
 * while after every call (OPENBLAS_THREAD_TIMEOUT, read only at load) and
 * fight our OpenMP threads for the cores: on 2 cores a 1 M-float residual
 * add took 8 ms after an sgemm instead of 0.3. Slicing costs nothing at the
 * model's sizes (measured: as fast or faster than OpenBLAS's threads). */
static int blas_single;

static void blas_one_thread(void)
{
	if (!__atomic_load_n(&blas_single, __ATOMIC_ACQUIRE)) {
		#pragma omp critical(tensor_blas)
		if (!blas_single) {
			openblas_set_num_threads(1);
			__atomic_store_n(&blas_single, 1, __ATOMIC_RELEASE);
		}
	}
}

void tensor_set_threads(int n)
{
	if (n <= 0)
		n = omp_get_num_procs();
	omp_set_num_threads(n);
	openblas_set_num_threads(1);
	blas_single = 1;
}

int tensor_sgemm_row_invariant(void)
{
	static const int shapes[][2] = {{16, 48}, {48, 96}, {96, 192}, {192, 256}, {256, 64}};
	enum { MM = 48 };
	int ok = 1;
	blas_one_thread();
	for (size_t s = 0; ok && s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int C = shapes[s][0], OC = shapes[s][1];
		float *a = xmalloc(sizeof(float) * MM * C), *w = xmalloc(sizeof(float) * OC * C);
		float *all = xmalloc(sizeof(float) * MM * OC), *few = xmalloc(sizeof(float) * MM * OC);
		uint32_t x = 12345;
		for (long i = 0; i < (long)MM * C; i++)
			a[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
		for (long i = 0; i < (long)OC * C; i++)
			w[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, MM, OC, C, 1.0f, a, C, w, C,
			    0.0f, all, OC);
		for (int m = 1; ok && m < MM; m++) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, OC, C, 1.0f, a, C, w,
				    C, 0.0f, few, OC);
			ok = !memcmp(few, all, sizeof(float) * m * OC);
		}
		free(a);
		free(w);
		free(all);
		free(few);
	}
	return ok;
}

/* Threads worth using on a product of `flops` multiply-adds. */
static int mm_threads(double flops)
{
	int nt = omp_get_max_threads();
	if (flops < 65536.0)
		return 1;
	return nt;
}

/* Threads worth using on a decoding step's product of `macs`
 * multiply-adds: each one at least DECODE_MACS_PER_THREAD of them. */
static int decode_threads(double macs)
{
	int nt = omp_get_max_threads();
	double k = macs / DECODE_MACS_PER_THREAD;
	return k < 1 ? 1 : k < nt ? (int)k : nt;
}

/* [lo, hi) of n for thread id of nt */
static inline void slice(int n, int id, int nt, int *lo, int *hi)
{
	*lo = (int)((long)n * id / nt);
	*hi = (int)((long)n * (id + 1) / nt);
}

/* ---------------------------------------------------------------------- */
/* Linear */

/* The bf16 path (at the end of the file): 1 if it did the product. */
static int mm_bf16_forward(float *out, const float *inp, const float *w, const float *bias,
			   int N, int C, int OC);
static int mm_bf16_backward(float *dinp, float *dw, float *dbias, const float *dout,
			    const float *inp, const float *w, int N, int C, int OC);
static uint16_t *weights_copy(const float *p, long n);
static void bf16_convert_range(uint16_t *dst, const float *src, long n);

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
		    int N, int C, int OC)
{
	if (N <= 0 || OC <= 0 || mm_bf16_forward(out, inp, w, bias, N, C, OC))
		return;
	blas_one_thread();
	if (C <= 0) {
		for (int n = 0; n < N; n++)
			if (bias)
				memcpy(out + (long)n * OC, bias, sizeof(float) * OC);
			else
				memset(out + (long)n * OC, 0, sizeof(float) * OC);
		return;
	}
	#pragma omp parallel num_threads(mm_threads((double)N * C * OC))
	{
		int nt = omp_get_num_threads(), id = omp_get_thread_num(), lo, hi;
		float beta = bias ? 1.0f : 0.0f;
		if (N >= 32 * nt) {
			/* rows of the batch */
			slice(N, id, nt, &lo, &hi);
			if (bias)
				for (int n = lo; n < hi; n++)
					memcpy(out + (long)n * OC, bias, sizeof(float) * OC);
			if (hi > lo)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C,
					    1.0f, inp + (long)lo * C, C, w, C, beta,
					    out + (long)lo * OC, OC);
		} else {
			/* output channels: decoding's few rows read all of w once */
			slice(OC, id, nt, &lo, &hi);
			if (bias)
				for (int n = 0; n < N; n++)
					memcpy(out + (long)n * OC + lo, bias + lo,
					       sizeof(float) * (hi - lo));
			if (hi > lo && N == 1)
				cblas_sgemv(CblasRowMajor, CblasNoTrans, hi - lo, C, 1.0f,
					    w + (long)lo * C, C, inp, 1, beta, out + lo, 1);
			else if (hi > lo)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, hi - lo, C,
					    1.0f, inp, C, w + (long)lo * C, C, beta, out + lo, OC);
		}
	}
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
		     const float *inp, const float *w, int N, int C, int OC)
{
	if (N <= 0 || OC <= 0 || mm_bf16_backward(dinp, dw, dbias, dout, inp, w, N, C, OC))
		return;
	blas_one_thread();
	#pragma omp parallel num_threads(mm_threads(2.0 * N * C * OC))
	{
		int nt = omp_get_num_threads(), id = omp_get_thread_num(), lo, hi;
		/* dinp (N,C) += dout (N,OC) . w (OC,C), by rows or by columns */
		if (dinp && C > 0) {
			if (N >= 32 * nt) {
				slice(N, id, nt, &lo, &hi);
				if (hi > lo)
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo,
						    C, OC, 1.0f, dout + (long)lo * OC, OC, w, C, 1.0f,
						    dinp + (long)lo * C, C);
			} else {
				slice(C, id, nt, &lo, &hi);
				if (hi > lo)
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N,
						    hi - lo, OC, 1.0f, dout, OC, w + lo, C, 1.0f,
						    dinp + lo, C);
			}
		}
		/* dw (OC,C) += dout^T (OC,N) . inp (N,C), by rows or by columns */
		if (dw && C > 0) {
			if (OC >= 16 * nt) {
				slice(OC, id, nt, &lo, &hi);
				if (hi > lo)
					cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo,
						    C, N, 1.0f, dout + lo, OC, inp, C, 1.0f,
						    dw + (long)lo * C, C);
			} else {
				slice(C, id, nt, &lo, &hi);
				if (hi > lo)
					cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC,
						    hi - lo, N, 1.0f, dout, OC, inp + lo, C, 1.0f,
						    dw + lo, C);
			}
		}
		/* dbias (OC) += column sums of dout */
		if (dbias) {
			slice(OC, id, nt, &lo, &hi);
			for (int n = 0; n < N; n++) {
				const float *d = dout + (long)n * OC;
				for (int o = lo; o < hi; o++)
					dbias[o] += d[o];
			}
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Row-wise linear: every out[n][o] summed in one order fixed by C alone.
 *
 * The order: 16 lanes, lane j summing w[c] * x[c] for c = j, j+16, ... over
 * the first C - C%16 channels; the lanes added as a fixed tree; then the
 * tail channels one by one; then the bias. Each product and each sum is
 * rounded on its own (no fused multiply-add: the baseline build has none,
 * and the AVX2 and AVX-512 copies must give its bits), and nothing is
 * reassociated (no -ffast-math), so the three copies below differ only in
 * how wide the registers are that carry the same lanes. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

typedef float rw_v16 __attribute__((vector_size(64)));
typedef float rw_v16u __attribute__((vector_size(64), aligned(4)));

enum { RW_LANES = 16, RW_OB = 32 /* output channels per block: 64 KB of w at C 512 */ };

static inline __attribute__((always_inline)) float rw_hsum(const rw_v16 *v)
{
	rw_v16 a = *v;
	float t[8];
	for (int i = 0; i < 8; i++)
		t[i] = a[i] + a[i + 8];
	for (int i = 0; i < 4; i++)
		t[i] += t[i + 4];
	return (t[0] + t[2]) + (t[1] + t[3]);
}

/* the tail channels and the bias, in the order the contract fixes */
static inline __attribute__((always_inline)) float rw_finish(float s, const float *wr,
							     const float *x, int CV, int C,
							     const float *bias, int o)
{
	for (int c = CV; c < C; c++) {
		float p = wr[c] * x[c];
		s = s + p;
	}
	return bias ? s + bias[o] : s;
}

/* Rows [n, n+R) against output channels [o0, o1): R rows share each load
 * of a weight vector, and w is streamed in order (a lone row runs at the
 * speed of memory). The sums are the same whatever R. */
static inline __attribute__((always_inline)) void
rw_pass(float *out, const float *inp, const float *w, const float *bias, int n, int C, int OC,
	int o0, int o1, const int R)
{
	int CV = C - C % RW_LANES;
	const float *x = inp + (long)n * C;
	for (int o = o0; o < o1; o++) {
		const float *wr = w + (long)o * C;
		rw_v16 a[4] = {{0}};
		for (int c = 0; c < CV; c += RW_LANES) {
			rw_v16 wv = *(const rw_v16u *)(wr + c);
			#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				a[r] += wv * *(const rw_v16u *)(x + (long)r * C + c);
		}
		#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			out[(long)(n + r) * OC + o] =
				rw_finish(rw_hsum(&a[r]), wr, x + (long)r * C, CV, C, bias, o);
	}
}

/* Every row of N through PASS(out, x, w, bias, n, C, OC, o0, o1, R): four
 * rows at a time, then two, then one; R is a constant, so that each pass
 * keeps its R rows' sums in registers. */
#define ROWS_BY_4_2_1(PASS, out, x, w, bias, N, C, OC, o0, o1)                  \
	do {                                                                     \
		int n_ = 0;                                                      \
		for (; n_ + 4 <= (N); n_ += 4)                                   \
			PASS(out, x, w, bias, n_, C, OC, o0, o1, 4);             \
		if (n_ + 2 <= (N)) {                                             \
			PASS(out, x, w, bias, n_, C, OC, o0, o1, 2);             \
			n_ += 2;                                                 \
		}                                                                \
		if (n_ < (N))                                                    \
			PASS(out, x, w, bias, n_, C, OC, o0, o1, 1);             \
	} while (0)

/* Output channels [o0, o1) of every row. */
static inline __attribute__((always_inline)) void
rw_block(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
	 int o0, int o1)
{
	ROWS_BY_4_2_1(rw_pass, out, inp, w, bias, N, C, OC, o0, o1);
}

/* The same source for each instruction set (chosen by rw_use, not by
 * target_clones, so that tests can run every copy the CPU has). */
typedef void rw_fn(float *, const float *, const float *, const float *, int, int, int, int,
		   int);
static void rw_v2(float *out, const float *inp, const float *w, const float *bias, int N, int C,
		  int OC, int o0, int o1)
{
	rw_block(out, inp, w, bias, N, C, OC, o0, o1);
}
__attribute__((target("arch=x86-64-v3"))) static void
rw_v3(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
      int o0, int o1)
{
	rw_block(out, inp, w, bias, N, C, OC, o0, o1);
}
__attribute__((target("arch=x86-64-v4"))) static void
rw_v4(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
      int o0, int o1)
{
	rw_block(out, inp, w, bias, N, C, OC, o0, o1);
}

#pragma GCC pop_options

static rw_fn *const rw_fns[3] = {rw_v2, rw_v3, rw_v4};
static int rw_use = -1; /* index into rw_fns; -1 until first use */

/* the widest copy this CPU runs */
static int rw_cpu_level(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("x86-64-v4"))
		return 2;
	if (__builtin_cpu_supports("x86-64-v3"))
		return 1;
	return 0;
}

int tensor_rowwise_level(int level)
{
	int top = rw_cpu_level();
	if (level >= 0 && level <= top)
		__atomic_store_n(&rw_use, level, __ATOMIC_RELAXED);
	else if (level < 0 && __atomic_load_n(&rw_use, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&rw_use, top, __ATOMIC_RELAXED);
	return __atomic_load_n(&rw_use, __ATOMIC_RELAXED);
}

int tensor_rowwise_threads(int N, int C, int OC)
{
	int nt = decode_threads((double)N * C * OC);
	int nb = (OC + RW_OB - 1) / RW_OB; /* no more threads than blocks */
	return nt < nb ? nt : nb > 0 ? nb : 1;
}

void matmul_forward_rowwise(float *out, const float *inp, const float *w, const float *bias,
			    int N, int C, int OC)
{
	if (N <= 0 || OC <= 0)
		return;
	rw_fn *fn = rw_fns[tensor_rowwise_level(-1)];
	int nb = (OC + RW_OB - 1) / RW_OB;
	#pragma omp parallel for schedule(static) num_threads(tensor_rowwise_threads(N, C, OC))
	for (int b = 0; b < nb; b++) {
		int o0 = b * RW_OB, o1 = o0 + RW_OB < OC ? o0 + RW_OB : OC;
		fn(out, inp, w, bias, N, C > 0 ? C : 0, OC, o0, o1);
	}
}

void matmul_forward_naive(float *out, const float *inp, const float *w, const float *bias,
			  int N, int C, int OC)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double s = bias ? bias[o] : 0.0;
			for (int c = 0; c < C; c++)
				s += (double)inp[(long)n * C + c] * w[(long)o * C + c];
			out[(long)n * OC + o] = (float)s;
		}
}

void matmul_backward_naive(float *dinp, float *dw, float *dbias, const float *dout,
			   const float *inp, const float *w, int N, int C, int OC)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			float d = dout[(long)n * OC + o];
			for (int c = 0; c < C; c++) {
				if (dinp)
					dinp[(long)n * C + c] += d * w[(long)o * C + c];
				if (dw)
					dw[(long)o * C + c] += d * inp[(long)n * C + c];
			}
			if (dbias)
				dbias[o] += d;
		}
}

/* ---------------------------------------------------------------------- */
/* Normalisation */

/* Row kernels of the norms, vectorised (float sums: 4-16 lanes, then a
 * tree, well within float accuracy at any C). w NULL means all ones. */
HOT static float ln_row_fwd(float *y, const float *x, const float *w, const float *b, int C,
			    float eps, float *mean_out)
{
	float m = 0, v = 0;
	#pragma omp simd reduction(+ : m)
	for (int c = 0; c < C; c++)
		m += x[c];
	m /= C;
	#pragma omp simd reduction(+ : v)
	for (int c = 0; c < C; c++)
		v += (x[c] - m) * (x[c] - m);
	float rs = 1.0f / sqrtf(v / C + eps);
	if (w && b) {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			y[c] = (x[c] - m) * rs * w[c] + b[c];
	} else {
		for (int c = 0; c < C; c++)
			y[c] = (x[c] - m) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
	}
	*mean_out = m;
	return rs;
}

HOT static void ln_row_bwd(float *dx, const float *d, const float *x, const float *w, float m,
			   float rs, int C)
{
	float sd = 0, sdn = 0;
	if (w) {
		#pragma omp simd reduction(+ : sd, sdn)
		for (int c = 0; c < C; c++) {
			float dn = d[c] * w[c];
			sd += dn;
			sdn += dn * ((x[c] - m) * rs);
		}
	} else {
		#pragma omp simd reduction(+ : sd, sdn)
		for (int c = 0; c < C; c++) {
			sd += d[c];
			sdn += d[c] * ((x[c] - m) * rs);
		}
	}
	float md = sd / C, mdn = sdn / C;
	if (w) {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			dx[c] += (d[c] * w[c] - md - (x[c] - m) * rs * mdn) * rs;
	} else {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			dx[c] += (d[c] - md - (x[c] - m) * rs * mdn) * rs;
	}
}

/* dw[c0..c1) += sum_n dout * norm, db += sum_n dout */
HOT static void ln_cols_bwd(float *dw, float *db, const float *dout, const float *inp,
			    const float *mean, const float *rstd, int N, int C, int c0, int c1)
{
	for (int n = 0; n < N; n++) {
		const float *x = inp + (long)n * C, *d = dout + (long)n * C;
		float m = mean[n], rs = rstd[n];
		if (dw) {
			#pragma omp simd
			for (int c = c0; c < c1; c++)
				dw[c] += d[c] * ((x[c] - m) * rs);
		}
		if (db) {
			#pragma omp simd
			for (int c = c0; c < c1; c++)
				db[c] += d[c];
		}
	}
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
		       const float *w, const float *b, int N, int C, float eps)
{
	#pragma omp parallel for if ((long)N * C > PAR_MIN)
	for (int n = 0; n < N; n++) {
		float m, rs = ln_row_fwd(out + (long)n * C, inp + (long)n * C, w, b, C, eps, &m);
		if (mean)
			mean[n] = m;
		if (rstd)
			rstd[n] = rs;
	}
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
			const float *inp, const float *w, const float *mean,
			const float *rstd, int N, int C)
{
	int par = (long)N * C > PAR_MIN;

	if (dinp) {
		#pragma omp parallel for if (par)
		for (int n = 0; n < N; n++)
			ln_row_bwd(dinp + (long)n * C, dout + (long)n * C, inp + (long)n * C, w,
				   mean[n], rstd[n], C);
	}
	if (dw || db) {
		/* each thread owns a slice of the columns and walks every row */
		#pragma omp parallel if (par)
		{
			long c0, c1;
			my_range(C, &c0, &c1);
			ln_cols_bwd(dw, db, dout, inp, mean, rstd, N, C, (int)c0, (int)c1);
		}
	}
}

HOT static float rms_row_fwd(float *y, const float *x, const float *w, int C, float eps)
{
	float ss = 0;
	#pragma omp simd reduction(+ : ss)
	for (int c = 0; c < C; c++)
		ss += x[c] * x[c];
	float rs = 1.0f / sqrtf(ss / C + eps);
	if (w) {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			y[c] = x[c] * rs * w[c];
	} else {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			y[c] = x[c] * rs;
	}
	return rs;
}

/* d/dx_j of x_i r w_i: r (dn_j - x_j r^2 mean(dn . x)), dn = dout w */
HOT static void rms_row_bwd(float *dx, const float *d, const float *x, const float *w, float rs,
			    int C)
{
	float s = 0;
	if (w) {
		#pragma omp simd reduction(+ : s)
		for (int c = 0; c < C; c++)
			s += d[c] * w[c] * x[c];
	} else {
		#pragma omp simd reduction(+ : s)
		for (int c = 0; c < C; c++)
			s += d[c] * x[c];
	}
	float k = s / C * rs * rs;
	if (w) {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			dx[c] += rs * (d[c] * w[c] - x[c] * k);
	} else {
		#pragma omp simd
		for (int c = 0; c < C; c++)
			dx[c] += rs * (d[c] - x[c] * k);
	}
}

HOT static void rms_cols_bwd(float *dw, const float *dout, const float *inp, const float *rstd,
			     int N, int C, int c0, int c1)
{
	for (int n = 0; n < N; n++) {
		const float *x = inp + (long)n * C, *d = dout + (long)n * C;
		float rs = rstd[n];
		#pragma omp simd
		for (int c = c0; c < c1; c++)
			dw[c] += d[c] * x[c] * rs;
	}
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
		     int N, int C, float eps)
{
	#pragma omp parallel for if ((long)N * C > PAR_MIN)
	for (int n = 0; n < N; n++) {
		float rs = rms_row_fwd(out + (long)n * C, inp + (long)n * C, w, C, eps);
		if (rstd)
			rstd[n] = rs;
	}
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
		      const float *w, const float *rstd, int N, int C)
{
	int par = (long)N * C > PAR_MIN;

	if (dinp) {
		#pragma omp parallel for if (par)
		for (int n = 0; n < N; n++)
			rms_row_bwd(dinp + (long)n * C, dout + (long)n * C, inp + (long)n * C, w,
				    rstd[n], C);
	}
	if (dw) {
		#pragma omp parallel if (par)
		{
			long c0, c1;
			my_range(C, &c0, &c1);
			rms_cols_bwd(dw, dout, inp, rstd, N, C, (int)c0, (int)c1);
		}
	}
}

/* ---------------------------------------------------------------------- */
/* RoPE */

/* sign +1: forward rotation; -1: its transpose (the inverse). Angles are
 * computed in float the way Hugging Face's LlamaRotaryEmbedding does
 * (inv_freq = 1 / theta^(2i/HS), angle = pos * inv_freq), so they round
 * alike; each row's cos/sin serve all its heads. */
static void rope_apply(float *x, const int *pos, int N, int NH, int HS, float theta,
		       float sign)
{
	int half = HS / 2;
	float inv[half > 0 ? half : 1];

	for (int i = 0; i < half; i++)
		inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)HS);
	#pragma omp parallel for if ((long)N * NH * HS > PAR_MIN)
	for (int n = 0; n < N; n++) {
		float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
		for (int i = 0; i < half; i++) {
			float a = (float)pos[n] * inv[i];
			cs[i] = cosf(a);
			sn[i] = sign * sinf(a);
		}
		for (int h = 0; h < NH; h++) {
			float *r = x + ((long)n * NH + h) * HS;
			#pragma omp simd
			for (int i = 0; i < half; i++) {
				float x1 = r[i], x2 = r[i + half];
				r[i] = x1 * cs[i] - x2 * sn[i];
				r[i + half] = x2 * cs[i] + x1 * sn[i];
			}
		}
	}
}

void rope_forward(float *x, const int *pos, int N, int NH, int HS, float theta)
{
	rope_apply(x, pos, N, NH, HS, theta, 1.0f);
}

void rope_backward(float *dx, const int *pos, int N, int NH, int HS, float theta)
{
	rope_apply(dx, pos, N, NH, HS, theta, -1.0f);
}

/* ---------------------------------------------------------------------- */
/* Attention */

static inline float dotf(const float *a, const float *b, int n)
{
	float s = 0;
	#pragma omp simd reduction(+ : s)
	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static inline void axpyf(float *y, float a, const float *x, int n)
{
	#pragma omp simd
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

/* p[0..n) = softmax(p[0..n)), p[n..m) = 0 */
HOT static void softmax_row(float *p, int n, int m)
{
	float mx = -INFINITY, sum = 0;
	#pragma omp simd reduction(max : mx)
	for (int j = 0; j < n; j++)
		mx = p[j] > mx ? p[j] : mx;
	#pragma omp simd reduction(+ : sum)
	for (int j = 0; j < n; j++) {
		p[j] = exp_approx(p[j] - mx);
		sum += p[j];
	}
	float inv = 1.0f / sum;
	#pragma omp simd
	for (int j = 0; j < n; j++)
		p[j] *= inv;
	if (m > n)
		memset(p + n, 0, sizeof(float) * (m - n));
}

/* One query row against keys 0..nk-1: p (nk) the softmax of the scaled
 * scores, o (HS) = sum_j p_j v_j. kstride: floats between the keys (and
 * values) of consecutive slots. */
HOT static void attend_row(float *o, float *p, const float *q, const float *k, const float *v,
			   int nk, long kstride, int HS, float scale)
{
	for (int j = 0; j < nk; j++)
		p[j] = dotf(q, k + j * kstride, HS) * scale;
	softmax_row(p, nk, nk);
	memset(o, 0, sizeof(float) * HS);
	for (int j = 0; j < nk; j++)
		axpyf(o, p[j], v + j * kstride, HS);
}

/* Query rows per block of the blocked attention: a block's scores are one
 * sgemm, and its scratch (backward) stays under 256 KB. */
static int att_block(int T)
{
	int nb = 65536 / (T > 0 ? T : 1);
	return nb < 1 ? 1 : nb > 64 ? 64 : nb;
}

/* The attention of one (sequence, head, block of query rows [t0, t1)):
 * scores by sgemm into the saved probabilities, masked softmax per row,
 * then out = P . V by sgemm. */
static void attend_block(float *out, float *att, const float *q, const float *k, const float *v,
			 int L, int t0, int t1, int T, int NH, int NKV, int HS, int causal)
{
	int te = t1 < L ? t1 : L, nk = causal ? te : L;
	long ldq = (long)NH * HS, ldk = (long)NKV * HS;

	if (te > t0) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, te - t0, nk, HS,
			    1.0f / sqrtf((float)HS), q + t0 * ldq, ldq, k, ldk, 0.0f,
			    att + (long)t0 * T, T);
		for (int t = t0; t < te; t++)
			softmax_row(att + (long)t * T, causal ? t + 1 : L, T);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, te - t0, HS, nk, 1.0f,
			    att + (long)t0 * T, T, v, ldk, 0.0f, out + t0 * ldq, ldq);
	}
	for (int t = te > t0 ? te : t0; t < t1; t++) { /* padding */
		memset(out + t * ldq, 0, sizeof(float) * HS);
		memset(att + (long)t * T, 0, sizeof(float) * T);
	}
}

void attention_forward(float *out, float *att, const float *q, const float *k,
		       const float *v, const int *len, int B, int T, int NH, int NKV,
		       int HS, int causal)
{
	float scale = 1.0f / sqrtf((float)HS);
	int grp = NH / NKV, nb = att_block(T), nblk = (T + nb - 1) / nb;
	long kstride = (long)NKV * HS;
	int par = (long)B * NH * T * T * HS > PAR_MIN;

	blas_one_thread();
	if (att) {
		#pragma omp parallel for collapse(3) schedule(dynamic, 1) if (par)
		for (int b = 0; b < B; b++)
			for (int h = 0; h < NH; h++)
				for (int blk = 0; blk < nblk; blk++) {
					int t0 = blk * nb, t1 = t0 + nb < T ? t0 + nb : T;
					long kv0 = (long)b * T * kstride + (long)(h / grp) * HS;
					attend_block(out + (long)b * T * NH * HS + (long)h * HS,
						     att + ((long)b * NH + h) * T * T,
						     q + (long)b * T * NH * HS + (long)h * HS, k + kv0,
						     v + kv0, len ? len[b] : T, t0, t1, T, NH, NKV, HS,
						     causal);
				}
		return;
	}
	/* no probabilities kept (inference): row by row, a row of scratch each */
	#pragma omp parallel for collapse(3) schedule(dynamic, 4) if (par)
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T; t++) {
				float *o = out + (((long)b * T + t) * NH + h) * HS;
				int L = len ? len[b] : T;
				float p[T];
				if (t >= L) {
					memset(o, 0, sizeof(float) * HS);
					continue;
				}
				const float *qr = q + (((long)b * T + t) * NH + h) * HS;
				long kv0 = (long)b * T * kstride + (long)(h / grp) * HS;
				attend_row(o, p, qr, k + kv0, v + kv0, causal ? t + 1 : L, kstride, HS,
					   scale);
			}
}

void attention_forward_naive(float *out, float *att, const float *q, const float *k,
			     const float *v, const int *len, int B, int T, int NH, int NKV,
			     int HS, int causal)
{
	double scale = 1.0 / sqrt((double)HS);

	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++) {
			int kh = h / (NH / NKV), L = len ? len[b] : T;
			for (int t = 0; t < T; t++) {
				float *o = out + (((long)b * T + t) * NH + h) * HS;
				float *p = att + (((long)b * NH + h) * T + t) * T;
				const float *qr = q + (((long)b * T + t) * NH + h) * HS;
				for (int j = 0; j < T; j++)
					p[j] = 0;
				for (int i = 0; i < HS; i++)
					o[i] = 0;
				if (t >= L)
					continue;
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j < L; j++) {
					if (causal && j > t)
						break;
					const float *kr = k + (((long)b * T + j) * NKV + kh) * HS;
					double s = 0;
					for (int i = 0; i < HS; i++)
						s += (double)qr[i] * kr[i];
					s *= scale;
					p[j] = (float)s;
					if (s > mx)
						mx = s;
				}
				int nk = causal ? t + 1 : L;
				for (int j = 0; j < nk; j++) {
					double e = exp((double)p[j] - mx);
					p[j] = (float)e;
					sum += e;
				}
				for (int j = 0; j < nk; j++)
					p[j] = (float)(p[j] / sum);
				for (int i = 0; i < HS; i++) {
					double s = 0;
					for (int j = 0; j < nk; j++)
						s += (double)p[j] *
						     v[(((long)b * T + j) * NKV + kh) * HS + i];
					o[i] = (float)s;
				}
			}
		}
}

/* dS = P (dP - rowsum(P dP)) scale over the first n of m columns, 0 after */
HOT static void softmax_grad_row(float *ds, const float *p, int n, int m, float scale)
{
	float dot = 0;
	#pragma omp simd reduction(+ : dot)
	for (int j = 0; j < n; j++)
		dot += p[j] * ds[j];
	#pragma omp simd
	for (int j = 0; j < n; j++)
		ds[j] = p[j] * (ds[j] - dot) * scale;
	for (int j = n; j < m; j++)
		ds[j] = 0;
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout,
			const float *att, const float *q, const float *k, const float *v,
			const int *len, int B, int T, int NH, int NKV, int HS, int causal)
{
	float scale = 1.0f / sqrtf((float)HS);
	int grp = NH / NKV, nb = att_block(T);
	long ldq = (long)NH * HS, ldk = (long)NKV * HS;

	blas_one_thread();
	/* A (b, kv head) pair owns its dk, dv and the dq of its query heads,
	 * so threads never write the same float. Per block of query rows:
	 * dP = dO V^T, dV += P^T dO, dS = softmax'(dP), dQ += dS K, dK += dS^T Q. */
	#pragma omp parallel for collapse(2) schedule(dynamic, 1) \
		if ((long)B * NH * T * T * HS > PAR_MIN)
	for (int b = 0; b < B; b++)
		for (int kh = 0; kh < NKV; kh++) {
			int L = len ? len[b] : T;
			long kv0 = (long)b * T * ldk + (long)kh * HS;
			float ds[nb * (T > 0 ? T : 1)];
			for (int h = kh * grp; h < (kh + 1) * grp; h++)
				for (int t0 = 0; t0 < L; t0 += nb) {
					int te = t0 + nb < L ? t0 + nb : L, nr = te - t0;
					int nk = causal ? te : L;
					long qi = ((long)b * T + t0) * ldq + (long)h * HS;
					const float *p = att + (((long)b * NH + h) * T + t0) * T;
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, HS,
						    1.0f, dout + qi, ldq, v + kv0, ldk, 0.0f, ds, nk);
					if (dv)
						cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS,
							    nr, 1.0f, p, T, dout + qi, ldq, 1.0f,
							    dv + kv0, ldk);
					for (int r = 0; r < nr; r++)
						softmax_grad_row(ds + (long)r * nk, p + (long)r * T,
								 causal ? t0 + r + 1 : L, nk, scale);
					if (dq)
						cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr,
							    HS, nk, 1.0f, ds, nk, k + kv0, ldk, 1.0f,
							    dq + qi, ldq);
					if (dk)
						cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS,
							    nr, 1.0f, ds, nk, q + qi, ldq, 1.0f,
							    dk + kv0, ldk);
				}
		}
}

void attention_decode(float *out, float *scratch, const float *q, const float *kc,
		      const float *vc, const int *n, int B, int S, int NH, int NKV, int HS)
{
	float scale = 1.0f / sqrtf((float)HS);
	int grp = NH / NKV;
	long ldk = (long)NKV * HS;

	blas_one_thread();
	/* The query heads of a kv group read its cache once: scores (grp, n)
	 * = Q K^T and out (grp, HS) = P V, one sgemm each; 2 n HS
	 * multiply-adds per head, threads as for the step's products. */
	#pragma omp parallel for collapse(2) schedule(dynamic, 1) \
		num_threads(decode_threads(2.0 * B * NH * S * HS))
	for (int b = 0; b < B; b++)
		for (int kh = 0; kh < NKV; kh++) {
			long r0 = (long)b * NH + (long)kh * grp; /* first head of the group */
			long kv0 = (long)b * S * ldk + (long)kh * HS;
			int L = n[b];
			if (L <= 0) {
				memset(out + r0 * HS, 0, sizeof(float) * grp * HS);
				continue;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, grp, L, HS, scale,
				    q + r0 * HS, HS, kc + kv0, ldk, 0.0f, scratch + r0 * S, S);
			for (int g = 0; g < grp; g++)
				softmax_row(scratch + (r0 + g) * S, L, L);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, grp, HS, L, 1.0f,
				    scratch + r0 * S, S, vc + kv0, ldk, 0.0f, out + r0 * HS, HS);
		}
}

/* ---------------------------------------------------------------------- */
/* Element-wise */

#define SQRT_HALF 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

/* Each kernel: a HOT loop over a range, run by every thread on its slice. */
#define EACH(N, min, call) do { \
	long n_ = (N); \
	int par_ = n_ > (min); \
	_Pragma("omp parallel if (par_)") \
	{ \
		long lo_, hi_; \
		my_range(n_, &lo_, &hi_); \
		if (hi_ > lo_) \
			call; \
	} \
} while (0)

/* GELU keeps libm's erff: it is exact there, and it runs only in the
 * projector (and in ViTs configured with "gelu"). */
static void gelu_fwd(float *out, const float *inp, long n)
{
	for (long i = 0; i < n; i++)
		out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * SQRT_HALF));
}

static void gelu_bwd(float *dinp, const float *inp, const float *dout, long n)
{
	for (long i = 0; i < n; i++) {
		float x = inp[i];
		float cdf = 0.5f * (1.0f + erff(x * SQRT_HALF));
		float pdf = INV_SQRT_2PI * exp_approx(-0.5f * x * x);
		dinp[i] += dout[i] * (cdf + x * pdf);
	}
}

void gelu_forward(float *out, const float *inp, long N)
{
	EACH(N, PAR_MIN / 4, gelu_fwd(out + lo_, inp + lo_, hi_ - lo_));
}

void gelu_backward(float *dinp, const float *inp, const float *dout, long N)
{
	EACH(N, PAR_MIN / 4, gelu_bwd(dinp + lo_, inp + lo_, dout + lo_, hi_ - lo_));
}

static inline float sigmoid_approx(float x)
{
	return 1.0f / (1.0f + exp_approx(-x));
}

HOT static void quick_gelu_fwd(float *out, const float *inp, long n)
{
	#pragma omp simd
	for (long i = 0; i < n; i++)
		out[i] = inp[i] * sigmoid_approx(1.702f * inp[i]);
}

HOT static void quick_gelu_bwd(float *dinp, const float *inp, const float *dout, long n)
{
	#pragma omp simd
	for (long i = 0; i < n; i++) {
		float x = inp[i], s = sigmoid_approx(1.702f * x);
		dinp[i] += dout[i] * (s + 1.702f * x * s * (1.0f - s));
	}
}

void quick_gelu_forward(float *out, const float *inp, long N)
{
	EACH(N, PAR_MIN, quick_gelu_fwd(out + lo_, inp + lo_, hi_ - lo_));
}

void quick_gelu_backward(float *dinp, const float *inp, const float *dout, long N)
{
	EACH(N, PAR_MIN, quick_gelu_bwd(dinp + lo_, inp + lo_, dout + lo_, hi_ - lo_));
}

HOT static void swiglu_fwd(float *out, const float *gate, const float *up, long n)
{
	#pragma omp simd
	for (long i = 0; i < n; i++)
		out[i] = gate[i] * sigmoid_approx(gate[i]) * up[i];
}

HOT static void swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
			   const float *up, long n)
{
	if (dgate && dup) {
		#pragma omp simd
		for (long i = 0; i < n; i++) {
			float g = gate[i], s = sigmoid_approx(g);
			dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
			dup[i] += dout[i] * g * s;
		}
	} else if (dgate) {
		#pragma omp simd
		for (long i = 0; i < n; i++) {
			float g = gate[i], s = sigmoid_approx(g);
			dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
		}
	} else if (dup) {
		#pragma omp simd
		for (long i = 0; i < n; i++)
			dup[i] += dout[i] * gate[i] * sigmoid_approx(gate[i]);
	}
}

void swiglu_forward(float *out, const float *gate, const float *up, long N)
{
	EACH(N, PAR_MIN, swiglu_fwd(out + lo_, gate + lo_, up + lo_, hi_ - lo_));
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
		     const float *up, long N)
{
	EACH(N, PAR_MIN, swiglu_bwd(dgate ? dgate + lo_ : NULL, dup ? dup + lo_ : NULL,
				    dout + lo_, gate + lo_, up + lo_, hi_ - lo_));
}

void residual_forward(float *out, const float *a, const float *b, long N)
{
	#pragma omp parallel for simd if (N > 4 * PAR_MIN)
	for (long i = 0; i < N; i++)
		out[i] = a[i] + b[i];
}

/* ---------------------------------------------------------------------- */
/* Embedding */

void embedding_forward(float *out, const int *ids, const float *table, int N, int C)
{
	#pragma omp parallel for if ((long)N * C > 4 * PAR_MIN)
	for (int n = 0; n < N; n++) {
		if (ids[n] < 0)
			memset(out + (long)n * C, 0, sizeof(float) * C);
		else
			memcpy(out + (long)n * C, table + (long)ids[n] * C, sizeof(float) * C);
	}
}

void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C)
{
	/* Ids repeat, so threads split the columns, not the rows. */
	#pragma omp parallel if ((long)N * C > PAR_MIN)
	{
		int nt = omp_get_num_threads(), id = omp_get_thread_num();
		int c0 = (int)((long)C * id / nt), c1 = (int)((long)C * (id + 1) / nt);
		for (int n = 0; n < N; n++) {
			if (ids[n] < 0)
				continue;
			float *dt = dtable + (long)ids[n] * C;
			const float *d = dout + (long)n * C;
			for (int c = c0; c < c1; c++)
				dt[c] += d[c];
		}
	}
}

/* ---------------------------------------------------------------------- */
/* Log-probabilities */

/* log(sum(exp(x - max))) of one row, and the max in *MX. The sum is in
 * double: in f32 the rounding of 32k terms put a confident token's
 * log-prob ~2e-5 nats high. The caller subtracts from x - max, which f32
 * holds exactly near the max. */
HOT static double row_logsumexp_off(const float *x, int V, float *mx_out)
{
	float mx = -INFINITY;
	double s = 0;
	#pragma omp simd reduction(max : mx)
	for (int i = 0; i < V; i++)
		mx = x[i] > mx ? x[i] : mx;
	#pragma omp simd reduction(+ : s)
	for (int i = 0; i < V; i++)
		s += (double)exp_approx(x[i] - mx);
	*mx_out = mx;
	return log(s);
}

/* max + log(sum(exp(x - max))) of one row */
HOT static float row_logsumexp(const float *x, int V)
{
	float mx;
	double l = row_logsumexp_off(x, V, &mx);
	return (float)((double)mx + l);
}

/* dx += g (onehot(target) - softmax(x)) */
HOT static void logprob_grad_row(float *dx, const float *x, int target, float g, int V)
{
	float off = row_logsumexp(x, V);
	#pragma omp simd
	for (int i = 0; i < V; i++)
		dx[i] -= g * exp_approx(x[i] - off);
	dx[target] += g;
}

void logprob_forward(float *lp, const float *logits, const int *target, int N, int V)
{
	#pragma omp parallel for if ((long)N * V > PAR_MIN)
	for (int n = 0; n < N; n++)
		if (target[n] < 0) {
			lp[n] = 0.0f;
		} else {
			float mx;
			double l = row_logsumexp_off(logits + (long)n * V, V, &mx);
			lp[n] = (float)((double)(logits[(long)n * V + target[n]] - mx) - l);
		}
}

void logprob_backward(float *dlogits, const float *logits, const int *target,
		      const float *dlp, int N, int V)
{
	#pragma omp parallel for if ((long)N * V > PAR_MIN)
	for (int n = 0; n < N; n++)
		if (target[n] >= 0 && dlp[n] != 0.0f)
			logprob_grad_row(dlogits + (long)n * V, logits + (long)n * V, target[n],
					 dlp[n], V);
}

/* ---------------------------------------------------------------------- */
/* Optimiser */

/* elements per block of adamw_update: 4 arrays of 16 KB stay in L1/L2 */
#define ADAMW_BLOCK 4096L

HOT static void adamw_range(float *p, const float *g, float *m, float *v, long n, float step,
			    float beta1, float beta2, float eps, float decay, float bc2_sqrt)
{
	#pragma omp simd
	for (long i = 0; i < n; i++) {
		float gi = g[i];
		float mi = beta1 * m[i] + (1.0f - beta1) * gi;
		float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2_sqrt + eps);
	}
}

/* [lo, hi) block by block, each block's bf16 copy (c16, if not NULL)
 * written as the block is stepped, while it is in cache, not by a second
 * pass over p */
static void adamw_blocks(float *p, const float *g, float *m, float *v, uint16_t *c16, long lo,
			 long hi, float step, float beta1, float beta2, float eps, float decay,
			 float bc2_sqrt)
{
	for (long b = lo; b < hi; b += ADAMW_BLOCK) {
		long e = b + ADAMW_BLOCK < hi ? b + ADAMW_BLOCK : hi;
		adamw_range(p + b, g + b, m + b, v + b, e - b, step, beta1, beta2, eps, decay,
			    bc2_sqrt);
		if (c16)
			bf16_convert_range(c16 + b, p + b, e - b);
	}
}

void adamw_update(float *p, const float *g, float *m, float *v, long n, float lr,
		  float beta1, float beta2, float eps, float weight_decay, int t)
{
	/* torch.optim.AdamW: decay first, then the Adam step with
	 * denom = sqrt(v) / sqrt(1 - beta2^t) + eps. */
	float bc1 = 1.0f - powf(beta1, (float)t);
	float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)t));
	float step = lr / bc1, decay = 1.0f - lr * weight_decay;

	uint16_t *c16 = weights_copy(p, n);
	EACH(n, PAR_MIN, adamw_blocks(p, g, m, v, c16, lo_, hi_, step, beta1, beta2, eps, decay,
				      bc2_sqrt));
}

/* ---------------------------------------------------------------------- */
/* Half-precision conversions */

static inline uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);

	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, make it quiet */
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Round to nearest even; overflow carries into the exponent (-> inf). */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;

	if (exp == 0x1f) /* inf, NaN (payload kept) */
		return bits_f32(sign | 0x7f800000u | (mant << 13));
	if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
		float f = (float)mant * 0x1p-24f;
		return sign ? -f : f;
	}
	return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7fffffffu;

	if (a > 0x7f800000u) /* NaN */
		return sign | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu);
	if (a >= 0x477ff000u) /* >= 65520 rounds to inf (or is inf) */
		return sign | 0x7c00u;
	if (a < 0x38800000u) {
		/* Below the smallest normal: adding 0.5 makes the float unit in
		 * the last place 2^-24, the f16 subnormal step, so the FPU's
		 * round-to-nearest-even does the rounding. */
		float r = bits_f32(a) + 0.5f;
		return sign | (uint16_t)(f32_bits(r) - 0x3f000000u);
	}
	/* Rebias the exponent (127 -> 15) and round the 13 dropped bits. */
	a += ((uint32_t)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u);
	return sign | (uint16_t)(a >> 13);
}

/* ---------------------------------------------------------------------- */
/* Mixed precision (bf16 products, f32 everything else)
 *
 * As torch.autocast("cpu", bfloat16) does it: the linear layers' three
 * products (forward, dinp, dw) take bf16 operands and accumulate in f32
 * into an f32 result; weights, gradients, optimizer state, norms, softmax,
 * losses and every sum outside a product stay f32. The products go to
 * oneDNN's matmul (the only BLAS-like library on Debian 12 with bf16
 * kernels: OpenBLAS 0.3.21 is built without sbgemm), one primitive per
 * product shape and layout with the row count (the varying dimension)
 * given at run time, created on first use and kept.
 *
 * Operands: activations and output gradients change every call and are
 * converted on the way in (into per-process scratch: products are issued
 * from one thread, never from inside a parallel region). Weights live in
 * the arenas a model binds (tensor_weights_bind): each arena gets one bf16
 * copy, made on the first product that needs it, kept while the weights do
 * not change, and rewritten in place by adamw_update as it writes the f32
 * master weights, so training never converts a weight twice. A weight
 * outside every arena (a temporary) is converted per call. */

const char *const tensor_precision_names[3] = { "f32", "bf16", "auto" };

static int prec_use = TENSOR_F32;
static char prec_info[256] = "f32";

/* Products smaller than this many multiply-adds, or with a dimension
 * under 32 (LoRA's rank), stay f32: there the call and the conversions
 * cost more than bf16 saves, and LoRA's adapters are where the update
 * lives. */
#define BF16_MIN_MACS (1L << 18)
#define BF16_MIN_DIM 32

typedef uint32_t bf16_u32x16 __attribute__((vector_size(64)));
typedef uint16_t bf16_u16x16 __attribute__((vector_size(32)));

/* f32 -> bf16, round to nearest even, NaN kept quiet (f32_to_bf16's bits),
 * 16 at a time in vector types: GCC left the scalar form of this loop
 * scalar (about 0.45 G values per second here, 12 % of a bf16 DPO step;
 * this form: about 5 G) */
HOT static void bf16_convert_range(uint16_t *dst, const float *src, long n)
{
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		bf16_u32x16 u;
		memcpy(&u, src + i, sizeof u);
		bf16_u32x16 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
		bf16_u32x16 q = (u >> 16) | 0x0040u;
		bf16_u32x16 nan = (bf16_u32x16)((u & 0x7fffffffu) > 0x7f800000u); /* all ones */
		bf16_u16x16 h = __builtin_convertvector((nan & q) | (~nan & r), bf16_u16x16);
		memcpy(dst + i, &h, sizeof h);
	}
	for (; i < n; i++)
		dst[i] = f32_to_bf16(src[i]);
}

static void bf16_convert(uint16_t *dst, const float *src, long n)
{
	EACH(n, 4 * PAR_MIN, bf16_convert_range(dst + lo_, src + lo_, hi_ - lo_));
}

void tensor_to_bf16(uint16_t *dst, const float *src, long n)
{
	bf16_convert(dst, src, n);
}

/* The arenas of weights with their bf16 copies (a model or two: the
 * policy and a reference). */
enum { WEIGHT_ARENAS = 8 };
static struct weight_arena {
	const void *owner;
	const float *base;
	long n;
	uint16_t *copy; /* n bf16, NULL until first needed */
	int valid;      /* copy == base rounded */
} arenas[WEIGHT_ARENAS];

static struct weight_arena *arena_of(const float *p, long n)
{
	for (int i = 0; i < WEIGHT_ARENAS; i++) {
		struct weight_arena *a = &arenas[i];
		if (a->base && p >= a->base && p + n <= a->base + a->n)
			return a;
	}
	return NULL;
}

void tensor_weights_bind(const void *owner, const float *base, long n)
{
	struct weight_arena *a = NULL;
	for (int i = 0; i < WEIGHT_ARENAS && !a; i++)
		if (arenas[i].owner == owner)
			a = &arenas[i];
	for (int i = 0; i < WEIGHT_ARENAS && !a && base; i++)
		if (!arenas[i].owner)
			a = &arenas[i];
	if (!a)
		return; /* more models than slots: the extra ones convert per call */
	free(a->copy);
	*a = (struct weight_arena){ 0 };
	if (base && n > 0)
		*a = (struct weight_arena){ .owner = owner, .base = base, .n = n };
}

void tensor_weights_changed(const float *p)
{
	struct weight_arena *a = arena_of(p, 0);
	if (a)
		a->valid = 0;
}

/* the bf16 copy of p[0, n) that adamw_update keeps valid as it writes p:
 * NULL where there is none (no arena, or its copy not made yet) */
static uint16_t *weights_copy(const float *p, long n)
{
	struct weight_arena *a = arena_of(p, n);
	return a && a->valid ? a->copy + (p - a->base) : NULL;
}

/* Per-call scratch, grown as needed: the operands converted to bf16. */
static uint16_t *scratch[3];
static long scratch_cap[3];

static uint16_t *scratch_bf16(int which, const float *src, long n)
{
	if (n > scratch_cap[which]) {
		free(scratch[which]);
		scratch[which] = xmalloc((size_t)n * sizeof(uint16_t));
		scratch_cap[which] = n;
	}
	bf16_convert(scratch[which], src, n);
	return scratch[which];
}

/* w (n floats) as bf16: its arena's copy, else converted into scratch 2 */
static const uint16_t *weight_bf16(const float *w, long n)
{
	struct weight_arena *a = arena_of(w, n);
	if (!a)
		return scratch_bf16(2, w, n);
	if (!a->valid) {
		if (!a->copy)
			a->copy = xmalloc((size_t)a->n * sizeof(uint16_t));
		bf16_convert(a->copy, a->base, a->n);
		a->valid = 1;
	}
	return a->copy + (w - a->base);
}

/* ---------------------------------------------------------------------- */
/* Row-wise linear in bf16 (decoding under bf16): out (N,OC) = x . w^T + bias
 * with x and w rounded to bf16, products exact, sums in f32.
 *
 * A decoding step streams every weight once per token, so at batch 1 its
 * speed is the weights' read: their bf16 copy is half the bytes. The order
 * of the sums, fixed by C alone as matmul_forward_rowwise's is: C is
 * split into chunks of 32 channels (the last one padded with zeros); lane
 * j (of 16) takes the pair (2j, 2j+1) of every chunk and adds the odd
 * product, then the even one, to its sum, as avx512_bf16's vdpbf16ps
 * defines its two additions; then the lanes are added as rw_hsum does and
 * the bias last. The product of two bf16 values is exact in f32 (8 + 8
 * significant bits), so a fused multiply-add rounds exactly as a multiply
 * then an add: the portable copies and vdpbf16ps's differ only where it
 * flushes subnormals to zero (|values| under 2^-126). Each output row is
 * a function of its input row alone, whatever N, its place, the threads. */

typedef uint32_t rwb_u16 __attribute__((vector_size(64)));
typedef uint32_t rwb_u16u __attribute__((vector_size(64), aligned(2)));

/* the 16 pair sums of one chunk, odd then even (bf16 -> f32 is a shift) */
static inline __attribute__((always_inline)) void rwb_chunk(rw_v16 *a, const rwb_u16 *w,
							     const rwb_u16 *x)
{
	rw_v16 wo = (rw_v16)(*w & 0xffff0000u), xo = (rw_v16)(*x & 0xffff0000u);
	rw_v16 we = (rw_v16)(*w << 16), xe = (rw_v16)(*x << 16);
	*a += wo * xo;
	*a += we * xe;
}

/* the last n < 32 values of a row, zero-padded to a chunk */
static inline __attribute__((always_inline)) void rwb_tail(rwb_u16 *v, const uint16_t *p, int n)
{
	uint16_t t[32] = {0};
	memcpy(t, p, sizeof(uint16_t) * (size_t)n);
	memcpy(v, t, sizeof *v);
}

/* rows [n, n+R) against output channels [o0, o1), as rw_pass */
static inline __attribute__((always_inline)) void
rwb_pass(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int n, int C,
	 int OC, int o0, int o1, const int R)
{
	int CV = C - C % 32;
	const uint16_t *x = x16 + (long)n * C;
	for (int o = o0; o < o1; o++) {
		const uint16_t *wr = w16 + (long)o * C;
		rw_v16 a[4] = {{0}};
		for (int c = 0; c < CV; c += 32) {
			rwb_u16 wv = *(const rwb_u16u *)(wr + c);
			#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				rwb_u16 xv = *(const rwb_u16u *)(x + (long)r * C + c);
				rwb_chunk(&a[r], &wv, &xv);
			}
		}
		if (CV < C) {
			rwb_u16 wv, xv;
			rwb_tail(&wv, wr + CV, C - CV);
			#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				rwb_tail(&xv, x + (long)r * C + CV, C - CV);
				rwb_chunk(&a[r], &wv, &xv);
			}
		}
		#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			float s = rw_hsum(&a[r]);
			out[(long)(n + r) * OC + o] = bias ? s + bias[o] : s;
		}
	}
}

static inline __attribute__((always_inline)) void
rwb_block(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int N, int C,
	  int OC, int o0, int o1)
{
	ROWS_BY_4_2_1(rwb_pass, out, x16, w16, bias, N, C, OC, o0, o1);
}

typedef void rwb_fn(float *, const uint16_t *, const uint16_t *, const float *, int, int, int,
		    int, int);
static void rwb_v2(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias,
		   int N, int C, int OC, int o0, int o1)
{
	rwb_block(out, x16, w16, bias, N, C, OC, o0, o1);
}
__attribute__((target("arch=x86-64-v3"))) static void
rwb_v3(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int N, int C,
       int OC, int o0, int o1)
{
	rwb_block(out, x16, w16, bias, N, C, OC, o0, o1);
}
__attribute__((target("arch=x86-64-v4"))) static void
rwb_v4(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int N, int C,
       int OC, int o0, int o1)
{
	rwb_block(out, x16, w16, bias, N, C, OC, o0, o1);
}

#if RWB_DP
/* the same sums with vdpbf16ps: one instruction per chunk and row */
__attribute__((target("arch=x86-64-v4,avx512bf16"))) static inline
__attribute__((always_inline)) void
rwb_dp_pass(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int n,
	    int C, int OC, int o0, int o1, const int R)
{
	int CV = C - C % 32;
	__mmask32 tm = (__mmask32)((1ull << (C - CV)) - 1);
	const uint16_t *x = x16 + (long)n * C;
	for (int o = o0; o < o1; o++) {
		const uint16_t *wr = w16 + (long)o * C;
		__m512 a[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
				_mm512_setzero_ps() };
		for (int c = 0; c < CV; c += 32) {
			__m512bh wv = (__m512bh)_mm512_loadu_si512(wr + c);
			for (int r = 0; r < R; r++)
				a[r] = _mm512_dpbf16_ps(
					a[r], wv, (__m512bh)_mm512_loadu_si512(x + (long)r * C + c));
		}
		if (CV < C) {
			__m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tm, wr + CV);
			for (int r = 0; r < R; r++)
				a[r] = _mm512_dpbf16_ps(
					a[r], wv,
					(__m512bh)_mm512_maskz_loadu_epi16(tm, x + (long)r * C + CV));
		}
		for (int r = 0; r < R; r++) {
			rw_v16 v = (rw_v16)a[r];
			float s = rw_hsum(&v);
			out[(long)(n + r) * OC + o] = bias ? s + bias[o] : s;
		}
	}
}

__attribute__((target("arch=x86-64-v4,avx512bf16"))) static void
rwb_dp(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias, int N, int C,
       int OC, int o0, int o1)
{
	ROWS_BY_4_2_1(rwb_dp_pass, out, x16, w16, bias, N, C, OC, o0, o1);
}
#else
#define rwb_dp rwb_v4
#endif

static rwb_fn *const rwb_fns[4] = {rwb_v2, rwb_v3, rwb_v4, rwb_dp};
static int rwb_use = -1;

/* the widest copy this CPU runs: 3 with avx512_bf16 */
static int rwb_cpu_level(void)
{
	int top = rw_cpu_level();
	if (RWB_DP && top == 2 && __builtin_cpu_supports("avx512bf16"))
		return 3;
	return top;
}

int tensor_rowwise_bf16_level(int level)
{
	int top = rwb_cpu_level();
	if (level >= 0 && level <= top)
		__atomic_store_n(&rwb_use, level, __ATOMIC_RELAXED);
	else if (level < 0 && __atomic_load_n(&rwb_use, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&rwb_use, top, __ATOMIC_RELAXED);
	return __atomic_load_n(&rwb_use, __ATOMIC_RELAXED);
}

static void rowwise_bf16(float *out, const uint16_t *x16, const uint16_t *w16, const float *bias,
			 int N, int C, int OC)
{
	rwb_fn *fn = rwb_fns[tensor_rowwise_bf16_level(-1)];
	int nb = (OC + RW_OB - 1) / RW_OB;
	#pragma omp parallel for schedule(static) num_threads(tensor_rowwise_threads(N, C, OC))
	for (int b = 0; b < nb; b++) {
		int o0 = b * RW_OB, o1 = o0 + RW_OB < OC ? o0 + RW_OB : OC;
		fn(out, x16, w16, bias, N, C, OC, o0, o1);
	}
}

void matmul_forward_rowwise_bf16(float *out, const float *inp, const float *w, const float *bias,
				 int N, int C, int OC)
{
	if (N <= 0 || OC <= 0)
		return;
	if (C <= 0) {
		matmul_forward_rowwise(out, inp, w, bias, N, 0, OC);
		return;
	}
	const uint16_t *w16 = weight_bf16(w, (long)OC * C);
	rowwise_bf16(out, scratch_bf16(0, inp, (long)N * C), w16, bias, N, C, OC);
}

void matmul_forward_step(float *out, const float *inp, const float *w, const float *bias, int N,
			 int C, int OC)
{
	/* bf16 where the f32 products would be (a side of 32 or more: not
	 * LoRA's) and the weight has its copy; converting a weight per call
	 * would read it twice */
	if (prec_use == TENSOR_BF16 && C >= BF16_MIN_DIM && OC >= BF16_MIN_DIM && N > 0 &&
	    arena_of(w, (long)OC * C))
		matmul_forward_rowwise_bf16(out, inp, w, bias, N, C, OC);
	else
		matmul_forward_rowwise(out, inp, w, bias, N, C, OC);
}

#ifdef SEVA_DNNL
#include <oneapi/dnnl/dnnl.h>

static dnnl_engine_t dn_engine;
static dnnl_stream_t dn_stream;
static int dn_failed;

/* One product C (M,N) [+]= A (M,K) . B (K,N), A and B bf16 with the given
 * strides (elements), C f32 row-major; RT names the dimension given at run
 * time (0 M, 1 K). */
struct dn_prim {
	long M, K, N, sa0, sa1, sb0, sb1;
	int rt, accum;
	dnnl_primitive_t prim;
};
static struct dn_prim *dn_prims;
static int dn_nprims, dn_cap;
static char dn_impl[64]; /* the implementation oneDNN chose, last created */

static int dn_init(void)
{
	if (dn_engine)
		return 0;
	if (dn_failed || dnnl_engine_create(&dn_engine, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&dn_stream, dn_engine, dnnl_stream_default_flags) != dnnl_success) {
		dn_failed = 1;
		dn_engine = NULL;
		return -1;
	}
	return 0;
}

static dnnl_status_t dn_md(dnnl_memory_desc_t *md, long d0, long d1, dnnl_data_type_t t,
			   long s0, long s1)
{
	dnnl_dims_t dims = { d0, d1 }, strides = { s0, s1 };
	return dnnl_memory_desc_init_by_strides(md, 2, dims, t, strides);
}

static dnnl_primitive_t dn_create(const struct dn_prim *k)
{
	long RT = DNNL_RUNTIME_DIM_VAL;
	long M = k->rt == 0 ? RT : k->M, K = k->rt == 1 ? RT : k->K;
	dnnl_memory_desc_t a, b, c;
	dnnl_matmul_desc_t d;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t p = NULL;
	const char *impl = NULL;

	if (dn_md(&a, M, K, dnnl_bf16, k->sa0, k->sa1) || dn_md(&b, K, k->N, dnnl_bf16, k->sb0, k->sb1) ||
	    dn_md(&c, M, k->N, dnnl_f32, k->N, 1) || dnnl_matmul_desc_init(&d, &a, &b, NULL, &c) ||
	    dnnl_primitive_attr_create(&attr))
		goto out;
	if (k->accum && (dnnl_post_ops_create(&po) || dnnl_post_ops_append_sum(po, 1.0f) ||
			 dnnl_primitive_attr_set_post_ops(attr, po)))
		goto out;
	if (dnnl_primitive_desc_create(&pd, &d, attr, dn_engine, NULL) ||
	    dnnl_primitive_create(&p, pd))
		p = NULL;
	if (p && !dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) && impl)
		snprintf(dn_impl, sizeof dn_impl, "%s", impl);
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return p;
}

/* Runs the product; -1 if oneDNN cannot (the caller then does it in f32). */
static int dn_gemm(long M, long K, long N, const uint16_t *A, long sa0, long sa1,
		   const uint16_t *B, long sb0, long sb1, float *C, int rt, int accum)
{
	struct dn_prim key = { rt == 0 ? 0 : M, rt == 1 ? 0 : K, N, sa0, sa1, sb0, sb1, rt, accum, NULL };
	struct dn_prim *k = NULL;
	dnnl_memory_desc_t a, b, c;
	dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
	int rc = -1;

	if (dn_init() < 0)
		return -1;
	for (int i = 0; i < dn_nprims && !k; i++) {
		struct dn_prim *q = &dn_prims[i];
		if (q->M == key.M && q->K == key.K && q->N == N && q->sa0 == sa0 && q->sa1 == sa1 &&
		    q->sb0 == sb0 && q->sb1 == sb1 && q->rt == rt && q->accum == accum)
			k = q;
	}
	if (!k) {
		key.M = M, key.K = K; /* dn_create reads the fixed ones */
		key.prim = dn_create(&key);
		if (!key.prim)
			return -1;
		key.M = rt == 0 ? 0 : M, key.K = rt == 1 ? 0 : K;
		if (dn_nprims == dn_cap) {
			dn_cap = dn_cap ? 2 * dn_cap : 32;
			dn_prims = xrealloc(dn_prims, (size_t)dn_cap * sizeof *dn_prims);
		}
		dn_prims[dn_nprims] = key;
		k = &dn_prims[dn_nprims++];
	}
	if (dn_md(&a, M, K, dnnl_bf16, sa0, sa1) || dn_md(&b, K, N, dnnl_bf16, sb0, sb1) ||
	    dn_md(&c, M, N, dnnl_f32, N, 1) || dnnl_memory_create(&ma, &a, dn_engine, (void *)A) ||
	    dnnl_memory_create(&mb, &b, dn_engine, (void *)B) ||
	    dnnl_memory_create(&mc, &c, dn_engine, C))
		goto out;
	dnnl_exec_arg_t args[3] = {
		{ DNNL_ARG_SRC, ma }, { DNNL_ARG_WEIGHTS, mb }, { DNNL_ARG_DST, mc } };
	if (dnnl_primitive_execute(k->prim, dn_stream, 3, args) == dnnl_success &&
	    dnnl_stream_wait(dn_stream) == dnnl_success)
		rc = 0;
out:
	if (ma)
		dnnl_memory_destroy(ma);
	if (mb)
		dnnl_memory_destroy(mb);
	if (mc)
		dnnl_memory_destroy(mc);
	return rc;
}

static int dn_available(void)
{
	return dn_init() == 0;
}

static void dn_version(char *out, size_t n)
{
	const dnnl_version_t *v = dnnl_version();
	snprintf(out, n, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
}
#else
static int dn_gemm(long M, long K, long N, const uint16_t *A, long sa0, long sa1,
		   const uint16_t *B, long sb0, long sb1, float *C, int rt, int accum)
{
	(void)M, (void)K, (void)N, (void)A, (void)sa0, (void)sa1, (void)B, (void)sb0;
	(void)sb1, (void)C, (void)rt, (void)accum;
	return -1;
}

static int dn_available(void)
{
	return 0;
}

static void dn_version(char *out, size_t n)
{
	snprintf(out, n, "no oneDNN");
}
static char dn_impl[1];
#endif

static int bf16_worth(long N, long C, long OC)
{
	return C >= BF16_MIN_DIM && OC >= BF16_MIN_DIM && (double)N * C * OC >= BF16_MIN_MACS;
}

int matmul_forward_bf16(float *out, const float *inp, const float *w, const float *bias, int N,
			int C, int OC)
{
	if (N <= 0 || OC <= 0 || C <= 0 || !dn_available())
		return -1;
	const uint16_t *w16 = weight_bf16(w, (long)OC * C);
	const uint16_t *x16 = scratch_bf16(0, inp, (long)N * C);
	if (bias)
		for (int n = 0; n < N; n++)
			memcpy(out + (long)n * OC, bias, sizeof(float) * OC);
	/* out (N,OC) = x (N,C) . w^T: B is w read column-major */
	return dn_gemm(N, C, OC, x16, C, 1, w16, 1, C, out, 0, bias != NULL);
}

int matmul_backward_bf16(float *dinp, float *dw, float *dbias, const float *dout,
			 const float *inp, const float *w, int N, int C, int OC)
{
	if (N <= 0 || OC <= 0 || C <= 0 || !dn_available())
		return -1;
	const uint16_t *d16 = scratch_bf16(0, dout, (long)N * OC);
	/* dinp (N,C) += dout (N,OC) . w (OC,C) */
	if (dinp && dn_gemm(N, OC, C, d16, OC, 1, weight_bf16(w, (long)OC * C), C, 1, dinp, 0, 1))
		return -1;
	/* dw (OC,C) += dout^T (OC,N) . inp (N,C): A is dout read column-major */
	if (dw && dn_gemm(OC, N, C, d16, 1, OC, scratch_bf16(1, inp, (long)N * C), C, 1, dw, 1, 1))
		return -1;
	if (dbias)
		for (int n = 0; n < N; n++) {
			const float *d = dout + (long)n * OC;
			for (int o = 0; o < OC; o++)
				dbias[o] += d[o];
		}
	return 0;
}

static int mm_bf16_forward(float *out, const float *inp, const float *w, const float *bias,
			   int N, int C, int OC)
{
	return prec_use == TENSOR_BF16 && bf16_worth(N, C, OC) &&
	       matmul_forward_bf16(out, inp, w, bias, N, C, OC) == 0;
}

static int mm_bf16_backward(float *dinp, float *dw, float *dbias, const float *dout,
			    const float *inp, const float *w, int N, int C, int OC)
{
	return prec_use == TENSOR_BF16 && bf16_worth(N, C, OC) &&
	       matmul_backward_bf16(dinp, dw, dbias, dout, inp, w, N, C, OC) == 0;
}

/* The probe: the product of a decoder's MLP on a batch of 256 rows (C 512,
 * OC 1376: the small bench config's), f32 (matmul_forward as it runs)
 * against bf16 (the activations' conversion included, the weights' not:
 * that is made once), best of 3 after a warm-up each. */
static void probe(double *gf32, double *gbf16)
{
	enum { PN = 256, PC = 512, POC = 1376 };
	float *x = xmalloc(sizeof(float) * PN * PC), *w = xmalloc(sizeof(float) * POC * PC);
	float *y = xmalloc(sizeof(float) * PN * POC);
	uint32_t s = 2463534242u;
	double flop = 2.0 * PN * PC * POC, best[2] = { 1e30, 1e30 };

	for (long i = 0; i < (long)PN * PC; i++)
		x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
	for (long i = 0; i < (long)POC * PC; i++)
		w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
	tensor_weights_bind(&prec_use, w, (long)POC * PC);
	for (int p = 0; p < 2; p++)
		for (int r = 0; r < 4; r++) {
			double t0 = omp_get_wtime();
			if (p == 0)
				matmul_forward(y, x, w, NULL, PN, PC, POC);
			else if (matmul_forward_bf16(y, x, w, NULL, PN, PC, POC) < 0)
				break;
			double t = omp_get_wtime() - t0;
			if (r > 0 && t < best[p])
				best[p] = t;
		}
	tensor_weights_bind(&prec_use, NULL, 0);
	*gf32 = flop / best[0] / 1e9;
	*gbf16 = best[1] < 1e30 ? flop / best[1] / 1e9 : 0;
	free(x);
	free(w);
	free(y);
}

int tensor_set_precision(int want)
{
	char ver[64];
	double f = 0, b = 0;

	dn_version(ver, sizeof ver);
	if (want == TENSOR_F32) {
		prec_use = TENSOR_F32;
		snprintf(prec_info, sizeof prec_info, "f32 (--precision f32)");
		return 0;
	}
	if (!dn_available()) {
		prec_use = TENSOR_F32;
		snprintf(prec_info, sizeof prec_info, "f32 (auto: %s)",
			 ver[0] == 'n' ? "bf16 is not built in, no oneDNN" : "oneDNN has no CPU engine");
		if (want == TENSOR_BF16)
			return error("--precision bf16: %s",
				     ver[0] == 'n' ? "bf16 is not built in (seva was built without oneDNN)"
						   : "oneDNN could not start a CPU engine");
		return 0;
	}
	prec_use = TENSOR_F32;
	probe(&f, &b);
	if (want == TENSOR_BF16) {
		prec_use = TENSOR_BF16;
		snprintf(prec_info, sizeof prec_info,
			 "bf16 (--precision bf16; %s %s: %.0f GFLOP/s, f32 %.0f on 256x512x1376)",
			 ver, dn_impl, b, f);
		return 0;
	}
	/* bf16 only where it is clearly faster: a tie is not worth the
	 * precision, and the probe has noise on a shared machine */
	prec_use = b > 1.2 * f ? TENSOR_BF16 : TENSOR_F32;
	snprintf(prec_info, sizeof prec_info,
		 "%s (auto: %s %s bf16 %.0f GFLOP/s, f32 %.0f on 256x512x1376)",
		 tensor_precision_names[prec_use], ver, dn_impl, b, f);
	return 0;
}

int tensor_precision(void)
{
	return prec_use;
}

int tensor_bf16_rounds(long N, long C, long OC)
{
	return prec_use == TENSOR_BF16 && bf16_worth(N, C, OC) && dn_available();
}

const char *tensor_precision_info(void)
{
	return prec_info;
}
