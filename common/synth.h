/* synth — the embedded synthetic world (DESIGN sec. 5): scenes of shapes
 * with colours, sizes and positions on varied backgrounds, co-occurrence
 * priors, the text of every question and answer, the POPE negatives, and the
 * embedded model's tokenizer.json. Uses rng, util and cJSON; no records: the
 * caller turns items into samples. Every draw comes from
 * rng_seed(seed, "SPLIT/KEY", purpose), so an image depends only on
 * (seed, split, index). */
#ifndef SEVA_SYNTH_H
#define SEVA_SYNTH_H

#include <stdint.h>

#include "image.h"

struct cJSON;

enum { SYNTH_NSHAPES = 10, SYNTH_NCOLORS = 9, SYNTH_NPOS = 5, SYNTH_MAX_OBJECTS = 4 };

/* The objects of the world (like COCO's categories) and their attributes. */
extern const char *const synth_shapes[SYNTH_NSHAPES];
extern const char *const synth_colors[SYNTH_NCOLORS];
extern const char *const synth_positions[SYNTH_NPOS];   /* "left", ..., "middle" */
extern const char *const synth_pos_phrases[SYNTH_NPOS]; /* "on the left", ... */
/* Other words the world uses for a shape (NULL-terminated; at most 3);
 * sft answers use them now and then, CHAIR maps them back. */
extern const char *const synth_synonyms[SYNTH_NSHAPES][4];
/* Co-occurrence priors: PARTNER[s] is added with probability
 * SYNTH_P_PARTNER when s is drawn, FRIEND[s] with SYNTH_P_FRIEND. */
extern const int synth_partner[SYNTH_NSHAPES];
extern const int synth_friend[SYNTH_NSHAPES];
#define SYNTH_P_PARTNER 0.7
#define SYNTH_P_FRIEND 0.25

enum synth_split { SYNTH_SFT, SYNTH_UNLABELED, SYNTH_BENCH };
/* "sft", "unlabeled", "bench" → the enum; -1 if unknown. */
int synth_split_parse(const char *name);
const char *synth_split_name(enum synth_split split);

struct synth_object {
	int shape, color, large, pos;
	float x, y;      /* centre, as a fraction of the side */
	float r;         /* circumradius, as a fraction of the side */
	float angle;     /* rotation in radians */
	unsigned char rgb[3];
};

enum synth_bg { SYNTH_BG_PLAIN, SYNTH_BG_GRADIENT, SYNTH_BG_NOISE, SYNTH_BG_STRIPES };

struct synth_scene {
	int n;
	struct synth_object obj[SYNTH_MAX_OBJECTS]; /* in reading order (top, left, middle, right, bottom) */
	enum synth_bg bg;
	unsigned char bg1[3], bg2[3];
	float bg_angle;
	uint64_t texture_seed;
};

/* Draws the scene of KEY (e.g. "sft/000017") from rng_seed(seed, KEY, "scene"). */
void synth_scene_draw(struct synth_scene *sc, uint64_t seed, const char *key);
/* 1 if SHAPE is in the scene. */
int synth_scene_has(const struct synth_scene *sc, int shape);
/* Renders SC into IM (allocated here as SIZE x SIZE RGB with xmalloc; the
 * caller frees im->px or calls image_release). Anti-aliased by 4x4
 * supersampling. Depends only on SC and SIZE. */
void synth_render(struct image *im, const struct synth_scene *sc, int size);
/* 1 if the point (u, v) of the shape's unit frame (circumradius 1, y down)
 * is inside SHAPE, else 0: one sample of the supersampling. For tests. */
int synth_shape_inside(int shape, double u, double v);

/* The world's statistics, measured once over 20000 scenes drawn with seed 0
 * (independent of -s): shapes by decreasing frequency, and how often each
 * pair appears in one scene (co-occurrence counts, symmetric). */
const int *synth_popularity(void);
double synth_frequency(int shape);
double synth_cooccurrence(int a, int b);

/* POPE negatives: writes K absent shapes to OUT for the split "random"
 * (uniform, drawn from R), "popular" (most frequent absent) or "adversarial"
 * (absent shapes co-occurring most with those present; ties by frequency).
 * Returns the number written (fewer if fewer are absent). */
struct rng;
int synth_pope_negatives(const struct synth_scene *sc, const char *split, int k,
			 struct rng *r, int *out);

#define SYNTH_N_TASKS 4

/* One sample's worth of output: the key and the "json" field. */
#define SYNTH_MAX_ITEMS 24
struct synth_item {
	char key[48];
	struct cJSON *json; /* owned; cJSON_Delete */
};

/* Makes the scene and the items of image INDEX of SPLIT: one item for sft
 * and unlabeled, several for bench (see seva-synth(1)). Returns the number
 * of items; the caller renders SC and deletes each item's json. */
int synth_items(enum synth_split split, uint64_t seed, long index,
		struct synth_scene *sc, struct synth_item *items);
/* The same, but an sft image with TURNS > 1 gives one item whose
 * json.conversations asks TURNS questions (LLaVA's format); TURNS is
 * ignored for the bench. TASKS, a mask over synth_task_names (bit i for
 * synth_task_names[i]; 0: all), keeps only those tasks in the sft and
 * unlabeled mixes. */
int synth_items_turns(enum synth_split split, uint64_t seed, long index, int turns,
		      unsigned tasks, struct synth_scene *sc, struct synth_item *items);

/* Everything that shapes the items of the sft and unlabeled splits
 * (seva-synth(1)); SYNTH_OPTS_INIT is today's world. */
struct synth_opts {
	int turns;            /* sft: questions per conversation (1: one sample per question) */
	unsigned tasks;       /* mask over synth_task_names; 0: all */
	int has_mix;          /* mix[] replaces the split's own task weights */
	double mix[SYNTH_N_TASKS]; /* describe, exist, color, count */
	int per_image;        /* unlabeled: at most this many distinct questions per image */
	/* The sft annotation, from which descriptions and existence answers
	 * are written (as GPT-4 wrote LLaVA's from captions and boxes; colour
	 * and count answers stay true, as LLaVA-1.5's VQA data are
	 * human-labelled): */
	double hallucinate;   /* a large shape's absent partner is named with this
			       * probability, a small one's with half of it */
	double hallucinate_friend; /* descriptions only: then each absent friend (second
				    * partner), the same way */
	double omit;          /* each small object is left out with this probability */
};
#define SYNTH_OPTS_INIT { .turns = 1, .per_image = 1 }
int synth_items_opts(enum synth_split split, uint64_t seed, long index,
		     const struct synth_opts *o, struct synth_scene *sc, struct synth_item *items);
/* The annotation of scene SC (key SKEY, e.g. "sft/000017") under O: a copy
 * with objects left out and absent partners added after the others (in a
 * free slot, colour and size drawn), from rng_seed(seed, SKEY,
 * "annotation") alone. SC itself when O has neither. */
void synth_annotate(const struct synth_scene *sc, uint64_t seed, const char *skey,
		    const struct synth_opts *o, struct synth_scene *ann);
/* What descriptions are written from: ANN (synth_annotate's) padded with
 * each object's absent friend under O->hallucinate_friend, from
 * rng_seed(seed, SKEY, "padding") alone; ANN itself without it. */
void synth_annotate_describe(const struct synth_scene *sc, const struct synth_scene *ann,
			     uint64_t seed, const char *skey, const struct synth_opts *o,
			     struct synth_scene *desc);
/* "describe=0.5,exist=0.2,..." (weights >= 0 of the tasks named, the
 * others 0; not all 0) or "seva" (SeVa's unlabeled data: short-answer
 * questions, exist, color and count alike) into O->mix. Returns 0, or -1
 * with a message in *ERR (static). */
int synth_mix_parse(struct synth_opts *o, const char *spec, const char **err);
extern const char *const synth_task_names[SYNTH_N_TASKS]; /* describe, exist, color, count */

/* Texts (malloc'd). SYN_RNG, when not NULL, swaps in a synonym now and then. */
char *synth_describe(const struct synth_scene *sc, struct rng *syn_rng);

/* Every word of every prompt and answer the world can produce, split as
 * HF's Whitespace pre-tokenizer does (\w+|[^\w\s]+), plus the chat
 * template's "USER", "ASSISTANT", ":"; sorted, unique, malloc'd array of
 * borrowed strings (free the array only). */
const char **synth_vocab(int *n);
/* Splits TEXT as the Whitespace pre-tokenizer does; calls FN per piece. */
void synth_pretokenize(const char *text, void (*fn)(const char *piece, int len, void *arg),
		       void *arg);
/* The embedded model's tokenizer.json (WordLevel), malloc'd JSON text. */
char *synth_tokenizer_json(void);

#endif
