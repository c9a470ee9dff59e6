/* sha256 — FIPS 180-4 SHA-256, for content digests of bytes fields
 * (seva-cat --jsonl shows images as size and digest). Uses libc only. */
#ifndef SEVA_SHA256_H
#define SEVA_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;          /* bytes hashed so far */
	unsigned char blk[64]; /* partial block */
	size_t n;              /* bytes in blk */
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, unsigned char out[32]);
/* Digest of DATA as 64 lowercase hex digits and a NUL into HEX. */
void sha256_hex(const void *data, size_t len, char hex[65]);

#endif
