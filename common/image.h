/* image — decode (JPEG through libjpeg-turbo, PNG through libpng; nothing
 * else), PNG encode, resize (bilinear and PIL-compatible bicubic), pad to
 * square, centre crop, and the model's input tensor (normalized CHW
 * float). Uses util, libjpeg and libpng. */
#ifndef SEVA_IMAGE_H
#define SEVA_IMAGE_H

#include <stddef.h>

/* Decoded images larger than this are refused before allocation (a header
 * that claims 60000x60000 is an attack or a mistake, not a photo). */
#define IMAGE_MAX_PIXELS (64L * 1024 * 1024)

/* 8-bit RGB, interleaved, row-major: px[(y * w + x) * 3 + c]. */
struct image {
	int w, h;
	unsigned char *px;
};

/* Float RGB in [0,1] (may leave the range mid-pipeline), interleaved HWC. */
struct fimage {
	int w, h;
	float *px;
};

void image_init(struct image *im);
void image_release(struct image *im);
void fimage_init(struct fimage *im);
void fimage_release(struct fimage *im);
void image_alloc(struct image *im, int w, int h);
void fimage_alloc(struct fimage *im, int w, int h);

/* Decodes the JPEG or PNG in BUF into IM (RGB; grey, palette and alpha
 * converted as PIL's convert("RGB")). Returns -1 with a reason in ERR
 * (static, per thread: "unsupported format 'gif' ...", "image too large:
 * 70000x70000", "PNG: IDAT: CRC error") and nothing allocated. Checks the
 * header dimensions against IMAGE_MAX_PIXELS before decoding. */
int image_decode(struct image *im, const void *buf, size_t len, const char **err);
/* PNG bytes, malloc'd. Returns -1 on failure. */
int image_encode_png(const struct image *im, unsigned char **out, size_t *len);

void image_to_float(struct fimage *out, const struct image *in);
/* Rounds half to even and clips to [0,255]. */
void image_from_float(struct image *out, const struct fimage *in);

enum resample { RESAMPLE_BILINEAR, RESAMPLE_BICUBIC, RESAMPLE_LANCZOS };
/* Resizes as PIL's Image.resize does (antialiased when shrinking, support
 * scaled by the ratio), on 8-bit data with PIL's rounding. */
void image_resize(struct image *out, const struct image *in, int w, int h, enum resample mode);
/* The same with Pillow 13's choice of which pass runs first. */
void image_resize_pil13(struct image *out, const struct image *in, int w, int h,
			enum resample mode);
/* The same for the window BOX = {x, y, w, h} of IN: the bytes of cropping
 * it out, then image_resize, without the copy. */
void image_resize_box(struct image *out, const struct image *in, const int box[4], int w, int h,
		      enum resample mode);
/* Float version (torchvision on tensors / antialias=True semantics). */
void fimage_resize(struct fimage *out, const struct fimage *in, int w, int h, enum resample mode);
/* DST (W rows of H pixels) = the transpose of SRC (H rows of W pixels),
 * 3 bytes a pixel. */
void image_transpose_px(unsigned char *dst, const unsigned char *src, int w, int h);
/* Centred in a square of side max(w,h) filled with RGB (LLaVA's expand2square). */
void image_pad_square(struct image *out, const struct image *in, const unsigned char rgb[3]);
/* Centre crop to w x h as torchvision's center_crop (offsets round()). */
void image_center_crop(struct image *out, const struct image *in, int w, int h);

/* What preprocessor_config.json says (CLIPImageProcessor fields). */
enum preprocess_mode {
	/* LLaVA-1.5: pad to square with the mean colour, resize to size. The
	 * colour is int(mean * 255), truncated as LLaVA's expand2square call
	 * writes it ((122, 116, 104) for CLIP), not rounded. */
	PREPROCESS_PAD_RESIZE,
	PREPROCESS_SHORTEST_CROP,  /* llava-hf: resize shortest edge to size, centre crop crop_size */
	PREPROCESS_RESIZE,         /* plain resize to size x size */
	/* Idefics3 without image splitting: the longest edge resized to size
	 * (the other by the aspect ratio, rounded up to even), then that image
	 * resized to the crop_size square. */
	PREPROCESS_LONGEST_SQUARE,
};
struct preprocess {
	enum preprocess_mode mode;
	int size;        /* resize target (square side, shortest or longest edge) */
	int crop_size;   /* centre crop side (SHORTEST_CROP) */
	enum resample resample;
	float rescale;   /* 1/255 */
	float mean[3], std[3];
};
/* CLIP defaults: 336, bicubic, OpenAI CLIP mean/std, PAD_RESIZE. */
void preprocess_defaults(struct preprocess *p, int size);
/* Output side length of the tensor preprocess() makes. */
int preprocess_side(const struct preprocess *p);
/* IM → normalized CHW float tensor OUT (3 * side * side floats). Returns -1
 * with the reason in ERR (static, per thread) when an image it would make
 * on the way (the padded square, the shortest-edge resize) is over
 * IMAGE_MAX_PIXELS; nothing is allocated then. */
int image_preprocess(float *out, const struct image *im, const struct preprocess *p,
		     const char **err);
/* The inverse for previews: CHW normalized → 8-bit image (clipped). */
void image_from_tensor(struct image *out, const float *chw, int side, const struct preprocess *p);

#endif
