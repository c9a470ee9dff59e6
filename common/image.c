#include "image.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include "util.h"

/* Exported by Debian's libstb but declared only inside the implementation
 * part of stb_image_write.h; returns STBIW_MALLOC'd (malloc) bytes. Using it
 * saves the copy stbi_write_png_to_func would make. */
extern unsigned char *stbi_write_png_to_mem(const unsigned char *pixels, int stride_bytes,
					    int x, int y, int n, int *out_len);

void image_init(struct image *im)
{
	im->w = im->h = 0;
	im->px = NULL;
}

void image_release(struct image *im)
{
	free(im->px);
	image_init(im);
}

void fimage_init(struct fimage *im)
{
	im->w = im->h = 0;
	im->px = NULL;
}

void fimage_release(struct fimage *im)
{
	free(im->px);
	fimage_init(im);
}

/* Reuses the buffer when the size is unchanged (the augment loop calls this
 * once per sample on the same images). */
void image_alloc(struct image *im, int w, int h)
{
	if (im->px && im->w == w && im->h == h)
		return;
	free(im->px);
	im->w = w;
	im->h = h;
	im->px = xmalloc((size_t)w * h * 3);
}

void fimage_alloc(struct fimage *im, int w, int h)
{
	if (im->px && im->w == w && im->h == h)
		return;
	free(im->px);
	im->w = w;
	im->h = h;
	im->px = xmalloc((size_t)w * h * 3 * sizeof(float));
}

int image_decode(struct image *im, const void *buf, size_t len, const char **err)
{
	static _Thread_local char msg[64];
	int w, h, n;

	image_init(im);
	if (len == 0) {
		*err = "empty image";
		return -1;
	}
	if (len > INT_MAX) {
		*err = "image file too large";
		return -1;
	}
	if (!stbi_info_from_memory(buf, (int)len, &w, &h, &n)) {
		/* stb refuses a PNG over 2^30 bytes of pixels without saying so
		 * (the later formats it tries overwrite the reason): read IHDR. */
		const unsigned char *b = buf;
		if (len >= 24 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8) && !memcmp(b + 12, "IHDR", 4)) {
			unsigned long pw = (unsigned long)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
			unsigned long ph = (unsigned long)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
			if ((double)pw * ph > IMAGE_MAX_PIXELS) {
				snprintf(msg, sizeof(msg), "image too large: %lux%lu", pw, ph);
				*err = msg;
				return -1;
			}
		}
		*err = "unsupported format";
		return -1;
	}
	if (w <= 0 || h <= 0 || (long)w * h > IMAGE_MAX_PIXELS) {
		snprintf(msg, sizeof(msg), "image too large: %dx%d", w, h);
		*err = msg;
		return -1;
	}
	unsigned char *px = stbi_load_from_memory(buf, (int)len, &w, &h, &n, 3);
	if (!px) {
		const char *why = stbi_failure_reason();
		snprintf(msg, sizeof(msg), "cannot decode image: %s", why ? why : "corrupt");
		*err = msg;
		return -1;
	}
	im->w = w;
	im->h = h;
	im->px = px; /* stb allocates with malloc: image_release frees it */
	return 0;
}

int image_encode_png(const struct image *im, unsigned char **out, size_t *len)
{
	int n = 0;
	unsigned char *png = stbi_write_png_to_mem(im->px, im->w * 3, im->w, im->h, 3, &n);
	if (!png)
		return -1;
	*out = png;
	*len = (size_t)n;
	return 0;
}

void image_to_float(struct fimage *out, const struct image *in)
{
	fimage_alloc(out, in->w, in->h);
	long n = (long)in->w * in->h * 3;
	for (long i = 0; i < n; i++)
		out->px[i] = in->px[i] / 255.0f;
}

static inline unsigned char clip_round(float v)
{
	v = nearbyintf(v);
	return v <= 0 ? 0 : v >= 255 ? 255 : (unsigned char)v;
}

void image_from_float(struct image *out, const struct fimage *in)
{
	image_alloc(out, in->w, in->h);
	long n = (long)in->w * in->h * 3;
	for (long i = 0; i < n; i++)
		out->px[i] = clip_round(in->px[i] * 255.0f);
}

/*
 * Resampling as PIL's Resample.c does it: separable, horizontal pass then
 * vertical, each output pixel a normalized window of the filter centred on
 * the source position, the filter stretched by the scale when shrinking
 * (antialiasing). On 8-bit data the weights become fixed point with 22
 * fraction bits, each pass rounds and clips to 8 bits.
 */

#define PRECISION_BITS (32 - 8 - 2)

struct filter {
	double (*fn)(double x);
	double support;
};

static double bilinear_filter(double x)
{
	if (x < 0)
		x = -x;
	return x < 1 ? 1 - x : 0;
}

/* Keys' cubic with a = -0.5, PIL's choice. */
static double bicubic_filter(double x)
{
	const double a = -0.5;
	if (x < 0)
		x = -x;
	if (x < 1)
		return ((a + 2) * x - (a + 3)) * x * x + 1;
	if (x < 2)
		return (((x - 5) * x + 8) * x - 4) * a;
	return 0;
}

static const struct filter filters[] = {
	[RESAMPLE_BILINEAR] = {bilinear_filter, 1.0},
	[RESAMPLE_BICUBIC] = {bicubic_filter, 2.0},
};

/* Weights for OUT output positions over IN inputs: bounds[2*i] first input,
 * bounds[2*i+1] count; kk[i*ksize + j] the weights. Returns ksize. */
static int coeffs(int in, int out, const struct filter *f, int **boundsp, double **kkp)
{
	double scale = (double)in / out;
	double filterscale = scale < 1 ? 1 : scale;
	double support = f->support * filterscale;
	int ksize = (int)ceil(support) * 2 + 1;
	int *bounds = xmalloc(sizeof(int) * 2 * out);
	double *kk = xmalloc(sizeof(double) * out * ksize);

	for (int xx = 0; xx < out; xx++) {
		double center = (xx + 0.5) * scale;
		double ss = 1.0 / filterscale, ww = 0;
		int xmin = (int)(center - support + 0.5);
		if (xmin < 0)
			xmin = 0;
		int xmax = (int)(center + support + 0.5);
		if (xmax > in)
			xmax = in;
		xmax -= xmin;
		double *k = kk + (size_t)xx * ksize;
		int x;
		for (x = 0; x < xmax; x++) {
			double w = f->fn((x + xmin - center + 0.5) * ss);
			k[x] = w;
			ww += w;
		}
		for (x = 0; x < xmax; x++)
			if (ww != 0)
				k[x] /= ww;
		for (; x < ksize; x++)
			k[x] = 0;
		bounds[2 * xx] = xmin;
		bounds[2 * xx + 1] = xmax;
	}
	*boundsp = bounds;
	*kkp = kk;
	return ksize;
}

static int *coeffs_fixed(const double *kk, int n)
{
	int *k = xmalloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
		k[i] = kk[i] < 0 ? (int)(-0.5 + kk[i] * (1 << PRECISION_BITS))
				 : (int)(0.5 + kk[i] * (1 << PRECISION_BITS));
	return k;
}

static inline unsigned char clip8(int v)
{
	v >>= PRECISION_BITS;
	return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

/* out (rows x ow) from in (rows x iw), rows of in starting at y0. */
static void resample_h8(unsigned char *out, int ow, const unsigned char *in, int iw, int rows,
			const int *bounds, const int *k, int ksize)
{
	for (int y = 0; y < rows; y++) {
		const unsigned char *src = in + (size_t)y * iw * 3;
		unsigned char *dst = out + (size_t)y * ow * 3;
		for (int x = 0; x < ow; x++) {
			int xmin = bounds[2 * x], xn = bounds[2 * x + 1];
			const int *kx = k + (size_t)x * ksize;
			const unsigned char *p = src + xmin * 3;
			int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
			for (int i = 0; i < xn; i++) {
				s0 += p[3 * i] * kx[i];
				s1 += p[3 * i + 1] * kx[i];
				s2 += p[3 * i + 2] * kx[i];
			}
			dst[3 * x] = clip8(s0);
			dst[3 * x + 1] = clip8(s1);
			dst[3 * x + 2] = clip8(s2);
		}
	}
}

static void resample_v8(unsigned char *out, int oh, const unsigned char *in, int w,
			const int *bounds, const int *k, int ksize)
{
	size_t stride = (size_t)w * 3;
	for (int y = 0; y < oh; y++) {
		int ymin = bounds[2 * y], yn = bounds[2 * y + 1];
		const int *ky = k + (size_t)y * ksize;
		unsigned char *dst = out + y * stride;
		for (size_t x = 0; x < stride; x++) {
			int s = 1 << (PRECISION_BITS - 1);
			const unsigned char *p = in + ymin * stride + x;
			for (int i = 0; i < yn; i++)
				s += p[i * stride] * ky[i];
			dst[x] = clip8(s);
		}
	}
}

void image_resize(struct image *out, const struct image *in, int w, int h, enum resample mode)
{
	const struct filter *f = &filters[mode];
	if (w == in->w && h == in->h) {
		image_alloc(out, w, h);
		memcpy(out->px, in->px, (size_t)w * h * 3);
		return;
	}
	int *bh = NULL, *bv = NULL, *kh = NULL, *kv = NULL;
	double *dh, *dv;
	int ksh = coeffs(in->w, w, f, &bh, &dh);
	int ksv = coeffs(in->h, h, f, &bv, &dv);
	kh = coeffs_fixed(dh, w * ksh);
	kv = coeffs_fixed(dv, h * ksv);
	free(dh);
	free(dv);

	const unsigned char *src = in->px;
	int sw = in->w, sh = in->h;
	unsigned char *tmp = NULL;
	int y0 = 0;
	if (w != in->w) {
		/* Only the rows the vertical pass reads. */
		int first = bv[0], last = bv[2 * h - 2] + bv[2 * h - 1];
		if (h == in->h)
			first = 0, last = in->h;
		tmp = xmalloc((size_t)w * (last - first) * 3);
		resample_h8(tmp, w, in->px + (size_t)first * in->w * 3, in->w, last - first, bh,
			    kh, ksh);
		src = tmp;
		sw = w;
		sh = last - first;
		y0 = first;
	}
	image_alloc(out, w, h);
	if (h != in->h) {
		for (int y = 0; y < h; y++)
			bv[2 * y] -= y0;
		resample_v8(out->px, h, src, sw, bv, kv, ksv);
	} else {
		memcpy(out->px, src, (size_t)w * sh * 3);
	}
	free(tmp);
	free(bh);
	free(bv);
	free(kh);
	free(kv);
}

void fimage_resize(struct fimage *out, const struct fimage *in, int w, int h, enum resample mode)
{
	const struct filter *f = &filters[mode];
	int *bh, *bv;
	double *kh, *kv;
	int ksh = coeffs(in->w, w, f, &bh, &kh);
	int ksv = coeffs(in->h, h, f, &bv, &kv);
	float *tmp = xmalloc(sizeof(float) * (size_t)w * in->h * 3);

	for (int y = 0; y < in->h; y++) {
		const float *src = in->px + (size_t)y * in->w * 3;
		float *dst = tmp + (size_t)y * w * 3;
		for (int x = 0; x < w; x++) {
			const double *k = kh + (size_t)x * ksh;
			const float *p = src + bh[2 * x] * 3;
			double s0 = 0, s1 = 0, s2 = 0;
			for (int i = 0; i < bh[2 * x + 1]; i++) {
				s0 += p[3 * i] * k[i];
				s1 += p[3 * i + 1] * k[i];
				s2 += p[3 * i + 2] * k[i];
			}
			dst[3 * x] = (float)s0;
			dst[3 * x + 1] = (float)s1;
			dst[3 * x + 2] = (float)s2;
		}
	}
	fimage_alloc(out, w, h);
	size_t stride = (size_t)w * 3;
	for (int y = 0; y < h; y++) {
		const double *k = kv + (size_t)y * ksv;
		for (size_t x = 0; x < stride; x++) {
			const float *p = tmp + bv[2 * y] * stride + x;
			double s = 0;
			for (int i = 0; i < bv[2 * y + 1]; i++)
				s += p[i * stride] * k[i];
			out->px[y * stride + x] = (float)s;
		}
	}
	free(tmp);
	free(bh);
	free(bv);
	free(kh);
	free(kv);
}

void image_pad_square(struct image *out, const struct image *in, const unsigned char rgb[3])
{
	int side = in->w > in->h ? in->w : in->h;
	int x0 = (side - in->w) / 2, y0 = (side - in->h) / 2;
	struct image tmp;
	image_init(&tmp);
	image_alloc(&tmp, side, side);
	for (long i = 0; i < (long)side * side; i++)
		memcpy(tmp.px + 3 * i, rgb, 3);
	for (int y = 0; y < in->h; y++)
		memcpy(tmp.px + ((size_t)(y + y0) * side + x0) * 3, in->px + (size_t)y * in->w * 3,
		       (size_t)in->w * 3);
	image_release(out);
	*out = tmp;
}

/* Copies the w x h window at (x0, y0) of IN; outside IN is black (the
 * zero padding torchvision adds when the crop is larger than the image). */
static void crop_at(struct image *out, const struct image *in, int x0, int y0, int w, int h)
{
	struct image tmp;
	image_init(&tmp);
	image_alloc(&tmp, w, h);
	memset(tmp.px, 0, (size_t)w * h * 3);
	int xa = x0 < 0 ? 0 : x0, xb = x0 + w > in->w ? in->w : x0 + w;
	for (int y = 0; y < h && xb > xa; y++) {
		int sy = y + y0;
		if (sy < 0 || sy >= in->h)
			continue;
		memcpy(tmp.px + ((size_t)y * w + (xa - x0)) * 3, in->px + ((size_t)sy * in->w + xa) * 3,
		       (size_t)(xb - xa) * 3);
	}
	image_release(out);
	*out = tmp;
}

/* torchvision: offset int(round((in - crop) / 2)) with Python's
 * half-to-even round; a crop larger than the image is centred on a zero pad
 * of floor((crop - in) / 2) before. */
static int center_offset(int in, int crop)
{
	if (crop > in)
		return -((crop - in) / 2);
	return (int)nearbyint((in - crop) / 2.0);
}

void image_center_crop(struct image *out, const struct image *in, int w, int h)
{
	crop_at(out, in, center_offset(in->w, w), center_offset(in->h, h), w, h);
}

void preprocess_defaults(struct preprocess *p, int size)
{
	static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	p->mode = PREPROCESS_PAD_RESIZE;
	p->size = size;
	p->crop_size = size;
	p->resample = RESAMPLE_BICUBIC;
	p->rescale = 1.0f / 255.0f;
	memcpy(p->mean, mean, sizeof(mean));
	memcpy(p->std, std, sizeof(std));
}

int preprocess_side(const struct preprocess *p)
{
	return p->mode == PREPROCESS_SHORTEST_CROP ? p->crop_size : p->size;
}

/* transformers' get_resize_output_image_size for {"shortest_edge": size}:
 * the long side is int(size * long / short), truncated. */
static void shortest_edge(const struct image *im, int size, int *w, int *h)
{
	if (im->w <= im->h) {
		*w = size;
		*h = (int)((double)size * im->h / im->w);
	} else {
		*h = size;
		*w = (int)((double)size * im->w / im->h);
	}
}

/* Python's n // 2. */
static int floor_half(int n)
{
	return n >= 0 ? n / 2 : -((1 - n) / 2);
}

void image_preprocess(float *out, const struct image *im, const struct preprocess *p)
{
	struct image a, b;
	image_init(&a);
	image_init(&b);
	int side = preprocess_side(p);
	int w, h;

	switch (p->mode) {
	case PREPROCESS_PAD_RESIZE: {
		/* LLaVA-1.5's expand2square colour is tuple(int(x * 255) for x in
		 * image_mean): truncated, (122, 116, 104) for CLIP. Then the CLIP
		 * processor's shortest-edge resize, which on a square is a resize. */
		unsigned char rgb[3];
		for (int c = 0; c < 3; c++)
			rgb[c] = (unsigned char)(p->mean[c] * 255.0);
		image_pad_square(&a, im, rgb);
		image_resize(&b, &a, p->size, p->size, p->resample);
		break;
	}
	case PREPROCESS_SHORTEST_CROP:
		shortest_edge(im, p->size, &w, &h);
		image_resize(&a, im, w, h, p->resample);
		/* transformers' center_crop: offsets floor((in - crop) / 2). */
		crop_at(&b, &a, floor_half(a.w - side), floor_half(a.h - side), side, side);
		break;
	case PREPROCESS_RESIZE:
		image_resize(&b, im, p->size, p->size, p->resample);
		break;
	}

	long plane = (long)side * side;
	for (int c = 0; c < 3; c++) {
		float *dst = out + c * plane;
		const unsigned char *src = b.px + c;
		for (long i = 0; i < plane; i++)
			dst[i] = ((float)src[3 * i] * p->rescale - p->mean[c]) / p->std[c];
	}
	image_release(&a);
	image_release(&b);
}

void image_from_tensor(struct image *out, const float *chw, int side, const struct preprocess *p)
{
	image_alloc(out, side, side);
	long plane = (long)side * side;
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i++)
			out->px[3 * i + c] =
				clip_round((chw[c * plane + i] * p->std[c] + p->mean[c]) / p->rescale);
}
