/* eval — model-free scoring of answers against ground truth: POPE (parsed
 * as the official POPE/LLaVA scripts do), CHAIR with a synonym table and
 * plural handling, exact match for colour and count. Metrics travel as a
 * cJSON object (what --json writes), so a comparison can start from
 * samples or from saved metrics alike. Uses synth (the default vocabulary),
 * util and cJSON; no records. */
#ifndef SEVA_EVAL_H
#define SEVA_EVAL_H

#include <stdio.h>

struct cJSON;
struct buf;

/* Object vocabulary for CHAIR: phrases (one or more words) → canonical
 * object names. Every phrase also matches its plural. */
struct eval_vocab;

/* The synthetic world's table: each shape with its synonyms (synth.h). */
struct eval_vocab *eval_vocab_default(void);
/* A COCO-style file: one object per line, "name, synonym, synonym, ...";
 * blank lines and lines starting with '#' are skipped. NULL with a message
 * naming the file and line on failure. */
struct eval_vocab *eval_vocab_load(const char *path);
void eval_vocab_free(struct eval_vocab *v);
/* The canonical names of the objects TEXT mentions, in order and with
 * repeats (longest phrase first, case-insensitive, words of [a-z0-9]).
 * Returns the count; *names is malloc'd (free it), the strings borrowed. */
int eval_vocab_mentions(const struct eval_vocab *v, const char *text, const char ***names);
/* The canonical name of PHRASE (a name, synonym or plural), or NULL. */
const char *eval_vocab_canonical(const struct eval_vocab *v, const char *phrase);

/* POPE's parse of an answer: keep the text before the first '.', drop ',',
 * split on ' '; "No", "not" or "no" among the words → 0 (no), else 1 (yes). */
int eval_pope_yes(const char *answer);
/* Exact-match normal form: lower case, punctuation to spaces, spaces
 * collapsed, number words zero..twenty as digits ("Three." → "3"). */
void eval_normalize(struct buf *out, const char *text);

struct eval_pope {
	char split[32];
	long tp, fp, tn, fn;
};

#define EVAL_MAX_SPLITS 16

enum eval_task { EVAL_POPE, EVAL_DESCRIBE, EVAL_COLOR, EVAL_COUNT };

/* One scored sample: what every metric needs of it, so that the metrics can
 * be recomputed on any resample of the samples (common/compare.c), and two
 * runs paired sample by sample. */
struct eval_score {
	char *key;   /* the sample key */
	char *image; /* the unit resampled: json.image_id, else the key */
	int task;    /* enum eval_task */
	int split;   /* POPE: index into struct eval's pope[] */
	int label, yes; /* POPE: the truth and the parsed answer, 1 = yes */
	/* describe: objects present, of them mentioned; mentions, of them hallucinated */
	int objects, covered, mentions, hallucinated;
	int correct; /* color, count: exact match */
};

struct eval {
	const struct eval_vocab *vocab; /* borrowed */
	struct eval_pope pope[EVAL_MAX_SPLITS];
	int npope;
	/* CHAIR over description answers */
	long chair_n, chair_hall_caps, chair_mentions, chair_hall_mentions;
	long chair_truth, chair_covered; /* ground-truth objects, and those mentioned */
	long color_n, color_ok, count_n, count_ok;
	long samples;
	struct eval_score *scores; /* (samples), in the order scored */
	long scores_cap;
};

void eval_init(struct eval *e, const struct eval_vocab *vocab);
void eval_release(struct eval *e);
/* Scores RESPONSE against TRUTH ({"task": "pope"|"describe"|"color"|"count",
 * ...}, see seva-eval(1)) for the sample KEY of image IMAGE (NULL: the key).
 * Returns 0, or -1 with *ERR set to a static reason when the truth is
 * malformed (nothing counted then). */
int eval_add(struct eval *e, const char *key, const char *image, const struct cJSON *truth,
	     const char *response, const char **err);
/* One POPE answer of split SPLIT with the label LABEL_YES. */
void eval_pope_add(struct eval *e, const char *key, const char *image, const char *split,
		   int label_yes, const char *answer);
/* Counts S as scored (POPE: in split SPLIT; S->split is ignored); the key
 * and image are copied. */
void eval_add_score(struct eval *e, const struct eval_score *s, const char *split);
/* The scores as the "per_sample" array of --json: one object per sample,
 * {"key", "image", "task", then "split", "label", "answer" (POPE),
 * "objects", "covered", "mentions", "hallucinated" (describe) or
 * "correct" (color, count)}. Caller deletes. */
struct cJSON *eval_scores_json(const struct eval *e);
/* Reads a metrics object as --json writes it (with "per_sample") into E,
 * which must be fresh, and checks that its metrics are those of its
 * scores. -1 with a message naming WHERE and the entry or key on failure. */
int eval_load_metrics(struct eval *e, const struct cJSON *metrics, const char *where);
/* The official POPE files: questions JSON lines ({"question_id", "image",
 * "text", "label"}, optional "category") and answers JSON lines matched by
 * line order ({"text"} or {"answer"}). The split is the question's
 * "category", else random/popular/adversarial when the question file's name
 * says so, else "pope". -1 with a message naming file and line. */
int eval_pope_files(struct eval *e, const char *questions, const char *answers);

/* The counts every metric is a ratio of, as doubles so that a bootstrap's
 * weights can scale them. */
enum { EVAL_TP, EVAL_FP, EVAL_TN, EVAL_FN };
struct eval_tally {
	double pope[EVAL_MAX_SPLITS][4]; /* per split of struct eval: EVAL_TP.. */
	double chair_n, chair_hall_caps, chair_mentions, chair_hall_mentions;
	double chair_truth, chair_covered;
	double color_n, color_ok, count_n, count_ok;
};
/* Adds score S with weight W to T. */
void eval_tally_add(struct eval_tally *t, const struct eval_score *s, double w);

/* The rate metrics, each a function of a tally. */
enum eval_metric {
	EVAL_POPE_ACCURACY, EVAL_POPE_PRECISION, EVAL_POPE_RECALL, EVAL_POPE_F1, EVAL_POPE_YES_RATIO,
	EVAL_CHAIR_S, EVAL_CHAIR_I, EVAL_CHAIR_RECALL, EVAL_COLOR_ACCURACY, EVAL_COUNT_ACCURACY,
	EVAL_NMETRICS
};
/* Metric M of T (POPE ones of split SPLIT); a ratio with nothing below the
 * line is 0, as in the metrics object. */
double eval_metric_value(const struct eval_tally *t, enum eval_metric m, int split);
/* Where M sits in the metrics object: section ("pope", "chair", "color",
 * "count") and key ("accuracy", "chair_s", ...). */
void eval_metric_name(enum eval_metric m, const char **section, const char **key);

/* The metrics object: {"samples": N, "pope": {SPLIT: {n, accuracy,
 * precision, recall, f1, yes_ratio, tp, fp, tn, fn}}, "chair": {n, chair_s,
 * chair_i, recall, mentions, hallucinated}, "color": {n, correct, accuracy},
 * "count": {...}}; sections without samples are left out. Caller deletes. */
struct cJSON *eval_metrics(const struct eval *e);
/* The readable table of METRICS; nothing for empty metrics. */
void eval_table(struct buf *out, const struct cJSON *metrics);

#endif
