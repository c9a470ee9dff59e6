/* featcache — the frozen vision tower's output kept on disk, so that an
 * image is encoded once for its generation, the DPO reference's pass and
 * every policy step (the tower is most of SeVa's time on SmolVLM).
 *
 * A cache is a directory of files, one per preprocessed image, named by
 * the SHA-256 of the model's input tensor (3, S, S floats): DIR/HEX.feat.
 * A file holds the features as the connector reads them (FT rows of VC),
 * f32, or bf16 where that changes no bit (vlm_features_bf16_exact), and a
 * header that binds them to their tower: the digest of the tower's config
 * and weights, the precision its products ran in, the image's digest, the
 * shape and the payload's own digest. A file that does not match this
 * model in every field is refused with its name, never used; with -k it is
 * a counted miss (the tower runs, the file is left as it is). Files are
 * written whole (out_file: NAME.tmp.PID renamed), so parallel runs can
 * fill one cache.
 *
 * Format (little-endian), 128 bytes of header then the payload:
 *   0 "SEVAFEAT"  8 version (u32)  12 dtype (0 f32, 1 bf16)
 *   16 precision of the tower (0 f32, 1 bf16)  20 FT  24 VC  28 zero
 *   32 tower digest  64 image digest  96 payload digest (32 bytes each)
 *   128 FT * VC values.
 * Depends on vlm, tensor, sha256, util. */
#ifndef SEVA_FEATCACHE_H
#define SEVA_FEATCACHE_H

#include "vlm.h"

struct featcache {
	char *dir;
	const struct vlm *m;         /* the model whose tower it serves */
	unsigned char tower[32];     /* digest of its config and weights */
	int precision;               /* TENSOR_F32 or TENSOR_BF16, at open */
	int bf16;                    /* files store bf16 (exact for this model) */
	int ft, vc;                  /* rows per image, their width */
	int keep;                    /* -k: a refused file is a miss */
	long hits, misses, refused;  /* per image asked */
};

/* Opens (making it if need be) the cache DIR for M's tower under the
 * precision in use now (call after tensor_set_precision and the load).
 * KEEP: refused files are counted misses instead of errors. -1 with a
 * message naming DIR. */
int featcache_open(struct featcache *fc, const char *dir, const struct vlm *m, int keep);
void featcache_close(struct featcache *fc);

/* FEAT (N, FT, VC) = the vision features of IMAGES[0..N) (each 3, S, S): read
 * where DIR has them, the others encoded by one pass of the tower over
 * them (vlm_forward_features, which replaces M's kept forward) and
 * written to DIR. The model must be the one the cache was opened for,
 * its tower frozen and unchanged. -1 with a message naming the file. */
int featcache_get(struct featcache *fc, struct vlm *m, const float *const *images, int n,
		  float *feat);
/* An image's name in the cache: the SHA-256 of its input tensor. For a
 * tool that keeps many images' features on disk rather than their pixels
 * in memory (seva-dpo: 3 MiB a SmolVLM image). */
struct featcache_key {
	unsigned char d[32];
};
void featcache_key(const struct featcache *fc, const float *image, struct featcache_key *k);
/* Makes DIR hold IMAGE's features (featcache_get of one image) and sets *K
 * to its name: 1 when the file is there and sound, so the pixels can go; 0
 * when -k refused it (keep the pixels: featcache_get encodes them again
 * each time); -1 with a message. */
int featcache_fill(struct featcache *fc, struct vlm *m, const float *image,
		   struct featcache_key *k);
/* FEAT (N, FT, VC) of the files K (N) that featcache_fill made sure of: a
 * file gone or changed since is an error naming it, even with -k. */
int featcache_read(struct featcache *fc, const struct featcache_key *k, int n, float *feat);

/* The closing line on stderr: images read and encoded (unless QUIET),
 * and, even when quiet, how many files -k refused. */
void featcache_report(const struct featcache *fc, int quiet);

/* The digest of M's vision tower: its config's tower fields and every
 * VLM_PART_VISION tensor's name, shape and values. */
void featcache_tower_digest(const struct vlm *m, unsigned char out[32]);

#endif
