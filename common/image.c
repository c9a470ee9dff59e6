#include "image.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>

#include <jpeglib.h>
#include <png.h>

#include "util.h"

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

/*
 * Decoding: which bytes seva trusts to which library (seva-record(5)).
 * Images come from anywhere, so each format has one decoder that is
 * maintained for hostile input and nothing else gets a second try:
 * JPEG through libjpeg-turbo (with the settings PIL decodes with: the
 * accurate integer IDCT, fancy upsampling, so the pixels are PIL's), PNG
 * through libpng (chunk CRCs checked, truncation refused). Whatever the
 * library warns about — corrupt data, a premature end — is an error, not
 * a best effort. Every other format is refused by name.
 */

/* libjpeg-turbo decodes each scan of a progressive JPEG over the whole
 * image; a few hundred bytes of extra scans can cost minutes. Real
 * encoders write around ten (djpeg's -maxscans exists for this). */
#define JPEG_MAX_SCANS 256

struct jpeg_err {
	struct jpeg_error_mgr mgr;
	struct jpeg_progress_mgr progress;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr c)
{
	struct jpeg_err *e = (struct jpeg_err *)c->err;
	c->err->format_message(c, e->msg);
	longjmp(e->jb, 1);
}

/* Level -1 is a warning about the data (premature end, extraneous bytes,
 * a bad Huffman code): libjpeg would fill in what is missing. */
static void jpeg_message(j_common_ptr c, int level)
{
	if (level < 0)
		jpeg_fail(c);
}

static void jpeg_scans(j_common_ptr c)
{
	struct jpeg_err *e = (struct jpeg_err *)c->err;
	if (((j_decompress_ptr)c)->input_scan_number > JPEG_MAX_SCANS) {
		snprintf(e->msg, sizeof e->msg, "more than %d scans", JPEG_MAX_SCANS);
		longjmp(e->jb, 1);
	}
}

/* PIL's CMYK → RGB (Convert.c cmyk2rgb) on JPEG's inverted (Adobe) CMYK,
 * which PIL assumes for every CMYK JPEG: with nk = 255 - k,
 * out = nk - round(c * nk / 255). */
static unsigned char cmyk_channel(unsigned char raw_c, unsigned char raw_k)
{
	int nk = raw_k, c = 255 - raw_c, t = c * nk + 128;
	return (unsigned char)(nk - (((t >> 8) + t) >> 8));
}

static int decode_jpeg(struct image *im, const unsigned char *buf, size_t len, char *msg,
		       size_t msgn)
{
	struct jpeg_decompress_struct ci;
	struct jpeg_err je;
	unsigned char *volatile px = NULL, *volatile row = NULL;

	ci.err = jpeg_std_error(&je.mgr);
	je.mgr.error_exit = jpeg_fail;
	je.mgr.emit_message = jpeg_message;
	je.progress.progress_monitor = jpeg_scans;
	je.msg[0] = 0;
	if (setjmp(je.jb)) {
		jpeg_destroy_decompress(&ci);
		free(px);
		free(row);
		if (!*msg)
			snprintf(msg, msgn, "JPEG: %s", je.msg);
		return -1;
	}
	jpeg_create_decompress(&ci);
	ci.progress = &je.progress;
	jpeg_mem_src(&ci, buf, (unsigned long)len);
	jpeg_read_header(&ci, TRUE);
	unsigned long w = ci.image_width, h = ci.image_height;
	if ((double)w * h > IMAGE_MAX_PIXELS) {
		snprintf(msg, msgn, "image too large: %lux%lu", w, h);
		longjmp(je.jb, 1);
	}
	int cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
	ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
	jpeg_start_decompress(&ci);
	if (ci.output_components != (cmyk ? 4 : 3) || ci.output_width != w ||
	    ci.output_height != h) {
		snprintf(msg, msgn, "JPEG: unexpected output layout");
		longjmp(je.jb, 1);
	}
	px = xmalloc((size_t)w * h * 3);
	if (cmyk)
		row = xmalloc((size_t)w * 4);
	while (ci.output_scanline < ci.output_height) {
		JSAMPROW rows[16];
		unsigned y = ci.output_scanline;
		if (cmyk) {
			rows[0] = row;
			jpeg_read_scanlines(&ci, rows, 1);
			unsigned char *o = px + (size_t)y * w * 3;
			for (unsigned long x = 0; x < w; x++)
				for (int c = 0; c < 3; c++)
					o[3 * x + c] = cmyk_channel(row[4 * x + c], row[4 * x + 3]);
			continue;
		}
		int n = (int)(ci.output_height - y);
		n = n < 16 ? n : 16;
		for (int i = 0; i < n; i++)
			rows[i] = px + (size_t)(y + i) * w * 3;
		jpeg_read_scanlines(&ci, rows, (JDIMENSION)n);
	}
	jpeg_finish_decompress(&ci);
	jpeg_destroy_decompress(&ci);
	free(row);
	im->w = (int)w;
	im->h = (int)h;
	im->px = px;
	return 0;
}

struct png_src {
	const unsigned char *p;
	size_t n, pos;
	char msg[128];
};

static void png_fail(png_structp png, png_const_charp m)
{
	struct png_src *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", m);
	png_longjmp(png, 1);
}

/* What is left as a warning once CRC and benign errors are errors: notes
 * about ancillary chunks (an sRGB profile libpng dislikes). The pixels are
 * whole. */
static void png_note(png_structp png, png_const_charp m)
{
	(void)png;
	(void)m;
}

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
	struct png_src *s = png_get_io_ptr(png);
	if (n > s->n - s->pos)
		png_error(png, "truncated");
	memcpy(out, s->p + s->pos, n);
	s->pos += n;
}

/* PIL's convert("RGB"): palette expanded, grey replicated, alpha dropped
 * (not composited), 16 bits cut to the high byte; no gamma applied. */
static int decode_png(struct image *im, const unsigned char *buf, size_t len, char *msg,
		      size_t msgn)
{
	struct png_src src = {buf, len, 0, ""};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_note);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	unsigned char *volatile px = NULL;
	png_bytep *volatile rows = NULL;
	if (!info)
		die("out of memory");
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, NULL);
		free(px);
		free(rows);
		if (!*msg)
			snprintf(msg, msgn, "PNG: %s", src.msg);
		return -1;
	}
	png_set_read_fn(png, &src, png_read_mem);
	png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
	png_set_benign_errors(png, 0);
	png_read_info(png, info);
	png_uint_32 w, h;
	int depth, ctype, interlace;
	png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
	if ((double)w * h > IMAGE_MAX_PIXELS) {
		snprintf(msg, msgn, "image too large: %lux%lu", (unsigned long)w, (unsigned long)h);
		png_longjmp(png, 1);
	}
	if (ctype == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);
	if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	if (depth == 16)
		png_set_strip_16(png);
	/* A tRNS chunk comes out as alpha after the expansion: dropped too. */
	if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
		png_set_strip_alpha(png);
	if (!(ctype & PNG_COLOR_MASK_COLOR))
		png_set_gray_to_rgb(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	if (png_get_rowbytes(png, info) != (size_t)w * 3) {
		snprintf(msg, msgn, "PNG: unexpected row layout");
		png_longjmp(png, 1);
	}
	px = xmalloc((size_t)w * h * 3);
	rows = xmalloc((size_t)h * sizeof *rows);
	for (png_uint_32 y = 0; y < h; y++)
		rows[y] = px + (size_t)y * w * 3;
	png_read_image(png, rows);
	png_read_end(png, NULL); /* the chunks after the pixels, their CRCs, IEND */
	png_destroy_read_struct(&png, &info, NULL);
	free(rows);
	im->w = (int)w;
	im->h = (int)h;
	im->px = px;
	return 0;
}

/* The name of a format seva recognises but does not decode, by its
 * signature; NULL when it is none of them. */
static const char *other_format(const unsigned char *b, size_t n)
{
	static const struct {
		const char *magic, *name;
		size_t len;
	} sig[] = {
		{"GIF87a", "gif", 6}, {"GIF89a", "gif", 6}, {"BM", "bmp", 2},
		{"8BPS", "psd", 4}, {"#?RADIANCE", "hdr", 10}, {"#?RGBE", "hdr", 6},
		{"\x53\x80\xf6\x34", "pic", 4}, {"II*\0", "tiff", 4}, {"MM\0*", "tiff", 4},
		{"\0\0\0\x0cjP  ", "jpeg2000", 8}, {"qoif", "qoi", 4},
	};
	for (size_t i = 0; i < ARRAY_LEN(sig); i++)
		if (n >= sig[i].len && !memcmp(b, sig[i].magic, sig[i].len))
			return sig[i].name;
	if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
		return "webp";
	if (n >= 12 && !memcmp(b + 4, "ftyp", 4) &&
	    (!memcmp(b + 8, "avif", 4) || !memcmp(b + 8, "heic", 4) || !memcmp(b + 8, "mif1", 4)))
		return "heif";
	if (n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' &&
	    (b[2] == '\n' || b[2] == ' ' || b[2] == '\r' || b[2] == '\t'))
		return "pnm";
	return NULL;
}

int image_decode(struct image *im, const void *buf, size_t len, const char **err)
{
	static _Thread_local char msg[160];
	const unsigned char *b = buf;

	image_init(im);
	msg[0] = 0;
	*err = msg;
	if (len == 0) {
		*err = "empty image";
		return -1;
	}
	if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
		return decode_jpeg(im, b, len, msg, sizeof msg);
	if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
		return decode_png(im, b, len, msg, sizeof msg);
	const char *name = other_format(b, len);
	if (name)
		snprintf(msg, sizeof msg, "unsupported format '%s' (JPEG and PNG are decoded)", name);
	else
		snprintf(msg, sizeof msg, "not a JPEG or PNG image");
	return -1;
}

/*
 * PNG writer. stb_image_write's deflate made 80% of seva-augment's run
 * time, so this one does what zlib's Z_RLE strategy does: per row the
 * filter with the smallest sum of |residual| (libpng's heuristic), runs of
 * a repeated byte as distance-1 matches, one dynamic-Huffman block per
 * 256 KiB. Photos compress nearly as well as zlib -6, flat synthetic
 * scenes well, at a small fraction of the time. The loops over bytes are
 * written for the vectorizer (filters and their costs in one pass, 16
 * bytes at a time looking for runs, Adler-32 as two sums, CRC-32 by
 * slices of 8).
 */

static uint32_t crc_table[8][256];
static unsigned char len_sym[259]; /* match length → index into len_base */
static uint16_t tok_sym[256 + 259];  /* token → literal/length symbol */

static const uint16_t len_base[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27,
				      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const unsigned char len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
					    2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};

static void png_tables(void)
{
	for (int s = 0; s < 29; s++)
		for (int l = len_base[s]; l < (s < 28 ? len_base[s + 1] : 259); l++)
			len_sym[l] = (unsigned char)s;
	for (int t = 0; t < 256 + 259; t++)
		tok_sym[t] = (uint16_t)(t < 256 ? t : 257 + len_sym[t < 259 ? 3 : t - 256]);
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[0][n] = c;
	}
	for (int k = 1; k < 8; k++)
		for (int n = 0; n < 256; n++)
			crc_table[k][n] = crc_table[0][crc_table[k - 1][n] & 0xff] ^
					  (crc_table[k - 1][n] >> 8);
}

/* CRC-32 eight bytes a step: table k holds a byte's CRC shifted past k
 * more zero bytes. */
static uint32_t crc_update(uint32_t c, const unsigned char *p, size_t n)
{
	const uint32_t(*t)[256] = crc_table;
	for (; n >= 8; p += 8, n -= 8) {
		uint32_t lo = c ^ (p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24);
		c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
		    t[4][lo >> 24] ^ t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
	}
	for (; n > 0; n--)
		c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

static uint32_t adler32(const unsigned char *d, size_t n)
{
	uint32_t a = 1, b = 0;
	while (n > 0) {
		/* Over M bytes: a += sum d_k, b += M a + sum (M - k) d_k; the
		 * sums fit 32 bits for M <= 5552 (zlib's NMAX). */
		size_t m = n < 5552 ? n : 5552;
		uint32_t sa = 0, sb = 0;
		#pragma omp simd reduction(+ : sa, sb)
		for (size_t k = 0; k < m; k++) {
			sa += d[k];
			sb += (uint32_t)(m - k) * d[k];
		}
		b = (uint32_t)((b + (uint64_t)m * a + sb) % 65521);
		a = (a + sa) % 65521;
		d += m;
		n -= m;
	}
	return b << 16 | a;
}

static inline void store_le64(unsigned char *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, &v, 8);
#else
	for (int k = 0; k < 8; k++)
		p[k] = (unsigned char)(v >> 8 * k);
#endif
}

/* Deflate's LSB-first bits into a buffer sized beforehand. */
struct bits {
	unsigned char *p;
	uint64_t acc;
	int n;
};

static inline void put_bits(struct bits *b, uint32_t v, int n)
{
	b->acc |= (uint64_t)v << b->n;
	b->n += n;
	if (b->n >= 32) {
		b->p[0] = (unsigned char)b->acc;
		b->p[1] = (unsigned char)(b->acc >> 8);
		b->p[2] = (unsigned char)(b->acc >> 16);
		b->p[3] = (unsigned char)(b->acc >> 24);
		b->p += 4;
		b->acc >>= 32;
		b->n -= 32;
	}
}

static void flush_bits(struct bits *b)
{
	for (; b->n > 0; b->n -= 8) {
		*b->p++ = (unsigned char)b->acc;
		b->acc >>= 8;
	}
	b->n = 0;
	b->acc = 0;
}
/* A min-heap of positions keyed by (weight of the node there, position):
 * the order in which the selection below picks. */
struct huff_pq {
	int at[288], where[288], n;
	const int *node;
	const uint64_t *w;
};

static inline int pq_less(const struct huff_pq *q, int p, int r)
{
	uint64_t a = q->w[q->node[p]], b = q->w[q->node[r]];
	return a < b || (a == b && p < r);
}

static void pq_set(struct huff_pq *q, int i, int p)
{
	q->at[i] = p;
	q->where[p] = i;
}

static void pq_up(struct huff_pq *q, int i)
{
	int p = q->at[i];
	while (i > 0 && pq_less(q, p, q->at[(i - 1) / 2])) {
		pq_set(q, i, q->at[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	pq_set(q, i, p);
}

static void pq_down(struct huff_pq *q, int i)
{
	int p = q->at[i];
	for (;;) {
		int c = 2 * i + 1;
		if (c >= q->n)
			break;
		if (c + 1 < q->n && pq_less(q, q->at[c + 1], q->at[c]))
			c++;
		if (!pq_less(q, q->at[c], p))
			break;
		pq_set(q, i, q->at[c]);
		i = c;
	}
	pq_set(q, i, p);
}

static void pq_push(struct huff_pq *q, int p)
{
	q->at[q->n] = p;
	pq_up(q, q->n++);
}

static void pq_remove(struct huff_pq *q, int p)
{
	int i = q->where[p], last = q->at[--q->n];
	if (i == q->n)
		return;
	q->at[i] = last;
	pq_up(q, i);
	pq_down(q, q->where[last]);
}

static int pq_pop(struct huff_pq *q)
{
	int p = q->at[0];
	pq_remove(q, p);
	return p;
}

/* Code lengths (at most LIMIT bits) for N symbols of frequency FREQ: plain
 * Huffman, the frequencies halved until the longest code fits. The live
 * nodes sit at positions 0..hn-1; each step merges the two smallest by
 * (weight, position), puts the new node at the first one's position and
 * moves the last position's node into the second's (ties broken this way
 * fix the codes, so the bytes). A heap finds them. */
static void huff_lengths(const uint32_t *freq, int n, int limit, unsigned char *len)
{
	uint32_t f[288];
	int parent[2 * 288], node[288], hn;
	uint64_t w[2 * 288];
	struct huff_pq q;
	memcpy(f, freq, sizeof(uint32_t) * n);
	for (;;) {
		hn = 0;
		memset(len, 0, n);
		for (int i = 0; i < n; i++)
			if (f[i])
				w[i] = f[i], node[hn++] = i;
		if (hn == 0)
			return;
		if (hn == 1) {
			len[node[0]] = 1;
			return;
		}
		q.node = node, q.w = w, q.n = 0;
		for (int p = 0; p < hn; p++)
			pq_push(&q, p);
		int next = n;
		while (hn > 1) {
			int a = pq_pop(&q), b = pq_pop(&q);
			int sa = node[a], sb = node[b], last = hn - 1;
			w[next] = w[sa] + w[sb];
			parent[sa] = next, parent[sb] = next;
			node[a] = next++;
			node[b] = node[last];
			hn--;
			if (last == b) {
				pq_push(&q, a);
			} else if (last == a) {
				pq_push(&q, b); /* the new node moved on to b */
			} else {
				pq_remove(&q, last);
				pq_push(&q, b);
				pq_push(&q, a);
			}
		}
		int root = next - 1, maxlen = 0;
		for (int i = 0; i < n; i++) {
			if (!f[i])
				continue;
			int d = 0;
			for (int s = i; s != root; s = parent[s])
				d++;
			len[i] = (unsigned char)d;
			maxlen = d > maxlen ? d : maxlen;
		}
		if (maxlen <= limit)
			return;
		for (int i = 0; i < n; i++)
			if (f[i])
				f[i] = (f[i] + 1) / 2;
	}
}

/* Canonical codes, bit-reversed for deflate's LSB-first stream. */
static void huff_codes(const unsigned char *len, int n, uint16_t *code)
{
	int count[16] = {0}, next[16];
	for (int i = 0; i < n; i++)
		count[len[i]]++;
	count[0] = 0;
	int c = 0;
	for (int b = 1; b < 16; b++) {
		c = (c + count[b - 1]) << 1;
		next[b] = c;
	}
	for (int i = 0; i < n; i++) {
		if (!len[i])
			continue;
		int v = next[len[i]]++, r = 0;
		for (int k = 0; k < len[i]; k++)
			r |= ((v >> k) & 1) << (len[i] - 1 - k);
		code[i] = (uint16_t)r;
	}
}

/* Stored blocks (at most 65535 bytes each) for data that does not compress:
 * noisy views would otherwise grow by the Huffman overhead. */
static void stored_blocks(struct bits *bw, const unsigned char *raw, size_t n, int last)
{
	do {
		size_t m = n > 65535 ? 65535 : n;
		put_bits(bw, last && m == n ? 1 : 0, 1);
		put_bits(bw, 0, 2);
		flush_bits(bw); /* to a byte boundary */
		unsigned char h[4] = {(unsigned char)m, (unsigned char)(m >> 8),
				      (unsigned char)~m, (unsigned char)(~m >> 8)};
		memcpy(bw->p, h, 4);
		memcpy(bw->p + 4, raw, m);
		bw->p += 4 + m;
		raw += m;
		n -= m;
	} while (n > 0);
}

/* Bytes a zlib stream of N bytes may take: stored blocks' 5 bytes per
 * 65535, and per 256 KiB block a Huffman header (at most ~600 bytes) or
 * the cost estimate's 300 bytes of slack. */
static size_t zlib_bound(size_t n)
{
	return n + 5 * (n / 65535 + 1) + 1024 * (n / (256 * 1024) + 1) + 16;
}

/* Tokens: a literal byte (< 256) or 256 + run length (3..258). RAW (N
 * bytes) is what they encode. */
static void deflate_block(struct bits *bw, const uint16_t *tok, size_t ntok,
			  const unsigned char *raw, size_t n, int last)
{
	/* Symbol counts: four tables, so that runs of one symbol do not wait
	 * on their own increments. */
	uint32_t lf4[4][286] = {{0}}, lf[286], cf[19] = {0};
	size_t i4 = ntok & ~(size_t)3;
	for (size_t i = 0; i < i4; i += 4) {
		lf4[0][tok_sym[tok[i]]]++;
		lf4[1][tok_sym[tok[i + 1]]]++;
		lf4[2][tok_sym[tok[i + 2]]]++;
		lf4[3][tok_sym[tok[i + 3]]]++;
	}
	for (size_t i = i4; i < ntok; i++)
		lf4[0][tok_sym[tok[i]]]++;
	for (int k = 0; k < 286; k++)
		lf[k] = lf4[0][k] + lf4[1][k] + lf4[2][k] + lf4[3][k];
	lf[256] = 1;
	unsigned char ll[286], dl[2] = {1, 1}, cl[19];
	uint16_t lc[286], dc[2], cc[19];
	huff_lengths(lf, 286, 15, ll);
	uint64_t cost = 0;
	for (int i = 0; i < 286; i++)
		cost += (uint64_t)lf[i] * (ll[i] + (i > 256 ? len_extra[i - 257] + 1 : 0));
	if (cost / 8 + 300 > n + 5 * (n / 65535 + 1)) {
		stored_blocks(bw, raw, n, last);
		return;
	}
	huff_codes(ll, 286, lc);
	huff_codes(dl, 2, dc);

	int hlit = 286;
	while (hlit > 257 && !ll[hlit - 1])
		hlit--;
	/* The code lengths of both trees, run-length coded (16/17/18). */
	unsigned char all[288];
	memcpy(all, ll, hlit);
	memcpy(all + hlit, dl, 2);
	int nall = hlit + 2;
	uint16_t rle[288 * 2];
	int nr = 0;
	for (int i = 0; i < nall;) {
		int v = all[i], run = 1;
		while (i + run < nall && all[i + run] == v)
			run++;
		int left = run;
		if (v == 0) {
			while (left >= 11) {
				int k = left > 138 ? 138 : left;
				rle[nr++] = 18 | (uint16_t)((k - 11) << 5), left -= k;
			}
			if (left >= 3)
				rle[nr++] = 17 | (uint16_t)((left - 3) << 5), left = 0;
		} else {
			rle[nr++] = (uint16_t)v, left--;
			while (left >= 3) {
				int k = left > 6 ? 6 : left;
				rle[nr++] = 16 | (uint16_t)((k - 3) << 5), left -= k;
			}
		}
		while (left-- > 0)
			rle[nr++] = (uint16_t)v;
		i += run;
	}
	for (int i = 0; i < nr; i++)
		cf[rle[i] & 31]++;
	huff_lengths(cf, 19, 7, cl);
	huff_codes(cl, 19, cc);
	static const unsigned char order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5,
						11, 4, 12, 3, 13, 2, 14, 1, 15};
	int hclen = 19;
	while (hclen > 4 && !cl[order[hclen - 1]])
		hclen--;

	put_bits(bw, last ? 1 : 0, 1);
	put_bits(bw, 2, 2); /* dynamic Huffman */
	put_bits(bw, hlit - 257, 5);
	put_bits(bw, 2 - 1, 5);
	put_bits(bw, hclen - 4, 4);
	for (int i = 0; i < hclen; i++)
		put_bits(bw, cl[order[i]], 3);
	for (int i = 0; i < nr; i++) {
		int s = rle[i] & 31, x = rle[i] >> 5;
		put_bits(bw, cc[s], cl[s]);
		if (s == 16)
			put_bits(bw, x, 2);
		else if (s == 17)
			put_bits(bw, x, 3);
		else if (s == 18)
			put_bits(bw, x, 7);
	}
	/* Each token as one write: a literal's code, or a run's length code,
	 * its extra bits and the distance-1 code (at most 15 + 5 + 1 bits). */
	uint32_t code[259 + 256];
	unsigned char nbits[259 + 256];
	for (int t = 0; t < 256; t++)
		code[t] = lc[t], nbits[t] = ll[t];
	for (int l = 3; l <= 258; l++) {
		int s = len_sym[l], e = len_extra[s], sym = 257 + s;
		code[256 + l] = lc[sym] | (uint32_t)(l - len_base[s]) << ll[sym] |
				(uint32_t)dc[0] << (ll[sym] + e);
		nbits[256 + l] = (unsigned char)(ll[sym] + e + dl[0]);
	}
	/* Whole bytes go out after every token, 8 bytes stored unconditionally
	 * (the buffer has the slack): no branch to mispredict. */
	unsigned char *p = bw->p;
	uint64_t acc = bw->acc;
	int nb = bw->n;
	for (size_t i = 0; i < ntok; i++) {
		acc |= (uint64_t)code[tok[i]] << nb;
		nb += nbits[tok[i]];
		store_le64(p, acc);
		p += nb >> 3;
		acc >>= nb & ~7;
		nb &= 7;
	}
	bw->p = p, bw->acc = acc, bw->n = nb;
	put_bits(bw, lc[256], ll[256]);
}

/* Tokens for DATA[I..END): literals, and runs of 3 to 258 copies of the
 * byte before (distance 1) wherever one starts. Returns how many. */
static size_t rle_tokens(uint16_t *tok, const unsigned char *data, size_t i, size_t end)
{
	size_t nt = 0;
	if (i == 0 && end > 0)
		tok[nt++] = data[i++];
	while (i < end) {
		/* 16 positions at once: a run starts at k when the 3 bytes
		 * from k repeat the one before. None: 16 literals. */
		if (end - i >= 18) {
			const unsigned char *d = data + i;
			unsigned char f[16];
			#pragma omp simd
			for (int k = 0; k < 16; k++)
				f[k] = (d[k] == d[k - 1]) & (d[k + 1] == d[k - 1]) &
				       (d[k + 2] == d[k - 1]);
			uint64_t f0, f1;
			memcpy(&f0, f, 8);
			memcpy(&f1, f + 8, 8);
			int k0 = 0;
			if (f0 | f1)
				while (!f[k0])
					k0++;
			else
				k0 = 16;
			/* All 16 (TOK has room); those past k0 are overwritten. */
			#pragma omp simd
			for (int k = 0; k < 16; k++)
				tok[nt + k] = d[k];
			nt += k0;
			i += k0;
			if (k0 == 16)
				continue;
		}
		size_t r = 0, max = end - i < 258 ? end - i : 258;
		while (r < max && data[i + r] == data[i - 1])
			r++;
		if (r >= 3) {
			tok[nt++] = (uint16_t)(256 + r);
			i += r;
		} else {
			tok[nt++] = data[i++];
		}
	}
	return nt;
}

/* zlib stream of DATA into OUT (zlib_bound(N) bytes): header, blocks of
 * RLE tokens, adler32. Returns its length. */
static size_t zlib_rle(unsigned char *out, const unsigned char *data, size_t n)
{
	out[0] = 0x78, out[1] = 0x01;
	struct bits bw = {out + 2, 0, 0};
	const size_t chunk = 256 * 1024;
	uint16_t *tok = xmalloc(sizeof(uint16_t) * (chunk + 16));
	size_t i = 0;
	do {
		size_t end = n - i > chunk ? i + chunk : n;
		size_t nt = rle_tokens(tok, data, i, end);
		deflate_block(&bw, tok, nt, data + i, end - i, end >= n);
		i = end;
	} while (i < n);
	flush_bits(&bw);
	free(tok);
	uint32_t a = adler32(data, n);
	unsigned char tr[4] = {(unsigned char)(a >> 24), (unsigned char)(a >> 16),
			       (unsigned char)(a >> 8), (unsigned char)a};
	memcpy(bw.p, tr, 4);
	return (size_t)(bw.p + 4 - out);
}

/* Filtered scanlines: each row's filter type byte, then its residuals;
 * per row the filter with the smallest sum of |residual| as signed bytes
 * (libpng's heuristic), the first of equals. The four filters and their
 * costs in one pass. */
static unsigned char *png_filter(const struct image *im, size_t *len)
{
	size_t stride = (size_t)im->w * 3;
	unsigned char *out = xmalloc((stride + 1) * im->h);
	unsigned char *cand = xmalloc(stride * 4);
	unsigned char *zero = xcalloc(stride, 1);
	for (int y = 0; y < im->h; y++) {
		const unsigned char *restrict row = im->px + y * stride;
		const unsigned char *restrict up = y ? row - stride : zero;
		unsigned char *restrict c1 = cand, *restrict c2 = cand + stride;
		unsigned char *restrict c3 = cand + 2 * stride, *restrict c4 = cand + 3 * stride;
		unsigned s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
#define COST(v) ((unsigned char)(v) < (unsigned char)-(v) ? (unsigned char)(v) : (unsigned char)-(v))
		/* The first pixel: no left neighbour (a = c = 0, so Paeth
		 * predicts up). */
		size_t n0 = stride < 3 ? stride : 3;
		for (size_t x = 0; x < n0; x++) {
			c1[x] = row[x];
			c2[x] = (unsigned char)(row[x] - up[x]);
			c3[x] = (unsigned char)(row[x] - (up[x] >> 1));
			c4[x] = c2[x];
			s0 += COST(row[x]), s1 += COST(c1[x]), s2 += COST(c2[x]);
			s3 += COST(c3[x]), s4 += COST(c4[x]);
		}
		#pragma omp simd reduction(+ : s0, s1, s2, s3, s4)
		for (size_t x = 3; x < stride; x++) {
			int a = row[x - 3], b = up[x], c = up[x - 3], v = row[x];
			int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
			int pred = (pa <= pb) & (pa <= pc) ? a : pb <= pc ? b : c;
			unsigned char r1 = (unsigned char)(v - a), r2 = (unsigned char)(v - b);
			unsigned char r3 = (unsigned char)(v - ((a + b) >> 1));
			unsigned char r4 = (unsigned char)(v - pred);
			c1[x] = r1, c2[x] = r2, c3[x] = r3, c4[x] = r4;
			s0 += COST(v), s1 += COST(r1), s2 += COST(r2), s3 += COST(r3);
			s4 += COST(r4);
		}
#undef COST
		unsigned sum[5] = {s0, s1, s2, s3, s4};
		int bf = 0;
		for (int f = 1; f < 5; f++)
			if (sum[f] < sum[bf])
				bf = f;
		out[y * (stride + 1)] = (unsigned char)bf;
		memcpy(out + y * (stride + 1) + 1, bf ? cand + (bf - 1) * stride : row, stride);
	}
	free(zero);
	free(cand);
	*len = (stride + 1) * im->h;
	return out;
}

static void png_chunk(struct buf *b, const char *type, const unsigned char *data, size_t n)
{
	unsigned char be[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
			       (unsigned char)(n >> 8), (unsigned char)n};
	buf_add(b, be, 4);
	size_t at = b->len;
	buf_add(b, type, 4);
	buf_add(b, data, n);
	uint32_t crc = crc_update(0xffffffffu, b->data + at, n + 4) ^ 0xffffffffu;
	unsigned char c[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
			      (unsigned char)(crc >> 8), (unsigned char)crc};
	buf_add(b, c, 4);
}

int image_encode_png(const struct image *im, unsigned char **out, size_t *len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, png_tables);
	if (im->w <= 0 || im->h <= 0)
		return -1;
	struct buf b;
	buf_init(&b);
	buf_add(&b, "\x89PNG\r\n\x1a\n", 8);
	unsigned char ihdr[13] = {(unsigned char)(im->w >> 24), (unsigned char)(im->w >> 16),
				  (unsigned char)(im->w >> 8), (unsigned char)im->w,
				  (unsigned char)(im->h >> 24), (unsigned char)(im->h >> 16),
				  (unsigned char)(im->h >> 8), (unsigned char)im->h,
				  8, 2, 0, 0, 0}; /* 8-bit RGB, deflate, filters, no interlace */
	png_chunk(&b, "IHDR", ihdr, 13);
	size_t flen;
	unsigned char *filtered = png_filter(im, &flen);
	unsigned char *z = xmalloc(zlib_bound(flen));
	size_t zlen = zlib_rle(z, filtered, flen);
	free(filtered);
	png_chunk(&b, "IDAT", z, zlen);
	png_chunk(&b, "IEND", (const unsigned char *)"", 0);
	free(z);
	*out = buf_detach(&b, len);
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

static double sinc(double x)
{
	if (x == 0)
		return 1;
	x *= M_PI;
	return sin(x) / x;
}

/* sinc windowed by sinc(x/3) on [-3, 3), as PIL's. */
static double lanczos_filter(double x)
{
	return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

static const struct filter filters[] = {
	[RESAMPLE_BILINEAR] = {bilinear_filter, 1.0},
	[RESAMPLE_BICUBIC] = {bicubic_filter, 2.0},
	[RESAMPLE_LANCZOS] = {lanczos_filter, 3.0},
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

/* image_transpose_px with SRC's rows STRIDE bytes apart. */
static void transpose_rows(unsigned char *restrict dst, const unsigned char *restrict src, int w,
			   int h, size_t stride)
{
	enum { T = 16 };
	for (int y0 = 0; y0 < h; y0 += T)
		for (int x0 = 0; x0 < w; x0 += T) {
			int y1 = y0 + T < h ? y0 + T : h, x1 = x0 + T < w ? x0 + T : w;
			for (int x = x0; x < x1; x++) {
				unsigned char *d = dst + ((size_t)x * h + y0) * 3;
				const unsigned char *p = src + (size_t)y0 * stride + (size_t)x * 3;
				/* 4 bytes at a time: the 4th is the next pixel
				 * (read: of the row, or the next row's first, as
				 * the last is never read so) and of the column
				 * (written next); a run's last pixel goes byte by
				 * byte. */
				for (int y = y0; y < y1 - 1; y++, d += 3, p += stride) {
					uint32_t v;
					memcpy(&v, p, 4);
					memcpy(d, &v, 4);
				}
				d[0] = p[0], d[1] = p[1], d[2] = p[2];
			}
		}
}

void image_transpose_px(unsigned char *dst, const unsigned char *src, int w, int h)
{
	transpose_rows(dst, src, w, h, (size_t)w * 3);
}

static inline unsigned char clip8(int v)
{
	v >>= PRECISION_BITS;
	return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

/* OUT (OH rows of S bytes) from IN (rows of S bytes, STRIDE apart): each output row a
 * weighted sum of input rows, all columns at once in ACC (S entries).
 * Unsigned sums wrap as PIL's int ones would; the total fits an int. */
static void resample_v8(unsigned char *restrict out, int oh, const unsigned char *restrict in,
			size_t s, size_t stride, const int *bounds, const int *k, int ksize,
			uint32_t *restrict acc)
{
	for (int y = 0; y < oh; y++) {
		const unsigned char *p = in + (size_t)bounds[2 * y] * stride;
		const int *ky = k + (size_t)y * ksize;
		unsigned char *dst = out + (size_t)y * s;
		#pragma omp simd
		for (size_t x = 0; x < s; x++)
			acc[x] = 1u << (PRECISION_BITS - 1);
		for (int i = 0; i < bounds[2 * y + 1]; i++, p += stride) {
			uint32_t kk = (uint32_t)ky[i];
			#pragma omp simd
			for (size_t x = 0; x < s; x++)
				acc[x] += p[x] * kk;
		}
		#pragma omp simd
		for (size_t x = 0; x < s; x++)
			dst[x] = clip8((int32_t)acc[x]);
	}
}

/* The horizontal pass runs as a vertical one on the transposed rows (where
 * it vectorizes), then transposes back: same sums, same bytes. */
void image_resize_box(struct image *out, const struct image *in, const int box[4], int w, int h,
		      enum resample mode)
{
	const struct filter *f = &filters[mode];
	int bw = box[2], bh_ = box[3];
	size_t stride = (size_t)in->w * 3;
	const unsigned char *org = in->px + (size_t)box[1] * stride + (size_t)box[0] * 3;
	if (w == bw && h == bh_) {
		image_alloc(out, w, h);
		for (int y = 0; y < h; y++)
			memcpy(out->px + (size_t)y * w * 3, org + y * stride, (size_t)w * 3);
		return;
	}
	int *bh = NULL, *bv = NULL, *kh = NULL, *kv = NULL;
	double *dh, *dv;
	int ksh = coeffs(bw, w, f, &bh, &dh);
	int ksv = coeffs(bh_, h, f, &bv, &dv);
	kh = coeffs_fixed(dh, w * ksh);
	kv = coeffs_fixed(dv, h * ksv);
	free(dh);
	free(dv);
	int mw = w > bw ? w : bw, mh = h > bh_ ? h : bh_;
	uint32_t *acc = xmalloc(sizeof(*acc) * 3 * (mw > mh ? mw : mh));

	const unsigned char *src = org;
	size_t sstride = stride;
	int sh = bh_;
	unsigned char *tmp = NULL;
	int y0 = 0;
	if (w != bw) {
		/* Only the rows the vertical pass reads. */
		int first = bv[0], last = bv[2 * h - 2] + bv[2 * h - 1];
		if (h == bh_)
			first = 0, last = bh_;
		int rows = last - first;
		unsigned char *t1 = xmalloc((size_t)bw * rows * 3);
		unsigned char *t2 = xmalloc((size_t)w * rows * 3);
		transpose_rows(t1, org + (size_t)first * stride, bw, rows, stride);
		resample_v8(t2, w, t1, (size_t)rows * 3, (size_t)rows * 3, bh, kh, ksh, acc);
		free(t1);
		tmp = xmalloc((size_t)w * rows * 3);
		image_transpose_px(tmp, t2, rows, w);
		free(t2);
		src = tmp;
		sstride = (size_t)w * 3;
		sh = rows;
		y0 = first;
	}
	image_alloc(out, w, h);
	if (h != bh_) {
		for (int y = 0; y < h; y++)
			bv[2 * y] -= y0;
		resample_v8(out->px, h, src, (size_t)w * 3, sstride, bv, kv, ksv, acc);
	} else {
		for (int y = 0; y < sh; y++)
			memcpy(out->px + (size_t)y * w * 3, src + y * sstride, (size_t)w * 3);
	}
	free(acc);
	free(tmp);
	free(bh);
	free(bv);
	free(kh);
	free(kv);
}

/* Pillow 13 runs the vertical pass first when it removes more than twice
 * the rows the horizontal pass removes columns (found by comparing its
 * output with both orders on random sizes: no exception in 2500); each
 * pass rounds to 8 bits, so the order shows. Pillow 9.4 (Debian 12's, whose
 * output the LLaVA fixtures hold) always runs the horizontal one first. */
void image_resize_pil13(struct image *out, const struct image *in, int w, int h,
			enum resample mode)
{
	if (w != in->w && h != in->h && in->h - h > 2 * (in->w > w ? in->w - w : 0)) {
		struct image t;
		image_init(&t);
		image_resize(&t, in, in->w, h, mode);
		image_resize(out, &t, w, h, mode);
		image_release(&t);
		return;
	}
	image_resize(out, in, w, h, mode);
}

void image_resize(struct image *out, const struct image *in, int w, int h, enum resample mode)
{
	int box[4] = {0, 0, in->w, in->h};
	image_resize_box(out, in, box, w, h, mode);
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
	return p->mode == PREPROCESS_SHORTEST_CROP || p->mode == PREPROCESS_LONGEST_SQUARE
		       ? p->crop_size
		       : p->size;
}

/* Idefics3's get_resize_output_image_size: the longest edge to MAX, the
 * other by the aspect ratio (truncated, then made even by adding one), at
 * least 1; then both scaled below 4096 the same way but without the even
 * rule. */
static void longest_edge(const struct image *im, int max, int *w, int *h)
{
	double ar = (double)im->w / im->h;
	int W = im->w, H = im->h;
	if (W >= H) {
		W = max;
		H = (int)(W / ar);
		H += H % 2;
	} else {
		H = max;
		W = (int)(H * ar);
		W += W % 2;
	}
	W = W > 1 ? W : 1;
	H = H > 1 ? H : 1;
	ar = (double)W / H;
	if (W >= H && W > 4096) {
		W = 4096;
		H = (int)(W / ar);
	} else if (H > W && H > 4096) {
		H = 4096;
		W = (int)(H * ar);
	}
	*w = W > 1 ? W : 1;
	*h = H > 1 ? H : 1;
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

/* Every image the preprocessing makes is held to the decoder's cap: a
 * 65535x1 PNG of 270 bytes is 4 Gi pixels once padded to a square. */
static int within_cap(double w, double h, const char *what, const struct image *im, char *msg,
		      size_t msgn)
{
	if (w * h <= IMAGE_MAX_PIXELS)
		return 1;
	snprintf(msg, msgn, "image %dx%d %s is %.0fx%.0f, over the %ld-pixel limit", im->w, im->h,
		 what, w, h, IMAGE_MAX_PIXELS);
	return 0;
}

int image_preprocess(float *out, const struct image *im, const struct preprocess *p,
		     const char **err)
{
	static _Thread_local char msg[160];
	struct image a, b;
	image_init(&a);
	image_init(&b);
	int side = preprocess_side(p);
	int w, h;

	*err = msg;
	switch (p->mode) {
	case PREPROCESS_PAD_RESIZE: {
		/* LLaVA-1.5's expand2square colour is tuple(int(x * 255) for x in
		 * image_mean): truncated, (122, 116, 104) for CLIP. Then the CLIP
		 * processor's shortest-edge resize, which on a square is a resize. */
		unsigned char rgb[3];
		int sq = im->w > im->h ? im->w : im->h;
		if (!within_cap(sq, sq, "padded to a square", im, msg, sizeof msg))
			return -1;
		for (int c = 0; c < 3; c++)
			rgb[c] = (unsigned char)(p->mean[c] * 255.0);
		image_pad_square(&a, im, rgb);
		image_resize(&b, &a, p->size, p->size, p->resample);
		break;
	}
	case PREPROCESS_SHORTEST_CROP: {
		double lw = im->w <= im->h ? p->size : (double)p->size * im->w / im->h;
		double lh = im->w <= im->h ? (double)p->size * im->h / im->w : p->size;
		if (!within_cap(floor(lw), floor(lh), "resized to its shortest edge", im, msg,
				sizeof msg))
			return -1;
		shortest_edge(im, p->size, &w, &h);
		image_resize(&a, im, w, h, p->resample);
		/* transformers' center_crop: offsets floor((in - crop) / 2). */
		crop_at(&b, &a, floor_half(a.w - side), floor_half(a.h - side), side, side);
		break;
	}
	case PREPROCESS_RESIZE:
		image_resize(&b, im, p->size, p->size, p->resample);
		break;
	case PREPROCESS_LONGEST_SQUARE:
		/* transformers 5's Idefics3 processor, with Pillow 13 */
		longest_edge(im, p->size, &w, &h);
		image_resize_pil13(&a, im, w, h, p->resample);
		image_resize_pil13(&b, &a, side, side, p->resample);
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
	return 0;
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
