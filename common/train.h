/* train — what the training tools (seva-sft, seva-dpo) share: learning-rate
 * schedules, AdamW over the trainable tensors of a struct vlm, global
 * grad-norm clipping, the per-epoch data order, the DPO losses with TRL's
 * formulas, metrics files, signals, and the trainer checkpoint (model +
 * optimizer state + step + data order + RNG), written atomically and
 * resumed exactly. Depends on vlm, tensor, rng, util. */
#ifndef SEVA_TRAIN_H
#define SEVA_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "rng.h"
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
 * moments) atomically: DIR/trainer.bin.tmp.PID then rename, so a crash
 * leaves the previous checkpoint whole; then DIR/state.json for people.
 * SETTINGS is a JSON object text that a resume must match (the tool's
 * options that shape the trajectory). -1 with a message on failure. */
int train_ckpt_save(const char *dir, const struct vlm *m, const struct train_opt *o,
		    const struct train_state *st, const char *settings);
/* Restores what train_ckpt_save wrote into M (parameters), O (moments and
 * t; must be initialised for M) and ST (step, epoch, pos, order, rng; must
 * be initialised with the same n). Refuses, with a message naming the file
 * and what differs, a checkpoint of another model layout, data set size or
 * settings. Returns 0, 1 if DIR holds no checkpoint, -1 on error. */
int train_ckpt_load(const char *dir, struct vlm *m, struct train_opt *o,
		    struct train_state *st, const char *settings);

/* Writes the trained model to OUT as a model directory (vlm_save, dtype
 * "F32" or "BF16"). With LoRA, the adapter is saved first as PEFT files in
 * OUT/adapter/ and then merged into the weights that OUT holds (M keeps
 * the merged weights afterwards). -1 with a message on failure. */
int train_save_model(struct vlm *m, const char *out, const char *dtype);

/* --- DPO losses (TRL's DPOTrainer.dpo_loss) --- */
enum dpo_loss_type { DPO_SIGMOID, DPO_IPO, DPO_HINGE };
int dpo_loss_parse(const char *name);
const char *dpo_loss_name(enum dpo_loss_type t);

struct dpo_opts {
	enum dpo_loss_type type;
	double beta;            /* 0.1 */
	double label_smoothing; /* cDPO's epsilon, sigmoid only; 0 */
	double sft_weight;      /* weight of the NLL of the chosen answer (TRL's rpo_alpha); 0 */
};

/* Per-pair values of one pair. */
struct dpo_pair {
	double loss;
	double dpc, dpr;        /* d loss / d policy logp of chosen, rejected (summed logps) */
	double reward_c, reward_r; /* beta * (policy - reference) */
};

/* The loss of one pair from summed log-probs PC, PR (policy) and RC, RR
 * (reference) over NC, NR response tokens:
 *   z = (pc - pr) - (rc - rr)
 *   sigmoid: -(1-ls) log σ(βz) - ls log σ(-βz)
 *   hinge:   max(0, 1 - βz)
 *   ipo:     (z - 1/(2β))², with log-probs averaged over tokens as TRL does
 * plus sft_weight · (-pc / nc). Gradients are with respect to the summed
 * policy log-probs. */
void dpo_pair_loss(const struct dpo_opts *o, double pc, double pr, double rc, double rr,
		   double nc, double nr, struct dpo_pair *out);

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

#endif
