#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *progname = "seva";

void util_init(const char *argv0)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
	if (argv0)
		progname = slash ? slash + 1 : argv0;
}

#ifndef SEVA_VERSION
#define SEVA_VERSION "unknown"
#endif

const char *seva_version(void)
{
	return SEVA_VERSION;
}

void util_init_args(int argc, char **argv)
{
	util_init(argc > 0 ? argv[0] : NULL);
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--version")) {
			printf("%s %s\n", progname, SEVA_VERSION);
			exit(fflush(stdout) || ferror(stdout) ? 1 : 0);
		}
}

/* One line, written with one write: the messages of threads, or of the
 * ranks of an MPI job sharing a terminal, do not interleave mid-line. */
static void vmessage(const char *fmt, va_list ap)
{
	int saved = errno;
	size_t n = strlen(fmt);
	char small[1024], *line = small;
	va_list aq;
	va_copy(aq, ap);
	int len = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (len < 0)
		len = 0;
	const char *why = n && fmt[n - 1] == ':' ? strerror(saved) : "";
	size_t size = strlen(progname) + 2 + (size_t)len + 1 + strlen(why) + 2;
	if (size > sizeof small && !(line = malloc(size))) {
		line = small;
		size = sizeof small;
	}
	size_t k = (size_t)snprintf(line, size, "%s: ", progname);
	if (k < size)
		k += (size_t)vsnprintf(line + k, size - k, fmt, ap);
	if (*why && k < size)
		k += (size_t)snprintf(line + k, size - k, " %s", why);
	if (k > size - 2)
		k = size - 2;
	line[k++] = '\n';
	fwrite(line, 1, k, stderr);
	if (line != small)
		free(line);
}

void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	exit(1);
}

void warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
}

int error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	return -1;
}

void usage_die(const char *usage)
{
	fprintf(stderr, "usage: %s\n", usage);
	exit(2);
}

void usage_flag_not_count(int argc, char **argv, char flag, const char *does, int threads,
			  const char *usage)
{
	for (int i = 1; i + 1 < argc && strcmp(argv[i], "--"); i++) {
		const char *a = argv[i], *n = argv[i + 1];
		if (a[0] != '-' || a[1] != flag || a[2] || !*n || n[strspn(n, "0123456789")] ||
		    !access(n, F_OK))
			continue;
		if (threads)
			warn("-%c takes no value: it %s ('%s' is no file; the thread count is -j %s)", flag,
			     does, n, n);
		else
			warn("-%c takes no value: it %s ('%s' is no file)", flag, does, n);
		usage_die(usage);
	}
}

/* The tool's options with their defaults: its man page's OPTIONS section,
 * rendered when the tool is built (bin/help/TOOL.c, see the Makefile), so
 * that they are written in one place. Weak: a test program has none. */
extern const char help_options_text[] __attribute__((weak));

void usage_help(const char *usage)
{
	printf("usage: %s\n", usage);
	if (help_options_text)
		printf("\nOptions (man %s for the whole page):\n%s", progname, help_options_text);
	exit(0);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		die("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	return s;
}

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_release(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

static void buf_grow(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_add(struct buf *b, const void *p, size_t n)
{
	buf_grow(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
}

void buf_addstr(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

unsigned char *buf_detach(struct buf *b, size_t *len)
{
	unsigned char *p = b->data;
	if (!p) {
		p = xmalloc(1);
		p[0] = 0;
	}
	if (len)
		*len = b->len;
	buf_init(b);
	return p;
}

int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max) {
		warn("%s: not an integer in [%ld, %ld]: '%s'", opt, min, max, s);
		return -1;
	}
	*out = v;
	return 0;
}

int parse_double(const char *opt, const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !(v >= min && v <= max)) {
		warn("%s: not a number in [%g, %g]: '%s'", opt, min, max, s);
		return -1;
	}
	*out = v;
	return 0;
}

long arg_long(const char *opt, const char *s, long min, long max)
{
	long v;
	if (parse_long(opt, s, min, max, &v))
		exit(2);
	return v;
}

double arg_double(const char *opt, const char *s, double min, double max)
{
	double v;
	if (parse_double(opt, s, min, max, &v))
		exit(2);
	return v;
}

double arg_double_above(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !(v > min && v <= max)) {
		warn("%s: not a number in (%g, %g]: '%s'", opt, min, max, s);
		exit(2);
	}
	return v;
}

int parse_choice(const char *opt, const char *s, const char *const *names, int n)
{
	struct buf b;
	for (int i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	buf_init(&b);
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
	warn("%s: not %s: '%s'", opt, b.data ? (char *)b.data : "", s);
	buf_release(&b);
	return -1;
}

int arg_choice(const char *opt, const char *s, const char *const *names, int n)
{
	int i = parse_choice(opt, s, names, n);
	if (i < 0)
		exit(2);
	return i;
}

int parse_names(const char *opt, const char *s, const char *const *names, int n)
{
	int mask = 0;
	char *copy = xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int i = 0;
		while (i < n && strcmp(t, names[i]))
			i++;
		if (i == n) {
			struct buf b;
			buf_init(&b);
			for (i = 0; i < n; i++)
				buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
			warn("%s: unknown name '%s' (%s)", opt, t, (char *)b.data);
			buf_release(&b);
			free(copy);
			return -1;
		}
		mask |= 1 << i;
	}
	free(copy);
	if (!mask)
		warn("%s: an empty list", opt);
	return mask ? mask : -1;
}

unsigned arg_names(const char *opt, const char *s, const char *const *names, int n)
{
	int mask = parse_names(opt, s, names, n);
	if (mask < 0)
		exit(2);
	return (unsigned)mask;
}

uint64_t arg_seed(const char *opt, const char *s)
{
	return (uint64_t)arg_long(opt, s, 0, ARG_SEED_MAX);
}

int report_skips(long skipped, long read, long unread)
{
	if (skipped)
		warn("%ld of %ld samples skipped", skipped, read);
	if (unread)
		warn("%ld input%s could not be read", unread, unread == 1 ? "" : "s");
	return skipped || unread;
}

unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char chunk[65536];
	size_t n;
	if (!f) {
		error("open '%s':", path);
		return NULL;
	}
	buf_init(&b);
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_add(&b, chunk, n);
	if (ferror(f)) {
		error("read '%s':", path);
		fclose(f);
		buf_release(&b);
		return NULL;
	}
	fclose(f);
	return buf_detach(&b, len);
}

/* Writes straight into a device or fifo (/dev/null, a pipe): renaming a
 * temporary file over one would replace it. */
int create_new(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST && unlink(path) == 0)
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	return fd;
}

int out_open(struct out_file *o, const char *path)
{
	struct stat st;
	memset(o, 0, sizeof *o);
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		/* found now, not by the rename after the whole run */
		errno = EISDIR;
		return error("create '%s':", path);
	}
	o->path = xstrdup(path);
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* /dev/null, a fifo: renaming over it would replace it */
		o->f = fopen(path, "wb");
		if (!o->f) {
			error("open '%s':", path);
			free(o->path);
			memset(o, 0, sizeof *o);
			return -1;
		}
		return 0;
	}
	o->tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd = create_new(o->tmp);
	if (fd < 0 || !(o->f = fdopen(fd, "wb"))) {
		error("create '%s':", path);
		if (fd >= 0) {
			close(fd);
			unlink(o->tmp);
		}
		free(o->tmp);
		free(o->path);
		memset(o, 0, sizeof *o);
		return -1;
	}
	tmp_track(o->tmp);
	return 0;
}

int out_finish(struct out_file *o)
{
	const char *name = o->tmp ? o->tmp : o->path;
	int rc = 0;
	if (fflush(o->f) != 0 || ferror(o->f))
		rc = error("write '%s':", name);
	if (!rc && o->tmp && fsync(fileno(o->f)) < 0 && errno != EINVAL)
		rc = error("fsync '%s':", name);
	if (fclose(o->f) != 0 && !rc)
		rc = error("close '%s':", name);
	o->f = NULL;
	if (rc)
		out_abort(o);
	return rc;
}

int out_publish(struct out_file *o)
{
	int rc = 0;
	if (o->tmp) {
		if (rename(o->tmp, o->path) < 0) {
			rc = error("rename '%s' to '%s':", o->tmp, o->path);
			unlink(o->tmp);
		}
		tmp_untrack(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof *o);
	return rc;
}

int out_commit(struct out_file *o)
{
	return out_finish(o) ? -1 : out_publish(o);
}

/* Open (F set) or finished (F NULL, PATH set); a zeroed O is nothing. */
void out_abort(struct out_file *o)
{
	if (!o->f && !o->path)
		return;
	if (o->f)
		fclose(o->f);
	if (o->tmp) {
		unlink(o->tmp);
		tmp_untrack(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof *o);
}

int write_file_atomic(const char *path, const void *data, size_t len)
{
	struct out_file o;
	if (out_open(&o, path) < 0)
		return -1;
	if (len && fwrite(data, 1, len, o.f) != len) {
		error("write '%s':", o.tmp ? o.tmp : o.path);
		out_abort(&o);
		return -1;
	}
	return out_commit(&o);
}

int mkdir_p(const char *dir)
{
	char *p = xstrdup(dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			error("mkdir '%s':", p);
			free(p);
			return -1;
		}
		*s = '/';
	}
	if (mkdir(p, 0755) < 0 && errno != EEXIST) {
		error("mkdir '%s':", p);
		free(p);
		return -1;
	}
	free(p);
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	return remove(path) ? error("remove '%s':", path) : 0;
}

int remove_tree(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb) < 0)
		return errno == ENOENT ? 0 : error("remove '%s':", path);
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) ? -1 : 0;
}

/* The tracked temporary paths. The signal handler reads the table, so it
 * changes only with those signals blocked. */
static char **tmp_paths;
static int tmp_n, tmp_cap;
static const int tmp_signals[] = { SIGTERM, SIGINT, SIGHUP };

static void tmp_on_signal(int sig)
{
	for (int i = 0; i < tmp_n; i++)
		if (unlink(tmp_paths[i]) < 0)
			rmdir(tmp_paths[i]); /* an empty directory; a full one stays */
	signal(sig, SIG_DFL);
	raise(sig);
}

static void tmp_at_exit(void)
{
	for (int i = 0; i < tmp_n; i++)
		remove_tree(tmp_paths[i]);
}

static void tmp_block(sigset_t *old)
{
	sigset_t set;
	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_LEN(tmp_signals); i++)
		sigaddset(&set, tmp_signals[i]);
	sigprocmask(SIG_BLOCK, &set, old);
}

void tmp_track(const char *path)
{
	static int installed;
	sigset_t old;
	if (!installed) {
		installed = 1;
		atexit(tmp_at_exit);
		for (size_t i = 0; i < ARRAY_LEN(tmp_signals); i++) {
			struct sigaction sa;
			/* a handler of the program's own, or an ignored signal, stays */
			if (sigaction(tmp_signals[i], NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
				memset(&sa, 0, sizeof sa);
				sa.sa_handler = tmp_on_signal;
				sigemptyset(&sa.sa_mask);
				sigaction(tmp_signals[i], &sa, NULL);
			}
		}
	}
	char *copy = xstrdup(path);
	tmp_block(&old);
	if (tmp_n == tmp_cap) {
		tmp_cap = tmp_cap ? 2 * tmp_cap : 8;
		tmp_paths = xrealloc(tmp_paths, (size_t)tmp_cap * sizeof *tmp_paths);
	}
	tmp_paths[tmp_n++] = copy;
	sigprocmask(SIG_SETMASK, &old, NULL);
}

void tmp_untrack(const char *path)
{
	sigset_t old;
	char *gone = NULL;
	tmp_block(&old);
	for (int i = 0; i < tmp_n; i++)
		if (!strcmp(tmp_paths[i], path)) {
			gone = tmp_paths[i];
			tmp_paths[i] = tmp_paths[--tmp_n];
			break;
		}
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(gone);
}

int tmp_reclaim(const char *path, int quiet)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	char *full = xstrndup(path, n);
	char *slash = strrchr(full, '/');
	const char *base = slash ? slash + 1 : full;
	char *dir = slash ? xstrndup(full, (size_t)(slash - full) + (slash == full)) : xstrdup(".");
	char *prefix = xasprintf("%s.tmp.", base);
	size_t np = strlen(prefix);
	int removed = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		const char *digits = e->d_name + np;
		char *end;
		if (strncmp(e->d_name, prefix, np) || !*digits || *digits < '1' || *digits > '9')
			continue;
		long pid = strtol(digits, &end, 10);
		if (*end || pid <= 0 || pid == (long)getpid() || pid > INT32_MAX)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* alive, or another user's: not ours to judge */
		char *victim = xasprintf("%s/%s", dir, e->d_name);
		if (remove_tree(victim) == 0) {
			removed++;
			if (!quiet)
				warn("removed '%s', left by process %ld that no longer runs", victim, pid);
		}
		free(victim);
	}
	if (d)
		closedir(d);
	free(prefix);
	free(dir);
	free(full);
	return removed;
}

double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(struct progress *p, const char *what, long total, int quiet)
{
	p->what = what;
	p->total = total;
	p->done = 0;
	p->start = p->last = now_seconds();
	p->enabled = !quiet && isatty(2);
	p->extra[0] = 0;
}

void progress_update(struct progress *p, long done, const char *extra)
{
	double t = now_seconds();
	p->done = done;
	if (!p->enabled)
		return;
	snprintf(p->extra, sizeof(p->extra), "%s", extra ? extra : "");
	if (t - p->last < 0.25)
		return;
	p->last = t;
	double rate = done / (t - p->start > 1e-9 ? t - p->start : 1e-9);
	fprintf(stderr, "\r\033[K%s: %ld", progname, done);
	if (p->total > 0) {
		double eta = rate > 0 ? (p->total - done) / rate : 0;
		fprintf(stderr, "/%ld", p->total);
		fprintf(stderr, " %s, %.1f/s, ETA %.0fs", p->what, rate, eta);
	} else {
		fprintf(stderr, " %s, %.1f/s", p->what, rate);
	}
	if (extra && *extra)
		fprintf(stderr, ", %s", extra);
}

void progress_done(struct progress *p)
{
	if (!p->enabled)
		return;
	fprintf(stderr, "\r\033[K%s: %ld %s in %.1f s%s%s\n", progname, p->done, p->what,
		now_seconds() - p->start, p->extra[0] ? ", " : "", p->extra);
	p->enabled = 0; /* one summary, however many ways out call this */
}

static int stdout_reported;

void stdout_error_reported(void)
{
	stdout_reported = 1;
}

static void close_stdout(void)
{
	/* A write error here must not be lost: it is the only place it shows,
	 * unless the writer that met it has said so. */
	if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
		int saved = errno;
		if (stdout_reported)
			_exit(1);
		fprintf(stderr, "%s: write error: %s\n", progname, strerror(saved));
		_exit(1);
	}
}

void check_stdout_at_exit(void)
{
	atexit(close_stdout);
}

const char *path_escapes(const char *rel)
{
	if (rel[0] == '/')
		return "an absolute path";
	for (const char *p = rel; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return "a '..' component";
		p += n;
		p += *p == '/';
	}
	return NULL;
}
