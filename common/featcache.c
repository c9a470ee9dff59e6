/* featcache.c — see featcache.h for the directory and the file format. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache.h"
#include "sha256.h"
#include "tensor.h"
#include "util.h"

enum { FC_HEADER = 128, FC_VERSION = 1 };
static const char fc_magic[8] = { 'S', 'E', 'V', 'A', 'F', 'E', 'A', 'T' };
static const char *const fc_prec_name[2] = { "f32", "bf16" };

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void hex_of(const unsigned char d[32], char hex[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* Every config field the tower's output depends on, then every tower
 * tensor: the same numbers give the same digest whatever file they came
 * from; another layer count, feature layer or weight does not. */
void featcache_tower_digest(const struct vlm *m, unsigned char out[32])
{
	const struct vlm_config *c = &m->cfg;
	struct sha256 h;
	char text[512];
	uint32_t eps;
	memcpy(&eps, &c->v_eps, sizeof eps);
	int n = snprintf(text, sizeof text,
			 "seva featcache tower 1: image %d patch %d channels %d hidden %d inter %d "
			 "layers %d used %d heads %d act %d eps %08x feature_layer %d drop_cls %d "
			 "cls %d pre_ln %d post_ln %d patch_bias %d frac_pos %d ft %d",
			 c->image_size, c->patch_size, c->num_channels, c->v_hidden, c->v_inter,
			 c->v_layers, c->v_used, c->v_heads, (int)c->v_act, eps, c->feature_layer,
			 c->drop_cls, c->v_cls, c->v_pre_ln, c->v_post_ln, c->v_patch_bias,
			 c->v_frac_pos, c->feat_tokens);
	sha256_init(&h);
	sha256_update(&h, text, (size_t)n + 1);
	for (int i = 0; i < m->ntensors; i++) {
		const struct vlm_tensor *t = &m->tensors[i];
		if (t->part != VLM_PART_VISION)
			continue;
		n = snprintf(text, sizeof text, "%s %d %ld %ld %ld %ld", t->name, t->ndim, t->shape[0],
			     t->shape[1], t->shape[2], t->shape[3]);
		sha256_update(&h, text, (size_t)n + 1);
		sha256_update(&h, t->data, (size_t)t->numel * sizeof(float));
	}
	sha256_final(&h, out);
}

int featcache_open(struct featcache *fc, const char *dir, const struct vlm *m, int keep)
{
	struct stat st;
	memset(fc, 0, sizeof *fc);
	if (mkdir_p(dir) < 0)
		return -1;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return error("%s:", dir);
	}
	fc->dir = xstrdup(dir);
	fc->m = m;
	fc->keep = keep;
	fc->precision = tensor_precision();
	fc->bf16 = vlm_features_bf16_exact(m);
	fc->ft = m->cfg.feat_tokens;
	fc->vc = m->cfg.v_hidden;
	featcache_tower_digest(m, fc->tower);
	return 0;
}

void featcache_close(struct featcache *fc)
{
	free(fc->dir);
	fc->dir = NULL;
}

static size_t payload_bytes(const struct featcache *fc)
{
	return (size_t)fc->ft * fc->vc * (fc->bf16 ? 2 : 4);
}

/* The header of a file of FC for the image IMG and payload digest PD. */
static void header_make(const struct featcache *fc, unsigned char *h, const unsigned char img[32],
			const unsigned char pd[32])
{
	memset(h, 0, FC_HEADER);
	memcpy(h, fc_magic, 8);
	put_u32(h + 8, FC_VERSION);
	put_u32(h + 12, (uint32_t)fc->bf16);
	put_u32(h + 16, (uint32_t)fc->precision);
	put_u32(h + 20, (uint32_t)fc->ft);
	put_u32(h + 24, (uint32_t)fc->vc);
	memcpy(h + 32, fc->tower, 32);
	memcpy(h + 64, img, 32);
	memcpy(h + 96, pd, 32);
}

/* Why the header H (of a file of SIZE bytes) is not one FC may use for
 * IMG; NULL when it is. The payload's digest is checked after. */
static const char *header_why(const struct featcache *fc, const unsigned char *h, size_t size,
			      const unsigned char img[32], char *msg, size_t n)
{
	char a[65], b[65];
	if (size < FC_HEADER || memcmp(h, fc_magic, 8))
		return "not a feature cache file (no SEVAFEAT header)";
	if (get_u32(h + 8) != FC_VERSION) {
		snprintf(msg, n, "format version %u, this seva reads %d", get_u32(h + 8), FC_VERSION);
		return msg;
	}
	if (memcmp(h + 32, fc->tower, 32)) {
		hex_of(h + 32, a);
		hex_of(fc->tower, b);
		snprintf(msg, n, "made by another vision tower (digest %.16s, this model's %.16s): "
			 "a cache directory serves one tower", a, b);
		return msg;
	}
	uint32_t prec = get_u32(h + 16), dt = get_u32(h + 12);
	if (prec > 1 || (int)prec != fc->precision) {
		snprintf(msg, n, "the tower ran in %s there, this run's products are %s",
			 prec <= 1 ? fc_prec_name[prec] : "an unknown precision",
			 fc_prec_name[fc->precision]);
		return msg;
	}
	if (dt > 1 || (int)dt != fc->bf16) {
		snprintf(msg, n, "features stored as %s, this model reads them as %s",
			 dt <= 1 ? fc_prec_name[dt] : "an unknown type", fc_prec_name[fc->bf16]);
		return msg;
	}
	if ((int)get_u32(h + 20) != fc->ft || (int)get_u32(h + 24) != fc->vc) {
		snprintf(msg, n, "features of %u x %u, this model's are %d x %d", get_u32(h + 20),
			 get_u32(h + 24), fc->ft, fc->vc);
		return msg;
	}
	if (memcmp(h + 64, img, 32))
		return "the features of another image (the header's image digest is not its name's)";
	if (size != FC_HEADER + payload_bytes(fc)) {
		snprintf(msg, n, "%zu bytes, %zu expected (truncated or extended)", size,
			 FC_HEADER + payload_bytes(fc));
		return msg;
	}
	return NULL;
}

/* Reads PATH into FEAT (FT * VC floats): 1 read, 0 absent, -1 refused
 * (the message printed; counted by the caller). */
static int file_read(struct featcache *fc, const char *path, const unsigned char img[32],
		     float *feat)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return error("%s:", path);
	}
	struct stat st;
	const char *why = NULL;
	char msg[256];
	unsigned char *buf = NULL;
	size_t size = 0;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return error("%s:", path);
	}
	if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	else if ((size_t)st.st_size != FC_HEADER + payload_bytes(fc) && st.st_size < FC_HEADER)
		why = "shorter than a header (truncated)";
	if (!why) {
		/* at most the size a valid file has, plus one byte to see more */
		size_t want = FC_HEADER + payload_bytes(fc) + 1;
		buf = xmalloc(want);
		ssize_t r;
		while (size < want && (r = read(fd, buf + size, want - size)) != 0) {
			if (r < 0) {
				if (errno == EINTR)
					continue;
				free(buf);
				close(fd);
				return error("%s: read:", path);
			}
			size += (size_t)r;
		}
		why = header_why(fc, buf, size, img, msg, sizeof msg);
	}
	close(fd);
	if (!why) {
		unsigned char pd[32];
		const unsigned char *p = buf + FC_HEADER;
		struct sha256 h;
		sha256_init(&h);
		sha256_update(&h, p, payload_bytes(fc));
		sha256_final(&h, pd);
		if (memcmp(pd, buf + 96, 32))
			why = "the payload's digest does not match its header (the file was changed)";
		else if (fc->bf16)
			for (long i = 0; i < (long)fc->ft * fc->vc; i++)
				feat[i] = bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		else
			for (long i = 0; i < (long)fc->ft * fc->vc; i++) {
				uint32_t u = get_u32(p + 4 * i);
				memcpy(&feat[i], &u, 4);
			}
	}
	free(buf);
	if (why)
		return error("%s: %s", path, why);
	return 1;
}

/* FEAT (FT * VC) as PATH, whole or not at all. */
static int file_write(struct featcache *fc, const char *path, const unsigned char img[32],
		      const float *feat)
{
	size_t np = payload_bytes(fc), nv = (size_t)fc->ft * fc->vc;
	unsigned char *buf = xmalloc(FC_HEADER + np), *p = buf + FC_HEADER;
	if (fc->bf16)
		for (size_t i = 0; i < nv; i++) {
			uint16_t b = f32_to_bf16(feat[i]);
			p[2 * i] = (unsigned char)b;
			p[2 * i + 1] = (unsigned char)(b >> 8);
		}
	else
		for (size_t i = 0; i < nv; i++) {
			uint32_t u;
			memcpy(&u, &feat[i], 4);
			put_u32(p + 4 * i, u);
		}
	unsigned char pd[32];
	struct sha256 h;
	sha256_init(&h);
	sha256_update(&h, p, np);
	sha256_final(&h, pd);
	header_make(fc, buf, img, pd);
	int rc = write_file_atomic(path, buf, FC_HEADER + np);
	free(buf);
	return rc;
}

int featcache_get(struct featcache *fc, struct vlm *m, const float *const *images, int n,
		  float *feat)
{
	const struct vlm_config *c = &m->cfg;
	int S = c->image_size;
	size_t img = 3 * (size_t)S * S, rows = (size_t)fc->ft * fc->vc;
	if (m != fc->m || (m->trainable & VLM_PART_VISION))
		return error("%s: the feature cache serves the frozen tower it was opened with", fc->dir);
	unsigned char (*dig)[32] = xmalloc((size_t)(n ? n : 1) * sizeof *dig);
	char **path = xcalloc((size_t)(n ? n : 1), sizeof *path);
	int *miss = xmalloc((size_t)(n ? n : 1) * sizeof *miss), nm = 0, rc = -1;
	int *store = xcalloc((size_t)(n ? n : 1), sizeof *store);
	for (int i = 0; i < n; i++) {
		char hex[65];
		struct sha256 h;
		sha256_init(&h);
		sha256_update(&h, images[i], img * sizeof(float));
		sha256_final(&h, dig[i]);
		hex_of(dig[i], hex);
		path[i] = xasprintf("%s/%s.feat", fc->dir, hex);
		int r = file_read(fc, path[i], dig[i], feat + i * rows);
		if (r > 0) {
			fc->hits++;
			continue;
		}
		if (r < 0) {
			fc->refused++;
			if (!fc->keep)
				goto out;
		}
		fc->misses++;
		store[i] = r == 0; /* a refused file is left as it is */
		miss[nm++] = i;
	}
	if (nm > 0) {
		/* the misses through the tower alone: one image token each */
		float *pix = xmalloc((size_t)nm * img * sizeof(float));
		int tok = c->image_token_index, *one = xmalloc((size_t)nm * sizeof(int));
		const int **ids = xmalloc((size_t)nm * sizeof *ids);
		int *image_of = xmalloc((size_t)nm * sizeof(int));
		for (int k = 0; k < nm; k++) {
			memcpy(pix + k * img, images[miss[k]], img * sizeof(float));
			one[k] = 1;
			ids[k] = &tok;
			image_of[k] = k;
		}
		struct vlm_batch vb = { .B = nm, .ids = ids, .len = one, .n_images = nm,
					.images = pix, .image_of = image_of };
		int ni = 0, nt = 0;
		const float *got = NULL;
		if (vlm_forward_features(m, &vb, 1) == 0)
			got = vlm_image_features(m, &ni, &nt);
		free(pix);
		free(one);
		free(ids);
		free(image_of);
		if (!got || ni != nm || nt != fc->ft) {
			error("%s: the vision tower gave no features for %d images", fc->dir, nm);
			goto out;
		}
		for (int k = 0; k < nm; k++) {
			float *dst = feat + miss[k] * rows;
			memcpy(dst, got + k * rows, rows * sizeof(float));
			if (store[miss[k]] && file_write(fc, path[miss[k]], dig[miss[k]], dst) < 0)
				goto out;
			/* what a later read of the file gives: the same run either way */
			if (fc->bf16)
				for (size_t j = 0; j < rows; j++)
					dst[j] = bf16_to_f32(f32_to_bf16(dst[j]));
		}
	}
	rc = 0;
out:
	for (int i = 0; i < n; i++)
		free(path[i]);
	free(path);
	free(dig);
	free(miss);
	free(store);
	return rc;
}

void featcache_key(const struct featcache *fc, const float *image, struct featcache_key *k)
{
	struct sha256 h;
	size_t S = (size_t)fc->m->cfg.image_size;
	sha256_init(&h);
	sha256_update(&h, image, 3 * S * S * sizeof(float));
	sha256_final(&h, k->d);
}

int featcache_fill(struct featcache *fc, struct vlm *m, const float *image, struct featcache_key *k)
{
	float *scratch = xmalloc((size_t)fc->ft * fc->vc * sizeof(float));
	long refused = fc->refused;
	int rc = featcache_get(fc, m, &image, 1, scratch);
	free(scratch);
	if (rc < 0)
		return -1;
	featcache_key(fc, image, k);
	return fc->refused == refused;
}

int featcache_read(struct featcache *fc, const struct featcache_key *k, int n, float *feat)
{
	size_t rows = (size_t)fc->ft * fc->vc;
	for (int i = 0; i < n; i++) {
		char hex[65];
		hex_of(k[i].d, hex);
		char *path = xasprintf("%s/%s.feat", fc->dir, hex);
		int r = file_read(fc, path, k[i].d, feat + i * rows);
		if (r == 0)
			error("%s: gone (it was there when this run started)", path);
		free(path);
		if (r <= 0)
			return -1;
		fc->hits++;
	}
	return 0;
}

void featcache_report(const struct featcache *fc, int quiet)
{
	if (!fc->dir)
		return;
	if (!quiet)
		warn("%s: features of %ld images read, %ld encoded (%s)", fc->dir, fc->hits,
		     fc->misses, fc->bf16 ? "bf16" : "f32");
	if (fc->refused)
		warn("%s: %ld files refused and encoded again (-k): see the messages above", fc->dir,
		     fc->refused);
}
