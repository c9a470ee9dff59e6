/* tensor — the numeric kernels of the model, llm.c style: every layer is a
 * _forward/_backward pair on flat float arrays; backward ACCUMULATES (+=)
 * into every d-array it is given, and any d-array may be NULL (not needed).
 * Kernels never allocate. Each fast kernel has a _naive twin (plain loops,
 * the reference the tests compare against). The only module that calls BLAS.
 *
 * Dimension letters, used in every shape comment of the project:
 *   B batch, T time (sequence slots), C channels, OC output channels,
 *   N rows (= B*T when flattened), NH heads, NKV key/value heads,
 *   HS head size, L layers, V vocab, NP patches per image, P patch side. */
#ifndef SEVA_TENSOR_H
#define SEVA_TENSOR_H

#include <stdint.h>

/* Selects OpenBLAS's kernel set for this CPU before any BLAS call: if
 * OPENBLAS_CORETYPE is unset and openblas_get_corename() reports a generic
 * or older core while the CPU has AVX-512 (or AVX2+FMA), re-executes the
 * program (argv) with OPENBLAS_CORETYPE set. Never overrides a value the
 * user set. Call first thing in main() of tools that compute.
 * The same single restart also sets, when unset, OMP_WAIT_POLICY=passive
 * (idle OpenMP threads sleep rather than spin: on a shared machine
 * spinning cost a third of the CPU) and OPENBLAS_NUM_THREADS=1 (OpenBLAS
 * runs inside our OpenMP threads, its own pool is never used); like the
 * core type, both are read when the libraries load. So a tool normally
 * restarts once (~5 ms); SEVA_RESTARTED=1 in the environment marks the
 * restart done and turns it off. SEVA_BLAS_TEST_CORENAME pretends that
 * OpenBLAS detected that core (for tests). */
void tensor_blas_setup(char **argv);
/* "OpenBLAS 0.3.21 core SkylakeX (selected by seva: cpu has avx512f)" */
const char *tensor_blas_info(void);
/* The decision of tensor_blas_setup, apart so tests can check it: the
 * OPENBLAS_CORETYPE to select ("SkylakeX", "Haswell") when OpenBLAS's core
 * `corename` uses less of the CPU than it has, else NULL (also for a core
 * name this table does not know, which may be newer than it). */
const char *tensor_blas_choose(const char *corename, int avx512f, int avx2_fma);
/* Threads for our own OpenMP loops (0: all cores). OpenBLAS itself runs
 * single-threaded, called from those threads on slices of each product. */
void tensor_set_threads(int n);
/* 1 when this OpenBLAS core gives each row of an sgemm product the same
 * bits whatever the number of rows in the call (probed on C, OC up to 256
 * and 1-48 rows), else 0. Batch invariance of prefill and training rests on
 * it: OpenBLAS's edge-tile kernels sum in another order than its full
 * tiles on some cores (Haswell: rows 4-7 of an 8-row call differ from the
 * same rows in a 300-row one), so there a sequence alone and the same
 * sequence in a batch agree to f32 rounding, not bit for bit. */
int tensor_sgemm_row_invariant(void);

/* Linear: out (N,OC) = inp (N,C) . w^T + bias, w (OC,C) torch layout,
 * bias (OC) or NULL. */
void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
		    int N, int C, int OC);
/* The same product for the few rows of a decoding step (N = the active
 * sequences, 1-64), where batch invariance matters: each output row is a
 * function of its input row (and w, bias) alone, bit for bit the same
 * whatever N, the row's place in the batch, the thread count, the CPU's
 * instruction set (baseline, AVX2 or AVX-512 copy) and OpenBLAS's core:
 * our own loops, no BLAS. out[n][o] = the sum of w[o][c] * inp[n][c] in 16
 * lanes (lane j over c = j, j+16, ... below C - C%16), the lanes added
 * pairwise (j + j+8, then + j+4, then (0+2) + (1+3)), the C%16 tail
 * channels one by one, then + bias[o]; every product and sum rounded on
 * its own (no fused multiply-add). Reads each weight row once per call and
 * uses it for every row (threads over blocks of output channels): faster
 * than matmul_forward's sgemv/sgemm for N <= 8; for many rows (prefill,
 * training) matmul_forward is the fast one. Results differ from
 * matmul_forward's in the last bits. */
void matmul_forward_rowwise(float *out, const float *inp, const float *w, const float *bias,
			    int N, int C, int OC);
/* The threads matmul_forward_rowwise uses for that product (of those
 * tensor_set_threads allows): one per 2^19 multiply-adds at most, because
 * waking a thread costs more than a smaller share saves. */
int tensor_rowwise_threads(int N, int C, int OC);
/* For tests: makes matmul_forward_rowwise use its copy for instruction set
 * `level` (0 x86-64-v2, 1 x86-64-v3 AVX2+FMA, 2 x86-64-v4 AVX-512) if the
 * CPU runs it; level < 0 changes nothing. Returns the level in use (by
 * default the widest the CPU runs). Not thread-safe against concurrent
 * products. */
int tensor_rowwise_level(int level);
/* matmul_forward_rowwise with inp and w rounded to bf16 (w from its
 * arena's copy, tensor_weights_bind, else converted per call), each
 * product exact and summed in f32: in 16 lanes over chunks of 32 channels
 * (the last one padded with zeros), lane j adding the products of
 * channels 2j+1 then 2j of each chunk (vdpbf16ps's order), the lanes added
 * as matmul_forward_rowwise adds them, then + bias[o]. Bit for bit the
 * same whatever N, the row's place and the thread count; the copies for
 * each instruction set (the last one avx512_bf16's vdpbf16ps) differ only
 * where vdpbf16ps flushes a subnormal to zero. Half the bytes of w read:
 * decoding's speed at batch 1. */
void matmul_forward_rowwise_bf16(float *out, const float *inp, const float *w, const float *bias,
				 int N, int C, int OC);
/* A decoding step's product: matmul_forward_rowwise_bf16 under bf16 where
 * C and OC are 32 or more and w lies in a bound arena (its copy exists),
 * else matmul_forward_rowwise (f32: its bits, as always). */
void matmul_forward_step(float *out, const float *inp, const float *w, const float *bias, int N,
			 int C, int OC);
/* For tests: as tensor_rowwise_level, for matmul_forward_rowwise_bf16's
 * copies: 0 x86-64-v2, 1 AVX2+FMA, 2 AVX-512, 3 AVX-512 with avx512_bf16
 * (vdpbf16ps), if the CPU runs it (and the compiler built it). */
int tensor_rowwise_bf16_level(int level);
/* dinp (N,C) += dout . w;  dw (OC,C) += dout^T . inp;  dbias (OC) += sum_n dout. */
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
		     const float *inp, const float *w, int N, int C, int OC);
void matmul_forward_naive(float *out, const float *inp, const float *w, const float *bias,
			  int N, int C, int OC);
void matmul_backward_naive(float *dinp, float *dw, float *dbias, const float *dout,
			   const float *inp, const float *w, int N, int C, int OC);

/* Mixed precision, as torch.autocast("cpu", bfloat16) runs a model: with
 * bf16 in use, matmul_forward and matmul_backward (every linear layer's
 * forward, dinp and dw products) round their operands to bf16 and
 * accumulate in f32 into f32 results (oneDNN's matmul); products with a
 * dimension under 32 or fewer than 2^18 multiply-adds stay f32. Weights,
 * gradients, optimizer state, norms, softmax, attention, losses and every
 * other sum are f32 whatever the precision, matmul_forward_rowwise too;
 * a decoding step's products (matmul_forward_step) read the weights' bf16
 * copies. f32 is the default and gives the bits it always did. */
enum { TENSOR_F32, TENSOR_BF16, TENSOR_AUTO };
/* "f32", "bf16", "auto", in that order (for arg_choice) */
extern const char *const tensor_precision_names[3];
/* Chooses the precision of the products (after tensor_set_threads):
 * TENSOR_AUTO times one product of a representative shape both ways and
 * takes bf16 only where it runs more than 1.2 times as fast (so a machine
 * whose bf16 is slower, or a build without oneDNN, keeps f32). Returns -1
 * with a message for TENSOR_BF16 where bf16 is not built in. */
int tensor_set_precision(int want);
/* TENSOR_F32 or TENSOR_BF16: the one in use */
int tensor_precision(void);
/* Whether matmul_forward and matmul_backward of N rows (N, C) x (OC, C)
 * round their operands to bf16 under the precision in use: a product fed
 * values that are bf16 already then gives the bits it gives their f32
 * originals (the image feature cache stores them so). Larger N rounds too. */
int tensor_bf16_rounds(long N, long C, long OC);
/* "bf16 (auto: oneDNN 2.6.3 brg:avx512_core_bf16 bf16 213 GFLOP/s, f32
 * 110 on 256x512x1376)": the choice and why, for the tools' info line */
const char *tensor_precision_info(void);
/* The products in bf16 whatever the precision in use (tests, the bench):
 * the same contract as matmul_forward/matmul_backward with operands
 * rounded to bf16. -1 where bf16 is not built in (nothing written). */
int matmul_forward_bf16(float *out, const float *inp, const float *w, const float *bias, int N,
			int C, int OC);
int matmul_backward_bf16(float *dinp, float *dw, float *dbias, const float *dout,
			 const float *inp, const float *w, int N, int C, int OC);
/* A model's weights, [base, base + n), as one arena: in bf16 products its
 * weights come from one bf16 copy of the arena, made when first needed
 * and kept up to date by adamw_update. OWNER names the arena (a model):
 * binding again replaces it (the buffer moved or grew), base NULL drops
 * it. A weight outside every arena is converted per product. */
void tensor_weights_bind(const void *owner, const float *base, long n);
/* The weights around p changed other than by adamw_update (loaded,
 * merged): their bf16 copy is made again when next needed. */
void tensor_weights_changed(const float *p);
/* f32 -> bf16 of n values, as f32_to_bf16 rounds each */
void tensor_to_bf16(uint16_t *dst, const float *src, long n);

/* LayerNorm over C: saves mean, rstd (N) for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
		       const float *w, const float *b, int N, int C, float eps);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
			const float *inp, const float *w, const float *mean,
			const float *rstd, int N, int C);

/* RMSNorm (LLaMA): out = inp * rstd * w; saves rstd (N). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
		     int N, int C, float eps);
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
		      const float *w, const float *rstd, int N, int C);

/* RoPE with Hugging Face's half-split rotation, in place on x (N, NH, HS);
 * row n sits at position pos[n]. inv_freq_i = theta^(-2i/HS). */
void rope_forward(float *x, const int *pos, int N, int NH, int HS, float theta);
/* The transpose rotation applied in place to the gradient dx (N, NH, HS). */
void rope_backward(float *dx, const int *pos, int N, int NH, int HS, float theta);

/* Scaled dot-product attention on B sequences of T slots; sequence b uses
 * its first len[b] slots (the rest is padding: output 0, no gradient).
 * q, out (B,T,NH,HS); k, v (B,T,NKV,HS) with NH % NKV == 0 (grouped-query:
 * head h reads kv head h / (NH/NKV)). att (B,NH,T,T) keeps the softmax
 * probabilities for backward. causal: slot t sees slots <= t. */
void attention_forward(float *out, float *att, const float *q, const float *k,
		       const float *v, const int *len, int B, int T, int NH, int NKV,
		       int HS, int causal);
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
			const float *att, const float *q, const float *k, const float *v,
			const int *len, int B, int T, int NH, int NKV, int HS, int causal);
void attention_forward_naive(float *out, float *att, const float *q, const float *k,
			     const float *v, const int *len, int B, int T, int NH, int NKV,
			     int HS, int causal);

/* One new query per sequence against a KV cache (decoding): q, out (B,NH,HS);
 * kc, vc (B,S,NKV,HS) with the first n[b] slots valid (the new token's own
 * k/v already written at slot n[b]-1). scratch: B*NH*S floats. */
void attention_decode(float *out, float *scratch, const float *q, const float *kc,
		      const float *vc, const int *n, int B, int S, int NH, int NKV, int HS);

/* GELU (exact, erf), quick GELU (x*sigmoid(1.702x)), elementwise over N. */
void gelu_forward(float *out, const float *inp, long N);
void gelu_backward(float *dinp, const float *inp, const float *dout, long N);
void quick_gelu_forward(float *out, const float *inp, long N);
void quick_gelu_backward(float *dinp, const float *inp, const float *dout, long N);
/* SwiGLU: out = silu(gate) * up. */
void swiglu_forward(float *out, const float *gate, const float *up, long N);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
		     const float *up, long N);
/* out = a + b (out may alias a). */
void residual_forward(float *out, const float *a, const float *b, long N);

/* Rows of table (V,C) by ids (N). */
void embedding_forward(float *out, const int *ids, const float *table, int N, int C);
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);

/* Log-probability of each row's target: lp[n] = log_softmax(logits[n])[target[n]];
 * rows with target < 0 get lp 0. */
void logprob_forward(float *lp, const float *logits, const int *target, int N, int V);
/* dlogits (N,V) += dlp[n] * (onehot(target) - softmax(logits[n])). */
void logprob_backward(float *dlogits, const float *logits, const int *target,
		      const float *dlp, int N, int V);

/* AdamW step t (1-based) with bias correction, decoupled weight decay. */
void adamw_update(float *p, const float *g, float *m, float *v, long n, float lr,
		  float beta1, float beta2, float eps, float weight_decay, int t);

/* bf16/f16 <-> f32 (round to nearest even). */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

#endif
