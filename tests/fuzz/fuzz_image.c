/* fuzz_image — libFuzzer harness for the image decoders (libjpeg-turbo,
 * libpng, the refusal of every other format) and the model's preprocessing
 * of what they decode in its three modes (pad to square, shortest edge and
 * crop, plain resize): the pixel cap must hold at every step. */
#include <stdint.h>
#include <stdlib.h>

#include "image.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct image im;
	const char *err;
	progname = "fuzz";
	if (image_decode(&im, data, size, &err) < 0) {
		if (im.px || !err || !*err)
			abort(); /* a refusal allocates nothing and says why */
		return 0;
	}
	if (im.w <= 0 || im.h <= 0 || (long)im.w * im.h > IMAGE_MAX_PIXELS || !im.px)
		abort();
	/* Large images decode (under the cap); preprocessing them only costs
	 * time, the checks below are the same at any size. */
	if ((long)im.w * im.h <= 1L << 20) {
		static const enum preprocess_mode modes[] = {PREPROCESS_PAD_RESIZE,
							     PREPROCESS_SHORTEST_CROP, PREPROCESS_RESIZE};
		float *t = xmalloc(sizeof(float) * 3 * 16 * 16);
		for (int k = 0; k < 3; k++) {
			struct preprocess p;
			preprocess_defaults(&p, 16);
			p.mode = modes[k];
			p.resample = k == 2 ? RESAMPLE_BILINEAR : RESAMPLE_BICUBIC;
			image_preprocess(t, &im, &p, &err);
		}
		free(t);
	}
	image_release(&im);
	return 0;
}
