/* test_augment — recipes, the pixel ops against PIL/torchvision outputs
 * (tests/fixtures/image, make.py), the diffusion schedule against torch's
 * cumprod, RandomResizedCrop's box rules, aug.json, and the tensor-space
 * noise against a naive reference. Run from the top of the tree. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "augment.h"
#include "tap.h"
#include "util.h"

#define FIX "tests/fixtures/image/"

static int load(struct image *im, const char *name)
{
	char path[256];
	size_t len;
	const char *err;
	snprintf(path, sizeof(path), FIX "%s", name);
	unsigned char *buf = read_file(path, &len);
	if (!buf || image_decode(im, buf, len, &err) < 0) {
		tap_ok(0, "load %s", path);
		free(buf);
		return -1;
	}
	free(buf);
	return 0;
}

static void copy(struct image *dst, const struct image *src)
{
	image_alloc(dst, src->w, src->h);
	memcpy(dst->px, src->px, (size_t)src->w * src->h * 3);
}

static int same_as(const struct image *a, const char *name, int tol, const char *what)
{
	struct image b;
	if (load(&b, name) < 0)
		return 0;
	int worst = a->w == b.w && a->h == b.h ? 0 : 256;
	long wi = 0, ndiff = 0;
	for (long i = 0; worst < 256 && i < (long)a->w * a->h * 3; i++) {
		int d = abs(a->px[i] - b.px[i]);
		ndiff += d != 0;
		if (d > worst)
			worst = d, wi = i;
	}
	int ok = tap_ok(worst <= tol, "%s matches torchvision/PIL (%ld bytes differ, max %d)",
			what, ndiff, worst);
	if (!ok && worst < 256)
		tap_diag("worst at x=%ld y=%ld c=%ld: got %d, PIL %d", (wi / 3) % a->w,
			 (wi / 3) / a->w, wi % 3, a->px[wi], b.px[wi]);
	image_release(&b);
	return ok;
}

static void test_pixel_ops(void)
{
	struct image src, im;
	image_init(&im);
	if (load(&src, "src.png") < 0)
		return;
	static const float f1[] = {0.6f, 1.37f};
	static const char *f1s[] = {"0.6", "1.37"};
	char name[64], what[64];
	for (int i = 0; i < 2; i++) {
		copy(&im, &src);
		augment_brightness(&im, f1[i]);
		snprintf(name, sizeof(name), "src-brightness-%s.png", f1s[i]);
		snprintf(what, sizeof(what), "brightness %s", f1s[i]);
		same_as(&im, name, 0, what);
		copy(&im, &src);
		augment_contrast(&im, f1[i]);
		snprintf(name, sizeof(name), "src-contrast-%s.png", f1s[i]);
		snprintf(what, sizeof(what), "contrast %s", f1s[i]);
		same_as(&im, name, 0, what);
		copy(&im, &src);
		augment_saturation(&im, f1[i]);
		snprintf(name, sizeof(name), "src-saturation-%s.png", f1s[i]);
		snprintf(what, sizeof(what), "saturation %s", f1s[i]);
		same_as(&im, name, 0, what);
	}
	static const float h[] = {-0.09f, 0.07f};
	static const char *hs[] = {"-0.09", "0.07"};
	for (int i = 0; i < 2; i++) {
		copy(&im, &src);
		augment_hue(&im, h[i]);
		snprintf(name, sizeof(name), "src-hue-%s.png", hs[i]);
		snprintf(what, sizeof(what), "hue %s", hs[i]);
		same_as(&im, name, 1, what);
	}
	copy(&im, &src);
	augment_grayscale(&im);
	same_as(&im, "src-gray.png", 0, "grayscale");
	static const float r[] = {0.1f, 0.7f, 1.93f};
	static const char *rs[] = {"0.1", "0.7", "1.93"};
	for (int i = 0; i < 3; i++) {
		copy(&im, &src);
		augment_gaussian_blur(&im, r[i]);
		snprintf(name, sizeof(name), "src-blur-%s.png", rs[i]);
		snprintf(what, sizeof(what), "gaussian blur radius %s", rs[i]);
		same_as(&im, name, 0, what);
	}
	/* A flat image stays flat under every blur (weights sum to 2^24). */
	image_alloc(&im, 9, 4);
	memset(im.px, 200, 9 * 4 * 3);
	augment_gaussian_blur(&im, 1.93f);
	int flat = 1;
	for (int i = 0; i < 9 * 4 * 3; i++)
		flat &= im.px[i] == 200;
	tap_ok(flat, "blur keeps a flat image flat");

	copy(&im, &src);
	augment_hflip(&im);
	int mirrored = 1;
	for (int y = 0; y < src.h; y++)
		for (int x = 0; x < src.w; x++)
			mirrored &= !memcmp(im.px + (y * src.w + x) * 3,
					    src.px + (y * src.w + src.w - 1 - x) * 3, 3);
	tap_ok(mirrored, "hflip mirrors every row");
	image_release(&im);
	image_release(&src);
}

static void test_alpha_bar(void)
{
	/* torch.cumprod(1 - betas, 0)[t], torch 1.13 in float64:
	 * betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5
	 * and torch.linspace(1e-4, 0.02, 1000). (float32 torch agrees to 1e-6.) */
	static const int ts[5] = {0, 200, 500, 800, 999};
	static const float sig[5] = {0.9999776616f, 0.9877952194f, 0.744798526f, 0.2181018043f,
				     0.0812491943f};
	static const float lin[5] = {0.9999f, 0.6563470055f, 0.07779665837f, 0.00150752106f,
				     4.035829765e-05f};
	float got[5];
	for (int i = 0; i < 5; i++)
		got[i] = (float)augment_alpha_bar(AUGMENT_SIGMOID, ts[i]);
	tap_close(got, sig, 5, 0, 1e-6f, "alpha_bar sigmoid at t=0,200,500,800,999 vs torch");
	for (int i = 0; i < 5; i++)
		got[i] = (float)augment_alpha_bar(AUGMENT_LINEAR, ts[i]);
	tap_close(got, lin, 5, 0, 1e-6f, "alpha_bar linear at t=0,200,500,800,999 vs torch");
}

static void test_parse(void)
{
	struct augment_recipe r;
	int rc = augment_parse(&r, "mocov2");
	int ok = rc == 0 && r.nops == 5 && r.ops[0].kind == AUGMENT_RRC &&
		 r.ops[0].scale[0] == 0.2 && r.ops[0].scale[1] == 1 &&
		 r.ops[1].kind == AUGMENT_JITTER && r.ops[1].p == 0.8 && r.ops[1].hue == 0.1 &&
		 r.ops[2].kind == AUGMENT_GRAY && r.ops[2].p == 0.2 &&
		 r.ops[3].kind == AUGMENT_BLUR && r.ops[3].p == 0.5 &&
		 r.ops[3].sigma[0] == 0.1 && r.ops[3].sigma[1] == 2.0 &&
		 r.ops[4].kind == AUGMENT_HFLIP && r.ops[4].p == 0.5;
	tap_ok(ok, "mocov2 = rrc 0.2-1, jitter p=0.8, gray p=0.2, blur p=0.5, hflip");
	augment_release(&r);

	rc = augment_parse(&r, "diffusion:t=800:schedule=linear:space=pixel,crop:size=0,none");
	ok = rc == 0 && r.nops == 3 && r.ops[0].t == 800 && r.ops[0].schedule == AUGMENT_LINEAR &&
	     r.ops[0].space == AUGMENT_PIXEL && r.ops[1].kind == AUGMENT_RRC &&
	     r.ops[1].scale[0] == 0.01 && r.ops[1].scale[1] == 0.2 && r.ops[1].size == 0 &&
	     r.ops[2].kind == AUGMENT_NONE;
	tap_ok(ok, "diffusion options, crop = rrc 0.01-0.2, none");
	augment_release(&r);

	rc = augment_parse(&r, AUGMENT_DEFAULT);
	tap_ok(rc == 0 && r.nops == 1 && r.ops[0].t == 500 && r.ops[0].space == AUGMENT_NORMALIZED &&
	       r.ops[0].schedule == AUGMENT_SIGMOID, "default: diffusion t=500 sigmoid normalized");
	augment_release(&r);

	static const char *bad[] = {"", "blurr", "rrc:scale=0-1", "rrc:scale=0.5-0.2",
				    "jitter:b", "jitter:q=1", "hflip:p=1.5", "diffusion:t=1000",
				    "diffusion:schedule=cosine", "diffusion:space=latent",
				    "mocov2:p=1", "rrc:size=12.5", "gray:p=abc", "blur:sigma=-1"};
	fprintf(stderr, "test_augment: the messages below are expected:\n");
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		rc = augment_parse(&r, bad[i]);
		tap_ok(rc < 0 && r.ops == NULL && r.nops == 0, "bad recipe '%s' refused", bad[i]);
		if (rc == 0)
			augment_release(&r);
	}
}

static void test_rrc_box(void)
{
	struct rng rg;
	double scale[2] = {0.2, 1}, ratio[2] = {3.0 / 4, 4.0 / 3};
	int box[4], inside = 1, sane = 1;
	for (int i = 0; i < 2000; i++) {
		char key[16];
		snprintf(key, sizeof(key), "%d", i);
		rng_seed(&rg, 1, key, "augment");
		augment_rrc_box(&rg, 64, 48, scale, ratio, box);
		inside &= box[0] >= 0 && box[1] >= 0 && box[2] > 0 && box[3] > 0 &&
			  box[0] + box[2] <= 64 && box[1] + box[3] <= 48;
		double area = (double)box[2] * box[3] / (64 * 48);
		double ar = (double)box[2] / box[3];
		/* Rounding to whole pixels moves area and ratio a little. */
		sane &= area > 0.2 * 0.85 && area <= 1.0 && ar > 0.75 * 0.9 && ar < 4.0 / 3 * 1.1;
	}
	tap_ok(inside, "rrc boxes lie inside the image");
	tap_ok(sane, "rrc boxes keep scale 0.2-1 and ratio 3/4-4/3 (to the pixel)");

	/* No try fits a 100x2 image: centre fallback with h = 2 and
	 * w = round(2 * 4/3) = 3, x = (100 - 3) // 2. */
	rng_seed(&rg, 1, "k", "augment");
	double big[2] = {0.9, 1};
	augment_rrc_box(&rg, 100, 2, big, ratio, box);
	tap_ok(box[0] == 48 && box[1] == 0 && box[2] == 3 && box[3] == 2,
	       "rrc centre fallback on 100x2: {%d,%d,%d,%d}", box[0], box[1], box[2], box[3]);
	/* 5x4 fits the ratio: fallback is the whole image. */
	double none[2] = {1.5, 2};
	augment_rrc_box(&rg, 5, 4, none, ratio, box);
	tap_ok(box[0] == 0 && box[1] == 0 && box[2] == 5 && box[3] == 4,
	       "rrc fallback keeps a 5x4 image whole: {%d,%d,%d,%d}", box[0], box[1], box[2],
	       box[3]);
}

/* The definition of the noise: eps in CHW order from
 * rng_seed(seed, key, "diffusion") by rng_normal_fill, one value at a time. */
static void naive_noise(float *chw, long n, double ab, uint64_t seed, const char *key)
{
	struct rng rg;
	rng_seed(&rg, seed, key, "diffusion");
	for (long i = 0; i < n; i++) {
		float e;
		rng_normal_fill(&rg, &e, 1);
		chw[i] = (float)(sqrt(ab) * chw[i] + sqrt(1 - ab) * e);
	}
}

static void test_apply(void)
{
	struct image src, out, out2, base;
	struct augment_recipe r;
	cJSON *j, *j2;
	int clean;
	image_init(&out), image_init(&out2), image_init(&base);
	if (load(&src, "src.png") < 0)
		return;

	/* Deterministic per (seed, key); other keys differ. */
	augment_parse(&r, "mocov2");
	augment_apply(&r, 5, "000001", &src, &out, NULL, &clean, &j);
	augment_apply(&r, 5, "000001", &src, &out2, NULL, &clean, &j2);
	char *a = cJSON_PrintUnformatted(j), *b = cJSON_PrintUnformatted(j2);
	tap_ok(out.w == 336 && out2.w == 336 && !memcmp(out.px, out2.px, 336 * 336 * 3) &&
	       !strcmp(a, b), "mocov2: same seed and key, same view and aug.json");
	tap_ok(strstr(a, "\"recipe\":\"mocov2\"") && strstr(a, "\"seed\":5") &&
	       strstr(a, "\"space\":\"pixel\"") && strstr(a, "\"preview\":false") &&
	       strstr(a, "\"op\":\"rrc\"") && strstr(a, "\"box\":[") &&
	       strstr(a, "\"op\":\"jitter\"") && strstr(a, "\"op\":\"hflip\""),
	       "aug.json has recipe, seed, space, preview and the ops");
	tap_diag("%s", a);
	free(a), free(b);
	cJSON_Delete(j), cJSON_Delete(j2);
	int differ = 0;
	for (int k = 2; k < 6; k++) {
		char key[16];
		snprintf(key, sizeof(key), "00000%d", k);
		augment_apply(&r, 5, key, &src, &out2, NULL, &clean, &j2);
		differ += memcmp(out.px, out2.px, 336 * 336 * 3) != 0;
		cJSON_Delete(j2);
	}
	tap_ok(differ == 4, "other keys give other views (%d of 4)", differ);
	augment_release(&r);

	/* Replaying the recorded parameters gives the same bytes. */
	augment_parse(&r, "rrc:scale=0.3-0.9:size=20,jitter:p=1,blur:p=1,hflip:p=1");
	augment_apply(&r, 9, "k", &src, &out, NULL, &clean, &j);
	cJSON *ops = cJSON_GetObjectItem(j, "ops");
	cJSON *box = cJSON_GetObjectItem(cJSON_GetArrayItem(ops, 0), "box");
	cJSON *jit = cJSON_GetArrayItem(ops, 1);
	int bx[4];
	for (int i = 0; i < 4; i++)
		bx[i] = cJSON_GetArrayItem(box, i)->valueint;
	struct image cr, rz;
	image_init(&cr), image_init(&rz);
	image_alloc(&cr, bx[2], bx[3]);
	for (int y = 0; y < bx[3]; y++)
		memcpy(cr.px + y * bx[2] * 3, src.px + ((y + bx[1]) * src.w + bx[0]) * 3, bx[2] * 3);
	image_resize(&rz, &cr, 20, 20, RESAMPLE_BILINEAR);
	cJSON *ord = cJSON_GetObjectItem(jit, "order"), *it;
	cJSON_ArrayForEach(it, ord) {
		double f = cJSON_GetObjectItem(jit, it->valuestring)->valuedouble;
		if (!strcmp(it->valuestring, "brightness"))
			augment_brightness(&rz, (float)f);
		else if (!strcmp(it->valuestring, "contrast"))
			augment_contrast(&rz, (float)f);
		else if (!strcmp(it->valuestring, "saturation"))
			augment_saturation(&rz, (float)f);
		else
			augment_hue(&rz, (float)f);
	}
	augment_gaussian_blur(&rz, (float)cJSON_GetObjectItem(cJSON_GetArrayItem(ops, 2),
							      "sigma")->valuedouble);
	augment_hflip(&rz);
	tap_ok(cJSON_GetArraySize(ord) == 4 && out.w == 20 && !memcmp(rz.px, out.px, 20 * 20 * 3),
	       "the view equals the ops replayed from aug.json");
	image_release(&cr), image_release(&rz);
	cJSON_Delete(j);
	augment_release(&r);

	/* p = 0 never applies; none is the identity. */
	augment_parse(&r, "none,hflip:p=0,gray:p=0");
	augment_apply(&r, 1, "x", &src, &out, NULL, &clean, &j);
	tap_ok(out.w == src.w && !memcmp(out.px, src.px, (size_t)src.w * src.h * 3) && clean,
	       "none and p=0 ops leave the image as it was");
	cJSON_Delete(j);
	augment_release(&r);

	/* Pixel-space diffusion: the naive formula, clamped, x * 255 truncated. */
	augment_parse(&r, "diffusion:t=300:space=pixel");
	augment_apply(&r, 3, "key7", &src, &out, NULL, &clean, &j);
	long plane = (long)src.w * src.h;
	float *chw = xmalloc(sizeof(float) * 3 * plane);
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++)
			chw[c * plane + i] = src.px[3 * i + c] / 255.0f;
	naive_noise(chw, 3 * plane, augment_alpha_bar(AUGMENT_SIGMOID, 300), 3, "key7");
	int worst = 0;
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++) {
			float v = chw[c * plane + i];
			v = v < 0 ? 0 : v > 1 ? 1 : v;
			int d = abs((int)(unsigned char)(v * 255.0f) - out.px[3 * i + c]);
			worst = d > worst ? d : worst;
		}
	tap_ok(worst <= 1 && !clean && !cJSON_IsTrue(cJSON_GetObjectItem(j, "preview")) &&
	       augment_base_field(j, 1) && !strcmp(augment_base_field(j, 1), "aug.png"),
	       "pixel diffusion = naive formula (max diff %d), aug.png is the view", worst);
	cJSON_Delete(j);
	augment_release(&r);

	/* Normalized space: aug.json drives augment_apply_tensor; the preview
	 * is that noise on the view's own tensor. */
	augment_parse(&r, "diffusion:t=500");
	augment_apply(&r, 11, "s1", &src, &out, &base, &clean, &j);
	struct preprocess pp;
	preprocess_defaults(&pp, 0);
	float *ref = xmalloc(sizeof(float) * 3 * plane);
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++)
			chw[c * plane + i] = ref[c * plane + i] =
				(src.px[3 * i + c] / 255.0f - pp.mean[c]) / pp.std[c];
	tap_ok(augment_apply_tensor(j, "s1", chw, 3, src.h, src.w) == 0, "apply_tensor accepts aug.json");
	naive_noise(ref, 3 * plane, augment_alpha_bar(AUGMENT_SIGMOID, 500), 11, "s1");
	tap_close(chw, ref, 3 * plane, 1e-5f, 1e-5f, "apply_tensor = naive sqrt(ab) x + sqrt(1-ab) eps");
	worst = 0;
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++) {
			float v = nearbyintf((chw[c * plane + i] * pp.std[c] + pp.mean[c]) * 255.0f);
			v = v < 0 ? 0 : v > 255 ? 255 : v;
			int d = abs((int)v - out.px[3 * i + c]);
			worst = d > worst ? d : worst;
		}
	tap_ok(worst == 0 && clean && cJSON_IsTrue(cJSON_GetObjectItem(j, "preview")) &&
	       augment_base_field(j, 1) == NULL,
	       "preview = the same noise clipped to bytes (max diff %d); start from clean", worst);
	char *s = cJSON_PrintUnformatted(j);
	tap_ok(strstr(s, "\"space\":\"normalized\"") && strstr(s, "\"alpha_bar\":0.7447") &&
	       strstr(s, "\"noise\":{\"seed\":11,\"key\":\"s1\",\"purpose\":\"diffusion\"}"),
	       "aug.json records space, alpha_bar and the noise stream");
	tap_diag("%s", s);
	free(s);
	/* The recorded noise key wins over the one passed in (a renamed
	 * sample keeps its recipe). */
	float *again = xmalloc(sizeof(float) * 3 * plane);
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++)
			again[c * plane + i] = (src.px[3 * i + c] / 255.0f - pp.mean[c]) / pp.std[c];
	augment_apply_tensor(j, "renamed", again, 3, src.h, src.w);
	tap_ok(!memcmp(again, chw, sizeof(float) * 3 * plane), "aug.json's noise key is used");
	free(again);
	cJSON_Delete(j);
	augment_release(&r);

	/* Statistics of the noise on a zero tensor: N(0, 1 - ab). */
	long n = 3 * 64 * 64;
	float *z = xcalloc(n, sizeof(float));
	cJSON *fake = cJSON_Parse("{\"seed\":1,\"ops\":[{\"op\":\"diffusion\",\"t\":800}]}");
	augment_apply_tensor(fake, "kk", z, 3, 64, 64);
	double m = 0, v = 0, ab = augment_alpha_bar(AUGMENT_SIGMOID, 800);
	for (long i = 0; i < n; i++)
		m += z[i], v += (double)z[i] * z[i];
	m /= n, v = v / n - m * m;
	tap_ok(fabs(m) < 0.03 && fabs(v - (1 - ab)) < 0.03,
	       "noise from t alone: mean %.4f var %.4f (want 0, %.4f)", m, v, 1 - ab);
	cJSON_Delete(fake);
	free(z);

	/* Malformed aug.json is refused with a message. */
	static const char *badj[] = {
		"{\"ops\":5}", "{\"ops\":[{\"x\":1}]}",
		"{\"seed\":1,\"ops\":[{\"op\":\"diffusion\"}]}",
		"{\"seed\":1,\"ops\":[{\"op\":\"diffusion\",\"alpha_bar\":2}]}",
		"{\"ops\":[{\"op\":\"diffusion\",\"t\":3}]}",
		"{\"seed\":1,\"ops\":[{\"op\":\"diffusion\",\"t\":3,\"space\":\"latent\"}]}"};
	for (size_t i = 0; i < ARRAY_LEN(badj); i++) {
		cJSON *bj = cJSON_Parse(badj[i]);
		tap_ok(augment_apply_tensor(bj, "k", ref, 3, 1, 1) == -1, "malformed %s refused",
		       badj[i]);
		cJSON_Delete(bj);
	}

	/* rrc then normalized diffusion: the base is the cropped view. */
	augment_parse(&r, "rrc:size=16,diffusion");
	augment_apply(&r, 2, "b", &src, &out, &base, &clean, &j);
	tap_ok(!clean && base.w == 16 && out.w == 16 && augment_base_field(j, 1) &&
	       !strcmp(augment_base_field(j, 1), "aug.base.png") && memcmp(base.px, out.px, 16 * 16 * 3),
	       "rrc + normalized diffusion: start from aug.base.png (the crop without noise)");
	cJSON_Delete(j);
	augment_release(&r);
	tap_ok(augment_base_field(NULL, 1) && augment_base_field(NULL, 0) == NULL,
	       "a third-party aug.png without aug.json is the start");

	free(chw);
	free(ref);
	image_release(&src), image_release(&out), image_release(&out2), image_release(&base);
}

int main(void)
{
	test_parse();
	test_alpha_bar();
	test_pixel_ops();
	test_rrc_box();
	test_apply();
	return tap_done();
}
