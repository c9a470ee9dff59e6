/* fuzz_rec — libFuzzer harness for the record readers (msgpack, tar, JSON
 * lines: the input picks by its first bytes, as in every tool). Each sample
 * read is written again as msgpack, tar and JSON lines, so the JSON text
 * <-> msgpack conversion is fuzzed too. FUZZ_FORMAT (msgpack/tar) only
 * chooses the seed corpus's shape in the Makefile; the code is one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rec.h"
#include "util.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fd < 0) {
		fd = memfd_create("fuzz", 0);
		if (fd < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		progname = "fuzz";
	}
	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	struct rec_reader *r = rec_open(path);
	if (!r)
		return 0;
	struct rec_writer *w[3] = {
		rec_writer_open("/dev/null", REC_MSGPACK, 0),
		rec_writer_open("/dev/null", REC_TAR, 0),
		rec_writer_open("/dev/null", REC_JSONL, REC_BASE64),
	};
	struct sample s;
	sample_init(&s);
	int rc, n = 0;
	/* -k semantics: go on after a bad sample; the reader says when it
	 * cannot (returns 0). The bound guards against a reader that loops. */
	while ((rc = rec_read(r, &s)) != 0 && n++ < 100000)
		if (rc > 0)
			for (int i = 0; i < 3; i++)
				rec_write(w[i], &s);
	if (n >= 100000)
		abort();
	sample_release(&s);
	rec_close(r);
	for (int i = 0; i < 3; i++)
		rec_writer_close(w[i]);
	return 0;
}
