/* test_image — decode/encode, PIL-compatible resize, pad, crop and the
 * model-input tensor, against PIL's own outputs (tests/fixtures/image,
 * made by make.py there). Run from the top of the tree. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
#include <zlib.h>

#include "image.h"
#include "tap.h"
#include "util.h"

#define FIX "tests/fixtures/image/"

static void set_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static int load(struct image *im, const char *name)
{
	char path[256];
	size_t len;
	const char *err;
	snprintf(path, sizeof(path), FIX "%s", name);
	unsigned char *buf = read_file(path, &len);
	if (!buf) {
		tap_ok(0, "load %s", path);
		return -1;
	}
	int rc = image_decode(im, buf, len, &err);
	free(buf);
	if (rc < 0) {
		tap_ok(0, "decode %s: %s", path, err);
		return -1;
	}
	return 0;
}

/* Compares A with the fixture NAME: same size, every byte within TOL.
 * Prints the worst pixel. Returns the check's result. */
static int same_as(const struct image *a, const char *name, int tol, const char *what)
{
	struct image b;
	if (load(&b, name) < 0)
		return 0;
	if (a->w != b.w || a->h != b.h) {
		tap_ok(0, "%s: size %dx%d, PIL %dx%d", what, a->w, a->h, b.w, b.h);
		image_release(&b);
		return 0;
	}
	int worst = 0;
	long wi = 0, ndiff = 0;
	for (long i = 0; i < (long)a->w * a->h * 3; i++) {
		int d = abs(a->px[i] - b.px[i]);
		ndiff += d != 0;
		if (d > worst)
			worst = d, wi = i;
	}
	int ok = tap_ok(worst <= tol, "%s matches PIL (%s; %ld bytes differ, max %d)", what, name,
			ndiff, worst);
	if (!ok)
		tap_diag("worst at x=%ld y=%ld c=%ld: got %d, PIL %d", (wi / 3) % a->w,
			 (wi / 3) / a->w, wi % 3, a->px[wi], b.px[wi]);
	image_release(&b);
	return ok;
}

/* The definition, for fimage_resize: each output pixel is the separable sum
 * over all inputs of the filter at (i + 0.5 - centre) / fs, normalized, fs
 * the shrink factor (at least 1). Double throughout, no clipping. */
static double naive_filter(double x, int cubic)
{
	x = fabs(x);
	if (!cubic)
		return x < 1 ? 1 - x : 0;
	if (x < 1)
		return (1.5 * x - 2.5) * x * x + 1;
	return x < 2 ? (((x - 5) * x + 8) * x - 4) * -0.5 : 0;
}

static void naive_weights(double *wt, int in, int out, int o, int cubic)
{
	double scale = (double)in / out, fs = scale < 1 ? 1 : scale, sum = 0;
	double centre = (o + 0.5) * scale;
	for (int i = 0; i < in; i++)
		sum += wt[i] = naive_filter((i + 0.5 - centre) / fs, cubic);
	for (int i = 0; i < in; i++)
		wt[i] /= sum;
}

static void naive_resize(float *out, const struct fimage *in, int w, int h, int cubic)
{
	double *wx = xmalloc(sizeof(double) * in->w), *wy = xmalloc(sizeof(double) * in->h);
	for (int y = 0; y < h; y++) {
		naive_weights(wy, in->h, h, y, cubic);
		for (int x = 0; x < w; x++) {
			naive_weights(wx, in->w, w, x, cubic);
			for (int c = 0; c < 3; c++) {
				double s = 0;
				for (int j = 0; j < in->h; j++)
					for (int i = 0; i < in->w; i++)
						s += wy[j] * wx[i] * in->px[(j * in->w + i) * 3 + c];
				out[(y * w + x) * 3 + c] = (float)s;
			}
		}
	}
	free(wx);
	free(wy);
}

static void test_resize(void)
{
	static const char *srcs[] = {"src", "tall"};
	static const int sizes[][2] = {{16, 11}, {61, 40}, {20, 50}, {37, 9}, {5, 3}};
	static const char *modes[] = {"bilinear", "bicubic"};
	for (int s = 0; s < 2; s++) {
		struct image in, out;
		image_init(&out);
		char name[64], src[64];
		snprintf(src, sizeof(src), "%s.png", srcs[s]);
		if (load(&in, src) < 0)
			continue;
		for (int m = 0; m < 2; m++)
			for (int k = 0; k < 5; k++) {
				int w = sizes[k][0], h = sizes[k][1];
				image_resize(&out, &in, w, h, m ? RESAMPLE_BICUBIC : RESAMPLE_BILINEAR);
				snprintf(name, sizeof(name), "%s-%s-%dx%d.png", srcs[s], modes[m], w, h);
				char what[80];
				snprintf(what, sizeof(what), "resize %s %dx%d -> %dx%d %s", srcs[s],
					 in.w, in.h, w, h, modes[m]);
				same_as(&out, name, 1, what);

				/* The float path: the same filter without 8-bit rounding
				 * or clipping between passes, against the definition;
				 * bilinear (no overshoot) also within 1 of PIL. */
				struct fimage fi, fo;
				struct image back;
				fimage_init(&fi), fimage_init(&fo), image_init(&back);
				image_to_float(&fi, &in);
				fimage_resize(&fo, &fi, w, h, m ? RESAMPLE_BICUBIC : RESAMPLE_BILINEAR);
				float *ref = xmalloc(sizeof(float) * w * h * 3);
				naive_resize(ref, &fi, w, h, m);
				snprintf(what, sizeof(what), "fimage_resize %s -> %dx%d %s vs naive",
					 srcs[s], w, h, modes[m]);
				tap_close(fo.px, ref, (long)w * h * 3, 1e-5f, 1e-5f, what);
				free(ref);
				if (!m) {
					image_from_float(&back, &fo);
					snprintf(what, sizeof(what), "fimage_resize %s -> %dx%d %s",
						 srcs[s], w, h, modes[m]);
					same_as(&back, name, 1, what);
				}
				fimage_release(&fi), fimage_release(&fo), image_release(&back);
			}
		image_resize(&out, &in, in.w, in.h, RESAMPLE_BICUBIC);
		tap_ok(out.w == in.w && !memcmp(out.px, in.px, (size_t)in.w * in.h * 3),
		       "resize to the same size copies %s", srcs[s]);

		/* A window resized in place = the window copied out, then
		 * resized: both passes, one, none. */
		static const int boxes[][6] = {{3, 2, 11, 9, 16, 11}, {0, 5, 19, 10, 19, 21},
					       {4, 0, 9, 23, 30, 23}, {2, 3, 7, 8, 7, 8},
					       {1, 1, 15, 17, 5, 3}};
		for (int b = 0; b < 5; b++) {
			const int *bx = boxes[b];
			struct image crop, want;
			image_init(&crop), image_init(&want);
			image_alloc(&crop, bx[2], bx[3]);
			for (int y = 0; y < bx[3]; y++)
				memcpy(crop.px + (size_t)y * bx[2] * 3,
				       in.px + ((size_t)(y + bx[1]) * in.w + bx[0]) * 3, (size_t)bx[2] * 3);
			int exact = 1;
			for (int m = 0; m < 2; m++) {
				image_resize(&want, &crop, bx[4], bx[5], m);
				image_resize_box(&out, &in, bx, bx[4], bx[5], m);
				exact &= out.w == want.w && out.h == want.h &&
					 !memcmp(out.px, want.px, (size_t)want.w * want.h * 3);
			}
			tap_ok(exact, "resize_box %s {%d,%d,%d,%d} -> %dx%d = crop, resize", srcs[s],
			       bx[0], bx[1], bx[2], bx[3], bx[4], bx[5]);
			image_release(&crop), image_release(&want);
		}
		image_release(&in);
		image_release(&out);
	}
}

static void test_pad_crop(void)
{
	struct image in, out;
	image_init(&out);
	static const unsigned char bg1[3] = {122, 116, 104}, bg2[3] = {1, 2, 3};
	if (load(&in, "src.png") == 0) {
		image_pad_square(&out, &in, bg1);
		same_as(&out, "src-square.png", 0, "pad_square wide");
		image_center_crop(&out, &in, 14, 10);
		same_as(&out, "src-crop-14x10.png", 0, "center_crop 14x10");
		image_center_crop(&out, &in, 30, 20);
		same_as(&out, "src-crop-30x20.png", 0, "center_crop 30x20");
		image_release(&in);
	}
	if (load(&in, "tall.png") == 0) {
		image_pad_square(&out, &in, bg2);
		same_as(&out, "tall-square.png", 0, "pad_square tall");
		/* Larger than the image: zero padding around the centred image. */
		image_center_crop(&out, &in, 23, 33);
		int ok = out.w == 23 && out.h == 33 && out.px[0] == 0 &&
			 !memcmp(out.px + (1 * 23 + 2) * 3, in.px, 3);
		tap_ok(ok, "center_crop larger than the image pads with black");
		image_release(&in);
	}
	image_release(&out);
}

static void test_preprocess(void)
{
	struct image in, want, back;
	struct preprocess p;
	image_init(&back);
	if (load(&in, "src.png") < 0)
		return;
	static const struct {
		enum preprocess_mode mode;
		const char *fixture;
	} cases[] = {{PREPROCESS_PAD_RESIZE, "src-pad-16.png"},
		     {PREPROCESS_SHORTEST_CROP, "src-shortest-16.png"}};
	for (int k = 0; k < 2; k++) {
		preprocess_defaults(&p, 16);
		p.mode = cases[k].mode;
		tap_ok(preprocess_side(&p) == 16, "preprocess_side is 16");
		float *t = xmalloc(sizeof(float) * 3 * 16 * 16);
		float *ref = xmalloc(sizeof(float) * 3 * 16 * 16);
		const char *perr;
		tap_ok(image_preprocess(t, &in, &p, &perr) == 0, "preprocess %s", cases[k].fixture);
		if (load(&want, cases[k].fixture) < 0)
			continue;
		for (int c = 0; c < 3; c++)
			for (int i = 0; i < 256; i++)
				ref[c * 256 + i] = (want.px[3 * i + c] / 255.0f - p.mean[c]) / p.std[c];
		tap_close(t, ref, 3 * 256, 1e-5f, 0, cases[k].fixture);
		image_from_tensor(&back, t, 16, &p);
		tap_ok(!memcmp(back.px, want.px, 3 * 256), "image_from_tensor inverts %s",
		       cases[k].fixture);
		image_release(&want);
		free(t);
		free(ref);
	}
	image_release(&in);
	image_release(&back);

	/* A 65535x1 image is 64 Ki pixels, well under the cap; padded to a
	 * square it would be 4 Gi (12.9 GB). Refused by every mode that makes
	 * such an intermediate, before making it; the plain resize does not. */
	struct image wide;
	image_init(&wide);
	image_alloc(&wide, 65535, 1);
	memset(wide.px, 90, (size_t)65535 * 3);
	float *t = xmalloc(sizeof(float) * 3 * 336 * 336);
	const char *why = "";
	static const enum preprocess_mode modes[] = {PREPROCESS_PAD_RESIZE,
						     PREPROCESS_SHORTEST_CROP, PREPROCESS_RESIZE};
	static const char *const want_why[] = {"padded to a square is 65535x65535",
					       "resized to its shortest edge is 22019760x336", NULL};
	for (int k = 0; k < 3; k++) {
		preprocess_defaults(&p, k == 1 ? 336 : 16); /* CLIP's 336 for the crop */
		p.mode = modes[k];
		int rc = image_preprocess(t, &wide, &p, &why);
		if (want_why[k])
			tap_ok(rc < 0 && strstr(why, want_why[k]) && strstr(why, "limit"),
			       "65535x1, mode %d: refused: %s", k, rc < 0 ? why : "(made)");
		else
			tap_ok(rc == 0, "65535x1, plain resize: made (%s)", rc < 0 ? why : "ok");
	}
	/* Just under: 8192x1 pads to exactly the cap. */
	image_alloc(&wide, 8192, 1);
	memset(wide.px, 90, (size_t)8192 * 3);
	preprocess_defaults(&p, 16);
	tap_ok(image_preprocess(t, &wide, &p, &why) == 0, "8192x1 pads to 8192^2, the cap");
	free(t);
	image_release(&wide);
}

static void test_codec(void)
{
	struct image im, dec;
	const char *err = NULL;
	unsigned char *png;
	size_t len;

	/* Encode → decode is lossless, odd sizes included. */
	image_init(&im);
	image_alloc(&im, 7, 5);
	for (int i = 0; i < 7 * 5 * 3; i++)
		im.px[i] = (unsigned char)(i * 37 + 11);
	int enc = image_encode_png(&im, &png, &len);
	tap_ok(enc == 0 && len > 8 && !memcmp(png, "\x89PNG", 4), "encode PNG (%zu bytes)", len);
	int rc = image_decode(&dec, png, len, &err);
	tap_ok(rc == 0 && dec.w == 7 && dec.h == 5 && !memcmp(dec.px, im.px, 7 * 5 * 3),
	       "PNG round trip is exact");
	image_release(&dec);

	/* Our deflate: flat runs, noise over several 256 KiB blocks, gradients,
	 * 1x1; libpng's inflate must give every byte back (PIL/zlib read them in
	 * t2000-augment). */
	static const int dims[][2] = {{1, 1}, {700, 500}, {64, 48}, {300, 2}, {2, 300}};
	for (int k = 0; k < 5; k++) {
		struct image t;
		image_init(&t);
		image_alloc(&t, dims[k][0], dims[k][1]);
		unsigned seed = 12345;
		for (long i = 0; i < (long)t.w * t.h * 3; i++) {
			seed = seed * 1103515245 + 12345;
			long x = (i / 3) % t.w, y = (i / 3) / t.w;
			t.px[i] = k == 1 ? (unsigned char)(seed >> 16)	   /* noise */
				: k == 2 ? (x < 20 ? 7 : (unsigned char)(x * 3 + y)) /* flat + ramp */
				: (unsigned char)(y * 5 + (i % 3) * 80);
		}
		unsigned char *p2;
		size_t l2;
		int e2 = image_encode_png(&t, &p2, &l2);
		int d2 = e2 == 0 ? image_decode(&dec, p2, l2, &err) : -1;
		tap_ok(d2 == 0 && dec.w == t.w && dec.h == t.h &&
		       !memcmp(dec.px, t.px, (size_t)t.w * t.h * 3),
		       "PNG round trip %dx%d (%zu bytes for %ld)", t.w, t.h, l2, (long)t.w * t.h * 3);
		if (d2 == 0)
			image_release(&dec);
		if (e2 == 0)
			free(p2);
		image_release(&t);
	}

	/* Headers that claim 10000 x 10000 (over IMAGE_MAX_PIXELS) and 60000 x
	 * 60000 are refused before decoding, with the IHDR CRC made right. */
	unsigned char *big = xmalloc(len);
	memcpy(big, png, len);
	set_be32(big + 16, 10000), set_be32(big + 20, 10000);
	set_be32(big + 29, (uint32_t)crc32(0, big + 12, 17));
	rc = image_decode(&dec, big, len, &err);
	tap_ok(rc < 0 && dec.px == NULL && strstr(err, "image too large: 10000x10000"),
	       "over IMAGE_MAX_PIXELS refused: %s", rc < 0 ? err : "(decoded)");
	set_be32(big + 16, 60000), set_be32(big + 20, 60000);
	set_be32(big + 29, (uint32_t)crc32(0, big + 12, 17));
	rc = image_decode(&dec, big, len, &err);
	tap_ok(rc < 0 && dec.px == NULL && strstr(err, "image too large: 60000x60000"),
	       "60000x60000 refused: %s", rc < 0 ? err : "(decoded)");
	/* A chunk whose CRC does not match is corrupt (PIL refuses it too):
	 * IHDR's, then IEND's. */
	memcpy(big, png, len);
	big[29] ^= 0xff;
	rc = image_decode(&dec, big, len, &err);
	tap_ok(rc < 0 && dec.px == NULL && strstr(err, "CRC"), "bad IHDR CRC refused: %s",
	       rc < 0 ? err : "(decoded)");
	memcpy(big, png, len);
	big[len - 1] ^= 0xff;
	rc = image_decode(&dec, big, len, &err);
	tap_ok(rc < 0 && dec.px == NULL && strstr(err, "CRC"), "bad IEND CRC refused: %s",
	       rc < 0 ? err : "(decoded)");
	/* Every pixel there but no IEND: cut short. */
	rc = image_decode(&dec, png, len - 12, &err);
	tap_ok(rc < 0 && dec.px == NULL, "PNG without IEND refused: %s",
	       rc < 0 ? err : "(decoded)");
	free(big);

	rc = image_decode(&dec, "not an image at all", 19, &err);
	tap_ok(rc < 0 && !strcmp(err, "not a JPEG or PNG image"), "garbage: %s",
	       rc < 0 ? err : "(decoded)");
	/* The formats seva does not decode are refused by name. */
	static const struct {
		const char *bytes, *name;
		size_t len;
	} other[] = {{"GIF89a\x01\0\x01\0\0\0\0;", "gif", 14}, {"BM\0\0\0\0\0\0", "bmp", 8},
		     {"P6\n1 1\n255\n\0\0\0", "pnm", 14}, {"RIFF\0\0\0\0WEBPVP8 ", "webp", 16},
		     {"8BPS\0\x01", "psd", 6}, {"#?RADIANCE\n", "hdr", 11}};
	for (size_t k = 0; k < ARRAY_LEN(other); k++) {
		char want[64];
		snprintf(want, sizeof want, "unsupported format '%s'", other[k].name);
		rc = image_decode(&dec, other[k].bytes, other[k].len, &err);
		tap_ok(rc < 0 && dec.px == NULL && strstr(err, want), "%s refused: %s",
		       other[k].name, rc < 0 ? err : "(decoded)");
	}
	rc = image_decode(&dec, "", 0, &err);
	tap_ok(rc < 0, "empty buffer refused: %s", rc < 0 ? err : "(decoded)");
	/* Truncated after the header: libpng reports, we pass the reason on. */
	rc = image_decode(&dec, png, 40, &err);
	tap_ok(rc < 0 && dec.px == NULL, "truncated PNG refused: %s", rc < 0 ? err : "(decoded)");
	free(png);

	/* JPEG: the pixels PIL decodes (libjpeg-turbo with PIL's settings); a
	 * JPEG cut in half is refused, not half-decoded. */
	static const char *jpegs[] = {"photo-420.jpg", "photo-444p.jpg", "photo-gray.jpg"};
	for (int k = 0; k < 3; k++) {
		char want[64];
		snprintf(want, sizeof(want), "%s.png", jpegs[k]);
		if (load(&dec, jpegs[k]) == 0) {
			same_as(&dec, want, 0, jpegs[k]);
			image_release(&dec);
		}
	}
	size_t jlen;
	unsigned char *jpg = read_file(FIX "photo-420.jpg", &jlen);
	rc = jpg ? image_decode(&dec, jpg, jlen / 2, &err) : 0;
	tap_ok(jpg && rc < 0 && dec.px == NULL, "truncated JPEG refused: %s",
	       rc < 0 ? err : "(decoded)");
	/* A frame header claiming twice the size over the same data: libjpeg
	 * would fill in the missing rows with a warning; that is an error. */
	if (jpg) {
		size_t k = 2;
		while (k + 9 < jlen && !(jpg[k] == 0xff && (jpg[k + 1] == 0xc0 || jpg[k + 1] == 0xc2)))
			k += 2 + (size_t)(jpg[k + 2] << 8 | jpg[k + 3]);
		int fh = jpg[k + 5] << 8 | jpg[k + 6], fw = jpg[k + 7] << 8 | jpg[k + 8];
		jpg[k + 5] = (unsigned char)((2 * fh) >> 8), jpg[k + 6] = (unsigned char)(2 * fh);
		rc = image_decode(&dec, jpg, jlen, &err);
		tap_ok(rc < 0 && dec.px == NULL && strstr(err, "JPEG"),
		       "SOF %dx%d over %dx%d data refused: %s", fw, 2 * fh, fw, fh,
		       rc < 0 ? err : "(decoded)");
	}
	free(jpg);
	/* JPEGs that libjpeg-turbo refuses (they crashed a weaker decoder
	 * that used to get a second try) are errors, nothing decoded. */
	static const char *bad[] = {"bad/huffman.jpg", "bad/build-huffman.jpg"};
	for (int k = 0; k < 2; k++) {
		char path[128];
		snprintf(path, sizeof path, FIX "%s", bad[k]);
		jpg = read_file(path, &jlen);
		rc = jpg ? image_decode(&dec, jpg, jlen, &err) : 0;
		tap_ok(jpg && rc < 0 && dec.px == NULL && !strncmp(err, "JPEG: ", 6), "%s refused: %s",
		       bad[k], rc < 0 ? err : "(decoded)");
		free(jpg);
	}

	/* Float round trip: to_float then from_float is the identity. */
	struct fimage f;
	fimage_init(&f);
	image_to_float(&f, &im);
	image_init(&dec);
	image_from_float(&dec, &f);
	tap_ok(!memcmp(dec.px, im.px, 7 * 5 * 3), "to_float/from_float round trip");
	f.px[0] = -0.3f, f.px[1] = 1.7f, f.px[2] = 2.5f / 255; /* clip, and half to even */
	image_from_float(&dec, &f);
	tap_ok(dec.px[0] == 0 && dec.px[1] == 255 && dec.px[2] == 2,
	       "from_float clips and rounds half to even: %d %d %d", dec.px[0], dec.px[1],
	       dec.px[2]);
	fimage_release(&f);
	image_release(&dec);
	image_release(&im);
}

int main(void)
{
	test_codec();
	test_resize();
	test_pad_crop();
	test_preprocess();
	return tap_done();
}
