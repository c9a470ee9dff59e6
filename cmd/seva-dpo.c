/* seva-dpo — DPO training on chosen/rejected pairs as SeVa runs it (both
 * answers scored on the clean image), and --score: the reference log-probs
 * of each pair written back as ref.json. */
#include <getopt.h>
#include <math.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "conversation.h"
#include "dist.h"
#include "featcache.h"
#include "prompt.h"
#include "rec.h"
#include "tensor.h"
#include "train.h"
#include "util.h"

static const char usage_text[] =
	"seva-dpo -m MODEL -o OUT [--loss NAME[:WEIGHT],...] [--beta B]\n"
	"       [--label-smoothing E] [--sft-weight W] [--dpop-lambda L] [--mdpo-delta D]\n"
	"       [--reference-free] [--full | --lora R] [--lora-alpha A] [--use-rslora]\n"
	"       [--lora-dropout P] [--lora-targets LIST] [--train PARTS] [--lr LR]\n"
	"       [--projector-lr LR] [--epochs N] [--max-steps N]\n"
	"       [-b BATCH] [--accum N] [--schedule NAME] [--warmup-ratio R]\n"
	"       [--warmup-steps N] [--adam-beta1 B] [--adam-beta2 B] [--adam-eps E] [--clip NORM]\n"
	"       [--weight-decay WD] [-s SEED] [--save-every N] [--stop-after N] [--resume]\n"
	"       [--metrics FILE] [--dtype f32|bf16] [--ignore-ref] [--ref-model DIR]\n"
	"       [--allow-ref-mismatch] [--skip-long] [--max-length N]\n"
	"       [--truncation-mode keep_start|keep_end] [--max-prompt-length N]\n"
	"       [--max-completion-length N]\n"
	"       [--eval PAIRS | --eval-split F] [--eval-every N] [--keep last|best[:METRIC]]\n"
	"       [--features DIR] [--precision auto|f32|bf16] [-j THREADS] [-k] [-q] [-v]\n"
	"       [FILE...]\n"
	"       seva-dpo --score -m MODEL [-b BATCH] [-t] [-o FILE] [--skip-long] [--features DIR]\n"
	"       [--max-length N] [--truncation-mode M] [--max-prompt-length N]\n"
	"       [--max-completion-length N] [-k] [-q] [FILE...]";

static struct {
	struct train_args t;
	const char *targets, *ref_model;
	const char *features;    /* --features: the image feature cache's directory */
	int score, full, tar, skip_long, ignore_ref, allow_ref_mismatch;
	const char *eval_file;   /* --eval: held-out pairs */
	double eval_split;       /* --eval-split: the fraction held out, by key */
	long eval_every;
	int keep_best, keep_metric; /* --keep best:METRIC, an index into eval_names */
	double sft_weight;       /* --sft-weight: the sft term's weight; -1: not given */
	/* TRL's max_length and truncation_mode, in decoder positions (the
	 * image's tokens counted, as TRL's vision collator counts them); the
	 * prompt and completion caps of older TRL; 0: none */
	long max_length, max_prompt, max_completion;
	int keep_end;
	struct dpo_opts dpo;
} opt = {
	.targets = "q,k,v,o,gate,up,down", .sft_weight = -1,
};

/* One pair: both sequences are prompt + answer, on the same clean image;
 * with mdpo_cond a third, the chosen one on the corrupted image. */
struct pair {
	int *ids[2];     /* chosen, rejected */
	float *w[2];
	int n[2];
	double ntok[2];  /* answer tokens incl. end of turn */
	int image;       /* index into the image cache, -1: none */
	int aug_image;   /* the corrupted image (mdpo_cond), -1: none */
	float ref[3];    /* reference log-probs of the nseq sequences */
	int have_ref;
	double split;    /* in [0, 1) from the key alone: --eval-split holds it out below F */
	struct sample s; /* --score only: the record to write back */
};

/* The sums of a global batch for the metrics: means over its pairs. */
/* S_PM (the chosen answer on the corrupted image) only with mdpo_cond. */
enum { S_LOSS, S_RC, S_RR, S_ACC, S_MARGIN, S_PC, S_PR, S_PM, NSUMS };
static const char *const metric_names[NSUMS - 1] = {
	"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
	"logps/chosen", "logps/rejected", "logps/chosen_corrupted",
};

/* TRL's names of the same metrics on the evaluation's pairs. */
static const char *const eval_names[NSUMS] = {
	"eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies",
	"eval_rewards/margins", "eval_logps/chosen", "eval_logps/rejected",
	"eval_logps/chosen_corrupted",
};

static struct lm lm;
/* The reference: the starting model, or --ref-model's (REF_VLM, scored once
 * before training, then freed); REF_ID its identity (train_model_id), which
 * ref.json records and a run checks. */
static struct vlm *ref_vlm;
static char ref_id[17];
static long n_ref_mismatch;
/* Pairs [0, n_train) train, [n_train, n_pairs) are the evaluation's. */
static struct pair *pairs;
static long n_pairs, n_train, n_truncated, n_long;
/* pairs skipped: a prompt over --max-prompt-length; one that fills --max-length */
static long n_long_prompt, n_fills;
static struct rec_input in, eval_in; /* the training inputs; --eval's */
/* --features: -m's frozen tower encodes each image once, for the
 * reference's pass and every step (and across runs) */
static struct featcache fcache;
/* The pairs' images: image I's pixels at images + img_pix[I] * img_floats
 * or, with --features (and no --ref-model, whose tower needs the pixels),
 * img_pix[I] = -1 and its features in the cache as img_key[I]: 3 MiB
 * less in memory a SmolVLM image, 25 GB for 8000 pairs. */
static float *images;
static long n_images, n_pix, img_floats, *img_pix;
static struct featcache_key *img_key;

/* Room for one more image's pixels (3, S, S), at images + n_pix * img_floats. */
static float *image_room(void)
{
	images = xrealloc(images, (size_t)(n_pix + 1) * (size_t)img_floats * sizeof(float));
	return images + n_pix * img_floats;
}

/* Takes the pixels image_room gave as the next image; returns its index.
 * With the cache, its features go there and the pixels are let go. */
static int image_keep(void)
{
	img_pix = xrealloc(img_pix, (size_t)(n_images + 1) * sizeof *img_pix);
	img_key = xrealloc(img_key, (size_t)(n_images + 1) * sizeof *img_key);
	img_pix[n_images] = n_pix;
	if (fcache.dir && !opt.ref_model) {
		int r = featcache_fill(&fcache, lm.m, images + n_pix * img_floats, &img_key[n_images]);
		if (r < 0)
			exit(1);
		if (r)
			img_pix[n_images] = -1;
	}
	if (img_pix[n_images] >= 0)
		n_pix++;
	return (int)n_images++;
}
/* Sequences scored per pair: chosen and rejected on the clean image, and
 * with mdpo_cond the chosen answer again on the corrupted image. */
static int nseq = 2;

static void pair_free(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		free(p->ids[i]);
		free(p->w[i]);
	}
	sample_release(&p->s);
}

/* prompt + answer with weights on the answer, without the first CUT
 * tokens (keep_end). */
static void make_seq(struct pair *p, int i, const int *pr, int np, const int *a, int na, int cut)
{
	int n = np + na;
	p->n[i] = n - cut;
	p->ids[i] = xmalloc((size_t)p->n[i] * sizeof(int));
	p->w[i] = xcalloc((size_t)p->n[i], sizeof(float));
	for (int t = cut; t < n; t++) {
		p->ids[i][t - cut] = t < np ? pr[t] : a[t - np];
		p->w[i][t - cut] = t >= np;
	}
	p->ntok[i] = cut > np ? n - cut : na;
}

/* Where TRL cuts a pair (DataCollatorForPreference, truncation_mode): the
 * answers' lengths NA (cut in place to what is kept) and each sequence's
 * CUT from its start. CAP is the most decoder positions a sequence may
 * take, PLEN the prompt's (image tokens counted), IPOS the position of the
 * image's placeholder in the prompt's ids (-1: none). keep_start keeps
 * the first CAP positions: the answers' ends go. keep_end keeps the last,
 * which TRL refuses for vision data as it would cut the image: so here
 * for a pair whose cut would reach its image. Returns 1 if an answer is
 * cut, 0 if not, -1 with a reason. */
static int cut_pair(int *na, int *cut, long cap, int plen, int ipos, const char **why)
{
	int any = 0;
	for (int i = 0; i < 2; i++) {
		cut[i] = 0;
		if (opt.max_completion && na[i] > opt.max_completion) {
			na[i] = (int)opt.max_completion;
			any = 1;
		}
		if (plen + na[i] <= cap)
			continue;
		any = 1;
		if (!opt.keep_end) {
			na[i] = (int)(cap - plen);
			continue;
		}
		cut[i] = (int)(plen + na[i] - cap);
		if (ipos >= 0 && cut[i] > ipos) {
			*why = "--truncation-mode keep_end would cut the prompt's image (TRL refuses "
			       "keep_end for vision data): use keep_start or a longer --max-length";
			return -1;
		}
	}
	return any;
}

/* mdpo_cond's corrupted image: the augmented view the pair was made with,
 * rebuilt as seva-generate built it for the rejected answer, from the
 * recipe in pair.json and the view's base image that seva-pair keeps. */
static int corrupted_image(struct pair *p, const struct sample *s, const struct field *img,
			   const char **why)
{
	cJSON *pj = sample_json(s, "pair.json");
	cJSON *recipe = pj ? cJSON_GetObjectItem(pj, "recipe") : NULL;
	int rc = -1;
	if (!cJSON_IsObject(recipe))
		recipe = NULL;
	if (!img)
		*why = "mdpo_cond: the pair has no image to corrupt";
	else if (!recipe && !sample_get(s, "aug.png"))
		*why = "mdpo_cond: no augmented view (no recipe in pair.json, no aug.png)";
	else {
		if (prompt_aug_tensor(lm.m, s, recipe, image_room(), why) == 0) {
			p->aug_image = image_keep();
			rc = 0;
		}
	}
	cJSON_Delete(pj);
	return rc;
}

/* Tokenizes the pair S into P; -1 with a reason if it is bad, -2 if it is
 * too long and --skip-long says skip, -3 if its prompt alone is too long
 * (no answer token would fit: skipped, --skip-long or not). */
static int pair_make(struct pair *p, struct sample *s, const char **why)
{
	const char *q = sample_want_text(s, "prompt.txt", why), *ans[2] = { NULL, NULL };
	struct field *img = sample_image(s);
	int *pr = NULL, *a[2] = { NULL, NULL }, na[2], rc = -1;

	memset(p, 0, sizeof *p);
	p->image = p->aug_image = -1;
	struct rng kr;
	rng_seed(&kr, 0, s->key ? s->key : "", "eval split");
	p->split = rng_uniform(&kr);
	sample_init(&p->s);
	if (!q || !(ans[0] = sample_want_text(s, "chosen.txt", why)) ||
	    !(ans[1] = sample_want_text(s, "rejected.txt", why)))
		return -1;
	if (conversation_one_image(s, NULL, why) < 0)
		return -1;
	if (conversation_image_count(q) > 1) {
		*why = "prompt.txt: more than one <image> placeholder: several images in one sample "
		       "are not supported (one image per sample)";
		return -1;
	}
	/* a question may carry LLaVA's placeholder: the template adds its own */
	char *question = conversation_strip_image(q);
	int np = chat_encode_prompt(&lm.chat, question, img != NULL, &pr);
	free(question);
	if (np < 0) {
		*why = "cannot tokenize prompt.txt";
		return -1;
	}
	for (int i = 0; i < 2; i++)
		if ((na[i] = chat_encode_answer(&lm.chat, ans[i], &a[i])) < 0) {
			*why = "cannot tokenize the answers";
			goto out;
		}
	int plen = prompt_decoder_len(lm.m, pr, np), ipos = -1, cut[2];
	for (int t = 0; t < np && ipos < 0; t++)
		if (pr[t] == lm.m->cfg.image_token_index)
			ipos = t;
	long cap = lm.m->cfg.max_pos;
	if (opt.max_length && opt.max_length < cap)
		cap = opt.max_length;
	if (opt.max_prompt && plen > opt.max_prompt) {
		/* TRL 1.16 cuts no prompt: a prompt with its image cannot be cut */
		*why = "the prompt is longer than --max-prompt-length";
		n_long_prompt++;
		rc = -2;
		goto out;
	}
	if (!opt.keep_end && plen >= cap) {
		/* keep_start would leave no answer token: TRL drops such pairs */
		*why = "the prompt alone fills the context or --max-length";
		n_fills++;
		rc = -2;
		goto out;
	}
	if (opt.skip_long && (plen + na[0] > lm.m->cfg.max_pos || plen + na[1] > lm.m->cfg.max_pos)) {
		*why = "prompt + answer do not fit the model's context";
		n_long++;
		rc = -2;
		goto out;
	}
	int cr = cut_pair(na, cut, cap, plen, ipos, why);
	if (cr < 0)
		goto out;
	n_truncated += cr;
	for (int i = 0; i < 2; i++)
		make_seq(p, i, pr, np, a[i], na[i], cut[i]);
	cJSON *ref = opt.ignore_ref ? NULL : sample_json(s, "ref.json");
	cJSON *rc_ = ref ? cJSON_GetObjectItem(ref, "chosen") : NULL;
	cJSON *rr_ = ref ? cJSON_GetObjectItem(ref, "rejected") : NULL;
	cJSON *id = ref ? cJSON_GetObjectItem(ref, "model_id") : NULL;
	if (ref && (!cJSON_IsString(id) || strcmp(id->valuestring, ref_id))) {
		static char msg[256];
		cJSON *by = cJSON_GetObjectItem(ref, "model");
		if (!opt.allow_ref_mismatch) {
			snprintf(msg, sizeof msg, "ref.json was scored by %s%s%s (model_id %s), the "
				 "reference of this run is %s: score again with --score, or give "
				 "--ignore-ref or --allow-ref-mismatch",
				 cJSON_IsString(by) ? "'" : "", cJSON_IsString(by) ? by->valuestring :
				 "another model", cJSON_IsString(by) ? "'" : "",
				 cJSON_IsString(id) ? id->valuestring : "absent", ref_id);
			cJSON_Delete(ref);
			*why = msg;
			goto out;
		}
		n_ref_mismatch++;
	}
	cJSON *ct = ref ? cJSON_GetObjectItem(ref, "chosen_tokens") : NULL;
	cJSON *rt = ref ? cJSON_GetObjectItem(ref, "rejected_tokens") : NULL;
	if ((cJSON_IsNumber(ct) && ct->valuedouble != p->ntok[0]) ||
	    (cJSON_IsNumber(rt) && rt->valuedouble != p->ntok[1])) {
		/* scored on other lengths: --max-length and co. differ */
		static char msg[256];
		snprintf(msg, sizeof msg, "ref.json was scored on %g and %g answer tokens, this run "
			 "keeps %g and %g: score with the same length options, or give --ignore-ref",
			 cJSON_IsNumber(ct) ? ct->valuedouble : p->ntok[0],
			 cJSON_IsNumber(rt) ? rt->valuedouble : p->ntok[1], p->ntok[0], p->ntok[1]);
		cJSON_Delete(ref);
		*why = msg;
		goto out;
	}
	cJSON *rm_ = ref ? cJSON_GetObjectItem(ref, "chosen_corrupted") : NULL;
	if (cJSON_IsNumber(rc_) && cJSON_IsNumber(rr_) && (nseq < 3 || cJSON_IsNumber(rm_))) {
		p->ref[0] = (float)rc_->valuedouble;
		p->ref[1] = (float)rr_->valuedouble;
		p->ref[2] = nseq < 3 ? 0 : (float)rm_->valuedouble;
		p->have_ref = 1;
	} else if (ref) {
		cJSON_Delete(ref);
		*why = nseq < 3 ? "ref.json lacks numbers \"chosen\" and \"rejected\""
				: "ref.json lacks numbers \"chosen\", \"rejected\" and "
				  "\"chosen_corrupted\" (mdpo_cond: score with --score --loss mdpo_cond, "
				  "or --ignore-ref)";
		goto out;
	}
	cJSON_Delete(ref);
	if (img) {
		if (prompt_image_tensor(lm.m, img, image_room(), why) < 0)
			goto out;
		p->image = image_keep();
	}
	if (nseq == 3 && corrupted_image(p, s, img, why) < 0)
		goto out;
	rc = 0;
out:
	free(pr);
	free(a[0]);
	free(a[1]);
	if (rc < 0)
		pair_free(p);
	return rc;
}

/* Policy log-probs of pairs IDX (k) under model M: lp[nseq i + c], c =
 * chosen, rejected (and the chosen on the corrupted image). With KEEP the
 * forward is kept for vlm_backward. */
static void forward_pairs(struct vlm *m, const uint32_t *idx, int k, float *lp, int keep)
{
	int B = nseq * k;
	const int **ids = xcalloc((size_t)B, sizeof *ids);
	const float **w = xcalloc((size_t)B, sizeof *w);
	int *len = xcalloc((size_t)B, sizeof *len);
	int *image_of = xcalloc((size_t)B, sizeof *image_of);
	uint64_t *keys = xcalloc((size_t)B, sizeof *keys); /* LoRA dropout's, training only */
	float *imgs = xmalloc((size_t)(k ? (nseq - 1) * k : 1) * (size_t)img_floats * sizeof(float));
	int *id = xmalloc((size_t)(k ? (nseq - 1) * k : 1) * sizeof *id), ni = 0;
	for (int i = 0; i < k; i++) {
		struct pair *p = &pairs[idx[i]];
		int im = -1, aug = -1;
		if (p->image >= 0) {
			id[ni] = p->image;
			im = ni++;
		}
		if (nseq == 3) {
			id[ni] = p->aug_image;
			aug = ni++;
		}
		for (int c = 0; c < nseq; c++) {
			int a = c < 2 ? c : 0; /* the third is the chosen answer again */
			ids[nseq * i + c] = p->ids[a];
			w[nseq * i + c] = p->w[a];
			len[nseq * i + c] = p->n[a];
			/* chosen and rejected share the clean image */
			image_of[nseq * i + c] = c < 2 ? im : aug;
			keys[nseq * i + c] = train_drop_key(idx[i], c);
		}
	}
	struct vlm_batch vb = { .B = B, .ids = ids, .len = len, .weight = w,
				.n_images = ni, .images = imgs, .image_of = image_of,
				.drop_key = keep ? keys : NULL };
	for (int i = 0; i < ni; i++)
		if (img_pix[id[i]] >= 0)
			memcpy(imgs + i * img_floats, images + img_pix[id[i]] * img_floats,
			       (size_t)img_floats * sizeof(float));
	/* the images' features from the cache (not --ref-model's: another
	 * tower): by name where only the cache has them, else by pixels */
	const float **given = NULL, **pix = NULL;
	float *feat = NULL;
	struct featcache_key *fkeys = NULL;
	if (fcache.dir && m == lm.m && ni > 0) {
		size_t rows = (size_t)m->cfg.feat_tokens * m->cfg.v_hidden;
		int np = 0, nk = 0;
		given = xmalloc((size_t)ni * sizeof *given);
		pix = xmalloc((size_t)ni * sizeof *pix);
		fkeys = xmalloc((size_t)ni * sizeof *fkeys);
		feat = xmalloc((size_t)ni * rows * sizeof *feat);
		/* pixels kept: all of them for --ref-model's sake, or those
		 * whose file -k refused (the tower runs on them, as without) */
		for (int i = 0; i < ni; i++)
			if (img_pix[id[i]] >= 0) {
				pix[np] = imgs + i * img_floats;
				given[i] = opt.ref_model ? feat + np++ * rows : NULL;
			}
		np = opt.ref_model ? np : 0;
		for (int i = 0; i < ni; i++)
			if (img_pix[id[i]] < 0) {
				fkeys[nk] = img_key[id[i]];
				given[i] = feat + (np + nk++) * rows;
			}
		if (featcache_get(&fcache, m, pix, np, feat) < 0 ||
		    featcache_read(&fcache, fkeys, nk, feat + np * rows) < 0)
			exit(1);
		vb.features = given;
	}
	if (vlm_forward(m, &vb, lp, keep) < 0)
		exit(1);
	free(given);
	free(pix);
	free(fkeys);
	free(feat);
	free(id);
	free(ids);
	free(w);
	free(len);
	free(image_of);
	free(keys);
	free(imgs);
}

/* Reference log-probs of pairs FROM..TO that have none, in batches of -b
 * pairs in input order: the same code and batches as --score, so ref.json
 * from a scoring run and the in-memory reference are the same numbers. */
static void score_range(long from, long to)
{
	struct vlm *m = ref_vlm ? ref_vlm : lm.m;
	uint32_t *idx = xmalloc((size_t)opt.t.batch * sizeof *idx);
	float *lp = xmalloc((size_t)(nseq * opt.t.batch) * sizeof *lp);
	long b = 0;
	for (long i = from; i < to;) {
		int k = 0;
		while (i < to && k < opt.t.batch) {
			if (!pairs[i].have_ref)
				idx[k++] = (uint32_t)i;
			i++;
		}
		if (!k || b++ % dist_size() != dist_rank())
			continue; /* with N ranks, each scores every N-th batch */
		forward_pairs(m, idx, k, lp, 0);
		for (int j = 0; j < k; j++) {
			for (int c = 0; c < nseq; c++)
				pairs[idx[j]].ref[c] = lp[nseq * j + c];
			pairs[idx[j]].have_ref = 1;
		}
	}
	free(idx);
	free(lp);
}

/* --score: scores the pairs held, writes them back with ref.json, frees them. */
static void flush_scored(struct rec_writer *w)
{
	score_range(0, n_pairs);
	for (long i = 0; i < n_pairs; i++) {
		struct pair *q = &pairs[i];
		if (!isfinite(q->ref[0]) || !isfinite(q->ref[1])) {
			error("key %s: the reference log-probs are not finite (NaN or Inf in the "
			      "model '%s'?)", q->s.key, opt.t.model);
			exit(1);
		}
		cJSON *j = cJSON_CreateObject();
		cJSON_AddNumberToObject(j, "chosen", q->ref[0]);
		cJSON_AddNumberToObject(j, "rejected", q->ref[1]);
		if (nseq == 3)
			cJSON_AddNumberToObject(j, "chosen_corrupted", q->ref[2]);
		cJSON_AddNumberToObject(j, "chosen_tokens", q->ntok[0]);
		cJSON_AddNumberToObject(j, "rejected_tokens", q->ntok[1]);
		cJSON_AddStringToObject(j, "model", opt.t.model);
		cJSON_AddStringToObject(j, "model_id", ref_id);
		sample_set_json(&q->s, "ref.json", j);
		cJSON_Delete(j);
		if (rec_write(w, &q->s) < 0)
			exit(1);
		pair_free(q);
	}
	n_pairs = 0;
	n_images = n_pix = 0;
}

/* Takes the pair S (for --score, W: writes each batch back as soon as it
 * is scored). Too long with --skip-long: counted, not an error. */
static int pair_add(void *w, struct sample *s, const char **why)
{
	struct pair p;
	int rc = pair_make(&p, s, why);
	if (rc == -2) /* counted by its reason */
		return 0;
	if (rc < 0)
		return -1;
	if (w) {
		p.s = *s;
		sample_init(s);
	}
	pairs = xrealloc(pairs, (size_t)(n_pairs + 1) * sizeof *pairs);
	pairs[n_pairs++] = p;
	if (w && n_pairs == opt.t.batch)
		flush_scored(w);
	return 0;
}

/* Reads every pair: into memory for training, or through W for --score. */
static void read_pairs(int argc, char **argv, struct rec_writer *w)
{
	rec_input_init(&in, argv + optind, argc - optind, opt.t.keep);
	if (rec_input_each(&in, pair_add, w) < 0)
		exit(1);
}

/* --eval FILE: its pairs after the training ones. */
static void read_eval_pairs(void)
{
	static char *files[1];
	files[0] = (char *)opt.eval_file;
	rec_input_init(&eval_in, files, 1, opt.t.keep);
	if (rec_input_each(&eval_in, pair_add, NULL) < 0)
		exit(1);
	if (n_pairs == n_train)
		die("%s: no pairs to evaluate on", opt.eval_file);
}

/* --eval-split F: the pairs whose key falls below F go after the others,
 * each part in input order. After scoring, so that the reference is the
 * one --score computes on the whole input. */
static void split_pairs(void)
{
	struct pair *p = xmalloc((size_t)n_pairs * sizeof *p);
	long k = 0;
	for (int held = 0; held < 2; held++)
		for (long i = 0; i < n_pairs; i++)
			if ((pairs[i].split < opt.eval_split) == held)
				p[k++] = pairs[i];
	for (long i = 0; i < n_pairs; i++)
		n_train -= pairs[i].split < opt.eval_split;
	free(pairs);
	pairs = p;
	if (n_train == 0)
		die("--eval-split %g: all %ld pairs held out, nothing to train on", opt.eval_split,
		    n_pairs);
	if (n_train == n_pairs) /* a small input: training goes on, as without the split */
		warn("--eval-split %g: none of the %ld pairs held out; no evaluation%s",
		     opt.eval_split, n_pairs, opt.keep_best ? ", the last step's model is written" : "");
	else if (!opt.t.quiet)
		warn("--eval-split %g: %ld of %ld pairs held out for evaluation", opt.eval_split,
		     n_pairs - n_train, n_pairs);
}

static const char *const target_names[] = { "q", "k", "v", "o", "gate", "up", "down" };

static char *settings_json(unsigned parts, unsigned targets, long total)
{
	char *common = train_settings(&opt.t, total, parts, opt.full ? 0 : opt.t.lora);
	char *loss = dpo_loss_text(&opt.dpo);
	char *s = xasprintf("{\"model\":\"%s\",\"loss\":\"%s\",\"beta\":%.9g,"
			    "\"label_smoothing\":%.9g,\"dpop_lambda\":%.9g,\"mdpo_delta\":%.9g,"
			    "\"reference_free\":%s,%s,\"lora_targets\":%u,\"ref_model_id\":\"%s\",\"eval_pairs\":%ld,"
			    "\"eval_split\":%.9g,\"eval_every\":%ld,\"keep\":\"%s%s\","
			    "\"max_length\":%ld,\"truncation_mode\":\"%s\",\"max_prompt_length\":%ld,"
			    "\"max_completion_length\":%ld,\"skip_long\":%s}",
			    opt.t.model, loss, opt.dpo.beta, opt.dpo.label_smoothing,
			    opt.dpo.dpop_lambda, opt.dpo.mdpo_delta,
			    opt.dpo.reference_free ? "true" : "false", common, targets, ref_id,
			    n_pairs - n_train, opt.eval_split, opt.eval_every,
			    opt.keep_best ? "best:" : "last",
			    opt.keep_best ? eval_names[opt.keep_metric] : "", opt.max_length,
			    opt.keep_end ? "keep_end" : "keep_start", opt.max_prompt, opt.max_completion,
			    opt.skip_long ? "true" : "false");
	free(loss);
	free(common);
	return s;
}

/* The reference of every pair without ref.json. With N ranks each scores
 * every N-th batch (the same batches as one process) and the others'
 * numbers arrive by a sum in which each term but one is zero: exact. */
static void score_all(void)
{
	unsigned char *need = xmalloc((size_t)(n_pairs ? n_pairs : 1));
	for (long i = 0; i < n_pairs; i++)
		need[i] = !pairs[i].have_ref;
	/* the training inputs, then --eval's: each scored as --score on it would */
	score_range(0, n_train);
	score_range(n_train, n_pairs);
	if (dist_size() > 1) {
		long nv = nseq * n_pairs;
		double *v = xcalloc((size_t)nv, sizeof *v);
		for (long i = 0; i < n_pairs; i++)
			if (need[i] && pairs[i].have_ref)
				for (int c = 0; c < nseq; c++)
					v[nseq * i + c] = pairs[i].ref[c];
		for (long i = 0; i < nv; i += 1L << 28)
			dist_allreduce_sum_double(v + i, (int)(nv - i < 1L << 28 ? nv - i : 1L << 28));
		for (long i = 0; i < n_pairs; i++)
			if (need[i]) {
				for (int c = 0; c < nseq; c++)
					pairs[i].ref[c] = (float)v[nseq * i + c];
				pairs[i].have_ref = 1;
			}
		free(v);
	}
	free(need);
}

/* --ref-model DIR: scores the pairs, which are tokenized and preprocessed
 * for -m, so it must read them alike: the same vocabulary, image token,
 * image geometry and preprocessing (TRL's ref_model shares the policy's
 * processor too), and a context at least as long. */
static int load_ref_model(const char *dir)
{
	const struct vlm_config *a = &lm.m->cfg, *b;
	const struct preprocess *p = &lm.m->pre, *q;
	if (!(ref_vlm = vlm_load(dir)))
		return -1;
	b = &ref_vlm->cfg;
	q = &ref_vlm->pre;
	const char *what = b->vocab != a->vocab ? "vocab_size" :
		b->image_token_index != a->image_token_index ? "image_token_index" :
		b->img_tokens != a->img_tokens ? "image tokens per image" :
		b->max_pos < a->max_pos ? "max_position_embeddings (shorter)" :
		preprocess_side(q) != preprocess_side(p) || q->mode != p->mode ||
		q->resample != p->resample || q->rescale != p->rescale ||
		memcmp(q->mean, p->mean, sizeof q->mean) || memcmp(q->std, p->std, sizeof q->std) ?
		"image preprocessing" : NULL;
	if (what)
		return error("--ref-model %s: its %s differs from -m %s's: the pairs are read for "
			     "-m and the reference must read them alike", dir, what, opt.t.model);
	return 0;
}

static int score_main(int argc, char **argv)
{
	/* -o FILE as in every stream tool (written whole, then renamed) */
	struct rec_writer *w = rec_writer_open(opt.t.out, opt.tar ? REC_TAR : REC_MSGPACK, 0);
	if (!w)
		return 1;
	opt.ignore_ref = 1; /* --score computes afresh */
	read_pairs(argc, argv, w);
	flush_scored(w);
	return rec_writer_close(w) < 0 ? 1 : 0;
}

static void warn_long(void)
{
	if (n_long)
		warn("%ld pairs too long for the context skipped (--skip-long)", n_long);
	if (n_long_prompt)
		warn("%ld pairs with a prompt longer than --max-prompt-length %ld skipped",
		     n_long_prompt, opt.max_prompt);
	if (n_fills)
		warn("%ld pairs skipped: the prompt alone fills %s", n_fills,
		     opt.max_length && opt.max_length < lm.m->cfg.max_pos ? "--max-length"
									: "the model's context");
	if (n_truncated)
		warn("%ld pairs: answer truncated to fit %s", n_truncated,
		     opt.max_length || opt.max_completion ? "the length options" : "the context");
}


/* Chosen-answer tokens per pair over the step's global batch: the sft
 * term is a token mean over the whole step, whatever -b, --accum and the
 * ranks make of it. */
static double step_chosen_tokens;

static double step_denom(void *ctx, const uint32_t *batch, int k)
{
	double sum = 0;
	(void)ctx;
	for (int i = 0; i < k; i++)
		sum += pairs[batch[i]].ntok[0];
	step_chosen_tokens = k ? sum / k : 0;
	return k;
}

/* The loss terms of pairs IDX (k) from their policy log-probs LP (nseq k),
 * into OUT (k); adds their metrics to SUM. */
static void pairs_loss(const uint32_t *idx, int k, const float *lp, double sft_tokens,
		       struct dpo_out *out, double *sum)
{
	struct dpo_in *in = xmalloc((size_t)(k ? k : 1) * sizeof *in);
	for (int j = 0; j < k; j++) {
		const struct pair *p = &pairs[idx[j]];
		const float *l = lp + nseq * j;
		in[j] = (struct dpo_in){ l[0], l[1], p->ref[0], p->ref[1], p->ntok[0], p->ntok[1],
					 nseq == 3 ? l[2] : 0, p->ref[2] };
	}
	dpo_batch_loss(&opt.dpo, in, k, sft_tokens, out);
	for (int j = 0; j < k; j++) {
		sum[S_LOSS] += out[j].loss;
		sum[S_RC] += out[j].reward_c;
		sum[S_RR] += out[j].reward_r;
		sum[S_ACC] += out[j].reward_c > out[j].reward_r;
		sum[S_MARGIN] += out[j].reward_c - out[j].reward_r;
		sum[S_PC] += lp[nseq * j];
		sum[S_PR] += lp[nseq * j + 1];
		if (nseq == 3)
			sum[S_PM] += lp[nseq * j + 2];
	}
	free(in);
}

/* Forward and backward of pairs IDX (k): the gradient of the DPO loss
 * summed over them / K (pairs in the global batch), and their sums. The
 * terms that see a batch (aot's sorting) see this forward pass's pairs,
 * as TRL's see a device's micro-batch. */
static void micro_step(void *ctx, const uint32_t *idx, int k, double K, double *sum)
{
	float *lp = ctx, *dlp = lp + nseq * opt.t.batch;
	struct dpo_out *out = xmalloc((size_t)k * sizeof *out);
	forward_pairs(lm.m, idx, k, lp, 1);
	pairs_loss(idx, k, lp, step_chosen_tokens, out, sum);
	for (int j = 0; j < k; j++) {
		dlp[nseq * j] = (float)(out[j].dpc / K);
		dlp[nseq * j + 1] = (float)(out[j].dpr / K);
		if (nseq == 3)
			dlp[nseq * j + 2] = (float)(out[j].dpcm / K);
	}
	free(out);
	vlm_backward(lm.m, dlp);
}


/* The loss and metrics of the evaluation's pairs with the model as it
 * stands: batches of -b in their order (the batches --score makes of
 * them), each rank every N-th, means over the pairs (sft's tokens are
 * those of all of them). */
static void eval_pairs(void *ctx, double *v)
{
	long ne = n_pairs - n_train, b = 0;
	double sum[NSUMS] = { 0 }, tokens = 0;
	uint32_t *idx = xmalloc((size_t)opt.t.batch * sizeof *idx);
	float *lp = xmalloc((size_t)(nseq * opt.t.batch) * sizeof *lp);
	struct dpo_out *out = xmalloc((size_t)opt.t.batch * sizeof *out);
	(void)ctx;
	for (long i = n_train; i < n_pairs; i++)
		tokens += pairs[i].ntok[0];
	for (long i = n_train; i < n_pairs; i += opt.t.batch, b++) {
		if (b % dist_size() != dist_rank())
			continue;
		int k = n_pairs - i < opt.t.batch ? (int)(n_pairs - i) : opt.t.batch;
		for (int j = 0; j < k; j++)
			idx[j] = (uint32_t)(i + j);
		forward_pairs(lm.m, idx, k, lp, 0);
		pairs_loss(idx, k, lp, tokens / (double)ne, out, sum);
	}
	dist_allreduce_sum_double(sum, NSUMS);
	for (int c = 0; c < (nseq == 3 ? NSUMS : NSUMS - 1); c++)
		v[c] = sum[c] / (double)ne;
	free(idx);
	free(lp);
	free(out);
}

static void progress_text(void *ctx, const double *v, char *buf, size_t size)
{
	(void)ctx;
	snprintf(buf, size, "acc %.2f, margin %.3f", v[S_ACC - 1], v[S_MARGIN - 1]);
}

static int train(unsigned parts, unsigned targets)
{
	long total = train_total_steps(&opt.t, n_train);
	char *settings = settings_json(parts, targets, total);
	float *lp = xmalloc((size_t)(2 * nseq * opt.t.batch) * sizeof *lp); /* logps, then d */
	struct train_loop L = {
		.m = lm.m, .a = &opt.t, .n = n_train, .total = total, .settings = settings,
		.unit = "pairs", .denom = step_denom, .micro = micro_step,
		.nsums = nseq == 3 ? NSUMS : NSUMS - 1, .names = metric_names,
		.progress = progress_text, .ctx = lp,
		.eval = n_pairs > n_train ? eval_pairs : NULL, .eval_names = eval_names,
		.n_eval = nseq == 3 ? NSUMS : NSUMS - 1, .eval_every = opt.eval_every,
		.keep_best = opt.keep_best && n_pairs > n_train, .keep_metric = opt.keep_metric,
		/* Hugging Face's greater_is_better: unless the metric is a loss */
		.keep_greater = opt.keep_metric != 0,
	};
	if (!opt.full) {
		train_lora_add(&opt.t, lm.m, targets);
		parts |= VLM_PART_LORA;
	}
	vlm_train_init(lm.m, parts);
	int rc = train_run(&L);
	free(lp);
	free(settings);
	return rc;
}

static _Noreturn void usage_error(const char *msg)
{
	warn("%s", msg);
	exit(2);
}

/* --keep last | best | best:METRIC (an eval name, "eval_" optional). */
static void parse_keep(const char *arg)
{
	opt.keep_best = strncmp(arg, "best", 4) == 0 && (!arg[4] || arg[4] == ':');
	opt.keep_metric = 0;
	if (!strcmp(arg, "last") || !strcmp(arg, "best"))
		return;
	if (opt.keep_best) {
		const char *m = arg + 5;
		for (int i = 0; i < NSUMS; i++)
			if (!strcmp(m, eval_names[i]) || !strcmp(m, eval_names[i] + 5)) {
				opt.keep_metric = i;
				return;
			}
	}
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < NSUMS; i++)
		buf_printf(&b, "%s%s", i ? ", " : "", eval_names[i]);
	warn("--keep: not last, best or best:METRIC with METRIC one of %s: '%s'", (char *)b.data,
	     arg);
	exit(2);
}

/* The loss options that only make sense together: usage errors. */
static void check_loss(void)
{
	if (opt.sft_weight >= 0) /* TRL's rpo_alpha, now its sft term */
		dpo_set_term(&opt.dpo, DPO_SFT, opt.sft_weight);
	if (!opt.dpo.nterms)
		usage_error("--sft-weight 0 leaves no loss term: name one with --loss");
	if (dpo_term_weight(&opt.dpo, DPO_ROBUST) && opt.dpo.label_smoothing >= 0.5)
		usage_error("--loss robust: --label-smoothing must be below 0.5 (the flip rate)");
	if (dpo_term_weight(&opt.dpo, DPO_EXO_PAIR) && opt.dpo.label_smoothing == 0)
		usage_error("--loss exo_pair: --label-smoothing must be above 0 (EXO's ε; the paper "
			  "uses 1e-3)");
	nseq = dpo_needs_corrupted(&opt.dpo) ? 3 : 2;
	if (opt.eval_file && opt.eval_split)
		usage_error("--eval PAIRS and --eval-split F: one or the other");
	int evaluating = opt.eval_file || opt.eval_split;
	if (opt.score && (evaluating || opt.eval_every || opt.keep_best))
		usage_error("--score scores pairs: --eval, --eval-split, --eval-every and --keep are "
			    "for training");
	if (!evaluating && (opt.eval_every || opt.keep_best))
		usage_error(opt.keep_best ? "--keep best: needs --eval or --eval-split"
					  : "--eval-every: needs --eval or --eval-split");
	if (opt.keep_best && opt.keep_metric == NSUMS - 1 && nseq < 3)
		usage_error("--keep best:eval_logps/chosen_corrupted: needs --loss mdpo_cond");
}

int main(int argc, char **argv)
{
	enum {
		O_SCORE = 256, O_LOSS, O_BETA, O_LS, O_SFTW, O_FULL, O_TARGETS, O_IGNREF,
		O_SKIPLONG, O_REFFREE, O_DPOP, O_MDPOD, O_REFMODEL, O_ALLOWREF, O_EVAL, O_EVALSPLIT,
		O_EVALEVERY, O_KEEP, O_MAXLEN, O_TRUNC, O_MAXPROMPT, O_MAXCOMPL, O_FEATURES,
	};
	static const char *const trunc_names[] = { "keep_start", "keep_end" };
	static const struct option longopts[] = {
		TRAIN_LONGOPTS,
		{ "score", no_argument, NULL, O_SCORE },
		{ "loss", required_argument, NULL, O_LOSS },
		{ "beta", required_argument, NULL, O_BETA },
		{ "label-smoothing", required_argument, NULL, O_LS },
		{ "sft-weight", required_argument, NULL, O_SFTW },
		{ "dpop-lambda", required_argument, NULL, O_DPOP },
		{ "mdpo-delta", required_argument, NULL, O_MDPOD },
		{ "reference-free", no_argument, NULL, O_REFFREE },
		{ "eval", required_argument, NULL, O_EVAL },
		{ "eval-split", required_argument, NULL, O_EVALSPLIT },
		{ "eval-every", required_argument, NULL, O_EVALEVERY },
		{ "keep", required_argument, NULL, O_KEEP },
		{ "full", no_argument, NULL, O_FULL },
		{ "lora-targets", required_argument, NULL, O_TARGETS },
		{ "ignore-ref", no_argument, NULL, O_IGNREF },
		{ "skip-long", no_argument, NULL, O_SKIPLONG },
		{ "max-length", required_argument, NULL, O_MAXLEN },
		{ "truncation-mode", required_argument, NULL, O_TRUNC },
		{ "max-prompt-length", required_argument, NULL, O_MAXPROMPT },
		{ "max-completion-length", required_argument, NULL, O_MAXCOMPL },
		{ "ref-model", required_argument, NULL, O_REFMODEL },
		{ "allow-ref-mismatch", no_argument, NULL, O_ALLOWREF },
		{ "features", required_argument, NULL, O_FEATURES },
		{ "tar", no_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, rc = 0;

	tensor_blas_setup(argv);
	util_init_args(argc, argv);
	usage_flag_not_count(argc, argv, 't', "writes a tar shard (with --score)", 1, usage_text);
	check_stdout_at_exit();
	dist_init(&argc, &argv); /* under mpirun/srun: data-parallel ranks */
	train_args_command(argc, argv);
	train_args_init(&opt.t);
	dpo_opts_init(&opt.dpo);
	opt.t.lr = -1; /* by --full */
	opt.t.lora = 0; /* 16 unless --full; both given is a usage error */
	while ((c = getopt_long(argc, argv, TRAIN_SHORTOPTS "th", longopts, NULL)) != -1) {
		if (train_args_option(&opt.t, c, optarg, usage_text))
			continue;
		switch (c) {
		case O_SCORE: opt.score = 1; break;
		case O_LOSS:
			if (dpo_loss_parse(&opt.dpo, "--loss", optarg) < 0)
				exit(2);
			break;
		case O_BETA: opt.dpo.beta = arg_double("--beta", optarg, 1e-9, 1e9); break;
		case O_LS: opt.dpo.label_smoothing = arg_double("--label-smoothing", optarg, 0, 0.5); break;
		case O_SFTW: opt.sft_weight = arg_double("--sft-weight", optarg, 0, 1e6); break;
		case O_DPOP: opt.dpo.dpop_lambda = arg_double("--dpop-lambda", optarg, 0, 1e6); break;
		case O_MDPOD: opt.dpo.mdpo_delta = arg_double("--mdpo-delta", optarg, -1e6, 1e6); break;
		case O_REFFREE: opt.dpo.reference_free = 1; break;
		case O_EVAL: opt.eval_file = optarg; break;
		case O_EVALSPLIT:
			opt.eval_split = arg_double("--eval-split", optarg, 1e-9, 1 - 1e-9);
			break;
		case O_EVALEVERY: opt.eval_every = arg_long("--eval-every", optarg, 1, LONG_MAX); break;
		case O_KEEP: parse_keep(optarg); break;
		case O_FULL: opt.full = 1; break;
		case O_TARGETS: opt.targets = optarg; break;
		case O_IGNREF: opt.ignore_ref = 1; break;
		case O_SKIPLONG: opt.skip_long = 1; break;
		case O_MAXLEN: opt.max_length = arg_long("--max-length", optarg, 2, INT_MAX); break;
		case O_TRUNC:
			opt.keep_end = arg_choice("--truncation-mode", optarg, trunc_names, 2);
			break;
		case O_MAXPROMPT:
			opt.max_prompt = arg_long("--max-prompt-length", optarg, 1, INT_MAX);
			break;
		case O_MAXCOMPL:
			opt.max_completion = arg_long("--max-completion-length", optarg, 1, INT_MAX);
			break;
		case O_REFMODEL: opt.ref_model = optarg; break;
		case O_ALLOWREF: opt.allow_ref_mismatch = 1; break;
		case O_FEATURES:
			if (!*optarg)
				usage_error("--features: the cache's directory, not an empty name");
			opt.features = optarg;
			break;
		case 't': opt.tar = 1; break;
		case 'h': usage_help(usage_text);
		default: usage_die(usage_text);
		}
	}
	if (!opt.t.model || (!opt.score && !opt.t.out))
		usage_die(usage_text);
	if (opt.full && opt.t.lora) {
		warn("--full trains the decoder's weights, --lora adapters: one or the other");
		usage_die(usage_text);
	}
	if (!opt.full && !opt.t.lora)
		opt.t.lora = 16;
	check_loss();
	if (opt.score && opt.ref_model) {
		warn("--score scores with -m: give the reference model as -m, not --ref-model");
		usage_die(usage_text);
	}
	if (opt.features && !opt.score && opt.t.train &&
	    (train_parse_parts(opt.t.train) & VLM_PART_VISION))
		usage_error("--features keeps the frozen tower's output: not with --train vision");
	if (dist_size() > 1 && opt.score)
		die("--score runs as one process: shard its input instead "
		    "(pipelines/shards.sh --score)");
	train_args_setup(&opt.t);
	if (!opt.score && train_output_check(&opt.t) < 0)
		return 1;
	if (lm_load(&lm, opt.t.model) < 0)
		return 1;
	int S = preprocess_side(&lm.m->pre);
	img_floats = 3L * S * S;
	if (opt.features && featcache_open(&fcache, opt.features, lm.m, opt.t.keep) < 0)
		return 1;
	if (opt.ref_model && load_ref_model(opt.ref_model) < 0)
		return 1;
	train_model_id(ref_vlm ? ref_vlm : lm.m, ref_id);

	if (opt.score) {
		rc = score_main(argc, argv);
		warn_long();
	} else {
		/* what trains: LoRA + projector by default, or the decoder in full */
		unsigned parts = opt.t.train ? train_parse_parts(opt.t.train)
					     : VLM_PART_PROJECTOR | (opt.full ? VLM_PART_DECODER : 0);
		unsigned targets = arg_names("--lora-targets", opt.targets, target_names, 7);
		train_args_check(&opt.t, !opt.full, parts);
		if (opt.t.lr < 0)
			opt.t.lr = opt.full ? 1e-5 : 2e-4;
		if (opt.t.lora_alpha == 0)
			opt.t.lora_alpha = 2.0 * opt.t.lora;
		read_pairs(argc, argv, NULL);
		n_train = n_pairs;
		if (opt.eval_file)
			read_eval_pairs();
		warn_long();
		if (n_train == 0) {
			rec_input_release(&in);
			die("no pairs: %s, nothing to train on",
			    in.read ? "every pair was skipped" : "the input is empty");
		}
		/* The reference is the initial weights (LoRA not yet added), scored
		 * once before training as TRL's precompute_ref_log_probs does: no
		 * second copy of the model for --full. */
		if (!opt.dpo.reference_free)
			score_all();
		if (ref_vlm) {
			vlm_free(ref_vlm);
			ref_vlm = NULL;
		}
		if (n_ref_mismatch)
			warn("%ld pairs carry ref.json scored by another model than this run's "
			     "reference, used as given (--allow-ref-mismatch)", n_ref_mismatch);
		if (opt.eval_split)
			split_pairs();
		rc = train(parts, targets) < 0;
	}
	if (rc == 0)
		rc = rec_input_release(&in);
	if (eval_in.files && rec_input_release(&eval_in) == 1 && rc == 0)
		rc = 1;
	featcache_report(&fcache, opt.t.quiet || dist_rank() > 0);
	featcache_close(&fcache);
	for (long i = 0; i < n_pairs; i++)
		pair_free(&pairs[i]);
	free(pairs);
	free(images);
	free(img_pix);
	free(img_key);
	lm_release(&lm);
	return rc;
}
