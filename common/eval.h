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

struct eval {
	const struct eval_vocab *vocab; /* borrowed */
	struct eval_pope pope[EVAL_MAX_SPLITS];
	int npope;
	/* CHAIR over description answers */
	long chair_n, chair_hall_caps, chair_mentions, chair_hall_mentions;
	long chair_truth, chair_covered; /* ground-truth objects, and those mentioned */
	long color_n, color_ok, count_n, count_ok;
	long samples;
};

void eval_init(struct eval *e, const struct eval_vocab *vocab);
/* Scores RESPONSE against TRUTH ({"task": "pope"|"describe"|"color"|"count",
 * ...}, see seva-eval(1)). Returns 0, or -1 with *ERR set to a static reason
 * when the truth is malformed (nothing counted then). */
int eval_add(struct eval *e, const struct cJSON *truth, const char *response, const char **err);
/* One POPE answer of split SPLIT with the label LABEL_YES. */
void eval_pope_add(struct eval *e, const char *split, int label_yes, const char *answer);
/* The official POPE files: questions JSON lines ({"question_id", "image",
 * "text", "label"}, optional "category") and answers JSON lines matched by
 * line order ({"text"} or {"answer"}). The split is the question's
 * "category", else random/popular/adversarial when the question file's name
 * says so, else "pope". -1 with a message naming file and line. */
int eval_pope_files(struct eval *e, const char *questions, const char *answers);

/* The metrics object: {"samples": N, "pope": {SPLIT: {n, accuracy,
 * precision, recall, f1, yes_ratio, tp, fp, tn, fn}}, "chair": {n, chair_s,
 * chair_i, recall, mentions, hallucinated}, "color": {n, correct, accuracy},
 * "count": {...}}; sections without samples are left out. Caller deletes. */
struct cJSON *eval_metrics(const struct eval *e);
/* The readable table of METRICS; nothing for empty metrics. */
void eval_table(struct buf *out, const struct cJSON *metrics);
/* Two runs side by side with the difference (AFTER − BEFORE). */
void eval_compare_table(struct buf *out, const struct cJSON *before, const struct cJSON *after);
/* {"before": B, "after": A, "diff": {section: {split: {metric: A − B}}}}. */
struct cJSON *eval_compare_json(const struct cJSON *before, const struct cJSON *after);

#endif
