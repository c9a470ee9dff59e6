/* test_synth — the synthetic world: shapes, scenes, priors, rendering
 * against analytic areas, POPE negatives, items, vocabulary. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "synth.h"
#include "tap.h"
#include "util.h"

static int shape_id(const char *name)
{
	for (int s = 0; s < SYNTH_NSHAPES; s++)
		if (!strcmp(synth_shapes[s], name))
			return s;
	return -1;
}

static void test_shapes(void)
{
	/* Each shape fits the unit disc, covers a sensible part of it, and
	 * differs from every other shape. */
	enum { G = 200 };
	static unsigned char mask[SYNTH_NSHAPES][G * G];
	for (int s = 0; s < SYNTH_NSHAPES; s++) {
		long in = 0, outside = 0;
		for (int j = 0; j < G; j++)
			for (int i = 0; i < G; i++) {
				double u = -1.2 + 2.4 * (i + 0.5) / G, v = -1.2 + 2.4 * (j + 0.5) / G;
				int k = synth_shape_inside(s, u, v);
				mask[s][j * G + i] = (unsigned char)k;
				in += k;
				outside += k && u * u + v * v > 1.0001;
			}
		double frac = in * (2.4 * 2.4 / (G * G)) / M_PI; /* of the unit disc */
		tap_ok(outside == 0 && frac > 0.25 && frac <= 1.0001,
		       "%s fits the unit disc and fills %.2f of it", synth_shapes[s], frac);
		if (outside)
			tap_diag("%ld grid points outside the disc", outside);
	}
	int distinct = 1;
	for (int a = 0; a < SYNTH_NSHAPES; a++)
		for (int b = a + 1; b < SYNTH_NSHAPES; b++) {
			long diff = 0;
			for (int k = 0; k < G * G; k++)
				diff += mask[a][k] != mask[b][k];
			if (diff < G * G / 20) {
				distinct = 0;
				tap_diag("%s and %s differ on only %ld of %d points", synth_shapes[a],
					 synth_shapes[b], diff, G * G);
			}
		}
	tap_ok(distinct, "every two shapes differ on at least 5%% of the square");
}

static void test_scenes(void)
{
	struct synth_scene a, b;
	int bad = 0, counts[SYNTH_MAX_OBJECTS + 1] = { 0 };
	char key[32];

	synth_scene_draw(&a, 7, "sft/000001");
	synth_scene_draw(&b, 7, "sft/000001");
	tap_ok(!memcmp(&a, &b, sizeof(a)), "same seed and key give the same scene");
	synth_scene_draw(&b, 8, "sft/000001");
	tap_ok(memcmp(&a, &b, sizeof(a)) != 0, "another seed gives another scene");

	for (int k = 0; k < 2000 && bad < 5; k++) {
		snprintf(key, sizeof(key), "test/%06d", k);
		synth_scene_draw(&a, 1, key);
		if (a.n < 1 || a.n > SYNTH_MAX_OBJECTS) {
			tap_diag("%s: %d objects", key, a.n);
			bad++;
			continue;
		}
		counts[a.n]++;
		for (int i = 0; i < a.n; i++) {
			const struct synth_object *o = &a.obj[i];
			if (o->x - o->r < 0 || o->x + o->r > 1 || o->y - o->r < 0 || o->y + o->r > 1) {
				tap_diag("%s: object %d leaves the image", key, i);
				bad++;
			}
			for (int j = i + 1; j < a.n; j++) {
				const struct synth_object *p = &a.obj[j];
				double d = hypot(o->x - p->x, o->y - p->y);
				if (o->shape == p->shape || o->pos == p->pos || d < o->r + p->r) {
					tap_diag("%s: objects %d and %d clash (d %.3f)", key, i, j, d);
					bad++;
				}
			}
		}
	}
	tap_ok(!bad, "2000 scenes: 1-4 objects, distinct shapes and slots, inside, no overlap");
	int all = 1;
	for (int n = 1; n <= SYNTH_MAX_OBJECTS; n++)
		all &= counts[n] > 100;
	tap_ok(all, "every object count occurs (%d %d %d %d)", counts[1], counts[2], counts[3],
	       counts[4]);
}

static void test_priors(void)
{
	const int *pop = synth_popularity();
	int sorted = 1;
	for (int i = 1; i < SYNTH_NSHAPES; i++)
		sorted &= synth_frequency(pop[i - 1]) >= synth_frequency(pop[i]);
	tap_ok(sorted, "popularity is by decreasing frequency (top: %s %.3f)", synth_shapes[pop[0]],
	       synth_frequency(pop[0]));
	tap_ok(synth_frequency(pop[0]) > 1.5 * synth_frequency(pop[SYNTH_NSHAPES - 1]),
	       "the world is uneven: %s %.3f vs %s %.3f", synth_shapes[pop[0]],
	       synth_frequency(pop[0]), synth_shapes[pop[SYNTH_NSHAPES - 1]],
	       synth_frequency(pop[SYNTH_NSHAPES - 1]));
	/* P(partner | shape) is high, and the partner is each shape's most
	 * frequent companion: what adversarial negatives rest on. */
	int ok = 1;
	for (int s = 0; s < SYNTH_NSHAPES; s++) {
		int p = synth_partner[s];
		double cond = synth_cooccurrence(s, p) / synth_frequency(s);
		for (int t = 0; t < SYNTH_NSHAPES; t++)
			if (t != s && t != p && synth_cooccurrence(s, t) >= synth_cooccurrence(s, p)) {
				ok = 0;
				tap_diag("%s: %s co-occurs as often as partner %s", synth_shapes[s],
					 synth_shapes[t], synth_shapes[p]);
			}
		if (cond < 0.5) {
			ok = 0;
			tap_diag("P(%s | %s) = %.2f", synth_shapes[p], synth_shapes[s], cond);
		}
		if (synth_partner[p] != s) {
			ok = 0;
			tap_diag("partner table not symmetric at %s", synth_shapes[s]);
		}
	}
	tap_ok(ok, "partners co-occur most, P(partner | shape) >= 0.5");
}

/* Rendering: the coverage the anti-aliased circle leaves in the image equals
 * its analytic area. */
static void test_render(void)
{
	struct synth_scene sc;
	struct image im, im2;
	memset(&sc, 0, sizeof(sc));
	sc.n = 1;
	sc.obj[0] = (struct synth_object){ .shape = 0, .color = 4, .large = 1, .pos = 4,
		.x = 0.5f, .y = 0.5f, .r = 0.3f, .angle = 0, .rgb = { 0, 0, 250 } };
	sc.bg = SYNTH_BG_PLAIN;
	memcpy(sc.bg1, (unsigned char[]){ 200, 200, 0 }, 3);
	memcpy(sc.bg2, sc.bg1, 3);
	synth_render(&im, &sc, 64);
	double area = 0;
	long partial = 0;
	for (int i = 0; i < 64 * 64; i++) {
		double a = im.px[i * 3 + 2] / 250.0; /* blue goes 0 → 250 with coverage */
		area += a;
		partial += im.px[i * 3 + 2] > 0 && im.px[i * 3 + 2] < 250;
	}
	double want = M_PI * (0.3 * 64) * (0.3 * 64);
	tap_ok(fabs(area - want) < 0.01 * want, "circle coverage %.1f px vs analytic %.1f px", area,
	       want);
	tap_ok(partial > 40, "edges are anti-aliased (%ld partial pixels)", partial);

	free(im.px);
	synth_scene_draw(&sc, 3, "bench/000002");
	synth_render(&im, &sc, 96);
	synth_render(&im2, &sc, 96);
	tap_ok(im.w == 96 && im.h == 96 && !memcmp(im.px, im2.px, 96 * 96 * 3),
	       "rendering is deterministic at --size 96");
	free(im2.px);
	/* Every object shows its colour at its centre (shapes with a solid centre). */
	int ok = 1;
	for (int i = 0; i < sc.n; i++) {
		const struct synth_object *o = &sc.obj[i];
		if (!synth_shape_inside(o->shape, 0, 0))
			continue;
		const unsigned char *p = im.px + ((int)(o->y * 96) * 96 + (int)(o->x * 96)) * 3;
		if (abs(p[0] - o->rgb[0]) + abs(p[1] - o->rgb[1]) + abs(p[2] - o->rgb[2]) > 6) {
			ok = 0;
			tap_diag("object %d (%s): centre %d,%d,%d, colour %d,%d,%d", i,
				 synth_shapes[o->shape], p[0], p[1], p[2], o->rgb[0], o->rgb[1], o->rgb[2]);
		}
	}
	tap_ok(ok, "objects are drawn in their colours");
	free(im.px);
}

static void test_negatives(void)
{
	struct synth_scene sc;
	struct rng r;
	int out[4], ok = 1, seen[SYNTH_NSHAPES] = { 0 };
	const int *pop = synth_popularity();

	memset(&sc, 0, sizeof(sc));
	sc.n = 2;
	sc.obj[0].shape = shape_id("circle");
	sc.obj[1].shape = shape_id("heart");
	rng_seed(&r, 0, "neg", "test");
	int n = synth_pope_negatives(&sc, "adversarial", 3, &r, out);
	/* The partners of circle and heart are square and diamond. */
	tap_ok(n == 3 && ((out[0] == shape_id("square") && out[1] == shape_id("diamond")) ||
			  (out[0] == shape_id("diamond") && out[1] == shape_id("square"))),
	       "adversarial negatives of {circle, heart} start with their partners");
	if (n == 3)
		tap_diag("got %s, %s, %s", synth_shapes[out[0]], synth_shapes[out[1]],
			 synth_shapes[out[2]]);

	n = synth_pope_negatives(&sc, "popular", 3, &r, out);
	int want[3], m = 0;
	for (int i = 0; i < SYNTH_NSHAPES && m < 3; i++)
		if (!synth_scene_has(&sc, pop[i]))
			want[m++] = pop[i];
	tap_ok(n == 3 && !memcmp(out, want, sizeof(want)), "popular negatives are the most frequent absent");

	for (int t = 0; t < 500; t++) {
		n = synth_pope_negatives(&sc, "random", 3, &r, out);
		for (int i = 0; i < n; i++) {
			seen[out[i]]++;
			ok &= !synth_scene_has(&sc, out[i]);
			for (int j = 0; j < i; j++)
				ok &= out[i] != out[j];
		}
	}
	/* 8 absent shapes, 1500 draws: about 187 each. */
	for (int s = 0; s < SYNTH_NSHAPES; s++)
		if (!synth_scene_has(&sc, s) && (seen[s] < 120 || seen[s] > 260)) {
			ok = 0;
			tap_diag("random negative %s drawn %d times of 1500", synth_shapes[s], seen[s]);
		}
	tap_ok(ok, "random negatives are absent, distinct and uniform");
	tap_ok(synth_pope_negatives(&sc, "nonsense", 3, &r, out) == 0, "unknown split gives none");
}

static void test_describe(void)
{
	struct synth_scene sc;
	memset(&sc, 0, sizeof(sc));
	sc.n = 2;
	sc.obj[0] = (struct synth_object){ .shape = shape_id("star"), .color = 4, .large = 0, .pos = 2 };
	sc.obj[1] = (struct synth_object){ .shape = shape_id("circle"), .color = 0, .large = 1, .pos = 0 };
	char *s = synth_describe(&sc, NULL);
	const char *want = "There is a small blue star at the top and a large red circle on the left.";
	tap_ok(!strcmp(s, want), "describe: two objects");
	if (strcmp(s, want))
		tap_diag("got '%s'", s);
	free(s);
	sc.n = 1;
	s = synth_describe(&sc, NULL);
	tap_ok(!strcmp(s, "There is a small blue star at the top."), "describe: one object ('%s')", s);
	free(s);
}

struct vocab_check {
	const char **words;
	int n;
	long pieces, missing;
	char first_missing[64];
};

static void vocab_piece(const char *piece, int len, void *arg)
{
	struct vocab_check *vc = arg;
	char w[64];
	snprintf(w, sizeof(w), "%.*s", len, piece);
	vc->pieces++;
	for (int i = 0; i < vc->n; i++)
		if (!strcmp(vc->words[i], w))
			return;
	if (!vc->missing++)
		snprintf(vc->first_missing, sizeof(vc->first_missing), "%s", w);
}

static void test_items_and_vocab(void)
{
	struct synth_item items[SYNTH_MAX_ITEMS];
	struct synth_scene sc;
	struct vocab_check vc = { 0 };
	int balanced = 1, shapes_ok = 1, fields_ok = 1, tasks[4] = { 0 };

	vc.words = synth_vocab(&vc.n);
	for (int split = 0; split < 3; split++) {
		for (long i = 0; i < 2000 / (split == SYNTH_BENCH ? 10 : 1); i++) {
			int n = synth_items(split, 5, i, &sc, items);
			int yes[3] = { 0 }, no[3] = { 0 };
			for (int k = 0; k < n; k++) {
				cJSON *j = items[k].json;
				cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
				cJSON *t = cJSON_GetObjectItem(j, "truth"), *o = cJSON_GetObjectItem(j, "objects");
				cJSON *task = cJSON_GetObjectItem(j, "task");
				synth_pretokenize(p->valuestring, vocab_piece, &vc);
				if (a)
					synth_pretokenize(a->valuestring, vocab_piece, &vc);
				if ((split == SYNTH_SFT) != (a != NULL) || (split == SYNTH_BENCH) != (t != NULL) ||
				    (split == SYNTH_UNLABELED) != (o == NULL) || !cJSON_IsString(task) ||
				    !cJSON_GetObjectItem(j, "image_id")) {
					if (fields_ok)
						tap_diag("split %d item %s: wrong fields", split, items[k].key);
					fields_ok = 0;
				}
				if (split == SYNTH_SFT) {
					const char *names[] = { "describe", "exist", "color", "count" };
					for (int q = 0; q < 4; q++)
						tasks[q] += !strcmp(task->valuestring, names[q]);
				}
				cJSON *split_j = t ? cJSON_GetObjectItem(t, "split") : NULL;
				if (split_j) {
					int s = !strcmp(split_j->valuestring, "random") ? 0 :
						!strcmp(split_j->valuestring, "popular") ? 1 : 2;
					const char *label = cJSON_GetObjectItem(t, "label")->valuestring;
					int present = synth_scene_has(&sc, shape_id(cJSON_GetObjectItem(t, "object")->valuestring));
					if (present != !strcmp(label, "yes"))
						shapes_ok = 0;
					(!strcmp(label, "yes") ? yes : no)[s]++;
				}
				cJSON_Delete(j);
			}
			for (int s = 0; s < 3 && split == SYNTH_BENCH; s++)
				if (yes[s] != no[s] || yes[s] != (sc.n < 3 ? sc.n : 3)) {
					if (balanced)
						tap_diag("bench %ld split %d: %d yes, %d no, %d objects", i, s,
							 yes[s], no[s], sc.n);
					balanced = 0;
				}
		}
	}
	tap_ok(fields_ok, "sft has answers and objects, unlabeled neither, bench truth");
	tap_ok(balanced, "bench: per image and split, min(n,3) yes and as many no");
	tap_ok(shapes_ok, "bench: POPE labels agree with the scene");
	tap_ok(tasks[0] > tasks[1] && tasks[1] > tasks[2] / 2 && tasks[2] > 0 && tasks[3] > 0,
	       "sft mixes tasks, describe-heavy (%d %d %d %d)", tasks[0], tasks[1], tasks[2], tasks[3]);
	tap_ok(vc.missing == 0, "every word of %ld pieces is in the %d-word vocabulary", vc.pieces, vc.n);
	if (vc.missing)
		tap_diag("%ld missing, first '%s'", vc.missing, vc.first_missing);
	tap_ok(vc.n + 5 <= 256, "vocabulary fits the embedded model (%d + 5 <= 256)", vc.n);
	free(vc.words);

	/* sft uses synonyms now and then, so CHAIR's table means something. */
	int syn = 0;
	for (long i = 0; i < 400; i++) {
		int n = synth_items(SYNTH_SFT, 5, i, &sc, items);
		for (int k = 0; k < n; k++) {
			const char *text = cJSON_GetObjectItem(items[k].json, "answer")->valuestring;
			const char *p = cJSON_GetObjectItem(items[k].json, "prompt")->valuestring;
			syn += strstr(text, " box") || strstr(p, " box") || strstr(text, "moon");
			cJSON_Delete(items[k].json);
		}
	}
	tap_ok(syn > 0, "sft uses synonyms (%d of 400 texts with box/moon)", syn);

	/* Bench keys: unique, "000017-pope-adv-0" style. */
	int n = synth_items(SYNTH_BENCH, 5, 17, &sc, items), uniq = 1, adv = 0;
	for (int k = 0; k < n; k++) {
		for (int m = 0; m < k; m++)
			uniq &= strcmp(items[k].key, items[m].key) != 0;
		adv += !strncmp(items[k].key, "000017-pope-adv-", 16);
		cJSON_Delete(items[k].json);
	}
	tap_ok(uniq && adv == 2 * (sc.n < 3 ? sc.n : 3), "bench keys unique, %d adversarial", adv);
}

/* --turns: one conversation per sft image, checked against the scene. */
static void test_conversations(void)
{
	struct synth_item items[SYNTH_MAX_ITEMS];
	struct synth_scene sc;
	int bad_shape = 0, bad_describe = 0, bad_answer = 0, image_first = 0, n4 = 0, describes = 0;
	int first = 0, last = 0;

	for (long i = 0; i < 300; i++) {
		int n = synth_items_turns(SYNTH_SFT, 5, i, 4, 0, &sc, items);
		cJSON *conv = cJSON_GetObjectItem(items[0].json, "conversations");
		int nt = cJSON_GetArraySize(conv), desc_at = -1;
		bad_shape += n != 1 || nt != 8;
		for (int t = 0; t < nt; t += 2) {
			const char *q = cJSON_GetArrayItem(conv, t)->child->next->valuestring;
			const char *a = cJSON_GetArrayItem(conv, t + 1)->child->next->valuestring;
			image_first += t == 0 && !strncmp(q, "<image>\n", 7);
			bad_shape += strstr(q, "<image>") && t > 0;
			if (!strncmp(a, "There is", 8)) {
				bad_describe += desc_at >= 0;
				desc_at = t;
				describes++;
				int objs = 0;
				for (const char *p = a; (p = strstr(p, " a ")); p++)
					objs++;
				bad_answer += objs != sc.n;
			}
			if (!strncmp(q, "How many", 8)) {
				static const char *const num[] = { "", "One.", "Two.", "Three.", "Four." };
				bad_answer += strcmp(a, num[sc.n]) != 0;
			}
			if (!strncmp(q, "Is there a ", 11)) {
				char word[32] = "";
				sscanf(q + 11, "%31s", word);
				int present = 0;
				for (int k = 0; k < sc.n; k++) {
					const char *nm = synth_shapes[sc.obj[k].shape];
					present |= !strcmp(word, nm);
					for (int y = 0; y < 3 && synth_synonyms[sc.obj[k].shape][y]; y++)
						present |= !strncmp(word, synth_synonyms[sc.obj[k].shape][y],
								    strlen(word));
				}
				bad_answer += strcmp(a, present ? "Yes." : "No.") != 0;
			}
		}
		bad_describe += desc_at > 0 && desc_at != nt - 2;
		first += desc_at == 0;
		last += desc_at == nt - 2;
		n4 += nt == 8;
		cJSON_Delete(items[0].json);
	}
	tap_ok(!bad_shape && n4 == 300, "--turns 4: one item of 4 question/answer turns per image");
	tap_ok(image_first == 300, "the first question, and only it, carries <image> (%d of 300)",
	       image_first);
	tap_ok(!bad_describe && describes > 100 && first > describes / 3 && last > describes / 3,
	       "at most one description, first or last (%d first, %d last)", first, last);
	tap_ok(!bad_answer, "counts and yes/no answers match the scene (%d wrong)", bad_answer);

	/* turns 1 is the single-question sample, byte for byte */
	int same = 1;
	for (long i = 0; i < 50; i++) {
		struct synth_item a[SYNTH_MAX_ITEMS], b[SYNTH_MAX_ITEMS];
		synth_items(SYNTH_SFT, 9, i, &sc, a);
		synth_items_turns(SYNTH_SFT, 9, i, 1, 0, &sc, b);
		char *x = cJSON_PrintUnformatted(a[0].json), *y = cJSON_PrintUnformatted(b[0].json);
		same &= !strcmp(x, y);
		free(x), free(y);
		cJSON_Delete(a[0].json), cJSON_Delete(b[0].json);
	}
	tap_ok(same, "--turns 1 gives the single-question samples");

	/* --tasks keeps only the tasks named */
	int mask = parse_names("--tasks", "exist,color", synth_task_names, SYNTH_N_TASKS), other = 0, exist = 0, color = 0;
	for (long i = 0; i < 100; i++) {
		synth_items_turns(SYNTH_SFT, 5, i, 6, (unsigned)mask, &sc, items);
		cJSON *conv = cJSON_GetObjectItem(items[0].json, "conversations"), *t;
		int k = 0;
		cJSON_ArrayForEach(t, conv) {
			const char *v = cJSON_GetObjectItem(t, "value")->valuestring;
			if (k++ % 2)
				continue;
			if (!strncmp(v, "<image>\n", 8))
				v += 8;
			exist += !strncmp(v, "Is there", 8);
			color += !strncmp(v, "What color", 10);
			other += strncmp(v, "Is there", 8) && strncmp(v, "What color", 10);
		}
		cJSON_Delete(items[0].json);
	}
	tap_ok(!other && exist > color && color > 100,
	       "--tasks exist,color: only those (%d exist, %d color, %d other)", exist, color, other);
	const char *const *tn = synth_task_names;
	tap_ok(parse_names("--tasks", "exist,colour", tn, SYNTH_N_TASKS) < 0 &&
	       parse_names("--tasks", "", tn, SYNTH_N_TASKS) < 0 &&
	       parse_names("--tasks", "describe,exist,color,count", tn, SYNTH_N_TASKS) == 15,
	       "task lists parse, bad names refused");
}

static void test_tokenizer_json(void)
{
	char *text = synth_tokenizer_json();
	cJSON *root = cJSON_Parse(text);
	tap_ok(root != NULL, "tokenizer.json parses");
	cJSON *model = cJSON_GetObjectItem(root, "model");
	cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
	int n = cJSON_GetArraySize(vocab), ids_ok = 1;
	char *seen = calloc((size_t)n, 1);
	cJSON *it;
	cJSON_ArrayForEach(it, vocab) {
		int id = (int)it->valuedouble;
		if (id < 0 || id >= n || seen[id])
			ids_ok = 0;
		else
			seen[id] = 1;
	}
	free(seen);
	tap_ok(ids_ok, "vocab ids are 0..%d, each once", n - 1);
	const char *sp[] = { "<pad>", "<s>", "</s>", "<unk>", "<image>" };
	int sp_ok = 1;
	for (int i = 0; i < 5; i++)
		sp_ok &= cJSON_GetObjectItem(vocab, sp[i]) &&
			 (int)cJSON_GetObjectItem(vocab, sp[i])->valuedouble == i;
	tap_ok(sp_ok, "special tokens <pad>=0 <s>=1 </s>=2 <unk>=3 <image>=4");
	tap_ok(!strcmp(cJSON_GetObjectItem(model, "type")->valuestring, "WordLevel") &&
	       cJSON_GetObjectItem(vocab, "USER") && cJSON_GetObjectItem(vocab, "ASSISTANT") &&
	       cJSON_GetObjectItem(vocab, ":") &&
	       !strcmp(cJSON_GetObjectItem(model, "unk_token")->valuestring, "<unk>") &&
	       cJSON_IsNull(cJSON_GetObjectItem(root, "normalizer")) &&
	       !strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "pre_tokenizer"), "type")->valuestring,
		       "Whitespace"),
	       "WordLevel model, chat words, unk, Whitespace pre-tokenizer");
	cJSON_Delete(root);
	free(text);
}

static int obj_index(const struct synth_scene *sc, int shape)
{
	for (int i = 0; i < sc->n; i++)
		if (sc->obj[i].shape == shape)
			return i;
	return -1;
}

/* --hallucinate / --omit: the annotation the sft texts are written from. */
static void test_annotation(void)
{
	struct synth_opts o = SYNTH_OPTS_INIT, none = SYNTH_OPTS_INIT;
	struct synth_scene sc, a, b;
	char key[32];
	long single[2] = { 0 }, added[2] = { 0 }, small = 0, omitted = 0, large_omitted = 0;
	int bad = 0, same = 1, clean = 1;

	o.hallucinate = 0.8, o.omit = 0.4;
	for (int k = 0; k < 6000; k++) {
		snprintf(key, sizeof(key), "sft/%06d", k);
		synth_scene_draw(&sc, 3, key);
		synth_annotate(&sc, 3, key, &o, &a);
		synth_annotate(&sc, 3, key, &o, &b);
		same &= !memcmp(&a, &b, sizeof(a));
		synth_annotate(&sc, 3, key, &none, &b);
		clean &= !memcmp(&sc, &b, sizeof(sc));
		int kept = 0, large = 0;
		for (int i = 0; i < sc.n; i++)
			large += sc.obj[i].large;
		for (int i = 0; i < sc.n; i++) {
			int j = obj_index(&a, sc.obj[i].shape);
			kept += j >= 0;
			if (j >= 0 && memcmp(&a.obj[j], &sc.obj[i], sizeof(sc.obj[i])))
				bad++, tap_diag("%s: a kept object changed", key);
			if (large && !sc.obj[i].large)
				small++, omitted += j < 0;
			large_omitted += sc.obj[i].large && j < 0;
		}
		/* Every object of the annotation the scene lacks is the absent
		 * partner of one it has, in a slot the scene leaves free. */
		for (int j = 0; j < a.n; j++) {
			if (synth_scene_has(&sc, a.obj[j].shape))
				continue;
			int partner_of = 0, slot_used = 0;
			for (int i = 0; i < sc.n; i++) {
				partner_of |= synth_partner[sc.obj[i].shape] == a.obj[j].shape;
				slot_used |= sc.obj[i].pos == a.obj[j].pos;
			}
			if (!partner_of || slot_used || j < kept)
				bad++, tap_diag("%s: added %s (partner %d, slot used %d, at %d of %d kept)", key,
						synth_shapes[a.obj[j].shape], partner_of, slot_used, j, kept);
		}
		if (a.n < 1 || a.n > SYNTH_MAX_OBJECTS)
			bad++, tap_diag("%s: %d annotated objects", key, a.n);
		if (sc.n == 1) {
			single[sc.obj[0].large]++;
			added[sc.obj[0].large] += a.n == 2;
		}
	}
	tap_ok(same, "an annotation depends only on (seed, key)");
	tap_ok(clean, "without --hallucinate and --omit the annotation is the scene");
	tap_ok(!bad, "kept objects unchanged; added ones are absent partners in free slots, after the others (%d bad)", bad);
	double pl = (double)added[1] / single[1], ps = (double)added[0] / single[0];
	tap_ok(fabs(pl - 0.8) < 0.05 && fabs(ps - 0.4) < 0.06,
	       "--hallucinate 0.8: a lone large shape's partner named %.3f of %ld times, a small one's %.3f of %ld (want 0.8, 0.4)",
	       pl, single[1], ps, single[0]);
	double po = (double)omitted / small;
	tap_ok(fabs(po - 0.4) < 0.03 && !large_omitted,
	       "--omit 0.4: %.3f of %ld small objects left out beside a large one, %ld large ones", po, small,
	       large_omitted);

	/* The sft texts: descriptions and yes/no answers from the annotation,
	 * colour and count from the scene. */
	struct synth_item items[SYNTH_MAX_ITEMS];
	int wrong = 0, hall_yes = 0, with_ann = 0;
	o.turns = 6;
	for (long i = 0; i < 400; i++) {
		synth_items_opts(SYNTH_SFT, 3, i, &o, &sc, items);
		snprintf(key, sizeof(key), "sft/%06ld", i);
		synth_annotate(&sc, 3, key, &o, &a);
		cJSON *conv = cJSON_GetObjectItem(items[0].json, "conversations");
		with_ann += cJSON_GetArraySize(cJSON_GetObjectItem(items[0].json, "annotation")) == a.n &&
			    cJSON_GetArraySize(cJSON_GetObjectItem(items[0].json, "objects")) == sc.n;
		for (int t = 0; t + 1 < cJSON_GetArraySize(conv); t += 2) {
			const char *q = cJSON_GetArrayItem(conv, t)->child->next->valuestring;
			const char *ans = cJSON_GetArrayItem(conv, t + 1)->child->next->valuestring;
			if (!strncmp(q, "<image>\n", 8))
				q += 8;
			char want[256];
			if (!strncmp(ans, "There is", 8)) {
				/* each annotated object, by colour and slot, and no other */
				int objs = 0;
				for (const char *p = ans; (p = strstr(p, " a ")); p++)
					objs++;
				wrong += objs != a.n;
				for (int k = 0; k < a.n; k++) {
					snprintf(want, sizeof(want), " %s ", synth_colors[a.obj[k].color]);
					wrong += !strstr(ans, want) || !strstr(ans, synth_pos_phrases[a.obj[k].pos]);
				}
			} else if (!strncmp(q, "Is there a ", 11)) {
				char word[32] = "";
				sscanf(q + 11, "%31s", word);
				int s = -1;
				for (int k = 0; k < SYNTH_NSHAPES; k++) {
					if (!strcmp(word, synth_shapes[k]))
						s = k;
					for (int y = 0; y < 3 && synth_synonyms[k][y]; y++)
						if (!strncmp(word, synth_synonyms[k][y], strlen(word)))
							s = k;
				}
				int yes = s >= 0 && synth_scene_has(&a, s);
				wrong += strcmp(ans, yes ? "Yes." : "No.") != 0;
				hall_yes += yes && !synth_scene_has(&sc, s);
			} else if (!strncmp(q, "How many", 8)) {
				static const char *const num[] = { "", "One.", "Two.", "Three.", "Four." };
				wrong += strcmp(ans, num[sc.n]) != 0;
			} else if (!strncmp(q, "What color is the ", 18)) {
				int ok = 0;
				for (int k = 0; k < sc.n; k++) {
					snprintf(want, sizeof(want), "%s.", synth_colors[sc.obj[k].color]);
					want[0] = (char)(want[0] - 'a' + 'A');
					ok |= !strcmp(ans, want);
				}
				wrong += !ok;
			}
		}
		cJSON_Delete(items[0].json);
	}
	tap_ok(!wrong && hall_yes > 10 && with_ann == 400,
	       "descriptions and yes/no answers follow the annotation (%d \"Yes.\" to absent partners), colour and count the scene, json.annotation beside json.objects (%d wrong)",
	       hall_yes, wrong);
}

/* --mix, --per-image: the unlabeled split's questions. */
static void test_mix(void)
{
	struct synth_opts o = SYNTH_OPTS_INIT;
	struct synth_item items[SYNTH_MAX_ITEMS];
	struct synth_scene sc;
	const char *err;

	tap_ok(synth_mix_parse(&o, "seva", &err) == 0 && o.per_image == 2 && o.mix[0] == 0 &&
	       o.mix[1] > 0 && o.mix[2] > 0 && o.mix[3] > 0, "--mix seva: short answers, two per image");
	struct synth_opts p = SYNTH_OPTS_INIT;
	int ok = synth_mix_parse(&p, "describe=0.25,count=0.75", &err) == 0 && p.mix[0] == 0.25 &&
		 p.mix[1] == 0 && p.mix[2] == 0 && p.mix[3] == 0.75 && p.per_image == 1;
	static const char *const bad[] = { "exist=-1", "colour=1", "exist=0", "exist", "exist=", "exist=1x", "" };
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		err = NULL;
		if (synth_mix_parse(&p, bad[i], &err) == 0 || !err)
			ok = 0, tap_diag("--mix '%s' accepted", bad[i]);
	}
	tap_ok(ok, "weights parse, bad ones refused with a reason");

	int per[3] = { 0 }, describe = 0, dup = 0, keys = 1, tasks[SYNTH_N_TASKS] = { 0 };
	for (long i = 0; i < 600; i++) {
		int n = synth_items_opts(SYNTH_UNLABELED, 4, i, &o, &sc, items);
		per[n < 3 ? n : 2] += 1;
		for (int k = 0; k < n; k++) {
			char want[32];
			snprintf(want, sizeof(want), "%06ld-%d", i, k);
			keys &= !strcmp(items[k].key, want) &&
				!cJSON_GetObjectItem(items[k].json, "answer");
			const char *t = cJSON_GetObjectItem(items[k].json, "task")->valuestring;
			for (int j = 0; j < SYNTH_N_TASKS; j++)
				tasks[j] += !strcmp(t, synth_task_names[j]);
			describe += !strcmp(t, "describe");
			for (int j = 0; j < k; j++)
				dup += !strcmp(cJSON_GetObjectItem(items[j].json, "prompt")->valuestring,
					       cJSON_GetObjectItem(items[k].json, "prompt")->valuestring);
		}
		for (int k = 0; k < n; k++)
			cJSON_Delete(items[k].json);
	}
	tap_ok(per[0] == 0 && per[2] > 550 && !dup && !describe && keys,
	       "--mix seva: %d images of two questions, %d of one, none repeated, no description, keys ID-K",
	       per[2], per[1]);
	tap_ok(tasks[1] > 300 && tasks[2] > 300 && tasks[3] > 300,
	       "exist, color and count alike (%d, %d, %d)", tasks[1], tasks[2], tasks[3]);

	/* A mix replaces the split's own; one question per image keeps its key. */
	struct synth_opts c = SYNTH_OPTS_INIT;
	synth_mix_parse(&c, "count=1", &err);
	int count_only = 1;
	for (long i = 0; i < 50; i++) {
		int n = synth_items_opts(SYNTH_UNLABELED, 4, i, &c, &sc, items);
		char id[16];
		snprintf(id, sizeof(id), "%06ld", i);
		count_only &= n == 1 && !strcmp(items[0].key, id) &&
			      !strcmp(cJSON_GetObjectItem(items[0].json, "task")->valuestring, "count");
		cJSON_Delete(items[0].json);
	}
	tap_ok(count_only, "--mix count=1: one count question per image, key ID");
}

int main(void)
{
	test_shapes();
	test_scenes();
	test_priors();
	test_render();
	test_negatives();
	test_describe();
	test_items_and_vocab();
	test_conversations();
	test_annotation();
	test_mix();
	test_tokenizer_json();
	return tap_done();
}
