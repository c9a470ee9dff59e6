#include "augment.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util.h"

/* ---- recipes ---- */

static void op_defaults(struct augment_op *op, enum augment_kind kind, const char *name)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->name = name;
	op->p = 1;
	op->size = 336;
	op->scale[0] = 0.08, op->scale[1] = 1;
	op->ratio[0] = 3.0 / 4, op->ratio[1] = 4.0 / 3;
	op->bright = op->contrast = op->sat = 0.4, op->hue = 0.1;
	op->sigma[0] = 0.1, op->sigma[1] = 2.0;
	op->t = 500;
	op->schedule = AUGMENT_SIGMOID;
	op->space = AUGMENT_NORMALIZED;
	switch (kind) {
	case AUGMENT_HFLIP:
		op->p = 0.5;
		break;
	default:
		break;
	}
}

static const struct {
	const char *name;
	enum augment_kind kind;
} op_names[] = {
	{"none", AUGMENT_NONE},     {"rrc", AUGMENT_RRC},   {"crop", AUGMENT_RRC},
	{"jitter", AUGMENT_JITTER}, {"gray", AUGMENT_GRAY}, {"blur", AUGMENT_BLUR},
	{"hflip", AUGMENT_HFLIP},   {"diffusion", AUGMENT_DIFFUSION},
};

/* "A" or "A-B" into [lo, hi]. */
static int parse_range(const char *s, double v[2])
{
	char *end;
	errno = 0;
	v[0] = strtod(s, &end);
	if (end == s || errno || !isfinite(v[0]))
		return -1;
	if (*end == '-') {
		const char *b = end + 1;
		v[1] = strtod(b, &end);
		if (end == b || errno || !isfinite(v[1]))
			return -1;
	} else {
		v[1] = v[0];
	}
	return *end ? -1 : 0;
}

static int parse_num(const char *s, double *v)
{
	char *end;
	errno = 0;
	*v = strtod(s, &end);
	return end == s || *end || errno || !isfinite(*v) ? -1 : 0;
}

/* One "name:k=v:k=v" token; RECIPE for messages. */
static int parse_op(struct augment_recipe *r, char *tok, const char *recipe)
{
	char *opt = strchr(tok, ':');
	if (opt)
		*opt++ = 0;

	if (!strcmp(tok, "mocov2")) {
		if (opt)
			return error("recipe '%s': mocov2 takes no options (spell its ops out)",
				     recipe);
		static const char *expand[] = {"rrc:scale=0.2-1",
					       "jitter:b=0.4:c=0.4:s=0.4:h=0.1:p=0.8",
					       "gray:p=0.2", "blur:p=0.5", "hflip"};
		for (size_t i = 0; i < ARRAY_LEN(expand); i++) {
			char buf[64];
			snprintf(buf, sizeof(buf), "%s", expand[i]);
			if (parse_op(r, buf, recipe) < 0)
				return -1;
		}
		return 0;
	}

	size_t k;
	for (k = 0; k < ARRAY_LEN(op_names); k++)
		if (!strcmp(tok, op_names[k].name))
			break;
	if (k == ARRAY_LEN(op_names))
		return error("recipe '%s': unknown op '%s' (ops: none, rrc, crop, jitter, gray, "
			     "blur, hflip, diffusion, mocov2)", recipe, tok);
	r->ops = xrealloc(r->ops, sizeof(*r->ops) * (r->nops + 1));
	struct augment_op *op = &r->ops[r->nops++];
	op_defaults(op, op_names[k].kind, op_names[k].name);
	if (!strcmp(tok, "crop"))
		op->scale[0] = 0.01, op->scale[1] = 0.2;

	while (opt && *opt) {
		char *next = strchr(opt, ':');
		if (next)
			*next++ = 0;
		char *val = strchr(opt, '=');
		if (!val)
			return error("recipe '%s': %s: option '%s' has no '=VALUE'", recipe,
				     op->name, opt);
		*val++ = 0;
		double v = 0;
		int bad = 0, known = 1;
		enum augment_kind kd = op->kind;
#define IS(s) (!strcmp(opt, s))
		if (IS("p") && kd != AUGMENT_NONE && kd != AUGMENT_DIFFUSION) {
			bad = parse_num(val, &op->p) || op->p < 0 || op->p > 1;
		} else if (kd == AUGMENT_RRC && IS("scale")) {
			bad = parse_range(val, op->scale) || op->scale[0] <= 0 ||
			      op->scale[1] > 1 || op->scale[0] > op->scale[1];
		} else if (kd == AUGMENT_RRC && IS("ratio")) {
			bad = parse_range(val, op->ratio) || op->ratio[0] <= 0 ||
			      op->ratio[0] > op->ratio[1];
		} else if (kd == AUGMENT_RRC && IS("size")) {
			bad = parse_num(val, &v) || v < 0 || v > 16384 || v != floor(v);
			op->size = (int)v;
		} else if (kd == AUGMENT_JITTER && (IS("b") || IS("brightness"))) {
			bad = parse_num(val, &op->bright) || op->bright < 0;
		} else if (kd == AUGMENT_JITTER && (IS("c") || IS("contrast"))) {
			bad = parse_num(val, &op->contrast) || op->contrast < 0;
		} else if (kd == AUGMENT_JITTER && (IS("s") || IS("saturation"))) {
			bad = parse_num(val, &op->sat) || op->sat < 0;
		} else if (kd == AUGMENT_JITTER && (IS("h") || IS("hue"))) {
			bad = parse_num(val, &op->hue) || op->hue < 0 || op->hue > 0.5;
		} else if (kd == AUGMENT_BLUR && IS("sigma")) {
			bad = parse_range(val, op->sigma) || op->sigma[0] <= 0 ||
			      op->sigma[0] > op->sigma[1] || op->sigma[1] > 100;
		} else if (kd == AUGMENT_DIFFUSION && IS("t")) {
			bad = parse_num(val, &v) || v < 0 || v >= AUGMENT_STEPS || v != floor(v);
			op->t = (int)v;
		} else if (kd == AUGMENT_DIFFUSION && IS("schedule")) {
			if (!strcmp(val, "sigmoid"))
				op->schedule = AUGMENT_SIGMOID;
			else if (!strcmp(val, "linear"))
				op->schedule = AUGMENT_LINEAR;
			else
				bad = 1;
		} else if (kd == AUGMENT_DIFFUSION && IS("space")) {
			if (!strcmp(val, "normalized"))
				op->space = AUGMENT_NORMALIZED;
			else if (!strcmp(val, "pixel"))
				op->space = AUGMENT_PIXEL;
			else
				bad = 1;
		} else {
			known = 0;
		}
#undef IS
		if (!known)
			return error("recipe '%s': %s has no option '%s'", recipe, op->name, opt);
		if (bad)
			return error("recipe '%s': %s: bad value for %s: '%s'", recipe, op->name,
				     opt, val);
		opt = next;
	}
	return 0;
}

int augment_parse(struct augment_recipe *r, const char *text)
{
	r->text = xstrdup(text);
	r->ops = NULL;
	r->nops = 0;
	char *copy = xstrdup(text), *tok = copy;
	int rc = 0;
	if (!*text)
		rc = error("recipe '': empty (use 'none' for the identity)");
	/* Split by hand: strtok_r would pass over empty ops, and ",,," would
	 * be an empty recipe that '' is not. */
	while (*text && rc == 0 && tok) {
		char *comma = strchr(tok, ',');
		if (comma)
			*comma = 0;
		if (!*tok)
			rc = error("recipe '%s': an empty op (between commas or at an end)", text);
		else
			rc = parse_op(r, tok, text);
		tok = comma ? comma + 1 : NULL;
	}
	free(copy);
	if (rc < 0)
		augment_release(r);
	return rc;
}

void augment_release(struct augment_recipe *r)
{
	free(r->text);
	free(r->ops);
	r->text = NULL;
	r->ops = NULL;
	r->nops = 0;
}

/* ---- the diffusion schedule ---- */

double augment_alpha_bar(enum augment_schedule s, int t)
{
	double ab = 1;
	for (int i = 0; i <= t && i < AUGMENT_STEPS; i++) {
		double x = (double)i / (AUGMENT_STEPS - 1), beta;
		if (s == AUGMENT_LINEAR)
			beta = 1e-4 + (0.02 - 1e-4) * x;
		else
			beta = 1 / (1 + exp(-(-6 + 12 * x))) * (5e-3 - 1e-5) + 1e-5;
		ab *= 1 - beta;
	}
	return ab;
}

/* ---- the pixel ops, torchvision 0.14 on PIL 9 ---- */

/* PIL's Image.blend(a, b, f): a + f (b - a) in float, clipped, truncated. */
static inline unsigned char blend(int a, int b, float f)
{
	float t = (float)a + f * (float)(b - a);
	return t <= 0 ? 0 : t >= 255 ? 255 : (unsigned char)t;
}

/* PIL's RGB → L: ITU-R 601-2 in 16-bit fixed point, rounded. */
static inline int luma(const unsigned char *p)
{
	return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16;
}

/* Replaces every byte by LUT[byte]. */
static void map_bytes(struct image *im, const unsigned char lut[256])
{
	size_t n = (size_t)im->w * im->h * 3;
	unsigned char *p = im->px;
	for (size_t i = 0; i < n; i++)
		p[i] = lut[p[i]];
}

/* Brightness and contrast blend every byte with a constant: 256 blends
 * made once give the same bytes as one per byte. */
void augment_brightness(struct image *im, float f)
{
	unsigned char lut[256];
	for (int v = 0; v < 256; v++)
		lut[v] = blend(0, v, f);
	map_bytes(im, lut);
}

void augment_contrast(struct image *im, float f)
{
	long n = (long)im->w * im->h;
	const unsigned char *p = im->px;
	uint64_t sum = 0; /* exact, as PIL's histogram-weighted mean */
	#pragma omp simd reduction(+ : sum)
	for (long i = 0; i < n; i++)
		sum += (uint32_t)luma(p + 3 * i);
	int mean = (int)((double)sum / (n ? n : 1) + 0.5);
	unsigned char lut[256];
	for (int v = 0; v < 256; v++)
		lut[v] = blend(mean, v, f);
	map_bytes(im, lut);
}

void augment_saturation(struct image *im, float f)
{
	long n = (long)im->w * im->h;
	unsigned char *px = im->px;
	#pragma omp simd
	for (long i = 0; i < n; i++) {
		unsigned char *p = px + 3 * i;
		int l = luma(p);
		unsigned char r = blend(l, p[0], f), g = blend(l, p[1], f), b = blend(l, p[2], f);
		p[0] = r, p[1] = g, p[2] = b;
	}
}

/* C's round() for 0 <= x < 2^24 without the libm call: x - trunc(x) is
 * exact; trunc through int and float (the vectorizer takes those). */
static inline int round_half_up(double x)
{
	int t = (int)x;
	return t + (x - (double)(float)t >= 0.5);
}

/*
 * PIL's rgb2hsv / hsv2rgb (Convert.c, after colorsys) with the hue byte
 * shifted by uint8(shift * 255) modulo 256, as F_pil.adjust_hue does.
 * The same float and double operations in the same order, with selects
 * instead of branches so that the loop vectorizes: IEEE division and
 * conversion are exact, so the lanes give PIL's bytes. A grey pixel (no
 * chroma) gets s = 0 and comes back as (v, v, v) without a special case.
 */
void augment_hue(struct image *im, float shift)
{
	int dh = (unsigned char)(int)(shift * 255);
	long n = (long)im->w * im->h;
	unsigned char *px = im->px;
	#pragma omp simd
	for (long i = 0; i < n; i++) {
		int r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
		int maxc = r > g ? r : g, minc = r < g ? r : g;
		maxc = maxc > b ? maxc : b;
		minc = minc < b ? minc : b;
		int d = maxc - minc;
		/* d | !d: d, or 1 for a grey pixel (then unused); written
		 * without a branch the converts would move into. */
		float fd = (float)(d | (d == 0));
		float s = (float)d / (float)(maxc | (maxc == 0));
		float rc = (float)(maxc - r) / fd, gc = (float)(maxc - g) / fd;
		float bc = (float)(maxc - b) / fd;
		float hr = bc - gc, hg = (float)(2.0 + rc - bc), hb = (float)(4.0 + gc - rc);
		/* The channel that is the max picks its formula (r first, then
		 * g), as products with 1 and 0: exact (hg, hb > 0), and no
		 * branch for the compiler to sink the arithmetic into. */
		int ir = r == maxc, ig = !ir & (g == maxc), ib = !ir & !ig;
		float h = hr * (float)ir + hg * (float)ig + hb * (float)ib;
		/* fmod(h / 6 + 1, 1) for an argument in (0, 2): exact. */
		double hh = h / 6.0 + 1.0;
		h = (float)(hh - (double)(float)(int)hh); /* floor, as hh > 0 */
		int chroma = -(d != 0); /* grey: hue and saturation 0 */
		int uh = (int)(h * 255.0) & chroma, us = (int)(s * 255.0) & chroma;
		uh = (uh + dh) & 255;

		/* Small ints go to double through float (exact): the
		 * vectorizer widens float to double, not int to double. */
		double h6 = (double)(float)uh * 6.0 / 255.0;
		int k = (int)h6; /* floor: h6 >= 0 */
		float f = (float)(h6 - (double)(float)k), fs = (float)((double)(float)us / 255.0);
		double v = (double)(float)maxc;
		int p = round_half_up(v * (1.0 - fs));
		int q = round_half_up(v * (1.0 - fs * f));
		int t = round_half_up(v * (1.0 - fs * (1.0 - f)));
		/* The sextant: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q),
		 * as masks (the compiler would make a branch tree of ?:). */
		k -= 6 * (k == 6);
		int m0 = -(k == 0), m1 = -(k == 1), m2 = -(k == 2);
		int m3 = -(k == 3), m4 = -(k == 4), m5 = -(k == 5);
		int o0 = (maxc & (m0 | m5)) | (q & m1) | (t & m4) | (p & (m2 | m3));
		int o1 = (maxc & (m1 | m2)) | (t & m0) | (q & m3) | (p & (m4 | m5));
		int o2 = (maxc & (m3 | m4)) | (t & m2) | (q & m5) | (p & (m0 | m1));
		px[3 * i] = (unsigned char)o0;
		px[3 * i + 1] = (unsigned char)o1;
		px[3 * i + 2] = (unsigned char)o2;
	}
}

void augment_grayscale(struct image *im)
{
	long n = (long)im->w * im->h;
	for (long i = 0; i < n; i++) {
		unsigned char *p = im->px + 3 * i;
		p[0] = p[1] = p[2] = (unsigned char)luma(p);
	}
}

void augment_hflip(struct image *im)
{
	for (int y = 0; y < im->h; y++) {
		unsigned char *row = im->px + (size_t)y * im->w * 3;
		for (int a = 0, b = im->w - 1; a < b; a++, b--)
			for (int c = 0; c < 3; c++) {
				unsigned char t = row[3 * a + c];
				row[3 * a + c] = row[3 * b + c];
				row[3 * b + c] = t;
			}
	}
}

/*
 * PIL's GaussianBlur: three passes of an "extended" box blur per axis
 * (Gwosdek et al. 2011) whose fractional radius matches the Gaussian's
 * variance. Output x of one pass, edges replicated:
 *   (ww * sum_{|k| <= r} in[x+k] + fw * (in[x-r-1] + in[x+r+1]) + 2^23) >> 24
 * PIL computes the weights in float; so do we, to get its bytes.
 */
static float box_radius(float radius, int passes)
{
	float sigma2 = radius * radius / passes;
	float L = sqrt(12.0 * sigma2 + 1.0);
	float l = floor((L - 1.0) / 2.0);
	float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
	a /= 6 * (sigma2 - (l + 1) * (l + 1));
	return l + a;
}

/* One pass down the columns of SRC (H rows of S bytes) into DST, all
 * columns at once: ACC holds each column's window sum. */
static void box_cols(unsigned char *restrict dst, const unsigned char *restrict src, int h,
		     size_t s, int r, uint32_t ww, uint32_t fw, uint32_t *restrict acc)
{
#define ROW(y) (src + (size_t)((y) < 0 ? 0 : (y) >= h ? h - 1 : (y)) * s)
	memset(acc, 0, s * sizeof(*acc));
	for (int k = -r; k <= r; k++) {
		const unsigned char *p = ROW(k);
		#pragma omp simd
		for (size_t x = 0; x < s; x++)
			acc[x] += p[x];
	}
	for (int y = 0; y < h; y++) {
		const unsigned char *lo = ROW(y - r - 1), *hi = ROW(y + r + 1), *out = ROW(y - r);
		unsigned char *d = dst + (size_t)y * s;
		#pragma omp simd
		for (size_t x = 0; x < s; x++) {
			d[x] = (unsigned char)((acc[x] * ww + (uint32_t)(lo[x] + hi[x]) * fw +
						(1u << 23)) >> 24);
			acc[x] += (uint32_t)hi[x] - out[x];
		}
	}
#undef ROW
}

/* The rows' passes run down the columns of the transposed image, where
 * they vectorize; the sums and roundings are the same. */
void augment_gaussian_blur(struct image *im, float radius)
{
	if (radius == 0 || im->w == 0 || im->h == 0)
		return;
	float fr = box_radius(radius, 3);
	int r = (int)fr;
	uint32_t ww = (uint32_t)((float)(1 << 24) / (fr * 2 + 1));
	uint32_t fw = ((1 << 24) - (r * 2 + 1) * ww) / 2;
	int w = im->w, h = im->h;
	size_t n = (size_t)w * h * 3, mx = (size_t)(w > h ? w : h) * 3;
	unsigned char *a = xmalloc(n), *b = xmalloc(n);
	uint32_t *acc = xmalloc(mx * sizeof(*acc));

	image_transpose_px(a, im->px, w, h);
	box_cols(b, a, w, (size_t)h * 3, r, ww, fw, acc);
	box_cols(a, b, w, (size_t)h * 3, r, ww, fw, acc);
	box_cols(b, a, w, (size_t)h * 3, r, ww, fw, acc);
	image_transpose_px(im->px, b, h, w);
	box_cols(a, im->px, h, (size_t)w * 3, r, ww, fw, acc);
	box_cols(b, a, h, (size_t)w * 3, r, ww, fw, acc);
	box_cols(im->px, b, h, (size_t)w * 3, r, ww, fw, acc);
	free(a);
	free(b);
	free(acc);
}

/* Python's round(): half to even. */
static int round_even(double x)
{
	return (int)nearbyint(x);
}

void augment_rrc_box(struct rng *rg, int W, int H, const double scale[2], const double ratio[2],
		     int box[4])
{
	double area = (double)W * H;
	double lr0 = log(ratio[0]), lr1 = log(ratio[1]);
	for (int tries = 0; tries < 10; tries++) {
		double target = area * rng_range(rg, scale[0], scale[1]);
		double ar = exp(rng_range(rg, lr0, lr1));
		int w = round_even(sqrt(target * ar));
		int h = round_even(sqrt(target / ar));
		if (w > 0 && w <= W && h > 0 && h <= H) {
			box[1] = (int)rng_below(rg, (uint64_t)(H - h + 1));
			box[0] = (int)rng_below(rg, (uint64_t)(W - w + 1));
			box[2] = w, box[3] = h;
			return;
		}
	}
	/* Centre fallback. */
	double in_ratio = (double)W / H;
	int w, h;
	if (in_ratio < ratio[0]) {
		w = W;
		h = round_even(w / ratio[0]);
	} else if (in_ratio > ratio[1]) {
		h = H;
		w = round_even(h * ratio[1]);
	} else {
		w = W;
		h = H;
	}
	box[0] = (W - w) / 2, box[1] = (H - h) / 2, box[2] = w, box[3] = h;
}

/* ---- applying a recipe ---- */

static const char *const jitter_names[4] = {"brightness", "contrast", "saturation", "hue"};

static void crop(struct image *out, const struct image *in, const int box[4])
{
	image_alloc(out, box[2], box[3]);
	for (int y = 0; y < box[3]; y++)
		memcpy(out->px + (size_t)y * box[2] * 3,
		       in->px + ((size_t)(y + box[1]) * in->w + box[0]) * 3, (size_t)box[2] * 3);
}

static void swap_images(struct image *a, struct image *b)
{
	struct image t = *a;
	*a = *b;
	*b = t;
}

/* The view to change in place: CUR, made a copy of *SRC first unless it
 * is already. */
static struct image *own(struct image *cur, const struct image **src)
{
	if (*src != cur) {
		image_alloc(cur, (*src)->w, (*src)->h);
		memcpy(cur->px, (*src)->px, (size_t)cur->w * cur->h * 3);
		*src = cur;
	}
	return cur;
}

static double jitter_factor(struct rng *rg, double strength, int hue)
{
	if (hue)
		return rng_range(rg, -strength, strength);
	double lo = 1 - strength < 0 ? 0 : 1 - strength;
	return rng_range(rg, lo, 1 + strength);
}

static void add_number_array(cJSON *o, const char *name, const int *v, int n)
{
	cJSON *a = cJSON_AddArrayToObject(o, name);
	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
}

/* Adds noise (seed, key, purpose) to the CHW tensor: the one formula for
 * both the tensor-space op and the pixel-space one. */
static void add_noise(float *chw, long n, double ab, uint64_t seed, const char *key,
		      const char *purpose)
{
	struct rng rg;
	rng_seed(&rg, seed, key, purpose);
	float a = (float)sqrt(ab), b = (float)sqrt(1 - ab);
	float eps[256];
	for (long i = 0; i < n; i += 256) {
		long m = n - i < 256 ? n - i : 256;
		rng_normal_fill(&rg, eps, m);
		for (long j = 0; j < m; j++)
			chw[i + j] = a * chw[i + j] + b * eps[j];
	}
}

/* add_noise on the CHW tensor of IM in [0,1] (x = byte / 255), clamped
 * and truncated back to bytes in place: the same float operations without
 * the tensor (the noise goes plane by plane). */
static void add_noise_pixels(struct image *im, double ab, uint64_t seed, const char *key,
			     const char *purpose)
{
	struct rng rg;
	rng_seed(&rg, seed, key, purpose);
	float a = (float)sqrt(ab), b = (float)sqrt(1 - ab);
	float eps[256];
	long plane = (long)im->w * im->h;
	for (int c = 0; c < 3; c++)
		for (long i = 0; i < plane; i += 256) {
			long m = plane - i < 256 ? plane - i : 256;
			rng_normal_fill(&rg, eps, m);
			unsigned char *p = im->px + 3 * i + c;
			#pragma omp simd
			for (long j = 0; j < m; j++) {
				float v = a * ((float)p[3 * j] / 255.0f) + b * eps[j];
				/* Clamping to [0,1] then truncating v * 255 is
				 * truncating then clamping to 0..255. */
				int t = (int)(v * 255.0f);
				p[3 * j] = (unsigned char)(t < 0 ? 0 : t > 255 ? 255 : t);
			}
		}
}

/* (byte / 255 - mean) / std per channel: 256 values each, made once. */
static void to_chw(float *chw, const struct image *im, const float *mean, const float *std)
{
	long plane = (long)im->w * im->h;
	for (int c = 0; c < 3; c++) {
		float lut[256];
		for (int v = 0; v < 256; v++)
			lut[v] = (v / 255.0f - mean[c]) / std[c];
		const unsigned char *p = im->px + c;
		float *d = chw + c * plane;
		for (long i = 0; i < plane; i++)
			d[i] = lut[p[3 * i]];
	}
}

/* The inverse for the preview: (x std + mean) 255, rounded half to even
 * and clipped to bytes (an integral float in int range: clip the int). */
static void from_chw(struct image *im, const float *chw, const float *mean, const float *std)
{
	long plane = (long)im->w * im->h;
	for (int c = 0; c < 3; c++) {
		const float *x = chw + c * plane;
		unsigned char *p = im->px + c;
		float sd = std[c], mn = mean[c];
		#pragma omp simd
		for (long i = 0; i < plane; i++) {
			int t = (int)nearbyintf((x[i] * sd + mn) * 255.0f);
			p[3 * i] = (unsigned char)(t < 0 ? 0 : t > 255 ? 255 : t);
		}
	}
}

void augment_apply(const struct augment_recipe *r, uint64_t seed, const char *key,
		   const struct image *in, struct image *out, struct image *base,
		   int *base_is_clean, struct cJSON **json)
{
	struct rng rg;
	struct image cur, tmp;
	int pixel_ops = 0, tensor_ops = 0, ndiff = 0;
	cJSON *j = cJSON_CreateObject();
	cJSON *ops;

	rng_seed(&rg, seed, key, "augment");
	image_init(&cur);
	image_init(&tmp);
	/* The view is IN itself until an op writes: a crop reads it where it
	 * is, an op in place gets its own copy first (own). */
	const struct image *src = in;

	cJSON_AddStringToObject(j, "recipe", r->text);
	cJSON_AddNumberToObject(j, "seed", (double)seed);
	cJSON_AddStringToObject(j, "space", "pixel");
	cJSON_AddFalseToObject(j, "preview");
	ops = cJSON_AddArrayToObject(j, "ops");

	for (int k = 0; k < r->nops; k++) {
		const struct augment_op *op = &r->ops[k];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "op", op->name);
		cJSON_AddItemToArray(ops, o);
		int applied = 1;
		if (op->kind != AUGMENT_NONE && op->kind != AUGMENT_DIFFUSION) {
			if (op->p < 1)
				applied = rng_uniform(&rg) < op->p;
			cJSON_AddBoolToObject(o, "applied", applied);
			if (!applied)
				continue;
			pixel_ops++;
		}
		switch (op->kind) {
		case AUGMENT_NONE:
			break;
		case AUGMENT_RRC: {
			int box[4];
			augment_rrc_box(&rg, src->w, src->h, op->scale, op->ratio, box);
			add_number_array(o, "box", box, 4);
			if (op->size > 0)
				image_resize_box(&tmp, src, box, op->size, op->size, RESAMPLE_BILINEAR);
			else
				crop(&tmp, src, box);
			swap_images(&cur, &tmp);
			src = &cur;
			int sz[2] = {cur.w, cur.h};
			add_number_array(o, "size", sz, 2);
			break;
		}
		case AUGMENT_JITTER: {
			/* torchvision: a random order of the four, then the
			 * factors; a strength of 0 leaves that one out. */
			int order[4] = {0, 1, 2, 3};
			for (int i = 3; i > 0; i--) {
				int m = (int)rng_below(&rg, (uint64_t)i + 1), t = order[i];
				order[i] = order[m], order[m] = t;
			}
			double strength[4] = {op->bright, op->contrast, op->sat, op->hue};
			double f[4];
			own(&cur, &src);
			cJSON *ord = cJSON_AddArrayToObject(o, "order");
			for (int i = 0; i < 4; i++)
				if (strength[order[i]] > 0)
					cJSON_AddItemToArray(ord,
							     cJSON_CreateString(jitter_names[order[i]]));
			for (int i = 0; i < 4; i++)
				if (strength[i] > 0) {
					f[i] = jitter_factor(&rg, strength[i], i == 3);
					cJSON_AddNumberToObject(o, jitter_names[i], f[i]);
				}
			for (int i = 0; i < 4; i++) {
				int w = order[i];
				if (strength[w] <= 0)
					continue;
				switch (w) {
				case 0: augment_brightness(&cur, (float)f[0]); break;
				case 1: augment_contrast(&cur, (float)f[1]); break;
				case 2: augment_saturation(&cur, (float)f[2]); break;
				case 3: augment_hue(&cur, (float)f[3]); break;
				}
			}
			break;
		}
		case AUGMENT_GRAY:
			augment_grayscale(own(&cur, &src));
			break;
		case AUGMENT_BLUR: {
			double s = rng_range(&rg, op->sigma[0], op->sigma[1]);
			cJSON_AddNumberToObject(o, "sigma", s);
			augment_gaussian_blur(own(&cur, &src), (float)s);
			break;
		}
		case AUGMENT_HFLIP:
			augment_hflip(own(&cur, &src));
			break;
		case AUGMENT_DIFFUSION: {
			double ab = augment_alpha_bar(op->schedule, op->t);
			char purpose[32];
			if (ndiff++)
				snprintf(purpose, sizeof(purpose), "diffusion.%d", ndiff);
			else
				snprintf(purpose, sizeof(purpose), "diffusion");
			cJSON_AddNumberToObject(o, "t", op->t);
			cJSON_AddStringToObject(o, "schedule",
						op->schedule == AUGMENT_LINEAR ? "linear" : "sigmoid");
			cJSON_AddStringToObject(o, "space",
						op->space == AUGMENT_PIXEL ? "pixel" : "normalized");
			cJSON_AddNumberToObject(o, "alpha_bar", ab);
			cJSON *nz = cJSON_AddObjectToObject(o, "noise");
			cJSON_AddNumberToObject(nz, "seed", (double)seed);
			cJSON_AddStringToObject(nz, "key", key);
			cJSON_AddStringToObject(nz, "purpose", purpose);
			if (op->space == AUGMENT_NORMALIZED) {
				tensor_ops++;
				break;
			}
			/* POVID: [0,1] pixels, clamped, back to bytes as
			 * torchvision's to_pil_image does (x * 255, truncated). */
			pixel_ops++;
			add_noise_pixels(own(&cur, &src), ab, seed, key, purpose);
			break;
		}
		}
	}

	own(&cur, &src);
	if (base_is_clean)
		*base_is_clean = pixel_ops == 0;
	if (tensor_ops) {
		/* Normalized-space ops act where the image becomes the model
		 * tensor, after every pixel op: the preview shows them on the
		 * view's own tensor (CLIP mean/std), clipped back to bytes. */
		struct preprocess pp;
		preprocess_defaults(&pp, 0);
		cJSON_ReplaceItemInObjectCaseSensitive(j, "space", cJSON_CreateString("normalized"));
		cJSON_ReplaceItemInObjectCaseSensitive(j, "preview", cJSON_CreateTrue());
		cJSON_AddStringToObject(j, "base", pixel_ops ? "aug.base.png" : "clean");
		if (base) {
			image_alloc(base, cur.w, cur.h);
			memcpy(base->px, cur.px, (size_t)cur.w * cur.h * 3);
		}
		long plane = (long)cur.w * cur.h;
		float *chw = xmalloc(sizeof(float) * 3 * plane);
		to_chw(chw, &cur, pp.mean, pp.std);
		augment_apply_tensor(j, key, chw, 3, cur.h, cur.w);
		from_chw(&cur, chw, pp.mean, pp.std);
		free(chw);
	}
	image_release(out);
	*out = cur;
	image_release(&tmp);
	*json = j;
}

/* ---- the tensor-space ops, for seva-generate ---- */

int augment_apply_tensor(const struct cJSON *aug_json, const char *key, float *chw, int C,
			 int H, int W)
{
	if (!aug_json)
		return 0;
	/* Written by seva-augment, but read from anywhere: what cannot be
	 * applied as written is an error, not a view equal to the clean one. */
	if (!cJSON_IsObject(aug_json))
		return error("aug.json: not an object");
	const cJSON *ops = cJSON_GetObjectItemCaseSensitive(aug_json, "ops");
	if (!ops)
		return 0;
	if (!cJSON_IsArray(ops))
		return error("aug.json: 'ops' is not an array");
	const cJSON *top_seed = cJSON_GetObjectItemCaseSensitive(aug_json, "seed");
	int k = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, ops) {
		k++;
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "op");
		if (!cJSON_IsString(name))
			return error("aug.json: op %d has no name", k);
		size_t n;
		for (n = 0; n < ARRAY_LEN(op_names); n++)
			if (!strcmp(name->valuestring, op_names[n].name))
				break;
		if (n == ARRAY_LEN(op_names))
			return error("aug.json: op %d: unknown op '%s'", k, name->valuestring);
		const cJSON *tj = cJSON_GetObjectItemCaseSensitive(o, "t");
		if (tj && !(cJSON_IsNumber(tj) && tj->valuedouble >= 0 &&
			    tj->valuedouble < AUGMENT_STEPS && tj->valuedouble == floor(tj->valuedouble)))
			return error("aug.json: op %d: t is not a step in [0, %d)", k, AUGMENT_STEPS);
		if (strcmp(name->valuestring, "diffusion"))
			continue;
		const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "space");
		if (cJSON_IsString(sp) && !strcmp(sp->valuestring, "pixel"))
			continue;
		if (sp && !(cJSON_IsString(sp) && !strcmp(sp->valuestring, "normalized")))
			return error("aug.json: op %d: bad space", k);

		double ab;
		const cJSON *abj = cJSON_GetObjectItemCaseSensitive(o, "alpha_bar");
		if (abj) {
			if (!cJSON_IsNumber(abj) || !(abj->valuedouble >= 0 && abj->valuedouble <= 1))
				return error("aug.json: op %d: alpha_bar not a number in [0, 1]", k);
			ab = abj->valuedouble;
		} else {
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "t");
			const cJSON *sch = cJSON_GetObjectItemCaseSensitive(o, "schedule");
			if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble >= AUGMENT_STEPS)
				return error("aug.json: op %d: no alpha_bar and no t in [0, %d)", k,
					     AUGMENT_STEPS);
			int lin = cJSON_IsString(sch) && !strcmp(sch->valuestring, "linear");
			ab = augment_alpha_bar(lin ? AUGMENT_LINEAR : AUGMENT_SIGMOID,
					       (int)t->valuedouble);
		}

		const cJSON *nz = cJSON_GetObjectItemCaseSensitive(o, "noise");
		const cJSON *s = nz ? cJSON_GetObjectItemCaseSensitive(nz, "seed") : top_seed;
		const cJSON *kk = nz ? cJSON_GetObjectItemCaseSensitive(nz, "key") : NULL;
		const cJSON *pp = nz ? cJSON_GetObjectItemCaseSensitive(nz, "purpose") : NULL;
		if (!s)
			s = top_seed;
		if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble >= 0x1p64)
			return error("aug.json: op %d: no usable noise seed", k);
		if ((kk && !cJSON_IsString(kk)) || (pp && !cJSON_IsString(pp)))
			return error("aug.json: op %d: noise key/purpose not strings", k);
		add_noise(chw, (long)C * H * W, ab, (uint64_t)s->valuedouble,
			  kk ? kk->valuestring : key, pp ? pp->valuestring : "diffusion");
	}
	return 0;
}

const char *augment_base_field(const struct cJSON *aug_json, int has_aug_png)
{
	const cJSON *pv = aug_json ? cJSON_GetObjectItemCaseSensitive(aug_json, "preview") : NULL;
	if (cJSON_IsTrue(pv)) {
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(aug_json, "base");
		if (cJSON_IsString(b) && strcmp(b->valuestring, "clean"))
			return b->valuestring;
		return NULL;
	}
	return has_aug_png ? "aug.png" : NULL;
}
