/* test_featcache — the image feature cache: features read back are the
 * tower's bit for bit, a forward (and its backward) on them equals the
 * forward through the tower, images without features run the tower in the
 * same batch, the tower may not train; a tampered, truncated or foreign
 * file, or one of another precision, is refused naming it (with -k: a
 * counted miss, the file left alone); bf16 storage where the connector
 * rounds its input anyway changes no bit, and would where it does not. */
#include <string.h>
#include <sys/stat.h>

#include "featcache.h"
#include "rng.h"
#include "tap.h"
#include "tensor.h"
#include "testutil.h"
#include "util.h"
#include "vlm.h"

enum { NI = 2, NB = 4, T = 8 };
static int ids[NB][T];
static float wts[NB][T];
static const int *idp[NB];
static const float *wp[NB];
static int lens[NB] = { 6, 8, 7, 5 };
static int image_of[NB] = { 0, 0, 1, -1 };

/* The tiny LLaVA (VC 16: its projector's products are row-wise, f32
 * under any precision), or WIDE: VC = C = 128 on 32-pixel images (FT 64),
 * whose first projector product takes the bf16 path. */
static struct vlm *model(int wide, uint64_t seed, struct vlm_config *c)
{
	tiny_config_base(c);
	if (wide) {
		c->image_size = 32;
		c->v_hidden = c->hidden = 128;
		c->v_inter = 128;
		c->inter = 96;
		c->max_pos = 128;
	}
	tiny_finish(c);
	struct vlm *m = vlm_new(c);
	vlm_init_random(m, seed);
	/* larger than init's 0.02 so the features matter to every logit */
	for (long i = 0; i < m->nparams; i++)
		m->params[i] *= 8;
	tensor_weights_changed(m->params);
	return m;
}

static float *images_of(const struct vlm_config *c, uint64_t seed)
{
	long n = 3L * c->image_size * c->image_size * NI;
	float *p = xmalloc(sizeof(float) * n);
	struct rng r;
	rng_seed(&r, seed, "featcache", "images");
	rng_normal_fill(&r, p, n);
	return p;
}

static struct vlm_batch batch_of(const struct vlm_config *c, const float *images)
{
	struct rng r;
	rng_seed(&r, 11, "featcache", "batch");
	for (int s = 0; s < NB; s++) {
		for (int t = 0; t < lens[s]; t++) {
			ids[s][t] = 3 + (int)rng_below(&r, c->vocab - 4);
			wts[s][t] = t >= 3;
		}
		ids[s][0] = 1;
		if (image_of[s] >= 0)
			ids[s][1] = c->image_token_index;
		idp[s] = ids[s];
		wp[s] = wts[s];
	}
	struct vlm_batch b = { .B = NB, .ids = idp, .len = lens, .weight = wp, .n_images = NI,
			       .images = images, .image_of = image_of };
	return b;
}

static size_t rows_of(const struct vlm_config *c)
{
	return (size_t)c->feat_tokens * c->v_hidden;
}

/* The images' features through the cache FC into FEAT (NI rows), their
 * pointers in GIVEN. */
static int cached(struct featcache *fc, struct vlm *m, const float *images, float *feat,
		  const float **given)
{
	const float *pix[NI];
	size_t img = 3 * (size_t)m->cfg.image_size * m->cfg.image_size;
	for (int i = 0; i < NI; i++) {
		pix[i] = images + i * img;
		given[i] = feat + i * rows_of(&m->cfg);
	}
	return featcache_get(fc, m, pix, NI, feat);
}

/* The files of the cache in tmpdir/DIR, in readdir order: 0, or the count. */
static int files(const char *dir, char names[][256], int max)
{
	char *cmd = xasprintf("ls '%s/%s'", tmpdir, dir);
	FILE *p = popen(cmd, "r");
	int n = 0;
	while (p && n < max && fgets(names[n], 256, p)) {
		names[n][strcspn(names[n], "\n")] = 0;
		n++;
	}
	if (p)
		pclose(p);
	free(cmd);
	return n;
}

static long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The logp of B with (GIVEN) and without features, and after a kept
 * forward and backward the projector's and decoder's gradients. */
static void run(struct vlm *m, struct vlm_batch b, const float **given, float *lp, float *grads)
{
	static const float dlp[NB] = { 1.0f, -0.5f, 0.7f, 0.3f };
	b.features = given;
	if (vlm_forward(m, &b, lp, 1) < 0)
		tap_diag("forward failed");
	vlm_zero_grad(m);
	vlm_backward(m, dlp);
	memcpy(grads, m->grads, sizeof(float) * m->nparams);
}

static void test_f32(void)
{
	struct vlm_config c;
	struct vlm *m = model(0, 5, &c);
	float *im = images_of(&c, 1);
	struct vlm_batch b = batch_of(&c, im);
	size_t rows = rows_of(&c);
	struct featcache fc;
	float *feat = xmalloc(sizeof(float) * NI * rows), *feat2 = xmalloc(sizeof(float) * NI * rows);
	const float *given[NI];
	char *dir = tpath("f32"), names[8][256];

	tensor_set_precision(TENSOR_F32);
	tap_ok(featcache_open(&fc, dir, m, 0) == 0 && !fc.bf16, "a cache opens, f32 features");
	tap_ok(cached(&fc, m, im, feat, given) == 0 && fc.misses == NI && fc.hits == 0,
	       "first use: every image encoded");
	/* the tower alone, as seva-sft's vision pass takes its features */
	if (vlm_forward_features(m, &b, 1) < 0)
		tap_diag("vlm_forward_features failed");
	int ni = 0, nt = 0;
	const float *ref = vlm_image_features(m, &ni, &nt);
	tap_ok(ni == NI && !memcmp(feat, ref, sizeof(float) * NI * rows),
	       "the cache's features are the tower's, bit for bit");
	int nf = files("f32", names, 8);
	char *p0 = xasprintf("%s/%s", dir, names[0]);
	tap_ok(nf == NI && strstr(names[0], ".feat") && file_size(p0) == 128 + 4 * (long)rows,
	       "one file per image, 128 + FT*VC*4 bytes (%d files, %ld bytes)", nf, file_size(p0));
	tap_ok(cached(&fc, m, im, feat2, given) == 0 && fc.hits == NI && fc.misses == NI &&
	       !memcmp(feat, feat2, sizeof(float) * NI * rows), "second use: read back the same");

	/* training forwards: with and without the features, the same bits */
	vlm_train_init(m, VLM_PART_PROJECTOR | VLM_PART_DECODER);
	float lp0[NB], lp1[NB];
	float *g0 = xmalloc(sizeof(float) * m->nparams), *g1 = xmalloc(sizeof(float) * m->nparams);
	run(m, b, NULL, lp0, g0);
	run(m, b, given, lp1, g1);
	tap_ok(!memcmp(lp0, lp1, sizeof lp0), "log-probs with the cached features equal the tower's");
	if (memcmp(lp0, lp1, sizeof lp0))
		tap_diag("logp %.9g vs %.9g", lp0[0], lp1[0]);
	tap_ok(!memcmp(g0, g1, sizeof(float) * m->nparams), "and so do the gradients");
	/* one image given, the other through the tower in the same batch */
	const float *half[NI] = { NULL, given[1] };
	run(m, b, half, lp1, g1);
	tap_ok(!memcmp(lp0, lp1, sizeof lp0) && !memcmp(g0, g1, sizeof(float) * m->nparams),
	       "image 0 through the tower, image 1 given: the same");
	/* the features are what the forward reads: changed, the log-probs move */
	feat2[3] += 0.5f;
	const float *other[NI] = { feat2, given[1] };
	run(m, b, other, lp1, g1);
	tap_ok(lp1[0] != lp0[0] && lp1[2] == lp0[2],
	       "a changed feature changes its image's sequences only (%.9g vs %.9g)", lp1[0], lp0[0]);

	/* the tower trains: refused */
	vlm_train_init(m, VLM_PART_VISION | VLM_PART_PROJECTOR);
	b.features = given;
	capture();
	int r = vlm_forward(m, &b, lp1, 1);
	captured();
	expect_error(r, "features while the tower trains are refused", "vision tower trains", NULL);
	capture();
	r = cached(&fc, m, im, feat2, given);
	captured();
	expect_error(r, "the cache refuses a training tower", "frozen tower", NULL);

	/* tampered: one byte of the payload */
	FILE *f = fopen(p0, "r+b");
	fseek(f, 200, SEEK_SET);
	int ch = fgetc(f);
	fseek(f, 200, SEEK_SET);
	fputc(ch ^ 1, f);
	fclose(f);
	struct vlm *m2 = model(0, 5, &c);
	struct featcache fc2;
	featcache_open(&fc2, dir, m2, 0);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	expect_error(r, "a tampered file is refused, named", names[0], "digest does not match", NULL);
	featcache_close(&fc2);
	featcache_open(&fc2, dir, m2, 1);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	tap_ok(r == 0 && fc2.refused == 1 && fc2.misses == 1 &&
	       !memcmp(feat, feat2, sizeof(float) * NI * rows),
	       "with -k: a counted miss, the tower's features (refused %ld)", fc2.refused);
	f = fopen(p0, "rb");
	fseek(f, 200, SEEK_SET);
	tap_ok(fgetc(f) == (ch ^ 1), "... and the refused file is left as it was");
	fclose(f);
	featcache_close(&fc2);

	/* one image's file under the other's name; a fifo under a name */
	char *p1 = xasprintf("%s/%s", dir, names[1]), *cmd = xasprintf("cp '%s' '%s.keep'", p1, p1);
	if (system(cmd))
		tap_diag("%s failed", cmd);
	free(cmd);
	cmd = xasprintf("cp '%s' '%s'", p0, p1);
	if (system(cmd))
		tap_diag("%s failed", cmd);
	free(cmd);
	featcache_open(&fc2, dir, m2, 0);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	expect_error(r, "a file under another image's name is refused", "another image", NULL);
	featcache_close(&fc2);
	cmd = xasprintf("mv '%s.keep' '%s'", p1, p1);
	if (system(cmd))
		tap_diag("%s failed", cmd);
	free(cmd);
	unlink(p0);
	if (mkfifo(p0, 0644) != 0)
		tap_diag("mkfifo failed");
	featcache_open(&fc2, dir, m2, 0);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	expect_error(r, "a fifo under the name is refused, not waited on", names[0], "not a regular file",
		     NULL);
	featcache_close(&fc2);
	unlink(p0);
	free(p1);
	/* absent again: encoded and written; then truncated */
	featcache_open(&fc2, dir, m2, 0);
	tap_ok(cached(&fc2, m2, im, feat2, given) == 0 && fc2.misses == 1 &&
	       !memcmp(feat, feat2, sizeof(float) * NI * rows), "a removed file is encoded again");
	featcache_close(&fc2);

	/* truncated */
	if (truncate(p0, 4000) != 0)
		tap_diag("truncate failed");
	featcache_open(&fc2, dir, m2, 0);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	expect_error(r, "a truncated file is refused, named", names[0], "truncated", NULL);
	featcache_close(&fc2);
	vlm_free(m2);

	/* another tower: a vision weight differs (not a decoder's) */
	unsigned char d0[32], d1[32];
	m2 = model(0, 5, &c);
	featcache_tower_digest(m2, d0);
	m2->params[m2->nparams - 1] += 1; /* the last tensor: the decoder's */
	featcache_tower_digest(m2, d1);
	tap_ok(!memcmp(d0, d1, 32), "a decoder weight leaves the tower's digest");
	vlm_tensor_find(m2, "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")->data[7] += 1e-3f;
	featcache_tower_digest(m2, d1);
	tap_ok(memcmp(d0, d1, 32) != 0, "a tower weight changes it");
	featcache_open(&fc2, dir, m2, 0);
	capture();
	r = cached(&fc2, m2, im, feat2, given);
	captured();
	expect_error(r, "a file of another tower is refused, named", dir, "another vision tower", NULL);
	featcache_close(&fc2);
	vlm_free(m2);

	/* another precision */
	if (tensor_set_precision(TENSOR_BF16) == 0) {
		m2 = model(0, 5, &c);
		featcache_open(&fc2, dir, m2, 0);
		capture();
		r = cached(&fc2, m2, im, feat2, given);
		captured();
		expect_error(r, "a file made under f32 is refused under bf16", "ran in f32", NULL);
		featcache_close(&fc2);
		vlm_free(m2);
		tensor_set_precision(TENSOR_F32);
	} else {
		tap_ok(1, "# SKIP bf16 is not built in");
	}

	featcache_close(&fc);
	free(p0);
	free(dir);
	free(feat);
	free(feat2);
	free(g0);
	free(g1);
	free(im);
	vlm_free(m);
}

/* bf16 storage: exact where the connector rounds, and not elsewhere. */
static void test_bf16(void)
{
	if (tensor_set_precision(TENSOR_BF16) < 0) {
		tap_ok(1, "# SKIP bf16 is not built in");
		return;
	}
	struct vlm_config c;
	struct vlm *m = model(1, 7, &c);
	float *im = images_of(&c, 2);
	struct vlm_batch b = batch_of(&c, im);
	size_t rows = rows_of(&c);
	struct featcache fc;
	float *feat = xmalloc(sizeof(float) * NI * rows);
	const float *given[NI];
	char *dir = tpath("bf16"), names[8][256];

	tensor_set_precision(TENSOR_F32);
	tap_ok(!vlm_features_bf16_exact(m), "f32: features stay f32");
	tensor_set_precision(TENSOR_BF16);
	tap_ok(vlm_features_bf16_exact(m), "bf16: the wide projector rounds its input (exact)");
	tap_ok(featcache_open(&fc, dir, m, 0) == 0 && fc.bf16, "so the cache stores bf16");
	/* one image at a time, as a generation batch of other images encodes
	 * them: a row's bits do not depend on the batch's other images */
	size_t img = 3 * (size_t)c.image_size * c.image_size;
	int enc = 0;
	for (int i = 0; i < NI; i++) {
		const float *one = im + i * img;
		enc += featcache_get(&fc, m, &one, 1, feat) == 0;
	}
	tap_ok(enc == NI && fc.misses == NI, "encoded one by one");
	int nf = files("bf16", names, 8);
	char *p0 = xasprintf("%s/%s", dir, names[0]);
	tap_ok(nf == NI && file_size(p0) == 128 + 2 * (long)rows, "half the bytes: %ld",
	       file_size(p0));
	featcache_close(&fc);
	featcache_open(&fc, dir, m, 0);
	tap_ok(cached(&fc, m, im, feat, given) == 0 && fc.hits == NI, "read back");
	vlm_train_init(m, VLM_PART_PROJECTOR | VLM_PART_DECODER);
	float lp0[NB], lp1[NB];
	float *g0 = xmalloc(sizeof(float) * m->nparams), *g1 = xmalloc(sizeof(float) * m->nparams);
	run(m, b, NULL, lp0, g0);
	run(m, b, given, lp1, g1);
	tap_ok(!memcmp(lp0, lp1, sizeof lp0), "bf16 features: the log-probs of the tower's, bit for bit");
	if (memcmp(lp0, lp1, sizeof lp0))
		tap_diag("logp %.9g vs %.9g", lp0[0], lp1[0]);
	tap_ok(!memcmp(g0, g1, sizeof(float) * m->nparams), "and the gradients");
	featcache_close(&fc);
	free(g0);
	free(g1);
	free(feat);
	free(im);
	free(p0);
	free(dir);
	vlm_free(m);

	/* the tiny model's row-wise projector reads f32: bf16 features would
	 * move it, which is why the cache keeps them f32 there */
	m = model(0, 5, &c);
	im = images_of(&c, 1);
	b = batch_of(&c, im);
	rows = rows_of(&c);
	tap_ok(!vlm_features_bf16_exact(m), "bf16, row-wise projector: not exact");
	if (vlm_forward_features(m, &b, 1) < 0)
		tap_diag("vlm_forward_features failed");
	int ni, nt;
	const float *ref = vlm_image_features(m, &ni, &nt);
	feat = xmalloc(sizeof(float) * NI * rows);
	for (size_t i = 0; i < NI * rows; i++)
		feat[i] = bf16_to_f32(f32_to_bf16(ref[i]));
	given[0] = feat;
	given[1] = feat + rows;
	b.features = NULL;
	vlm_forward(m, &b, lp0, 0);
	b.features = given;
	vlm_forward(m, &b, lp1, 0);
	tap_ok(memcmp(lp0, lp1, sizeof lp0) != 0,
	       "there bf16-rounded features change the log-probs (%.9g vs %.9g)", lp1[0], lp0[0]);
	tensor_set_precision(TENSOR_F32);
	free(feat);
	free(im);
	vlm_free(m);
}

int main(void)
{
	make_tmpdir("/tmp/test_featcache.XXXXXX");
	test_f32();
	test_bf16();
	remove_tmpdir();
	return tap_done();
}
