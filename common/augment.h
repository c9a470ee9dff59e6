/* augment — the image augmentations of DESIGN sec. 3: recipes, their ops
 * with torchvision-on-PIL semantics, SeVa's diffusion noise, and aug.json.
 * Every random parameter of a sample is drawn from
 * rng_seed(seed, key, "augment"); diffusion noise from
 * rng_seed(seed, key, "diffusion"). Uses image, rng, util and cJSON. */
#ifndef SEVA_AUGMENT_H
#define SEVA_AUGMENT_H

#include <stdint.h>

#include "image.h"
#include "rng.h"

struct cJSON;

enum augment_kind {
	AUGMENT_NONE,      /* identity: the control for ablations */
	AUGMENT_RRC,       /* RandomResizedCrop ("rrc"; "crop" is rrc:scale=0.01-0.2) */
	AUGMENT_JITTER,    /* ColorJitter in RandomApply */
	AUGMENT_GRAY,      /* RandomGrayscale */
	AUGMENT_BLUR,      /* MoCo v2's GaussianBlur in RandomApply */
	AUGMENT_HFLIP,     /* RandomHorizontalFlip */
	AUGMENT_DIFFUSION, /* forward noising x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps */
};

enum augment_schedule { AUGMENT_SIGMOID, AUGMENT_LINEAR };
/* Where diffusion adds its noise: the model's normalized input tensor
 * (SeVa; applied by seva-generate) or [0,1] pixels (POVID; baked in). */
enum augment_space { AUGMENT_NORMALIZED, AUGMENT_PIXEL };

#define AUGMENT_STEPS 1000

struct augment_op {
	enum augment_kind kind;
	const char *name;    /* as written: "rrc", "crop", "jitter", ... */
	double p;            /* probability the op is applied */
	int size;            /* rrc: output side (0: the crop's own size) */
	double scale[2];     /* rrc: area fraction range */
	double ratio[2];     /* rrc: aspect ratio range */
	double bright, contrast, sat, hue; /* jitter strengths (0: off) */
	double sigma[2];     /* blur: radius range */
	int t;               /* diffusion step, 0-based, < AUGMENT_STEPS */
	enum augment_schedule schedule;
	enum augment_space space;
};

struct augment_recipe {
	char *text;          /* the recipe as given */
	struct augment_op *ops;
	int nops;
};

/* The default recipe: SeVa's. */
#define AUGMENT_DEFAULT "diffusion:t=500"

/* Parses TEXT ("mocov2", "rrc:scale=0.2-1,hflip", ...) into R. Returns -1
 * with a message "recipe 'TEXT': WHAT" printed (R left empty). */
int augment_parse(struct augment_recipe *r, const char *text);
void augment_release(struct augment_recipe *r);

/* Applies R to IN for the sample (SEED, KEY). OUT receives the view that
 * becomes aug.png; *JSON the aug.json object (caller frees with
 * cJSON_Delete). If the recipe has normalized-space ops, OUT is a preview
 * (the noise applied to the view's own normalized tensor, clipped to 8
 * bits), "preview" is true in the JSON, and BASE (if not NULL) receives the
 * view before those ops — the image the model tensor must be made from —
 * which is IN itself when no pixel op ran (*base_is_clean set to 1 then).
 * Reentrant: threads may run it on different samples. */
void augment_apply(const struct augment_recipe *r, uint64_t seed, const char *key,
		   const struct image *in, struct image *out, struct image *base,
		   int *base_is_clean, struct cJSON **json);

/* Applies every tensor-space op named in AUG_JSON (an aug.json object) to
 * the normalized CHW tensor (C, H, W) in place: x = sqrt(ab) x +
 * sqrt(1 - ab) eps, eps ~ N(0, 1) drawn in CHW order from
 * rng_seed(noise.seed, noise.key, noise.purpose) of the op (KEY if the op
 * names none). Returns 0 (also when there is nothing to apply), or -1 with a
 * message on a malformed aug.json.
 *
 * Which image the tensor is made from: augment_base_field() says. When
 * "preview" is true, aug.png already carries the noise and must not be
 * used as the start. */
int augment_apply_tensor(const struct cJSON *aug_json, const char *key, float *chw, int C,
			 int H, int W);

/* The field the rejected view's tensor starts from: NULL for the clean
 * image, else a field name ("aug.png" for pixel-space recipes and
 * third-party augmenters, "aug.base.png" when aug.png is a preview over
 * pixel ops). AUG_JSON may be NULL (then "aug.png" if HAS_AUG_PNG). */
const char *augment_base_field(const struct cJSON *aug_json, int has_aug_png);

/* alpha_bar_t = prod_{i <= t} (1 - beta_i), t 0-based (torch.cumprod[t]). */
double augment_alpha_bar(enum augment_schedule s, int t);

/* The pieces, in place on 8-bit RGB, as torchvision 0.14 runs them on PIL
 * images (PIL's ImageEnhance blends, truncation, L = ITU-R 601-2 with
 * PIL's 16-bit fixed point, HSV round trip for hue, the 3-pass extended
 * box blur of ImageFilter.GaussianBlur). */
void augment_brightness(struct image *im, float factor);
void augment_contrast(struct image *im, float factor);
void augment_saturation(struct image *im, float factor);
void augment_hue(struct image *im, float shift); /* shift in [-0.5, 0.5] */
void augment_grayscale(struct image *im);
void augment_gaussian_blur(struct image *im, float radius);
void augment_hflip(struct image *im);
/* RandomResizedCrop.get_params: box = {x, y, w, h} inside W x H. */
void augment_rrc_box(struct rng *r, int W, int H, const double scale[2], const double ratio[2],
		     int box[4]);

#endif
