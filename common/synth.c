#include "synth.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

/*
 * The world's tables. Everything the generator says is built from these
 * and the templates below, and synth_vocab() walks the same tables, so the
 * tokenizer can never miss a word.
 */
const char *const synth_shapes[SYNTH_NSHAPES] = {
	"circle", "square", "triangle", "star", "heart",
	"diamond", "hexagon", "cross", "pentagon", "crescent",
};
enum { CIRCLE, SQUARE, TRIANGLE, STAR, HEART, DIAMOND, HEXAGON, CROSS, PENTAGON, CRESCENT };

const char *const synth_synonyms[SYNTH_NSHAPES][4] = {
	[CIRCLE] = { "disc", "ball", NULL },
	[SQUARE] = { "box", "block", NULL },
	[DIAMOND] = { "rhombus", NULL },
	[CROSS] = { "plus sign", NULL },
	[CRESCENT] = { "moon", NULL },
};

/* How often a shape is picked when a scene draws a fresh object (before
 * the co-occurrence priors add partners). Deliberately uneven, so that
 * POPE's "popular" split means something. */
static const double shape_weight[SYNTH_NSHAPES] = {
	[CIRCLE] = 0.20, [SQUARE] = 0.13, [TRIANGLE] = 0.08, [STAR] = 0.15, [HEART] = 0.11,
	[DIAMOND] = 0.06, [HEXAGON] = 0.10, [CROSS] = 0.05, [PENTAGON] = 0.07, [CRESCENT] = 0.05,
};

/*
 * Co-occurrence priors (documented in seva-synth(1)): when a shape is drawn,
 * its partner joins the scene with probability 0.7 and its friend with 0.25.
 *
 *   partners: circle+square, triangle+star, heart+diamond, hexagon+cross,
 *             pentagon+crescent
 *   friends:  square+triangle, star+heart, diamond+hexagon, cross+pentagon,
 *             crescent+circle
 *
 * A model that learns the scenes learns these too and then "sees" the
 * partner when it is absent: the hallucination SeVa should reduce.
 */
const int synth_partner[SYNTH_NSHAPES] = {
	[CIRCLE] = SQUARE, [SQUARE] = CIRCLE, [TRIANGLE] = STAR, [STAR] = TRIANGLE,
	[HEART] = DIAMOND, [DIAMOND] = HEART, [HEXAGON] = CROSS, [CROSS] = HEXAGON,
	[PENTAGON] = CRESCENT, [CRESCENT] = PENTAGON,
};
const int synth_friend[SYNTH_NSHAPES] = {
	[CIRCLE] = CRESCENT, [SQUARE] = TRIANGLE, [TRIANGLE] = SQUARE, [STAR] = HEART,
	[HEART] = STAR, [DIAMOND] = HEXAGON, [HEXAGON] = DIAMOND, [CROSS] = PENTAGON,
	[PENTAGON] = CROSS, [CRESCENT] = CIRCLE,
};

const char *const synth_colors[SYNTH_NCOLORS] = {
	"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
};
static const unsigned char color_rgb[SYNTH_NCOLORS][3] = {
	{ 215, 30, 35 }, { 245, 135, 20 }, { 235, 205, 25 }, { 40, 160, 55 }, { 35, 75, 220 },
	{ 125, 45, 170 }, { 240, 115, 185 }, { 120, 70, 30 }, { 25, 25, 30 },
};

static const char *const sizes[2] = { "small", "large" };

/* Slots, with their centres; descriptions list objects in reading order. */
const char *const synth_positions[SYNTH_NPOS] = { "left", "right", "top", "bottom", "middle" };
const char *const synth_pos_phrases[SYNTH_NPOS] = {
	"on the left", "on the right", "at the top", "at the bottom", "in the middle",
};
static const float pos_xy[SYNTH_NPOS][2] = {
	{ 0.2f, 0.5f }, { 0.8f, 0.5f }, { 0.5f, 0.2f }, { 0.5f, 0.8f }, { 0.5f, 0.5f },
};
static const int reading_rank[SYNTH_NPOS] = { 1, 3, 0, 4, 2 };

static const char *const numbers[SYNTH_MAX_OBJECTS + 1] = { "zero", "one", "two", "three", "four" };
static const double n_weight[SYNTH_MAX_OBJECTS] = { 0.25, 0.30, 0.27, 0.18 };

/* Templates. "%s" is a shape word; the answer templates are in the code
 * below (describe_answer, cap_answer) and in answer_words. */
static const char *const describe_prompts[] = {
	"Describe the image.", "What is in the image?", "What do you see in this picture?",
};
static const char *const exist_prompt = "Is there a %s in the image?";
static const char *const color_prompt = "What color is the %s?";
static const char *const count_prompts[] = {
	"How many objects are there?", "How many shapes are in the image?",
};
static const char *const answer_words[] = {
	"There is a", ",", "and", ".", "Yes.", "No.", "USER", "ASSISTANT", ":",
};

/* Task mixes (describe, exist, color, count). */
enum { T_DESCRIBE, T_EXIST, T_COLOR, T_COUNT, T_N };
_Static_assert(T_N == SYNTH_N_TASKS, "synth.h names every task");
const char *const synth_task_names[SYNTH_N_TASKS] = { "describe", "exist", "color", "count" };
static const double sft_mix[T_N] = { 0.40, 0.30, 0.15, 0.15 };
static const double unlabeled_mix[T_N] = { 0.50, 0.20, 0.15, 0.15 };
/* How often an sft text uses a synonym instead of the shape's name. */
#define P_SYNONYM 0.15

static int pick_weighted(struct rng *r, const double *w, int n)
{
	double total = 0, u;
	for (int i = 0; i < n; i++)
		total += w[i];
	u = rng_uniform(r) * total;
	for (int i = 0; i < n; i++) {
		if (u < w[i])
			return i;
		u -= w[i];
	}
	for (int i = n - 1; i >= 0; i--)
		if (w[i] > 0)
			return i;
	return 0;
}

int synth_split_parse(const char *name)
{
	if (!strcmp(name, "sft"))
		return SYNTH_SFT;
	if (!strcmp(name, "unlabeled"))
		return SYNTH_UNLABELED;
	if (!strcmp(name, "bench"))
		return SYNTH_BENCH;
	return -1;
}

const char *synth_split_name(enum synth_split split)
{
	static const char *const names[] = { "sft", "unlabeled", "bench" };
	return names[split];
}

int synth_scene_has(const struct synth_scene *sc, int shape)
{
	for (int i = 0; i < sc->n; i++)
		if (sc->obj[i].shape == shape)
			return 1;
	return 0;
}

static void add_shape(struct synth_scene *sc, int shape)
{
	sc->obj[sc->n++].shape = shape;
}

static int by_reading_order(const void *a, const void *b)
{
	const struct synth_object *x = a, *y = b;
	return reading_rank[x->pos] - reading_rank[y->pos];
}

static unsigned char clamp_u8(double v)
{
	return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)lrint(v);
}

/* Shapes only, no placement: what the statistics need. */
static void draw_shapes(struct synth_scene *sc, struct rng *r)
{
	int target = 1 + pick_weighted(r, n_weight, SYNTH_MAX_OBJECTS);
	sc->n = 0;
	while (sc->n < target) {
		double w[SYNTH_NSHAPES];
		for (int s = 0; s < SYNTH_NSHAPES; s++)
			w[s] = synth_scene_has(sc, s) ? 0 : shape_weight[s];
		int s = pick_weighted(r, w, SYNTH_NSHAPES);
		add_shape(sc, s);
		double u1 = rng_uniform(r), u2 = rng_uniform(r);
		if (sc->n < SYNTH_MAX_OBJECTS && !synth_scene_has(sc, synth_partner[s]) &&
		    u1 < SYNTH_P_PARTNER)
			add_shape(sc, synth_partner[s]);
		if (sc->n < SYNTH_MAX_OBJECTS && !synth_scene_has(sc, synth_friend[s]) &&
		    u2 < SYNTH_P_FRIEND)
			add_shape(sc, synth_friend[s]);
	}
}

void synth_scene_draw(struct synth_scene *sc, uint64_t seed, const char *key)
{
	struct rng r;
	int slot[SYNTH_NPOS] = { 0, 1, 2, 3, 4 };

	memset(sc, 0, sizeof(*sc));
	rng_seed(&r, seed, key, "scene");
	draw_shapes(sc, &r);
	for (int i = SYNTH_NPOS - 1; i > 0; i--) {
		int j = (int)rng_below(&r, (uint64_t)i + 1), t = slot[i];
		slot[i] = slot[j];
		slot[j] = t;
	}
	for (int i = 0; i < sc->n; i++) {
		struct synth_object *o = &sc->obj[i];
		o->pos = slot[i];
		o->color = (int)rng_below(&r, SYNTH_NCOLORS);
		o->large = rng_uniform(&r) < 0.5;
		/* Slots are 0.3 apart; large shapes (r <= 0.13) and jitter <= 0.02 never overlap. */
		o->r = (float)((o->large ? 0.125 : 0.075) * rng_range(&r, 0.92, 1.04));
		o->x = pos_xy[o->pos][0] + (float)rng_range(&r, -0.02, 0.02);
		o->y = pos_xy[o->pos][1] + (float)rng_range(&r, -0.02, 0.02);
		o->angle = (float)rng_range(&r, -0.2, 0.2);
		for (int c = 0; c < 3; c++)
			o->rgb[c] = clamp_u8(color_rgb[o->color][c] + rng_range(&r, -12, 12));
	}
	qsort(sc->obj, (size_t)sc->n, sizeof(sc->obj[0]), by_reading_order);

	/* Pale, nearly grey backgrounds keep every named colour visible. */
	static const double bg_weight[] = { 0.3, 0.3, 0.25, 0.15 };
	sc->bg = (enum synth_bg)pick_weighted(&r, bg_weight, 4);
	double l1 = rng_range(&r, 185, 240), l2 = rng_range(&r, 185, 240);
	for (int c = 0; c < 3; c++) {
		sc->bg1[c] = clamp_u8(l1 + rng_range(&r, -15, 15));
		sc->bg2[c] = clamp_u8(l2 + rng_range(&r, -15, 15));
	}
	sc->bg_angle = (float)rng_range(&r, 0, 2 * M_PI);
	sc->texture_seed = rng_u64(&r);
}

/* Even-odd point-in-polygon over N vertices (x, y interleaved). */
static int in_polygon(const double *p, int n, double u, double v)
{
	int in = 0;
	for (int i = 0, j = n - 1; i < n; j = i++) {
		double xi = p[2 * i], yi = p[2 * i + 1], xj = p[2 * j], yj = p[2 * j + 1];
		if ((yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi)
			in = !in;
	}
	return in;
}

/* A regular polygon (or star with inner radius RIN) with a vertex pointing up. */
static int in_regular(int n, double rin, double u, double v)
{
	double p[2 * 10];
	int m = rin > 0 ? 2 * n : n;
	for (int i = 0; i < m; i++) {
		double a = -M_PI / 2 + 2 * M_PI * i / m;
		double rad = (rin > 0 && (i & 1)) ? rin : 1.0;
		p[2 * i] = rad * cos(a);
		p[2 * i + 1] = rad * sin(a);
	}
	return in_polygon(p, m, u, v);
}

int synth_shape_inside(int shape, double u, double v)
{
	double x, y, q;
	switch (shape) {
	case CIRCLE:
		return u * u + v * v <= 1;
	case SQUARE:
		return fabs(u) <= 0.7 && fabs(v) <= 0.7;
	case TRIANGLE:
		return in_regular(3, 0, u, v);
	case STAR:
		return in_regular(5, 0.45, u, v);
	case HEART:
		/* (x² + y² − 1)³ − x²y³ ≤ 0, y up, fitted into the unit disc */
		x = u * 1.36;
		y = -v * 1.36 + 0.12;
		q = x * x + y * y - 1;
		return q * q * q - x * x * y * y * y <= 0;
	case DIAMOND:
		return fabs(u) / 0.7 + fabs(v) <= 1;
	case HEXAGON:
		return in_regular(6, 0, v, u); /* flat top */
	case CROSS:
		return (fabs(u) <= 0.28 && fabs(v) <= 0.9) || (fabs(u) <= 0.9 && fabs(v) <= 0.28);
	case PENTAGON:
		return in_regular(5, 0, u, v);
	case CRESCENT:
		return u * u + v * v <= 1 && (u - 0.45) * (u - 0.45) + (v + 0.1) * (v + 0.1) > 0.64;
	}
	return 0;
}

static void render_background(struct image *im, const struct synth_scene *sc)
{
	int S = im->w;
	double ca = cos(sc->bg_angle), sa = sin(sc->bg_angle);
	double period = S / 8.0;
	struct rng noise;

	rng_seed(&noise, sc->texture_seed, "background", "texture");
	for (int y = 0; y < S; y++) {
		for (int x = 0; x < S; x++) {
			unsigned char *p = im->px + ((size_t)y * S + x) * 3;
			/* Projection on the gradient direction, in [0, 1]. */
			double t = 0.5 + ((x + 0.5) / S - 0.5) * ca + ((y + 0.5) / S - 0.5) * sa;
			t = t < 0 ? 0 : t > 1 ? 1 : t;
			double nz = 0;
			switch (sc->bg) {
			case SYNTH_BG_PLAIN:
				t = 0;
				break;
			case SYNTH_BG_GRADIENT:
				break;
			case SYNTH_BG_NOISE:
				t = 0;
				nz = rng_range(&noise, -14, 14);
				break;
			case SYNTH_BG_STRIPES:
				t = fmod(t * S / period, 1.0) < 0.5 ? 0 : 0.35;
				break;
			}
			for (int c = 0; c < 3; c++)
				p[c] = clamp_u8(sc->bg1[c] + t * (sc->bg2[c] - sc->bg1[c]) + nz);
		}
	}
}

#define SS 4 /* supersampling: SS x SS samples per pixel */

static void render_object(struct image *im, const struct synth_object *o)
{
	int S = im->w;
	double cx = o->x * S, cy = o->y * S, R = o->r * S;
	double ca = cos(o->angle), sa = sin(o->angle);
	int x0 = (int)floor(cx - R) - 1, x1 = (int)ceil(cx + R) + 1;
	int y0 = (int)floor(cy - R) - 1, y1 = (int)ceil(cy + R) + 1;

	if (x0 < 0) x0 = 0;
	if (y0 < 0) y0 = 0;
	if (x1 > S - 1) x1 = S - 1;
	if (y1 > S - 1) y1 = S - 1;
	for (int y = y0; y <= y1; y++) {
		for (int x = x0; x <= x1; x++) {
			int hits = 0;
			for (int j = 0; j < SS; j++) {
				for (int i = 0; i < SS; i++) {
					double dx = (x + (i + 0.5) / SS - cx) / R;
					double dy = (y + (j + 0.5) / SS - cy) / R;
					/* rotate the sample into the shape's frame */
					double u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
					hits += synth_shape_inside(o->shape, u, v);
				}
			}
			if (!hits)
				continue;
			double a = (double)hits / (SS * SS);
			unsigned char *p = im->px + ((size_t)y * S + x) * 3;
			for (int c = 0; c < 3; c++)
				p[c] = clamp_u8(p[c] * (1 - a) + o->rgb[c] * a);
		}
	}
}

void synth_render(struct image *im, const struct synth_scene *sc, int size)
{
	im->w = im->h = size;
	im->px = xmalloc((size_t)size * size * 3);
	render_background(im, sc);
	for (int i = 0; i < sc->n; i++)
		render_object(im, &sc->obj[i]);
}

/* The statistics: frequency and co-occurrence over a fixed sample of scenes. */
#define STATS_SCENES 20000
static int stats_ready;
static int popularity[SYNTH_NSHAPES];
static double frequency[SYNTH_NSHAPES];
static double cooc[SYNTH_NSHAPES][SYNTH_NSHAPES];

static int by_frequency(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	if (frequency[x] != frequency[y])
		return frequency[x] < frequency[y] ? 1 : -1;
	return x - y;
}

static void stats_compute(void)
{
	struct synth_scene sc;
	struct rng r;
	char key[32];

	if (stats_ready)
		return;
	for (long k = 0; k < STATS_SCENES; k++) {
		snprintf(key, sizeof(key), "stats/%06ld", k);
		rng_seed(&r, 0, key, "scene");
		draw_shapes(&sc, &r);
		for (int i = 0; i < sc.n; i++) {
			frequency[sc.obj[i].shape] += 1.0 / STATS_SCENES;
			for (int j = 0; j < sc.n; j++)
				if (i != j)
					cooc[sc.obj[i].shape][sc.obj[j].shape] += 1.0 / STATS_SCENES;
		}
	}
	for (int s = 0; s < SYNTH_NSHAPES; s++)
		popularity[s] = s;
	qsort(popularity, SYNTH_NSHAPES, sizeof(int), by_frequency);
	stats_ready = 1;
}

const int *synth_popularity(void)
{
	stats_compute();
	return popularity;
}

double synth_frequency(int shape)
{
	stats_compute();
	return frequency[shape];
}

double synth_cooccurrence(int a, int b)
{
	stats_compute();
	return cooc[a][b];
}

int synth_pope_negatives(const struct synth_scene *sc, const char *split, int k,
			 struct rng *r, int *out)
{
	int absent[SYNTH_NSHAPES], na = 0;
	const int *pop = synth_popularity();

	/* Absent shapes, most frequent first: popular's order and every tie-break. */
	for (int i = 0; i < SYNTH_NSHAPES; i++)
		if (!synth_scene_has(sc, pop[i]))
			absent[na++] = pop[i];
	if (k > na)
		k = na;
	if (!strcmp(split, "random")) {
		for (int i = 0; i < k; i++) {
			int j = i + (int)rng_below(r, (uint64_t)(na - i)), t = absent[i];
			absent[i] = absent[j];
			absent[j] = t;
		}
	} else if (!strcmp(split, "adversarial")) {
		double score[SYNTH_NSHAPES] = { 0 };
		for (int i = 0; i < na; i++)
			for (int j = 0; j < sc->n; j++)
				score[absent[i]] += synth_cooccurrence(sc->obj[j].shape, absent[i]);
		/* Stable insertion sort by score: equal scores keep popularity order. */
		for (int i = 1; i < na; i++) {
			int a = absent[i], j = i;
			while (j > 0 && score[absent[j - 1]] < score[a]) {
				absent[j] = absent[j - 1];
				j--;
			}
			absent[j] = a;
		}
	} else if (strcmp(split, "popular") != 0) {
		return 0;
	}
	memcpy(out, absent, (size_t)k * sizeof(int));
	return k;
}

/* Texts. */

static const char *shape_word(int shape, struct rng *syn_rng)
{
	int nsyn = 0;
	while (nsyn < 3 && synth_synonyms[shape][nsyn])
		nsyn++;
	if (syn_rng && nsyn && rng_uniform(syn_rng) < P_SYNONYM)
		return synth_synonyms[shape][rng_below(syn_rng, (uint64_t)nsyn)];
	return synth_shapes[shape];
}

/* "Red." / "Three.": a table word as a one-word answer. */
static char *cap_answer(const char *word)
{
	char *s = xasprintf("%s.", word);
	if (s[0] >= 'a' && s[0] <= 'z')
		s[0] = (char)(s[0] - 'a' + 'A');
	return s;
}

char *synth_describe(const struct synth_scene *sc, struct rng *syn_rng)
{
	struct buf b;
	buf_init(&b);
	buf_addstr(&b, "There is");
	for (int i = 0; i < sc->n; i++) {
		const struct synth_object *o = &sc->obj[i];
		if (i > 0)
			buf_addstr(&b, i == sc->n - 1 ? " and" : ",");
		buf_printf(&b, " a %s %s %s %s", sizes[o->large], synth_colors[o->color],
			   shape_word(o->shape, syn_rng), synth_pos_phrases[o->pos]);
	}
	buf_addstr(&b, ".");
	return (char *)buf_detach(&b, NULL);
}

static cJSON *objects_json(const struct synth_scene *sc)
{
	cJSON *arr = cJSON_CreateArray();
	for (int i = 0; i < sc->n; i++) {
		const struct synth_object *o = &sc->obj[i];
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "shape", synth_shapes[o->shape]);
		cJSON_AddStringToObject(j, "color", synth_colors[o->color]);
		cJSON_AddStringToObject(j, "size", sizes[o->large]);
		cJSON_AddStringToObject(j, "position", synth_positions[o->pos]);
		cJSON_AddNumberToObject(j, "x", round(o->x * 1000) / 1000);
		cJSON_AddNumberToObject(j, "y", round(o->y * 1000) / 1000);
		cJSON_AddItemToArray(arr, j);
	}
	return arr;
}

static int random_present(const struct synth_scene *sc, struct rng *r)
{
	return sc->obj[rng_below(r, (uint64_t)sc->n)].shape;
}

static int random_absent(const struct synth_scene *sc, struct rng *r)
{
	int absent[SYNTH_NSHAPES], na = 0;
	for (int s = 0; s < SYNTH_NSHAPES; s++)
		if (!synth_scene_has(sc, s))
			absent[na++] = s;
	return absent[rng_below(r, (uint64_t)na)];
}

/* One question of TASK about SC: prompt and answer (malloc'd). Descriptions
 * and existence answers are written from the annotation ANN, colour and
 * count answers from the scene itself (ANN is SC for a clean annotation). */
static void question(const struct synth_scene *sc, const struct synth_scene *ann,
		     const struct synth_scene *desc, int task, struct rng *r, struct rng *syn,
		     char **prompt, char **answer)
{
	int shape, yes;
	*answer = NULL;
	switch (task) {
	case T_DESCRIBE:
		*prompt = xstrdup(describe_prompts[rng_below(r, ARRAY_LEN(describe_prompts))]);
		*answer = synth_describe(desc, syn);
		break;
	case T_EXIST:
		yes = rng_uniform(r) < 0.5;
		shape = yes ? random_present(ann, r) : random_absent(ann, r);
		*prompt = xasprintf(exist_prompt, shape_word(shape, syn));
		*answer = xstrdup(yes ? "Yes." : "No.");
		break;
	case T_COLOR:
		shape = random_present(sc, r);
		for (int i = 0; i < sc->n; i++)
			if (sc->obj[i].shape == shape)
				*answer = cap_answer(synth_colors[sc->obj[i].color]);
		*prompt = xasprintf(color_prompt, shape_word(shape, syn));
		break;
	default:
		*prompt = xstrdup(count_prompts[rng_below(r, ARRAY_LEN(count_prompts))]);
		*answer = cap_answer(numbers[sc->n]);
		break;
	}
}

/* The slot free in both scenes, drawn uniformly from R; -1 if none. */
static int free_slot(const struct synth_scene *a, const struct synth_scene *b, struct rng *r)
{
	int slots[SYNTH_NPOS], n = 0;
	for (int p = 0; p < SYNTH_NPOS; p++) {
		int used = 0;
		for (int i = 0; i < a->n; i++)
			used |= a->obj[i].pos == p;
		for (int i = 0; i < b->n; i++)
			used |= b->obj[i].pos == p;
		if (!used)
			slots[n++] = p;
	}
	uint64_t k = rng_below(r, SYNTH_NPOS); /* drawn always: the stream stays aligned */
	return n ? slots[k % (uint64_t)n] : -1;
}

/* Names the absent COMPANION[shape] of each object of SC in ANN, after
 * the others, as a writer completing a scene from what usually goes with
 * it: with probability P for a large object, P/2 for a small one, in a
 * slot free in both, while there is room for four. Four draws per object
 * whatever P, so the stream stays aligned. */
static void annotate_companions(const struct synth_scene *sc, struct synth_scene *ann,
				const int *companion, double p, struct rng *r)
{
	for (int i = 0; i < sc->n; i++) {
		const struct synth_object *src = &sc->obj[i];
		int shape = companion[src->shape];
		double u = rng_uniform(r), pi = src->large ? p : p / 2;
		int color = (int)rng_below(r, SYNTH_NCOLORS), large = rng_uniform(r) < 0.5;
		int pos = free_slot(sc, ann, r);
		if (u >= pi || pos < 0 || ann->n >= SYNTH_MAX_OBJECTS || synth_scene_has(sc, shape) ||
		    synth_scene_has(ann, shape))
			continue;
		struct synth_object *a = &ann->obj[ann->n++];
		memset(a, 0, sizeof(*a));
		a->shape = shape, a->color = color, a->large = large, a->pos = pos;
		a->x = pos_xy[pos][0], a->y = pos_xy[pos][1];
		a->r = large ? 0.125f : 0.075f;
		memcpy(a->rgb, color_rgb[color], 3);
	}
}

void synth_annotate(const struct synth_scene *sc, uint64_t seed, const char *skey,
		    const struct synth_opts *o, struct synth_scene *ann)
{
	struct rng r;
	*ann = *sc;
	if (!o || (o->omit <= 0 && o->hallucinate <= 0))
		return;
	rng_seed(&r, seed, skey, "annotation");
	/* Small objects left out, as a caption passes over what is not salient;
	 * one draw per object whatever the options, never all of them. */
	ann->n = 0;
	for (int i = 0; i < sc->n; i++) {
		double u = rng_uniform(&r);
		if (!sc->obj[i].large && u < o->omit)
			continue;
		ann->obj[ann->n++] = sc->obj[i];
	}
	if (!ann->n)
		ann->obj[ann->n++] = sc->obj[0];
	annotate_companions(sc, ann, synth_partner, o->hallucinate, &r);
}

void synth_annotate_describe(const struct synth_scene *sc, const struct synth_scene *ann,
			     uint64_t seed, const char *skey, const struct synth_opts *o,
			     struct synth_scene *desc)
{
	struct rng r;
	*desc = *ann;
	if (!o || o->hallucinate_friend <= 0)
		return;
	/* A stream of its own: the annotation above does not change. */
	rng_seed(&r, seed, skey, "padding");
	annotate_companions(sc, desc, synth_friend, o->hallucinate_friend, &r);
}

int synth_mix_parse(struct synth_opts *o, const char *spec, const char **err)
{
	double mix[T_N] = { 0 }, total = 0;
	char *copy, *tok, *save = NULL;
	int rc = 0;

	*err = NULL;
	if (!strcmp(spec, "seva")) {
		/* SeVa's unlabeled data: short-answer VQA, two questions per image. */
		static const double seva[T_N] = { 0, 1, 1, 1 };
		memcpy(o->mix, seva, sizeof(seva));
		o->has_mix = 1;
		o->per_image = 2;
		return 0;
	}
	copy = xstrdup(spec);
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *end;
		int k = -1;
		if (eq)
			*eq = 0;
		for (int t = 0; t < T_N; t++)
			if (!strcmp(tok, synth_task_names[t]))
				k = t;
		double w = eq ? strtod(eq + 1, &end) : -1;
		if (k < 0)
			*err = "a task is not describe, exist, color or count", rc = -1;
		else if (!eq || end == eq + 1 || *end || !(w >= 0 && w <= 1e6))
			*err = "a weight is not a number in [0, 1e6] after '='", rc = -1;
		else
			mix[k] = w, total += w;
	}
	free(copy);
	if (!rc && !(total > 0))
		*err = "every weight is 0", rc = -1;
	if (!rc) {
		memcpy(o->mix, mix, sizeof(mix));
		o->has_mix = 1;
	}
	return rc;
}

static cJSON *truth_new(const char *task)
{
	cJSON *t = cJSON_CreateObject();
	cJSON_AddStringToObject(t, "task", task);
	return t;
}

static struct synth_item *item_add(struct synth_item *items, int *n, const char *key,
				   const char *prompt, const char *task, const char *image_id)
{
	struct synth_item *it = &items[(*n)++];
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->json = cJSON_CreateObject();
	cJSON_AddStringToObject(it->json, "prompt", prompt);
	cJSON_AddStringToObject(it->json, "task", task);
	cJSON_AddStringToObject(it->json, "image_id", image_id);
	return it;
}

static int bench_items(const struct synth_scene *sc, uint64_t seed, const char *skey,
		       const char *id, struct synth_item *items)
{
	static const char *const splits[3] = { "random", "popular", "adversarial" };
	static const char *const tags[3] = { "rnd", "pop", "adv" };
	struct rng q, neg;
	int present[SYNTH_MAX_OBJECTS], n = 0;
	char key[48], *prompt;

	rng_seed(&q, seed, skey, "question");
	rng_seed(&neg, seed, skey, "negative");
	for (int i = 0; i < sc->n; i++)
		present[i] = sc->obj[i].shape;
	for (int i = sc->n - 1; i > 0; i--) {
		int j = (int)rng_below(&q, (uint64_t)i + 1), t = present[i];
		present[i] = present[j];
		present[j] = t;
	}
	/* POPE: up to three objects present, as many absent, per image and split. */
	int k = sc->n < 3 ? sc->n : 3;
	for (int s = 0; s < 3; s++) {
		int shape[6], label[6], negs[3];
		int nn = synth_pope_negatives(sc, splits[s], k, &neg, negs);
		int m = 0;
		for (int i = 0; i < k; i++, m++)
			shape[m] = present[i], label[m] = 1;
		for (int i = 0; i < nn; i++, m++)
			shape[m] = negs[i], label[m] = 0;
		for (int i = m - 1; i > 0; i--) {
			int j = (int)rng_below(&q, (uint64_t)i + 1), t;
			t = shape[i], shape[i] = shape[j], shape[j] = t;
			t = label[i], label[i] = label[j], label[j] = t;
		}
		for (int i = 0; i < m; i++) {
			snprintf(key, sizeof(key), "%s-pope-%s-%d", id, tags[s], i);
			prompt = xasprintf(exist_prompt, synth_shapes[shape[i]]);
			struct synth_item *it = item_add(items, &n, key, prompt, "exist", id);
			cJSON *t = truth_new("pope");
			cJSON_AddStringToObject(t, "split", splits[s]);
			cJSON_AddStringToObject(t, "label", label[i] ? "yes" : "no");
			cJSON_AddStringToObject(t, "object", synth_shapes[shape[i]]);
			cJSON_AddItemToObject(it->json, "truth", t);
			free(prompt);
		}
	}

	snprintf(key, sizeof(key), "%s-describe", id);
	struct synth_item *it = item_add(items, &n, key, describe_prompts[0], "describe", id);
	cJSON *t = truth_new("describe"), *objs = cJSON_CreateArray();
	for (int i = 0; i < sc->n; i++)
		cJSON_AddItemToArray(objs, cJSON_CreateString(synth_shapes[sc->obj[i].shape]));
	cJSON_AddItemToObject(t, "objects", objs);
	cJSON_AddItemToObject(it->json, "truth", t);

	const struct synth_object *o = &sc->obj[rng_below(&q, (uint64_t)sc->n)];
	snprintf(key, sizeof(key), "%s-color", id);
	prompt = xasprintf(color_prompt, synth_shapes[o->shape]);
	it = item_add(items, &n, key, prompt, "color", id);
	free(prompt);
	t = truth_new("color");
	cJSON_AddStringToObject(t, "answer", synth_colors[o->color]);
	cJSON_AddStringToObject(t, "object", synth_shapes[o->shape]);
	cJSON_AddItemToObject(it->json, "truth", t);

	snprintf(key, sizeof(key), "%s-count", id);
	it = item_add(items, &n, key, count_prompts[0], "count", id);
	t = truth_new("count");
	char num[8];
	snprintf(num, sizeof(num), "%d", sc->n);
	cJSON_AddStringToObject(t, "answer", num);
	cJSON_AddItemToObject(it->json, "truth", t);

	for (int i = 0; i < n; i++)
		cJSON_AddItemToObject(items[i].json, "objects", objects_json(sc));
	return n;
}

/* TURNS questions about one sft image as a LLaVA conversation: each image
 * then teaches several answers for one pass of the vision tower. At most
 * one description, first or last (half each): first as the bench asks it,
 * last so that half the short answers cannot be copied from a description
 * earlier in the context and must be read off the image. */
static void sft_conversation(const struct synth_scene *sc, const struct synth_scene *ann,
			     const struct synth_scene *desc, int turns, const double *mix_in, struct rng *q, struct rng *syn,
			     struct synth_item *it)
{
	cJSON *conv = cJSON_CreateArray();
	double mix[T_N];
	int task[8], describe = 0, n = 0;

	memcpy(mix, mix_in, sizeof(mix));
	for (int t = 0; t < turns; t++) {
		int k = pick_weighted(q, mix, T_N);
		if (k == T_DESCRIBE)
			describe = 1, mix[T_DESCRIBE] = 0;
		else
			task[n++] = k;
	}
	if (describe && rng_uniform(q) < 0.5) {
		memmove(task + 1, task, (size_t)n * sizeof *task);
		task[0] = T_DESCRIBE;
		n++;
	} else if (describe) {
		task[n++] = T_DESCRIBE;
	}
	for (int t = 0; t < n; t++) {
		char *prompt, *answer;
		question(sc, ann, desc, task[t], q, syn, &prompt, &answer);
		char *human = t == 0 ? xasprintf("<image>\n%s", prompt) : xstrdup(prompt);
		cJSON *h = cJSON_CreateObject(), *g = cJSON_CreateObject();
		cJSON_AddStringToObject(h, "from", "human");
		cJSON_AddStringToObject(h, "value", human);
		cJSON_AddStringToObject(g, "from", "gpt");
		cJSON_AddStringToObject(g, "value", answer);
		cJSON_AddItemToArray(conv, h);
		cJSON_AddItemToArray(conv, g);
		free(human);
		free(prompt);
		free(answer);
	}
	cJSON_AddItemToObject(it->json, "conversations", conv);
	cJSON_AddItemToObject(it->json, "objects", objects_json(sc));
}

int synth_items(enum synth_split split, uint64_t seed, long index,
		struct synth_scene *sc, struct synth_item *items)
{
	return synth_items_turns(split, seed, index, 1, 0, sc, items);
}

int synth_items_turns(enum synth_split split, uint64_t seed, long index, int turns,
		      unsigned tasks, struct synth_scene *sc, struct synth_item *items)
{
	struct synth_opts o = SYNTH_OPTS_INIT;
	o.turns = turns;
	o.tasks = tasks;
	return synth_items_opts(split, seed, index, &o, sc, items);
}

int synth_items_opts(enum synth_split split, uint64_t seed, long index,
		     const struct synth_opts *o, struct synth_scene *sc, struct synth_item *items)
{
	char id[24], skey[48], *prompt, *answer;
	struct synth_scene ann, desc;
	struct rng q, syn;
	int n = 0;

	snprintf(id, sizeof(id), "%06ld", index);
	/* The split is part of the key: bench images are never sft images. */
	snprintf(skey, sizeof(skey), "%s/%s", synth_split_name(split), id);
	synth_scene_draw(sc, seed, skey);
	if (split == SYNTH_BENCH)
		return bench_items(sc, seed, skey, id, items);

	rng_seed(&q, seed, skey, "question");
	rng_seed(&syn, seed, skey, "synonym");
	double mix[T_N];
	memcpy(mix, o->has_mix ? o->mix : split == SYNTH_SFT ? sft_mix : unlabeled_mix, sizeof(mix));
	for (int k = 0; o->tasks && k < T_N; k++)
		if (!(o->tasks & (1u << k)))
			mix[k] = 0;
	/* Only sft texts are written from an annotation: unlabeled samples
	 * carry no answers, and the bench is the truth. */
	synth_annotate(sc, seed, skey, split == SYNTH_SFT ? o : NULL, &ann);
	synth_annotate_describe(sc, &ann, seed, skey, split == SYNTH_SFT ? o : NULL, &desc);
	int noisy = split == SYNTH_SFT && (o->omit > 0 || o->hallucinate > 0 || o->hallucinate_friend > 0);
	int padded = split == SYNTH_SFT && o->hallucinate_friend > 0;
	if (split == SYNTH_SFT && o->turns > 1) {
		struct synth_item *it = &items[n++];
		snprintf(it->key, sizeof(it->key), "%s", id);
		it->json = cJSON_CreateObject();
		cJSON_AddStringToObject(it->json, "task", "conversation");
		cJSON_AddStringToObject(it->json, "image_id", id);
		sft_conversation(sc, &ann, &desc, o->turns, mix, &q, &syn, it);
		if (noisy)
			cJSON_AddItemToObject(it->json, "annotation", objects_json(&ann));
		if (padded)
			cJSON_AddItemToObject(it->json, "description_annotation", objects_json(&desc));
		return n;
	}
	int per_image = split == SYNTH_UNLABELED && o->per_image > 1 ? o->per_image : 1;
	if (per_image > SYNTH_MAX_ITEMS)
		per_image = SYNTH_MAX_ITEMS;
	for (int k = 0; k < per_image; k++) {
		int task = pick_weighted(&q, mix, T_N), dup = 0;
		question(sc, &ann, &desc, task, &q, split == SYNTH_SFT ? &syn : NULL, &prompt, &answer);
		/* Two questions of one image are never the same question: redraw a
		 * few times, then give up ("at most" per_image). */
		for (int tries = 0; tries < 8; tries++) {
			dup = 0;
			for (int j = 0; j < n; j++)
				dup |= !strcmp(prompt, cJSON_GetObjectItem(items[j].json, "prompt")->valuestring);
			if (!dup)
				break;
			free(prompt), free(answer);
			task = pick_weighted(&q, mix, T_N);
			question(sc, &ann, &desc, task, &q, NULL, &prompt, &answer);
		}
		if (!dup) {
			char key[48];
			if (per_image > 1)
				snprintf(key, sizeof(key), "%s-%d", id, n);
			else
				snprintf(key, sizeof(key), "%s", id);
			struct synth_item *it = item_add(items, &n, key, prompt, synth_task_names[task], id);
			if (split == SYNTH_SFT) {
				cJSON_AddStringToObject(it->json, "answer", answer);
				cJSON_AddItemToObject(it->json, "objects", objects_json(sc));
				if (noisy)
					cJSON_AddItemToObject(it->json, "annotation", objects_json(&ann));
				if (padded)
					cJSON_AddItemToObject(it->json, "description_annotation",
							      objects_json(&desc));
			}
		}
		free(prompt);
		free(answer);
	}
	return n;
}

/* Vocabulary. */

void synth_pretokenize(const char *text, void (*fn)(const char *piece, int len, void *arg),
		       void *arg)
{
	/* \w+|[^\w\s]+ with \w = [A-Za-z0-9_] and any non-ASCII byte. */
#define IS_W(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || \
		 ((c) >= '0' && (c) <= '9') || (c) == '_' || (c) >= 0x80)
#define IS_S(c) ((c) == ' ' || ((c) >= '\t' && (c) <= '\r'))
	const unsigned char *p = (const unsigned char *)text;
	while (*p) {
		const unsigned char *start = p;
		if (IS_S(*p)) {
			p++;
			continue;
		}
		if (IS_W(*p))
			while (*p && IS_W(*p))
				p++;
		else
			while (*p && !IS_W(*p) && !IS_S(*p))
				p++;
		fn((const char *)start, (int)(p - start), arg);
	}
#undef IS_W
#undef IS_S
}

struct wordset {
	char **w;
	int n, cap;
};

static void wordset_add(const char *piece, int len, void *arg)
{
	struct wordset *ws = arg;
	for (int i = 0; i < ws->n; i++)
		if ((int)strlen(ws->w[i]) == len && !memcmp(ws->w[i], piece, (size_t)len))
			return;
	if (ws->n == ws->cap) {
		ws->cap = ws->cap ? 2 * ws->cap : 128;
		ws->w = xrealloc(ws->w, (size_t)ws->cap * sizeof(char *));
	}
	ws->w[ws->n++] = xstrndup(piece, (size_t)len);
}

static void wordset_text(struct wordset *ws, const char *text)
{
	synth_pretokenize(text, wordset_add, ws);
}

/* A template with its "%s" blanked out. */
static void wordset_template(struct wordset *ws, const char *tmpl)
{
	char *s = xasprintf(tmpl, " ");
	wordset_text(ws, s);
	free(s);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

const char **synth_vocab(int *n)
{
	static struct wordset ws;
	if (!ws.n) {
		for (size_t i = 0; i < ARRAY_LEN(describe_prompts); i++)
			wordset_text(&ws, describe_prompts[i]);
		for (size_t i = 0; i < ARRAY_LEN(count_prompts); i++)
			wordset_text(&ws, count_prompts[i]);
		wordset_template(&ws, exist_prompt);
		wordset_template(&ws, color_prompt);
		for (size_t i = 0; i < ARRAY_LEN(answer_words); i++)
			wordset_text(&ws, answer_words[i]);
		for (int s = 0; s < SYNTH_NSHAPES; s++) {
			wordset_text(&ws, synth_shapes[s]);
			for (int j = 0; j < 3 && synth_synonyms[s][j]; j++)
				wordset_text(&ws, synth_synonyms[s][j]);
		}
		for (int c = 0; c < SYNTH_NCOLORS; c++) {
			char *a = cap_answer(synth_colors[c]);
			wordset_text(&ws, synth_colors[c]);
			wordset_text(&ws, a);
			free(a);
		}
		for (int i = 0; i <= SYNTH_MAX_OBJECTS; i++) {
			char *a = cap_answer(numbers[i]);
			wordset_text(&ws, a);
			free(a);
		}
		for (int i = 0; i < 2; i++)
			wordset_text(&ws, sizes[i]);
		for (int i = 0; i < SYNTH_NPOS; i++)
			wordset_text(&ws, synth_pos_phrases[i]);
		qsort(ws.w, (size_t)ws.n, sizeof(char *), cmp_str);
	}
	const char **out = xmalloc((size_t)ws.n * sizeof(char *));
	for (int i = 0; i < ws.n; i++)
		out[i] = ws.w[i];
	*n = ws.n;
	return out;
}

static const char *const specials[] = { "<pad>", "<s>", "</s>", "<unk>", "<image>" };

static cJSON *special_token_step(const char *seq, int type_id)
{
	cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
	cJSON_AddStringToObject(in, "id", seq);
	cJSON_AddNumberToObject(in, "type_id", type_id);
	cJSON_AddItemToObject(o, seq[0] == '<' ? "SpecialToken" : "Sequence", in);
	return o;
}

char *synth_tokenizer_json(void)
{
	cJSON *root = cJSON_CreateObject(), *added = cJSON_CreateArray();
	cJSON *vocab = cJSON_CreateObject(), *model, *pp, *single, *pair, *st, *s;
	int n, id = 0;
	const char **words = synth_vocab(&n);

	cJSON_AddStringToObject(root, "version", "1.0");
	cJSON_AddNullToObject(root, "truncation");
	cJSON_AddNullToObject(root, "padding");
	for (size_t i = 0; i < ARRAY_LEN(specials); i++) {
		cJSON *t = cJSON_CreateObject();
		cJSON_AddNumberToObject(t, "id", (double)i);
		cJSON_AddStringToObject(t, "content", specials[i]);
		cJSON_AddFalseToObject(t, "single_word");
		cJSON_AddFalseToObject(t, "lstrip");
		cJSON_AddFalseToObject(t, "rstrip");
		cJSON_AddFalseToObject(t, "normalized");
		cJSON_AddTrueToObject(t, "special");
		cJSON_AddItemToArray(added, t);
		cJSON_AddNumberToObject(vocab, specials[i], id++);
	}
	cJSON_AddItemToObject(root, "added_tokens", added);
	cJSON_AddNullToObject(root, "normalizer");
	s = cJSON_AddObjectToObject(root, "pre_tokenizer");
	cJSON_AddStringToObject(s, "type", "Whitespace");

	/* LLaMA-style: "<s>" before each sequence. */
	pp = cJSON_AddObjectToObject(root, "post_processor");
	cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
	single = cJSON_AddArrayToObject(pp, "single");
	cJSON_AddItemToArray(single, special_token_step("<s>", 0));
	cJSON_AddItemToArray(single, special_token_step("A", 0));
	pair = cJSON_AddArrayToObject(pp, "pair");
	cJSON_AddItemToArray(pair, special_token_step("<s>", 0));
	cJSON_AddItemToArray(pair, special_token_step("A", 0));
	cJSON_AddItemToArray(pair, special_token_step("<s>", 1));
	cJSON_AddItemToArray(pair, special_token_step("B", 1));
	st = cJSON_AddObjectToObject(pp, "special_tokens");
	s = cJSON_AddObjectToObject(st, "<s>");
	cJSON_AddStringToObject(s, "id", "<s>");
	cJSON_AddItemToObject(s, "ids", cJSON_CreateIntArray((const int[]){ 1 }, 1));
	cJSON_AddItemToObject(s, "tokens", cJSON_CreateStringArray((const char *const[]){ "<s>" }, 1));
	cJSON_AddNullToObject(root, "decoder");

	model = cJSON_AddObjectToObject(root, "model");
	cJSON_AddStringToObject(model, "type", "WordLevel");
	for (int i = 0; i < n; i++)
		cJSON_AddNumberToObject(vocab, words[i], id++);
	cJSON_AddItemToObject(model, "vocab", vocab);
	cJSON_AddStringToObject(model, "unk_token", "<unk>");
	free(words);

	char *text = cJSON_Print(root);
	cJSON_Delete(root);
	if (!text)
		die("out of memory");
	return text;
}
