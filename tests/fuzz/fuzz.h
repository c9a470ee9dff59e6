/* fuzz.h — shared by the libFuzzer harnesses of files that are read by
 * path: the input is written to a file in a per-process directory, beside
 * the files the parser looks for next to it. */
#ifndef SEVA_FUZZ_H
#define SEVA_FUZZ_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static const char *fuzz_dir(void)
{
	static char dir[64];
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "%s/seva-fuzz.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(dir))
			abort();
		progname = "fuzz";
	}
	return dir;
}

/* Writes N bytes to DIR/NAME; returns the path (one of four buffers). */
static const char *fuzz_put(const char *name, const void *data, size_t n)
{
	static char path[4][128];
	static int k;
	char *p = path[k++ & 3];
	snprintf(p, 128, "%s/%s", fuzz_dir(), name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n))
		abort();
	close(fd);
	return p;
}

static void fuzz_rm(const char *name)
{
	char p[128];
	snprintf(p, sizeof p, "%s/%s", fuzz_dir(), name);
	unlink(p);
}

/* The part of DATA before the first SEP (all of it when SEP is absent);
 * *REST and *RLEN get what follows the separator (NULL, 0 if none). */
static size_t fuzz_split(const uint8_t *data, size_t n, const char *sep, const uint8_t **rest,
			 size_t *rlen)
{
	size_t k = strlen(sep);
	const uint8_t *at = k <= n ? memmem(data, n, sep, k) : NULL;
	*rest = at ? at + k : NULL;
	*rlen = at ? n - (size_t)(at - data) - k : 0;
	return at ? (size_t)(at - data) : n;
}

#endif
