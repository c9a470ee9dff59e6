/* train — what the training tools (seva-sft, seva-dpo) share: learning-rate
 * schedules, AdamW over the trainable tensors of a struct vlm, global
 * grad-norm clipping, the per-epoch data order, the DPO losses with TRL's
 * formulas, metrics files, signals, the trainer checkpoint (model +
 * optimizer state + step + data order + RNG), written atomically and
 * resumed exactly, the options both tools take, and the training loop
 * itself (train_run), so that a tool gives only its loss. Depends on vlm,
 * tensor, rng, dist, util. */
#ifndef SEVA_TRAIN_H
#define SEVA_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "rng.h"
#include "sample.h"
#include "vlm.h"

/* --- learning-rate schedules (Hugging Face's get_*_schedule_with_warmup) --- */
enum lr_schedule { LR_CONSTANT, LR_LINEAR, LR_COSINE };

/* "constant", "linear", "cosine" → enum; -1 if unknown. */
int lr_schedule_parse(const char *name);
const char *lr_schedule_name(enum lr_schedule s);
/* ceil(total * ratio), as transformers' TrainingArguments.get_warmup_steps. */
long lr_warmup_steps(long total, double ratio);
/* Learning rate of optimizer step STEP (0-based) out of TOTAL: linear
 * warm-up from 0 over WARMUP steps, then constant, linear decay to 0, or
 * half a cosine to 0. */
double lr_at(enum lr_schedule s, double base, long step, long total, long warmup);

/* --- AdamW over the trainable tensors of a model --- */
struct train_opt {
	float beta1, beta2, eps, weight_decay;
	long t;      /* optimizer steps taken (AdamW's bias correction uses t + 1) */
	long n;      /* floats per moment buffer: m->nparams when initialised */
	float *mem;  /* one allocation: first then second moments */
	float *m, *v;/* views: same layout as vlm.params / vlm.grads */
};

/* True if T has a gradient and its part trains. */
int train_tensor_trains(const struct vlm *m, const struct vlm_tensor *t);
/* Zeroed moments laid out like M's parameters. Call after vlm_lora_add and
 * vlm_train_init (the layout must not change afterwards). */
void train_opt_init(struct train_opt *o, const struct vlm *m, float beta1, float beta2,
		    float eps, float weight_decay);
void train_opt_release(struct train_opt *o);
/* One AdamW step (torch.optim.AdamW semantics) with learning rate LR on
 * every trainable tensor. Weight decay applies to matrices only (ndim >= 2),
 * as Hugging Face's Trainer exempts biases and norm weights. */
void train_opt_step(struct train_opt *o, struct vlm *m, float lr);
/* The same with PROJECTOR_LR on the projector's tensors (LLaVA's
 * mm_projector_lr parameter groups). */
void train_opt_step_groups(struct train_opt *o, struct vlm *m, float lr, float projector_lr);

/* Global L2 norm of the trainable gradients (double accumulation); if
 * MAX_NORM > 0 and the norm exceeds it, scales them by
 * max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_. Returns the
 * norm before clipping (NaN/inf if any gradient is not finite). */
double train_clip_grad(struct vlm *m, double max_norm);
/* Multiplies the trainable gradients by S. */
void train_scale_grad(struct vlm *m, float s);
/* Data parallelism (dist.h): sums the trainable gradients over every rank,
 * in place. Each rank's gradient is its rows' share of the global batch
 * mean (divided by the global batch size), so the sum is the gradient of
 * the whole batch, as one process computes it. One process: nothing. */
void train_allreduce_grad(struct vlm *m);

/* --- data order --- */
/* ORDER (n) = a permutation of [0, n) for EPOCH: Fisher–Yates driven by
 * rng_seed(seed, "epoch E", "shuffle"), so it depends only on (seed, epoch). */
void train_order(uint32_t *order, long n, uint64_t seed, int epoch);

/* Where a run stands: what a checkpoint holds beside the tensors. */
struct train_state {
	long step;        /* optimizer steps done */
	long total;       /* optimizer steps planned */
	int epoch;        /* current epoch (0-based) */
	long pos;         /* next index into order */
	long n;           /* examples in the data set */
	uint32_t *order;  /* (n) this epoch's order; owned */
	uint64_t seed;
	struct rng rng;   /* the run's generator (saved so a resume draws the same) */
	long tokens;      /* tokens (or pairs) seen so far */
};
void train_state_init(struct train_state *st, long n, long total, uint64_t seed);
void train_state_release(struct train_state *st);
/* Takes up to WANT next example indices of the current epoch into IDX,
 * starting a new epoch (with a new order) when the current one is used up
 * before the call. Never crosses an epoch. Returns the count (>= 1 if n > 0). */
int train_next_batch(struct train_state *st, int want, uint32_t *idx);
/* Fractional epoch for metrics: epoch + pos / n. */
double train_epoch_f(const struct train_state *st);

/* --- the trainer checkpoint --- */
/* Writes DIR/trainer.bin (header, settings, order, every parameter, both
 * moments, then the SHA-256 of all that) atomically: DIR/trainer.bin.tmp.PID
 * then rename, so a crash leaves the previous checkpoint whole; then
 * DIR/state.json for people.
 * SETTINGS is a JSON object text that a resume must match (the tool's
 * options that shape the trajectory). -1 with a message on failure. */
int train_ckpt_save(const char *dir, const struct vlm *m, const struct train_opt *o,
		    const struct train_state *st, const char *settings);
/* Restores what train_ckpt_save wrote into M (parameters), O (moments and
 * t; must be initialised for M with the run's AdamW constants) and ST
 * (step, epoch, pos, order, rng; must be initialised with the run's n,
 * total and seed). Refuses, with a message naming the file and the field,
 * a checkpoint of another model layout, data set size or settings, one
 * whose checksum does not match, and one with a field no run can reach
 * (a step outside [0, total], a data order that is not the epoch's
 * permutation, a zero RNG state, a parameter that is not finite, ...).
 * Returns 0, 1 if DIR holds no checkpoint, -1 on error (M's parameters
 * and O's moments are then undefined). */
int train_ckpt_load(const char *dir, struct vlm *m, struct train_opt *o,
		    struct train_state *st, const char *settings);

/* Writes the trained model to OUT as a model directory (vlm_save_merged,
 * dtype "F32" or "BF16"). With LoRA, the adapter is saved first as PEFT
 * files in OUT/adapter/ and then merged into the weights that OUT holds (M
 * keeps the merged weights afterwards). -1 with a message on failure. */
int train_save_model(struct vlm *m, const char *out, const char *dtype, const char *args_json);
/* The dtype a trained model is written in by default: the one M's weights
 * were stored in (model.safetensors in M's directory: BF16 or F16 when every
 * float tensor is, else F32), so a bf16 base stays bf16 (LLaVA and TRL save
 * in the model's dtype); F32 for a model made from a config. */
const char *train_base_dtype(const struct vlm *m);
/* Keeps a copy of the command line (before getopt permutes it) for the
 * training_args.json that a run writes beside its model. */
void train_args_command(int argc, char **argv);

/* The identity of the weights M computes with (LoRA excluded): a 64-bit
 * hash of every tensor's name, shape and values as 16 hex digits and a
 * NUL in HEX. The same numbers give the same identity whatever the file's
 * dtype or path; a trained model, even with files of the same sizes, does
 * not. ref.json records it so that a reference scored by another model is
 * not used unawares. */
void train_model_id(const struct vlm *m, char hex[17]);

/* --- DPO losses (TRL 1.16's DPOTrainer._compute_loss, loss_type + loss_weights) --- */
enum dpo_term {
	DPO_SIGMOID, DPO_IPO, DPO_HINGE, DPO_ROBUST, DPO_EXO_PAIR, DPO_NCA_PAIR, DPO_BCO_PAIR,
	DPO_SPPO_HARD, DPO_AOT, DPO_AOT_UNPAIRED, DPO_APO_ZERO, DPO_APO_DOWN, DPO_SIGMOID_NORM,
	DPO_DPOP, DPO_SFT, DPO_MDPO_COND, DPO_MDPO_ANCHOR, DPO_NTERMS
};
#define DPO_MAX_TERMS DPO_NTERMS /* each term at most once */
const char *dpo_term_name(enum dpo_term t);

struct dpo_opts {
	int nterms;
	enum dpo_term term[DPO_MAX_TERMS];
	double weight[DPO_MAX_TERMS];
	double beta;            /* 0.1 */
	double label_smoothing; /* ε: cDPO (sigmoid), robust, exo_pair, aot*; 0 */
	double dpop_lambda;     /* DPO-Positive's λ; 50 */
	double mdpo_delta;      /* mDPO anchor's δ; 0 */
	int reference_free;     /* the reference log-probs are taken as 0 */
};
/* The defaults: sigmoid alone, β 0.1, ε 0, λ 50, δ 0. */
void dpo_opts_init(struct dpo_opts *o);
/* --loss SPEC: "NAME[:WEIGHT],..." (a name alone weighs 1) into O's terms,
 * replacing them. -1 with "OPT: ..." on standard error naming the bad
 * entry and the names or range it takes. */
int dpo_loss_parse(struct dpo_opts *o, const char *opt, const char *spec);
/* Sets the weight of term T (adding it if absent; weight 0 removes it). */
void dpo_set_term(struct dpo_opts *o, enum dpo_term t, double weight);
/* The weight of term T in O, 0 if absent. */
double dpo_term_weight(const struct dpo_opts *o, enum dpo_term t);
/* "sigmoid:0.8,sft:1" for settings and logs; malloc'd. */
char *dpo_loss_text(const struct dpo_opts *o);
/* Whether a term needs the chosen answer scored on the corrupted image. */
int dpo_needs_corrupted(const struct dpo_opts *o);

/* One pair's log-probs, summed over the answer tokens. */
struct dpo_in {
	double pc, pr;   /* policy: chosen, rejected */
	double rc, rr;   /* reference (ignored with reference_free) */
	double nc, nr;   /* answer tokens */
	double pcm, rcm; /* the chosen answer on the corrupted image: policy,
			  * reference (mDPO terms only) */
};
struct dpo_out {
	double loss;            /* this pair's share: the batch loss is their mean */
	double dpc, dpr, dpcm;  /* k times d(batch loss)/d(pc, pr, pcm) */
	double reward_c, reward_r; /* β(π − ρ) of the summed log-probs, as TRL logs them */
};

/* The weighted sum of O's terms over the batch IN (k pairs), each term the
 * mean over the pairs of its per-pair value as TRL writes them (see
 * seva-dpo(1)). Two terms see the batch as a whole: aot and aot_unpaired
 * sort the log-ratios over the K pairs, and sft is the mean NLL per token
 * of the chosen answers, -Σpc / Σnc; SFT_TOKENS > 0 gives Σnc / k of a
 * larger batch that IN is part of (the global batch of a step), 0 the one
 * of IN. Gradients are with respect to the summed policy log-probs. */
void dpo_batch_loss(const struct dpo_opts *o, const struct dpo_in *in, int k,
		    double sft_tokens, struct dpo_out *out);

/* --- run control --- */
/* Set by SIGINT/SIGTERM once train_signals_install() ran: the loops save a
 * checkpoint at the next step boundary and exit non-zero. */
extern volatile sig_atomic_t train_stop_signal;
void train_signals_install(void);

/* Opens the metrics file (JSON lines). With RESUME_STEP >= 0 the existing
 * file keeps only its lines whose "step" is <= RESUME_STEP (steps after the
 * checkpoint will be written again), so a resumed run's file reads as an
 * uninterrupted one; otherwise it is truncated. NULL with a message. */
FILE *train_metrics_open(const char *path, long resume_step);

/* Writes one JSON line {NAMES[i]: VALUES[i], ...} to F and flushes it.
 * Numbers print in their shortest exact form (integers as integers), so a
 * loss of log 2 reads back as exactly log 2. -1 on a write error. */
int train_metrics_line(FILE *f, const char *const *names, const double *values, int n);

/* --- the options both training tools take --- */
struct train_args {
	const char *model, *out, *metrics, *train;
	const char *dtype;       /* of the saved model: "F32", "BF16"; NULL: the base's */
	int lora, batch, accum, epochs, keep, quiet, threads, resume;
	int precision;           /* of the products: TENSOR_F32, _BF16 or _AUTO */
	int verbose;             /* -v: the BLAS and precision line on stderr */
	long max_steps, save_every, stop_after;
	long warmup_steps;       /* --warmup-steps; -1: from --warmup-ratio */
	double lr, lora_alpha, warmup, clip, wd;
	double adam_beta1, adam_beta2, adam_eps; /* AdamW's (TrainingArguments' names) */
	int rslora;              /* --use-rslora: scale alpha / sqrt(r) (PEFT's use_rslora) */
	double lora_dropout;     /* --lora-dropout: PEFT's lora_dropout; 0 */
	double projector_lr;     /* --projector-lr: LLaVA's mm_projector_lr; -1: --lr */
	enum lr_schedule schedule;
	uint64_t seed;
};

/* Codes of the long options without a letter (a tool's own start at 256). */
enum {
	TRAIN_O_TRAIN = 1024, TRAIN_O_LORA, TRAIN_O_ALPHA, TRAIN_O_LR, TRAIN_O_EPOCHS,
	TRAIN_O_MAXSTEPS, TRAIN_O_ACCUM, TRAIN_O_SCHED, TRAIN_O_WARMUP, TRAIN_O_CLIP, TRAIN_O_WD,
	TRAIN_O_SAVE, TRAIN_O_STOP, TRAIN_O_RESUME, TRAIN_O_METRICS, TRAIN_O_DTYPE,
	TRAIN_O_PRECISION, TRAIN_O_BETA1, TRAIN_O_BETA2, TRAIN_O_EPS, TRAIN_O_WARMUP_STEPS,
	TRAIN_O_RSLORA, TRAIN_O_LORA_DROPOUT, TRAIN_O_PROJECTOR_LR,
};
/* For getopt_long (<getopt.h>): the letters and the long options that
 * train_args_option takes; a tool appends its own. */
#define TRAIN_SHORTOPTS "m:o:b:s:j:kqv"
#define TRAIN_LONGOPTS \
	{ "model", required_argument, NULL, 'm' }, \
	{ "output", required_argument, NULL, 'o' }, \
	{ "train", required_argument, NULL, TRAIN_O_TRAIN }, \
	{ "lora", required_argument, NULL, TRAIN_O_LORA }, \
	{ "lora-alpha", required_argument, NULL, TRAIN_O_ALPHA }, \
	{ "use-rslora", no_argument, NULL, TRAIN_O_RSLORA }, \
	{ "lora-dropout", required_argument, NULL, TRAIN_O_LORA_DROPOUT }, \
	{ "projector-lr", required_argument, NULL, TRAIN_O_PROJECTOR_LR }, \
	{ "lr", required_argument, NULL, TRAIN_O_LR }, \
	{ "epochs", required_argument, NULL, TRAIN_O_EPOCHS }, \
	{ "max-steps", required_argument, NULL, TRAIN_O_MAXSTEPS }, \
	{ "batch", required_argument, NULL, 'b' }, \
	{ "accum", required_argument, NULL, TRAIN_O_ACCUM }, \
	{ "schedule", required_argument, NULL, TRAIN_O_SCHED }, \
	{ "warmup-ratio", required_argument, NULL, TRAIN_O_WARMUP }, \
	{ "warmup-steps", required_argument, NULL, TRAIN_O_WARMUP_STEPS }, \
	{ "adam-beta1", required_argument, NULL, TRAIN_O_BETA1 }, \
	{ "adam-beta2", required_argument, NULL, TRAIN_O_BETA2 }, \
	{ "adam-eps", required_argument, NULL, TRAIN_O_EPS }, \
	{ "clip", required_argument, NULL, TRAIN_O_CLIP }, \
	{ "weight-decay", required_argument, NULL, TRAIN_O_WD }, \
	{ "seed", required_argument, NULL, 's' }, \
	{ "save-every", required_argument, NULL, TRAIN_O_SAVE }, \
	{ "stop-after", required_argument, NULL, TRAIN_O_STOP }, \
	{ "resume", no_argument, NULL, TRAIN_O_RESUME }, \
	{ "metrics", required_argument, NULL, TRAIN_O_METRICS }, \
	{ "dtype", required_argument, NULL, TRAIN_O_DTYPE }, \
	{ "precision", required_argument, NULL, TRAIN_O_PRECISION }, \
	{ "verbose", no_argument, NULL, 'v' }, \
	{ "threads", required_argument, NULL, 'j' }, \
	{ "keep-going", no_argument, NULL, 'k' }, \
	{ "quiet", no_argument, NULL, 'q' }

/* The defaults both tools share (-b 8, one epoch, cosine, warm-up 0.03,
 * clip 1, AdamW's β 0.9 and 0.999 and ε 1e-8 as torch and TrainingArguments,
 * F32); a tool then sets its own (lr, lora). */
void train_args_init(struct train_args *a);
/* Takes option C with argument ARG (getopt's optarg) into A. Returns 1 if C
 * is one of TRAIN_LONGOPTS, 0 if the tool must handle it. A bad value ends
 * the program with status 2 and a message naming the option and the values
 * it takes (USAGE is no longer printed; the parameter stays for callers). */
int train_args_option(struct train_args *a, int c, const char *arg, const char *usage);
/* After the options: refuses (status 2) a global batch -b × --accum above
 * TRAIN_MAX_GLOBAL examples. Under dist_size() > 1: ranks above 0 are
 * quiet and, without -j, the ranks of a host share its cores; then sets
 * the threads and the precision (every rank takes rank 0's choice), and
 * with -v prints them. Exits 1 if --precision bf16 is not built in. */
#define TRAIN_MAX_GLOBAL (1L << 20)
void train_args_setup(struct train_args *a);
/* Before the work, on rank 0: whether the model can be written to -o (an
 * unwritable or full output found after hours of training loses them),
 * and, with --resume, the removal of what killed runs of this output left
 * (OUT.tmp.PID, OUT.ckpt/trainer.bin.tmp.PID, the metrics file's
 * temporary) whose process no longer runs. -1 with a message. */
int train_output_check(const struct train_args *a);
/* After the tool's own checks: the LoRA options without LoRA (LORA 0)
 * and --projector-lr with a frozen projector (PARTS) are usage errors
 * (status 2, naming the option). */
void train_args_check(const struct train_args *a, int lora, unsigned parts);
/* Adds A's LoRA (rank, alpha, --use-rslora, --lora-dropout) on TARGETS of
 * M's decoder, seeded by -s: the one place both tools make adapters. */
void train_lora_add(const struct train_args *a, struct vlm *m, unsigned targets);
/* The key of LoRA dropout's masks for sequence SEQ (of at most 4) of
 * example EXAMPLE in a training forward (vlm_batch.drop_key): with the
 * step's seed that train_run sets, a mask depends on (seed, step, example,
 * sequence) only, so a resumed or data-parallel run draws the same. */
uint64_t train_drop_key(uint32_t example, int seq);
/* --train PARTS: "vision,projector,decoder" → VLM_PART_* mask. */
unsigned train_parse_parts(const char *s);
/* Warm-up steps of a run of TOTAL: --warmup-steps if given (it wins, as
 * in TrainingArguments), else ceil(total × --warmup-ratio). */
long train_warmup(const struct train_args *a, long total);
/* Optimizer steps of the run: --max-steps, or the epochs of N examples in
 * global batches of batch × accum. */
long train_total_steps(const struct train_args *a, long n);
/* The members (no braces) of a checkpoint's settings object that every
 * training run shares, from "lr" to "precision" (the one in use, after
 * train_args_setup); malloc'd. */
char *train_settings(const struct train_args *a, long total, unsigned parts, int lora);

/* --- the training loop --- */
#define TRAIN_SUMS 16

/* What a tool gives train_run: the model and its data, and how one
 * micro-batch's loss and gradient are made. */
struct train_loop {
	struct vlm *m;             /* after vlm_train_init */
	const struct train_args *a;
	long n;                    /* examples */
	long total;                /* train_total_steps */
	const char *settings;      /* JSON object a resume must match */
	const char *unit;          /* what DENOM counts: the rate is "<unit>_per_s" */
	/* What the loss of the global batch BATCH (k examples, the same on
	 * every rank) is a mean over, e.g. its answer tokens; NULL: k. */
	double (*denom)(void *ctx, const uint32_t *batch, int k);
	/* Forward and backward of ROWS (n <= -b examples of this rank's share):
	 * accumulates the gradient of (sum of the rows' losses) / DENOM, adds
	 * that loss sum to SUMS[0] and the tool's sums to SUMS[1..nsums-1]. */
	void (*micro)(void *ctx, const uint32_t *rows, int n, double denom, double *sums);
	int nsums;                 /* <= TRAIN_SUMS */
	const char *const *names;  /* (nsums - 1) metrics: sums[1..] / denom */
	/* Optional: the progress line's text from the metrics' VALUES. */
	void (*progress)(void *ctx, const double *values, char *buf, size_t size);
	void *ctx;
	/* Optional evaluation on held-out data: EVAL (called on every rank,
	 * between steps, the model as it stands) fills VALUES (n_eval of them,
	 * named eval_names, the same on every rank). It runs before the first
	 * step, every EVAL_EVERY steps (0: never in between) and after the
	 * last, each time a metrics line {step, epoch, eval_names...}. */
	void (*eval)(void *ctx, double *values);
	const char *const *eval_names;
	int n_eval;                /* <= TRAIN_SUMS */
	long eval_every;
	/* --keep best (KEEP_BEST): the model written is the one of the
	 * evaluation whose value eval_names[keep_metric] was lowest (highest
	 * with keep_greater), the earliest of equals; else the last step's. */
	int keep_best, keep_metric, keep_greater;
};

/* Trains L->m for L->total steps as both tools do: AdamW, the schedule,
 * clipping; resumes from OUT.ckpt with --resume; the global batch's rows
 * are dealt out over the ranks (rank r takes rows r, r + N, ...) and the
 * gradients and sums added up; a metrics line per step (step, epoch, loss,
 * the tool's names, lr, grad_norm, rate) and the progress line on rank 0;
 * a checkpoint every --save-every steps. Stops with a checkpoint at a
 * signal (-1) or after --stop-after steps (1); stops at a loss or grad
 * norm that is not finite (-1, naming the last good checkpoint). With
 * L->eval, the evaluations above; with keep_best the trainable
 * tensors of the best evaluation are kept (in memory, and beside each
 * checkpoint as OUT.ckpt/best.bin, so a resumed run keeps the same best),
 * put back before the model is written, and a last metrics line says
 * which: {step, best_global_step, best_metric} (Hugging Face's names). At
 * the end rank 0 writes the model to OUT (0). Every rank returns only when
 * rank 0's writing is done. -1 with a message on failure. */
int train_run(const struct train_loop *L);

#endif
